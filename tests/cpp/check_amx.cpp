// The AMX path (avx512_amx): its detector on every failure mode (runs on any machine), and, where
// the path is available (an AMX CPU, or the test build EDGEPACK_AMX_EMULATE whose tiles are a
// scalar model of the hardware), its GEMM bit for bit against an int64 reference over the
// edge-case grid of its blocking: M = 1..40 (16-row tiles, 32-row blocks and their tails),
// K tails that are not multiples of 64 (nor of 4), N tails and panel counts of every block
// shape, int8 and uint8-with-zero-point activations, linear_int8 against the scalar path, the
// small-shape route to avx512_vnni, several pool sizes and concurrent callers. Buffers are
// allocated to the byte, so under ASan any tile load past A or the packed B is caught.
#include <array>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "core/amx_detect.h"
#include "core/dispatch.h"
#include "core/thread_pool.h"
#include "kernels/gemm_s8/gemm_s8.h"
#include "selftest.h"

#if defined(EDGEPACK_AMX_EMULATE)
namespace edgepack::avx512_amx {
void emu_counters(int64_t* configs, int64_t* releases, int64_t* tdps, int64_t* live);
}
#endif

namespace selftest {
namespace {

using edgepack::Isa;
using edgepack::PackedB;
namespace gemm = edgepack::gemm;

// ---- detection ----------------------------------------------------------------------------

edgepack::AmxCpuid spr() {  // the facts of the Sapphire Rapids VM in AMX.md
  edgepack::AmxCpuid c;
  c.x86 = c.tile = c.int8 = c.avx512_vnni = true;
  c.xcr0 = 0x600e7;
  c.max_palette = 1;
  c.bytes_per_tile = 1024;
  c.bytes_per_row = 64;
  c.max_names = 8;
  c.max_rows = 16;
  return c;
}

uint64_t g_mask;  // the fake process permission of the OS stubs below
int get_ok(uint64_t* m) { *m = g_mask; return 0; }
int get_einval(uint64_t*) { return EINVAL; }
int req_grant() { g_mask |= 1ull << 18; return 0; }
int req_eperm() { return EPERM; }
int req_einval() { return EINVAL; }
int req_noop() { return 0; }

void check_amx_detect(Suite& s) {
  Tally t;
  struct Case {
    const char* what;
    edgepack::AmxCpuid c;
    edgepack::AmxOs os;
    uint64_t mask;
    const char* expect;  // substring of the reason; nullptr: usable
  };
  auto with = [](auto f) { edgepack::AmxCpuid c = spr(); f(c); return c; };
  const edgepack::AmxOs linux_ok{get_ok, req_grant}, denied{get_ok, req_eperm}, old{get_einval, req_einval},
      ignored{get_ok, req_noop}, none{};
  const Case cases[] = {
      {"SPR, first request", spr(), linux_ok, 0x200e7, nullptr},
      {"SPR, already permitted", spr(), denied, 0x600e7, nullptr},
      {"not x86", with([](auto& c) { c.x86 = false; }), linux_ok, 0x200e7, "not an x86-64 CPU"},
      {"no CPUID bits", with([](auto& c) { c.tile = c.int8 = false; }), linux_ok, 0x200e7, "neither AMX-TILE nor AMX-INT8"},
      {"no AMX-INT8", with([](auto& c) { c.int8 = false; }), linux_ok, 0x200e7, "not AMX-INT8"},
      {"no VNNI", with([](auto& c) { c.avx512_vnni = false; }), linux_ok, 0x200e7, "no AVX-512 VNNI"},
      {"XCR0 without tile data", with([](auto& c) { c.xcr0 = 0x200e7; }), linux_ok, 0x200e7, "XCR0 = 0x200e7"},
      {"0 palettes (VM)", with([](auto& c) { c.max_palette = 0; }), linux_ok, 0x200e7, "no tile palette"},
      {"small palette", with([](auto& c) { c.max_rows = 8; }), linux_ok, 0x200e7, "8 rows x 64 bytes"},
      {"permission denied", spr(), denied, 0x200e7, "errno 1"},
      {"kernel < 5.16", spr(), old, 0, "errno 22"},
      {"request ignored", spr(), ignored, 0x200e7, "shows no XTILEDATA"},
      {"no OS call", spr(), none, 0, "only one implemented"},
  };
  for (const Case& c : cases) {
    ++t.cases;
    g_mask = c.mask;
    const std::string r = edgepack::amx_check(c.c, &c.os);
    if (!c.expect ? !r.empty() : r.find(c.expect) == std::string::npos)
      t.fail(fmt("%s: reason '%s', expected %s%s", c.what, r.c_str(), c.expect ? "one with " : "none",
                 c.expect ? c.expect : ""));
  }
  // Without an OS (the CPUID/XCR0 checks only) the SPR facts pass; the real detector agrees with
  // the availability of the path.
  ++t.cases;
  if (!edgepack::amx_check(spr(), nullptr).empty()) t.fail("SPR facts rejected without the permission step");
  ++t.cases;
#if !defined(EDGEPACK_AMX_EMULATE)
  if (edgepack::isa_built(Isa::avx512_amx) && edgepack::isa_available(Isa::avx512_amx) != (edgepack::amx_reason() == nullptr))
    t.fail("avx512_amx availability disagrees with amx_reason()");
#endif
  if (edgepack::isa_available(Isa::avx512_amx) != (edgepack::isa_unavailable_reason(Isa::avx512_amx) == nullptr))
    t.fail("isa_unavailable_reason(avx512_amx) disagrees with availability");
  s.report("runtime", "amx detection", t.cases, t.failed, t.first);
}

// ---- the GEMM -----------------------------------------------------------------------------

struct Counters {
  int64_t configs = 0, releases = 0, tdps = 0, live = 0;
  static Counters now() {
    Counters c;
#if defined(EDGEPACK_AMX_EMULATE)
    edgepack::avx512_amx::emu_counters(&c.configs, &c.releases, &c.tdps, &c.live);
#endif
    return c;
  }
};
constexpr bool kEmulated =
#if defined(EDGEPACK_AMX_EMULATE)
    true;
#else
    false;
#endif

struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};

// Packed weights in an allocation of exactly packed_data_bytes (a multiple of 64), as the
// bindings make them: the last panel's K-tail tile must not be read from past its end.
struct ExactPacked {
  std::unique_ptr<int8_t, FreeDeleter> data;
  std::vector<int32_t> colsum;
  PackedB b;
  ExactPacked(const std::vector<int8_t>& w, int64_t n, int64_t k) {
    const int64_t bytes = gemm::packed_data_bytes(n, k);
    data.reset(static_cast<int8_t*>(std::aligned_alloc(64, static_cast<size_t>(bytes > 0 ? bytes : 64))));
    colsum.assign(size_t(gemm::packed_colsum_len(n)), 0);
    gemm::pack(w.data(), n, k, k, data.get(), colsum.data());
    b.data = data.get();
    b.colsum = colsum.data();
    b.n = n;
    b.k = k;
    b.kp = (k + 3) / 4 * 4;
    b.panels = (n + 15) / 16;
  }
};

// C = (A - zp) W^T through the driver on the active path; first mismatch into *why.
bool gemm_ok(Rng& r, int64_t m, int64_t n, int64_t k, gemm::AKind kind, int32_t zp, bool extremes, std::string* why) {
  std::vector<int8_t> a(size_t(m * k)), w(size_t(n * k));
  for (auto& v : a) v = int8_t(extremes ? (r.next() & 1 ? -128 : 127) : r.range(-128, 127));
  for (auto& v : w) v = int8_t(extremes ? (r.next() & 1 ? -127 : 127) : r.range(-127, 127));
  ExactPacked p(w, n, k);
  std::vector<int32_t> c(size_t(m * n));
  gemm::gemm_i32(reinterpret_cast<const uint8_t*>(a.data()), kind, zp, m, k, p.b, c.data(), n);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      int64_t ref = 0;
      for (int64_t q = 0; q < k; ++q) {
        const int64_t av = kind == gemm::AKind::u8 ? int64_t(uint8_t(a[size_t(i * k + q)])) : a[size_t(i * k + q)];
        ref += (av - zp) * w[size_t(j * k + q)];
      }
      if (c[size_t(i * n + j)] != int32_t(uint32_t(uint64_t(ref)))) {
        *why = fmt("M=%lld N=%lld K=%lld kind=%d zp=%d: C[%lld,%lld]=%d, expected %lld", (long long)m, (long long)n,
                   (long long)k, int(kind), zp, (long long)i, (long long)j, c[size_t(i * n + j)], (long long)ref);
        return false;
      }
    }
  return true;
}

