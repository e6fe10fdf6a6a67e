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

// 8 x 48: 24 accumulators + 3 B rows + 1 broadcast of 32 zmm. Small M (1-4 rows): 4 panels per
// tile (measured best of 2/3/4/6/8 at 1x768x768 and 1x4096x4096 on Zen 5).
constexpr int kMR = 8, kNP = 3;
constexpr int kSmallNP[5] = {0, 4, 4, 4, 4};
constexpr int kPrefetch = 0;  // software prefetch of B for small M: measured slower than none (Zen 5)

#include "kernels/gemm_s8/zmm_kernel.inc"

// Independent vpdpbusd chains on registers only: the dot-product issue rate of this core.
// One timed chunk of 24 independent vpdpbusd chains on fixed registers (written in asm so
// that no compiler spills or hoists anything: this is a pure issue-rate measurement).
constexpr int kChains = 24;
__attribute__((noinline)) void peak_chunk(int64_t iters) {
  __asm__ __volatile__(
      "vpternlogd $0xff, %%zmm31, %%zmm31, %%zmm31\n\t"
      "vpabsb %%zmm31, %%zmm30\n\t"
      "1:\n\t"
      "vpdpbusd %%zmm31, %%zmm30, %%zmm0\n\t"
      "vpdpbusd %%zmm31, %%zmm30, %%zmm1\n\t"
      "vpdpbusd %%zmm31, %%zmm30, %%zmm2\n\t"
      "vpdpbusd %%zmm31, %%zmm30, %%zmm3\n\t"
      "vpdpbusd %%zmm31, %%zmm30, %%zmm4\n\t"
      "vpdpbusd %%zmm31, %%zmm30, %%zmm5\n\t"
      "vpdpbusd %%zmm31, %%zmm30, %%zmm6\n\t"
      "vpdpbusd %%zmm31, %%zmm30, %%zmm7\n\t"
      "vpdpbusd %%zmm31, %%zmm30, %%zmm8\n\t"
      "vpdpbusd %%zmm31, %%zmm30, %%zmm9\n\t"
      "vpdpbusd %%zmm31, %%zmm30, %%zmm10\n\t"
      "vpdpbusd %%zmm31, %%zmm30, %%zmm11\n\t"
      "vpdpbusd %%zmm31, %%zmm30, %%zmm12\n\t"
      "vpdpbusd %%zmm31, %%zmm30, %%zmm13\n\t"
      "vpdpbusd %%zmm31, %%zmm30, %%zmm14\n\t"
      "vpdpbusd %%zmm31, %%zmm30, %%zmm15\n\t"
      "vpdpbusd %%zmm31, %%zmm30, %%zmm16\n\t"
      "vpdpbusd %%zmm31, %%zmm30, %%zmm17\n\t"
      "vpdpbusd %%zmm31, %%zmm30, %%zmm18\n\t"
      "vpdpbusd %%zmm31, %%zmm30, %%zmm19\n\t"
      "vpdpbusd %%zmm31, %%zmm30, %%zmm20\n\t"
      "vpdpbusd %%zmm31, %%zmm30, %%zmm21\n\t"
      "vpdpbusd %%zmm31, %%zmm30, %%zmm22\n\t"
      "vpdpbusd %%zmm31, %%zmm30, %%zmm23\n\t"
      "dec %0\n\t"
      "jnz 1b\n\t"
      : "+r"(iters)
      :
      : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15", "xmm16", "xmm17", "xmm18", "xmm19", "xmm20", "xmm21", "xmm22", "xmm23", "xmm24", "xmm25", "xmm26", "xmm27", "xmm28", "xmm29", "xmm30", "xmm31", "cc");
}

// 24 chains: enough to cover latency x issue width of cores that run two 512-bit VNNI ops per
// cycle (Zen 5, Intel server cores) as well as double-pumped ones (Zen 4).
double peak(double seconds) {
  int64_t n = 0;
  const double start = gemm::now_seconds();
  double el = 0;
  do {
    peak_chunk(20000);
    n += 20000LL * kChains * 64;
    el = gemm::now_seconds() - start;
  } while (el < seconds);
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
