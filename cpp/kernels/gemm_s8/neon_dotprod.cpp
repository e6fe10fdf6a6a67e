// int8 GEMM on ARMv8.2 dot-product cores (Cortex-A55/A76/X1, Neoverse, Apple): sdot on the c4
// packed layout. s8 x s8 is native, so activations stay signed (a_unsigned = false) and need no
// +128 shift.
//
// One 64-byte k-group of a panel is four q-registers, each 4 columns x 4 k; a row's 4 activation
// bytes for that group are one 32-bit lane, so vdotq_laneq_s32 does 16 MACs per instruction and
// one 16-byte load of A feeds four groups. Tile: 4 rows x 16 columns = 16 accumulators.
#include <arm_neon.h>

#include <cstdint>
#include <cstring>

#include "core/dispatch.h"
#include "kernels/gemm_s8/gemm_s8.h"

extern "C" float erff(float);
extern "C" float tanhf(float);
extern "C" float expf(float);

namespace edgepack::neon_dotprod {
namespace {

using gemm::Act;
using gemm::kKU;
using gemm::kNR;

#include "kernels/gemm_s8/neon_dot_tile.inc"
#include "kernels/gemm_s8/neon_gemm.inc"

double peak(double seconds) {
  int32x4_t acc[8];
  for (int i = 0; i < 8; ++i) acc[i] = vdupq_n_s32(i);
  int8x16_t a = vdupq_n_s8(1), b = vdupq_n_s8(2);
  const double start = gemm::now_seconds();
  int64_t iters = 0;
  double el = 0;
  do {
    for (int i = 0; i < 4096; ++i) {
      for (int j = 0; j < 8; ++j) acc[j] = vdotq_s32(acc[j], a, b);
      __asm__ volatile("" : "+w"(a), "+w"(b));  // keeps the loop from being folded away
    }
    iters += 4096;
    el = gemm::now_seconds() - start;
  } while (el < seconds);
  int32x4_t s = acc[0];
  for (int j = 1; j < 8; ++j) s = vaddq_s32(s, acc[j]);
  volatile int32_t sink = vgetq_lane_s32(s, 0);
  (void)sink;
  return 2.0 * double(iters) * 8 * 16 / el * 1e-9;
}

}  // namespace

void register_gemm_s8(KernelTable& t) {
  t.gemm.block = block;
  t.gemm.peak = peak;
  t.gemm.a_unsigned = false;
  t.gemm.mr = kRows;
  t.gemm.np = 1;
  // quant_rows: the neon one (registered before this path in the table).
}

}  // namespace edgepack::neon_dotprod
