// Kernel contract for the spmm area (sparse weights times dense activations).
// Declarations only: this header is included by ISA translation units.
//
// Storage formats (built once by edgepack.kernels.pack_sparse, validated by the binding):
//
//   CSR ("unstructured"): for output row n, its nonzeros are p in [rp[n], rp[n+1]); col[p] is the
//     input index k (uint16, so K <= 65536) and val[p] the value (float32 or int8). Columns are
//     strictly increasing within a row. rp is int64 and absolute into col/val.
//
//   2:4: every group of 4 consecutive k holds at most 2 nonzeros (K % 4 == 0). Row n has K/2
//     values val[n*K/2 + 2g + {0,1}] for group g, and the 2-bit positions of those values inside the
//     group in meta: byte meta[n*MS + g/2], nibble (g%2)*4, pos0 in bits 0-1, pos1 in bits 2-3,
//     pos0 < pos1 (a group with fewer nonzeros stores explicit zeros). MS = (K/4 + 1) / 2 bytes
//     per row; the unused high nibble of an odd row tail is 0. So a kernel may read the 32-bit
//     word at group g (g % 8 == 0, g + 8 <= K/4) and find group g+j at bits 4j..4j+3.
//
// Activations seen by the kernels:
//   float kernels: x is float32, row-major with leading dimension ldx.
//   int8 kernels: x is int32 holding sign-extended int8 values (so lanes can be gathered and
//     multiplied without widening); accumulation is exact int32 (|sum| <= 65536 * 128 * 128 = 2^30).
//
// Kernels compute raw dot products only; bias, scales and activations are applied by the driver.
// Every kernel writes its output (the tile kernels add to it when asked to, for K-blocking).
//
// Routes (driver.cpp): int8 weights on a path with sell_quad_s8 always take the quad layout (any M);
// 2:4 float32 on a path with sell_nm24_f32 takes the positions layout where the sliced-windows
// route applies; the sliced-windows kernels (optional) for M <= sell_max_m or density >= 0.2
// (below density 0.2 only while the padded layout stays within sell_keep_bytes); else
// M < 8 -> the *_vec kernels (4 rows of x at a time); else the *_tile kernels over K-blocks of a
// transposed activation tile. Threads split the output rows N only.
//
// A new path (e.g. NEON) fills what it speeds up in register_spmm; entries it leaves alone keep
// the scalar reference. Leaving sell_vec_* null keeps the small-M route on the *_vec kernels. The
// tests force each path with edgepack.use_isa and compare with the dense reference (float within
// 1e-5 * sum|x w|, int8 accumulators bit-exact).
#pragma once
#include <cstddef>
#include <cstdint>

#include "core/status.h"

