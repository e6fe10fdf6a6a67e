// int8 GEMM on ARMv8.2 dot-product cores (Cortex-A55/A76/X1, Neoverse, Apple): sdot on the c4
// packed layout. s8 x s8 is native, so activations stay signed (a_unsigned = false, corr 0) and
// no +128 shift or column-sum correction is needed for symmetric rows.
//
// One 64-byte k-group of a panel is four q-registers, each 4 columns x 4 k; a row's 4 activation
// bytes for that group are one 32-bit lane, so vdotq_laneq_s32 does 16 MACs per instruction and
// one 16-byte load of A feeds four groups. Tile: 4 rows x 16 columns = 16 accumulators.
#include <arm_neon.h>

#include <cstdint>
#include <cstring>

#include "core/dispatch.h"

extern "C" float erff(float);
extern "C" float tanhf(float);
extern "C" float expf(float);

namespace edgepack::neon_dotprod {
namespace {

constexpr int kRows = 4;

// Same formulas, constants and rounding steps as the scalar path, so results are identical.
float act_one(float v, GemmAct act) {
  switch (act) {
    case GemmAct::none: return v;
    case GemmAct::relu: return v > 0.0f ? v : 0.0f;
    case GemmAct::gelu: return 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));
    case GemmAct::gelu_tanh: {
      const float inner = 0.7978845608028654f * (v + 0.044715f * v * v * v);
      return 0.5f * v * (1.0f + tanhf(inner));
    }
    case GemmAct::silu: return v / (1.0f + expf(-v));
  }
  return v;
}

void act(float* y, int64_t n, GemmAct a) {
  if (a == GemmAct::none) return;
  int64_t i = 0;
  if (a == GemmAct::relu) {
    const float32x4_t z = vdupq_n_f32(0.0f);
    for (; i + 4 <= n; i += 4) vst1q_f32(y + i, vmaxq_f32(vld1q_f32(y + i), z));
  }
  for (; i < n; ++i) y[i] = act_one(y[i], a);
}

// Writes one row of 16 accumulators (ncols valid) as int32 or through the float epilogue:
// y = ((float)acc * row_scale) * col_scale[n] + bias[n], no fused multiply-add.
void store_row(const GemmTile& t, int m, const int32x4_t acc[4]) {
  int32_t tmp[16];
  for (int j = 0; j < 4; ++j) vst1q_s32(tmp + 4 * j, acc[j]);
  if (!t.y) {
    std::memcpy(t.c + m * t.ldc, tmp, sizeof(int32_t) * size_t(t.ncols));
    return;
  }
  float* yr = t.y + m * t.ldy;
  const float32x4_t rs = vdupq_n_f32(t.row_scale[m]);
  if (t.ncols == 16) {
    for (int j = 0; j < 4; ++j) {
      float32x4_t v = vmulq_f32(vcvtq_f32_s32(acc[j]), rs);
      v = vmulq_f32(v, vld1q_f32(t.col_scale + 4 * j));
      if (t.bias) v = vaddq_f32(v, vld1q_f32(t.bias + 4 * j));
      vst1q_f32(yr + 4 * j, v);
    }
  } else {
    const float r = t.row_scale[m];
    for (int n = 0; n < t.ncols; ++n) {
      float v = float(tmp[n]) * r;
      v = v * t.col_scale[n];
      if (t.bias) v = v + t.bias[n];
      yr[n] = v;
    }
  }
  act(yr, t.ncols, t.act);
}

