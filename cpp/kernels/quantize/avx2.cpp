// AVX2 quantize kernels, 8 floats per ymm, the formulas of quantize.h: vdivps (the true quotient),
// clamp to [lo - zp, hi - zp] before vcvtps2dq (round half to even), + zp, then vpackssdw and
// vpacksswb / vpackuswb (values are already in range, so the saturating packs only narrow) and
// one lane fix-up permute per 32 outputs. NaN/Inf accumulate as x - x (0 for finite x) in the same
// pass. Tails run one element at a time with the scalar SSE forms of the same instructions.
#include <immintrin.h>

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "core/dispatch.h"
#include "kernels/quantize/quantize.h"

namespace edgepack::avx2 {
namespace {

#define EP_INLINE inline __attribute__((always_inline))

Status first_bad(const float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    if (!(x[i] - x[i] == 0.0f)) return Status::at(StatusCode::non_finite, i);
  return Status::good();
}

EP_INLINE bool any_nan(__m256 acc) { return _mm256_movemask_ps(_mm256_cmp_ps(acc, acc, _CMP_UNORD_Q)) != 0; }

EP_INLINE __m256i quant8(__m256 v, __m256 vs, __m256 lo, __m256 hi, __m256i vz) {
  __m256 t = _mm256_div_ps(v, vs);
  t = _mm256_min_ps(_mm256_max_ps(t, lo), hi);
  return _mm256_add_epi32(_mm256_cvtps_epi32(t), vz);
}

// One element, same instructions in their scalar forms.
EP_INLINE uint8_t quant1(float v, float s, int32_t zp, float lo, float hi) {
  __m128 t = _mm_div_ss(_mm_set_ss(v), _mm_set_ss(s));
  t = _mm_min_ss(_mm_max_ss(t, _mm_set_ss(lo)), _mm_set_ss(hi));
  return static_cast<uint8_t>(_mm_cvtss_si32(t) + zp);
}

// 32 int32 lanes in range -> 32 bytes in order.
template <bool U8>
EP_INLINE __m256i pack32(__m256i q0, __m256i q1, __m256i q2, __m256i q3) {
  const __m256i a = _mm256_packs_epi32(q0, q1), b = _mm256_packs_epi32(q2, q3);
  const __m256i c = U8 ? _mm256_packus_epi16(a, b) : _mm256_packs_epi16(a, b);
  return _mm256_permutevar8x32_epi32(c, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

template <bool U8>
Status quant_t(const float* x, int64_t n, float s, int32_t zp, uint8_t* out) {
  const float flo = static_cast<float>((U8 ? 0 : -128) - zp), fhi = static_cast<float>((U8 ? 255 : 127) - zp);
  const __m256 vs = _mm256_set1_ps(s), lo = _mm256_set1_ps(flo), hi = _mm256_set1_ps(fhi);
  const __m256i vz = _mm256_set1_epi32(zp);
  __m256 acc = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    const __m256 v0 = _mm256_loadu_ps(x + i), v1 = _mm256_loadu_ps(x + i + 8);
    const __m256 v2 = _mm256_loadu_ps(x + i + 16), v3 = _mm256_loadu_ps(x + i + 24);
    acc = _mm256_add_ps(acc, _mm256_add_ps(_mm256_add_ps(_mm256_sub_ps(v0, v0), _mm256_sub_ps(v1, v1)),
                                           _mm256_add_ps(_mm256_sub_ps(v2, v2), _mm256_sub_ps(v3, v3))));
    const __m256i b = pack32<U8>(quant8(v0, vs, lo, hi, vz), quant8(v1, vs, lo, hi, vz), quant8(v2, vs, lo, hi, vz),
                                 quant8(v3, vs, lo, hi, vz));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i), b);
  }
  bool bad = any_nan(acc);
  for (; i < n; ++i) {
    bad |= !(x[i] - x[i] == 0.0f);
    out[i] = quant1(x[i], s, zp, flo, fhi);
  }
  return bad ? first_bad(x, n) : Status::good();
}

Status quant(const float* x, int64_t n, float s, int32_t zp, bool u8, uint8_t* out) {
  return u8 ? quant_t<true>(x, n, s, zp, out) : quant_t<false>(x, n, s, zp, out);
}

EP_INLINE __m256i quant8v(__m256 v, const float* s, const int32_t* zp, __m256i vlo, __m256i vhi) {
  const __m256i vz = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(zp));
  const __m256 lo = _mm256_cvtepi32_ps(_mm256_sub_epi32(vlo, vz)), hi = _mm256_cvtepi32_ps(_mm256_sub_epi32(vhi, vz));
  return quant8(v, _mm256_loadu_ps(s), lo, hi, vz);
}

template <bool U8>
Status quant_v_t(const float* x, int64_t n, const float* s, const int32_t* zp, uint8_t* out) {
  const int32_t ilo = U8 ? 0 : -128, ihi = U8 ? 255 : 127;
  const __m256i vlo = _mm256_set1_epi32(ilo), vhi = _mm256_set1_epi32(ihi);
  __m256 acc = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    __m256i q[4];
    for (int j = 0; j < 4; ++j) {
      const __m256 v = _mm256_loadu_ps(x + i + 8 * j);
      acc = _mm256_add_ps(acc, _mm256_sub_ps(v, v));
      q[j] = quant8v(v, s + i + 8 * j, zp + i + 8 * j, vlo, vhi);
    }
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i), pack32<U8>(q[0], q[1], q[2], q[3]));
  }
  bool bad = any_nan(acc);
  for (; i < n; ++i) {
    bad |= !(x[i] - x[i] == 0.0f);
    out[i] = quant1(x[i], s[i], zp[i], static_cast<float>(ilo - zp[i]), static_cast<float>(ihi - zp[i]));
  }
  return bad ? first_bad(x, n) : Status::good();
}

