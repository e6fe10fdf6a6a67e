// Reference path for conv_f32: plain C++ in the documented accumulation order (bias, then the
// products tap by tap and channel by channel, each a multiply then an add, then the residual,
// then the activation with the C library's exp/tanh). Every SIMD path is tested against it.
#include <cstddef>
#include <cstdint>

#include "core/dispatch.h"
#include "kernels/conv_f32/act_ref.h"
#include "kernels/conv_f32/conv_f32.h"

namespace edgepack::scalar {
namespace {

using convf::kNR;
constexpr int kMR = 4, kNP = 1;

void gemm_tile(const ConvTile& t, int mr, int np) {
  float acc[kMR][kNP * kNR];
  for (int r = 0; r < mr; ++r)
    for (int j = 0; j < np * kNR; ++j)
      acc[r][j] = !t.first ? t.part[r * t.parts + j] : (t.bias && j < t.nvalid) ? t.bias[j] : 0.0f;
  for (int64_t tap = 0; tap < t.taps; ++tap) {
    const float* const* a = t.a + tap * t.amr;
    for (int64_t i = 0; i < t.kc; ++i) {
      const int64_t k = tap * t.kc + i;
      for (int r = 0; r < mr; ++r) {
        const float av = a[r][t.a_off + i];
        for (int p = 0; p < np; ++p) {
          const float* wr = t.w + p * t.wstride + k * kNR;
          for (int j = 0; j < kNR; ++j) acc[r][p * kNR + j] += av * wr[j];
        }
      }
    }
  }
  if (!t.last) {
    for (int r = 0; r < mr; ++r)
      for (int j = 0; j < np * kNR; ++j) t.part[r * t.parts + j] = acc[r][j];
    return;
  }
  for (int r = 0; r < mr; ++r)
    for (int64_t j = 0; j < t.nvalid; ++j) {
      float v = acc[r][j];
      if (t.res) v += t.res[r * t.ldr + j];
      t.c[r * t.ldc + j] = convf::act_ref(v, t.ep);
    }
}

void dw_rows(const DwRows& d) {
  const int64_t n = d.c1 - d.c0;
  float acc[convf::kDwC];
  for (int64_t j = 0; j < d.nrows; ++j) {
    const float* const* rows = d.rows + j * d.sh;
    float* out = d.out + j * d.out_w * d.c;
    const float* res = d.res ? d.res + j * d.out_w * d.c : nullptr;
    for (int64_t ox = 0; ox < d.out_w; ++ox) {
      for (int64_t cb = 0; cb < n; cb += convf::kDwC) {
        const int64_t c0 = d.c0 + cb, nc = n - cb < convf::kDwC ? n - cb : convf::kDwC;
        for (int64_t i = 0; i < nc; ++i) acc[i] = d.bias ? d.bias[c0 + i] : 0.0f;
        for (int64_t ky = 0; ky < d.kh; ++ky) {
          const float* row = rows[ky * d.dh];
          for (int64_t kx = 0; kx < d.kw; ++kx) {
            const int64_t ix = ox * d.sw - d.pl + kx * d.dw;
            if (ix < 0 || ix >= d.in_w) continue;
            const float* xr = row + ix * d.c + c0;
            const float* wr = d.w + (ky * d.kw + kx) * d.cp + c0;
            for (int64_t i = 0; i < nc; ++i) acc[i] += xr[i] * wr[i];
          }
        }
        float* o = out + ox * d.c + c0;
        const float* rs = res ? res + ox * d.c + c0 : nullptr;
        for (int64_t i = 0; i < nc; ++i) o[i] = convf::act_ref(rs ? acc[i] + rs[i] : acc[i], d.ep);
      }
    }
  }
}

}  // namespace

void register_conv_f32(KernelTable& t) {
  t.conv_f32.gemm_tile = gemm_tile;
  t.conv_f32.np = kNP;
  t.conv_f32.mr[1] = kMR;
  t.conv_f32.dw_rows = dw_rows;
}

}  // namespace edgepack::scalar
