// spmm driver: picks the small-M or tiled route, quantizes activations for int8 weights, splits
// the output rows (N) over threads and applies bias, scales and the activation.
// Baseline code: calls the per-ISA kernels through the active KernelTable.
#pragma once
#include <cstdint>
#include <vector>

#include "core/status.h"
#include "kernels/spmm/spmm.h"

namespace edgepack {

enum class SpmmFormat : int { csr = 0, nm24 = 1 };
enum class SpmmAct : int { none = 0, relu = 1, gelu = 2, gelu_tanh = 3, silu = 4 };

// A validated sparse matrix [n, k] (pointers owned by the caller; see kernels/spmm/spmm.h).
struct SpmmMatrix {
  SpmmFormat format = SpmmFormat::csr;
  bool int8 = false;             // values are int8 with a per-row scale
  int64_t n = 0, k = 0;
  const int64_t* row_ptr = nullptr;  // csr: [n+1]
  const uint16_t* col = nullptr;     // csr: [nnz]
  const void* val = nullptr;         // csr: [nnz]; 2:4: [n, k/2]
  const uint8_t* meta = nullptr;     // 2:4: [n, (k/4+1)/2]
  const float* scale = nullptr;      // int8: [n]
  int64_t nnz = 0;                   // stored values
  bool has_sell = false;             // the sliced-windows copy for small M has been built
  SpmmSell sell;
  bool has_slide = false;            // the float32 sliding-windows copy for M <= kSpmmSlideMaxM
  SpmmSell slide;
};

// Storage of the sliced-windows layout (see SpmmSell in kernels/spmm/spmm.h).
struct SpmmSellStorage {
  int rows = 0, win = 0, slots = 1;
  bool sliding = false;
  bool nm24 = false;
  std::vector<uint32_t> pos;
  std::vector<int64_t> run_ptr, step_ptr;
  std::vector<uint16_t> run_win, run_depth, step_win;
  std::vector<int32_t> wsum;
  std::vector<float> val_f32;
  std::vector<int8_t> val_s8;
  std::vector<uint8_t> idx;
  SpmmSell view() const {
    SpmmSell s;
    s.rows = rows;
    s.win = win;
    s.slots = slots;
    s.sliding = sliding;
    s.nm24 = nm24;
    s.pos = pos.data();
    s.step_win = step_win.data();
    s.wsum = wsum.empty() ? nullptr : wsum.data();
    s.run_ptr = run_ptr.data();
    s.step_ptr = step_ptr.data();
    s.run_win = run_win.data();
    s.run_depth = run_depth.data();
    s.val = val_s8.empty() ? static_cast<const void*>(val_f32.data()) : static_cast<const void*>(val_s8.data());
    s.idx = idx.data();
    return s;
  }
  int64_t nbytes() const {
    return int64_t((run_ptr.size() + step_ptr.size()) * 8 +
                   (run_win.size() + run_depth.size() + step_win.size()) * 2 + (wsum.size() + pos.size()) * 4 +
                   val_f32.size() * 4 + val_s8.size() + idx.size());
  }
};
// The geometry the active path wants for this matrix's layout (int8 may use the quad geometry).
struct SpmmSellGeom {
  int rows, win, slots;
  bool sliding;  // windows start at any multiple of 4 (step_win = first column, no runs)
  bool nm24;  // the 2:4 positions layout
};
SpmmSellGeom spmm_sell_geom(const SpmmMatrix& w);
// Builds it from a validated matrix (CSR or 2:4, float32 or int8) in the active path's geometry.
void spmm_build_sell(const SpmmMatrix& w, SpmmSellStorage& out);
// Whether a built layout is worth keeping on the active path (SpmmOps::sell_keep_bytes): at high
// sparsity its padding roughly doubles the bytes, which a narrow path's kernel pays for when the
// layout no longer fits in cache.
bool spmm_sell_worthwhile(const SpmmMatrix& w, const SpmmSellStorage& s);
// Whether spmm_run with m activation rows would use the sliced-windows layout on the active path
// but the matrix lacks it in that path's geometry (so the caller should build it first).
bool spmm_wants_sell(const SpmmMatrix& w, int64_t m);
// The same for the float32 sliding-windows copy (SpmmOps::sell_slide_f32, M <= kSpmmSlideMaxM).
bool spmm_wants_slide(const SpmmMatrix& w, int64_t m);
void spmm_build_slide(const SpmmMatrix& w, SpmmSellStorage& out);
// What a caller does before spmm_run with m rows: build the sliding copy into `storage` and point
// w at it when spmm_wants_slide says so.
void spmm_prepare_slide(SpmmMatrix& w, SpmmSellStorage& storage, int64_t m);

// y[m, n] = act(x[m] . dense(w)[n] + bias[n]) for float values;
// y[m, n] = act(acc[m, n] * xs[m] * ws[n] + bias[n]) for int8 values, where x[m] is quantized per
// row (xs = absmax/127, round half to even) and acc is the exact int32 product.
// x: [m, k] float32 row-major; y: [m, n]; bias may be null. Returns non_finite (index into x)
// when int8 weights meet a NaN/Inf activation (the quantizer cannot represent it).
Status spmm_run(const SpmmMatrix& w, const float* x, int64_t m, const float* bias, SpmmAct act, float* y);

// The int32 accumulators acc[m, n] = sum_k xq[m, k] * w[n, k] for int8 weights and int8 xq
// (any value): the exact integer part of spmm_run, exposed for testing every path.
Status spmm_acc_s8(const SpmmMatrix& w, const int8_t* xq, int64_t m, int32_t* acc);

}  // namespace edgepack
