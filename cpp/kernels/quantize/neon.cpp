// NEON quantize kernels (ARMv8-A: Cortex-A53/A72 and up; neon_dotprod inherits them), 4 floats per
// register, the formulas of quantize.h: vdivq_f32 (the true quotient), clamp to [lo - zp, hi - zp]
// before FCVTNS (vcvtnq_s32_f32: round to nearest, ties to even, whatever FPCR says), + zp, then
// two truncating narrows (values are in range). NaN/Inf: |x| <= FLT_MAX is false for both, and
// the mask is accumulated in the same pass.
#include <arm_neon.h>

#include <cstdint>
#include <cstring>

#include "core/dispatch.h"
#include "kernels/quantize/quantize.h"

namespace edgepack::neon {
namespace {

#define EP_INLINE inline __attribute__((always_inline))

constexpr float kFltMax = 3.40282347e38f;

Status first_bad(const float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    if (!(x[i] - x[i] == 0.0f)) return Status::at(StatusCode::non_finite, i);
  return Status::good();
}

EP_INLINE uint32x4_t finite4(float32x4_t v) { return vcleq_f32(vabsq_f32(v), vdupq_n_f32(kFltMax)); }

EP_INLINE int32x4_t quant4(float32x4_t v, float32x4_t vs, float32x4_t lo, float32x4_t hi, int32x4_t vz) {
  float32x4_t t = vdivq_f32(v, vs);
  t = vminq_f32(vmaxq_f32(t, lo), hi);
  return vaddq_s32(vcvtnq_s32_f32(t), vz);
}

EP_INLINE uint8x8_t narrow8(int32x4_t a, int32x4_t b) {
  return vreinterpret_u8_s8(vmovn_s16(vcombine_s16(vmovn_s32(a), vmovn_s32(b))));
}

EP_INLINE uint8_t quant1(float v, float s, int32_t zp, float lo, float hi) {
  float t = v / s;
  t = t < lo ? lo : (t > hi ? hi : t);
  return static_cast<uint8_t>(vgetq_lane_s32(vcvtnq_s32_f32(vdupq_n_f32(t)), 0) + zp);
}

Status quant(const float* x, int64_t n, float s, int32_t zp, bool u8, uint8_t* out) {
  const float flo = static_cast<float>((u8 ? 0 : -128) - zp), fhi = static_cast<float>((u8 ? 255 : 127) - zp);
  const float32x4_t vs = vdupq_n_f32(s), lo = vdupq_n_f32(flo), hi = vdupq_n_f32(fhi);
  const int32x4_t vz = vdupq_n_s32(zp);
  uint32x4_t ok = vdupq_n_u32(~0u);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const float32x4_t v0 = vld1q_f32(x + i), v1 = vld1q_f32(x + i + 4);
    const float32x4_t v2 = vld1q_f32(x + i + 8), v3 = vld1q_f32(x + i + 12);
    ok = vandq_u32(ok, vandq_u32(vandq_u32(finite4(v0), finite4(v1)), vandq_u32(finite4(v2), finite4(v3))));
    const uint8x8_t a = narrow8(quant4(v0, vs, lo, hi, vz), quant4(v1, vs, lo, hi, vz));
    const uint8x8_t b = narrow8(quant4(v2, vs, lo, hi, vz), quant4(v3, vs, lo, hi, vz));
    vst1q_u8(out + i, vcombine_u8(a, b));
  }
  bool bad = vminvq_u32(ok) == 0;
  for (; i < n; ++i) {
    bad |= !(x[i] - x[i] == 0.0f);
    out[i] = quant1(x[i], s, zp, flo, fhi);
  }
  return bad ? first_bad(x, n) : Status::good();
}

Status quant_v(const float* x, int64_t n, const float* s, const int32_t* zp, bool u8, uint8_t* out) {
  const int32_t ilo = u8 ? 0 : -128, ihi = u8 ? 255 : 127;
  const int32x4_t vlo = vdupq_n_s32(ilo), vhi = vdupq_n_s32(ihi);
  uint32x4_t ok = vdupq_n_u32(~0u);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    int32x4_t q[2];
    for (int j = 0; j < 2; ++j) {
      const float32x4_t v = vld1q_f32(x + i + 4 * j);
      ok = vandq_u32(ok, finite4(v));
      const int32x4_t vz = vld1q_s32(zp + i + 4 * j);
      const float32x4_t lo = vcvtq_f32_s32(vsubq_s32(vlo, vz)), hi = vcvtq_f32_s32(vsubq_s32(vhi, vz));
      q[j] = quant4(v, vld1q_f32(s + i + 4 * j), lo, hi, vz);
    }
    vst1_u8(out + i, narrow8(q[0], q[1]));
  }
  bool bad = vminvq_u32(ok) == 0;
  for (; i < n; ++i) {
    bad |= !(x[i] - x[i] == 0.0f);
    out[i] = quant1(x[i], s[i], zp[i], static_cast<float>(ilo - zp[i]), static_cast<float>(ihi - zp[i]));
  }
  return bad ? first_bad(x, n) : Status::good();
}

