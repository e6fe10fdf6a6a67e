// int8 GEMM driver (baseline flags): packs weights, prepares activations in a per-thread scratch
// buffer, cuts the output into microkernel tiles and spreads them over the thread pool. Threads
// split N (column strips) and, for tall A, M; never K, so results do not depend on thread count.
#include "kernels/gemm_s8/driver.h"

#include <algorithm>
#include <cmath>
#include <atomic>
#include <cstring>

#include "core/thread_pool.h"

namespace edgepack {
namespace {

// Below this many multiply-accumulates per thread the pool costs more than it saves.
constexpr int64_t kMinMacsPerThread = int64_t(1) << 17;

struct Scratch {
  std::vector<uint8_t> a;
  std::vector<float> row_scale;
  std::vector<int32_t> corr;
};

Scratch& scratch() {
  thread_local Scratch s;
  return s;
}

template <class T>
T* grow(std::vector<T>& v, size_t n) {
  if (v.size() < n) v.resize(n + n / 4 + 64);
  return v.data();
}

}  // namespace

Status pack_b(const int8_t* w, int64_t n, int64_t k, int64_t ldw, PackedB* out) {
  PackedB& b = *out;
  b.n = n;
  b.k = k;
  b.kp = (k + kGemmKGroup - 1) / kGemmKGroup * kGemmKGroup;
  b.panels = (n + kGemmPanel - 1) / kGemmPanel;
  const int64_t bytes = b.panels * b.kp * kGemmPanel;
  b.storage.assign(size_t(bytes + 64), 0);
  b.offset = int64_t((64 - (reinterpret_cast<uintptr_t>(b.storage.data()) & 63)) & 63);
  b.colsum.assign(size_t(b.panels * kGemmPanel), 0);
  int8_t* dst = b.storage.data() + b.offset;
  for (int64_t r = 0; r < n; ++r) {
    const int8_t* wr = w + r * ldw;
    int8_t* pp = dst + (r / kGemmPanel) * b.kp * kGemmPanel + (r % kGemmPanel) * kGemmKGroup;
    int32_t sum = 0;
    for (int64_t i = 0; i < k; ++i) {
      if (wr[i] == -128) return Status::at(StatusCode::out_of_range, r * k + i);
      pp[(i / 4) * 64 + (i % 4)] = wr[i];
      sum += wr[i];
    }
    b.colsum[size_t(r)] = sum;
  }
  return Status::good();
}

void unpack_b(const PackedB& b, int8_t* w) {
  const int8_t* src = b.data();
  for (int64_t r = 0; r < b.n; ++r) {
    const int8_t* pp = src + (r / kGemmPanel) * b.kp * kGemmPanel + (r % kGemmPanel) * kGemmKGroup;
    for (int64_t i = 0; i < b.k; ++i) w[r * b.k + i] = pp[(i / 4) * 64 + (i % 4)];
  }
}

Status gemm_s8_run(const PackedB& b, int64_t m, const GemmInput& in, const GemmOutput& out) {
  const int64_t n = b.n, k = b.k;
  if (m <= 0 || n <= 0) return Status::good();
  const GemmOps& ops = active().gemm;
  const int64_t lda = std::max<int64_t>(b.kp, 4) + 60;  // +60: rows start 64 bytes apart at most
  const int64_t lda_al = (lda + 63) / 64 * 64;
  Scratch& sc = scratch();
  uint8_t* abuf = grow(sc.a, size_t(m * lda_al));
  int32_t* corr = grow(sc.corr, size_t(m));
  float* rscale = grow(sc.row_scale, size_t(m));
  const uint8_t xmask = ops.a_unsigned ? 0x80 : 0x00;

  const int threads = get_num_threads();
  // Activation preparation, split over rows for tall inputs.
  const int64_t prep_chunk = std::max<int64_t>(1, (int64_t(1) << 16) / std::max<int64_t>(k, 1));
  const int64_t prep_tasks = (m + prep_chunk - 1) / prep_chunk;
  std::atomic<int64_t> bad_index{-1};
  auto prep = [&](int64_t t) {
    const int64_t r0 = t * prep_chunk, r1 = std::min(m, r0 + prep_chunk);
    for (int64_t r = r0; r < r1; ++r) {
      uint8_t* s = abuf + r * lda_al;
      if (k < b.kp + 4) std::memset(s + k, 0, size_t(b.kp + 4 - k));
    }
    if (in.kind == GemmInput::int8_raw) {
      const int8_t* a = static_cast<const int8_t*>(in.a);
      for (int64_t r = r0; r < r1; ++r) {
        uint8_t* s = abuf + r * lda_al;
        const uint8_t* ar = reinterpret_cast<const uint8_t*>(a + r * in.lda);
        if (xmask) {
          for (int64_t i = 0; i < k; ++i) s[i] = ar[i] ^ 0x80;
        } else {
          std::memcpy(s, ar, size_t(k));
        }
        corr[r] = xmask ? -128 : 0;
      }
    } else if (in.kind == GemmInput::f32_dynamic) {
      const float* x = static_cast<const float*>(in.a);
      Status st = ops.quant_rows(x + r0 * in.lda, in.lda, r1 - r0, k, abuf + r0 * lda_al, lda_al, xmask,
                                 rscale + r0);
      if (!st.ok()) {
        int64_t expected = -1;
        const int64_t row = r0 + st.index / std::max<int64_t>(k, 1);
        const int64_t flat = row * k + st.index % std::max<int64_t>(k, 1);
        bad_index.compare_exchange_strong(expected, flat);
      }
      for (int64_t r = r0; r < r1; ++r) corr[r] = xmask ? -128 : 0;
    } else {
      const float* x = static_cast<const float*>(in.a);
      const float inv = in.x_scale;
      const int32_t zp = in.x_zero_point;
      const float lo = in.x_uint8 ? 0.0f : -128.0f, hi = in.x_uint8 ? 255.0f : 127.0f;
      // s read by the kernel = value + offset; see gemm_s8.h.
      const int32_t offset = in.x_uint8 ? (ops.a_unsigned ? zp : zp - 128) : (ops.a_unsigned ? zp + 128 : zp);
      for (int64_t r = r0; r < r1; ++r) {
        const float* xr = x + r * in.lda;
        uint8_t* s = abuf + r * lda_al;
        for (int64_t i = 0; i < k; ++i) {
          if (!std::isfinite(xr[i])) {
            int64_t expected = -1;
            bad_index.compare_exchange_strong(expected, r * k + i);
            break;
          }
          float q = std::nearbyint(xr[i] / inv) + float(zp);
          q = q < lo ? lo : (q > hi ? hi : q);
          const int32_t qi = int32_t(q);
          // Stored byte: the kernel's reading of (qi - zp) + offset.
          s[i] = uint8_t(qi - zp + offset);
        }
        corr[r] = -offset;
        rscale[r] = in.x_scale;
      }
    }
  };
  parallel_for(prep_tasks, prep, m * k >= (int64_t(1) << 18) ? threads : 1);
  if (bad_index.load() >= 0) return Status::at(StatusCode::non_finite, bad_index.load());

  const bool small = m <= 4;
  const int mr = small ? int(m) : ops.mr;
  const int np = small ? ops.np_small : ops.np;
  const GemmUkernel kern = small ? ops.ukernel_small : ops.ukernel;
  const int64_t strips = (b.panels + np - 1) / np;
  // Tall A: also split M into blocks of whole tiles so two threads have work when N is narrow.
  const int64_t mtiles = (m + mr - 1) / mr;
  int64_t mblock_tiles = mtiles;
  if (!small && strips < 4 * threads) mblock_tiles = std::max<int64_t>(1, (mtiles + 3) / 4);
  const int64_t mblocks = (mtiles + mblock_tiles - 1) / mblock_tiles;
  const int64_t tasks = strips * mblocks;
  const int64_t macs = m * n * std::max<int64_t>(k, 1);
  const int use_threads = int(std::min<int64_t>(threads, std::max<int64_t>(1, macs / kMinMacsPerThread)));

  auto run = [&](int64_t t) {
    const int64_t strip = t % strips, mb = t / strips;
    const int64_t p0 = strip * np;
    const int pn = int(std::min<int64_t>(np, b.panels - p0));
    const int64_t c0 = p0 * kGemmPanel;
    const int ncols = int(std::min<int64_t>(int64_t(pn) * kGemmPanel, n - c0));
    GemmTile tile;
    tile.lda = lda_al;
    tile.b = b.data() + p0 * b.kp * kGemmPanel;
    tile.kp4 = b.kp / 4;
    tile.np = pn;
    tile.ncols = ncols;
    tile.colsum = b.colsum.data() + c0;
    tile.c = nullptr;
    tile.ldc = out.ld;
    tile.y = nullptr;
    tile.ldy = out.ld;
    tile.col_scale = out.col_scale ? out.col_scale + c0 : nullptr;
    tile.bias = out.bias ? out.bias + c0 : nullptr;
    tile.act = out.act;
    const int64_t mt0 = mb * mblock_tiles, mt1 = std::min(mtiles, mt0 + mblock_tiles);
    for (int64_t mt = mt0; mt < mt1; ++mt) {
      const int64_t r0 = mt * mr;
      tile.mr = int(std::min<int64_t>(mr, m - r0));
      tile.a = abuf + r0 * lda_al;
      tile.corr = corr + r0;
      tile.row_scale = rscale + r0;
      if (out.y) {
        tile.y = out.y + r0 * out.ld + c0;
      } else {
        tile.c = out.c + r0 * out.ld + c0;
      }
      kern(tile);
    }
  };
  parallel_for(tasks, run, use_threads);
  return Status::good();
}

}  // namespace edgepack
