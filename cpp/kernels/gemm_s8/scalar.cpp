// Scalar path: the C++ reference for every other path (plain loops over the packed layout).
#include <cmath>
#include <cstdint>
#include <cstring>
#include <chrono>

#include "core/dispatch.h"
#include "kernels/gemm_s8/epilogue_ref.h"
#include "kernels/gemm_s8/gemm_s8.h"

namespace edgepack::scalar {
namespace {

using gemm::kKU;
using gemm::kNR;

void block(const GemmArgs& g, int64_t m0, int64_t m1, int64_t p0, int64_t p1) {
  const PackedB& b = g.b;
  const int64_t groups = b.kp / kKU;
  for (int64_t m = m0; m < m1; ++m) {
    const uint8_t* arow = g.a + m * g.lda;
    const uint32_t corr = g.row_corr ? static_cast<uint32_t>(g.row_corr[m]) : 0u;
    for (int64_t p = p0; p < p1; ++p) {
      const int8_t* panel = b.data + p * groups * (kNR * kKU);
      uint32_t acc[kNR];
      for (int j = 0; j < kNR; ++j) acc[j] = corr * static_cast<uint32_t>(b.colsum[p * kNR + j]);
      for (int64_t gi = 0; gi < groups; ++gi) {
        const int8_t* w = panel + gi * (kNR * kKU);
        const uint8_t* a = arow + gi * kKU;
        for (int j = 0; j < kNR; ++j) {
          int32_t s = 0;
          for (int i = 0; i < kKU; ++i) s += static_cast<int32_t>(static_cast<int8_t>(a[i])) * w[j * kKU + i];
          acc[j] += static_cast<uint32_t>(s);  // wrapping, like the vector paths
        }
      }
      const int64_t n0 = p * kNR;
      const int64_t nn = (b.n - n0) < kNR ? (b.n - n0) : kNR;
      if (g.c_i32) {
        int32_t* c = g.c_i32 + m * g.ldc + n0;
        for (int64_t j = 0; j < nn; ++j) c[j] = static_cast<int32_t>(acc[j]);
      } else {
        float* c = g.c_f32 + m * g.ldc + n0;
        const float rs = g.row_scale[m];
        for (int64_t j = 0; j < nn; ++j) {
          float y = static_cast<float>(static_cast<int32_t>(acc[j])) * rs;
          y = y * g.col_scale[n0 + j];
          if (g.bias) y = y + g.bias[n0 + j];
          c[j] = gemm::apply_act_ref(y, g.act);
        }
      }
    }
  }
}

Status quant_rows(const float* x, int64_t m, int64_t k, int64_t ldx, uint8_t* out, int64_t ldo,
                  int64_t kp, float* scale, uint8_t xor_mask) {
  for (int64_t r = 0; r < m; ++r) {
    const float* xr = x + r * ldx;
    float amax = 0.0f;
    for (int64_t c = 0; c < k; ++c) {
      const float v = xr[c];
      if (!std::isfinite(v)) return Status::at(StatusCode::non_finite, r * k + c);
      const float av = std::fabs(v);
      amax = av > amax ? av : amax;
    }
    const float s0 = amax / 127.0f, s = s0 > 0.0f ? s0 : 1.0f;  // 1 for a zero row, also when absmax / 127 underflows
    scale[r] = s;
    uint8_t* o = out + r * ldo;
    for (int64_t c = 0; c < k; ++c) {
      float q = std::nearbyint(xr[c] / s);  // default rounding mode: half to even
      q = q > 127.0f ? 127.0f : (q < -127.0f ? -127.0f : q);
      o[c] = static_cast<uint8_t>(static_cast<int8_t>(q)) ^ xor_mask;
    }
    for (int64_t c = k; c < kp; ++c) o[c] = xor_mask;
  }
  return Status::good();
}

double peak(double seconds) {
  // Scalar int8 multiply-accumulate chains: a floor, not a hardware figure.
  using clk = std::chrono::steady_clock;
  volatile int8_t seed = 3;
  int32_t a0 = seed, a1 = seed + 1, a2 = seed + 2, a3 = seed + 3;
  const int8_t w = seed;
  int64_t iters = 0;
  const auto t0 = clk::now();
  double el = 0;
  do {
    for (int i = 0; i < 4096; ++i) {
      a0 += static_cast<int8_t>(a1) * w;
      a1 += static_cast<int8_t>(a2) * w;
      a2 += static_cast<int8_t>(a3) * w;
      a3 += static_cast<int8_t>(a0) * w;
    }
    iters += 4096 * 4;
    el = std::chrono::duration<double>(clk::now() - t0).count();
  } while (el < seconds);
  volatile int32_t sink = a0 + a1 + a2 + a3;
  (void)sink;
  return 2.0 * static_cast<double>(iters) / el * 1e-9;
}

}  // namespace

void register_gemm_s8(KernelTable& t) {
  t.gemm.block = block;
  t.gemm.quant_rows = quant_rows;
  t.gemm.peak = peak;
  t.gemm.a_unsigned = false;
  t.gemm.mr = 1;
  t.gemm.np = 1;
}

}  // namespace edgepack::scalar
