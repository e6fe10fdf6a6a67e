// Layouts derived from the stored formats when a matrix is loaded.
#include <algorithm>

#include "core/dispatch.h"
#include "kernels/spmm/driver.h"

namespace edgepack {

void spmm_build_sell(const int64_t* rp, const uint16_t* col, const float* val, int64_t n, int64_t k,
                     SpmmSellStorage& out) {
  const int64_t slices = (n + 15) / 16, windows = (k + 31) / 32;
  out.run_ptr.assign(size_t(slices + 1), 0);
  out.step_ptr.assign(size_t(slices + 1), 0);
  out.run_win.clear();
  out.run_depth.clear();
  std::vector<uint16_t> depth(static_cast<size_t>(windows));
  std::vector<int64_t> base(static_cast<size_t>(windows));
  // First pass: depths, runs and step counts.
  int64_t steps = 0;
  for (int64_t s = 0; s < slices; ++s) {
    std::fill(depth.begin(), depth.end(), uint16_t(0));
    for (int64_t row = 16 * s; row < std::min(n, 16 * s + 16); ++row) {
      for (int64_t p = rp[row]; p < rp[row + 1];) {
        const int64_t w = col[p] >> 5;
        int64_t q = p;
        while (q < rp[row + 1] && (col[q] >> 5) == w) ++q;
        depth[size_t(w)] = std::max(depth[size_t(w)], uint16_t(q - p));
        p = q;
      }
    }
    for (int64_t w = 0; w < windows; ++w)
      if (depth[size_t(w)]) {
        out.run_win.push_back(uint16_t(w));
        out.run_depth.push_back(depth[size_t(w)]);
        steps += depth[size_t(w)];
      }
    out.run_ptr[size_t(s + 1)] = int64_t(out.run_win.size());
    out.step_ptr[size_t(s + 1)] = steps;
  }
  out.val.assign(size_t(steps * 16), 0.0f);
  out.idx.assign(size_t(steps * 16), uint8_t(0));
  // Second pass: place each nonzero at (step of its window + its rank in the window, lane).
  for (int64_t s = 0; s < slices; ++s) {
    int64_t st = out.step_ptr[size_t(s)];
    for (int64_t r = out.run_ptr[size_t(s)]; r < out.run_ptr[size_t(s + 1)]; ++r) {
      base[out.run_win[size_t(r)]] = st;
      st += out.run_depth[size_t(r)];
    }
    for (int64_t row = 16 * s; row < std::min(n, 16 * s + 16); ++row) {
      const int64_t lane = row - 16 * s;
      int64_t prev_w = -1, rank = 0;
      for (int64_t p = rp[row]; p < rp[row + 1]; ++p) {
        const int64_t w = col[p] >> 5;
        rank = w == prev_w ? rank + 1 : 0;
        prev_w = w;
        const size_t at = size_t((base[size_t(w)] + rank) * 16 + lane);
        out.val[at] = val[p];
        out.idx[at] = uint8_t(col[p] & 31);
      }
    }
  }
}

bool spmm_sell_supported() {
  // Any path that may become active later (set_isa) could use it: decide by the best one.
  return table_for(best_isa()).spmm.sell_vec_f32 != nullptr;
}

}  // namespace edgepack
