// Quantize area: every path's quant / quant_v / dequant / dequant_v / minmax / minmax_v against a
// plain reference (ONNX formulas in double after the float32 quotient), on edge sizes and values
// that land on ties, saturate, are denormal or extreme; NaN/Inf reported at the first index; and
// the driver-level quantize_rows (the shared GemmOps::quant_rows, threaded) on each path.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "core/thread_pool.h"
#include "kernels/quantize/quantize.h"
#include "selftest.h"

namespace selftest {
namespace {

using edgepack::Isa;

uint8_t ref_q(float v, float s, int32_t zp, bool u8) {
  const double r = static_cast<double>(std::nearbyint(v / s)) + zp;  // float32 quotient, ties to even
  const double lo = u8 ? 0 : -128, hi = u8 ? 255 : 127;
  const double c = r < lo ? lo : (r > hi ? hi : r);
  return static_cast<uint8_t>(static_cast<int32_t>(c));
}

float ref_dq(uint8_t b, float s, int32_t zp, bool u8) {
  const int32_t q = u8 ? int32_t(b) : int32_t(int8_t(b));
  return static_cast<float>(q - zp) * s;
}

bool same_bits(float a, float b) { return std::memcmp(&a, &b, 4) == 0; }

// Values: ties at scale 0.25, saturating, denormal, extreme, ordinary.
float hard_value(Rng& r) {
  switch (r.range(0, 5)) {
    case 0: return (float(r.range(-400, 400)) + 0.5f) * 0.25f;
    case 1: { const float d[] = {1e-45f, -1e-45f, 1e-39f, -3e-39f, 0.0f, -0.0f}; return d[r.range(0, 5)]; }
    case 2: { const float e[] = {3.4e38f, -3.4e38f, 1e20f, -1e20f, 1e6f, -1e6f}; return e[r.range(0, 5)]; }
    default: return r.uniform(-60.0f, 60.0f);
  }
}

void check_path(Suite& s, Isa isa) {
  const edgepack::QuantizeOps& ops = edgepack::table_for(isa).quantize;
  Tally tq, tdq, tmm;
  Rng r(777);
  const float scales[] = {0.25f, 0.1f, 7.0f, 1e-30f, 3e38f};
  for (int64_t n : edge_sizes()) {
    std::vector<float> x(static_cast<size_t>(n) + 1), sv(static_cast<size_t>(n) + 1);
    std::vector<int32_t> zv(static_cast<size_t>(n) + 1);
    for (auto& v : x) v = hard_value(r);
    for (bool u8 : {false, true}) {
      const int32_t lo = u8 ? 0 : -128, hi = u8 ? 255 : 127;
      for (int64_t i = 0; i < n; ++i) {
        sv[size_t(i)] = scales[r.range(0, 4)];
        zv[size_t(i)] = int32_t(r.range(lo, hi));
      }
      for (float sc : scales)
        for (int32_t zp : {0, lo, hi, (lo + hi) / 2}) {
          std::vector<uint8_t> out(static_cast<size_t>(n) + 1, 0xEE);
          ++tq.cases;
          if (!ops.quant(x.data(), n, sc, zp, u8, out.data()).ok()) { tq.fail(fmt("n=%lld: finite input reported", (long long)n)); continue; }
          for (int64_t i = 0; i < n; ++i)
            if (out[size_t(i)] != ref_q(x[size_t(i)], sc, zp, u8)) {
              tq.fail(fmt("quant n=%lld i=%lld x=%.9g s=%g zp=%d u8=%d: %d vs %d", (long long)n, (long long)i, x[size_t(i)], sc, zp, u8,
                          out[size_t(i)], ref_q(x[size_t(i)], sc, zp, u8)));
              break;
            }
          if (out[size_t(n)] != 0xEE) tq.fail(fmt("quant n=%lld wrote past the end", (long long)n));
          // dequantize what came out
          std::vector<float> back(static_cast<size_t>(n) + 1, -7.0f);
          ++tdq.cases;
          ops.dequant(out.data(), n, sc, zp, u8, back.data());
          for (int64_t i = 0; i < n; ++i)
            if (!same_bits(back[size_t(i)], ref_dq(out[size_t(i)], sc, zp, u8))) {
              tdq.fail(fmt("dequant n=%lld i=%lld", (long long)n, (long long)i));
              break;
            }
          if (back[size_t(n)] != -7.0f) tdq.fail(fmt("dequant n=%lld wrote past the end", (long long)n));
        }
      // per-element scale / zero point
      std::vector<uint8_t> out(static_cast<size_t>(n) + 1, 0xEE);
      ++tq.cases;
      if (!ops.quant_v(x.data(), n, sv.data(), zv.data(), u8, out.data()).ok()) tq.fail("quant_v: finite input reported");
      for (int64_t i = 0; i < n; ++i)
        if (out[size_t(i)] != ref_q(x[size_t(i)], sv[size_t(i)], zv[size_t(i)], u8)) {
          tq.fail(fmt("quant_v n=%lld i=%lld", (long long)n, (long long)i));
          break;
        }
      std::vector<float> back(static_cast<size_t>(n));
      ++tdq.cases;
      ops.dequant_v(out.data(), n, sv.data(), zv.data(), u8, back.data());
      for (int64_t i = 0; i < n; ++i)
        if (!same_bits(back[size_t(i)], ref_dq(out[size_t(i)], sv[size_t(i)], zv[size_t(i)], u8))) {
          tdq.fail(fmt("dequant_v n=%lld i=%lld", (long long)n, (long long)i));
          break;
        }
    }
    // min / max, folded into earlier values
    float mn = 5.0f, mx = -5.0f, rmn = 5.0f, rmx = -5.0f;
    for (int64_t i = 0; i < n; ++i) {
      rmn = std::fmin(rmn, x[size_t(i)]);
      rmx = std::fmax(rmx, x[size_t(i)]);
    }
    ++tmm.cases;
    if (!ops.minmax(x.data(), n, &mn, &mx).ok() || mn != rmn || mx != rmx)
      tmm.fail(fmt("minmax n=%lld: %g %g vs %g %g", (long long)n, mn, mx, rmn, rmx));
    std::vector<float> vmn(static_cast<size_t>(n), 1.0f), vmx(static_cast<size_t>(n), -1.0f);
    ++tmm.cases;
    bool ok = ops.minmax_v(x.data(), n, vmn.data(), vmx.data()).ok();
    for (int64_t i = 0; ok && i < n; ++i)
      ok = vmn[size_t(i)] == std::fmin(1.0f, x[size_t(i)]) && vmx[size_t(i)] == std::fmax(-1.0f, x[size_t(i)]);
    if (!ok) tmm.fail(fmt("minmax_v n=%lld", (long long)n));
    // NaN / Inf at the first bad index, for every float-reading op
    if (n == 0) continue;
    for (float bad : {NAN, INFINITY, -INFINITY}) {
      std::vector<float> xb(x);
      const int64_t at = n * 2 / 3;
      xb[size_t(at)] = bad;
      if (at + 3 < n) xb[size_t(at + 3)] = NAN;
      std::vector<uint8_t> out(static_cast<size_t>(n));
      std::vector<float> a(static_cast<size_t>(n), 0.0f), b(static_cast<size_t>(n), 0.0f);
      float m0 = 0, m1 = 0;
      const edgepack::Status st[4] = {ops.quant(xb.data(), n, 0.5f, 0, false, out.data()),
                                      ops.quant_v(xb.data(), n, sv.data(), zv.data(), true, out.data()),
                                      ops.minmax(xb.data(), n, &m0, &m1),
                                      ops.minmax_v(xb.data(), n, a.data(), b.data())};
      for (int j = 0; j < 4; ++j) {
        Tally& t = j < 2 ? tq : tmm;
        ++t.cases;
        if (st[j].ok() || st[j].index != at) t.fail(fmt("op %d n=%lld: non-finite not reported at %lld", j, (long long)n, (long long)at));
      }
    }
  }
  s.report(isa, "quantize", tq.cases, tq.failed, tq.first);
  s.report(isa, "dequantize", tdq.cases, tdq.failed, tdq.first);
  s.report(isa, "quantize minmax", tmm.cases, tmm.failed, tmm.first);
}

// The driver (threaded when large) with the path selected: quantize_rows and per-channel quantize.
void check_driver(Suite& s, Isa isa) {
  edgepack::select_isa(isa);
  Tally t;
  Rng r(99);
  for (int64_t m : {1, 3, 40, 300}) {
    for (int64_t k : {0, 1, 17, 64, 1000, 3001}) {
      std::vector<float> x(static_cast<size_t>(m * k));
      for (auto& v : x) v = r.uniform(-9.0f, 9.0f);
      if (m > 2) {  // a zero row (scale 1) and a row whose scale is denormal (1 / scale = inf)
        for (int64_t c = 0; c < k; ++c) x[size_t(k + c)] = x[size_t(2 * k + c)] = 0.0f;
        if (k) x[size_t(2 * k + k / 2)] = 1.1754942e-38f;
      }
      std::vector<int8_t> q(static_cast<size_t>(m * k));
      std::vector<float> sc(static_cast<size_t>(m));
      ++t.cases;
      if (!edgepack::quant::quantize_rows(x.data(), m, k, q.data(), sc.data()).ok()) { t.fail("rows: finite input reported"); continue; }
      for (int64_t i = 0; i < m; ++i) {
        float amax = 0.0f;
        for (int64_t c = 0; c < k; ++c) amax = std::fmax(amax, std::fabs(x[size_t(i * k + c)]));
        const float s0 = amax / 127.0f, want = s0 > 0.0f ? s0 : 1.0f;
        bool ok = sc[size_t(i)] == want;
        for (int64_t c = 0; ok && c < k; ++c) {
          float v = std::nearbyint(x[size_t(i * k + c)] / want);
          v = v > 127.0f ? 127.0f : (v < -127.0f ? -127.0f : v);
          ok = q[size_t(i * k + c)] == int8_t(v);
        }
        if (!ok) {
          t.fail(fmt("quantize_rows m=%lld k=%lld row %lld", (long long)m, (long long)k, (long long)i));
          break;
        }
      }
      // per-channel along the rows (channels = m, inner = k), int8, threaded above the threshold
      std::vector<float> s(static_cast<size_t>(m));
      std::vector<int32_t> z(static_cast<size_t>(m));
      for (int64_t i = 0; i < m; ++i) {
        s[size_t(i)] = r.uniform(0.01f, 0.2f);
        z[size_t(i)] = int32_t(r.range(-20, 20));
      }
      std::vector<uint8_t> out(static_cast<size_t>(m * k));
      ++t.cases;
      if (!edgepack::quant::quantize(x.data(), 1, m, k, s.data(), z.data(), false, out.data()).ok()) t.fail("quantize: finite input reported");
      for (int64_t i = 0; i < m * k; ++i)
        if (out[size_t(i)] != ref_q(x[size_t(i)], s[size_t(i / k)], z[size_t(i / k)], false)) {
          t.fail(fmt("driver quantize m=%lld k=%lld i=%lld", (long long)m, (long long)k, (long long)i));
          break;
        }
    }
  }
  s.report(isa, "quantize_rows (driver)", t.cases, t.failed, t.first);
}

}  // namespace

void check_quantize(Suite& s) {
  for (Isa isa : s.paths) check_path(s, isa);
  for (Isa isa : s.paths) check_driver(s, isa);
  edgepack::select_isa(edgepack::best_isa());
}

}  // namespace selftest