Status quant_v(const float* x, int64_t n, const float* s, const int32_t* zp, bool u8, uint8_t* out) {
  return u8 ? quant_v_t<true>(x, n, s, zp, out) : quant_v_t<false>(x, n, s, zp, out);
}

template <bool U8>
EP_INLINE __m256i widen8(const uint8_t* q) {
  const __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(q));
  return U8 ? _mm256_cvtepu8_epi32(b) : _mm256_cvtepi8_epi32(b);
}

template <bool U8>
EP_INLINE int32_t load1(const uint8_t* q) {
  return U8 ? static_cast<int32_t>(*q) : static_cast<int32_t>(static_cast<int8_t>(*q));
}

template <bool U8>
void dequant_t(const uint8_t* q, int64_t n, float s, int32_t zp, float* out) {
  const __m256 vs = _mm256_set1_ps(s);
  const __m256i vz = _mm256_set1_epi32(zp);
  int64_t i = 0;
  for (; i + 32 <= n; i += 32)
    for (int j = 0; j < 4; ++j)
      _mm256_storeu_ps(out + i + 8 * j,
                       _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(widen8<U8>(q + i + 8 * j), vz)), vs));
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(widen8<U8>(q + i), vz)), vs));
  for (; i < n; ++i) out[i] = static_cast<float>(load1<U8>(q + i) - zp) * s;
}

void dequant(const uint8_t* q, int64_t n, float s, int32_t zp, bool u8, float* out) {
  if (u8) dequant_t<true>(q, n, s, zp, out);
  else dequant_t<false>(q, n, s, zp, out);
}

template <bool U8>
void dequant_v_t(const uint8_t* q, int64_t n, const float* s, const int32_t* zp, float* out) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256i vz = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(zp + i));
    _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(widen8<U8>(q + i), vz)),
                                            _mm256_loadu_ps(s + i)));
  }
  for (; i < n; ++i) out[i] = static_cast<float>(load1<U8>(q + i) - zp[i]) * s[i];
}

void dequant_v(const uint8_t* q, int64_t n, const float* s, const int32_t* zp, bool u8, float* out) {
  if (u8) dequant_v_t<true>(q, n, s, zp, out);
  else dequant_v_t<false>(q, n, s, zp, out);
}

Status minmax(const float* x, int64_t n, float* mn, float* mx) {
  __m256 a0 = _mm256_set1_ps(*mn), a1 = a0, b0 = _mm256_set1_ps(*mx), b1 = b0, acc = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256 v0 = _mm256_loadu_ps(x + i), v1 = _mm256_loadu_ps(x + i + 8);
    acc = _mm256_add_ps(acc, _mm256_add_ps(_mm256_sub_ps(v0, v0), _mm256_sub_ps(v1, v1)));
    a0 = _mm256_min_ps(a0, v0);
    a1 = _mm256_min_ps(a1, v1);
    b0 = _mm256_max_ps(b0, v0);
    b1 = _mm256_max_ps(b1, v1);
  }
  if (any_nan(acc)) return first_bad(x, n);
  alignas(32) float la[8], lb[8];
  _mm256_store_ps(la, _mm256_min_ps(a0, a1));
  _mm256_store_ps(lb, _mm256_max_ps(b0, b1));
  float a = la[0], b = lb[0];
  for (int j = 1; j < 8; ++j) {
    a = la[j] < a ? la[j] : a;
    b = lb[j] > b ? lb[j] : b;
  }
  for (; i < n; ++i) {
    const float v = x[i];
    if (!(v - v == 0.0f)) return first_bad(x, n);
    a = v < a ? v : a;
    b = v > b ? v : b;
  }
  *mn = a;
  *mx = b;
  return Status::good();
}

Status minmax_v(const float* x, int64_t n, float* mn, float* mx) {
  __m256 acc = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    acc = _mm256_add_ps(acc, _mm256_sub_ps(v, v));
    _mm256_storeu_ps(mn + i, _mm256_min_ps(_mm256_loadu_ps(mn + i), v));
    _mm256_storeu_ps(mx + i, _mm256_max_ps(_mm256_loadu_ps(mx + i), v));
  }
  bool bad = any_nan(acc);
  for (; i < n; ++i) {
    const float v = x[i];
    bad |= !(v - v == 0.0f);
    mn[i] = v < mn[i] ? v : mn[i];
    mx[i] = v > mx[i] ? v : mx[i];
  }
  return bad ? first_bad(x, n) : Status::good();
}

#undef EP_INLINE

}  // namespace

void register_quantize(KernelTable& t) {
  t.quantize.quant = quant;
  t.quantize.quant_v = quant_v;
  t.quantize.dequant = dequant;
  t.quantize.dequant_v = dequant_v;
  t.quantize.minmax = minmax;
  t.quantize.minmax_v = minmax_v;
}

}  // namespace edgepack::avx2
