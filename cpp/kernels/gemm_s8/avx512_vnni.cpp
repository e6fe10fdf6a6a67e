// AVX-512 VNNI path: vpdpbusd (u8 x s8, 4 products into each int32 lane, wrapping) over the
// packed [16][4] rows. Activations arrive as u = a ^ 0x80 = a + 128; the driver's row_corr of
// -128 (times the packed column sums) is folded into the accumulator initialisation, so the
// K loop is nothing but loads, broadcasts and vpdpbusd.
#include <immintrin.h>

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "core/dispatch.h"
#include "kernels/gemm_s8/gemm_s8.h"

namespace edgepack::avx512_vnni {
namespace {

struct Dot {
  __m512i a;
  inline __attribute__((always_inline)) void load(const uint8_t* a4) {
    int32_t v;
    std::memcpy(&v, a4, 4);
    a = _mm512_set1_epi32(v);
  }
  inline __attribute__((always_inline)) __m512i mac(__m512i acc, __m512i b) const {
    return _mm512_dpbusd_epi32(acc, a, b);
  }
};

// 8 x 48: 24 accumulators + 3 B rows + 1 broadcast of 32 zmm. Small M: 8-16 chains.
constexpr int kMR = 8, kNP = 3;
constexpr int kSmallNP[5] = {0, 8, 6, 4, 4};
constexpr int kPrefetch = 1024;

#include "kernels/gemm_s8/zmm_kernel.inc"

// Independent vpdpbusd chains on registers only: the dot-product issue rate of this core.
double peak(double seconds) {
  __m512i acc[12];
  for (int i = 0; i < 12; ++i) acc[i] = _mm512_set1_epi32(i);
  const __m512i a = _mm512_set1_epi8(1), b = _mm512_set1_epi8(2);
  int64_t n = 0;
  const double start = gemm::now_seconds();
  double el = 0;
  do {
    for (int it = 0; it < 20000; ++it) {
#pragma GCC unroll 12
      for (int i = 0; i < 12; ++i) acc[i] = _mm512_dpbusd_epi32(acc[i], a, b);
      __asm__ __volatile__("" : "+v"(acc[0]), "+v"(acc[1]), "+v"(acc[2]), "+v"(acc[3]), "+v"(acc[4]),
                           "+v"(acc[5]), "+v"(acc[6]), "+v"(acc[7]), "+v"(acc[8]), "+v"(acc[9]),
                           "+v"(acc[10]), "+v"(acc[11]));
    }
    n += 20000LL * 12 * 64;
    el = gemm::now_seconds() - start;
  } while (el < seconds);
  __m512i s = acc[0];
  for (int i = 1; i < 12; ++i) s = _mm512_add_epi32(s, acc[i]);
  volatile int sink = _mm512_reduce_add_epi32(s);
  (void)sink;
  return 2.0 * static_cast<double>(n) / el * 1e-9;
}

}  // namespace

void register_gemm_s8(KernelTable& t) {
  t.gemm.block = block;
  t.gemm.quant_rows = quant_rows;
  t.gemm.peak = peak;
  t.gemm.a_unsigned = true;
  t.gemm.mr = kMR;
  t.gemm.np = kNP;
}

}  // namespace edgepack::avx512_vnni
