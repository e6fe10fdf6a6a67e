// Layouts derived from the stored formats when a matrix is loaded.
#include <algorithm>
#include <type_traits>

#include "core/dispatch.h"
#include "kernels/spmm/driver.h"

namespace edgepack {

namespace {

template <class V>
void build_sell(const int64_t* rp, const uint16_t* col, const V* val, int64_t n, int64_t k, SpmmSellStorage& out,
                std::vector<V>& out_val) {
  const int64_t R = out.rows, W = out.win, S = out.slots;
  const int64_t slices = (n + R - 1) / R, windows = (k + W - 1) / W;
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
    for (int64_t row = R * s; row < std::min(n, R * s + R); ++row) {
      for (int64_t p = rp[row]; p < rp[row + 1];) {
        const int64_t w = col[p] / W;
        int64_t q = p;
        while (q < rp[row + 1] && col[q] / W == w) ++q;
        depth[size_t(w)] = std::max(depth[size_t(w)], uint16_t((q - p + S - 1) / S));
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
  out_val.assign(size_t(steps * R * S), V(0));
  out.idx.assign(size_t(steps * R * S), uint8_t(0));
  out.step_win.resize(size_t(steps));
  for (int64_t s = 0; s < slices; ++s) {
    int64_t st = out.step_ptr[size_t(s)];
    for (int64_t r = out.run_ptr[size_t(s)]; r < out.run_ptr[size_t(s + 1)]; ++r)
      for (int d = 0; d < out.run_depth[size_t(r)]; ++d) out.step_win[size_t(st++)] = out.run_win[size_t(r)];
  }
  if (std::is_same<V, int8_t>::value) {
    out.wsum.assign(size_t(slices * R), 0);
    for (int64_t row = 0; row < n; ++row) {
      int32_t t = 0;
      for (int64_t p = rp[row]; p < rp[row + 1]; ++p) t += int32_t(val[p]);
      out.wsum[size_t(row)] = t;
    }
  } else {
    out.wsum.clear();
  }
  // Second pass: place each nonzero at (step of its window + its rank in the window, lane).
  for (int64_t s = 0; s < slices; ++s) {
    int64_t st = out.step_ptr[size_t(s)];
    for (int64_t r = out.run_ptr[size_t(s)]; r < out.run_ptr[size_t(s + 1)]; ++r) {
      base[out.run_win[size_t(r)]] = st;
      st += out.run_depth[size_t(r)];
    }
    for (int64_t row = R * s; row < std::min(n, R * s + R); ++row) {
      const int64_t lane = row - R * s;
      int64_t prev_w = -1, rank = 0;
      for (int64_t p = rp[row]; p < rp[row + 1]; ++p) {
        const int64_t w = col[p] / W;
        rank = w == prev_w ? rank + 1 : 0;
        prev_w = w;
        const size_t at = size_t(((base[size_t(w)] + rank / S) * R + lane) * S + rank % S);
        out_val[at] = val[p];
        out.idx[at] = uint8_t(col[p] % W);
      }
    }
  }
}

// The sliding-windows layout (the int8 quad geometry): a step's window starts at the lowest column any
// lane of the slice still has to do (rounded down to a multiple of 4), and every lane takes up to
// S of its next nonzeros below start + W. Fixed windows leave half the slots empty at 90%
// sparsity (the depth is the busiest lane's); letting the window follow the laggard fills ~73%.
template <class V>
void build_sliding(const int64_t* rp, const uint16_t* col, const V* val, int64_t n, SpmmSellStorage& out,
                   std::vector<V>& out_val) {
  const int64_t R = out.rows, W = out.win, S = out.slots;
  const int64_t slices = (n + R - 1) / R;
  out.run_ptr.assign(size_t(slices + 1), 0);
  out.step_ptr.assign(size_t(slices + 1), 0);
  out.run_win.clear();
  out.run_depth.clear();
  out.step_win.clear();
  out_val.clear();
  out.idx.clear();
  std::vector<int64_t> cur(static_cast<size_t>(R));
  for (int64_t s = 0; s < slices; ++s) {
    const int64_t r0 = R * s, rn = std::min(n, r0 + R) - r0;
    for (int64_t l = 0; l < rn; ++l) cur[size_t(l)] = rp[r0 + l];
    for (;;) {
      int64_t start = -1;
      for (int64_t l = 0; l < rn; ++l)
        if (cur[size_t(l)] < rp[r0 + l + 1]) {
          const int64_t c = col[cur[size_t(l)]];
          start = start < 0 || c < start ? c : start;
        }
      if (start < 0) break;
      start &= ~int64_t(3);
      out.step_win.push_back(uint16_t(start));
      const size_t base = out_val.size();
      out_val.resize(base + size_t(R * S), V(0));
      out.idx.resize(base + size_t(R * S), uint8_t(0));
      for (int64_t l = 0; l < rn; ++l) {
        int64_t& p = cur[size_t(l)];
        for (int64_t q = 0; q < S && p < rp[r0 + l + 1] && col[p] < start + W; ++q, ++p) {
          out_val[base + size_t(l * S + q)] = val[p];
          out.idx[base + size_t(l * S + q)] = uint8_t(col[p] - start);
        }
      }
    }
    out.step_ptr[size_t(s + 1)] = int64_t(out.step_win.size());
  }
  out.wsum.clear();
  if (!std::is_same<V, int8_t>::value) return;
  out.wsum.assign(size_t(slices * R), 0);
  for (int64_t row = 0; row < n; ++row) {
    int32_t t = 0;
    for (int64_t p = rp[row]; p < rp[row + 1]; ++p) t += int32_t(val[p]);
    out.wsum[size_t(row)] = t;
  }
}

// 2:4 rows as CSR (explicit zeros dropped).
template <class V>
void nm24_to_csr(const SpmmMatrix& w, std::vector<int64_t>& rp, std::vector<uint16_t>& col, std::vector<V>& val) {
  const int64_t groups = w.k / 4, half = w.k / 2, ms = (groups + 1) / 2;
  const V* v = static_cast<const V*>(w.val);
  rp.assign(size_t(w.n + 1), 0);
  col.clear();
  val.clear();
  for (int64_t i = 0; i < w.n; ++i) {
    const uint8_t* m = w.meta + i * ms;
    for (int64_t g = 0; g < groups; ++g) {
      const unsigned b = (m[g >> 1] >> ((g & 1) * 4)) & 15u;
      const V v0 = v[i * half + 2 * g], v1 = v[i * half + 2 * g + 1];
      if (v0 != V(0)) { col.push_back(uint16_t(4 * g + (b & 3u))); val.push_back(v0); }
      if (v1 != V(0)) { col.push_back(uint16_t(4 * g + (b >> 2))); val.push_back(v1); }
    }
    rp[size_t(i + 1)] = int64_t(col.size());
  }
}

template <class V>
void build_any(const SpmmMatrix& w, SpmmSellStorage& out, std::vector<V>& out_val) {
  std::vector<int64_t> rp;
  std::vector<uint16_t> col;
  std::vector<V> val;
  const int64_t* rpp = w.row_ptr;
  const uint16_t* colp = w.col;
  const V* valp = static_cast<const V*>(w.val);
  if (w.format != SpmmFormat::csr) {
    nm24_to_csr(w, rp, col, val);
    rpp = rp.data();
    colp = col.data();
    valp = val.data();
  }
  if (out.sliding)
    build_sliding(rpp, colp, valp, w.n, out, out_val);
  else
    build_sell(rpp, colp, valp, w.n, w.k, out, out_val);
}

// The 2:4 float32 positions layout (see SpmmSell): values transposed into 16-row slices, the
// 2-bit positions of each lane's 16 steps of a window packed in one word.
void build_nm24(const SpmmMatrix& w, SpmmSellStorage& out) {
  const int64_t n = w.n, k = w.k, half = k / 2, groups = k / 4, ms = (groups + 1) / 2;
  const int64_t slices = (n + 15) / 16, windows = (k + 31) / 32;
  const float* v = static_cast<const float*>(w.val);
  out.run_ptr.assign(size_t(slices + 1), 0);
  out.step_ptr.assign(size_t(slices + 1), 0);
  for (int64_t s = 0; s <= slices; ++s) out.step_ptr[size_t(s)] = s * half;
  out.run_win.clear();
  out.run_depth.clear();
  out.step_win.clear();
  out.wsum.clear();
  out.idx.clear();
  out.val_s8.clear();
  out.val_f32.assign(size_t(slices * half * 16), 0.0f);
  out.pos.assign(size_t(slices * windows * 16), 0u);
  for (int64_t row = 0; row < n; ++row) {
    const int64_t s = row / 16, l = row % 16;
    const uint8_t* m = w.meta + row * ms;
    for (int64_t g = 0; g < groups; ++g) {
      const unsigned b = (m[g >> 1] >> ((g & 1) * 4)) & 15u;
      const int64_t win = g / 8, j0 = 2 * (g % 8);
      for (int t = 0; t < 2; ++t) {
        const int64_t st = s * half + 16 * win + j0 + t;
        out.val_f32[size_t(st * 16 + l)] = v[row * half + 2 * g + t];
        const uint32_t p = t == 0 ? (b & 3u) : (b >> 2);
        out.pos[size_t((s * windows + win) * 16 + l)] |= p << (2 * (j0 + t));
      }
    }
  }
}

}  // namespace

void spmm_build_slide(const SpmmMatrix& w, SpmmSellStorage& out) {
  // The layout is in spmm.h (SpmmOps::sell_slide_f32). Why its choices: the kernel is bound by
  // load slots, and at M = 1 on a matrix in L3 also by reading the copy. 64-column windows shared
  // by 4 steps: x is loaded once per 4 steps and 71% of the slots are filled at 90% sparsity
  // (32-column windows, one per step: 63%, with four x loads per 4 steps more). Windows start on
  // multiples of 16 columns, so the x loads are aligned (a load that splits a cache line takes
  // two slots). Measured against 32-column windows, one per step (Zen 5, one thread, 90%):
  // 3072x768 M = 1 19-22 -> 16-18 us, 4096x4096 M = 1 170-178 -> 128 us.
  constexpr int64_t share = kSpmmSlideShare;
  static_assert(4 % share == 0, "steps sharing a window must tile the 4-step groups");
  constexpr int64_t W = kSpmmSlideWin;
  out = SpmmSellStorage();
  out.rows = 16;
  out.win = int(W);
  out.slots = 1;
  out.sliding = true;
  const int64_t n = w.n, slices = (n + 15) / 16;
  const int64_t* rp = w.row_ptr;
  const uint16_t* col = w.col;
  const float* val = static_cast<const float*>(w.val);
  out.run_ptr.assign(size_t(slices + 1), 0);
  out.step_ptr.assign(size_t(slices + 1), 0);
  int64_t cur[16];
  auto add_step = [&](int64_t start) {
    const int64_t st = int64_t(out.step_win.size());
    out.step_win.push_back(uint16_t(start));
    out.val_f32.resize(size_t((st + 1) * 16), 0.0f);
    out.idx.resize(size_t(((st >> 2) + 1) * 64), 0);
    return st;
  };
  for (int64_t s = 0; s < slices; ++s) {
    const int64_t r0 = 16 * s, rn = std::min(n, r0 + 16) - r0;
    for (int64_t l = 0; l < rn; ++l) cur[l] = rp[r0 + l];
    for (;;) {
      int64_t start = -1;
      for (int64_t l = 0; l < rn; ++l)
        if (cur[l] < rp[r0 + l + 1] && (start < 0 || col[cur[l]] < start)) start = col[cur[l]];
      if (start < 0) break;
      start &= ~int64_t(15);
      for (int64_t q = 0; q < share; ++q) {
        const int64_t st = add_step(start);
        for (int64_t l = 0; l < rn; ++l) {
          int64_t& p = cur[l];
          if (p < rp[r0 + l + 1] && col[p] < start + W) {
            out.val_f32[size_t(st * 16 + l)] = val[p];
            out.idx[size_t((st >> 2) * 64 + 4 * l + (st & 3))] = uint8_t(col[p] - start);
            ++p;
          }
        }
      }
    }
    // Whole 4-step groups: padding steps have zero values on the slice's last window.
    const int64_t last = out.step_win.size() > size_t(out.step_ptr[size_t(s)]) ? out.step_win.back() : 0;
    while ((int64_t(out.step_win.size()) - out.step_ptr[size_t(s)]) % 4 != 0) add_step(last);
    out.step_ptr[size_t(s + 1)] = int64_t(out.step_win.size());
  }
}

void spmm_prepare_slide(SpmmMatrix& w, SpmmSellStorage& storage, int64_t m) {
  if (!spmm_wants_slide(w, m)) return;
  spmm_build_slide(w, storage);
  w.slide = storage.view();
  w.has_slide = true;
}

bool spmm_sell_worthwhile(const SpmmMatrix& w, const SpmmSellStorage& s) {
  const double density = double(w.nnz) / (double(w.n) * double(w.k));
  return density >= 0.2 || s.nbytes() <= active().spmm.sell_keep_bytes;
}

SpmmSellGeom spmm_sell_geom(const SpmmMatrix& w) {
  const SpmmOps& ops = active().spmm;
  if (w.int8 && ops.sell_quad_s8 != nullptr) return SpmmSellGeom{16, 64, 4, true, false};
  if (!w.int8 && w.format == SpmmFormat::nm24 && ops.sell_nm24_f32 != nullptr) return SpmmSellGeom{16, 32, 1, false, true};
  return SpmmSellGeom{ops.sell_rows, ops.sell_win, 1, false, false};
}

void spmm_build_sell(const SpmmMatrix& w, SpmmSellStorage& out) {
  const SpmmSellGeom g = spmm_sell_geom(w);
  out.rows = g.rows;
  out.win = g.win;
  out.slots = g.slots;
  out.sliding = g.sliding;
  out.nm24 = g.nm24;
  out.pos.clear();
  if (g.nm24) {
    build_nm24(w, out);
    return;
  }
  if (w.int8) {
    out.val_f32.clear();
    build_any(w, out, out.val_s8);
  } else {
    out.val_s8.clear();
    build_any(w, out, out.val_f32);
  }
}

}  // namespace edgepack
