// Conv, ARMv8-A NEON without dot product (Cortex-A53/A72): the implicit GEMM on gemm_s8's vmull/vpadal tile (2 rows x 16 columns; uint8 activations XOR 0x80); depthwise and the epilogue from neon_conv.inc.
#include <arm_neon.h>

#include <cstdint>
#include <cstring>

#include "core/dispatch.h"
#include "kernels/conv_s8/conv_s8.h"

namespace edgepack::neon {
namespace {

#include "kernels/gemm_s8/neon_tile.inc"
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

}  // namespace edgepack::neon
