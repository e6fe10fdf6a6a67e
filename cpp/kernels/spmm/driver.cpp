#include "kernels/spmm/driver.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/dispatch.h"
#include "core/thread_pool.h"
#include "kernels/spmm/spmm.h"

namespace edgepack {
namespace {

// Output rows per task: small enough to spread over threads and keep the tile output in L1
// (64 rows x 64 columns x 4 bytes = 16 KiB), large enough that per-task overhead is noise.
constexpr int64_t kBlockRows = 64;
// Output rows per task on the tiled route: each K-block of the activation tile (in L1) is reused by
// every row of the block.
constexpr int64_t kTileBlockRows = 128;
// Bytes of the transposed activation tile one K-block covers: about two thirds of a 48 KiB L1.
constexpr int64_t kTileChunkBytes = 32768;
// From this many activation rows on, a transposed tile (vectorized over M, one broadcast weight
// per nonzero) beats gathering x per nonzero.
constexpr int64_t kTileMinM = 8;
// The sliced-windows route (where a path has it) reads its weights once per 4 activation rows;
// measured on Zen 5 (AVX-512) it beats the tiled route up to M = 64 (SpmmOps::sell_max_m) at any
// density and at every M once density reaches ~0.2 (less padding); the tiled route wins for large
// M at high sparsity. The AVX2 geometry only pays below M = 8.
constexpr double kSellMinDensity = 0.2;
// Below this many multiply-adds the call stays on the calling thread (waking workers costs more).
constexpr int64_t kParallelMinWork = int64_t(1) << 17;

inline float apply_act(float v, SpmmAct a) {
  switch (a) {
    case SpmmAct::none: return v;
    case SpmmAct::relu: return v > 0.0f ? v : 0.0f;
    case SpmmAct::gelu: return 0.5f * v * (1.0f + std::erf(v * 0.70710678118654752f));
    case SpmmAct::gelu_tanh: {
      const float u = 0.79788456080286536f * (v + 0.044715f * v * v * v);
      return 0.5f * v * (1.0f + std::tanh(u));
    }
    case SpmmAct::silu: return v / (1.0f + std::exp(-v));
  }
  return v;
}

// The activation over a contiguous output slice, with the switch outside the loop.
void apply_act_inplace(float* out, int64_t cnt, SpmmAct act) {
  switch (act) {
    case SpmmAct::none: return;
    case SpmmAct::relu:
      for (int64_t i = 0; i < cnt; ++i) out[i] = out[i] > 0.0f ? out[i] : 0.0f;
      return;
    default:
      if (active().spmm.act_f32 != nullptr) {
        active().spmm.act_f32(out, cnt, int(act));
        return;
      }
      for (int64_t i = 0; i < cnt; ++i) out[i] = apply_act(out[i], act);
      return;
  }
}

// A 64-byte aligned view of at least `count` elements of a scratch vector: the kernels load whole
// 64-byte vectors at multiples of 64 bytes from the buffer start, and a malloc'd start (16-byte
// aligned) would split every one of those loads over two cache lines (measured: the tiled route
// ran 1.4x slower or not depending on where the allocator put the buffer).
template <class T>
T* aligned64(std::vector<T>& v, size_t count) {
  constexpr size_t extra = 64 / sizeof(T);
  if (v.size() < count + extra) v.resize(count + extra);
  const uintptr_t p = reinterpret_cast<uintptr_t>(v.data());
  return reinterpret_cast<T*>((p + 63) & ~uintptr_t(63));
}

struct Tile {
  int64_t m0, rows;
  int mt;
  size_t offset;  // into the transposed-activation buffer
};

// Per-thread scratch, grown once and reused: no heap traffic per call after the first.
struct CallScratch {
  std::vector<float> xt_f32;
  std::vector<int32_t> xt_s32;  // transposed quantized activations (tile route)
  std::vector<int32_t> x_s32;   // widened quantized activations (small-M route)
  std::vector<float> xs;
  std::vector<float> xpad;      // x rows padded to whole windows (sliced-windows routes)
  std::vector<int32_t> xpad_s32;
  std::vector<uint8_t> xpad_u8;  // quantized x + 128, padded (int8 quad route)
  std::vector<Tile> tiles;
};
thread_local CallScratch tl_call;
struct TaskScratch {
  std::vector<int64_t> seg;  // K-block boundaries of the task's CSR rows
};
thread_local TaskScratch tl_task;

int tile_width(int64_t rows) {
  if (rows >= kSpmmMaxTile) return kSpmmMaxTile;
  return int((rows + 15) / 16 * 16);
}

void plan_tiles(int64_t m, int64_t k, std::vector<Tile>& tiles, size_t* total) {
  tiles.clear();
  size_t off = 0;
  for (int64_t m0 = 0; m0 < m; m0 += kSpmmMaxTile) {
    const int64_t rows = m - m0 < kSpmmMaxTile ? m - m0 : kSpmmMaxTile;
    const int mt = tile_width(rows);
    tiles.push_back(Tile{m0, rows, mt, off});
    off += size_t(k) * size_t(mt);
  }
  *total = off;
}

// xt[kk*mt + j] = src(m0 + j, kk), zero past the last row; blocked over k so the strided writes stay
// in L1.
template <class T, class Src>
void transpose_tile(const Tile& t, int64_t k, T* xt, Src src) {
  constexpr int64_t kb = 64;
  for (int64_t k0 = 0; k0 < k; k0 += kb) {
    const int64_t k1 = k0 + kb < k ? k0 + kb : k;
    for (int64_t j = 0; j < t.mt; ++j) {
      if (j < t.rows) {
        for (int64_t kk = k0; kk < k1; ++kk) xt[kk * t.mt + j] = src(t.m0 + j, kk);
      } else {
        for (int64_t kk = k0; kk < k1; ++kk) xt[kk * t.mt + j] = T(0);
      }
    }
  }
}

// K-block boundaries: seg[i*(nkb+1) + b] = first nonzero of row i with column >= b*kc.
void csr_segments(const int64_t* rp, const uint16_t* col, int64_t cnt, int64_t k, int64_t kc,
                  std::vector<int64_t>& seg) {
  const int64_t nkb = (k + kc - 1) / kc, ss = nkb + 1;
  seg.resize(size_t(cnt * ss));
  for (int64_t i = 0; i < cnt; ++i) {
    int64_t* s = seg.data() + i * ss;
    const uint16_t* lo = col + rp[i];
    const uint16_t* hi = col + rp[i + 1];
    s[0] = rp[i];
    for (int64_t b = 1; b < nkb; ++b) {
      lo = std::lower_bound(lo, hi, uint16_t(b * kc));
      s[b] = lo - col;
    }
    s[nkb] = rp[i + 1];
  }
}

// K-block length for tile width mt: small enough that the block's slice of the activation tile stays
// in L1, long enough that each row still has ~kMinSegNnz nonzeros per block (each block costs a
// row some fixed work: accumulator set-up, reduction, a load and store of its output).
constexpr int64_t kMinSegNnz = 24;
int64_t tile_kc(int mt, int64_t k, int64_t nnz_per_row) {
  int64_t kc = kTileChunkBytes / (int64_t(mt) * 4);
  int64_t max_blocks = nnz_per_row / kMinSegNnz;
  if (max_blocks < 1) max_blocks = 1;
  const int64_t kc_min = (k + max_blocks - 1) / max_blocks;
  if (kc < kc_min) kc = kc_min;
  if (kc < 16) kc = 16;
  return (kc + 7) / 8 * 8;  // a multiple of 8 keeps 2:4 meta bytes (2 groups) whole
}

template <class T> struct KernelsFor;
template <> struct KernelsFor<float> {
  using V = float;
  static SpmmCsrVecF32 csr_vec(const SpmmOps& o) { return o.csr_vec_f32; }
  static SpmmCsrTileF32 csr_tile(const SpmmOps& o) { return o.csr_tile_f32; }
  static SpmmNm24VecF32 nm24_vec(const SpmmOps& o) { return o.nm24_vec_f32; }
  static SpmmNm24TileF32 nm24_tile(const SpmmOps& o) { return o.nm24_tile_f32; }
};
template <> struct KernelsFor<int32_t> {
  using V = int8_t;
  static SpmmCsrVecS8 csr_vec(const SpmmOps& o) { return o.csr_vec_s8; }
  static SpmmCsrTileS8 csr_tile(const SpmmOps& o) { return o.csr_tile_s8; }
  static SpmmNm24VecS8 nm24_vec(const SpmmOps& o) { return o.nm24_vec_s8; }
  static SpmmNm24TileS8 nm24_tile(const SpmmOps& o) { return o.nm24_tile_s8; }
};

// The shared route. T is the activation/accumulator type (float, or int32 for int8 weights).
// Small M: kernels write raw sums into `raw` ([m, n], may alias the final output) and epi(mi, n0,
// cnt, src, stride) turns them into outputs in place. Large M: x arrives transposed in `xt` per tile.
template <class T, class Epi>
void run_core(const SpmmMatrix& w, int64_t m, const T* x, const T* xt, const std::vector<Tile>& tiles,
              T* raw, const Epi& epi) {
  using K = KernelsFor<T>;
  using V = typename K::V;
  const SpmmOps& ops = active().spmm;
  const V* val = static_cast<const V*>(w.val);
  const int64_t n = w.n, k = w.k, half = k / 2, ms = (k / 4 + 1) / 2;
  const bool small = m < kTileMinM;
  const int64_t rows_per_task = small ? kBlockRows : kTileBlockRows;
  const int64_t n_tasks = (n + rows_per_task - 1) / rows_per_task;
  const int64_t work = (w.nnz > 0 ? w.nnz : 1) * m;
  const int max_threads = work < kParallelMinWork ? 1 : 0;

  auto task = [&](int64_t ti) {
    const int64_t n0 = ti * rows_per_task;
    const int64_t cnt = n - n0 < rows_per_task ? n - n0 : rows_per_task;
    if (small) {
      for (int64_t m0 = 0; m0 < m; m0 += kSpmmVecRows) {
        const int mr = int(m - m0 < kSpmmVecRows ? m - m0 : kSpmmVecRows);
        T* out = raw + m0 * n + n0;
        if (w.format == SpmmFormat::csr)
          K::csr_vec(ops)(w.row_ptr + n0, w.col, val, cnt, x + m0 * k, k, mr, out, n);
        else
          K::nm24_vec(ops)(val + n0 * half, w.meta + n0 * ms, k, cnt, x + m0 * k, k, mr, out, n);
        for (int r = 0; r < mr; ++r) epi(m0 + r, n0, cnt, out + r * n, int64_t(1));
      }
      return;
    }
    alignas(64) T yt[kTileBlockRows * kSpmmMaxTile];
    TaskScratch& s = tl_task;
    int64_t seg_kc = -1, nkb = 0;
    for (const Tile& t : tiles) {
      const int64_t kc = tile_kc(t.mt, k, w.nnz / (n > 0 ? n : 1));
      if (kc != seg_kc) {
        seg_kc = kc;
        nkb = (k + kc - 1) / kc;
        if (w.format == SpmmFormat::csr) csr_segments(w.row_ptr + n0, w.col, cnt, k, kc, s.seg);
      }
      if (nkb == 0)
        for (int64_t i = 0; i < cnt * t.mt; ++i) yt[i] = T(0);
      for (int64_t b = 0; b < nkb; ++b) {
        if (w.format == SpmmFormat::csr) {
          K::csr_tile(ops)(s.seg.data() + b, nkb + 1, w.col, val, cnt, xt + t.offset, t.mt, yt, b > 0);
        } else {
          const int64_t g0 = b * kc / 4, g1 = ((b + 1) * kc < k ? (b + 1) * kc : k) / 4;
          K::nm24_tile(ops)(val + n0 * half, w.meta + n0 * ms, k, g0, g1, cnt, xt + t.offset, t.mt, yt, b > 0);
        }
      }
      for (int64_t j = 0; j < t.rows; ++j) epi(t.m0 + j, n0, cnt, yt + j, int64_t(t.mt));
    }
  };
  parallel_for(n_tasks, task, max_threads);
}

// Per-row dynamic quantization (scale = absmax / 127, round half to even); the quantized row goes
// to put(mi, kk, q). Returns the flat index of the first non-finite value, or -1.
int64_t row_scales(const float* x, int64_t m, int64_t k, float* xs) {
  for (int64_t mi = 0; mi < m; ++mi) {
    const float* r = x + mi * k;
    float amax = 0.0f;
    for (int64_t kk = 0; kk < k; ++kk) {
      if (!std::isfinite(r[kk])) return mi * k + kk;
      const float a = std::fabs(r[kk]);
      amax = a > amax ? a : amax;
    }
    xs[mi] = amax / 127.0f;
  }
  return -1;
}

inline int32_t quantize1(float v, float s) {
  if (s == 0.0f) return 0;
  float q = std::nearbyint(v / s);
  q = q > 127.0f ? 127.0f : (q < -127.0f ? -127.0f : q);
  return int32_t(q);
}

}  // namespace

namespace {

bool sell_route(const SpmmMatrix& w, int64_t m) {
  if (m <= 0 || w.n <= 0 || w.nnz <= 0) return false;
  const SpmmOps& ops = active().spmm;
  if (w.int8 ? (ops.sell_vec_s8 == nullptr && ops.sell_quad_s8 == nullptr) : ops.sell_vec_f32 == nullptr) return false;
  const SpmmSellGeom g = spmm_sell_geom(w);
  if (g.rows < 1 || g.rows > kBlockRows || kBlockRows % g.rows != 0) return false;
  const double density = double(w.nnz) / (double(w.n) * double(w.k));
  // The quad geometry reads its weights once per 8 activation rows and beats the tiled route at
  // every M measured (up to 128 at 90% sparsity, Zen 5).
  if (m < kTileMinM || g.slots == 4) return true;
  if (ops.sell_max_m < kTileMinM) return false;
  return m <= ops.sell_max_m || density >= kSellMinDensity;
}

// The float32 sliding-windows copy: unstructured float32 weights, M <= kSpmmSlideMaxM, on a path
// that has the kernel (the copy does not depend on the path's geometry).
bool slide_wanted(const SpmmMatrix& w, int64_t m) {
  return !w.int8 && w.format == SpmmFormat::csr && m >= 1 && m <= kSpmmSlideMaxM && w.nnz > 0 && w.n > 0 &&
         active().spmm.sell_slide_f32 != nullptr;
}

bool slide_route(const SpmmMatrix& w, int64_t m) { return w.has_slide && slide_wanted(w, m); }

bool sell_matches(const SpmmMatrix& w) {
  const SpmmSellGeom g = spmm_sell_geom(w);
  return w.has_sell && w.sell.rows == g.rows && w.sell.win == g.win && w.sell.slots == g.slots &&
         w.sell.sliding == g.sliding &&
         w.sell.nm24 == g.nm24;
}

template <class T> std::vector<T>& xpad_buffer();
template <> std::vector<float>& xpad_buffer<float>() { return tl_call.xpad; }
template <> std::vector<int32_t>& xpad_buffer<int32_t>() { return tl_call.xpad_s32; }

// Tasks over groups of R-row slices (kBlockRows rows each) on the pool; within a task, the x rows
// in calls of up to `rows`: call(s0, s1, m0, mr) writes raw rows m0 .. m0 + mr - 1 ([m, n]) for
// slices [s0, s1), then epi turns that stretch of each row into outputs.
template <class Raw, class Epi, class Call>
void slice_tasks(const SpmmMatrix& w, int64_t R, int64_t m, int rows, Raw* raw, const Epi& epi, const Call& call) {
  const int64_t n = w.n, per_task = kBlockRows / R, slices = (n + R - 1) / R;
  const int64_t n_tasks = (slices + per_task - 1) / per_task;
  const int max_threads = (w.nnz > 0 ? w.nnz : 1) * m < kParallelMinWork ? 1 : 0;
  auto task = [&](int64_t ti) {
    const int64_t s0 = ti * per_task, s1 = s0 + per_task < slices ? s0 + per_task : slices;
    const int64_t n0 = s0 * R, cnt = (s1 * R < n ? s1 * R : n) - n0;
    for (int64_t m0 = 0; m0 < m; m0 += rows) {
      const int mr = int(m - m0 < rows ? m - m0 : rows);
      call(s0, s1, m0, mr);
      for (int r = 0; r < mr; ++r) epi(m0 + r, n0, cnt, raw + (m0 + r) * n + n0, int64_t(1));
    }
  };
  parallel_for(n_tasks, task, max_threads);
}

// Small M over a sliced-windows copy (`sell`: w.sell or w.slide): x rows padded to whole windows,
// tasks over groups of 16-row slices; raw sums land in `raw` ([m, n]) and epi turns them into
// outputs.
template <class T, class Kern, class Epi>
void run_sell(const SpmmMatrix& w, const SpmmSell& sell, Kern kern, const T* x, int64_t m, T* raw, const Epi& epi) {
  // Sliding windows may start at any column below k: one window more of zeros.
  const int64_t n = w.n, k = w.k, R = sell.rows,
                ldx = (k + (sell.sliding ? 2 : 1) * sell.win - 1) / sell.win * sell.win;
  T* xpad = aligned64(xpad_buffer<T>(), size_t(m * ldx));
  for (int64_t mi = 0; mi < m; ++mi) {
    for (int64_t kk = 0; kk < k; ++kk) xpad[mi * ldx + kk] = x[mi * k + kk];
    for (int64_t kk = k; kk < ldx; ++kk) xpad[mi * ldx + kk] = T(0);
  }
  const T* xp = xpad;
  slice_tasks(w, R, m, kSpmmVecRows, raw, epi, [&](int64_t s0, int64_t s1, int64_t m0, int mr) {
    kern(sell, s0, s1, n, xp + m0 * ldx, ldx, mr, raw + m0 * n, n);
  });
}

// The int8 quad route: x quantized straight into uint8 (value + 128) rows padded to whole windows
// (q(mi, kk) gives the int8 value), up to kSpmmQuadRows rows per kernel call so each weight step is
// read once per 8 activation rows.
// prep(xpad, ldx) fills the m padded rows (pad bytes 128) and may fail (non-finite x).
template <class Prep, class Epi>
Status run_sell_quad(const SpmmMatrix& w, int64_t m, const Prep& prep, int32_t* raw, const Epi& epi) {
  // A sliding window may start at any column (multiple of 4) up to k - 1: pad by one window.
  const int64_t n = w.n, k = w.k, R = w.sell.rows, ldx = (k + 2 * w.sell.win - 1) / w.sell.win * w.sell.win;
  uint8_t* xpad = aligned64(tl_call.xpad_u8, size_t(m * ldx));
  const Status st = prep(xpad, ldx);
  if (!st.ok()) return st;
  const uint8_t* xp = xpad;
  const SpmmSellQuadS8 kern = active().spmm.sell_quad_s8;
  slice_tasks(w, R, m, kSpmmQuadRows, raw, epi, [&](int64_t s0, int64_t s1, int64_t m0, int mr) {
    kern(w.sell, s0, s1, n, xp + m0 * ldx, ldx, mr, raw + m0 * n, n);
  });
  return Status::good();
}

}  // namespace

Status spmm_run(const SpmmMatrix& w, const float* x, int64_t m, const float* bias, SpmmAct act, float* y) {
  if (m <= 0 || w.n <= 0) return Status::good();
  const int64_t n = w.n, k = w.k;
  CallScratch& cs = tl_call;
  const bool sell = sell_matches(w) && sell_route(w, m);
  const bool small = sell || m < kTileMinM;  // no transposed tile needed
  size_t xt_size = 0;
  if (!small) plan_tiles(m, k, cs.tiles, &xt_size);

  if (!w.int8) {
    const float* xt = nullptr;
    if (!small) {
      float* xtp = aligned64(cs.xt_f32, xt_size);
      for (const Tile& t : cs.tiles)
        transpose_tile(t, k, xtp + t.offset, [&](int64_t mi, int64_t kk) { return x[mi * k + kk]; });
      xt = xtp;
    }
    auto epi = [&](int64_t mi, int64_t n0, int64_t cnt, const float* src, int64_t stride) {
      float* out = y + mi * n + n0;
      if (bias) {
        const float* b = bias + n0;
        for (int64_t i = 0; i < cnt; ++i) out[i] = src[i * stride] + b[i];
      } else if (stride != 1) {
        for (int64_t i = 0; i < cnt; ++i) out[i] = src[i * stride];
      }
      apply_act_inplace(out, cnt, act);
    };
    if (slide_route(w, m)) {
      run_sell<float>(w, w.slide, active().spmm.sell_slide_f32, x, m, y, epi);
      return Status::good();
    }
    if (sell) {
      run_sell<float>(w, w.sell, w.sell.nm24 ? active().spmm.sell_nm24_f32 : active().spmm.sell_vec_f32, x, m, y, epi);
      return Status::good();
    }
    run_core<float>(w, m, x, xt, cs.tiles, y, epi);
    return Status::good();
  }

  cs.xs.resize(size_t(m));
  float* xs = cs.xs.data();
  // Small M: the int32 sums land in y's own memory and are converted in place.
  int32_t* raw = reinterpret_cast<int32_t*>(y);
  const float* ws = w.scale;
  auto epi = [&](int64_t mi, int64_t n0, int64_t cnt, const int32_t* src, int64_t stride) {
    float* out = y + mi * n + n0;
    const float sx = xs[mi];
    const float* wsn = ws + n0;
    if (bias) {
      const float* b = bias + n0;
      for (int64_t i = 0; i < cnt; ++i) out[i] = float(src[i * stride]) * sx * wsn[i] + b[i];
    } else {
      for (int64_t i = 0; i < cnt; ++i) out[i] = float(src[i * stride]) * sx * wsn[i];
    }
    apply_act_inplace(out, cnt, act);
  };
  if (sell && w.sell.slots == 4) {
    // The gemm path's vectorized quantizer, same rounding (x / scale, half to even); the scale it
    // gives an all-zero row (1 instead of 0) only ever multiplies a zero sum.
    auto prep = [&](uint8_t* xp, int64_t ldx) {
      return active().gemm.quant_rows(x, m, k, k, xp, ldx, ldx, xs, uint8_t(0x80));
    };
    return run_sell_quad(w, m, prep, raw, epi);
  }
  const int64_t bad = row_scales(x, m, k, xs);
  if (bad >= 0) return Status::at(StatusCode::non_finite, bad);
  const int32_t* xq = nullptr;
  const int32_t* xt = nullptr;
  if (small) {
    cs.x_s32.resize(size_t(m * k));
    for (int64_t mi = 0; mi < m; ++mi)
      for (int64_t kk = 0; kk < k; ++kk) cs.x_s32[size_t(mi * k + kk)] = quantize1(x[mi * k + kk], xs[mi]);
    xq = cs.x_s32.data();
  } else {
    int32_t* xtp = aligned64(cs.xt_s32, xt_size);
    for (const Tile& t : cs.tiles)
      transpose_tile(t, k, xtp + t.offset, [&](int64_t mi, int64_t kk) { return quantize1(x[mi * k + kk], xs[mi]); });
    xt = xtp;
  }
  if (sell)
    run_sell<int32_t>(w, w.sell, active().spmm.sell_vec_s8, xq, m, raw, epi);
  else
    run_core<int32_t>(w, m, xq, xt, cs.tiles, raw, epi);
  return Status::good();
}

Status spmm_acc_s8(const SpmmMatrix& w, const int8_t* xq, int64_t m, int32_t* acc) {
  if (m <= 0 || w.n <= 0) return Status::good();
  const int64_t n = w.n, k = w.k;
  CallScratch& cs = tl_call;
  const bool sell = sell_matches(w) && sell_route(w, m);
  const bool small = sell || m < kTileMinM;
  if (sell && w.sell.slots == 4) {
    auto copy = [&](int64_t mi, int64_t n0, int64_t cnt, const int32_t* src, int64_t) {
      int32_t* out = acc + mi * n + n0;
      if (src != out) std::memcpy(out, src, size_t(cnt) * sizeof(int32_t));
    };
    auto prep = [&](uint8_t* xp, int64_t ldx) {
      for (int64_t mi = 0; mi < m; ++mi) {
        uint8_t* d = xp + mi * ldx;
        for (int64_t kk = 0; kk < k; ++kk) d[kk] = uint8_t(int32_t(xq[mi * k + kk]) + 128);
        for (int64_t kk = k; kk < ldx; ++kk) d[kk] = 128;
      }
      return Status::good();
    };
    return run_sell_quad(w, m, prep, acc, copy);
  }
  const int32_t* x32 = nullptr;
  const int32_t* xt = nullptr;
  if (small) {
    cs.x_s32.resize(size_t(m * k));
    for (int64_t i = 0; i < m * k; ++i) cs.x_s32[size_t(i)] = xq[i];
    x32 = cs.x_s32.data();
  } else {
    size_t xt_size = 0;
    plan_tiles(m, k, cs.tiles, &xt_size);
    int32_t* xtp = aligned64(cs.xt_s32, xt_size);
    for (const Tile& t : cs.tiles)
      transpose_tile(t, k, xtp + t.offset, [&](int64_t mi, int64_t kk) { return int32_t(xq[mi * k + kk]); });
    xt = xtp;
  }
  auto epi = [&](int64_t mi, int64_t n0, int64_t cnt, const int32_t* src, int64_t stride) {
    int32_t* out = acc + mi * n + n0;
    if (src == out) return;
    for (int64_t i = 0; i < cnt; ++i) out[i] = src[i * stride];
  };
  if (sell)
    run_sell<int32_t>(w, w.sell, active().spmm.sell_vec_s8, x32, m, acc, epi);
  else
    run_core<int32_t>(w, m, x32, xt, cs.tiles, acc, epi);
  return Status::good();
}

bool spmm_wants_slide(const SpmmMatrix& w, int64_t m) { return !w.has_slide && slide_wanted(w, m); }

bool spmm_wants_sell(const SpmmMatrix& w, int64_t m) {
  if (slide_wanted(w, m)) return false;  // served by the sliding copy
  if (!sell_route(w, m)) return false;
  return !sell_matches(w);
}

}  // namespace edgepack
