// Kernel contract for the gemm_s8 area (int8 x int8 -> int32 GEMM, optional float epilogue).
// Declarations only: this header is included by ISA translation units.
//
// ONE packed weight layout for every path (x86 and ARM), so a PackedB never depends on the
// active path and a NEON sdot kernel consumes the same bytes as the VNNI one:
//
//   data   int8  [panels][kp/4][16][4]   panel p holds columns n = 16p .. 16p+15 of W (N x K),
//                                        element [p][g][j][i] = W[16p + j][4g + i];
//                                        zero outside N x K (padding columns and the k tail)
//   colsum int32 [panels * 16]           sum_k W[n][k] (0 for padding columns)
//
// kp = K rounded up to 4, panels = ceil(N / 16). One 64-byte row [16][4] is exactly one zmm
// (one vpdpbusd operand: 16 int32 lanes, 4 k each), two ymm for AVX2, four int8x16 for NEON
// (vdotq_laneq_s32 over 4 columns x 4 k). data is 64-byte aligned.
//
// Activations reach a kernel as bytes in the path's A format (GemmOps::a_unsigned): signed
// int8, or unsigned uint8 for instructions that multiply unsigned by signed (vpdpbusd). The
// driver converts (XOR 0x80 shifts the value by +-128) and folds the shift and any activation
// zero point into a per-row correction, so a kernel computes, for every output (m, n):
//
//   acc[m][n] = sum_{k < kp} A[m][k] * B[n][k]  +  row_corr[m] * colsum[n]   (int32, wrapping)
//
// Wrapping (mod 2^32) arithmetic keeps the result exact whenever the true result fits int32,
// whatever the intermediate sums do (hence vpdpbusd, never the saturating vpdpbusds).
// Rows of A hold at least kp readable bytes (the driver pads the k tail; any value there is
// multiplied by zero weights).
//
// Output: either int32 acc into c_i32, or float into c_f32 with the epilogue
//   y = (float(acc) * row_scale[m]) * col_scale[n] + bias[n]     (two roundings, no FMA,
//   then act(y)                                                   so paths agree bit for bit
//                                                                 before the activation)
//
// Writing a new path (e.g. neon.cpp / neon_dotprod.cpp): define
// edgepack::<isa>::register_gemm_s8(KernelTable&) filling t.gemm (block, quant_rows, peak,
// a_unsigned, mr, np). sdot is signed x signed, so a_unsigned = false and row_corr is then
// nullptr for int8 activations (set only for zero points of static quantization). Weights are
// never -128, so an smull/smlal pair of int8 products cannot overflow int16 (2 * 128 * 127).
// The float epilogue must keep the order (acc * row_scale) * col_scale + bias without FMA
// contraction; tests compare every path bit for bit for activation none/relu and within
// 1e-5 * (1 + |y|) for gelu/gelu_tanh/silu. quant_rows must equal round_half_even(x / s) exactly
// (a true division, or a reciprocal product with an exact fallback near half-integers).
#pragma once
#include <cstddef>
#include <cstdint>

#include "core/status.h"

