// Dispatch and thread-pool checks: the layer every kernel stands on.
#include <atomic>
#include <cstdint>
#include <memory>
#include <thread>
#include <vector>

#include "core/cpu_features.h"
#include "core/dispatch.h"
#include "core/thread_pool.h"
#include "selftest.h"

namespace selftest {
namespace {

using edgepack::Isa;

void check_dispatch(Suite& s) {
  Tally t;
  Isa order[edgepack::kNumIsas];
  const int n = edgepack::isa_order(order);
  ++t.cases;
  if (n < 1 || order[0] != Isa::scalar) t.fail("isa_order does not start with scalar");
  Isa last_avail = Isa::scalar;
  for (int i = 0; i < n; ++i) {
    const Isa isa = order[i];
    const char* name = edgepack::isa_name(isa);
    Isa back;
    ++t.cases;
    if (!name || !edgepack::isa_from_name(name, &back) || back != isa) t.fail(fmt("name round trip of path %d", i));
    ++t.cases;
    if (edgepack::isa_available(isa) && !edgepack::isa_built(isa)) t.fail(fmt("%s available but not built", name));
    if (!edgepack::isa_available(isa)) continue;
    last_avail = isa;
    ++t.cases;
    if (edgepack::table_for(isa).isa != isa) t.fail(fmt("table_for(%s).isa is wrong", name));
    ++t.cases;
    if (!edgepack::select_isa(isa) || edgepack::active().isa != isa) t.fail(fmt("select_isa(%s) did not take", name));
  }
  ++t.cases;
  if (!edgepack::isa_available(Isa::scalar)) t.fail("scalar not available");
  ++t.cases;
  if (edgepack::best_isa() != last_avail) t.fail("best_isa is not the strongest available path");
  Isa bogus;
  ++t.cases;
  if (edgepack::isa_from_name("sse9", &bogus)) t.fail("unknown name accepted");
  // A path this CPU or build lacks must be refused and leave the active table alone.
  for (int i = 0; i < edgepack::kNumIsas; ++i) {
    const Isa isa = static_cast<Isa>(i);
    if (edgepack::isa_available(isa)) continue;
    const Isa before = edgepack::active().isa;
    ++t.cases;
    if (edgepack::select_isa(isa) || edgepack::active().isa != before)
      t.fail(fmt("select_isa(%s) accepted an unavailable path", edgepack::isa_name(isa)));
  }
  const edgepack::CpuFeatures& f = edgepack::cpu_features();
#if defined(__aarch64__)
  ++t.cases;
  if (!f.neon) t.fail("aarch64 without neon");
  ++t.cases;
  if (edgepack::isa_built(Isa::neon_dotprod) && edgepack::isa_available(Isa::neon_dotprod) != f.dotprod)
    t.fail("neon_dotprod availability disagrees with HWCAP_ASIMDDP");
#elif defined(__x86_64__)
  ++t.cases;
  if (edgepack::isa_built(Isa::avx512_vnni) && edgepack::isa_available(Isa::avx512_vnni) != (f.avx512_vnni && f.avx512bw && f.avx512vl && f.avx512dq))
    t.fail("avx512_vnni availability disagrees with cpuid");
#endif
  (void)f;
  edgepack::select_isa(edgepack::best_isa());
  s.report("runtime", "dispatch", t.cases, t.failed, t.first);
}

// Every index runs exactly once, at any thread count, nested or not.
bool covers_once(int64_t n, int max_threads, std::string* why) {
  std::unique_ptr<std::atomic<int>[]> hits(new std::atomic<int>[n > 0 ? n : 1]);
  for (int64_t i = 0; i < n; ++i) hits[i].store(0);
  edgepack::parallel_for(n, [&](int64_t i) { hits[i].fetch_add(1, std::memory_order_relaxed); }, max_threads);
  for (int64_t i = 0; i < n; ++i)
    if (hits[i].load() != 1) {
      *why = fmt("n=%lld index %lld ran %d times", static_cast<long long>(n), static_cast<long long>(i), hits[i].load());
      return false;
    }
  return true;
}

void check_thread_pool(Suite& s) {
  Tally t;
  const int saved = edgepack::get_num_threads();
  const int64_t sizes[] = {0, 1, 2, 3, 7, 64, 1001};
  std::string why;
  for (int threads : {1, 2, 3, 5, 8}) {
    edgepack::set_num_threads(threads);
    ++t.cases;
    if (edgepack::get_num_threads() != threads) t.fail(fmt("set_num_threads(%d) not applied", threads));
    for (int64_t n : sizes)
      for (int max_threads : {0, 1, 2}) {
        ++t.cases;
        if (!covers_once(n, max_threads, &why)) t.fail(fmt("threads=%d max=%d: %s", threads, max_threads, why.c_str()));
      }
    // A parallel_for inside a task runs inline on that thread and still covers every index.
    std::atomic<int64_t> total{0};
    edgepack::parallel_for(9, [&](int64_t) {
      edgepack::parallel_for(11, [&](int64_t j) { total.fetch_add(j + 1, std::memory_order_relaxed); });
    });
    ++t.cases;
    if (total.load() != 9 * 66) t.fail(fmt("threads=%d nested sum %lld", threads, static_cast<long long>(total.load())));
  }
  edgepack::set_num_threads(0);  // clamps to 1
  ++t.cases;
  if (edgepack::get_num_threads() != 1) t.fail("set_num_threads(0) did not clamp to 1");

  // Several callers at once while another thread keeps resizing the pool: every call still
  // covers its range exactly once (calls that find the pool busy run on their own thread).
  std::atomic<bool> stop{false};
  std::atomic<int> bad{0};
  std::thread resizer([&] {
    for (int k = 0; !stop.load(); ++k) edgepack::set_num_threads(1 + k % 4);
  });
  std::vector<std::thread> callers;
  for (int c = 0; c < 4; ++c)
    callers.emplace_back([&, c] {
      std::string w;
      for (int r = 0; r < 150; ++r)
        if (!covers_once(17 + (c * 7 + r) % 50, 0, &w)) bad.fetch_add(1);
    });
  for (auto& th : callers) th.join();
  stop.store(true);
  resizer.join();
  t.cases += 4 * 150;
  if (bad.load()) t.fail(fmt("%d concurrent calls lost or repeated an index", bad.load()));
  edgepack::set_num_threads(saved);
  s.report("runtime", "thread_pool", t.cases, t.failed, t.first);
}

}  // namespace

void check_runtime(Suite& s) {
  check_dispatch(s);
  check_thread_pool(s);
}

}  // namespace selftest
