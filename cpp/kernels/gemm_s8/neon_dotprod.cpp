// int8 GEMM on ARMv8.2 dot-product cores (Cortex-A55/A76/X1, Neoverse, Apple): sdot on the c4
// packed layout. s8 x s8 is native, so activations stay signed (a_unsigned = false) and need no
// +128 shift.
//
// One 64-byte k-group of a panel is four q-registers, each 4 columns x 4 k; a row's 4 activation
// bytes for that group are one 32-bit lane, so vdotq_laneq_s32 does 16 MACs per instruction and
// one 16-byte load of A feeds four groups. Tile: 4 rows x 16 columns = 16 accumulators.
#include <arm_neon.h>

#include <cstdint>
#include <cstring>

#include "core/dispatch.h"
#include "kernels/gemm_s8/gemm_s8.h"

extern "C" float erff(float);
extern "C" float tanhf(float);
extern "C" float expf(float);

namespace edgepack::neon_dotprod {
namespace {

using gemm::Act;
using gemm::kKU;
using gemm::kNR;

// The scalar path's formulas and constants (epilogue_ref.h) through the same libm calls, so the
// activations give the scalar path's bits. (<cmath> is not included here: see COMMON rules on
// templates in ISA translation units.)
float act_one(float v, Act act) {
  switch (act) {
    case Act::none: return v;
    case Act::relu: return v > 0.0f ? v : 0.0f;
    case Act::gelu: return 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));
    case Act::gelu_tanh: {
      const float u = 0.7978845608028654f * (v + 0.044715f * v * v * v);
      return 0.5f * v * (1.0f + tanhf(u));
    }
    case Act::silu: return v / (1.0f + expf(-v));
  }
  return v;
}

// One output row of a panel: 16 accumulators (nn valid columns starting at n0), as int32 or
// through y = (float(acc) * row_scale) * col_scale[n] + bias[n] (no fused multiply-add), then act.
void store_row(const GemmArgs& g, int64_t m, int64_t n0, int64_t nn, const int32x4_t acc[4]) {
  if (g.c_i32) {
    int32_t* c = g.c_i32 + m * g.ldc + n0;
    if (nn == kNR) {
      for (int j = 0; j < 4; ++j) vst1q_s32(c + 4 * j, acc[j]);
    } else {
      int32_t tmp[kNR];
      for (int j = 0; j < 4; ++j) vst1q_s32(tmp + 4 * j, acc[j]);
      std::memcpy(c, tmp, sizeof(int32_t) * size_t(nn));
    }
    return;
  }
  float* y = g.c_f32 + m * g.ldc + n0;
  const float rs = g.row_scale[m];
  if (nn == kNR) {
    const float32x4_t vrs = vdupq_n_f32(rs);
    for (int j = 0; j < 4; ++j) {
      float32x4_t v = vmulq_f32(vcvtq_f32_s32(acc[j]), vrs);
      v = vmulq_f32(v, vld1q_f32(g.col_scale + n0 + 4 * j));
      if (g.bias) v = vaddq_f32(v, vld1q_f32(g.bias + n0 + 4 * j));
      if (g.act == Act::relu) v = vmaxq_f32(v, vdupq_n_f32(0.0f));
      vst1q_f32(y + 4 * j, v);
    }
  } else {
    int32_t tmp[kNR];
    for (int j = 0; j < 4; ++j) vst1q_s32(tmp + 4 * j, acc[j]);
    for (int64_t j = 0; j < nn; ++j) {
      float v = float(tmp[j]) * rs;
      v = v * g.col_scale[n0 + j];
      if (g.bias) v = v + g.bias[n0 + j];
      y[j] = g.act == Act::relu ? (v > 0.0f ? v : 0.0f) : v;
    }
  }
  if (g.act != Act::none && g.act != Act::relu)
    for (int64_t j = 0; j < nn; ++j) y[j] = act_one(y[j], g.act);
}

#include "kernels/gemm_s8/neon_dot_tile.inc"

constexpr int kRows = kTileRows;

// Rows [m, m + rows) against panel p, rows <= kRows.
void panel_rows(const GemmArgs& g, int64_t m, int rows, int64_t p) {
  const PackedB& b = g.b;
  const int64_t groups = b.kp / kKU;
  const int8_t* bp = b.data + p * groups * (kNR * kKU);
  const int32_t* cs = b.colsum + p * kNR;
  int32x4_t acc[kRows][4];
  const uint8_t* ar[kRows];
  for (int r = 0; r < kRows; ++r) {
    const int64_t row = m + (r < rows ? r : 0);  // unused accumulators repeat a valid row
    ar[r] = g.a + row * g.lda;
    const int32_t corr = g.row_corr ? g.row_corr[row] : 0;
    for (int j = 0; j < 4; ++j) acc[r][j] = vmulq_n_s32(vld1q_s32(cs + 4 * j), corr);  // wrapping
  }
  mac_panel<kRows, false>(acc, bp, 1, groups, [&](int64_t, const uint8_t* (&rp)[kRows]) {
    for (int r = 0; r < kRows; ++r) rp[r] = ar[r];
  });
  const int64_t n0 = p * kNR;
  const int64_t nn = b.n - n0 < kNR ? b.n - n0 : kNR;
  for (int r = 0; r < rows; ++r) store_row(g, m + r, n0, nn, acc[r]);
}

void block(const GemmArgs& g, int64_t m0, int64_t m1, int64_t p0, int64_t p1) {
  // Panel-outer: a panel's k-groups stay in L1 while every row block of [m0, m1) passes over them.
  for (int64_t p = p0; p < p1; ++p)
    for (int64_t m = m0; m < m1; m += kRows) panel_rows(g, m, m1 - m < kRows ? int(m1 - m) : kRows, p);
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
      for (int j = 0; j < 8; ++j) acc[j] = vdotq_s32(acc[j], a, b);
      __asm__ volatile("" : "+w"(a), "+w"(b));  // keeps the loop from being folded away
    }
    iters += 4096;
    el = gemm::now_seconds() - start;
  } while (el < seconds);
  int32x4_t s = acc[0];
  for (int j = 1; j < 8; ++j) s = vaddq_s32(s, acc[j]);
  volatile int32_t sink = vgetq_lane_s32(s, 0);
  (void)sink;
  return 2.0 * double(iters) * 8 * 16 / el * 1e-9;
}

}  // namespace

void register_gemm_s8(KernelTable& t) {
  t.gemm.block = block;
  t.gemm.peak = peak;
  t.gemm.a_unsigned = false;
  t.gemm.mr = kRows;
  t.gemm.np = 1;
  // quant_rows: the neon one (registered before this path in the table).
}

}  // namespace edgepack::neon_dotprod