// 8 bytes -> two int32x4 (sign- or zero-extended).
template <bool U8>
EP_INLINE void widen8(const uint8_t* q, int32x4_t* lo, int32x4_t* hi) {
  int16x8_t h;
  if (U8) h = vreinterpretq_s16_u16(vmovl_u8(vld1_u8(q)));
  else h = vmovl_s8(vld1_s8(reinterpret_cast<const int8_t*>(q)));
  *lo = vmovl_s16(vget_low_s16(h));
  *hi = vmovl_s16(vget_high_s16(h));
}

template <bool U8>
EP_INLINE int32_t load1(const uint8_t* q) {
  return U8 ? static_cast<int32_t>(*q) : static_cast<int32_t>(static_cast<int8_t>(*q));
}

template <bool U8>
void dequant_t(const uint8_t* q, int64_t n, float s, int32_t zp, float* out) {
  const float32x4_t vs = vdupq_n_f32(s);
  const int32x4_t vz = vdupq_n_s32(zp);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    int32x4_t a, b;
    widen8<U8>(q + i, &a, &b);
    vst1q_f32(out + i, vmulq_f32(vcvtq_f32_s32(vsubq_s32(a, vz)), vs));
    vst1q_f32(out + i + 4, vmulq_f32(vcvtq_f32_s32(vsubq_s32(b, vz)), vs));
  }
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
    int32x4_t a, b;
    widen8<U8>(q + i, &a, &b);
    vst1q_f32(out + i, vmulq_f32(vcvtq_f32_s32(vsubq_s32(a, vld1q_s32(zp + i))), vld1q_f32(s + i)));
    vst1q_f32(out + i + 4, vmulq_f32(vcvtq_f32_s32(vsubq_s32(b, vld1q_s32(zp + i + 4))), vld1q_f32(s + i + 4)));
  }
  for (; i < n; ++i) out[i] = static_cast<float>(load1<U8>(q + i) - zp[i]) * s[i];
}

void dequant_v(const uint8_t* q, int64_t n, const float* s, const int32_t* zp, bool u8, float* out) {
  if (u8) dequant_v_t<true>(q, n, s, zp, out);
  else dequant_v_t<false>(q, n, s, zp, out);
}

Status minmax(const float* x, int64_t n, float* mn, float* mx) {
  float32x4_t a0 = vdupq_n_f32(*mn), a1 = a0, b0 = vdupq_n_f32(*mx), b1 = b0;
  uint32x4_t ok = vdupq_n_u32(~0u);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const float32x4_t v0 = vld1q_f32(x + i), v1 = vld1q_f32(x + i + 4);
    ok = vandq_u32(ok, vandq_u32(finite4(v0), finite4(v1)));
    a0 = vminq_f32(a0, v0);
    a1 = vminq_f32(a1, v1);
    b0 = vmaxq_f32(b0, v0);
    b1 = vmaxq_f32(b1, v1);
  }
  if (vminvq_u32(ok) == 0) return first_bad(x, n);
  float a = vminvq_f32(vminq_f32(a0, a1)), b = vmaxvq_f32(vmaxq_f32(b0, b1));
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
  uint32x4_t ok = vdupq_n_u32(~0u);
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    const float32x4_t v = vld1q_f32(x + i);
    ok = vandq_u32(ok, finite4(v));
    vst1q_f32(mn + i, vminq_f32(vld1q_f32(mn + i), v));
    vst1q_f32(mx + i, vmaxq_f32(vld1q_f32(mx + i), v));
  }
  bool bad = vminvq_u32(ok) == 0;
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

}  // namespace edgepack::neon
