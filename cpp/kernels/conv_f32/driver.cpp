// conv_f32 driver (baseline code): picks the route, builds each register tile's row pointers
// from the plan, splits output pixels x output channels into tasks on the pool (never the
// reduction, so any thread count gives the same bits); the active path's kernels do the math.
#include <cstdint>
#include <vector>

#include "core/dispatch.h"
#include "core/thread_pool.h"
#include "kernels/conv_f32/conv_f32.h"

namespace edgepack::convf {
namespace {

// Grow-only per-thread scratch buffers, one per Tag (row pointers, partial sums, im2col rows):
// nothing is allocated once warm.
template <class T, int Tag>
T* scratch(int64_t n) {
  thread_local std::vector<T> v;
  if (static_cast<int64_t>(v.size()) < n) v.resize(static_cast<size_t>(n));
  return v.data();
}

// Below ~1M multiply-adds (a few microseconds on one core) waking a worker costs more than it
// saves, and on a shared machine a descheduled worker can stall the call (see gemm_s8/driver.cpp).
constexpr double kMinParallelMacs = 1048576.0;
constexpr double kMinMacsPerTask = 65536.0;
// Rows of A (output pixels x K floats) a task walks while one block of panels stays in L2.
constexpr int64_t kABlockBytes = 256 * 1024;

int threads_for(double macs) {
  const int t = get_num_threads();
  return macs < kMinParallelMacs ? 1 : t;
}

// Splits `rows` x `cols` work units into tasks: several per thread (a thread that loses its core
// on a shared machine leaves its remaining tasks to the others), each at least kMinMacsPerTask.
struct Split {
  int64_t rchunks = 1, cchunks = 1;
};
Split split(int threads, int64_t rchunks_min, int64_t cols, double macs) {
  Split s;
  s.rchunks = rchunks_min;
  if (threads <= 1) return s;
  const int64_t want = 8 * int64_t(threads);
  int64_t c = (want + s.rchunks - 1) / s.rchunks;
  const int64_t by_work = static_cast<int64_t>(macs / (kMinMacsPerTask * double(s.rchunks)));
  if (c > by_work) c = by_work;
  if (c > cols) c = cols;
  s.cchunks = c < 1 ? 1 : c;
  return s;
}

// Reduction blocks: B (the packed weights of one block of panels) is streamed once per register
// tile, so a block of the reduction whose B slice fits in L1 (~16 KB) is run over many tiles
// before the next one; the tiles keep their partial sums in a small per-thread buffer between
// blocks. The summation order is unchanged (k ascending), so blocking changes no bit.
constexpr int64_t kBBlockBytes = 16 * 1024;
// B slices up to this size run unblocked (no partial sums at all).
constexpr int64_t kBWholeBytes = 24 * 1024;
// Output rows that share the reduction blocks (their partial sums stay in L1/L2).
constexpr int64_t kPartRows = 240;

// Blocks of the reduction K = taps x cin_g (taps outer): whole taps when a tap's channels fit a
// block, else slices of one tap's channels.
struct KBlocks {
  int64_t n = 1, tpb = 1, nsl = 1, sl = 1;
  KBlocks(int64_t taps, int64_t cin_g, int64_t np) {
    const int64_t row = np * kNR * int64_t(sizeof(float));  // bytes of B per k
    if (taps * cin_g * row <= kBWholeBytes) {
      tpb = taps;
      sl = cin_g;
      return;
    }
    const int64_t kc = kBBlockBytes / row;
    if (cin_g <= kc) {
      tpb = kc / cin_g;
      n = (taps + tpb - 1) / tpb;
      sl = cin_g;
    } else {
      nsl = (cin_g + kc - 1) / kc;
      sl = (cin_g + nsl - 1) / nsl;
      n = taps * nsl;
    }
  }
  // Block b: taps [t0, t0 + nt), channels [c0, c0 + kc).
  void get(int64_t b, int64_t taps, int64_t cin_g, int64_t* t0, int64_t* nt, int64_t* c0, int64_t* kc) const {
    if (nsl == 1) {
      *t0 = b * tpb;
      *nt = taps - *t0 < tpb ? taps - *t0 : tpb;
      *c0 = 0;
      *kc = cin_g;
    } else {
      *t0 = b / nsl;
      *nt = 1;
      *c0 = (b % nsl) * sl;
      *kc = cin_g - *c0 < sl ? cin_g - *c0 : sl;
    }
  }
};

// The run of tap row ky of output pixel p (pixel index within the image) when its columns cross
// the left or right edge: copied into dst (kw * cin floats) with zeros for the columns outside.
const float* border_run(const Geometry& g, const ConvPlan& plan, const float* base, int64_t p, int64_t ky,
                        float* dst) {
  const int64_t oy = p / plan.ow, ox = p - oy * plan.ow;
  const int64_t iy = oy * g.sh - g.pt + ky * g.dh, ix0 = ox * g.sw - g.pl;
  const float* row = base + iy * plan.w * g.cin;
  for (int64_t kx = 0; kx < g.kw; ++kx) {
    const int64_t ix = ix0 + kx;
    float* d = dst + kx * g.cin;
    if (ix < 0 || ix >= plan.w) {
      for (int64_t c = 0; c < g.cin; ++c) d[c] = 0.0f;
    } else {
      const float* src = row + ix * g.cin;
      for (int64_t c = 0; c < g.cin; ++c) d[c] = src[c];
    }
  }
  return dst;
}

void run_gemm(const Geometry& g, const float* packed, const ConvPlan& plan, const float* x, int64_t n,
              const float* bias, const float* res, const Epilogue& ep, float* y, const ConvF32Ops& ops) {
  const int64_t hw_out = plan.oh * plan.ow, M = n * hw_out;
  const int64_t img_in = plan.h * plan.w * g.cin;
  const int64_t cin_g = g.cin_g(), cout_g = g.cout_g(), taps = g.taps();
  const int64_t K = taps * cin_g, panels = (cout_g + kNR - 1) / kNR;
  const int64_t np = ops.np;
  // Pointer groups are sized for the tallest tile; row chunks are multiples of every tile height.
  int64_t amr = 1, mr = 1, min_mr = ops.mr[1];
  for (int q = 1; q <= np; ++q) {
    const int64_t v = ops.mr[q];
    if (v > amr) amr = v;
    if (v < min_mr) min_mr = v;
    int64_t a = mr, b = v;
    while (b) { const int64_t t = a % b; a = b; b = t; }
    mr = mr / a * v;
  }
  const int64_t cbg = (panels + np - 1) / np, CB = g.groups * cbg;
  const ConvRoute route = g.route();
  const bool direct = route == ConvRoute::gemm, rowrun = route == ConvRoute::rows;
  // What the tiles see: etaps row pointers per pixel, each to ecin floats.
  const int64_t etaps = direct ? 1 : rowrun ? g.kh : taps, ecin = rowrun ? g.kw * cin_g : cin_g;
  const KBlocks kb(etaps, ecin, np);
  const double macs = double(M) * double(g.cout) * double(K);
  const int threads = threads_for(macs);
  int64_t mc = kABlockBytes / (K * int64_t(sizeof(float))) / mr * mr;
  if (mc < mr) mc = mr;
  if (mc > M) mc = M;
  int64_t mchunks = (M + mc - 1) / mc;
  // Few rows (7x7 layers at batch 1): the column blocks carry the parallelism.
  const Split sp = split(threads, mchunks, CB, macs);
  if (threads > 1 && sp.cchunks * mchunks < 2 * threads && M > mr) {
    // Not enough column blocks either: cut the rows finer, down to one tile per chunk.
    const int64_t tiles = (M + mr - 1) / mr;
    const int64_t want = (4 * int64_t(threads) + sp.cchunks - 1) / sp.cchunks;
    mchunks = want < tiles ? want : tiles;
    mc = ((M + mchunks - 1) / mchunks + mr - 1) / mr * mr;
    mchunks = (M + mc - 1) / mc;
  }
  const int64_t cchunks = sp.cchunks;
  const int64_t tasks = mchunks * cchunks;
  const int64_t wstride = K * kNR;
  const int64_t ms = (kPartRows + mr - 1) / mr * mr;  // rows sharing the K blocks (and pointer gathers)
  const int64_t parts = np * kNR;
  auto task = [&](int64_t t) {
    const int64_t mi = t % mchunks, ci = t / mchunks;
    const int64_t m0 = mi * mc, m1 = m0 + mc < M ? m0 + mc : M;
    const int64_t cb0 = CB * ci / cchunks, cb1 = CB * (ci + 1) / cchunks;
    const float** ptrs = scratch<const float*, 0>((ms + min_mr - 1) / min_mr * etaps * amr);
    float* part = kb.n > 1 ? scratch<float, 1>(ms * parts) : nullptr;
    float* brd = rowrun ? scratch<float, 2>(ms * K) : nullptr;
    ConvTile tl;
    tl.amr = amr;
    tl.wstride = wstride;
    tl.parts = parts;
    tl.ldr = g.cout;
    tl.ldc = g.cout;
    tl.ep = ep;
    // Column block cb over rows [s0, s1): row pointers of every tile ([tile][tap][amr]), then the
    // reduction blocks, each over every tile.
    auto run_block = [&](int64_t cb, int64_t s0, int64_t s1) {
      const int64_t gi = cb / cbg, p0 = (cb % cbg) * np;
      const int64_t npp = panels - p0 < np ? panels - p0 : np;
      const int64_t ch0 = gi * cout_g + p0 * kNR;  // first output channel of the block
      const float* wb = packed + (gi * panels + p0) * wstride;
      tl.nvalid = cout_g - p0 * kNR < npp * kNR ? cout_g - p0 * kNR : npp * kNR;
      tl.bias = bias ? bias + ch0 : nullptr;
      const float* xg = x + gi * cin_g;
      const int64_t mq = ops.mr[npp];
      int64_t nt = 0;
      for (int64_t m = s0; m < s1; m += mq, ++nt) {
        const int64_t rows = s1 - m < mq ? s1 - m : mq;
        const float** a = ptrs + nt * etaps * amr;
        if (direct) {
          for (int64_t r = 0; r < rows; ++r) a[r] = xg + (m + r) * g.cin;
          continue;
        }
        // Image and pixel of the tile's first row by one division, then stepped (a division per
        // row cost ~15% of a layer with 27 multiply-adds per output).
        int64_t img = m / hw_out, p = m - img * hw_out;
        for (int64_t r = 0; r < rows; ++r, ++p) {
          if (p == hw_out) p = 0, ++img;
          const float* base = xg + img * img_in;
          const int64_t* off = plan.off + p * etaps;
          for (int64_t tp = 0; tp < etaps; ++tp) {
            const int64_t o = off[tp];
            a[tp * amr + r] = o >= 0 ? base + o
                              : o == kPlanZero ? plan.zero
                                               : border_run(g, plan, base, p, tp, brd + (m + r - s0) * K + tp * ecin);
          }
        }
      }
      for (int64_t b = 0; b < kb.n; ++b) {
        int64_t t0, ntap, c0, kc;
        kb.get(b, etaps, ecin, &t0, &ntap, &c0, &kc);
        tl.taps = ntap;
        tl.kc = kc;
        tl.a_off = c0;
        tl.w = wb + (t0 * ecin + c0) * kNR;
        tl.first = b == 0;
        tl.last = b == kb.n - 1;
        int64_t i = 0;
        for (int64_t m = s0; m < s1; m += mq, ++i) {
          const int64_t rows = s1 - m < mq ? s1 - m : mq;
          tl.a = ptrs + (i * etaps + t0) * amr;
          tl.part = part ? part + (m - s0) * parts : nullptr;
          tl.c = y + m * g.cout + ch0;
          tl.res = res ? res + m * g.cout + ch0 : nullptr;
          ops.gemm_tile(tl, static_cast<int>(rows), static_cast<int>(npp));
        }
      }
    };
    // The weights of a column block (up to ~1 MB) stay in L2 while every row of the task uses them.
    for (int64_t cb = cb0; cb < cb1; ++cb)
      for (int64_t s0 = m0; s0 < m1; s0 += ms) run_block(cb, s0, s0 + ms < m1 ? s0 + ms : m1);
  };
  parallel_for(tasks, task, threads);
}

// Input rows a depthwise call covers: about this many bytes, so that they stay in L2 while each
// channel block runs down them (the block's kh-row window stays in L1 from one row to the next).
constexpr int64_t kDwL2Bytes = 192 * 1024;

void run_dw(const Geometry& g, const float* packed, const ConvPlan& plan, const float* x, int64_t n,
            const float* bias, const float* res, const Epilogue& ep, float* y, const ConvF32Ops& ops) {
  const int64_t C = g.cin, oh = plan.oh, ow = plan.ow, h = plan.h, w = plan.w;
  const int64_t rows_total = n * oh;
  const double macs = double(rows_total) * double(ow) * double(C) * double(g.taps());
  const int threads = threads_for(macs);
  // Interior pixels: every column tap inside [0, w).
  int64_t ox_lo = (g.pl + g.sw - 1) / g.sw;
  const int64_t num = w - 1 + g.pl - (g.kw - 1) * g.dw;
  int64_t ox_hi = num < 0 ? 0 : num / g.sw + 1;
  if (ox_lo > ow) ox_lo = ow;
  if (ox_hi > ow) ox_hi = ow;
  if (ox_hi < ox_lo) ox_hi = ox_lo;
  // Tasks: chunks of output rows x chunks of 16-channel blocks (channels only when rows are few).
  const int64_t cblocks = (C + kDwC - 1) / kDwC;
  int64_t rchunks = 1, cchunks = 1;
  if (threads > 1) {
    const int64_t want = 8 * int64_t(threads);
    rchunks = rows_total < want ? rows_total : want;
    if (rchunks < want) {
      cchunks = (want + rchunks - 1) / rchunks;
      if (cchunks > cblocks) cchunks = cblocks;
    }
  }
  const int64_t cp = (C + kDwC - 1) / kDwC * kDwC;
  // Output rows per call: their input rows (sh per output row) within kDwL2Bytes.
  int64_t per_call = kDwL2Bytes / (g.sh * w * C * int64_t(sizeof(float)));
  if (per_call < 1) per_call = 1;
  auto task = [&](int64_t t) {
    const int64_t ri = t % rchunks, ci = t / rchunks;
    const int64_t r0 = rows_total * ri / rchunks, r1 = rows_total * (ri + 1) / rchunks;
    const int64_t c0 = cblocks * ci / cchunks * kDwC;
    int64_t c1 = cblocks * (ci + 1) / cchunks * kDwC;
    if (c1 > C) c1 = C;
    const int64_t span = (per_call - 1) * g.sh + (g.kh - 1) * g.dh + 1;
    const float** rows = scratch<const float*, 3>(span);
    DwRows d;
    d.rows = rows;
    d.sh = g.sh;
    d.dh = g.dh;
    d.zero = plan.zero;
    d.in_w = w;
    d.c = C;
    d.kh = g.kh;
    d.kw = g.kw;
    d.sw = g.sw;
    d.dw = g.dw;
    d.pl = g.pl;
    d.out_w = ow;
    d.ox_lo = ox_lo;
    d.ox_hi = ox_hi;
    d.c0 = c0;
    d.c1 = c1;
    d.w = packed;
    d.cp = cp;
    d.bias = bias;
    d.ep = ep;
    for (int64_t r = r0; r < r1;) {
      // Rows of one image, at most per_call of them.
      const int64_t img = r / oh, oy = r - img * oh;
      int64_t nr = r1 - r < oh - oy ? r1 - r : oh - oy;
      if (nr > per_call) nr = per_call;
      const float* xi = x + img * h * w * C;
      const int64_t iy0 = oy * g.sh - g.pt, ni = (nr - 1) * g.sh + (g.kh - 1) * g.dh + 1;
      for (int64_t i = 0; i < ni; ++i) {
        const int64_t iy = iy0 + i;
        rows[i] = iy >= 0 && iy < h ? xi + iy * w * C : plan.zero;
      }
      d.nrows = nr;
      d.out = y + r * ow * C;
      d.res = res ? res + r * ow * C : nullptr;
      ops.dw_rows(d);
      r += nr;
    }
  };
  parallel_for(rchunks * cchunks, task, threads);
}

}  // namespace

void run(const Geometry& g, const float* packed, const ConvPlan& plan, const float* x, int64_t n,
         const float* bias, const float* res, const Epilogue& ep, float* y) {
  if (n <= 0 || plan.oh <= 0 || plan.ow <= 0) return;
  const ConvF32Ops& ops = active().conv_f32;
  if (g.depthwise())
    run_dw(g, packed, plan, x, n, bias, res, ep, y, ops);
  else
    run_gemm(g, packed, plan, x, n, bias, res, ep, y, ops);
}

}  // namespace edgepack::convf
