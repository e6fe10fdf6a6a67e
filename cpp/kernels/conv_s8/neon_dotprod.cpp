// Conv, ARMv8.2 dot product (Cortex-A55/A76, Neoverse, Apple): the implicit GEMM on gemm_s8's sdot tile (4 rows x 16 columns); depthwise and the epilogue from neon_conv.inc.
#include <arm_neon.h>

#include <cstdint>
#include <cstring>

#include "core/dispatch.h"
#include "kernels/conv_s8/conv_s8.h"

namespace edgepack::neon_dotprod {
namespace {

#include "kernels/gemm_s8/neon_dot_tile.inc"
#include "kernels/conv_s8/neon_conv.inc"

}  // namespace

void register_conv_s8(KernelTable& t) {
  t.conv_s8.igemm = igemm;
  t.conv_s8.dw = dw;
  t.conv_s8.a_unsigned = false;
  t.conv_s8.mr = kTileRows;
  t.conv_s8.np = 1;
  t.conv_s8.dw_ct = 16;
}

}  // namespace edgepack::neon_dotprod
