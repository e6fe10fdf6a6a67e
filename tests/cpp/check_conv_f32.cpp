// float32 NHWC convolution through its driver (routes gemm, rows, igemm, depthwise; reduction
// blocks; the fused epilogue) on every available path, on the edge-case grid of
// tests/test_conv_f32.py: the scalar path against a double reference within
// 1e-5 * (sum |x w| + |bias| + |residual|) (times the activation's slope, plus 1e-6 * (1 + |y|)
// for the exp-based ones), every other path against the scalar path within twice that; and each
// path bit-identical between one thread and the pool.
#include <cmath>
#include <cstdint>
#include <vector>

#include "core/dispatch.h"
#include "core/thread_pool.h"
#include "kernels/conv_f32/conv_f32.h"
#include "selftest.h"

namespace selftest {
namespace {

using edgepack::Isa;
namespace convf = edgepack::convf;
using convf::Act;

struct Case {
  int64_t n, h, w, cin, cout, kh, kw, sh, sw, pt, pl, pb, pr, dh, dw, groups;
};

// The Python grid's geometries (every route, channel counts around 4/8/16/64, TF-SAME padding,
// windows in the padding, groups, depthwise 3x3/5x5/other, long reductions split into blocks).
const Case kCases[] = {
    {1, 5, 7, 17, 33, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1},
    {3, 4, 3, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1},
    {1, 9, 9, 64, 65, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1},
    {2, 3, 5, 33, 129, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1},
    {1, 7, 7, 16, 48, 1, 1, 2, 2, 0, 0, 0, 0, 1, 1, 1},
    {1, 3, 4, 4, 5, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1},
    {1, 5, 5, 3, 1, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1},
    {3, 6, 7, 17, 17, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1},
    {1, 11, 13, 33, 65, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1},
    {2, 9, 7, 16, 50, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, 1},
    {1, 9, 9, 8, 16, 3, 3, 1, 1, 2, 2, 2, 2, 2, 2, 1},
    {1, 6, 6, 5, 7, 3, 3, 1, 1, 0, 0, 0, 0, 1, 1, 1},
    {1, 5, 6, 300, 20, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1},
    {1, 4, 5, 257, 40, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1},
    {1, 10, 11, 6, 20, 5, 5, 1, 1, 2, 2, 2, 2, 1, 1, 1},
    {2, 15, 17, 3, 64, 7, 7, 2, 2, 3, 3, 3, 3, 1, 1, 1},
    {1, 7, 8, 9, 10, 1, 3, 1, 1, 0, 1, 0, 1, 1, 1, 1},
    {1, 7, 8, 9, 10, 3, 1, 2, 1, 1, 0, 1, 0, 1, 1, 1},
    {1, 8, 8, 6, 11, 3, 3, 2, 2, 0, 0, 1, 1, 1, 1, 1},
    {1, 2, 3, 5, 6, 5, 5, 1, 1, 2, 2, 2, 2, 1, 1, 1},
    {1, 1, 1, 3, 4, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1},
    {1, 7, 7, 8, 8, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 2},
    {2, 6, 5, 12, 36, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, 4},
    {1, 5, 5, 6, 12, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 6},
    {1, 9, 10, 3, 3, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 3},
    {2, 8, 7, 17, 17, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 17},
    {1, 13, 11, 32, 32, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, 32},
    {1, 14, 14, 33, 33, 5, 5, 1, 1, 2, 2, 2, 2, 1, 1, 33},
    {3, 9, 9, 20, 20, 5, 5, 2, 2, 2, 2, 2, 2, 1, 1, 20},
    {1, 10, 9, 24, 24, 3, 3, 1, 1, 2, 2, 2, 2, 2, 2, 24},
    {1, 8, 8, 40, 40, 3, 3, 2, 2, 0, 0, 1, 1, 1, 1, 40},
    {1, 9, 9, 16, 16, 7, 7, 1, 1, 3, 3, 3, 3, 1, 1, 16},
    {1, 5, 6, 65, 65, 1, 3, 1, 1, 0, 1, 0, 1, 1, 1, 65},
    {1, 3, 3, 16, 16, 5, 5, 1, 1, 2, 2, 2, 2, 1, 1, 16},
    {1, 20, 21, 144, 144, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 144},
    // large enough (> 1M multiply-adds) for the pool to split them
    {1, 20, 20, 48, 40, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1},
    {2, 12, 12, 96, 80, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1},
    {1, 48, 48, 64, 64, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 64},
};

double act_d(double y, const convf::Epilogue& e) {
  switch (e.act) {
    case Act::none: return y;
    case Act::relu: return y > 0 ? y : 0;
    case Act::clip: return y < e.p0 ? e.p0 : (y > e.p1 ? e.p1 : y);
    case Act::hardswish: return y * std::fmin(1.0, std::fmax(0.0, y / 6 + 0.5));
    case Act::hardsigmoid: return std::fmin(1.0, std::fmax(0.0, double(e.p0) * y + e.p1));
    case Act::silu: return y / (1 + std::exp(-y));
    case Act::leakyrelu: return y < 0 ? double(e.p0) * y : y;
    case Act::sigmoid: return 1 / (1 + std::exp(-y));
    case Act::tanh: return std::tanh(y);
  }
  return y;
}

convf::Epilogue epilogue(int i) {
  convf::Epilogue e;
  e.act = static_cast<Act>(i % convf::kNumActs);
  if (e.act == Act::clip) e.p0 = -0.5f, e.p1 = 0.75f;
  if (e.act == Act::hardsigmoid) e.p0 = 0.2f, e.p1 = 0.5f;
  if (e.act == Act::leakyrelu) e.p0 = 0.1f;
  return e;
}

// One case with its data, double reference and the scalar path's output.
struct Problem {
  convf::Geometry g;
  int64_t n = 0, h = 0, w = 0;
  std::vector<float> x, wt, packed, bias, res;
  std::vector<int64_t> off;
  std::vector<float> zero;
  convf::ConvPlan plan;
  std::vector<double> ref, tol;
  convf::Epilogue ep;
  bool use_res = false;
  int64_t out_size() const { return n * plan.oh * plan.ow * g.cout; }
  // Runs the active path; the output carries one sentinel past its end.
  std::vector<float> run() const {
    std::vector<float> y(size_t(out_size()) + 1, -7.0f);
    convf::run(g, packed.data(), plan, x.data(), n, bias.data(), use_res ? res.data() : nullptr, ep, y.data());
    return y;
  }
};

Problem make(const Case& c, int variant, Rng& r) {
  Problem p;
  convf::Geometry& g = p.g;
  g.cout = c.cout, g.cin = c.cin, g.groups = c.groups, g.kh = c.kh, g.kw = c.kw, g.sh = c.sh, g.sw = c.sw;
  g.dh = c.dh, g.dw = c.dw, g.pt = c.pt, g.pl = c.pl, g.pb = c.pb, g.pr = c.pr;
  p.n = c.n, p.h = c.h, p.w = c.w;
  const int64_t cin_g = g.cin_g(), taps = g.taps();
  p.x.resize(size_t(c.n * c.h * c.w * c.cin));
  for (auto& v : p.x) v = r.uniform(-3.0f, 3.0f);
  p.wt.resize(size_t(c.cout * cin_g * taps));
  const float ws = 1.0f / std::sqrt(float(cin_g * taps));
  for (auto& v : p.wt) v = r.uniform(-ws, ws);
  p.bias.resize(size_t(c.cout));
  for (auto& v : p.bias) v = r.uniform(-1.0f, 1.0f);
  p.packed.assign(size_t(convf::packed_floats(g)), 0.0f);
  convf::pack(g, p.wt.data(), p.packed.data());
  p.off.resize(size_t(convf::plan_offsets(g, c.h, c.w)));
  p.zero.resize(size_t(convf::plan_zeros(g, c.w)));
  convf::build_plan(g, c.h, c.w, p.off.data(), p.zero.data(), &p.plan);
  p.ep = epilogue(variant);
  p.use_res = variant % 2 == 1;
  const int64_t oh = p.plan.oh, ow = p.plan.ow, cout_g = g.cout_g();
  p.res.resize(size_t(p.out_size()));
  for (auto& v : p.res) v = r.uniform(-2.0f, 2.0f);
  p.ref.resize(size_t(p.out_size()));
  p.tol.resize(size_t(p.out_size()));
  const bool exp_act = p.ep.act == Act::silu || p.ep.act == Act::sigmoid || p.ep.act == Act::tanh;
  const double slope = p.ep.act == Act::hardswish ? 1.5 : 1.1;
  for (int64_t b = 0; b < c.n; ++b)
    for (int64_t oy = 0; oy < oh; ++oy)
      for (int64_t ox = 0; ox < ow; ++ox)
        for (int64_t o = 0; o < c.cout; ++o) {
          const int64_t gi = o / cout_g;
          double s = p.bias[size_t(o)], mag = std::fabs(p.bias[size_t(o)]);
          for (int64_t ky = 0; ky < c.kh; ++ky)
            for (int64_t kx = 0; kx < c.kw; ++kx) {
              const int64_t iy = oy * c.sh - c.pt + ky * c.dh, ix = ox * c.sw - c.pl + kx * c.dw;
              if (iy < 0 || iy >= c.h || ix < 0 || ix >= c.w) continue;
              for (int64_t ci = 0; ci < cin_g; ++ci) {
                const double pr = double(p.x[size_t(((b * c.h + iy) * c.w + ix) * c.cin + gi * cin_g + ci)]) *
                                  p.wt[size_t(((o * cin_g + ci) * c.kh + ky) * c.kw + kx)];
                s += pr;
                mag += std::fabs(pr);
              }
            }
          const size_t e = size_t(((b * oh + oy) * ow + ox) * c.cout + o);
          if (p.use_res) {
            s += p.res[e];
            mag += std::fabs(p.res[e]);
          }
          p.ref[e] = act_d(s, p.ep);
          p.tol[e] = slope * 1e-5 * mag + 1e-30 + (exp_act ? 1e-6 * (1 + std::fabs(p.ref[e])) : 0.0);
        }
  return p;
}

std::string describe(const Case& c) {
  return fmt("n%lld %lldx%lld c%lld->%lld k%lldx%lld s%lld,%lld p%lld%lld%lld%lld d%lld,%lld g%lld", (long long)c.n,
             (long long)c.h, (long long)c.w, (long long)c.cin, (long long)c.cout, (long long)c.kh, (long long)c.kw,
             (long long)c.sh, (long long)c.sw, (long long)c.pt, (long long)c.pl, (long long)c.pb, (long long)c.pr,
             (long long)c.dh, (long long)c.dw, (long long)c.groups);
}

}  // namespace

void check_conv_f32(Suite& s) {
  Rng r(2024);
  // Problems and the scalar path's outputs, computed once.
  std::vector<Problem> probs;
  std::vector<std::vector<float>> scalar_out;
  int variant = 0;
  for (const Case& c : kCases)
    for (int rep = 0; rep < 2; ++rep) probs.push_back(make(c, variant++, r));
  edgepack::select_isa(Isa::scalar);
  Tally tref;
  for (size_t i = 0; i < probs.size(); ++i) {
    scalar_out.push_back(probs[i].run());
    const std::vector<float>& y = scalar_out.back();
    ++tref.cases;
    for (size_t e = 0; e < probs[i].ref.size(); ++e)
      if (!(std::fabs(y[e] - probs[i].ref[e]) <= probs[i].tol[e])) {
        tref.fail(fmt("%s act %d: y[%zu] = %.9g, reference %.9g", describe(kCases[i / 2]).c_str(),
                      int(probs[i].ep.act), e, y[e], probs[i].ref[e]));
        break;
      }
    if (y.back() != -7.0f) tref.fail(describe(kCases[i / 2]) + ": wrote past the output");
  }
  s.report(Isa::scalar, "conv f32 vs double ref", tref.cases, tref.failed, tref.first);
  const int threads = edgepack::get_num_threads();
  for (Isa isa : s.paths) {
    edgepack::select_isa(isa);
    Tally t, tt;
    for (size_t i = 0; i < probs.size(); ++i) {
      const Problem& p = probs[i];
      const std::vector<float> y = p.run();
      ++t.cases;
      for (size_t e = 0; e < p.ref.size(); ++e)
        if (!(std::fabs(y[e] - scalar_out[i][e]) <= 2 * p.tol[e])) {
          t.fail(fmt("%s act %d: y[%zu] = %.9g, scalar %.9g", describe(kCases[i / 2]).c_str(), int(p.ep.act), e, y[e],
                     scalar_out[i][e]));
          break;
        }
      if (y.back() != -7.0f) t.fail(describe(kCases[i / 2]) + ": wrote past the output");
      // One thread against the pool: the same bits (the split never cuts the reduction).
      if (i % 5 == 0 || i + 6 >= probs.size()) {
        edgepack::set_num_threads(1);
        const std::vector<float> y1 = p.run();
        edgepack::set_num_threads(threads > 1 ? threads : 2);
        const std::vector<float> y2 = p.run();
        edgepack::set_num_threads(threads);
        ++tt.cases;
        for (size_t e = 0; e < y.size(); ++e)
          if (y1[e] != y2[e]) {
            tt.fail(fmt("%s: 1 thread and %d threads differ at %zu", describe(kCases[i / 2]).c_str(),
                        threads > 1 ? threads : 2, e));
            break;
          }
      }
    }
    s.report(isa, "conv f32 vs scalar", t.cases, t.failed, t.first);
    s.report(isa, "conv f32 threads", tt.cases, tt.failed, tt.first);
  }
  edgepack::select_isa(edgepack::best_isa());
}

}  // namespace selftest
