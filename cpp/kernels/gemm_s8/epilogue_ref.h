// Scalar epilogue shared by the scalar path and the drivers' tail handling. Baseline code only
// (included by scalar.cpp and driver.cpp, never by an ISA translation unit).
#pragma once
#include <cmath>
#include <cstdint>

#include "kernels/gemm_s8/gemm_s8.h"

namespace edgepack::gemm {

// The activations in their textbook forms, evaluated in float with the C library (the
// reference the vector paths' approximations are tested against).
inline float apply_act_ref(float y, Act act) {
  switch (act) {
    case Act::none: return y;
    case Act::relu: return y > 0.0f ? y : 0.0f;
    case Act::gelu: return 0.5f * y * (1.0f + std::erf(y * 0.70710678118654752f));
    case Act::gelu_tanh: {
      const float u = 0.7978845608028654f * (y + 0.044715f * y * y * y);
      return 0.5f * y * (1.0f + std::tanh(u));
    }
    case Act::silu: return y / (1.0f + std::exp(-y));
  }
  return y;
}

}  // namespace edgepack::gemm
