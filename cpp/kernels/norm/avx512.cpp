// AVX-512 LayerNorm row: residual add and sum in one pass, centred sum of squares in a second,
// scale and shift in a third (a BERT row of 384 floats stays in L1 throughout). Tails use masked
// loads. avx512_vnni inherits this entry.
#include <immintrin.h>

#include <cstddef>
#include <cstdint>

#include "core/dispatch.h"
#include "kernels/norm/norm.h"

namespace edgepack::avx512 {
namespace {

inline __mmask16 tail(int64_t n) { return n >= 16 ? __mmask16(0xFFFF) : static_cast<__mmask16>((1u << n) - 1); }

void layer_norm_row(const float* x, const float* r, const float* w, const float* b, int64_t d, float eps,
                    float* out) {
  __m512 s0 = _mm512_setzero_ps(), s1 = s0;
  int64_t i = 0;
  for (; i + 32 <= d; i += 32) {
    __m512 t0 = _mm512_loadu_ps(x + i), t1 = _mm512_loadu_ps(x + i + 16);
    if (r) {
      t0 = _mm512_add_ps(t0, _mm512_loadu_ps(r + i));
      t1 = _mm512_add_ps(t1, _mm512_loadu_ps(r + i + 16));
    }
    _mm512_storeu_ps(out + i, t0);
    _mm512_storeu_ps(out + i + 16, t1);
    s0 = _mm512_add_ps(s0, t0);
    s1 = _mm512_add_ps(s1, t1);
  }
  for (; i < d; i += 16) {
    const __mmask16 m = tail(d - i);
    __m512 t = _mm512_maskz_loadu_ps(m, x + i);
    if (r) t = _mm512_add_ps(t, _mm512_maskz_loadu_ps(m, r + i));
    _mm512_mask_storeu_ps(out + i, m, t);
    s0 = _mm512_add_ps(s0, t);
  }
  const float mean_s = _mm512_reduce_add_ps(_mm512_add_ps(s0, s1)) / float(d);
  const __m512 mean = _mm512_set1_ps(mean_s);
  __m512 q0 = _mm512_setzero_ps(), q1 = q0;
  for (i = 0; i + 32 <= d; i += 32) {
    const __m512 c0 = _mm512_sub_ps(_mm512_loadu_ps(out + i), mean);
    const __m512 c1 = _mm512_sub_ps(_mm512_loadu_ps(out + i + 16), mean);
    q0 = _mm512_fmadd_ps(c0, c0, q0);
    q1 = _mm512_fmadd_ps(c1, c1, q1);
  }
  for (; i < d; i += 16) {
    const __mmask16 m = tail(d - i);
    const __m512 c = _mm512_maskz_sub_ps(m, _mm512_maskz_loadu_ps(m, out + i), mean);
    q0 = _mm512_fmadd_ps(c, c, q0);
  }
  const float var = _mm512_reduce_add_ps(_mm512_add_ps(q0, q1)) / float(d);
  const __m512 rstd = _mm512_set1_ps(1.0f / __builtin_sqrtf(var + eps));
  for (i = 0; i < d; i += 16) {
    const __mmask16 m = tail(d - i);
    const __m512 c = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, out + i), mean), rstd);
    _mm512_mask_storeu_ps(out + i, m,
                          _mm512_fmadd_ps(c, _mm512_maskz_loadu_ps(m, w + i), _mm512_maskz_loadu_ps(m, b + i)));
  }
}

}  // namespace

void register_norm(KernelTable& t) { t.norm.layer_norm_row = layer_norm_row; }

}  // namespace edgepack::avx512
