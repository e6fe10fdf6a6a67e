// AVX-512 (F/BW/DQ/VL) quantize kernels, 16 floats per zmm: a true division (vdivps: the quotient
// of ONNX's x / scale, bit for bit), clamp to [lo - zp, hi - zp] (integers: clamping commutes with
// rounding, and no quotient reaches the int32 conversion out of range), vcvtps2dq (round half to
// even under the default MXCSR), + zp, vpmovdb (values are in range: truncation is exact). NaN/Inf
// are flagged with vfpclassps in the same pass. Tails use masked loads and stores. avx512_vnni
// inherits these entries (nothing here needs VNNI).
#include <immintrin.h>

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "core/dispatch.h"
#include "kernels/quantize/quantize.h"

namespace edgepack::avx512 {
namespace {

#define EP_INLINE inline __attribute__((always_inline))

constexpr int kNonFinite = 0x01 | 0x08 | 0x10 | 0x80;  // QNaN, +Inf, -Inf, SNaN

// Error path only: the exact first index.
Status first_bad(const float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    if (!(x[i] - x[i] == 0.0f)) return Status::at(StatusCode::non_finite, i);
  return Status::good();
}

EP_INLINE __mmask16 tail_mask(int64_t r) { return static_cast<__mmask16>((1u << r) - 1); }

EP_INLINE __m128i quant16(__m512 v, __m512 vs, __m512 lo, __m512 hi, __m512i vz) {
  __m512 t = _mm512_div_ps(v, vs);
  t = _mm512_min_ps(_mm512_max_ps(t, lo), hi);
  return _mm512_cvtepi32_epi8(_mm512_add_epi32(_mm512_cvtps_epi32(t), vz));
}

Status quant(const float* x, int64_t n, float s, int32_t zp, bool u8, uint8_t* out) {
  const __m512 vs = _mm512_set1_ps(s);
  const __m512 lo = _mm512_set1_ps(static_cast<float>((u8 ? 0 : -128) - zp));
  const __m512 hi = _mm512_set1_ps(static_cast<float>((u8 ? 255 : 127) - zp));
  const __m512i vz = _mm512_set1_epi32(zp);
  __mmask16 bad = 0;
  int64_t i = 0;
  for (; i + 64 <= n; i += 64) {
    const __m512 v0 = _mm512_loadu_ps(x + i), v1 = _mm512_loadu_ps(x + i + 16);
    const __m512 v2 = _mm512_loadu_ps(x + i + 32), v3 = _mm512_loadu_ps(x + i + 48);
    bad |= _mm512_fpclass_ps_mask(v0, kNonFinite) | _mm512_fpclass_ps_mask(v1, kNonFinite) |
           _mm512_fpclass_ps_mask(v2, kNonFinite) | _mm512_fpclass_ps_mask(v3, kNonFinite);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i), quant16(v0, vs, lo, hi, vz));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i + 16), quant16(v1, vs, lo, hi, vz));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i + 32), quant16(v2, vs, lo, hi, vz));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i + 48), quant16(v3, vs, lo, hi, vz));
  }
  for (; i + 16 <= n; i += 16) {
    const __m512 v = _mm512_loadu_ps(x + i);
    bad |= _mm512_fpclass_ps_mask(v, kNonFinite);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i), quant16(v, vs, lo, hi, vz));
  }
  if (i < n) {
    const __mmask16 m = tail_mask(n - i);
    const __m512 v = _mm512_maskz_loadu_ps(m, x + i);
    bad |= _mm512_fpclass_ps_mask(v, kNonFinite);
    _mm_mask_storeu_epi8(out + i, m, quant16(v, vs, lo, hi, vz));
  }
  return bad ? first_bad(x, n) : Status::good();
}

EP_INLINE __m128i quant16v(__m512 v, const float* s, const int32_t* zp, __m512i vlo, __m512i vhi, __mmask16 m) {
  const __m512 vs = _mm512_mask_loadu_ps(_mm512_set1_ps(1.0f), m, s);
  const __m512i vz = _mm512_maskz_loadu_epi32(m, zp);
  const __m512 lo = _mm512_cvtepi32_ps(_mm512_sub_epi32(vlo, vz));
  const __m512 hi = _mm512_cvtepi32_ps(_mm512_sub_epi32(vhi, vz));
  return quant16(v, vs, lo, hi, vz);
}

Status quant_v(const float* x, int64_t n, const float* s, const int32_t* zp, bool u8, uint8_t* out) {
  const __m512i vlo = _mm512_set1_epi32(u8 ? 0 : -128), vhi = _mm512_set1_epi32(u8 ? 255 : 127);
  __mmask16 bad = 0;
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 v = _mm512_loadu_ps(x + i);
    bad |= _mm512_fpclass_ps_mask(v, kNonFinite);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i), quant16v(v, s + i, zp + i, vlo, vhi, 0xffff));
  }
  if (i < n) {
    const __mmask16 m = tail_mask(n - i);
    const __m512 v = _mm512_maskz_loadu_ps(m, x + i);
    bad |= _mm512_fpclass_ps_mask(v, kNonFinite);
    _mm_mask_storeu_epi8(out + i, m, quant16v(v, s + i, zp + i, vlo, vhi, m));
  }
  return bad ? first_bad(x, n) : Status::good();
}