void check_amx_gemm(Suite& s) {
  Tally t;
  Rng r(20260516);
  std::string why;
  edgepack::select_isa(Isa::avx512_amx);
  gemm::set_route(0, 0);  // every shape on the AMX kernel
  const Counters c0 = Counters::now();
  const int64_t ks[] = {1, 3, 4, 60, 63, 64, 65, 127, 128, 129, 200};
  const int64_t ns[] = {1, 15, 16, 17, 31, 32, 33, 48, 49, 64, 65, 100};
  for (int64_t m = 1; m <= 40; ++m)
    for (size_t ki = 0; ki < sizeof ks / sizeof ks[0]; ++ki)
      for (size_t ni = 0; ni < sizeof ns / sizeof ns[0]; ++ni) {
        // Every (M, K) and (M, N) pair, a third of the triples (the grid stays a few seconds
        // under the sanitizers).
        if ((m + ki + 2 * ni) % 3 != 0 && ni != ki % 12) continue;
        const int64_t k = ks[ki], n = ns[ni];
        ++t.cases;
        if (!gemm_ok(r, m, n, k, gemm::AKind::s8, 0, false, &why)) t.fail(why);
        if ((m + ki + ni) % 5 == 0) {  // uint8 with a zero point: XOR 0x80 and row_corr * colsum
          ++t.cases;
          if (!gemm_ok(r, m, n, k, gemm::AKind::u8, 131, false, &why)) t.fail(why);
        }
      }
  // Long K with extreme values: int32 sums that wrap, several 32-row blocks, many k steps.
  for (int64_t m : {1, 16, 33, 70}) {
    ++t.cases;
    if (!gemm_ok(r, m, 40, 4099, gemm::AKind::s8, 0, true, &why)) t.fail(why);
  }
  ++t.cases;
  if (!gemm_ok(r, 3, 20, 70000, gemm::AKind::s8, 0, true, &why)) t.fail(why);  // sums beyond 2^31
  // Threads: several pool sizes (tasks split over M and N) and concurrent callers.
  const int saved = edgepack::get_num_threads();
  for (int threads : {1, 2, 4}) {
    edgepack::set_num_threads(threads);
    for (const auto& d : {std::array<int64_t, 3>{160, 512, 320}, std::array<int64_t, 3>{47, 1000, 256},
                          std::array<int64_t, 3>{300, 96, 130}}) {
      ++t.cases;
      if (!gemm_ok(r, d[0], d[1], d[2], gemm::AKind::s8, 0, false, &why)) t.fail(fmt("threads=%d: %s", threads, why.c_str()));
    }
  }
  {
    std::vector<std::thread> callers;
    std::vector<std::string> fails(4);
    for (int i = 0; i < 4; ++i)
      callers.emplace_back([i, &fails] {
        Rng rr(77 + uint64_t(i));
        std::string w;
        for (int rep = 0; rep < 3; ++rep)
          if (!gemm_ok(rr, 96 + 17 * i, 200, 192 + 3 * i, gemm::AKind::s8, 0, false, &w) && fails[size_t(i)].empty())
            fails[size_t(i)] = w;
      });
    for (auto& th : callers) th.join();
    for (const auto& f : fails) {
      ++t.cases;
      if (!f.empty()) t.fail("concurrent caller: " + f);
    }
  }
  edgepack::set_num_threads(saved);
  const Counters c1 = Counters::now();
  if (kEmulated) {
    ++t.cases;
    if (c1.tdps <= c0.tdps) t.fail("the scalar tile model ran no TDPBSSD: the AMX kernel did not run");
    ++t.cases;
    if (c1.live != 0) t.fail(fmt("%lld thread(s) still hold a tile configuration after the calls", (long long)c1.live));
    ++t.cases;  // every task releases (a task may configure twice: full blocks, then the M tail)
    if (c1.releases <= c0.releases) t.fail("no TILERELEASE ran");
  }
  // The small-shape route: M = 1 and K < 17 run on avx512_vnni (no TDPBSSD), M = 2 on AMX; both exact.
  gemm::set_route(-1, -1);
  struct RouteCase {
    int64_t m, k;
    bool small;
  };
  for (const RouteCase& rc : {RouteCase{1, 300, true}, RouteCase{40, 16, true}, RouteCase{2, 300, false}, RouteCase{40, 17, false}}) {
    const Counters before = Counters::now();
    ++t.cases;
    if (gemm::routes_small(rc.m, rc.k) != rc.small) t.fail(fmt("routes_small(%lld, %lld) != %d", (long long)rc.m, (long long)rc.k, rc.small));
    ++t.cases;
    if (!gemm_ok(r, rc.m, 33, rc.k, gemm::AKind::s8, 0, false, &why)) t.fail("routed: " + why);
    if (kEmulated) {
      ++t.cases;
      const bool ran_amx = Counters::now().tdps > before.tdps;
      if (ran_amx == rc.small) t.fail(fmt("M=%lld K=%lld ran on %s", (long long)rc.m, (long long)rc.k, ran_amx ? "AMX" : "VNNI"));
    }
  }
  edgepack::select_isa(edgepack::best_isa());
  s.report(Isa::avx512_amx, "gemm_int8 M=1..40 grid", t.cases, t.failed, t.first);
}