namespace edgepack {

namespace gemm {
constexpr int kNR = 16;  // columns per packed panel
constexpr int kKU = 4;   // k per group (dot-product instruction depth)

enum class Act : int32_t { none = 0, relu = 1, gelu = 2, gelu_tanh = 3, silu = 4 };
}  // namespace gemm

// A packed weight matrix (see the layout above). Non-owning view.
struct PackedB {
  const int8_t* data = nullptr;
  const int32_t* colsum = nullptr;
  int64_t n = 0, k = 0;   // logical shape of W
  int64_t kp = 0;         // k rounded up to 4
  int64_t panels = 0;     // ceil(n / 16)
};

// One GEMM call as a kernel sees it. All pointers are valid for the whole call.
struct GemmArgs {
  const uint8_t* a = nullptr;  // M rows in the path's A format, row stride lda >= kp bytes
  int64_t lda = 0;
  int64_t m = 0;
  const int32_t* row_corr = nullptr;  // [M], or nullptr for all zero
  PackedB b;
  // exactly one of the two outputs is set; row stride ldc elements, only n < N written
  int32_t* c_i32 = nullptr;
  float* c_f32 = nullptr;
  int64_t ldc = 0;
  // float epilogue (c_f32 only)
  const float* row_scale = nullptr;  // [M]
  const float* col_scale = nullptr;  // [N]
  const float* bias = nullptr;       // [N] or nullptr
  gemm::Act act = gemm::Act::none;
};

// Computes rows [m0, m1) x panels [p0, p1) of the output, over the whole of K (never a K slice:
// results are identical whatever the split). Called concurrently on disjoint blocks.
using GemmBlockFn = void (*)(const GemmArgs& args, int64_t m0, int64_t m1, int64_t p0, int64_t p1);

// Fused per-row symmetric quantization for linear_int8: for each of the m rows of x (row stride
// ldx floats, k columns), scale[r] = absmax / 127 (1 when that is 0: a zero row, or a denormal
// absmax whose quotient underflows), q = round half to even (x / scale) in [-127, 127], written
// as int8 bytes XOR `xor_mask` (0 or 0x80) into out (row stride ldo, bytes k .. kp-1 set to
// xor_mask). Returns non_finite with the flat index (r * k + c)
// of the first NaN/Inf found.
using QuantRowsFn = Status (*)(const float* x, int64_t m, int64_t k, int64_t ldx, uint8_t* out,
                               int64_t ldo, int64_t kp, float* scale, uint8_t xor_mask);

// Measures this path's int8 multiply-accumulate throughput with a register-only loop of its
// dot-product instruction, for about `seconds`; returns GOP/s (2 ops per multiply-accumulate).
using GemmPeakFn = double (*)(double seconds);

struct GemmOps {
  GemmBlockFn block = nullptr;
  QuantRowsFn quant_rows = nullptr;
  GemmPeakFn peak = nullptr;
  bool a_unsigned = false;  // A format: false = int8 bytes, true = uint8 bytes
  // Blocking hints for the driver's task split: register tile rows and panels of the main tile
  // (task edges fall on multiples of np panels when M > 4, of 8 panels when M <= 4).
  int32_t mr = 1, np = 1;
  // The driver hands A rows zero-padded to a multiple of `ka` bytes (>= kp): 4 for the vector
  // paths; 64 for AMX, whose every tile step reads 64 k (a reconfiguration for a K tail would
  // wipe the accumulator tiles). The pad must be zero, not merely multiplied by zero weights:
  // an AMX K-tail step also reads B rows past the panel's kp.
  int32_t ka = gemm::kKU;
  // Time of one multiply-accumulate relative to the AVX-512 VNNI kernel that the driver's
  // threading thresholds were tuned on (AMX ~0.15): the thresholds are amounts of time.
  float mac_cost = 1.0f;
  // Small-shape route: calls with M < route_m or K < route_k run on `small`, the ops of the path
  // below this one (set by the dispatcher; its A format may differ, so the driver picks the ops
  // before it prepares A). 0: never. gemm::set_route() overrides both (tests, benchmarks).
  int32_t route_m = 0, route_k = 0;
  const GemmOps* small = nullptr;
};

// ---- driver (cpp/kernels/gemm_s8/driver.cpp, pack.cpp): baseline code, used by the bindings --

namespace gemm {

// Small-shape route override for paths that have one (avx512_amx): calls with M < min_m or
// K < min_k run on the path below. -1 restores the path's default; 0 sends every shape to the
// path's own kernel. Process-wide, like the active path; EDGEPACK_AMX_MIN_M / _MIN_K set it at
// import.
void set_route(int32_t min_m, int32_t min_k);
// The effective (min_m, min_k) of the active path (0, 0 when it has no route).
void get_route(int32_t* min_m, int32_t* min_k);
// Whether a call of this shape runs on the path below the active one.
bool routes_small(int64_t m, int64_t k);

// Monotonic wall time in seconds (defined in baseline code, so the ISA files' peak probes need
// no <chrono> templates).
double now_seconds();

// Bytes needed for a packed W of n x k (data) and int32 count of colsum.
int64_t packed_data_bytes(int64_t n, int64_t k);
int64_t packed_colsum_len(int64_t n);
// Packs W (n x k int8, row stride ldw) into data/colsum (sized as above). Returns out_of_range
// with the flat index of the first -128 (the sign trick of the AVX2/AVX-512BW paths needs
// |w| <= 127), leaving the buffers unspecified.
Status pack(const int8_t* w, int64_t n, int64_t k, int64_t ldw, int8_t* data, int32_t* colsum);
// Inverse of pack: the original W (n x k, row stride k).
void unpack(const PackedB& b, int8_t* w);

// Activation quantization of a static (calibrated) model: per-tensor zero point.
enum class AKind : int32_t { s8 = 0, u8 = 1 };

// acc = A @ W^T (int32, exact while it fits) for A int8 (kind s8, zero point 0) or any A with a
// per-tensor zero point: acc = (A - zp) @ W^T. c row stride ldc.
void gemm_i32(const uint8_t* a, AKind kind, int32_t zp, int64_t m, int64_t lda, const PackedB& b,
              int32_t* c, int64_t ldc);

// y = act((acc * x_scale[m]) * w_scale[n] + bias[n]) with acc from per-row dynamic quantization
// of x (float, m x k, row stride ldx). w_scale has n entries (the binding expands a scalar).
Status linear_dynamic(const float* x, int64_t m, int64_t ldx, const PackedB& b, const float* w_scale,
                      const float* bias, Act act, float* y, int64_t ldy);

// The same with activations already quantized (static): acc = (A - zp) @ W^T, x_scale per tensor.
void linear_static(const uint8_t* a, AKind kind, int32_t zp, float x_scale, int64_t m, int64_t lda,
                   const PackedB& b, const float* w_scale, const float* bias, Act act, float* y,
                   int64_t ldy);

// ONNX QuantizeLinear with a per-tensor scale and zero point: saturate(round_half_even(x / scale)
// + zp) into int8 or uint8 bytes (x contiguous, m x k). non_finite with the flat index on NaN/Inf.
Status quantize_static(const float* x, int64_t m, int64_t k, float scale, AKind kind, int32_t zp,
                       uint8_t* out);

}  // namespace gemm
}  // namespace edgepack
