// Kernel contract for the conv_f32 area: float32 2-D convolution on NHWC activations, with the
// bias, residual add and activation fused into the epilogue. Declarations only: this header is
// included by ISA translation units.
//
// Activations are NHWC float32: x[n][y][x][c], output y[n][oy][ox][co]. Weights arrive as ONNX /
// PyTorch OIHW, w[co][ci / groups][ky][kx], and are packed once (pack.cpp) into ONE layout used
// by every path, so switching the instruction-set path never repacks:
//
//   GEMM layout (every conv but depthwise): per group g and panel p of kNR = 16 output channels,
//     float [taps * cin_g][16], element [k][j] = w[g*cout_g + 16p + j][c][ky][kx] with
//     k = (ky*kw + kx)*cin_g + c (taps in row-major order, channels innermost: the order of an
//     NHWC input row), zero for output channels past cout_g. Panels are stored one after another,
//     group by group: panel (g, p) starts at (g*panels + p) * K * 16 floats, K = taps * cin_g.
//   Depthwise layout (groups == cin == cout): float [taps][cp], element [t][c] = w[c][0][ky][kx],
//     cp = cin rounded up to 16, zero past cin.
//
// Routes (Geometry::route(), driver.cpp):
//   gemm  : 1x1, stride 1, no padding: a plain GEMM over N*H*W rows (row m of A is x + m*cin).
//   rows  : groups == 1, column dilation 1: implicit GEMM whose "taps" are the kh kernel rows.
//           For output pixel m and kernel row ky, the kw * cin inputs x[iy][ix0 .. ix0+kw)[:] are
//           one contiguous run of NHWC memory and, in the same order, kw * cin consecutive k of
//           the packed weights; the run's offset is precomputed once per input shape (the
//           indirection plan, ConvPlan). A row in the padding reads a zero run; a run crossing
//           the left or right edge is copied with zeros into a per-thread buffer. kh pointers
//           per pixel instead of kh * kw (3 channels per tap would cost a pointer per 3 k).
//   igemm : any other grouped/dense conv: implicit GEMM over the kh * kw taps, each tap reading
//           cin_g floats at a precomputed offset, or a zero row in the padding.
//   dw    : depthwise (depth multiplier 1): channels in vector lanes, taps in registers.
//
// Accumulation order (why paths differ only by rounding): a GEMM output starts at its bias, then
// adds the products tap by tap, channel by channel (FMA on SIMD paths, multiply-then-add on the
// scalar path), then the residual, then the activation. The tests bound the difference from a
// float64 reference by 1e-5 * (sum |x w| + |bias| + |residual|) (see tests/test_conv_f32.py).
// Results never depend on the thread count: threads split output pixels and output channels,
// never the reduction.
#pragma once
#include <cstddef>
#include <cstdint>

