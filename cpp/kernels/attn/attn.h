// Kernel contract for the attention area: softmax(q k^T) v for one head of one sequence, the
// float32 core of a transformer layer once its projections have run as int8 GEMMs.
// Declarations only: this header is included by ISA translation units.
//
//   out[i, :dh] = sum_j p_ij v_j / sum_j p_ij,  p_ij = exp(q_i . k_j - max_j q_i . k_j)
//
// q, k and v are rows of stride `ld` floats (views into a packed [N, 3D] projection; the query is
// already scaled by 1/sqrt(dh)); out rows have stride `ldo`. kt is scratch for 2 * dh * round_up(L, 16)
// floats (the head's keys transposed, and its values made contiguous: both are read once per
// query row, and strided rows of the packed projection thrash L1) and p for round_up(L, 16) * (round_up(L, 16) + 1) floats (every row's scores and its
// normaliser: a path may finish all scores before any weighted sum). Paths differ from the
// scalar one by float rounding only (a vectorized exp with ~2 ulp error, other summation orders):
// within 1e-5 relative of the float64 result for rows whose weights are not all tiny.
#pragma once
#include <cstddef>
#include <cstdint>

#include "core/status.h"

namespace edgepack {

using AttnHeadFn = void (*)(const float* q, const float* k, const float* v, int64_t ld, int64_t L, int64_t dh,
                            float* out, int64_t ldo, float* kt, float* p);

struct AttnOps {
  AttnHeadFn head = nullptr;
  bool vectorized = false;  // a SIMD path registered `head` (the scalar reference is slower than numpy)
};

// ---- driver (cpp/kernels/attn/driver.cpp): baseline code, used by the bindings ---------------
namespace attn {

// qkv [n, 3 * d] holds nseq packed sequences (rows offsets[s] .. offsets[s + 1]); each row is
// q | k | v, each split into `heads` heads of d / heads. Writes out [n, d] (heads interleaved as
// in the input). Tasks are (sequence, head) pairs on the thread pool: results do not depend on
// the thread count.
Status attention(const float* qkv, int64_t n, int64_t d, int64_t heads, const int64_t* offsets, int64_t nseq,
                 float* out);

// The staging the SIMD heads share: kt[c * lp + j] = k[j * ld + c] (keys transposed, columns
// L .. lp - 1 zero; lp = round_up(L, 16)), and kt + dh * lp = the values [L, dh] contiguous.
// Key rows are read whole: strided rows of the projection map to few L1 sets, so reading one
// column of them at a time would reload every row from L2 for each column.
void stage_keys_values(const float* k, const float* v, int64_t ld, int64_t L, int64_t dh, float* kt);

}  // namespace attn
}  // namespace edgepack
