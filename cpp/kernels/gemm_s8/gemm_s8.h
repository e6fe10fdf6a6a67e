// Kernel contract for the int8 GEMM area: C[M, N] = A[M, K] * W[N, K]^T with exact int32
// accumulation, and the float epilogue of linear_int8.
// Declarations only: this header is included by ISA translation units.
//
// Packed weights (one layout for every path, built once by pack.cpp):
//   K is padded to Kp = round_up(K, 4) and N to Np = round_up(N, 16). Panel p holds columns
//   16p..16p+15 as bytes b[p*Kp*16 + (k/4)*64 + (n%16)*4 + k%4] = W[n][k] (zero where padded).
//   One 64-byte group is one zmm for vpdpbusd, two ymm for AVX2, four q-registers for NEON sdot.
//   colsum[n] = sum_k W[n][k] (int32, zero for padded n).
//
// Activations: the driver writes A into a scratch buffer of bytes s with row stride lda >= Kp
// (bytes past K are arbitrary: the weights there are zero). A kernel with `a_unsigned` reads s as
// u8 (VNNI vpdpbusd is u8 x s8); one without reads s as s8 (sign trick on AVX2/AVX-512BW, sdot on
// NEON). The driver stores each activation so that its kernel reads `value + offset`, and gives
// corr[m] = -offset for each row; the exact correction is folded into the accumulator's initial
// value: acc[m][n] = corr[m] * colsum[n] + sum_k s[m][k] * W[n][k]. For symmetric int8
// activations a signed kernel reads q itself (corr 0) and an unsigned one q ^ 0x80 (corr -128).
// Exactness: |u| <= 255, |W| <= 127, K <= 2^16 keeps every partial sum below 2^31; VNNI uses
// the wrapping vpdpbusd (not vpdpbusds), the sign trick keeps int16 pairs <= 2*128*127 = 32512.
#pragma once
#include <cstddef>
#include <cstdint>

#include "core/status.h"

namespace edgepack {

constexpr int kGemmPanel = 16;  // columns per packed panel
constexpr int kGemmKGroup = 4;  // k values interleaved per column

enum class GemmAct : int { none = 0, relu = 1, gelu = 2, gelu_tanh = 3, silu = 4 };

// One microkernel call: rows [0, mr) of A times panels [0, np) of B.
struct GemmTile {
  const uint8_t* a;        // first row of the tile; row stride lda bytes
  int64_t lda;
  int mr;                  // 1 <= mr <= GemmOps::mr
  const int8_t* b;         // first panel of the tile; panels are kp4 * 64 bytes apart
  int64_t kp4;             // Kp / 4
  int np;                  // 1 <= np <= GemmOps::np
  int ncols;               // valid columns, 16*(np-1) < ncols <= 16*np
  const int32_t* colsum;   // colsum for the tile's first column
  const int32_t* corr;     // corr for the tile's first row
  // Output: int32 when y == nullptr, else float.
  int32_t* c;
  int64_t ldc;
  float* y;
  int64_t ldy;
  const float* row_scale;  // [mr] (float output)
  const float* col_scale;  // [ncols]
  const float* bias;       // [ncols] or nullptr
  GemmAct act;
};

// Float epilogue, identical on every path for act none/relu: y = ((float)acc * row_scale[m]) *
// col_scale[n] + bias[n], each step rounded to float32 (no fused multiply-add). gelu/gelu_tanh/silu
// use each path's vector approximations (|error| <= ~1e-6 relative to the float32 reference).
using GemmUkernel = void (*)(const GemmTile& t);

// Elementwise activation in place on n floats (used by paths and by the driver on remainders).
using GemmActFn = void (*)(float* y, int64_t n, GemmAct act);

// Peak probe: runs `iters` iterations of a dependency-free dot-product loop; returns the number of
// int8 multiply-accumulates it performed (the caller times it).
using GemmPeakFn = int64_t (*)(int64_t iters);

// Dynamic per-row quantization of activations: for each of `rows` rows of x (stride ldx, k
// values), scale[r] = max|x| / 127 (1 for an all-zero row), q = round_half_even(x / scale) in
// [-127, 127], stored as s = q ^ xmask (xmask 0x80 for unsigned kernels, 0 otherwise) at
// s + r*lda. Returns non_finite with the flat index (r*k + i, relative to x) of a NaN or Inf.
using GemmQuantRowsFn = Status (*)(const float* x, int64_t ldx, int64_t rows, int64_t k, uint8_t* s,
                                   int64_t lda, uint8_t xmask, float* scale);

struct GemmOps {
  GemmUkernel ukernel = nullptr;
  int mr = 0;              // largest row count of a tile
  int np = 0;              // largest panel count of a tile
  bool a_unsigned = false; // kernel multiplies u (true) or u ^ 0x80 (false)
  GemmUkernel ukernel_small = nullptr;  // tuned for M <= 4 (streams B once); may equal ukernel
  int np_small = 0;
  GemmActFn act = nullptr;
  GemmPeakFn peak = nullptr;
  GemmQuantRowsFn quant_rows = nullptr;
};

}  // namespace edgepack