namespace edgepack {

namespace convf {
constexpr int kNR = 16;  // output channels per packed GEMM panel
constexpr int kDwC = 16; // depthwise channel padding unit

// The fused activation. Parameters (Epilogue::p0, p1):
//   clip: [p0, p1] (relu6 = clip(0, 6));  hardsigmoid: max(0, min(1, p0*y + p1));
//   hardswish: y * max(0, min(1, y/6 + 1/2));  leakyrelu: y < 0 ? p0*y : y;
//   silu: y / (1 + e^-y);  sigmoid: 1 / (1 + e^-y);  tanh.
enum class Act : int32_t {
  none = 0, relu = 1, clip = 2, hardswish = 3, hardsigmoid = 4, silu = 5, leakyrelu = 6, sigmoid = 7,
  tanh = 8,
};
constexpr int kNumActs = 9;

struct Epilogue {
  Act act = Act::none;
  float p0 = 0.0f, p1 = 0.0f;
};
}  // namespace convf

// One register tile of the (implicit) GEMM over one block of the reduction, as a kernel sees it:
// mr output pixels x np panels of 16 output channels.
//
//   s[r][j] = init[r][j] + sum_t sum_{i<kc} (a[t*amr + r] + a_off)[i] * w_p[t*kc + i][j mod 16]
//
// for r < mr, j < 16*np, where w_p = w + (j / 16) * wstride, and init = bias (zero when null)
// on the block that starts the reduction (first), else the partial sums part[r][j] that the
// previous block stored. The block that ends the reduction (last) writes, for j < nvalid only,
//   c[r][j] = act(s[r][j] + res[r][j])
// (bias and res read for j < nvalid only); any other block stores s into part (row stride
// parts, all 16*np lanes). a holds taps groups of amr row pointers (amr >= mr; the first mr of
// each group are used), each valid for a_off + kc floats.
struct ConvTile {
  const float* const* a = nullptr;
  int64_t taps = 0, kc = 0, amr = 0, a_off = 0;
  const float* w = nullptr;
  int64_t wstride = 0;        // floats from one panel to the next
  bool first = true, last = true;
  float* part = nullptr;      // partial sums when not (first and last)
  int64_t parts = 0;
  const float* bias = nullptr;  // nvalid floats, or nullptr (zero)
  const float* res = nullptr;   // residual rows (row stride ldr), or nullptr
  int64_t ldr = 0;
  float* c = nullptr;         // output rows, row stride ldc
  int64_t ldc = 0;
  int64_t nvalid = 0;         // 1 <= nvalid <= 16 * np
  convf::Epilogue ep;
};
// 1 <= np <= ConvF32Ops::np, 1 <= mr <= ConvF32Ops::mr[np].
using ConvGemmTileFn = void (*)(const ConvTile& t, int mr, int np);

// Consecutive output rows j < nrows (of one image) of a depthwise convolution, channels [c0, c1):
//   out_j[ox][c] = act( bias[c] + sum_{ky, kx} in(j*sh + ky*dh, ox*sw - pl + kx*dw)[c] * w[ky*kw + kx][c]
//                       + res_j[ox][c] )
// in(i, ix) is rows[i] + ix*C for ix in [0, in_w), and zeros for a column outside: the kernel
// reads zero + c there (zero holds in_w * C zero floats). An input row in the padding is the
// zero row itself (rows[i] == zero), so every kernel row is present and a kernel may keep its
// taps' weights in registers across all the rows. Pixels [ox_lo, ox_hi) have every column
// inside (the driver computes them): no test needed there. Output row j is out + j*out_w*C
// (res likewise).
struct DwRows {
  const float* const* rows = nullptr;  // (nrows - 1) * sh + (kh - 1) * dh + 1 input rows, never null
  int64_t nrows = 0, sh = 1, dh = 1;
  const float* zero = nullptr;         // in_w * C zero floats
  int64_t in_w = 0, c = 0;             // input width in pixels; channels (= pixel stride in floats)
  int64_t kh = 0, kw = 0, sw = 1, dw = 1, pl = 0;
  int64_t out_w = 0, ox_lo = 0, ox_hi = 0;
  int64_t c0 = 0, c1 = 0;
  const float* w = nullptr;  // packed [kh*kw][cp]
  int64_t cp = 0;
  const float* bias = nullptr;  // [C] or nullptr
  const float* res = nullptr;   // residual rows or nullptr
  float* out = nullptr;         // output rows
  convf::Epilogue ep;
};
using DwRowsF32Fn = void (*)(const DwRows& r);

constexpr int kMaxNP = 4;
struct ConvF32Ops {
  ConvGemmTileFn gemm_tile = nullptr;
  // Register tiles: up to np panels of 16 output channels; a block of q <= np panels takes mr[q]
  // output pixels per tile (more rows when fewer panels keep the accumulator count up).
  int32_t np = 1;
  int32_t mr[kMaxNP + 1] = {0, 1, 1, 1, 1};
  DwRowsF32Fn dw_rows = nullptr;
};

// ---- driver (cpp/kernels/conv_f32/driver.cpp, pack.cpp): baseline code, used by the bindings ----

namespace convf {

enum class ConvRoute : int32_t { gemm = 0, rows = 1, igemm = 2, dw = 3 };

// Convolution geometry (validated by the caller: all sizes >= 1, pads >= 0, cin and cout
// divisible by groups).
struct Geometry {
  int64_t cout = 0, cin = 0, groups = 1;
  int64_t kh = 1, kw = 1;
  int64_t sh = 1, sw = 1;   // strides
  int64_t dh = 1, dw = 1;   // dilations
  int64_t pt = 0, pl = 0, pb = 0, pr = 0;  // pads: top, left, bottom, right
  int64_t cin_g() const { return cin / groups; }
  int64_t cout_g() const { return cout / groups; }
  int64_t taps() const { return kh * kw; }
  bool depthwise() const { return groups == cin && groups == cout; }
  bool direct() const { return kh == 1 && kw == 1 && sh == 1 && sw == 1 && pt == 0 && pl == 0 && pb == 0 && pr == 0; }
  ConvRoute route() const {
    if (depthwise()) return ConvRoute::dw;
    if (direct()) return ConvRoute::gemm;
    return groups == 1 && dw == 1 && kw > 1 ? ConvRoute::rows : ConvRoute::igemm;
  }
  // Output size for an input of h x w; 0 when the (dilated) kernel does not fit the padded input.
  int64_t out_h(int64_t h) const;
  int64_t out_w(int64_t w) const;
};

// Floats of the packed weights.
int64_t packed_floats(const Geometry& g);
// w: OIHW float32 [cout][cin_g][kh][kw]; out: packed_floats(g) floats.
void pack(const Geometry& g, const float* w, float* out);
// Inverse of pack (w: OIHW, cout*cin_g*kh*kw floats).
void unpack(const Geometry& g, const float* packed, float* w);

// Plan offsets that are not offsets: a zero row (the tap or kernel row lies in the padding), a
// run crossing the left/right edge (rows route: copied with zeros by the driver).
constexpr int64_t kPlanZero = -1, kPlanBorder = -2;

// What one input shape needs, built once and reused: the indirection offsets.
struct ConvPlan {
  int64_t h = 0, w = 0, oh = 0, ow = 0;
  // igemm: [oh*ow][kh*kw], rows: [oh*ow][kh] offsets in floats from the image's first element to
  // the input the tap (kernel row) starts at (pixel (iy, ix), channel 0; the group's channel
  // offset is added by the driver), or kPlanZero / kPlanBorder. Empty for the gemm and dw routes.
  // (The dw route needs only the zero row.)
  int64_t* off = nullptr;
  int64_t n_off = 0;
  float* zero = nullptr;  // zeros for padding: cin_g floats (igemm), kw * cin (rows), w * cin (dw)
};
// Bytes build_plan needs for off and zero (callers own the storage, so the selftest and the
// binding can keep it as they like). h, w >= 1 with out_h(h), out_w(w) >= 1.
int64_t plan_offsets(const Geometry& g, int64_t h, int64_t w);
int64_t plan_zeros(const Geometry& g, int64_t w);
// Fills plan (off: plan_offsets(...) int64, zero: plan_zeros(g, w) floats).
void build_plan(const Geometry& g, int64_t h, int64_t w, int64_t* off, float* zero, ConvPlan* plan);

// y[n][oy][ox][:] for a batch of n images (x: n*h*w*cin floats; y and res: n*oh*ow*cout).
// bias: [cout] or nullptr; res: nullptr or the residual, added before the activation (res may be
// y itself). Threads over output pixels and channels on the pool.
void run(const Geometry& g, const float* packed, const ConvPlan& plan, const float* x, int64_t n,
         const float* bias, const float* res, const Epilogue& ep, float* y);

}  // namespace convf
}  // namespace edgepack