namespace edgepack {

// Rows of x handled together by a *_vec kernel (small-M path; the rows share index/value loads).
constexpr int kSpmmVecRows = 4;
// The *_tile kernels work on a transposed activation tile xt[K][mt], mt a multiple of 16 up to this.
constexpr int kSpmmMaxTile = 64;

// Small-M, CSR: y[r*ldy + i] = sum_p val[p] * x[r*ldx + col[p]] over p in [rp[i], rp[i+1]),
// for r < mr (1 <= mr <= kSpmmVecRows) and i < n. rp points at the first row of the block.
using SpmmCsrVecF32 = void (*)(const int64_t* rp, const uint16_t* col, const float* val, int64_t n,
                               const float* x, int64_t ldx, int mr, float* y, int64_t ldy);
using SpmmCsrVecS8 = void (*)(const int64_t* rp, const uint16_t* col, const int8_t* val, int64_t n,
                              const int32_t* x, int64_t ldx, int mr, int32_t* y, int64_t ldy);

// Large-M, CSR over a transposed activation tile: xt[k*mt + j] = x[m0 + j][k] (rows past M are
// zero). Row i's nonzeros for this call are p in [seg[i*ss], seg[i*ss + 1]) (the driver passes one
// K-block of each row, so the part of xt they touch stays in L1); then
// yt[i*mt + j] (=, or += when accumulate) sum_p val[p] * xt[col[p]*mt + j], for i < n, j < mt.
// mt is 16, 32, 48 or 64.
using SpmmCsrTileF32 = void (*)(const int64_t* seg, int64_t ss, const uint16_t* col, const float* val,
                                int64_t n, const float* xt, int mt, float* yt, bool accumulate);
using SpmmCsrTileS8 = void (*)(const int64_t* seg, int64_t ss, const uint16_t* col, const int8_t* val,
                               int64_t n, const int32_t* xt, int mt, int32_t* yt, bool accumulate);

// Small-M, 2:4: rows i < n of a 2:4 matrix with K columns (val and meta point at the block's first
// row; row strides K/2 and (K/4+1)/2). Same output contract as the CSR vec kernels.
using SpmmNm24VecF32 = void (*)(const float* val, const uint8_t* meta, int64_t k, int64_t n,
                                const float* x, int64_t ldx, int mr, float* y, int64_t ldy);
using SpmmNm24VecS8 = void (*)(const int8_t* val, const uint8_t* meta, int64_t k, int64_t n,
                               const int32_t* x, int64_t ldx, int mr, int32_t* y, int64_t ldy);
// Large-M, 2:4 over a transposed activation tile (same xt/yt/accumulate contract as the CSR tile
// kernels): rows i < n (val/meta at the block's first row, strides K/2 and (K/4+1)/2), groups
// g in [g0, g1) only, g0 even (one K-block per call).
using SpmmNm24TileF32 = void (*)(const float* val, const uint8_t* meta, int64_t k, int64_t g0, int64_t g1,
                                 int64_t n, const float* xt, int mt, float* yt, bool accumulate);
using SpmmNm24TileS8 = void (*)(const int8_t* val, const uint8_t* meta, int64_t k, int64_t g0, int64_t g1,
                                int64_t n, const int32_t* xt, int mt, int32_t* yt, bool accumulate);

// Small-M "sliced windows" layout (derived from CSR or 2:4 on the first small-M call, used by paths
// that set sell_vec_*, in the geometry the path asks for in sell_rows/sell_win; AVX-512: 16 x 32,
// AVX2: 8 x 16; below written for 16 x 32): rows in slices of 16 (row 16s+l in lane l), K in
// windows of 32. Slice s has runs r in [run_ptr[s], run_ptr[s+1]), each naming a window run_win[r] and a
// depth run_depth[r] (the most nonzeros any of the 16 rows has in that window); each of those
// steps holds 16 values (0 in padded lanes) and 16 byte indices k - 32*window. The steps of slice s
// start at step_ptr[s]; step_win[st] repeats each step's window, so a kernel may walk the steps
// of a slice in one flat loop (no per-run loop whose varying trip count costs a mispredicted
// branch per run). A kernel keeps a 32-float x window in two registers and picks every lane's
// operand with one two-source permute: no gathers and no horizontal sums.
//
// With slots = S > 1 (the int8 "quad" geometry, SpmmOps::sell_quad_s8: 16 rows x 64 columns x 4
// slots) each step holds S nonzeros per lane, value and byte index (column - window start) of slot
// q of lane l of step st at (st*rows + l)*S + q, and the windows slide: step_win[st] is the step's
// first column (a multiple of 4, any value below K; no runs), the lowest column a lane of the slice
// still needs, and each lane takes up to S of its next nonzeros below it + 64 (padding ~27% of
// the slots at 90% sparsity instead of ~50% with fixed windows). A VBMI kernel permutes the 64
// bytes of (x + 128) from that column once per step (x rows padded by a window past K) and one
// vpdpbusd multiplies all 64 slots; wsum[row] (the row's weight sum) removes the +128 again.
//
// 2:4 float32 (SpmmOps::sell_nm24_f32, 16 rows x 32 columns): every window of every slice is
// present and has 2 * groups steps (16, fewer in a last partial window); step j's lanes take
// group j/2 of the window, so a lane's column is 4*(j/2) + a 2-bit position: pos[(s*windows + win)*16
// + l] holds lane l's positions, step j at bits 2j..2j+1. Values (explicit zeros kept) at
// val[(s*K/2 + 16*win + j)*16 + l] -- i.e. step st = s*K/2 + 16*win + j. No index bytes: 4.25
// bytes per value instead of 5.
struct SpmmSell {
  int rows = 16, win = 32, slots = 1;  // geometry: rows per slice (lanes), columns per window, slots
  bool nm24 = false;
  bool sliding = false;  // sliding windows (the quad geometry, the float32 M <= 2 copy): step_win = start
  const uint32_t* pos = nullptr;       // 2:4 only
  const int64_t* run_ptr = nullptr;    // [slices + 1]
  const int64_t* step_ptr = nullptr;   // [slices + 1]
  const uint16_t* run_win = nullptr;   // [runs]
  const uint16_t* run_depth = nullptr;
  const uint16_t* step_win = nullptr;  // [steps]
  const void* val = nullptr;           // [steps * rows * slots] float32 or int8
  const uint8_t* idx = nullptr;        // [steps * rows * slots]
  const int32_t* wsum = nullptr;       // [slices * rows] (int8 only; 0 past the last row)
};
// Rows of slices [s0, s1) (row < n) for mr (<= kSpmmVecRows) rows of x, each padded with zeros
// to a multiple of 32 columns (leading dimension ldx): y[r*ldy + row] = x[r] . w[row].
using SpmmSellVecF32 = void (*)(const SpmmSell& w, int64_t s0, int64_t s1, int64_t n, const float* x,
                                int64_t ldx, int mr, float* y, int64_t ldy);
using SpmmSellVecS8 = void (*)(const SpmmSell& w, int64_t s0, int64_t s1, int64_t n, const int32_t* x,
                               int64_t ldx, int mr, int32_t* y, int64_t ldy);
// The quad geometry: x holds quantized activations plus 128 as uint8 (mr <= kSpmmQuadRows rows,
// each padded with 128 to at least K + 64 columns, leading dimension ldx); y[r*ldy + row] = the exact
// int32 x[r] . w[row] with the +128 removed (acc - 128 * wsum[row]).
constexpr int kSpmmQuadRows = 8;
constexpr int kSpmmSlideMaxM = 2;
constexpr int kSpmmSlideShare = 4;  // steps of the float32 sliding copy on one window
constexpr int kSpmmSlideWin = 64;   // and its window width (columns)
using SpmmSellQuadS8 = void (*)(const SpmmSell& w, int64_t s0, int64_t s1, int64_t n, const uint8_t* x,
                                int64_t ldx, int mr, int32_t* y, int64_t ldy);

// The smooth activations over a contiguous output slice, in place: act is 2 (gelu, erf form),
// 3 (gelu_tanh) or 4 (silu) (SpmmAct in driver.h); within 1e-6 * (1 + |y|) of the scalar form.
using SpmmActF32 = void (*)(float* y, int64_t n, int act);

struct SpmmOps {
  SpmmActF32 act_f32 = nullptr;  // optional: null -> the scalar activation in the driver
  SpmmCsrVecF32 csr_vec_f32 = nullptr;
  SpmmCsrVecS8 csr_vec_s8 = nullptr;
  SpmmCsrTileF32 csr_tile_f32 = nullptr;
  SpmmCsrTileS8 csr_tile_s8 = nullptr;
  SpmmNm24VecF32 nm24_vec_f32 = nullptr;
  SpmmNm24VecS8 nm24_vec_s8 = nullptr;
  SpmmNm24TileF32 nm24_tile_f32 = nullptr;
  SpmmNm24TileS8 nm24_tile_s8 = nullptr;
  SpmmSellVecF32 sell_vec_f32 = nullptr;  // optional: null -> the CSR / 2:4 vec kernels
  SpmmSellVecS8 sell_vec_s8 = nullptr;
  SpmmSellVecF32 sell_nm24_f32 = nullptr;  // optional: 2:4 float32 in the 16 x 32 positions layout
  SpmmSellQuadS8 sell_quad_s8 = nullptr;  // optional: int8 in the 16 x 64 x 4 geometry (wins over sell_vec_s8)
  // optional: float32 over a second, sliding-windows copy for M <= kSpmmSlideMaxM (16 rows x
  // kSpmmSlideWin = 64 columns, step_win = the window's first column): ~71% of its slots filled
  // instead of ~50% at 90% sparsity, so fewer bytes per call where a GEMV is bound by them; its
  // per-window x loads make it slower from M ~ 8 on. It differs from the quad geometry
  // (spmm_build_slide): windows start on a multiple of 16 columns (aligned x loads);
  // kSpmmSlideShare consecutive steps share a window (in each, a lane takes its next nonzero
  // below start + 64); each slice has a multiple of 4 steps (padding steps: zero values, the
  // slice's last window); and the index bytes (column - start, < 64) of steps 4g..4g+3 are
  // interleaved per lane: byte 4l + j of the 64 at idx + 64g is lane l's index in step 4g + j.
  SpmmSellVecF32 sell_slide_f32 = nullptr;
  int sell_rows = 16, sell_win = 32;  // the geometry the sell kernels expect
  int sell_max_m = 64;                // beyond this (unless density >= 0.2) the tile route wins
  // Below density 0.2 the padded layout is kept only up to this many bytes (else the vec kernels).
  int64_t sell_keep_bytes = int64_t(1) << 62;
};

}  // namespace edgepack