// Rows [m0, m0 + rows) of the tile against one panel (16 columns). rows <= kRows.
void panel_rows(const GemmTile& t, int p, int m0, int rows) {
  const int8_t* bp = t.b + int64_t(p) * t.kp4 * 64;
  const int32_t* cs = t.colsum + p * 16;
  int32x4_t acc[kRows][4];
  for (int r = 0; r < kRows; ++r)
    for (int j = 0; j < 4; ++j)
      acc[r][j] = r < rows ? vmulq_n_s32(vld1q_s32(cs + 4 * j), t.corr[m0 + r]) : vdupq_n_s32(0);
  const int8_t* ar[kRows];
  for (int r = 0; r < kRows; ++r) ar[r] = reinterpret_cast<const int8_t*>(t.a + (m0 + (r < rows ? r : 0)) * t.lda);

  int64_t g = 0;
  // Four k-groups per step: one 16-byte load per row, lanes 0..3.
  for (; g + 4 <= t.kp4; g += 4) {
    int8x16_t a[kRows];
    for (int r = 0; r < kRows; ++r) a[r] = vld1q_s8(ar[r] + g * 4);
    const int8_t* bg = bp + g * 64;
#define EP_STEP(L)                                                         \
  {                                                                        \
    const int8x16_t b0 = vld1q_s8(bg + 64 * L), b1 = vld1q_s8(bg + 64 * L + 16); \
    const int8x16_t b2 = vld1q_s8(bg + 64 * L + 32), b3 = vld1q_s8(bg + 64 * L + 48); \
    for (int r = 0; r < kRows; ++r) {                                      \
      acc[r][0] = vdotq_laneq_s32(acc[r][0], b0, a[r], L);                 \
      acc[r][1] = vdotq_laneq_s32(acc[r][1], b1, a[r], L);                 \
      acc[r][2] = vdotq_laneq_s32(acc[r][2], b2, a[r], L);                 \
      acc[r][3] = vdotq_laneq_s32(acc[r][3], b3, a[r], L);                 \
    }                                                                      \
  }
    EP_STEP(0)
    EP_STEP(1)
    EP_STEP(2)
    EP_STEP(3)
#undef EP_STEP
  }
  for (; g < t.kp4; ++g) {
    const int8_t* bg = bp + g * 64;
    const int8x16_t b0 = vld1q_s8(bg), b1 = vld1q_s8(bg + 16), b2 = vld1q_s8(bg + 32), b3 = vld1q_s8(bg + 48);
    for (int r = 0; r < kRows; ++r) {
      int32_t word;
      std::memcpy(&word, ar[r] + g * 4, 4);
      const int8x16_t a = vreinterpretq_s8_s32(vdupq_n_s32(word));
      acc[r][0] = vdotq_s32(acc[r][0], b0, a);
      acc[r][1] = vdotq_s32(acc[r][1], b1, a);
      acc[r][2] = vdotq_s32(acc[r][2], b2, a);
      acc[r][3] = vdotq_s32(acc[r][3], b3, a);
    }
  }
  GemmTile sub = t;
  sub.ncols = t.ncols - p * 16 < 16 ? t.ncols - p * 16 : 16;
  if (t.y) {
    sub.y = t.y + p * 16;
    sub.col_scale = t.col_scale + p * 16;
    sub.bias = t.bias ? t.bias + p * 16 : nullptr;
  } else {
    sub.c = t.c + p * 16;
  }
  for (int r = 0; r < rows; ++r) store_row(sub, m0 + r, acc[r]);
}

void ukernel(const GemmTile& t) {
  for (int p = 0; p < t.np; ++p)
    for (int m0 = 0; m0 < t.mr; m0 += kRows) panel_rows(t, p, m0, t.mr - m0 < kRows ? t.mr - m0 : kRows);
}

int64_t peak(int64_t iters) {
  int32x4_t acc[8];
  for (int i = 0; i < 8; ++i) acc[i] = vdupq_n_s32(i);
  int8x16_t a = vdupq_n_s8(1), b = vdupq_n_s8(2);
  for (int64_t i = 0; i < iters; ++i) {
    for (int j = 0; j < 8; ++j) acc[j] = vdotq_s32(acc[j], a, b);
    __asm__ volatile("" : "+w"(a), "+w"(b));  // keeps the loop from being folded away
  }
  int32x4_t s = acc[0];
  for (int j = 1; j < 8; ++j) s = vaddq_s32(s, acc[j]);
  volatile int32_t sink = vgetq_lane_s32(s, 0);
  (void)sink;
  return iters * 8 * 16;
}

}  // namespace

void register_gemm_s8(KernelTable& t) {
  t.gemm.ukernel = &ukernel;
  t.gemm.mr = 8;  // two 4-row passes per panel, so B is reused from L1
  t.gemm.np = 4;
  t.gemm.a_unsigned = false;
  t.gemm.ukernel_small = &ukernel;
  t.gemm.np_small = 4;
  t.gemm.act = &act;
  t.gemm.peak = &peak;
  // quant_rows: the scalar one (it writes signed bytes when xmask is 0).
}

}  // namespace edgepack::neon_dotprod
