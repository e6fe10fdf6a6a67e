// Kernel contract for the conv_s8 area: int8 2-D convolution, NHWC, exact int32 accumulation
// and one fused epilogue. Declarations only: this header is included by ISA translation units.
//
// Activations x: NHWC bytes, uint8 or int8, one (scale, zero point) per tensor; padding is the
// zero point (so it contributes exactly 0). Weights: int8 [Cout, Cin/groups, KH, KW] in
// [-127, 127], one scale per output channel. For output pixel m and channel n the kernels
// compute, exactly (wrapping int32, exact whenever the true sum fits int32):
//
//   acc[m][n] = sum_{kh, kw, c} (x[m's window](kh, kw, c) - zp) * w[n][c][kh][kw]
//
// Three routes share the gemm_s8 packing and register tiles (kernels/gemm_s8/*_tile.inc):
//   direct   1x1, stride 1, no padding: a GEMM over N*OH*OW rows read in place;
//   igemm    any kernel: K ordered (kh, kw, c), each tap's Cg channels padded to cp = round_up(Cg, 4)
//            (zero weights), A rows found through an indirection buffer of per-tap offsets built once
//            per input shape (-1: a zero-point row); never an im2col copy;
//            when Cg % 4 != 0 the input is first copied once into a channel-padded layout
//            (pixel stride groups * cp, pad bytes = zp) so a 4-byte group never leaves its pixel;
//   im2row   shallow inputs (Cg <= 4, more than one tap: a 3-channel first layer): per-tap padding
//            would waste up to 3/4 of the MACs and give one k group per tap, so each task copies
//            its rows' windows (K = taps * Cg, padded to 4 at the end) into a per-thread buffer
//            and runs the direct route on it;
//   depthwise groups == Cin == Cout: channels in vector lanes, weights [taps][cpad] int8.
// The activation value shift of the unsigned-times-signed dot products (XOR 0x80) and the zero
// point are folded into the accumulator's start: acc = corr * colsum[n] + sum A'.W.
//
// Epilogue (one definition for every route and path; no FMA contraction, so the float steps
// give the same bits everywhere):
//   y = (float(acc) * x_scale) * w_scale[n] + bias[n] + residual[m][n]     (left to right)
//   y = act(y)   relu max(y, 0) | clip min(max(y, p0), p1) | hardsigmoid min(max(y*p0 + p1, 0), 1)
//                | hardswish y * hardsigmoid_{1/6, 1/2}(y) | leakyrelu y < 0 ? y*p0 : y
//                | sigmoid 1 / (1 + exp(-y)) | silu y / (1 + exp(-y))
//   output: float32 y; or int32 acc; or q = round_half_even(clamp(y * inv_out_scale, qmin - zp,
//           qmax - zp)) + zp as uint8/int8 bytes (the reciprocal product of fp32 requantization).
// max(a, b) is a > b ? a : b and min(a, b) is a < b ? a : b (the x86 semantics, reproduced on
// every path, so a NaN from a residual becomes the bound on every path alike). exp is the
// degree-6 polynomial of kernels/common/vexp_*.inc; the scalar reference evaluates the same
// steps with std::fma, so sigmoid and silu are also bit-identical across paths.
#pragma once
#include <cstddef>
#include <cstdint>

#include "kernels/gemm_s8/gemm_s8.h"

