// Scalar activations of the conv_f32 epilogue, in their textbook forms with the C library.
// Baseline code only (included by scalar.cpp and tests/cpp, never by an ISA translation unit):
// the reference the vector paths' exp-based approximations are tested against.
#pragma once
#include <cmath>

#include "kernels/conv_f32/conv_f32.h"

namespace edgepack::convf {

inline float act_ref(float y, const Epilogue& e) {
  switch (e.act) {
    case Act::none: return y;
    case Act::relu: return y > 0.0f ? y : 0.0f;
    case Act::clip: return y < e.p0 ? e.p0 : (y > e.p1 ? e.p1 : y);
    case Act::hardswish: {
      const float h = y * (1.0f / 6.0f) + 0.5f;
      return y * (h < 0.0f ? 0.0f : (h > 1.0f ? 1.0f : h));
    }
    case Act::hardsigmoid: {
      const float h = e.p0 * y + e.p1;
      return h < 0.0f ? 0.0f : (h > 1.0f ? 1.0f : h);
    }
    case Act::silu: return y / (1.0f + std::exp(-y));
    case Act::leakyrelu: return y < 0.0f ? e.p0 * y : y;
    case Act::sigmoid: return 1.0f / (1.0f + std::exp(-y));
    case Act::tanh: return std::tanh(y);
  }
  return y;
}

}  // namespace edgepack::convf
