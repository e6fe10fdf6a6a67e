// AVX-512BW path (no VNNI), exact: vpmaddubsw multiplies unsigned by signed bytes and adds
// pairs with int16 saturation, which 255*127*2 would overflow. Moving the sign of a onto w
// keeps it exact: a*w = |a| * (sign(a) w), |a| <= 128 as an unsigned byte (-128 -> 0x80 = 128)
// and sign(a) w in [-127, 127] because packed weights never hold -128; a pair is at most
// 2*128*127 = 32512 < 32767. vpmaddwd by ones then widens the pairs to int32 exactly.
// AVX-512 has no vpsignb: blend w and -w under the mask of negative a bytes (vpmovb2m, vpblendmb).
#include <immintrin.h>

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "core/dispatch.h"
#include "kernels/gemm_s8/gemm_s8.h"

namespace edgepack::avx512 {
namespace {

// 6 x 48: 18 accumulators + 3 B rows and their negations + |a| + a temporary + ones.
constexpr int kMR = 6, kNP = 3;
constexpr int kSmallNP[5] = {0, 8, 6, 4, 4};
constexpr int kPrefetch = 0;  // software prefetch of B for small M: measured slower than none (Zen 5)

#include "kernels/gemm_s8/zmm_kernel.inc"

// One timed chunk of the sign-trick sequence (blend in -w where a < 0, vpmaddubsw, vpmaddwd by
// ones, vpaddd) on 8 chains with fixed registers, plus the per-row |a| and sign mask: the
// instruction mix of the GEMM loop, in asm so nothing is hoisted or spilled.
constexpr int kChains = 8;
__attribute__((noinline)) void peak_chunk(int64_t iters) {
  __asm__ __volatile__(
      "vpternlogd $0xff, %%zmm28, %%zmm28, %%zmm28\n\t"
      "vpabsw %%zmm28, %%zmm28\n\t"
      "vpxord %%zmm31, %%zmm31, %%zmm31\n\t"
      "vpxord %%zmm29, %%zmm29, %%zmm29\n\t"
      "vpbroadcastb %%xmm28, %%zmm8\n\t"
      "vpsubb %%zmm8, %%zmm31, %%zmm16\n\t"
      "vpbroadcastb %%xmm28, %%zmm9\n\t"
      "vpsubb %%zmm9, %%zmm31, %%zmm17\n\t"
      "vpbroadcastb %%xmm28, %%zmm10\n\t"
      "vpsubb %%zmm10, %%zmm31, %%zmm18\n\t"
      "vpbroadcastb %%xmm28, %%zmm11\n\t"
      "vpsubb %%zmm11, %%zmm31, %%zmm19\n\t"
      "vpbroadcastb %%xmm28, %%zmm12\n\t"
      "vpsubb %%zmm12, %%zmm31, %%zmm20\n\t"
      "vpbroadcastb %%xmm28, %%zmm13\n\t"
      "vpsubb %%zmm13, %%zmm31, %%zmm21\n\t"
      "vpbroadcastb %%xmm28, %%zmm14\n\t"
      "vpsubb %%zmm14, %%zmm31, %%zmm22\n\t"
      "vpbroadcastb %%xmm28, %%zmm15\n\t"
      "vpsubb %%zmm15, %%zmm31, %%zmm23\n\t"
      "1:\n\t"
      "vpaddb %%zmm28, %%zmm29, %%zmm29\n\t"
      "vpabsb %%zmm29, %%zmm30\n\t"
      "vpmovb2m %%zmm29, %%k1\n\t"
      "vpblendmb %%zmm16, %%zmm8, %%zmm24%{%%k1%}\n\t"
      "vpmaddubsw %%zmm24, %%zmm30, %%zmm24\n\t"
      "vpmaddwd %%zmm28, %%zmm24, %%zmm24\n\t"
      "vpaddd %%zmm24, %%zmm0, %%zmm0\n\t"
      "vpblendmb %%zmm17, %%zmm9, %%zmm25%{%%k1%}\n\t"
      "vpmaddubsw %%zmm25, %%zmm30, %%zmm25\n\t"
      "vpmaddwd %%zmm28, %%zmm25, %%zmm25\n\t"
      "vpaddd %%zmm25, %%zmm1, %%zmm1\n\t"
      "vpblendmb %%zmm18, %%zmm10, %%zmm26%{%%k1%}\n\t"
      "vpmaddubsw %%zmm26, %%zmm30, %%zmm26\n\t"
      "vpmaddwd %%zmm28, %%zmm26, %%zmm26\n\t"
      "vpaddd %%zmm26, %%zmm2, %%zmm2\n\t"
      "vpblendmb %%zmm19, %%zmm11, %%zmm27%{%%k1%}\n\t"
      "vpmaddubsw %%zmm27, %%zmm30, %%zmm27\n\t"
      "vpmaddwd %%zmm28, %%zmm27, %%zmm27\n\t"
      "vpaddd %%zmm27, %%zmm3, %%zmm3\n\t"
      "vpblendmb %%zmm20, %%zmm12, %%zmm24%{%%k1%}\n\t"
      "vpmaddubsw %%zmm24, %%zmm30, %%zmm24\n\t"
      "vpmaddwd %%zmm28, %%zmm24, %%zmm24\n\t"
      "vpaddd %%zmm24, %%zmm4, %%zmm4\n\t"
      "vpblendmb %%zmm21, %%zmm13, %%zmm25%{%%k1%}\n\t"
      "vpmaddubsw %%zmm25, %%zmm30, %%zmm25\n\t"
      "vpmaddwd %%zmm28, %%zmm25, %%zmm25\n\t"
      "vpaddd %%zmm25, %%zmm5, %%zmm5\n\t"
      "vpblendmb %%zmm22, %%zmm14, %%zmm26%{%%k1%}\n\t"
      "vpmaddubsw %%zmm26, %%zmm30, %%zmm26\n\t"
      "vpmaddwd %%zmm28, %%zmm26, %%zmm26\n\t"
      "vpaddd %%zmm26, %%zmm6, %%zmm6\n\t"
      "vpblendmb %%zmm23, %%zmm15, %%zmm27%{%%k1%}\n\t"
      "vpmaddubsw %%zmm27, %%zmm30, %%zmm27\n\t"
      "vpmaddwd %%zmm28, %%zmm27, %%zmm27\n\t"
      "vpaddd %%zmm27, %%zmm7, %%zmm7\n\t"
      "dec %0\n\t"
      "jnz 1b\n\t"
      : "+r"(iters)
      :
      : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15", "xmm16", "xmm17", "xmm18", "xmm19", "xmm20", "xmm21", "xmm22", "xmm23", "xmm24", "xmm25", "xmm26", "xmm27", "xmm28", "xmm29", "xmm30", "xmm31", "k1", "cc");
}

double peak(double seconds) {
  int64_t n = 0;
  const double start = gemm::now_seconds();
  double el = 0;
  do {
    peak_chunk(10000);
    n += 10000LL * kChains * 64;
    el = gemm::now_seconds() - start;
  } while (el < seconds);
  return 2.0 * static_cast<double>(n) / el * 1e-9;
}

}  // namespace

void register_gemm_s8(KernelTable& t) {
  t.gemm.block = block;
  t.gemm.quant_rows = quant_rows;
  t.gemm.peak = peak;
  t.gemm.a_unsigned = false;
  t.gemm.mr = kMR;
  t.gemm.np = kNP;
}

}  // namespace edgepack::avx512
