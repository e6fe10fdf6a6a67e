// int8 convolution (conv_s8) through the driver on every available path: the int32 accumulators
// exact against an int64 NHWC reference, and every epilogue (each activation, bias, residual,
// float32 / uint8 / int8 output) bit-identical to the scalar path, on the edge-case grid of
// tests/test_conv_int8.py (1x1 direct, 3x3, 5x5, 7x7 with 3 channels, stride 2, dilation 2,
// groups, depthwise, asymmetric padding, odd sizes, 1/3/17 channels, batch 1 and 3).
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "core/dispatch.h"
#include "kernels/conv_s8/conv_s8.h"
#include "selftest.h"

namespace selftest {
namespace {

using edgepack::Isa;
namespace conv = edgepack::conv;

struct Case {
  int64_t cin, cout, kh, kw, s, pt, pl, pb, pr, d, groups, n, h, w;
};

const Case kCases[] = {
    {16, 24, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 7, 5},   {64, 40, 1, 1, 1, 0, 0, 0, 0, 1, 1, 3, 5, 6},
    {8, 17, 1, 1, 2, 0, 0, 0, 0, 1, 1, 1, 9, 7},    {3, 5, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 4, 4},
    {17, 33, 3, 3, 2, 1, 1, 1, 1, 1, 1, 3, 9, 11},  {8, 16, 3, 3, 2, 0, 0, 1, 1, 1, 1, 1, 10, 7},
    {12, 20, 3, 3, 1, 2, 2, 2, 2, 2, 1, 1, 11, 9},  {4, 9, 5, 5, 1, 2, 2, 2, 2, 1, 1, 1, 7, 7},
    {3, 64, 7, 7, 2, 3, 3, 3, 3, 1, 1, 1, 19, 17},  {1, 8, 3, 3, 1, 1, 1, 1, 1, 1, 1, 3, 5, 5},
    {16, 32, 3, 3, 1, 1, 1, 1, 1, 1, 2, 1, 6, 6},   {6, 4, 3, 3, 1, 1, 0, 1, 2, 1, 2, 1, 5, 6},
    {32, 16, 1, 1, 1, 0, 0, 0, 0, 1, 4, 1, 5, 5},   {4, 4, 5, 5, 1, 2, 2, 2, 2, 1, 1, 1, 3, 3},
    {64, 130, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 6, 7},  {8, 16, 3, 3, 1, 1, 1, 1, 1, 1, 8, 1, 5, 5},
    {17, 17, 3, 3, 1, 1, 1, 1, 1, 1, 17, 3, 7, 9},  {32, 32, 3, 3, 2, 0, 0, 1, 1, 1, 32, 1, 9, 8},
    {40, 40, 5, 5, 2, 2, 2, 2, 2, 1, 40, 1, 11, 13}, {16, 16, 5, 5, 1, 4, 4, 4, 4, 2, 16, 1, 12, 12},
    {3, 3, 7, 7, 1, 3, 3, 3, 3, 1, 3, 1, 9, 9},     {1, 1, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 6, 6},
    {130, 130, 3, 3, 1, 1, 1, 1, 1, 1, 130, 1, 5, 6}, {24, 24, 3, 1, 2, 1, 0, 1, 0, 1, 24, 1, 8, 5},
};

struct Layer {
  conv::Geom g;
  std::vector<int8_t> store;
  std::vector<int32_t> sums;
  conv::Packed* packed = nullptr;
  explicit Layer(const conv::Geom& geom, const std::vector<int8_t>& w) : g(geom) {
    const conv::Layout l = conv::layout(g);
    store.assign(size_t(l.data_bytes + 64), 0);
    sums.assign(size_t(l.sum_len), 0);
    int8_t* data = store.data() + (64 - reinterpret_cast<uintptr_t>(store.data()) % 64) % 64;
    conv::pack(g, w.data(), data, sums.data());
    packed = new conv::Packed(g, data, sums.data());
  }
  ~Layer() { delete packed; }
};

int64_t ref_acc(const Case& c, const std::vector<uint8_t>& x, bool u8, int32_t zp, const std::vector<int8_t>& w,
                int64_t img, int64_t oy, int64_t ox, int64_t n) {
  const int64_t cg = c.cin / c.groups, coutg = c.cout / c.groups, gi = n / coutg;
  int64_t s = 0;
  for (int64_t ky = 0; ky < c.kh; ++ky)
    for (int64_t kx = 0; kx < c.kw; ++kx) {
      const int64_t iy = oy * c.s - c.pt + ky * c.d, ix = ox * c.s - c.pl + kx * c.d;
      if (iy < 0 || iy >= c.h || ix < 0 || ix >= c.w) continue;  // zero-point padding adds 0
      for (int64_t ci = 0; ci < cg; ++ci) {
        const uint8_t b = x[size_t(((img * c.h + iy) * c.w + ix) * c.cin + gi * cg + ci)];
        const int64_t v = u8 ? int64_t(b) : int64_t(int8_t(b));
        s += (v - zp) * w[size_t(((n * cg + ci) * c.kh + ky) * c.kw + kx)];
      }
    }
  return s;
}

}  // namespace

void check_conv(Suite& s) {
  std::vector<Tally> tallies(s.paths.size());
  Rng r(777);
  int ci = 0;
  for (const Case& c : kCases) {
    ++ci;
    conv::Geom g;
    g.cin = c.cin;
    g.cout = c.cout;
    g.groups = c.groups;
    g.kh = c.kh;
    g.kw = c.kw;
    g.sh = g.sw = c.s;
    g.dh = g.dw = c.d;
    g.pt = c.pt;
    g.pl = c.pl;
    g.pb = c.pb;
    g.pr = c.pr;
    const int64_t oh = conv::out_size(c.h, c.kh, c.s, c.d, c.pt, c.pb), ow = conv::out_size(c.w, c.kw, c.s, c.d, c.pl, c.pr);
    const int64_t rows = c.n * oh * ow, outs = rows * c.cout;
    const bool u8 = ci % 2 == 1;
    const int fill = ci % 3;  // 0 random, 1 extremes, 2 mixed extremes
    std::vector<uint8_t> x(size_t(c.n * c.h * c.w * c.cin));
    for (auto& v : x)
      v = uint8_t(fill == 1 ? (u8 ? 255 : 0x80) : fill == 2 ? (r.next() & 1 ? (u8 ? 255 : 0x80) : (u8 ? 0 : 127)) : r.range(0, 255));
    const int32_t zp = int32_t(u8 ? r.range(0, 255) : r.range(-128, 127));
    std::vector<int8_t> w(size_t(c.cout * (c.cin / c.groups) * c.kh * c.kw));
    for (auto& v : w) v = int8_t(fill == 1 ? 127 : fill == 2 ? (r.next() & 1 ? -127 : 127) : r.range(-127, 127));
    Layer layer(g, w);
    std::vector<float> ws(static_cast<size_t>(c.cout)), bias(static_cast<size_t>(c.cout)), res(static_cast<size_t>(outs));
    for (auto& v : ws) v = r.uniform(0.0005f, 0.004f);
    for (auto& v : bias) v = r.uniform(-4.0f, 4.0f);
    for (auto& v : res) v = r.uniform(-2.0f, 2.0f);
    std::vector<int64_t> ref(static_cast<size_t>(outs));
    for (int64_t img = 0; img < c.n; ++img)
      for (int64_t oy = 0; oy < oh; ++oy)
        for (int64_t ox = 0; ox < ow; ++ox)
          for (int64_t n = 0; n < c.cout; ++n)
            ref[size_t(((img * oh + oy) * ow + ox) * c.cout + n)] = ref_acc(c, x, u8, zp, w, img, oy, ox, n);
    // Epilogues: every activation in turn, with and without bias / residual, three output kinds.
    struct Epi {
      conv::Act act;
      float p0, p1;
      conv::Out out;
    };
    const Epi epis[] = {{conv::Act(ci % 8), 0.2f, 0.5f, conv::Out::f32},
                        {conv::Act((ci + 3) % 8), -0.5f, 0.75f, conv::Out::u8},
                        {conv::Act((ci + 5) % 8), 0.1f, 0.3f, conv::Out::s8}};
    std::vector<std::vector<uint8_t>> scalar_out(3);
    for (size_t pi = 0; pi < s.paths.size(); ++pi) {
      Tally& t = tallies[pi];
      edgepack::select_isa(s.paths[pi]);
      std::vector<int32_t> acc(size_t(outs) + 1, 0x5A5A5A5A);
      edgepack::ConvEpi e;
      e.out = conv::Out::i32;
      e.y = acc.data();
      e.ldy = c.cout;
      layer.packed->run(x.data(), u8, zp, c.n, c.h, c.w, e);
      ++t.cases;
      for (int64_t i = 0; i < outs; ++i)
        if (acc[size_t(i)] != ref[size_t(i)]) {
          t.fail(fmt("case %d (cin %lld cout %lld k %lldx%lld g %lld): acc[%lld] = %d, expected %lld", ci, (long long)c.cin,
                     (long long)c.cout, (long long)c.kh, (long long)c.kw, (long long)c.groups, (long long)i, acc[size_t(i)],
                     (long long)ref[size_t(i)]));
          break;
        }
      if (acc[size_t(outs)] != 0x5A5A5A5A) t.fail(fmt("case %d: wrote past the output", ci));
      for (int k = 0; k < 3; ++k) {
        const Epi& ep = epis[k];
        const size_t esz = ep.out == conv::Out::f32 ? 4 : 1;
        std::vector<uint8_t> y(size_t(outs) * esz + 1, 0xA5);
        e = edgepack::ConvEpi();
        e.x_scale = 0.05f;
        e.w_scale = ws.data();
        e.bias = k != 1 ? bias.data() : nullptr;
        e.residual = k != 2 ? res.data() : nullptr;
        e.act = ep.act == conv::Act::clip && ep.p0 > ep.p1 ? conv::Act::relu : ep.act;
        e.p0 = ep.p0;
        e.p1 = ep.p1;
        e.out = ep.out;
        e.y = y.data();
        e.ldy = c.cout;
        e.inv_out_scale = 1.0f / 0.03f;
        e.out_zp = ep.out == conv::Out::u8 ? 117 : -9;
        e.qlo = float((ep.out == conv::Out::u8 ? 0 : -128) - e.out_zp);
        e.qhi = float((ep.out == conv::Out::u8 ? 255 : 127) - e.out_zp);
        layer.packed->run(x.data(), u8, zp, c.n, c.h, c.w, e);
        ++t.cases;
        if (y.back() != 0xA5) t.fail(fmt("case %d epilogue %d: wrote past the output", ci, k));
        y.pop_back();
        if (pi == 0) {
          scalar_out[size_t(k)] = y;
        } else if (y != scalar_out[size_t(k)]) {
          size_t i = 0;
          while (i < y.size() && y[i] == scalar_out[size_t(k)][i]) ++i;
          t.fail(fmt("case %d epilogue %d (act %d, out %d): byte %zu differs from the scalar path", ci, k, int(e.act),
                     int(e.out), i));
        }
      }
    }
  }
  edgepack::select_isa(edgepack::best_isa());
  for (size_t i = 0; i < s.paths.size(); ++i)
    s.report(s.paths[i], "conv_int8 (igemm, dw, epi)", tallies[i].cases, tallies[i].failed, tallies[i].first);
}

}  // namespace selftest
