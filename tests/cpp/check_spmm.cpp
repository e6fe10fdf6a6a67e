// spmm through its driver (routes: small-M vec or sliced windows, large-M tiles; CSR and 2:4;
// float32 and int8 values) on every available path. int8 accumulators exact against an int64
// dense reference; float results within the documented 1e-5 * sum|x w| of a double dense
// reference; the full int8 call (quantization + epilogue) within 1e-6 relative of the scalar path.
#include <cmath>
#include <cstdint>
#include <vector>

#include "core/dispatch.h"
#include "kernels/spmm/driver.h"
#include "selftest.h"

namespace selftest {
namespace {

using edgepack::Isa;
using edgepack::SpmmAct;
using edgepack::SpmmFormat;
using edgepack::SpmmMatrix;

// Owns the arrays of one sparse matrix built from a dense pattern.
struct Sparse {
  int64_t n, k;
  bool int8;
  SpmmFormat format;
  std::vector<float> dense;  // values as float (int8 values exactly)
  std::vector<int64_t> rp;
  std::vector<uint16_t> col;
  std::vector<float> vf;
  std::vector<int8_t> vs;
  std::vector<uint8_t> meta;
  std::vector<float> scale;
  edgepack::SpmmSellStorage sell;
  edgepack::SpmmSellStorage slide;
  SpmmMatrix view() const {
    SpmmMatrix w;
    w.format = format;
    w.int8 = int8;
    w.n = n;
    w.k = k;
    w.row_ptr = rp.empty() ? nullptr : rp.data();
    w.col = col.data();
    w.val = int8 ? static_cast<const void*>(vs.data()) : static_cast<const void*>(vf.data());
    w.meta = meta.data();
    w.scale = int8 ? scale.data() : nullptr;
    w.nnz = int64_t(int8 ? vs.size() : vf.size());
    return w;
  }
};

// density in [0, 1]; row 0 empty and row 1 full when n allows (the edge cases the issue names).
Sparse make(int64_t n, int64_t k, double density, bool int8, SpmmFormat fmt, Rng& r) {
  Sparse s{n, k, int8, fmt, {}, {}, {}, {}, {}, {}, {}, {}};
  s.dense.assign(size_t(n * k), 0.0f);
  auto value = [&]() -> float {
    if (int8) {
      int v = int(r.range(-127, 127));
      if (r.next() % 5 == 0) v = r.next() & 1 ? 127 : -127;
      return float(v == 0 ? 1 : v);
    }
    return r.uniform(-2.0f, 2.0f);
  };
  if (fmt == SpmmFormat::csr) {
    s.rp.push_back(0);
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t j = 0; j < k; ++j) {
        const bool nz = (i == 1 && n > 2) || (i != 0 && double(r.next() % 10000) < density * 10000.0);
        if (!nz) continue;
        const float v = value();
        s.dense[size_t(i * k + j)] = v;
        s.col.push_back(uint16_t(j));
        if (int8) s.vs.push_back(int8_t(v)); else s.vf.push_back(v);
      }
      s.rp.push_back(int64_t(s.col.size()));
    }
  } else {
    const int64_t groups = k / 4, ms = (groups + 1) / 2;
    s.meta.assign(size_t(n * ms), 0);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t g = 0; g < groups; ++g) {
        unsigned p0 = unsigned(r.next() % 3), p1 = p0 + 1 + unsigned(r.next() % (3 - p0));
        float v0 = r.next() % 4 ? value() : 0.0f, v1 = r.next() % 4 ? value() : 0.0f;  // some groups < 2 nonzeros
        if (i == 0) v0 = v1 = 0.0f;
        s.dense[size_t(i * k + 4 * g + p0)] = v0;
        s.dense[size_t(i * k + 4 * g + p1)] = v1;
        s.meta[size_t(i * ms + g / 2)] |= uint8_t((p0 | (p1 << 2)) << ((g % 2) * 4));
        if (int8) {
          s.vs.push_back(int8_t(v0));
          s.vs.push_back(int8_t(v1));
        } else {
          s.vf.push_back(v0);
          s.vf.push_back(v1);
        }
      }
  }
  if (s.col.empty()) s.col.push_back(0);  // keep data() non-null for empty matrices
  if (s.meta.empty()) s.meta.push_back(0);
  s.scale.resize(size_t(n));
  for (auto& v : s.scale) v = r.uniform(0.001f, 0.05f);
  return s;
}

