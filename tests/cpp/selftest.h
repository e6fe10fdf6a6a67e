// A tiny harness for the C++ kernel self-test (no Python, no test framework, so it cross-builds
// for aarch64 with nothing but the cross compiler and runs under qemu-user).
//
// Each check file defines a `void check_<area>(Suite&)` that, for every available path, runs
// that path's kernels through edgepack::table_for(isa) on an edge-case grid and compares them with
// an independent reference (integer kernels: exact int64 reference; float kernels: the scalar
// path and a double reference within a stated tolerance).
#pragma once
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "core/dispatch.h"

namespace selftest {

// Deterministic generator (splitmix64): the same cases on every host and under qemu.
struct Rng {
  uint64_t s;
  explicit Rng(uint64_t seed) : s(seed) {}
  uint64_t next() {
    uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  // Uniform in [lo, hi].
  int64_t range(int64_t lo, int64_t hi) { return lo + static_cast<int64_t>(next() % static_cast<uint64_t>(hi - lo + 1)); }
  float uniform(float lo, float hi) {
    return lo + (hi - lo) * static_cast<float>(next() >> 40) * (1.0f / 16777216.0f);
  }
};

// Sizes that catch tails: 0, 1, primes, around every vector width we use (4, 8, 16, 32, 64), large.
inline const std::vector<int64_t>& edge_sizes() {
  static const std::vector<int64_t> s = {0, 1, 2, 3, 4, 5, 7, 8, 13, 15, 16, 17, 31, 32, 33, 47, 63, 64, 65, 127, 131, 257};
  return s;
}

struct Suite {
  int failures = 0;
  int lines = 0;
  bool verbose = false;
  std::vector<edgepack::Isa> paths;  // available paths under test, scalar first

  // One line per (path, kernel): what the issue asks the self-test to print.
  void report(edgepack::Isa isa, const char* kernel, int64_t cases, int64_t failed, const std::string& first_failure) {
    report(edgepack::isa_name(isa), kernel, cases, failed, first_failure);
  }
  // Checks of the shared layer (dispatch, thread pool) are labelled "runtime" instead of a path.
  void report(const char* label, const char* kernel, int64_t cases, int64_t failed, const std::string& first_failure) {
    ++lines;
    if (failed) ++failures;
    std::printf("%-13s %-26s %s  %lld cases", label, kernel, failed ? "FAIL" : "pass",
                static_cast<long long>(cases));
    if (failed) std::printf(", %lld failed; first: %s", static_cast<long long>(failed), first_failure.c_str());
    std::printf("\n");
    std::fflush(stdout);
  }
};

// Counts cases and keeps the first failure's description for one (path, kernel) line.
struct Tally {
  int64_t cases = 0, failed = 0;
  std::string first;
  void fail(const std::string& what) {
    if (!failed) first = what;
    ++failed;
  }
};

std::string fmt(const char* f, ...) __attribute__((format(printf, 1, 2)));
// The AMX path's detector, and its kernels wherever the path is available (check_amx.cpp; called
// by check_gemm).
void check_amx(Suite& s);

void check_runtime(Suite& s);
void check_quantize(Suite& s);
void check_gemm(Suite& s);
void check_spmm(Suite& s);
void check_conv(Suite& s);
void check_conv_f32(Suite& s);

}  // namespace selftest