template <bool U8>
EP_INLINE __m512i widen(__m128i b) {
  return U8 ? _mm512_cvtepu8_epi32(b) : _mm512_cvtepi8_epi32(b);
}

template <bool U8>
void dequant_t(const uint8_t* q, int64_t n, float s, int32_t zp, float* out) {
  const __m512 vs = _mm512_set1_ps(s);
  const __m512i vz = _mm512_set1_epi32(zp);
  int64_t i = 0;
  for (; i + 64 <= n; i += 64) {
    const __m512i b = _mm512_loadu_si512(q + i);
    const __m128i b0 = _mm512_castsi512_si128(b), b1 = _mm512_extracti32x4_epi32(b, 1);
    const __m128i b2 = _mm512_extracti32x4_epi32(b, 2), b3 = _mm512_extracti32x4_epi32(b, 3);
    _mm512_storeu_ps(out + i, _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(widen<U8>(b0), vz)), vs));
    _mm512_storeu_ps(out + i + 16, _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(widen<U8>(b1), vz)), vs));
    _mm512_storeu_ps(out + i + 32, _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(widen<U8>(b2), vz)), vs));
    _mm512_storeu_ps(out + i + 48, _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(widen<U8>(b3), vz)), vs));
  }
  for (; i < n; i += 16) {
    const __mmask16 m = n - i >= 16 ? static_cast<__mmask16>(0xffff) : tail_mask(n - i);
    const __m128i b = _mm_maskz_loadu_epi8(m, q + i);
    _mm512_mask_storeu_ps(out + i, m, _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(widen<U8>(b), vz)), vs));
  }
}

void dequant(const uint8_t* q, int64_t n, float s, int32_t zp, bool u8, float* out) {
  if (u8) dequant_t<true>(q, n, s, zp, out);
  else dequant_t<false>(q, n, s, zp, out);
}

template <bool U8>
void dequant_v_t(const uint8_t* q, int64_t n, const float* s, const int32_t* zp, float* out) {
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = n - i >= 16 ? static_cast<__mmask16>(0xffff) : tail_mask(n - i);
    const __m128i b = _mm_maskz_loadu_epi8(m, q + i);
    const __m512i vz = _mm512_maskz_loadu_epi32(m, zp + i);
    const __m512 vs = _mm512_maskz_loadu_ps(m, s + i);
    _mm512_mask_storeu_ps(out + i, m, _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(widen<U8>(b), vz)), vs));
  }
}

void dequant_v(const uint8_t* q, int64_t n, const float* s, const int32_t* zp, bool u8, float* out) {
  if (u8) dequant_v_t<true>(q, n, s, zp, out);
  else dequant_v_t<false>(q, n, s, zp, out);
}

Status minmax(const float* x, int64_t n, float* mn, float* mx) {
  __m512 a0 = _mm512_set1_ps(*mn), a1 = a0, b0 = _mm512_set1_ps(*mx), b1 = b0;
  __mmask16 bad = 0;
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    const __m512 v0 = _mm512_loadu_ps(x + i), v1 = _mm512_loadu_ps(x + i + 16);
    bad |= _mm512_fpclass_ps_mask(v0, kNonFinite) | _mm512_fpclass_ps_mask(v1, kNonFinite);
    a0 = _mm512_min_ps(a0, v0);
    a1 = _mm512_min_ps(a1, v1);
    b0 = _mm512_max_ps(b0, v0);
    b1 = _mm512_max_ps(b1, v1);
  }
  for (; i < n; i += 16) {
    const __mmask16 m = n - i >= 16 ? static_cast<__mmask16>(0xffff) : tail_mask(n - i);
    const __m512 v = _mm512_maskz_loadu_ps(m, x + i);
    bad |= _mm512_mask_fpclass_ps_mask(m, v, kNonFinite);
    a0 = _mm512_mask_min_ps(a0, m, a0, v);
    b0 = _mm512_mask_max_ps(b0, m, b0, v);
  }
  if (bad) return first_bad(x, n);
  *mn = _mm512_reduce_min_ps(_mm512_min_ps(a0, a1));
  *mx = _mm512_reduce_max_ps(_mm512_max_ps(b0, b1));
  return Status::good();
}

Status minmax_v(const float* x, int64_t n, float* mn, float* mx) {
  __mmask16 bad = 0;
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = n - i >= 16 ? static_cast<__mmask16>(0xffff) : tail_mask(n - i);
    const __m512 v = _mm512_maskz_loadu_ps(m, x + i);
    bad |= _mm512_mask_fpclass_ps_mask(m, v, kNonFinite);
    _mm512_mask_storeu_ps(mn + i, m, _mm512_min_ps(_mm512_maskz_loadu_ps(m, mn + i), v));
    _mm512_mask_storeu_ps(mx + i, m, _mm512_max_ps(_mm512_maskz_loadu_ps(m, mx + i), v));
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

}  // namespace edgepack::avx512