// What the binding does before a call: derive the small-M layout when the active path wants it.
SpmmMatrix call_view(Sparse& s, int64_t m) {
  SpmmMatrix w = s.view();
  edgepack::spmm_prepare_slide(w, s.slide, m);
  if (edgepack::spmm_wants_sell(w, m)) {
    edgepack::spmm_build_sell(w, s.sell);
    if (edgepack::spmm_sell_worthwhile(w, s.sell)) {
      w.sell = s.sell.view();
      w.has_sell = true;
    }
  }
  return w;
}

void check_path(Suite& s, Isa isa) {
  Tally tf, ti, tq;
  Rng r(777);
  const int64_t ms[] = {0, 1, 2, 3, 4, 5, 8, 9, 17, 33, 64, 65, 100};
  const int64_t ns[] = {1, 5, 16, 17, 33};
  const int64_t ks[] = {4, 12, 36, 64, 100, 132};
  const double dens[] = {0.0, 0.1, 0.5, 1.0};
  int ci = 0;
  for (int fm = 0; fm < 2; ++fm)
    for (int64_t n : ns)
      for (int64_t k : ks)
        for (double d : dens)
          for (int i8 = 0; i8 < 2; ++i8) {
            const int64_t m = ms[ci++ % 13];
            Sparse sp = make(n, k + (fm == 0 && d == 0.5 ? 1 : 0), d, i8 == 1, SpmmFormat(fm), r);
            const int64_t kk = sp.k;
            std::vector<float> x(size_t(m * kk) + 1);
            for (auto& v : x) v = r.uniform(-3.0f, 3.0f);
            if (!i8) {
              std::vector<float> y(size_t(m * n) + 1, -9.0f), bias(static_cast<size_t>(n));
              for (auto& v : bias) v = r.uniform(-1.0f, 1.0f);
              const SpmmMatrix w = call_view(sp, m);
              ++tf.cases;
              if (!edgepack::spmm_run(w, x.data(), m, bias.data(), SpmmAct::none, y.data()).ok()) {
                tf.fail("finite input refused");
                continue;
              }
              for (int64_t a = 0; a < m && tf.failed == 0; ++a)
                for (int64_t j = 0; j < n; ++j) {
                  double ref = bias[size_t(j)], mag = std::fabs(bias[size_t(j)]);
                  for (int64_t q = 0; q < kk; ++q) {
                    const double p = double(x[size_t(a * kk + q)]) * sp.dense[size_t(j * kk + q)];
                    ref += p;
                    mag += std::fabs(p);
                  }
                  if (!(std::fabs(y[size_t(a * n + j)] - ref) <= 1e-5 * mag + 1e-30)) {
                    tf.fail(fmt("fmt=%d M=%lld N=%lld K=%lld d=%.1f: y[%lld,%lld]=%.9g, dense %.9g", fm, (long long)m,
                                (long long)n, (long long)kk, d, (long long)a, (long long)j, y[size_t(a * n + j)], ref));
                    break;
                  }
                }
              if (y[size_t(m * n)] != -9.0f) tf.fail("wrote past y");
            } else {
              std::vector<int8_t> xq(size_t(m * kk) + 1);
              for (auto& v : xq) v = int8_t(r.next() % 7 == 0 ? -128 : r.range(-128, 127));
              std::vector<int32_t> acc(size_t(m * n) + 1, 0x5A5A5A5A);
              const SpmmMatrix w = call_view(sp, m);
              ++ti.cases;
              edgepack::spmm_acc_s8(w, xq.data(), m, acc.data());
              for (int64_t a = 0; a < m && ti.failed == 0; ++a)
                for (int64_t j = 0; j < n; ++j) {
                  int64_t ref = 0;
                  for (int64_t q = 0; q < kk; ++q) ref += int64_t(xq[size_t(a * kk + q)]) * int64_t(sp.dense[size_t(j * kk + q)]);
                  if (acc[size_t(a * n + j)] != ref) {
                    ti.fail(fmt("fmt=%d M=%lld N=%lld K=%lld d=%.1f: acc[%lld,%lld]=%d, expected %lld", fm, (long long)m,
                                (long long)n, (long long)kk, d, (long long)a, (long long)j, acc[size_t(a * n + j)], (long long)ref));
                    break;
                  }
                }
              if (acc[size_t(m * n)] != 0x5A5A5A5A) ti.fail("wrote past acc");
              // The whole int8 call (row quantization, scales, bias, activation) against the scalar path.
              const SpmmAct act = SpmmAct(ci % 5);
              std::vector<float> y(size_t(m * n)), ref(size_t(m * n)), bias(size_t(n), 0.25f);
              ++tq.cases;
              edgepack::select_isa(Isa::scalar);
              const SpmmMatrix ws = call_view(sp, m);
              edgepack::spmm_run(ws, x.data(), m, bias.data(), act, ref.data());
              edgepack::select_isa(isa);
              const SpmmMatrix wp = call_view(sp, m);
              edgepack::spmm_run(wp, x.data(), m, bias.data(), act, y.data());
              for (size_t e = 0; e < y.size(); ++e)
                if (!(std::fabs(y[e] - ref[e]) <= 2e-6f * std::fabs(ref[e]) + 1e-6f)) {
                  tq.fail(fmt("fmt=%d M=%lld N=%lld K=%lld act=%d: y[%zu]=%.9g, scalar %.9g", fm, (long long)m,
                              (long long)n, (long long)kk, int(act), e, y[e], ref[e]));
                  break;
                }
            }
          }
  // Long K (uint16 column indices near their range) for both routes.
  for (int64_t m : {int64_t(3), int64_t(40)}) {
    Sparse sp = make(9, 65536, 0.02, true, SpmmFormat::csr, r);
    std::vector<int8_t> xq(size_t(m * sp.k));
    for (auto& v : xq) v = int8_t(r.range(-128, 127));
    std::vector<int32_t> acc(size_t(m * 9));
    edgepack::spmm_acc_s8(call_view(sp, m), xq.data(), m, acc.data());
    ++ti.cases;
    for (int64_t a = 0; a < m; ++a)
      for (int64_t j = 0; j < 9; ++j) {
        int64_t ref = 0;
        for (int64_t q = sp.rp[size_t(j)]; q < sp.rp[size_t(j + 1)]; ++q) ref += int64_t(xq[size_t(a * sp.k + sp.col[size_t(q)])]) * sp.vs[size_t(q)];
        if (acc[size_t(a * 9 + j)] != ref) {
          ti.fail(fmt("K=65536 M=%lld: acc[%lld,%lld] wrong", (long long)m, (long long)a, (long long)j));
          a = m;
          break;
        }
      }
  }
  s.report(isa, "spmm f32 (csr, 2:4)", tf.cases, tf.failed, tf.first);
  s.report(isa, "spmm int8 acc (csr, 2:4)", ti.cases, ti.failed, ti.first);
  s.report(isa, "spmm int8 epilogue", tq.cases, tq.failed, tq.first);
}

}  // namespace

void check_spmm(Suite& s) {
  for (Isa isa : s.paths) {
    edgepack::select_isa(isa);
    check_path(s, isa);
  }
  edgepack::select_isa(edgepack::best_isa());
}

}  // namespace selftest
