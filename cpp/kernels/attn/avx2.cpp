// AVX2+FMA attention head: the AVX-512 path's scheme at 8 columns per ymm. All scores first
// (against the keys transposed into scratch), then exp and row sums row by row (a vectorized exp
// building 2^n in the exponent field), then p @ v with several query rows sharing each load of
// v; head widths that are not a multiple of 8 finish their last columns in scalar code.
#include <immintrin.h>

#include <cstddef>
#include <cstdint>

#include "core/dispatch.h"
#include "kernels/attn/attn.h"

namespace edgepack::avx2 {
namespace {

#define EP_INLINE inline __attribute__((always_inline))

#include "kernels/common/vexp_ymm.inc"

EP_INLINE float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

EP_INLINE float hmax(__m256 v) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// Scores of query rows i .. i + RB - 1 (rows of stride ld) against key columns [j0, j0 + 16),
// keys transposed in kt (row stride lp), into P rows of stride lp. RB rows share every key load:
// 2 loads and RB broadcasts per 2 RB multiply-adds (one row at a time was 1 load per multiply-add
// and slower than numpy's GEMM from L ~ 256 on).
template <int RB>
EP_INLINE void scores(const float* qi, int64_t ld, const float* kt, int64_t lp, int64_t dh, int64_t j0, float* P) {
  __m256 a[RB][2];
  for (int r = 0; r < RB; ++r) a[r][0] = a[r][1] = _mm256_setzero_ps();
  for (int64_t c = 0; c < dh; ++c) {
    const __m256 k0 = _mm256_loadu_ps(kt + c * lp + j0), k1 = _mm256_loadu_ps(kt + c * lp + j0 + 8);
    for (int r = 0; r < RB; ++r) {
      const __m256 qc = _mm256_set1_ps(qi[r * ld + c]);
      a[r][0] = _mm256_fmadd_ps(qc, k0, a[r][0]);
      a[r][1] = _mm256_fmadd_ps(qc, k1, a[r][1]);
    }
  }
  for (int r = 0; r < RB; ++r) {
    _mm256_storeu_ps(P + r * lp + j0, a[r][0]);
    _mm256_storeu_ps(P + r * lp + j0 + 8, a[r][1]);
  }
}

// out rows [0, RB) columns [0, 8 NC) = inv_r * sum_j P[r, j] v[j] (P rows of stride lp, v rows of
// stride ldv): the RB rows share every load of v; RB * NC accumulators.
template <int RB, int NC>
EP_INLINE void pv_block(const float* P, int64_t lp, const float* inv, const float* v, int64_t ldv, int64_t L,
                        float* out, int64_t ldo) {
  __m256 a[RB][NC];
  for (int r = 0; r < RB; ++r)
    for (int c = 0; c < NC; ++c) a[r][c] = _mm256_setzero_ps();
  for (int64_t j = 0; j < L; ++j) {
    __m256 pr[RB];
    for (int r = 0; r < RB; ++r) pr[r] = _mm256_set1_ps(P[r * lp + j]);
    for (int c = 0; c < NC; ++c) {
      const __m256 vjc = _mm256_loadu_ps(v + j * ldv + 8 * c);
      for (int r = 0; r < RB; ++r) a[r][c] = _mm256_fmadd_ps(pr[r], vjc, a[r][c]);
    }
  }
  for (int r = 0; r < RB; ++r) {
    const __m256 s = _mm256_set1_ps(inv[r]);
    for (int c = 0; c < NC; ++c) _mm256_storeu_ps(out + r * ldo + 8 * c, _mm256_mul_ps(a[r][c], s));
  }
}

template <int RB, int NC>
void pv_rows(const float* P, int64_t lp, const float* inv, const float* v, int64_t ldv, int64_t L, float* out,
             int64_t ldo) {
  int64_t i = 0;
  for (; i + RB <= L; i += RB) pv_block<RB, NC>(P + i * lp, lp, inv + i, v, ldv, L, out + i * ldo, ldo);
  for (; i < L; ++i) pv_block<1, NC>(P + i * lp, lp, inv + i, v, ldv, L, out + i * ldo, ldo);
}

void head(const float* q, const float* k, const float* v, int64_t ld, int64_t L, int64_t dh, float* out,
          int64_t ldo, float* kt, float* P) {
  const int64_t lp = (L + 15) / 16 * 16;
  attn::stage_keys_values(k, v, ld, L, dh, kt);
  const float* vt = kt + dh * lp;  // values, [L, dh] contiguous
  float* inv = P + L * lp;  // 1 / row sums
  // 1. all scores, then 2. exp and sums row by row: independent rows keep the core busy where one
  // row's scores -> max -> exp -> sum chain would stall it
  int64_t i = 0;
  for (; i + 4 <= L; i += 4)
    for (int64_t j0 = 0; j0 < lp; j0 += 16) scores<4>(q + i * ld, ld, kt, lp, dh, j0, P + i * lp);
  for (; i < L; ++i)
    for (int64_t j0 = 0; j0 < lp; j0 += 16) scores<1>(q + i * ld, ld, kt, lp, dh, j0, P + i * lp);
  for (i = 0; i < L; ++i)
    for (int64_t j = L; j < lp; ++j) P[i * lp + j] = -__builtin_inff();  // padded keys take no weight
  for (int64_t i = 0; i < L; ++i) {
    float* p = P + i * lp;
    __m256 mx = _mm256_loadu_ps(p);
    for (int64_t j = 8; j < lp; j += 8) mx = _mm256_max_ps(mx, _mm256_loadu_ps(p + j));
    const __m256 m = _mm256_set1_ps(hmax(mx));
    __m256 den = _mm256_setzero_ps();
    for (int64_t j = 0; j < lp; j += 8) {
      const __m256 e = v_exp(_mm256_sub_ps(_mm256_loadu_ps(p + j), m));
      _mm256_storeu_ps(p + j, e);
      den = _mm256_add_ps(den, e);
    }
    inv[i] = 1.0f / hsum(den);
  }
  // 3. p @ v: 64-column stripes one row at a time, a narrower rest several rows per pass over v
  const int64_t full = dh / 8 * 8;
  int64_t c0 = 0;
  for (; c0 + 64 <= full; c0 += 64) pv_rows<1, 8>(P, lp, inv, vt + c0, dh, L, out + c0, ldo);
  switch ((full - c0) / 8) {
    case 1: pv_rows<4, 1>(P, lp, inv, vt + c0, dh, L, out + c0, ldo); break;
    case 2: pv_rows<4, 2>(P, lp, inv, vt + c0, dh, L, out + c0, ldo); break;
    case 3: pv_rows<3, 3>(P, lp, inv, vt + c0, dh, L, out + c0, ldo); break;
    case 4: pv_rows<2, 4>(P, lp, inv, vt + c0, dh, L, out + c0, ldo); break;
    case 5: pv_rows<2, 5>(P, lp, inv, vt + c0, dh, L, out + c0, ldo); break;
    case 6: pv_rows<1, 6>(P, lp, inv, vt + c0, dh, L, out + c0, ldo); break;
    case 7: pv_rows<1, 7>(P, lp, inv, vt + c0, dh, L, out + c0, ldo); break;
    default: break;
  }
  for (int64_t i = 0; i < L; ++i)
    for (int64_t c = full; c < dh; ++c) {
      float s = 0.0f;
      for (int64_t j = 0; j < L; ++j) s += P[i * lp + j] * vt[j * dh + c];
      out[i * ldo + c] = s * inv[i];
    }
}

}  // namespace

void register_attn(KernelTable& t) {
  t.attn.head = head;
  // Zen 5 forced to AVX2, one thread, 12 heads of 32, numpy on OpenBLAS's Haswell kernels:
  // 1.14-1.2x numpy at L = 128, 1.55x at 8 x 32 tokens, parity at L = 512.
  t.attn.vectorized = true;
}

}  // namespace edgepack::avx2
