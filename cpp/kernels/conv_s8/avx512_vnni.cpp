// Conv, AVX-512 VNNI: the implicit GEMM on vpdpbusd (8 x 48 tile; int8 activations XOR 0x80 in the kernel); depthwise
// and the epilogue from zmm_conv.inc.
#include <immintrin.h>

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "core/dispatch.h"
#include "kernels/conv_s8/conv_s8.h"

namespace edgepack::avx512_vnni {
namespace {

constexpr int kMR = 8, kNP = 3;
constexpr int kPrefetch = 0;

#include "kernels/conv_s8/zmm_conv.inc"

}  // namespace

void register_conv_s8(KernelTable& t) {
  t.conv_s8.igemm = igemm;
  t.conv_s8.dw = dw;
  t.conv_s8.a_unsigned = kDotUnsigned;
  t.conv_s8.mr = kMR;
  t.conv_s8.np = kNP;
  t.conv_s8.dw_ct = kDwChannels;
}

}  // namespace edgepack::avx512_vnni