// linear_int8 (dynamic and static) on the AMX kernel at every M tail: bit for bit the scalar
// path's output for none/relu, within the vector approximations' bound for the others.
void check_amx_linear(Suite& s) {
  Tally t;
  Rng r(515);
  for (int64_t m : {1, 2, 15, 16, 17, 31, 32, 33, 40})
    for (int64_t k : {5, 64, 100})
      for (int act = 0; act <= 4; ++act)
        for (int kind = 0; kind < 3; ++kind) {
          const int64_t n = 17 + 16 * ((m + k + act) % 3);
          std::vector<int8_t> w(size_t(n * k));
          for (auto& v : w) v = int8_t(r.range(-127, 127));
          ExactPacked p(w, n, k);
          std::vector<float> x(static_cast<size_t>(m * k)), ws(static_cast<size_t>(n)), bias(static_cast<size_t>(n));
          for (auto& v : x) v = r.uniform(-8.0f, 8.0f);
          for (auto& v : ws) v = r.uniform(0.001f, 0.02f);
          for (auto& v : bias) v = r.uniform(-1.0f, 1.0f);
          const gemm::Act a = gemm::Act(act);
          const float* bp = (act + kind) % 2 ? bias.data() : nullptr;
          const gemm::AKind ak = kind == 2 ? gemm::AKind::u8 : gemm::AKind::s8;
          const int32_t zp = kind == 2 ? 131 : -3;
          std::vector<uint8_t> q(size_t(m * k));
          gemm::quantize_static(x.data(), m, k, 0.0625f, ak, zp, q.data());
          auto run = [&](Isa isa, std::vector<float>* y) {
            edgepack::select_isa(isa);
            y->assign(size_t(m * n), -7.0f);
            if (kind == 0) return gemm::linear_dynamic(x.data(), m, k, p.b, ws.data(), bp, a, y->data(), n).ok();
            gemm::linear_static(q.data(), ak, zp, 0.0625f, m, k, p.b, ws.data(), bp, a, y->data(), n);
            return true;
          };
          std::vector<float> ref, y;
          run(Isa::scalar, &ref);
          ++t.cases;
          if (!run(Isa::avx512_amx, &y)) {
            t.fail("finite input reported as non-finite");
            continue;
          }
          const bool exact = a == gemm::Act::none || a == gemm::Act::relu;
          for (size_t e = 0; e < y.size(); ++e) {
            const float tol = exact ? 0.0f : 2e-6f * std::fabs(ref[e]) + 1e-6f;
            if (!(std::fabs(y[e] - ref[e]) <= tol)) {
              t.fail(fmt("M=%lld N=%lld K=%lld act=%d kind=%d: y[%zu]=%.9g, scalar %.9g", (long long)m, (long long)n,
                         (long long)k, act, kind, e, y[e], ref[e]));
              break;
            }
          }
        }
  edgepack::select_isa(edgepack::best_isa());
  s.report(Isa::avx512_amx, "linear_int8 M=1..40", t.cases, t.failed, t.first);
}

}  // namespace

void check_amx(Suite& s) {
  check_amx_detect(s);
  bool run = false;
  for (Isa isa : s.paths) run = run || isa == Isa::avx512_amx;
  if (!run) return;
  gemm::set_route(0, 0);
  check_amx_linear(s);
  check_amx_gemm(s);
  gemm::set_route(-1, -1);
}

}  // namespace selftest
