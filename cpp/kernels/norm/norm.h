// Kernel contract for the norm area: LayerNorm over the last axis, with the residual add that
// precedes it in a post-LN transformer fused in. Declarations only (included by ISA units).
//
//   t = x + r (r optional);  out = (t - mean(t)) / sqrt(var(t) + eps) * w + b
//
// mean and the (biased) variance are float32 sums over the row, the variance taken around the
// mean (two passes, no E[t^2] - E[t]^2 cancellation). Paths differ by summation order only:
// within a few float32 ulps of each other, and a row's result never depends on other rows.
#pragma once
#include <cstddef>
#include <cstdint>

namespace edgepack {

// One row of d floats; out may alias x (or r).
using LayerNormRowFn = void (*)(const float* x, const float* r, const float* w, const float* b, int64_t d,
                                float eps, float* out);

struct NormOps {
  LayerNormRowFn layer_norm_row = nullptr;
};

namespace norm {

// m rows of d floats (x, r, out with row stride d; r may be null), threaded over rows.
void layer_norm(const float* x, const float* r, const float* w, const float* b, int64_t m, int64_t d, float eps,
                float* out);

}  // namespace norm
}  // namespace edgepack
