// Kernel contract for the quantize area (ONNX QuantizeLinear / DequantizeLinear, min/max for
// choose_qparams). Declarations only: this header is included by ISA translation units.
//
// Semantics, bit for bit on every path:
//   quantize    q = saturate(round_half_even(x / scale) + zp)   into [-128, 127] (int8) or
//               [0, 255] (uint8), written as bytes. x / scale is a true IEEE division (a product
//               with 1/scale differs in the last bit often enough to move ties). Paths clamp the
//               quotient to [lo - zp, hi - zp] BEFORE converting: those bounds are integers, so
//               round(clamp(t)) == clamp(round(t)), and huge quotients never reach the int32
//               conversion (whose out-of-range result is INT_MIN).
//   dequantize  x = float(q - zp) * scale                        (one rounding: no FMA possible)
//   minmax      running min and max of x, folded into *mn / *mx (or per element for the _v forms).
// Every op that reads float input reports the flat index (relative to x) of the first NaN/Inf
// as StatusCode::non_finite, detected in the same pass; the output is then unspecified.
//
// The per-row symmetric quantizer (edgepack.kernels.quantize_rows) is GemmOps::quant_rows
// (kernels/gemm_s8/gemm_s8.h): the one routine linear_int8 uses, shared, not duplicated.
#pragma once
#include <cstddef>
#include <cstdint>

#include "core/status.h"

namespace edgepack {

// n elements, one scale and zero point (per-tensor, or one contiguous run of a channel).
using QuantFn = Status (*)(const float* x, int64_t n, float scale, int32_t zp, bool u8, uint8_t* out);
// n elements, element i with scale[i] and zp[i] (a row of a tensor quantized along its last axis).
using QuantVFn = Status (*)(const float* x, int64_t n, const float* scale, const int32_t* zp, bool u8,
                            uint8_t* out);
using DequantFn = void (*)(const uint8_t* q, int64_t n, float scale, int32_t zp, bool u8, float* out);
using DequantVFn = void (*)(const uint8_t* q, int64_t n, const float* scale, const int32_t* zp, bool u8,
                            float* out);
// *mn = min(*mn, x[0..n)), *mx likewise (caller initialises to +-inf or earlier values).
using MinMaxFn = Status (*)(const float* x, int64_t n, float* mn, float* mx);
// mn[i] = min(mn[i], x[i]), mx[i] = max(mx[i], x[i]) for i < n.
using MinMaxVFn = Status (*)(const float* x, int64_t n, float* mn, float* mx);

struct QuantizeOps {
  QuantFn quant = nullptr;
  QuantVFn quant_v = nullptr;
  DequantFn dequant = nullptr;
  DequantVFn dequant_v = nullptr;
  MinMaxFn minmax = nullptr;
  MinMaxVFn minmax_v = nullptr;
};

// ---- driver (cpp/kernels/quantize/driver.cpp): baseline code, used by the bindings ----------
// x is viewed as [outer, channels, inner] (C order); scale / zp hold `channels` entries (1 for
// per-tensor, with outer * inner = the whole tensor). Threaded over blocks of large inputs;
// results do not depend on the split.
namespace quant {

Status quantize(const float* x, int64_t outer, int64_t channels, int64_t inner, const float* scale,
                const int32_t* zp, bool u8, uint8_t* out);
void dequantize(const uint8_t* q, int64_t outer, int64_t channels, int64_t inner, const float* scale,
                const int32_t* zp, bool u8, float* out);
// mn / mx [channels]: min / max of each channel (+inf / -inf for an empty channel).
Status minmax(const float* x, int64_t outer, int64_t channels, int64_t inner, float* mn, float* mx);
// edgepack.kernels.quantize_rows: the active path's GemmOps::quant_rows over m rows of k floats,
// threaded over rows. q [m, k] int8, scale [m].
Status quantize_rows(const float* x, int64_t m, int64_t k, int8_t* q, float* scale);

}  // namespace quant
}  // namespace edgepack
