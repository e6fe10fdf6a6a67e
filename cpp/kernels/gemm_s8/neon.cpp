// int8 GEMM on ARMv8-A cores without dot product (Cortex-A53/A72/A73: Raspberry Pi 3/4): the
// c4 packed layout read with widening multiplies. For one k-group, a row's 4 activation bytes are
// repeated across a register; vmull_s8 multiplies them with 2 columns x 4 k of B into int16
// (|a*w| <= 128*128 fits int16 exactly, -128 included), and vpadalq_s16 adds neighbour pairs into
// int32, so every step is exact for any int8 input (no reliance on w != -128). Each accumulator
// lane holds half of one column's sum; one pairwise add at the end gives 4 columns per register.
// Tile: 2 rows x 16 columns = 16 accumulators.
#include <arm_neon.h>

#include <cstdint>
#include <cstring>

#include "core/dispatch.h"
#include "kernels/gemm_s8/gemm_s8.h"

extern "C" float erff(float);
extern "C" float tanhf(float);
extern "C" float expf(float);

namespace edgepack::neon {
namespace {

using gemm::Act;
using gemm::kKU;
using gemm::kNR;

#include "kernels/gemm_s8/neon_tile.inc"
#include "kernels/gemm_s8/neon_gemm.inc"

// Fused per-row quantizer (the contract of QuantRowsFn): absmax pass with a finiteness check,
// then q = round_half_even(x / scale) with a true division (vdivq_f32, as the scalar path
// divides) and FCVTNS (round to nearest, ties to even), clamped to [-127, 127].
Status quant_rows(const float* x, int64_t m, int64_t k, int64_t ldx, uint8_t* out, int64_t ldo, int64_t kp,
                  float* scale, uint8_t xor_mask) {
  const float32x4_t fmax = vdupq_n_f32(3.40282347e38f);
  for (int64_t r = 0; r < m; ++r) {
    const float* xr = x + r * ldx;
    float32x4_t vmax = vdupq_n_f32(0.0f);
    uint32x4_t finite = vdupq_n_u32(~0u);
    int64_t c = 0;
    for (; c + 4 <= k; c += 4) {
      const float32x4_t a = vabsq_f32(vld1q_f32(xr + c));
      finite = vandq_u32(finite, vcleq_f32(a, fmax));  // false for NaN and +-Inf
      vmax = vmaxq_f32(vmax, a);
    }
    float amax = vmaxvq_f32(vmax);
    bool ok = vminvq_u32(finite) != 0;
    for (; c < k; ++c) {
      const float a = vgetq_lane_f32(vabsq_f32(vdupq_n_f32(xr[c])), 0);
      ok = ok && a <= 3.40282347e38f;
      amax = a > amax ? a : amax;
    }
    if (!ok) {
      for (int64_t i = 0; i < k; ++i) {
        const float a = vgetq_lane_f32(vabsq_f32(vdupq_n_f32(xr[i])), 0);
        if (!(a <= 3.40282347e38f)) return Status::at(StatusCode::non_finite, r * k + i);
      }
    }
    const float sc0 = amax / 127.0f, sc = sc0 > 0.0f ? sc0 : 1.0f;  // 1 for a zero row, also when absmax / 127 underflows
    scale[r] = sc;
    uint8_t* o = out + r * ldo;
    const float32x4_t vs = vdupq_n_f32(sc);
    const int32x4_t lo = vdupq_n_s32(-127), hi = vdupq_n_s32(127);
    const uint8x8_t vmask = vdup_n_u8(xor_mask);
    c = 0;
    for (; c + 8 <= k; c += 8) {
      int32x4_t q0 = vcvtnq_s32_f32(vdivq_f32(vld1q_f32(xr + c), vs));
      int32x4_t q1 = vcvtnq_s32_f32(vdivq_f32(vld1q_f32(xr + c + 4), vs));
      q0 = vminq_s32(vmaxq_s32(q0, lo), hi);
      q1 = vminq_s32(vmaxq_s32(q1, lo), hi);
      const int8x8_t q = vmovn_s16(vcombine_s16(vmovn_s32(q0), vmovn_s32(q1)));
      vst1_u8(o + c, veor_u8(vreinterpret_u8_s8(q), vmask));
    }
    for (; c < k; ++c) {
      int32_t q = vgetq_lane_s32(vcvtnq_s32_f32(vdupq_n_f32(xr[c] / sc)), 0);
      q = q > 127 ? 127 : (q < -127 ? -127 : q);
      o[c] = uint8_t(int8_t(q)) ^ xor_mask;
    }
    for (; c < kp; ++c) o[c] = xor_mask;
  }
  return Status::good();
}

double peak(double seconds) {
  int32x4_t acc[8];
  for (int i = 0; i < 8; ++i) acc[i] = vdupq_n_s32(i);
  int8x16_t a = vdupq_n_s8(1), b = vdupq_n_s8(2);
  const double start = gemm::now_seconds();
  int64_t iters = 0;
  double el = 0;
  do {
    for (int i = 0; i < 4096; ++i) {
      for (int j = 0; j < 4; ++j) {
        acc[2 * j] = vpadalq_s16(acc[2 * j], vmull_s8(vget_low_s8(a), vget_low_s8(b)));
        acc[2 * j + 1] = vpadalq_s16(acc[2 * j + 1], vmull_high_s8(a, b));
      }
      __asm__ volatile("" : "+w"(a), "+w"(b));
    }
    iters += 4096;
    el = gemm::now_seconds() - start;
  } while (el < seconds);
  int32x4_t s = acc[0];
  for (int j = 1; j < 8; ++j) s = vaddq_s32(s, acc[j]);
  volatile int32_t sink = vgetq_lane_s32(s, 0);
  (void)sink;
  return 2.0 * double(iters) * 4 * 16 / el * 1e-9;
}

}  // namespace

void register_gemm_s8(KernelTable& t) {
  t.gemm.block = block;
  t.gemm.quant_rows = quant_rows;  // neon_dotprod inherits it
  t.gemm.peak = peak;
  t.gemm.a_unsigned = false;
  t.gemm.mr = kRows;
  t.gemm.np = 1;
}

}  // namespace edgepack::neon
