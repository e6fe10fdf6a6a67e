// int8 GEMM through the driver (packing, activation preparation, blocking, epilogue) on every
// available path: gemm_i32 exact against an int64 reference (int8 and zero-point activations);
// linear_dynamic / linear_static against the scalar path (none/relu bit for bit, the other
// activations within the vector approximations' bound).
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "core/dispatch.h"
#include "kernels/gemm_s8/gemm_s8.h"
#include "selftest.h"

namespace selftest {
namespace {

using edgepack::Isa;
using edgepack::PackedB;
namespace gemm = edgepack::gemm;

// Packed weights with 64-byte aligned data, as the bindings allocate them.
struct Packed {
  std::vector<int8_t> store;
  std::vector<int32_t> colsum;
  PackedB b;
  edgepack::Status status;
  Packed(const std::vector<int8_t>& w, int64_t n, int64_t k) {
    store.assign(size_t(gemm::packed_data_bytes(n, k) + 64), 0);
    colsum.assign(size_t(gemm::packed_colsum_len(n)), 0);
    int8_t* data = store.data() + (64 - reinterpret_cast<uintptr_t>(store.data()) % 64) % 64;
    status = gemm::pack(w.data(), n, k, k, data, colsum.data());
    b.data = data;
    b.colsum = colsum.data();
    b.n = n;
    b.k = k;
    b.kp = (k + 3) / 4 * 4;
    b.panels = (n + 15) / 16;
  }
};

enum Fill { random_vals, extremes, mixed };

void fill_a(std::vector<int8_t>& a, Fill f, Rng& r) {
  for (auto& v : a) v = int8_t(f == extremes ? -128 : f == mixed ? (r.next() & 1 ? -128 : 127) : r.range(-128, 127));
}
void fill_w(std::vector<int8_t>& w, Fill f, Rng& r) {
  for (auto& v : w) v = int8_t(f == extremes ? 127 : f == mixed ? (r.next() & 1 ? -127 : 127) : r.range(-127, 127));
}

void check_gemm_int8(Suite& s, Isa isa) {
  Tally t;
  Rng r(1234);
  const int64_t ms[] = {0, 1, 2, 3, 4, 5, 7, 8, 9, 13, 17};
  const int64_t ns[] = {1, 3, 15, 16, 17, 33, 47, 64, 65};
  const int64_t ks[] = {1, 3, 4, 5, 15, 16, 17, 63, 64, 65, 131};
  auto one = [&](int64_t m, int64_t n, int64_t k, Fill f, gemm::AKind kind, int32_t zp) {
    std::vector<int8_t> a(size_t(m * k)), w(size_t(n * k));
    fill_a(a, f, r);
    fill_w(w, f, r);
    Packed p(w, n, k);
    ++t.cases;
    if (!p.status.ok()) {
      t.fail(fmt("pack refused valid weights %lldx%lld", (long long)n, (long long)k));
      return;
    }
    std::vector<int8_t> back(w.size());
    gemm::unpack(p.b, back.data());
    if (back != w) t.fail(fmt("unpack(pack(w)) != w for %lldx%lld", (long long)n, (long long)k));
    std::vector<int32_t> c(size_t(m * n) + 1, 0x5A5A5A5A);
    gemm::gemm_i32(reinterpret_cast<const uint8_t*>(a.data()), kind, zp, m, k, p.b, c.data(), n);
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) {
        int64_t ref = 0;
        for (int64_t q = 0; q < k; ++q) {
          const int64_t av = kind == gemm::AKind::u8 ? int64_t(uint8_t(a[size_t(i * k + q)])) : a[size_t(i * k + q)];
          ref += (av - zp) * w[size_t(j * k + q)];
        }
        if (c[size_t(i * n + j)] != ref) {
          t.fail(fmt("M=%lld N=%lld K=%lld fill=%d kind=%d zp=%d: C[%lld,%lld]=%d, expected %lld", (long long)m,
                     (long long)n, (long long)k, int(f), int(kind), zp, (long long)i, (long long)j,
                     c[size_t(i * n + j)], (long long)ref));
          return;
        }
      }
    if (c[size_t(m * n)] != 0x5A5A5A5A) t.fail(fmt("M=%lld N=%lld K=%lld: wrote past C", (long long)m, (long long)n, (long long)k));
  };
  for (int64_t m : ms)
    for (int64_t n : ns)
      for (int64_t k : ks) {
        const int v = int((m + n + k) % 3);
        one(m, n, k, Fill(v), gemm::AKind::s8, 0);
        if ((m + k) % 4 == 0) one(m, n, k, Fill(v), v == 1 ? gemm::AKind::u8 : gemm::AKind::s8, v == 1 ? 255 : -7);
      }
  for (Fill f : {random_vals, extremes, mixed}) {  // long K: accumulators near their range
    one(1, 17, 4099, f, gemm::AKind::s8, 0);
    one(9, 33, 16384, f, gemm::AKind::s8, 0);
    one(3, 20, 1000, f, gemm::AKind::u8, 128);
  }
  // -128 in the weights is refused with its flat index.
  std::vector<int8_t> w(5 * 7, 1);
  w[23] = -128;
  Packed p(w, 5, 7);
  ++t.cases;
  if (p.status.ok() || p.status.index != 23) t.fail("pack accepted -128 or misreported its index");
  s.report(isa, "gemm_int8 (+pack)", t.cases, t.failed, t.first);
}

struct LinearCase {
  int64_t m, n, k;
  gemm::Act act;
  bool bias;
  int kind;  // 0 dynamic, 1 static int8, 2 static uint8
};

edgepack::Status run_linear(const PackedB& b, const LinearCase& c, const std::vector<float>& x,
                            const std::vector<float>& ws, const std::vector<float>& bias, std::vector<float>* y) {
  y->assign(size_t(c.m * c.n), -7.0f);
  const float* bp = c.bias ? bias.data() : nullptr;
  if (c.kind == 0) return gemm::linear_dynamic(x.data(), c.m, c.k, b, ws.data(), bp, c.act, y->data(), c.n);
  const gemm::AKind kind = c.kind == 2 ? gemm::AKind::u8 : gemm::AKind::s8;
  const int32_t zp = c.kind == 2 ? 131 : -3;
  const float xs = 0.0625f;
  std::vector<uint8_t> q(size_t(c.m * c.k));
  const edgepack::Status st = gemm::quantize_static(x.data(), c.m, c.k, xs, kind, zp, q.data());
  if (!st.ok()) return st;
  gemm::linear_static(q.data(), kind, zp, xs, c.m, c.k, b, ws.data(), bp, c.act, y->data(), c.n);
  return st;
}

void check_linear(Suite& s, const std::vector<Isa>& paths) {
  Rng r(99);
  std::vector<Tally> tallies(paths.size());
  const int64_t dims[][3] = {{1, 1, 1}, {1, 17, 33}, {2, 16, 64}, {3, 47, 5}, {4, 65, 130}, {5, 33, 17},
                             {8, 16, 4}, {13, 31, 257}, {17, 64, 65}};
  for (const auto& d : dims)
    for (int act = 0; act <= 4; ++act)
      for (int kind = 0; kind < 3; ++kind) {
        LinearCase c{d[0], d[1], d[2], gemm::Act(act), (act + kind) % 2 == 0, kind};
        std::vector<int8_t> w(size_t(c.n * c.k));
        fill_w(w, random_vals, r);
        Packed p(w, c.n, c.k);
        std::vector<float> x(size_t(c.m * c.k)), ws(size_t(c.n)), bias(size_t(c.n));
        for (auto& v : x) v = r.uniform(-8.0f, 8.0f);
        if (c.k > 2) x[1] = 0.5f * 0.0625f * 3;  // a tie for the static quantizer
        for (auto& v : ws) v = r.uniform(0.001f, 0.02f);
        for (auto& v : bias) v = r.uniform(-1.0f, 1.0f);
        std::vector<float> ref, y;
        edgepack::select_isa(Isa::scalar);
        run_linear(p.b, c, x, ws, bias, &ref);
        for (size_t i = 0; i < paths.size(); ++i) {
          Tally& t = tallies[i];
          edgepack::select_isa(paths[i]);
          ++t.cases;
          if (!run_linear(p.b, c, x, ws, bias, &y).ok()) {
            t.fail("finite input reported as non-finite");
            continue;
          }
          // none/relu: the epilogue is specified step by step, so every path gives the same bits;
          // gelu/gelu_tanh/silu: vector approximations within 2e-6 relative + 1e-6 absolute.
          const bool exact = c.act == gemm::Act::none || c.act == gemm::Act::relu;
          for (size_t e = 0; e < y.size(); ++e) {
            const float tol = exact ? 0.0f : 2e-6f * std::fabs(ref[e]) + 1e-6f;
            if (!(std::fabs(y[e] - ref[e]) <= tol)) {
              t.fail(fmt("M=%lld N=%lld K=%lld act=%d kind=%d: y[%zu]=%.9g, scalar %.9g", (long long)c.m,
                         (long long)c.n, (long long)c.k, act, kind, e, y[e], ref[e]));
              break;
            }
          }
        }
      }
  // NaN / Inf in x: the same status and flat index on every path.
  for (size_t i = 0; i < paths.size(); ++i) {
    edgepack::select_isa(paths[i]);
    for (int kind = 0; kind < 2; ++kind) {
      LinearCase c{6, 20, 37, gemm::Act::none, false, kind};
      std::vector<int8_t> w(size_t(c.n * c.k), 3);
      Packed p(w, c.n, c.k);
      std::vector<float> x(size_t(c.m * c.k), 1.0f), ws(size_t(c.n), 1.0f), y;
      x[4 * 37 + 11] = kind ? INFINITY : NAN;
      const edgepack::Status st = run_linear(p.b, c, x, ws, ws, &y);
      ++tallies[i].cases;
      if (st.ok() || st.index != 4 * 37 + 11) tallies[i].fail(fmt("kind=%d: non-finite x not reported at its index", kind));
    }
  }
  edgepack::select_isa(edgepack::best_isa());
  for (size_t i = 0; i < paths.size(); ++i)
    s.report(paths[i], "linear_int8 epilogue", tallies[i].cases, tallies[i].failed, tallies[i].first);
}

// The fused row quantizer of linear_int8 (GemmOps::quant_rows), called directly on each path:
// scale = absmax / 127 (1 for a zero row), q = round_half_even(x / scale) in [-127, 127], the k
// tail up to kp filled with the mask, NaN/Inf reported at its flat index. Rows built so that
// x / scale lands exactly on ties, on +-127, on denormals and on zero.
void check_quant_rows(Suite& s, Isa isa) {
  Tally t;
  Rng r(4242);
  const edgepack::GemmOps& ops = edgepack::table_for(isa).gemm;
  for (int64_t k : {1, 2, 3, 4, 5, 7, 8, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 129, 1000}) {
    const int64_t m = 5, kp = (k + 3) / 4 * 4, ldx = k + 3, ldo = kp + 8;
    std::vector<float> x(size_t(m * ldx), 0.0f);
    for (int64_t row = 0; row < m; ++row)
      for (int64_t c = 0; c < k; ++c) {
        float v;
        switch (row) {
          case 0: v = (float(r.range(-127, 126)) + 0.5f) * 0.125f; break;  // ties: scale is 0.125 below
          case 1: v = r.uniform(-1e-3f, 1e-3f); break;
          case 2: v = 0.0f; break;                                          // all-zero row: scale 1
          case 3: v = r.uniform(-3e4f, 3e4f); break;
          default: v = (c % 3 == 0) ? 1e-40f : -2.5f; break;                // denormals next to normals
        }
        x[size_t(row * ldx + c)] = v;
      }
    x[0] = 15.875f;  // absmax 127 * 0.125 for row 0, so x / scale is k + 0.5 exactly
    for (uint8_t mask : {uint8_t(0), uint8_t(0x80)}) {
      std::vector<uint8_t> out(size_t(m * ldo), 0xEE);
      std::vector<float> scale(size_t(m), -1.0f);
      ++t.cases;
      const edgepack::Status st = ops.quant_rows(x.data(), m, k, ldx, out.data(), ldo, kp, scale.data(), mask);
      if (!st.ok()) {
        t.fail(fmt("k=%lld: finite rows reported non-finite", (long long)k));
        continue;
      }
      for (int64_t row = 0; row < m; ++row) {
        float amax = 0.0f;
        for (int64_t c = 0; c < k; ++c) amax = std::fmax(amax, std::fabs(x[size_t(row * ldx + c)]));
        const float sc = amax > 0.0f ? amax / 127.0f : 1.0f;
        if (scale[size_t(row)] != sc) {
          t.fail(fmt("k=%lld row %lld: scale %.9g, expected %.9g", (long long)k, (long long)row, scale[size_t(row)], sc));
          break;
        }
        for (int64_t c = 0; c < kp; ++c) {
          uint8_t want = mask;
          if (c < k) {
            float q = std::nearbyint(x[size_t(row * ldx + c)] / sc);
            q = q > 127.0f ? 127.0f : (q < -127.0f ? -127.0f : q);
            want = uint8_t(int8_t(q)) ^ mask;
          }
          if (out[size_t(row * ldo + c)] != want) {
            t.fail(fmt("k=%lld row %lld col %lld mask %d: byte %d, expected %d (x=%.9g)", (long long)k, (long long)row,
                       (long long)c, mask, out[size_t(row * ldo + c)], want, x[size_t(row * ldx + c)]));
            row = m;
            break;
          }
        }
      }
    }
    // A NaN or Inf is reported at its flat index r * k + c.
    for (float bad : {NAN, INFINITY, -INFINITY}) {
      std::vector<float> xb(x);
      const int64_t br = 3, bc = k - 1;
      xb[size_t(br * ldx + bc)] = bad;
      std::vector<uint8_t> out(size_t(m * ldo));
      std::vector<float> scale(static_cast<size_t>(m));
      ++t.cases;
      const edgepack::Status st = ops.quant_rows(xb.data(), m, k, ldx, out.data(), ldo, kp, scale.data(), 0);
      if (st.ok() || st.index != br * k + bc) t.fail(fmt("k=%lld: non-finite not reported at %lld", (long long)k, (long long)(br * k + bc)));
    }
  }
  s.report(isa, "quantize_rows (linear)", t.cases, t.failed, t.first);
}

}  // namespace

void check_gemm(Suite& s) {
  for (Isa isa : s.paths) check_quant_rows(s, isa);
  for (Isa isa : s.paths) {
    edgepack::select_isa(isa);
    check_gemm_int8(s, isa);
  }
  edgepack::select_isa(edgepack::best_isa());
  check_linear(s, s.paths);
  check_amx(s);
}

}  // namespace selftest
