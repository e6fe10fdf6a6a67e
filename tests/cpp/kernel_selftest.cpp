// kernel_selftest: runs every built and available path of every kernel against the reference on
// an edge-case grid and prints one line per (path, kernel). No Python: it cross-builds for
// aarch64 and runs under qemu-user (scripts/test-aarch64.sh), and under ASan/UBSan
// (scripts/test-sanitizers.sh).
//
//   kernel_selftest [--expect-best ISA] [--expect-unavailable ISA]... [--only ISA] [-v]
//
// --expect-best: fail unless runtime detection picks ISA (how the qemu runs check getauxval).
// --expect-unavailable: fail if ISA is detected as runnable (e.g. neon_dotprod on cortex-a53).
// Exit status: 0 all pass, 1 a kernel mismatch, 2 a detection mismatch or bad usage, 3 a hang.
#include <atomic>
#include <chrono>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "core/cpu_features.h"
#include "core/dispatch.h"
#include "selftest.h"

namespace selftest {

std::string fmt(const char* f, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, f);
  std::vsnprintf(buf, sizeof buf, f, ap);
  va_end(ap);
  return buf;
}

}  // namespace selftest

namespace {

using edgepack::Isa;

int usage() {
  std::fprintf(stderr, "usage: kernel_selftest [--expect-best ISA] [--expect-unavailable ISA]... [--only ISA] [-v]\n");
  return 2;
}

bool parse_isa(const char* name, Isa* out) {
  if (edgepack::isa_from_name(name, out)) return true;
  std::fprintf(stderr, "kernel_selftest: unknown path '%s'\n", name);
  return false;
}

void print_features() {
  const edgepack::CpuFeatures& f = edgepack::cpu_features();
#if defined(__aarch64__)
  std::printf("arch:      aarch64\nfeatures:  neon=%d dotprod=%d i8mm=%d\n", f.neon, f.dotprod, f.i8mm);
#elif defined(__x86_64__)
  std::printf("arch:      x86_64\nfeatures:  avx2=%d fma=%d avx512f=%d avx512bw=%d avx512vl=%d avx512dq=%d avx512_vnni=%d\n",
              f.avx2, f.fma, f.avx512f, f.avx512bw, f.avx512vl, f.avx512dq, f.avx512_vnni);
  const char* amx = edgepack::isa_unavailable_reason(edgepack::Isa::avx512_amx);
#if defined(EDGEPACK_AMX_EMULATE)
  std::printf("amx:       %s (test build: the avx512_amx path runs on a scalar model of the tiles)\n", amx ? amx : "available");
#else
  std::printf("amx:       %s\n", amx ? amx : "available");
#endif
#else
  (void)f;
  std::printf("arch:      other\n");
#endif
}

}  // namespace

int main(int argc, char** argv) {
  Isa expect_best{};
  bool have_expect_best = false;
  Isa only{};
  bool have_only = false;
  Isa unavailable[edgepack::kNumIsas];
  int n_unavailable = 0;
  bool verbose = false;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--expect-best") && i + 1 < argc) {
      if (!parse_isa(argv[++i], &expect_best)) return 2;
      have_expect_best = true;
    } else if (!std::strcmp(argv[i], "--expect-unavailable") && i + 1 < argc) {
      if (n_unavailable == edgepack::kNumIsas || !parse_isa(argv[++i], &unavailable[n_unavailable++])) return 2;
    } else if (!std::strcmp(argv[i], "--only") && i + 1 < argc) {
      if (!parse_isa(argv[++i], &only)) return 2;
      have_only = true;
    } else if (!std::strcmp(argv[i], "-v")) {
      verbose = true;
    } else {
      return usage();
    }
  }

  // A hang (a lost wake-up in the pool, a kernel looping on a bad size) must fail the run, not
  // stall CI: qemu is slow, so the budget is generous.
  const char* wd = std::getenv("EDGEPACK_SELFTEST_TIMEOUT");
  const int timeout_s = wd ? std::atoi(wd) : 900;
  std::thread([timeout_s] {
    std::this_thread::sleep_for(std::chrono::seconds(timeout_s));
    std::fprintf(stderr, "kernel_selftest: no result after %d s (hang?)\n", timeout_s);
    std::fflush(stdout);
    std::_Exit(3);
  }).detach();

  print_features();
  Isa order[edgepack::kNumIsas];
  const int n = edgepack::isa_order(order);
  std::printf("built:    ");
  for (int i = 0; i < n; ++i)
    if (edgepack::isa_built(order[i])) std::printf(" %s", edgepack::isa_name(order[i]));
  std::printf("\navailable:");
  for (int i = 0; i < n; ++i)
    if (edgepack::isa_available(order[i])) std::printf(" %s", edgepack::isa_name(order[i]));
  std::printf("\nselected:  %s\n", edgepack::isa_name(edgepack::best_isa()));
  for (int i = 0; i < n; ++i)
    if (edgepack::isa_built(order[i]) && !edgepack::isa_available(order[i]))
      std::printf("not run:   %s (built, but this CPU lacks it)\n", edgepack::isa_name(order[i]));

  int detect_errors = 0;
  if (have_expect_best && edgepack::best_isa() != expect_best) {
    std::printf("DETECTION MISMATCH: selected %s, expected %s\n", edgepack::isa_name(edgepack::best_isa()),
                edgepack::isa_name(expect_best));
    ++detect_errors;
  }
  for (int i = 0; i < n_unavailable; ++i)
    if (edgepack::isa_available(unavailable[i])) {
      std::printf("DETECTION MISMATCH: %s is available, expected it absent\n", edgepack::isa_name(unavailable[i]));
      ++detect_errors;
    }

  selftest::Suite suite;
  suite.verbose = verbose;
  for (int i = 0; i < n; ++i) {
    if (!edgepack::isa_available(order[i])) continue;
    if (have_only && order[i] != only && order[i] != Isa::scalar) continue;
    suite.paths.push_back(order[i]);
  }
  if (have_only && !edgepack::isa_available(only)) {
    std::printf("--only %s: not available on this CPU\n", edgepack::isa_name(only));
    return 2;
  }

  selftest::check_runtime(suite);
  selftest::check_quantize(suite);
  selftest::check_gemm(suite);
  selftest::check_spmm(suite);
  selftest::check_conv(suite);
  selftest::check_conv_f32(suite);

  std::printf("%d lines, %d failed%s\n", suite.lines, suite.failures, detect_errors ? ", detection mismatch" : "");
  if (detect_errors) return 2;
  return suite.failures ? 1 : 0;
}
