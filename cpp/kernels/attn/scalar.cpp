// Scalar reference attention head: the textbook two-pass softmax in float, std::exp.
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "core/dispatch.h"
#include "kernels/attn/attn.h"

namespace edgepack::scalar {
namespace {

void head(const float* q, const float* k, const float* v, int64_t ld, int64_t L, int64_t dh, float* out,
          int64_t ldo, float* /*kt*/, float* p) {
  for (int64_t i = 0; i < L; ++i) {
    const float* qi = q + i * ld;
    float mx = -INFINITY;
    for (int64_t j = 0; j < L; ++j) {
      const float* kj = k + j * ld;
      float s = 0.0f;
      for (int64_t c = 0; c < dh; ++c) s += qi[c] * kj[c];
      p[j] = s;
      mx = s > mx ? s : mx;
    }
    float den = 0.0f;
    for (int64_t j = 0; j < L; ++j) {
      p[j] = std::exp(p[j] - mx);
      den += p[j];
    }
    float* oi = out + i * ldo;
    for (int64_t c = 0; c < dh; ++c) oi[c] = 0.0f;
    for (int64_t j = 0; j < L; ++j) {
      const float* vj = v + j * ld;
      for (int64_t c = 0; c < dh; ++c) oi[c] += p[j] * vj[c];
    }
    const float inv = 1.0f / den;
    for (int64_t c = 0; c < dh; ++c) oi[c] *= inv;
  }
}

}  // namespace

void register_attn(KernelTable& t) {
  t.attn.head = head;
  t.attn.vectorized = false;
}

}  // namespace edgepack::scalar
