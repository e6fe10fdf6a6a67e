// Scalar path: the C++ reference for every other conv path (plain loops over the packed layouts,
// the epilogue of epilogue_ref.h).
#include <cstdint>

#include "core/dispatch.h"
#include "kernels/conv_s8/conv_s8.h"
#include "kernels/conv_s8/epilogue_ref.h"

namespace edgepack::scalar {
namespace {

using gemm::kKU;
using gemm::kNR;

// Row m's bytes for tap t (the zero-point row for padding).
const uint8_t* tap_row(const IgemmArgs& a, int64_t m, int64_t t) {
  if (!a.ind) return a.x + m * a.pix_stride + a.goff;
  const int64_t img = m / a.rows_per_img, pix = m - img * a.rows_per_img;
  const int32_t off = a.ind[pix * a.taps + t];
  return off < 0 ? a.zbuf : a.x + img * a.img_stride + off + a.goff;
}

void igemm(const IgemmArgs& a, int64_t m0, int64_t m1, int64_t p0, int64_t p1) {
  const PackedB& b = a.b;
  const int64_t groups = b.kp / kKU, gpt = a.cp / kKU;
  const uint8_t flip = a.xor80 ? 0x80 : 0x00;
  for (int64_t m = m0; m < m1; ++m)
    for (int64_t p = p0; p < p1; ++p) {
      const int8_t* panel = b.data + p * groups * (kNR * kKU);
      uint32_t acc[kNR];
      for (int j = 0; j < kNR; ++j) acc[j] = static_cast<uint32_t>(a.corr) * static_cast<uint32_t>(b.colsum[p * kNR + j]);
      for (int64_t t = 0; t < a.taps; ++t) {
        const uint8_t* row = tap_row(a, m, t);
        for (int64_t gi = 0; gi < gpt; ++gi) {
          const int8_t* w = panel + (t * gpt + gi) * (kNR * kKU);
          for (int j = 0; j < kNR; ++j) {
            int32_t s = 0;
            for (int i = 0; i < kKU; ++i)
              s += static_cast<int32_t>(static_cast<int8_t>(row[gi * kKU + i] ^ flip)) * w[j * kKU + i];
            acc[j] += static_cast<uint32_t>(s);  // wrapping, like the vector paths
          }
        }
      }
      const int64_t n0 = p * kNR, nn = (b.n - n0) < kNR ? (b.n - n0) : kNR;
      for (int64_t j = 0; j < nn; ++j) conv::store_ref(*a.epi, a.out_row0 + m, a.n_off + n0 + j, static_cast<int32_t>(acc[j]));
    }
}

void dw(const DwArgs& a, int64_t oh0, int64_t oh1, int64_t c0, int64_t c1) {
  for (int64_t oy = oh0; oy < oh1; ++oy)
    for (int64_t ox = 0; ox < a.ow; ++ox)
      for (int64_t c = c0; c < c1; ++c) {
        uint32_t acc = static_cast<uint32_t>(a.init[c]);
        for (int32_t ky = 0; ky < a.kh; ++ky)
          for (int32_t kx = 0; kx < a.kw; ++kx) {
            const int64_t iy = oy * a.sh - a.pt + ky * a.dh, ix = ox * a.sw - a.pl + kx * a.dw;
            const bool in = iy >= 0 && iy < a.h && ix >= 0 && ix < a.w;
            const uint8_t byte = in ? a.x[(iy * a.w + ix) * a.c + c] : a.zbuf[c];
            const int32_t v = a.x_unsigned ? static_cast<int32_t>(byte) : static_cast<int32_t>(static_cast<int8_t>(byte));
            acc += static_cast<uint32_t>(v * a.wt[(ky * a.kw + kx) * a.cpad + c]);
          }
        conv::store_ref(*a.epi, a.row0 + oy * a.ow + ox, c, static_cast<int32_t>(acc));
      }
}

}  // namespace

void register_conv_s8(KernelTable& t) {
  t.conv_s8.igemm = igemm;
  t.conv_s8.dw = dw;
  t.conv_s8.a_unsigned = false;
  t.conv_s8.mr = 1;
  t.conv_s8.np = 1;
  t.conv_s8.dw_ct = 16;
}

}  // namespace edgepack::scalar
