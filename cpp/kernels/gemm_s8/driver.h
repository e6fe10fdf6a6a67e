// int8 GEMM driver: packing, activation preparation, tiling and threads (baseline flags).
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "core/dispatch.h"
#include "core/status.h"

namespace edgepack {

// Weights in the packed layout of gemm_s8.h. Immutable after pack_weights, so one object can be
// shared by any number of threads.
struct PackedB {
  int64_t n = 0, k = 0, kp = 0, panels = 0;
  std::vector<int8_t> storage;  // panels * kp * 16 bytes + alignment slack
  int64_t offset = 0;           // first byte of the 64-byte aligned data in storage
  std::vector<int32_t> colsum;  // panels * 16
  const int8_t* data() const { return storage.data() + offset; }
  int64_t nbytes() const { return panels * kp * kGemmPanel + int64_t(colsum.size()) * 4; }
};

// Packs W int8 [n, k] (row stride ldw). Values must lie in [-127, 127]: returns out_of_range with
// the flat index of the first -128.
Status pack_b(const int8_t* w, int64_t n, int64_t k, int64_t ldw, PackedB* out);
// Writes the original W [n, k] back (exact).
void unpack_b(const PackedB& b, int8_t* w);

// How activations enter the GEMM.
struct GemmInput {
  enum Kind { int8_raw, f32_dynamic, f32_static } kind = int8_raw;
  const void* a = nullptr;  // int8 [m, k] or float32 [m, k], row stride lda elements
  int64_t lda = 0;
  float x_scale = 1.0f;     // f32_static
  int32_t x_zero_point = 0; // f32_static
  bool x_uint8 = false;     // f32_static: uint8 (0..255) rather than int8 activations
};

struct GemmOutput {
  int32_t* c = nullptr;      // int32 [m, n] when y is null
  float* y = nullptr;        // float32 [m, n]
  int64_t ld = 0;
  const float* col_scale = nullptr;  // [n]
  const float* bias = nullptr;       // [n] or null
  GemmAct act = GemmAct::none;
};

// C = A * W^T. Releases nothing, allocates only when a thread's scratch must grow. Returns
// non_finite (flat index into x) for NaN/Inf activations.
Status gemm_s8_run(const PackedB& b, int64_t m, const GemmInput& in, const GemmOutput& out);

}  // namespace edgepack