namespace edgepack {

namespace conv {
enum class Act : int32_t { none = 0, relu = 1, clip = 2, hardsigmoid = 3, hardswish = 4, leakyrelu = 5, sigmoid = 6, silu = 7 };
enum class Out : int32_t { i32 = 0, f32 = 1, u8 = 2, s8 = 3 };
}  // namespace conv

// The epilogue of one call. Output rows are pixels (N*OH*OW), row stride ldy elements.
struct ConvEpi {
  float x_scale = 1.0f;
  const float* w_scale = nullptr;   // [Cout]
  const float* bias = nullptr;      // [Cout] or nullptr
  const float* residual = nullptr;  // [rows][ldy] float32 or nullptr
  conv::Act act = conv::Act::none;
  float p0 = 0.0f, p1 = 0.0f;       // activation parameters
  conv::Out out = conv::Out::f32;
  void* y = nullptr;
  int64_t ldy = 0;
  float inv_out_scale = 1.0f;       // quantized outputs
  int32_t out_zp = 0;
  float qlo = 0.0f, qhi = 0.0f;     // qmin - zp, qmax - zp
};

// One group of an igemm / direct convolution as a kernel sees it.
struct IgemmArgs {
  const uint8_t* x = nullptr;       // input (or its channel-padded copy)
  int64_t img_stride = 0;           // bytes per image
  int64_t rows_per_img = 0;         // OH * OW
  const int32_t* ind = nullptr;     // [OH*OW][taps] byte offsets from the image base, -1: zero point;
                                    // nullptr: direct route, row m at x + m * pix_stride
  int64_t pix_stride = 0;           // direct route: bytes between rows
  const uint8_t* zbuf = nullptr;    // >= cp bytes of the zero point
  int64_t taps = 1;                 // KH * KW
  int64_t cp = 4;                   // bytes per tap, a multiple of 4
  int64_t goff = 0;                 // byte offset of this group's channels in a pixel
  int64_t m = 0;                    // rows = N * OH * OW
  bool xor80 = false;               // flip bit 7 of every A byte (input format != path's A format)
  int32_t corr = 0;                 // accumulator start = corr * colsum[n]
  PackedB b;                        // this group's weights: n = Cout/groups, k = taps * cp
  int64_t n_off = 0;                // first output channel of this group
  int64_t out_row0 = 0;             // output row of A row 0 (im2row: a task's rows start at 0)
  const ConvEpi* epi = nullptr;
};
// Rows [m0, m1) x panels [p0, p1) of one group, over all of K. Called concurrently on disjoint blocks.
using IgemmBlockFn = void (*)(const IgemmArgs& a, int64_t m0, int64_t m1, int64_t p0, int64_t p1);

// One depthwise call (one image at a time through `x`).
struct DwArgs {
  const uint8_t* x = nullptr;       // one image, NHWC
  int64_t h = 0, w = 0, c = 0;
  int64_t oh = 0, ow = 0;
  int32_t kh = 1, kw = 1, sh = 1, sw = 1, dh = 1, dw = 1, pt = 0, pl = 0;
  const int8_t* wt = nullptr;       // [kh*kw][cpad] weights
  int64_t cpad = 0;
  const int32_t* init = nullptr;    // [cpad] accumulator start: -zp * sum_t w[t][c]
  const int32_t* wsum = nullptr;    // [cpad] sum_t w[t][c]
  const uint8_t* zbuf = nullptr;    // >= cpad bytes of the zero point
  bool x_unsigned = false;
  int64_t row0 = 0;                 // output row (pixel) index of this image's first pixel
  const ConvEpi* epi = nullptr;
};
// Output rows [oh0, oh1) x channels [c0, c1) of the image (c0 a multiple of ConvS8Ops::dw_ct).
using DwRowsFn = void (*)(const DwArgs& a, int64_t oh0, int64_t oh1, int64_t c0, int64_t c1);

struct ConvS8Ops {
  IgemmBlockFn igemm = nullptr;
  DwRowsFn dw = nullptr;
  bool a_unsigned = false;  // A byte format of igemm (as GemmOps::a_unsigned)
  int32_t mr = 1, np = 1;   // igemm register tile: rows x 16-column panels
  int32_t dw_ct = 16;       // depthwise channel tile
};

// ---- driver (cpp/kernels/conv_s8/driver.cpp): baseline code, used by the bindings -----------
namespace conv {

struct Geom {
  int64_t cin = 0, cout = 0, groups = 1, kh = 1, kw = 1;
  int64_t sh = 1, sw = 1, dh = 1, dw = 1;
  int64_t pt = 0, pl = 0, pb = 0, pr = 0;
};

// Bytes of packed storage for weights of this geometry, and the cp / cpad of its layout.
struct Layout {
  bool depthwise = false, direct = false, padded_copy = false, im2row = false;
  int64_t cg = 0, coutg = 0, taps = 0, cp = 0, kdim = 0;   // kdim = taps * cp (im2row: round_up(taps * cg, 4))
  int64_t group_bytes = 0, group_colsum = 0;               // per group (igemm)
  int64_t cpad = 0;                                        // depthwise
  int64_t data_bytes = 0, sum_len = 0;                     // total int8 bytes, int32 count
};
Layout layout(const Geom& g);

// Packs w (int8 [Cout][Cin/groups][KH][KW], C order) into data (64-byte aligned, layout.data_bytes)
// and sums (layout.sum_len int32: per group column sums, or the depthwise per-channel tap sums).
// out_of_range with the flat index of the first -128.
Status pack(const Geom& g, const int8_t* w, int8_t* data, int32_t* sums);
// The inverse: w (int8 [Cout][Cin/groups][KH][KW]).
void unpack(const Geom& g, const int8_t* data, int8_t* w);

// Output size, or -1 when the dilated kernel does not fit the padded input.
int64_t out_size(int64_t in, int64_t k, int64_t s, int64_t d, int64_t p0, int64_t p1);

// The per-input-shape indirection buffer of one layer, reused across calls with that shape.
struct Plan;

// A packed layer: weights plus a small cache of plans (thread-safe; grows once per input shape).
class Packed {
 public:
  Packed(const Geom& g, const int8_t* data, const int32_t* sums);
  ~Packed();
  Packed(const Packed&) = delete;
  Packed& operator=(const Packed&) = delete;
  const Geom& geom() const { return g_; }
  const Layout& layout() const { return l_; }
  // Runs the convolution of x (N x H x W x Cin bytes, uint8 when x_u8 else int8, zero point zp)
  // with the epilogue `e` (e.y: N*OH*OW rows of Cout). Allocates only the first time a shape is seen.
  void run(const uint8_t* x, bool x_u8, int32_t zp, int64_t n, int64_t h, int64_t w, const ConvEpi& e) const;

 private:
  struct Cache;
  Geom g_;
  Layout l_;
  const int8_t* data_;
  const int32_t* sums_;
  Cache* cache_;
};

}  // namespace conv
}  // namespace edgepack
