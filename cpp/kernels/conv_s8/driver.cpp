// conv_s8 driver (baseline code): weight packing through the gemm_s8 packer, the per-shape
// indirection buffer, the channel-padded copy, the task split over pixels and channels (never
// the reduction, so every thread count gives the same bits), and the depthwise row split.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <vector>

#include "core/dispatch.h"
#include "core/scratch.h"
#include "core/thread_pool.h"
#include "kernels/conv_s8/conv_s8.h"

namespace edgepack::conv {

namespace {

constexpr int64_t kRound = 4;  // k group of the dot-product tiles (gemm::kKU)

int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

// Grow-only per-thread scratch: nothing is allocated once a thread has seen the largest call.
// Only the calling thread writes it; pool workers read it during the same call.
struct Scratch {
  std::vector<uint8_t> zbuf, copy, rows;
  std::vector<int32_t> init;
  std::vector<IgemmArgs> groups;
};
Scratch& scratch() {
  thread_local Scratch s;
  return s;
}

// Calls below this many multiply-accumulates run on the calling thread (waking a worker costs
// microseconds; see gemm_s8/driver.cpp); tasks get at least kMinTaskMacs.
constexpr double kMinParallelMacs = 1048576.0;
constexpr double kMinTaskMacs = 65536.0;
// Input bytes a row chunk's taps touch, kept in L2 while the weight panels stream past.
constexpr int64_t kABlockBytes = 128 * 1024;

}  // namespace

int64_t out_size(int64_t in, int64_t k, int64_t s, int64_t d, int64_t p0, int64_t p1) {
  const int64_t span = in + p0 + p1 - (d * (k - 1) + 1);
  return span < 0 ? -1 : span / s + 1;
}

Layout layout(const Geom& g) {
  Layout l;
  l.cg = g.cin / g.groups;
  l.coutg = g.cout / g.groups;
  l.taps = g.kh * g.kw;
  l.depthwise = l.cg == 1 && l.coutg == 1;
  if (l.depthwise) {
    l.cpad = round_up(g.cin, 64);
    l.data_bytes = l.taps * l.cpad;
    l.sum_len = l.cpad;
    return l;
  }
  l.cp = round_up(l.cg, kRound);
  l.kdim = l.taps * l.cp;
  l.im2row = l.cg <= kRound && l.taps > 1;
  if (l.im2row) l.kdim = round_up(l.taps * l.cg, kRound);
  l.padded_copy = l.cp != l.cg && !l.im2row;
  l.direct = g.kh == 1 && g.kw == 1 && g.sh == 1 && g.sw == 1 && g.pt == 0 && g.pl == 0 && g.pb == 0 &&
             g.pr == 0 && !l.padded_copy;
  l.group_bytes = gemm::packed_data_bytes(l.coutg, l.kdim);
  l.group_colsum = gemm::packed_colsum_len(l.coutg);
  l.data_bytes = g.groups * l.group_bytes;
  l.sum_len = g.groups * l.group_colsum;
  return l;
}

Status pack(const Geom& g, const int8_t* w, int8_t* data, int32_t* sums) {
  const Layout l = layout(g);
  const int64_t total = g.cout * l.cg * l.taps;
  for (int64_t i = 0; i < total; ++i)
    if (w[i] == -128) return Status::at(StatusCode::out_of_range, i);
  if (l.depthwise) {
    std::memset(data, 0, static_cast<size_t>(l.data_bytes));
    std::memset(sums, 0, sizeof(int32_t) * static_cast<size_t>(l.sum_len));
    for (int64_t c = 0; c < g.cin; ++c)
      for (int64_t t = 0; t < l.taps; ++t) {
        data[t * l.cpad + c] = w[c * l.taps + t];
        sums[c] += w[c * l.taps + t];
      }
    return Status::good();
  }
  // Each group is a GEMM weight matrix [Cout/groups][kdim], K ordered (kh, kw, c), each tap's
  // channels padded to cp (im2row: packed back to back, cg per tap), packed by the gemm_s8 packer.
  const int64_t tstride = l.im2row ? l.cg : l.cp;
  std::vector<int8_t> w2(static_cast<size_t>(l.coutg * l.kdim));
  for (int64_t gi = 0; gi < g.groups; ++gi) {
    std::fill(w2.begin(), w2.end(), int8_t(0));
    for (int64_t n = 0; n < l.coutg; ++n)
      for (int64_t c = 0; c < l.cg; ++c)
        for (int64_t t = 0; t < l.taps; ++t)
          w2[n * l.kdim + t * tstride + c] = w[((gi * l.coutg + n) * l.cg + c) * l.taps + t];
    const Status st = gemm::pack(w2.data(), l.coutg, l.kdim, l.kdim, data + gi * l.group_bytes, sums + gi * l.group_colsum);
    if (!st.ok()) return st;
  }
  return Status::good();
}

void unpack(const Geom& g, const int8_t* data, int8_t* w) {
  const Layout l = layout(g);
  if (l.depthwise) {
    for (int64_t c = 0; c < g.cin; ++c)
      for (int64_t t = 0; t < l.taps; ++t) w[c * l.taps + t] = data[t * l.cpad + c];
    return;
  }
  const int64_t tstride = l.im2row ? l.cg : l.cp;
  std::vector<int8_t> w2(static_cast<size_t>(l.coutg * l.kdim));
  for (int64_t gi = 0; gi < g.groups; ++gi) {
    PackedB b;
    b.data = data + gi * l.group_bytes;
    b.n = l.coutg;
    b.k = l.kdim;
    b.kp = l.kdim;
    b.panels = (l.coutg + gemm::kNR - 1) / gemm::kNR;
    gemm::unpack(b, w2.data());
    for (int64_t n = 0; n < l.coutg; ++n)
      for (int64_t c = 0; c < l.cg; ++c)
        for (int64_t t = 0; t < l.taps; ++t)
          w[((gi * l.coutg + n) * l.cg + c) * l.taps + t] = w2[n * l.kdim + t * tstride + c];
  }
}

// ---- plans ------------------------------------------------------------------------------------

struct Plan {
  int64_t h = 0, w = 0, oh = 0, ow = 0;
  std::vector<int32_t> ind;  // [oh*ow][taps]: byte offset of the tap's pixel in the image, -1 outside
};

struct Packed::Cache {
  std::mutex m;
  std::vector<std::shared_ptr<const Plan>> plans;  // most recent last
};

namespace {

constexpr size_t kMaxPlans = 8;

std::shared_ptr<const Plan> build_plan(const Geom& g, const Layout& l, int64_t h, int64_t w, int64_t pix_stride) {
  auto p = std::make_shared<Plan>();
  p->h = h;
  p->w = w;
  p->oh = out_size(h, g.kh, g.sh, g.dh, g.pt, g.pb);
  p->ow = out_size(w, g.kw, g.sw, g.dw, g.pl, g.pr);
  p->ind.resize(static_cast<size_t>(p->oh * p->ow * l.taps));
  int32_t* o = p->ind.data();
  for (int64_t oy = 0; oy < p->oh; ++oy)
    for (int64_t ox = 0; ox < p->ow; ++ox)
      for (int64_t ky = 0; ky < g.kh; ++ky)
        for (int64_t kx = 0; kx < g.kw; ++kx) {
          const int64_t iy = oy * g.sh - g.pt + ky * g.dh, ix = ox * g.sw - g.pl + kx * g.dw;
          const bool in = iy >= 0 && iy < h && ix >= 0 && ix < w;
          *o++ = in ? static_cast<int32_t>((iy * w + ix) * pix_stride) : -1;
        }
  return p;
}

// im2row: rows [m0, m1) of group gi as rows of kdim bytes in `out`: each tap's cg channels back to
// back, K ordered (kh, kw, c); taps outside the image and the tail up to kdim hold the zero point.
void im2row(const Geom& g, const Layout& l, const uint8_t* x, int64_t h, int64_t w, int64_t oh, int64_t ow, int64_t gi,
            uint8_t zp, int64_t m0, int64_t m1, uint8_t* out) {
  const int64_t cg = l.cg, span = g.kw * cg;
  const bool contiguous = g.dw == 1 && g.groups == 1;  // a kernel row's taps are adjacent pixels
  for (int64_t m = m0; m < m1; ++m) {
    const int64_t img = m / (oh * ow), pix = m - img * oh * ow, oy = pix / ow, ox = pix - oy * ow;
    const uint8_t* xi = x + img * h * w * g.cin + gi * cg;
    uint8_t* o = out + (m - m0) * l.kdim;
    const int64_t ix0 = ox * g.sw - g.pl;
    const bool row_in = ix0 >= 0 && ix0 + (g.kw - 1) * g.dw < w;
    for (int64_t ky = 0; ky < g.kh; ++ky, o += span) {
      const int64_t iy = oy * g.sh - g.pt + ky * g.dh;
      if (iy < 0 || iy >= h) {
        std::memset(o, zp, static_cast<size_t>(span));
      } else if (contiguous && row_in) {
        std::memcpy(o, xi + (iy * w + ix0) * g.cin, static_cast<size_t>(span));
      } else {
        for (int64_t kx = 0; kx < g.kw; ++kx) {
          const int64_t ix = ix0 + kx * g.dw;
          if (ix < 0 || ix >= w) std::memset(o + kx * cg, zp, static_cast<size_t>(cg));
          else std::memcpy(o + kx * cg, xi + (iy * w + ix) * g.cin, static_cast<size_t>(cg));
        }
      }
    }
    std::memset(o, zp, static_cast<size_t>(l.kdim - l.taps * cg));
  }
}

}  // namespace

Packed::Packed(const Geom& g, const int8_t* data, const int32_t* sums)
    : g_(g), l_(conv::layout(g)), data_(data), sums_(sums), cache_(new Cache) {}

Packed::~Packed() { delete cache_; }

void Packed::run(const uint8_t* x, bool x_u8, int32_t zp, int64_t n, int64_t h, int64_t w, const ConvEpi& e) const {
  const Geom& g = g_;
  const Layout& l = l_;
  const int64_t oh = out_size(h, g.kh, g.sh, g.dh, g.pt, g.pb), ow = out_size(w, g.kw, g.sw, g.dw, g.pl, g.pr);
  if (n <= 0 || oh <= 0 || ow <= 0 || g.cout <= 0) return;
  const ConvS8Ops& ops = active().conv_s8;
  Scratch& s = scratch();
  const int threads = get_num_threads();
  const int64_t zlen = std::max<int64_t>({g.cin, l.cp * g.groups, l.cpad}) + 64;
  uint8_t* zbuf = grow(s.zbuf, zlen);
  std::memset(zbuf, static_cast<uint8_t>(zp), static_cast<size_t>(zlen));

  if (l.depthwise) {
    int32_t* init = grow(s.init, l.cpad);
    for (int64_t c = 0; c < l.cpad; ++c)
      init[c] = static_cast<int32_t>(static_cast<uint32_t>(-zp) * static_cast<uint32_t>(sums_[c]));
    DwArgs base;
    base.h = h;
    base.w = w;
    base.c = g.cin;
    base.oh = oh;
    base.ow = ow;
    base.kh = static_cast<int32_t>(g.kh);
    base.kw = static_cast<int32_t>(g.kw);
    base.sh = static_cast<int32_t>(g.sh);
    base.sw = static_cast<int32_t>(g.sw);
    base.dh = static_cast<int32_t>(g.dh);
    base.dw = static_cast<int32_t>(g.dw);
    base.pt = static_cast<int32_t>(g.pt);
    base.pl = static_cast<int32_t>(g.pl);
    base.wt = data_;
    base.cpad = l.cpad;
    base.init = init;
    base.wsum = sums_;
    base.zbuf = zbuf;
    base.x_unsigned = x_u8;
    base.epi = &e;
    // Tasks: (image, block of output rows, channel chunk). Channels are split only when rows
    // alone would leave threads idle; each task covers at least kMinTaskMacs.
    const double macs = static_cast<double>(n * oh * ow) * static_cast<double>(g.cin * l.taps);
    const int nt = macs < kMinParallelMacs / 4 ? 1 : threads;
    const int64_t ct = ops.dw_ct > 0 ? ops.dw_ct : 16;
    const int64_t ctiles = (g.cin + ct - 1) / ct;
    int64_t cchunks = 1, rows_per = oh;
    if (nt > 1) {
      const int64_t want = 4 * nt;
      const double row_macs = static_cast<double>(ow * g.cin * l.taps);
      rows_per = std::max<int64_t>(1, static_cast<int64_t>(kMinTaskMacs / row_macs));
      rows_per = std::min(rows_per, std::max<int64_t>(1, n * oh / want));
      const int64_t rtasks = n * ((oh + rows_per - 1) / rows_per);
      if (rtasks < want) cchunks = std::min(ctiles, (want + rtasks - 1) / rtasks);
    }
    const int64_t rchunks = (oh + rows_per - 1) / rows_per;
    const int64_t tasks = n * rchunks * cchunks;
    parallel_for(tasks, [&](int64_t t) {
      const int64_t ci = t % cchunks, rest = t / cchunks, ri = rest % rchunks, img = rest / rchunks;
      DwArgs a = base;
      a.x = x + img * h * w * g.cin;
      a.row0 = img * oh * ow;
      const int64_t r0 = ri * rows_per, r1 = std::min(oh, r0 + rows_per);
      const int64_t c0 = (ctiles * ci / cchunks) * ct, c1 = std::min(g.cin, (ctiles * (ci + 1) / cchunks) * ct);
      if (r0 < r1 && c0 < c1) ops.dw(a, r0, r1, c0, c1);
    }, nt);
    return;
  }

  // igemm / direct. A channel-padded copy when a tap's channels are not whole k groups.
  const uint8_t* xin = x;
  int64_t pix_stride = g.cin;
  const int64_t pixels = n * h * w;
  if (l.padded_copy) {
    pix_stride = g.groups * l.cp;
    uint8_t* cp = grow(s.copy, pixels * pix_stride);
    for (int64_t p = 0; p < pixels; ++p) {
      const uint8_t* src = x + p * g.cin;
      uint8_t* dst = cp + p * pix_stride;
      for (int64_t gi = 0; gi < g.groups; ++gi) {
        std::memcpy(dst + gi * l.cp, src + gi * l.cg, static_cast<size_t>(l.cg));
        std::memset(dst + gi * l.cp + l.cg, static_cast<uint8_t>(zp), static_cast<size_t>(l.cp - l.cg));
      }
    }
    xin = cp;
  }
  std::shared_ptr<const Plan> plan;
  if (!l.direct && !l.im2row) {
    std::lock_guard<std::mutex> lk(cache_->m);
    auto& v = cache_->plans;
    for (size_t i = 0; i < v.size(); ++i)
      if (v[i]->h == h && v[i]->w == w) {
        plan = v[i];
        break;
      }
    if (!plan) {
      if (v.size() >= kMaxPlans) v.erase(v.begin());
      plan = build_plan(g, l, h, w, pix_stride);
      v.push_back(plan);
    }
  }
  const bool flip = x_u8 != ops.a_unsigned;
  const int32_t shift = flip ? (x_u8 ? -128 : 128) : 0;
  const int64_t M = n * oh * ow;
  IgemmArgs* args = grow(s.groups, g.groups);
  for (int64_t gi = 0; gi < g.groups; ++gi) {
    IgemmArgs& a = args[gi];
    a = IgemmArgs();
    a.x = xin;
    a.img_stride = h * w * pix_stride;
    a.rows_per_img = oh * ow;
    a.ind = plan ? plan->ind.data() : nullptr;
    a.pix_stride = pix_stride;
    a.zbuf = zbuf;
    a.taps = l.im2row ? 1 : l.taps;
    a.cp = l.im2row ? l.kdim : l.cp;
    a.goff = gi * (l.padded_copy ? l.cp : l.cg);
    a.m = M;
    a.xor80 = flip;
    a.corr = -(zp + shift);
    a.b.data = data_ + gi * l.group_bytes;
    a.b.colsum = sums_ + gi * l.group_colsum;
    a.b.n = l.coutg;
    a.b.k = l.kdim;
    a.b.kp = l.kdim;
    a.b.panels = (l.coutg + gemm::kNR - 1) / gemm::kNR;
    a.n_off = gi * l.coutg;
    a.epi = &e;
  }
  const int64_t P = args[0].b.panels;
  const int64_t mr = ops.mr > 0 ? ops.mr : 1, np = ops.np > 0 ? ops.np : 1;
  const double macs = static_cast<double>(M) * static_cast<double>(g.cout) * static_cast<double>(l.kdim);
  const int nt = macs < kMinParallelMacs ? 1 : threads;
  int64_t mc = std::max<int64_t>(mr, kABlockBytes / l.kdim / mr * mr);
  if (M <= 4 * mr) mc = M;
  const int64_t ntiles = (P + np - 1) / np;
  int64_t nchunks = 1;
  int64_t mchunks = (M + mc - 1) / mc;
  if (nt > 1) {
    // Several tasks per thread, handed out dynamically (a thread that loses its core leaves its
    // tasks to the others); split the output channels when pixels alone are too few.
    const int64_t want = 8 * nt, have = g.groups * mchunks;
    if (have < want) nchunks = std::min(ntiles, (want + have - 1) / have);
    const int64_t by_work = std::max<int64_t>(1, static_cast<int64_t>(macs / (kMinTaskMacs * have)));
    nchunks = std::max<int64_t>(1, std::min(nchunks, by_work));
    if (g.groups * mchunks * nchunks < 2 * nt && mc > mr) {  // few rows: smaller row chunks
      mc = std::max(mr, (M / (2 * nt)) / mr * mr);
      mchunks = (M + mc - 1) / mc;
    }
  }
  const int64_t tasks = g.groups * mchunks * nchunks;
  parallel_for(tasks, [&](int64_t t) {
    const int64_t per = mchunks * nchunks, gi = t / per, r = t % per, mi = r % mchunks, ni = r / mchunks;
    const int64_t m0 = mi * mc, m1 = std::min(M, m0 + mc);
    const int64_t p0 = (ntiles * ni / nchunks) * np, p1 = std::min(P, (ntiles * (ni + 1) / nchunks) * np);
    if (m0 >= m1 || p0 >= p1) return;
    if (!l.im2row) {
      ops.igemm(args[gi], m0, m1, p0, p1);
      return;
    }
    // This task's rows, copied into the worker's own grow-only buffer, then the direct route.
    uint8_t* rows = grow(scratch().rows, (m1 - m0) * l.kdim);
    im2row(g, l, x, h, w, oh, ow, gi, static_cast<uint8_t>(zp), m0, m1, rows);
    IgemmArgs a = args[gi];
    a.x = rows;
    a.pix_stride = l.kdim;
    a.goff = 0;
    a.out_row0 = m0;
    ops.igemm(a, 0, m1 - m0, p0, p1);
  }, nt);
}

}  // namespace edgepack::conv
