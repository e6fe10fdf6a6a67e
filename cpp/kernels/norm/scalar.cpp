// Scalar reference LayerNorm row (residual add fused).
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "core/dispatch.h"
#include "kernels/norm/norm.h"

namespace edgepack::scalar {
namespace {

void layer_norm_row(const float* x, const float* r, const float* w, const float* b, int64_t d, float eps,
                    float* out) {
  float sum = 0.0f;
  for (int64_t i = 0; i < d; ++i) {
    const float t = r ? x[i] + r[i] : x[i];
    out[i] = t;
    sum += t;
  }
  const float mean = sum / float(d);
  float ss = 0.0f;
  for (int64_t i = 0; i < d; ++i) {
    const float c = out[i] - mean;
    ss += c * c;
  }
  const float rstd = 1.0f / std::sqrt(ss / float(d) + eps);
  for (int64_t i = 0; i < d; ++i) out[i] = (out[i] - mean) * rstd * w[i] + b[i];
}

}  // namespace

void register_norm(KernelTable& t) { t.norm.layer_norm_row = layer_norm_row; }

}  // namespace edgepack::scalar
