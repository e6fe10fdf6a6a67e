// Scalar reference path for the int8 GEMM: plain loops over the packed layout, exact int32,
// and the float epilogue in the order every path follows (see gemm_s8.h).
#include <cmath>

#include "core/dispatch.h"

namespace edgepack::scalar {
namespace {

constexpr int kMr = 4;
constexpr int kNp = 4;

float act_one(float v, GemmAct act) {
  switch (act) {
    case GemmAct::none: return v;
    case GemmAct::relu: return v > 0.0f ? v : 0.0f;
    case GemmAct::gelu: return 0.5f * v * (1.0f + std::erf(v * 0.70710678118654752f));
    case GemmAct::gelu_tanh: {
      const float inner = 0.7978845608028654f * (v + 0.044715f * v * v * v);
      return 0.5f * v * (1.0f + std::tanh(inner));
    }
    case GemmAct::silu: return v / (1.0f + std::exp(-v));
  }
  return v;
}

void act(float* y, int64_t n, GemmAct a) {
  if (a == GemmAct::none) return;
  for (int64_t i = 0; i < n; ++i) y[i] = act_one(y[i], a);
}

void ukernel(const GemmTile& t) {
  int32_t acc[kMr][kGemmPanel * kNp];
  for (int m = 0; m < t.mr; ++m) {
    for (int n = 0; n < t.ncols; ++n) {
      const int8_t* bp = t.b + (n / kGemmPanel) * t.kp4 * 64 + (n % kGemmPanel) * 4;
      const uint8_t* ap = t.a + m * t.lda;
      int32_t s = t.corr[m] * t.colsum[n];
      for (int64_t k4 = 0; k4 < t.kp4; ++k4) {
        const int8_t* bk = bp + k4 * 64;
        const uint8_t* ak = ap + k4 * 4;
        s += int32_t(ak[0]) * bk[0] + int32_t(ak[1]) * bk[1] + int32_t(ak[2]) * bk[2] +
             int32_t(ak[3]) * bk[3];
      }
      acc[m][n] = s;
    }
  }
  for (int m = 0; m < t.mr; ++m) {
    if (!t.y) {
      for (int n = 0; n < t.ncols; ++n) t.c[m * t.ldc + n] = acc[m][n];
      continue;
    }
    float* yr = t.y + m * t.ldy;
    const float rs = t.row_scale[m];
    for (int n = 0; n < t.ncols; ++n) {
      float v = float(acc[m][n]) * rs;
      v = v * t.col_scale[n];
      if (t.bias) v = v + t.bias[n];
      yr[n] = v;
    }
    act(yr, t.ncols, t.act);
  }
}

int64_t peak(int64_t iters) {
  // The scalar path has no dot-product instruction: report the MACs of a plain multiply-add loop.
  volatile int32_t sink = 0;
  int32_t a0 = 1, a1 = 2, a2 = 3, a3 = 4;
  for (int64_t i = 0; i < iters; ++i) {
    a0 += int32_t(int8_t(i)) * 3;
    a1 += int32_t(int8_t(i >> 1)) * 5;
    a2 += int32_t(int8_t(i >> 2)) * 7;
    a3 += int32_t(int8_t(i >> 3)) * 9;
  }
  sink = a0 + a1 + a2 + a3;
  (void)sink;
  return iters * 4;
}

Status quant_rows(const float* x, int64_t ldx, int64_t rows, int64_t k, uint8_t* s, int64_t lda,
                  uint8_t xmask, float* scale) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * ldx;
    float amax = 0.0f;
    for (int64_t i = 0; i < k; ++i) {
      if (!std::isfinite(xr[i])) return Status::at(StatusCode::non_finite, r * k + i);
      const float a = std::fabs(xr[i]);
      amax = a > amax ? a : amax;
    }
    const float sc = amax > 0.0f ? amax / 127.0f : 1.0f;
    scale[r] = sc;
    uint8_t* sr = s + r * lda;
    for (int64_t i = 0; i < k; ++i) {
      float q = std::nearbyint(xr[i] / sc);
      q = q > 127.0f ? 127.0f : (q < -127.0f ? -127.0f : q);
      sr[i] = uint8_t(int8_t(q)) ^ xmask;
    }
  }
  return Status::good();
}

}  // namespace

void register_gemm_s8(KernelTable& t) {
  t.gemm.ukernel = &ukernel;
  t.gemm.mr = kMr;
  t.gemm.np = kNp;
  t.gemm.a_unsigned = true;
  t.gemm.ukernel_small = &ukernel;
  t.gemm.np_small = kNp;
  t.gemm.act = &act;
  t.gemm.peak = &peak;
  t.gemm.quant_rows = &quant_rows;
}

}  // namespace edgepack::scalar
