// The conv epilogue in scalar C++: the reference every vector path reproduces bit for bit.
// Baseline code only (included by scalar.cpp, never by an ISA translation unit).
#pragma once
#include <cmath>
#include <cstdint>

#include "kernels/conv_s8/conv_s8.h"

namespace edgepack::conv {

// The x86 vmaxps / vminps semantics (second operand when either is NaN), which every path uses.
inline float max_ref(float a, float b) { return a > b ? a : b; }
inline float min_ref(float a, float b) { return a < b ? a : b; }

// kernels/common/vexp_*.inc step by step: clamp to [-87, 88], n = rne(x log2 e), two-step
// Cody-Waite reduction and the degree-6 polynomial with fused multiply-adds (std::fma rounds
// once, like vfmadd), scaled by 2^n (n in [-126, 127]: an exact power of two).
inline float exp_ref(float x) {
  x = min_ref(max_ref(x, -87.0f), 88.0f);
  const float n = std::nearbyint(x * 1.44269504088896341f);
  float r = std::fma(-n, 0.693145751953125f, x);
  r = std::fma(-n, 1.428606765330187e-06f, r);
  float p = 1.0f / 720;
  p = std::fma(p, r, 1.0f / 120);
  p = std::fma(p, r, 1.0f / 24);
  p = std::fma(p, r, 1.0f / 6);
  p = std::fma(p, r, 0.5f);
  p = std::fma(p, r, 1.0f);
  p = std::fma(p, r, 1.0f);
  return p * std::ldexp(1.0f, static_cast<int>(n));
}

inline float act_ref(float y, Act act, float p0, float p1) {
  switch (act) {
    case Act::none: return y;
    case Act::relu: return max_ref(y, 0.0f);
    case Act::clip: return min_ref(max_ref(y, p0), p1);
    case Act::hardsigmoid: return min_ref(max_ref(y * p0 + p1, 0.0f), 1.0f);
    case Act::hardswish: return y * min_ref(max_ref(y * (1.0f / 6.0f) + 0.5f, 0.0f), 1.0f);
    case Act::leakyrelu: return y < 0.0f ? y * p0 : y;
    case Act::sigmoid: return 1.0f / (1.0f + exp_ref(0.0f - y));
    case Act::silu: return y / (1.0f + exp_ref(0.0f - y));
  }
  return y;
}

// Output element (row m, channel n) from its accumulator.
inline void store_ref(const ConvEpi& e, int64_t m, int64_t n, int32_t acc) {
  const int64_t i = m * e.ldy + n;
  if (e.out == Out::i32) {
    static_cast<int32_t*>(e.y)[i] = acc;
    return;
  }
  float y = (static_cast<float>(acc) * e.x_scale) * e.w_scale[n];
  if (e.bias) y = y + e.bias[n];
  if (e.residual) y = y + e.residual[i];
  y = act_ref(y, e.act, e.p0, e.p1);
  if (e.out == Out::f32) {
    static_cast<float*>(e.y)[i] = y;
    return;
  }
  const float v = min_ref(max_ref(y * e.inv_out_scale, e.qlo), e.qhi);
  const int32_t q = static_cast<int32_t>(std::nearbyint(v)) + e.out_zp;
  static_cast<uint8_t*>(e.y)[i] = static_cast<uint8_t>(q);
}

}  // namespace edgepack::conv
