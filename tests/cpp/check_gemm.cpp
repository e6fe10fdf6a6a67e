// int8 GEMM through the full driver (packing, activation preparation, tiling, epilogue) on every
// available path: gemm_int8 exact against an int64 reference; linear_int8 (dynamic and static
// activation quantization, bias, activations) against the scalar path.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "core/dispatch.h"
#include "kernels/gemm_s8/driver.h"
#include "selftest.h"

namespace selftest {
namespace {

using edgepack::GemmAct;
using edgepack::GemmInput;
using edgepack::GemmOutput;
using edgepack::Isa;
using edgepack::PackedB;

enum Fill { random_vals, extremes, mixed };

void fill_a(std::vector<int8_t>& a, Fill f, Rng& r) {
  for (auto& v : a) v = int8_t(f == extremes ? -128 : f == mixed ? (r.next() & 1 ? -128 : 127) : r.range(-128, 127));
}
void fill_w(std::vector<int8_t>& w, Fill f, Rng& r) {
  for (auto& v : w) v = int8_t(f == extremes ? 127 : f == mixed ? (r.next() & 1 ? -127 : 127) : r.range(-127, 127));
}

std::vector<int32_t> run_int8(const PackedB& b, int64_t m, const std::vector<int8_t>& a, int64_t k) {
  std::vector<int32_t> c(size_t(m * b.n) + 1, 0x5A5A5A5A);
  GemmInput in;
  in.kind = GemmInput::int8_raw;
  in.a = a.data();
  in.lda = k;
  GemmOutput out;
  out.c = c.data();
  out.ld = b.n;
  edgepack::gemm_s8_run(b, m, in, out);
  return c;
}

void check_gemm_int8(Suite& s, Isa isa) {
  Tally t;
  Rng r(1234);
  const int64_t ms[] = {0, 1, 2, 3, 4, 5, 7, 8, 9, 13, 17};
  const int64_t ns[] = {1, 3, 15, 16, 17, 33, 47, 64, 65};
  const int64_t ks[] = {1, 3, 4, 5, 15, 16, 17, 63, 64, 65, 131};
  auto one = [&](int64_t m, int64_t n, int64_t k, Fill f) {
    std::vector<int8_t> a(size_t(m * k)), w(size_t(n * k));
    fill_a(a, f, r);
    fill_w(w, f, r);
    PackedB b;
    ++t.cases;
    if (!edgepack::pack_b(w.data(), n, k, k, &b).ok()) {
      t.fail(fmt("pack_b refused valid weights %lldx%lld", (long long)n, (long long)k));
      return;
    }
    std::vector<int8_t> back(w.size());
    edgepack::unpack_b(b, back.data());
    if (back != w) t.fail(fmt("unpack_b(pack_b(w)) != w for %lldx%lld", (long long)n, (long long)k));
    const std::vector<int32_t> c = run_int8(b, m, a, k);
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) {
        int64_t ref = 0;
        for (int64_t q = 0; q < k; ++q) ref += int64_t(a[size_t(i * k + q)]) * w[size_t(j * k + q)];
        if (c[size_t(i * n + j)] != ref) {
          t.fail(fmt("M=%lld N=%lld K=%lld fill=%d: C[%lld,%lld]=%d, expected %lld", (long long)m, (long long)n,
                     (long long)k, int(f), (long long)i, (long long)j, c[size_t(i * n + j)], (long long)ref));
          return;
        }
      }
    if (c[size_t(m * n)] != 0x5A5A5A5A) t.fail(fmt("M=%lld N=%lld K=%lld: wrote past C", (long long)m, (long long)n, (long long)k));
  };
  for (int64_t m : ms)
    for (int64_t n : ns)
      for (int64_t k : ks) one(m, n, k, Fill((m + n + k) % 3));
  for (Fill f : {random_vals, extremes, mixed}) {  // long K: accumulators near their range
    one(1, 17, 4099, f);
    one(9, 33, 16384, f);
  }
  // -128 in the weights is refused with its flat index.
  std::vector<int8_t> w(5 * 7, 1);
  w[23] = -128;
  PackedB b;
  const edgepack::Status st = edgepack::pack_b(w.data(), 5, 7, 7, &b);
  ++t.cases;
  if (st.ok() || st.index != 23) t.fail("pack_b accepted -128 or misreported its index");
  s.report(isa, "gemm_int8 (+pack)", t.cases, t.failed, t.first);
}

struct LinearCase {
  int64_t m, n, k;
  GemmAct act;
  bool bias;
  int kind;  // 0 dynamic, 1 static int8, 2 static uint8
};

edgepack::Status run_linear(const PackedB& b, const LinearCase& c, const std::vector<float>& x,
                            const std::vector<float>& ws, const std::vector<float>& bias, std::vector<float>* y) {
  y->assign(size_t(c.m * c.n), -7.0f);
  GemmInput in;
  in.kind = c.kind == 0 ? GemmInput::f32_dynamic : GemmInput::f32_static;
  in.a = x.data();
  in.lda = c.k;
  in.x_scale = 0.0625f;
  in.x_zero_point = c.kind == 2 ? 131 : -3;
  in.x_uint8 = c.kind == 2;
  GemmOutput out;
  out.y = y->data();
  out.ld = c.n;
  out.col_scale = ws.data();
  out.bias = c.bias ? bias.data() : nullptr;
  out.act = c.act;
  return edgepack::gemm_s8_run(b, c.m, in, out);
}

void check_linear(Suite& s, const std::vector<Isa>& paths) {
  // Reference: the scalar path; none/relu must match it exactly (the epilogue is specified step by
  // step), gelu/gelu_tanh/silu within 2e-6 relative + 1e-6 absolute (vector approximations).
  Rng r(99);
  std::vector<Tally> tallies(paths.size());
  const int64_t dims[][3] = {{1, 1, 1}, {1, 17, 33}, {2, 16, 64}, {3, 47, 5}, {4, 65, 130}, {5, 33, 17},
                             {8, 16, 4}, {13, 31, 257}, {17, 64, 65}};
  for (const auto& d : dims)
    for (int act = 0; act <= 4; ++act)
      for (int kind = 0; kind < 3; ++kind) {
        LinearCase c{d[0], d[1], d[2], GemmAct(act), (act + kind) % 2 == 0, kind};
        std::vector<int8_t> w(size_t(c.n * c.k));
        fill_w(w, random_vals, r);
        PackedB b;
        edgepack::pack_b(w.data(), c.n, c.k, c.k, &b);
        std::vector<float> x(size_t(c.m * c.k)), ws(size_t(c.n)), bias(size_t(c.n));
        for (auto& v : x) v = r.uniform(-8.0f, 8.0f);
        if (c.k > 2) x[1] = 0.5f * 0.0625f * 3;  // a tie for the static path
        for (auto& v : ws) v = r.uniform(0.001f, 0.02f);
        for (auto& v : bias) v = r.uniform(-1.0f, 1.0f);
        std::vector<float> ref, y;
        edgepack::select_isa(Isa::scalar);
        run_linear(b, c, x, ws, bias, &ref);
        for (size_t p = 0; p < paths.size(); ++p) {
          Tally& t = tallies[p];
          edgepack::select_isa(paths[p]);
          ++t.cases;
          if (!run_linear(b, c, x, ws, bias, &y).ok()) {
            t.fail("finite input reported as non-finite");
            continue;
          }
          const bool exact = c.act == GemmAct::none || c.act == GemmAct::relu;
          for (size_t i = 0; i < y.size(); ++i) {
            const float tol = exact ? 0.0f : 2e-6f * std::fabs(ref[i]) + 1e-6f;
            if (!(std::fabs(y[i] - ref[i]) <= tol)) {
              t.fail(fmt("M=%lld N=%lld K=%lld act=%d kind=%d: y[%zu]=%.9g, scalar %.9g", (long long)c.m,
                         (long long)c.n, (long long)c.k, act, kind, i, y[i], ref[i]));
              break;
            }
          }
        }
      }
  // NaN / Inf in x: the same status and flat index on every path.
  for (size_t p = 0; p < paths.size(); ++p) {
    edgepack::select_isa(paths[p]);
    for (int kind = 0; kind < 2; ++kind) {
      LinearCase c{6, 20, 37, GemmAct::none, false, kind};
      std::vector<int8_t> w(size_t(c.n * c.k), 3);
      PackedB b;
      edgepack::pack_b(w.data(), c.n, c.k, c.k, &b);
      std::vector<float> x(size_t(c.m * c.k), 1.0f), ws(size_t(c.n), 1.0f), y;
      x[4 * 37 + 11] = kind ? INFINITY : NAN;
      const edgepack::Status st = run_linear(b, c, x, ws, ws, &y);
      ++tallies[p].cases;
      if (st.ok() || st.index != 4 * 37 + 11) tallies[p].fail(fmt("kind=%d: non-finite x not reported at its index", kind));
    }
  }
  edgepack::select_isa(edgepack::best_isa());
  for (size_t p = 0; p < paths.size(); ++p)
    s.report(paths[p], "linear_int8 epilogue", tallies[p].cases, tallies[p].failed, tallies[p].first);
}

}  // namespace

void check_gemm(Suite& s) {
  for (Isa isa : s.paths) {
    edgepack::select_isa(isa);
    check_gemm_int8(s, isa);
  }
  edgepack::select_isa(edgepack::best_isa());
  check_linear(s, s.paths);
}

}  // namespace selftest
