// int8 GEMM on ARMv8-A cores without dot product (Cortex-A53/A72/A73: Raspberry Pi 3/4): the
// c4 packed layout read with widening multiplies. For one k-group, a row's 4 activation bytes are
// repeated across a register; vmull_s8 multiplies them with 2 columns x 4 k of B into int16
// (|a*w| <= 128*128 fits int16 exactly, -128 included), and vpadalq_s16 adds neighbour pairs into
// int32 accumulators, so every step is exact for any int8 input. Each accumulator lane holds half
// of one column's sum; a final pairwise add gives the 4 columns per register.
// Tile: 2 rows x 16 columns = 16 accumulators.
#include <arm_neon.h>

#include <cstdint>
#include <cstring>

#include "core/dispatch.h"

extern "C" float erff(float);
extern "C" float tanhf(float);
extern "C" float expf(float);

namespace edgepack::neon {
namespace {

constexpr int kRows = 2;

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
  // half[r][2j] holds columns 4j, 4j+1 (two partial sums each), half[r][2j+1] columns 4j+2, 4j+3.
  int32x4_t half[kRows][8];
  for (int r = 0; r < kRows; ++r)
    for (int h = 0; h < 8; ++h) half[r][h] = vdupq_n_s32(0);
  const int8_t* ar[kRows];
  for (int r = 0; r < kRows; ++r) ar[r] = reinterpret_cast<const int8_t*>(t.a + (m0 + (r < rows ? r : 0)) * t.lda);
  for (int64_t g = 0; g < t.kp4; ++g) {
    const int8_t* bg = bp + g * 64;
    int8x16_t b[4];
    for (int j = 0; j < 4; ++j) b[j] = vld1q_s8(bg + 16 * j);
    for (int r = 0; r < kRows; ++r) {
      int32_t word;
      std::memcpy(&word, ar[r] + g * 4, 4);
      const int8x16_t a = vreinterpretq_s8_s32(vdupq_n_s32(word));
      for (int j = 0; j < 4; ++j) {
        // b[j] = columns 4j..4j+3, 4 k each. Low half: columns 4j, 4j+1; high half: 4j+2, 4j+3.
        half[r][2 * j] = vpadalq_s16(half[r][2 * j], vmull_s8(vget_low_s8(b[j]), vget_low_s8(a)));
        half[r][2 * j + 1] = vpadalq_s16(half[r][2 * j + 1], vmull_high_s8(b[j], a));
      }
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
  for (int r = 0; r < rows; ++r) {
    int32x4_t acc[4];
    for (int j = 0; j < 4; ++j) {
      // vpaddq: [h0+h1, h2+h3] of each input = columns 4j, 4j+1 from the low half, 4j+2, 4j+3 from the high.
      const int32x4_t sums = vpaddq_s32(half[r][2 * j], half[r][2 * j + 1]);
      acc[j] = vmlaq_n_s32(sums, vld1q_s32(cs + 4 * j), t.corr[m0 + r]);
    }
    store_row(sub, m0 + r, acc);
  }
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
    for (int j = 0; j < 4; ++j) {
      acc[2 * j] = vpadalq_s16(acc[2 * j], vmull_s8(vget_low_s8(a), vget_low_s8(b)));
      acc[2 * j + 1] = vpadalq_s16(acc[2 * j + 1], vmull_high_s8(a, b));
    }
    __asm__ volatile("" : "+w"(a), "+w"(b));
  }
  int32x4_t s = acc[0];
  for (int j = 1; j < 8; ++j) s = vaddq_s32(s, acc[j]);
  volatile int32_t sink = vgetq_lane_s32(s, 0);
  (void)sink;
  return iters * 8 * 8;
}

}  // namespace

void register_gemm_s8(KernelTable& t) {
  t.gemm.ukernel = &ukernel;
  t.gemm.mr = 4;
  t.gemm.np = 2;
  t.gemm.a_unsigned = false;
  t.gemm.ukernel_small = &ukernel;
  t.gemm.np_small = 4;
  t.gemm.act = &act;
  t.gemm.peak = &peak;
}

}  // namespace edgepack::neon
