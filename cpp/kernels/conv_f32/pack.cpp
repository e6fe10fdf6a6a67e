// conv_f32 weight packing and the per-input-shape indirection plan (baseline code; layouts in
// conv_f32.h).
#include <cstdint>
#include <cstring>

#include "kernels/conv_f32/conv_f32.h"

namespace edgepack::convf {

namespace {
int64_t out_size(int64_t in, int64_t k, int64_t s, int64_t d, int64_t p0, int64_t p1) {
  const int64_t span = d * (k - 1) + 1;
  const int64_t padded = in + p0 + p1;
  return padded < span ? 0 : (padded - span) / s + 1;
}
int64_t panels_of(const Geometry& g) { return (g.cout_g() + kNR - 1) / kNR; }
}  // namespace

int64_t Geometry::out_h(int64_t h) const { return out_size(h, kh, sh, dh, pt, pb); }
int64_t Geometry::out_w(int64_t w) const { return out_size(w, kw, sw, dw, pl, pr); }

int64_t packed_floats(const Geometry& g) {
  if (g.depthwise()) return g.taps() * ((g.cin + kDwC - 1) / kDwC * kDwC);
  return g.groups * panels_of(g) * g.taps() * g.cin_g() * kNR;
}

// Calls f(i, j) for every weight: i its index in OIHW w, j its index in the packed layout.
template <class F>
void for_each_weight(const Geometry& g, F f) {
  const int64_t taps = g.taps(), cin_g = g.cin_g(), cout_g = g.cout_g();
  if (g.depthwise()) {
    const int64_t cp = (g.cin + kDwC - 1) / kDwC * kDwC;
    for (int64_t c = 0; c < g.cin; ++c)
      for (int64_t t = 0; t < taps; ++t) f(c * taps + t, t * cp + c);
    return;
  }
  const int64_t k = taps * cin_g, panels = panels_of(g);
  for (int64_t gi = 0; gi < g.groups; ++gi)
    for (int64_t o = 0; o < cout_g; ++o) {
      const int64_t panel = (gi * panels + o / kNR) * k * kNR, src = (gi * cout_g + o) * cin_g * taps;
      for (int64_t c = 0; c < cin_g; ++c)
        for (int64_t t = 0; t < taps; ++t) f(src + c * taps + t, panel + (t * cin_g + c) * kNR + o % kNR);
    }
}

void pack(const Geometry& g, const float* w, float* out) {
  std::memset(out, 0, static_cast<size_t>(packed_floats(g)) * sizeof(float));
  for_each_weight(g, [&](int64_t i, int64_t j) { out[j] = w[i]; });
}

void unpack(const Geometry& g, const float* packed, float* w) {
  for_each_weight(g, [&](int64_t i, int64_t j) { w[i] = packed[j]; });
}

int64_t plan_offsets(const Geometry& g, int64_t h, int64_t w) {
  switch (g.route()) {
    case ConvRoute::rows: return g.out_h(h) * g.out_w(w) * g.kh;
    case ConvRoute::igemm: return g.out_h(h) * g.out_w(w) * g.taps();
    default: return 0;
  }
}

int64_t plan_zeros(const Geometry& g, int64_t w) {
  switch (g.route()) {
    case ConvRoute::rows: return g.kw * g.cin;
    case ConvRoute::igemm: return g.cin_g();
    case ConvRoute::dw: return w * g.cin;
    default: return 0;
  }
}

void build_plan(const Geometry& g, int64_t h, int64_t w, int64_t* off, float* zero, ConvPlan* plan) {
  plan->h = h;
  plan->w = w;
  plan->oh = g.out_h(h);
  plan->ow = g.out_w(w);
  plan->n_off = plan_offsets(g, h, w);
  plan->off = plan->n_off ? off : nullptr;
  plan->zero = plan_zeros(g, w) ? zero : nullptr;
  if (plan->zero) std::memset(zero, 0, static_cast<size_t>(plan_zeros(g, w)) * sizeof(float));
  if (!plan->off) return;
  const bool rows = g.route() == ConvRoute::rows;
  int64_t* o = off;
  for (int64_t oy = 0; oy < plan->oh; ++oy)
    for (int64_t ox = 0; ox < plan->ow; ++ox) {
      const int64_t ix0 = ox * g.sw - g.pl;
      for (int64_t ky = 0; ky < g.kh; ++ky) {
        const int64_t iy = oy * g.sh - g.pt + ky * g.dh;
        const bool in_y = iy >= 0 && iy < h;
        if (rows) {
          // The kernel row reads columns ix0 .. ix0 + kw - 1 (column dilation 1 on this route).
          *o++ = !in_y ? kPlanZero : (ix0 < 0 || ix0 + g.kw > w) ? kPlanBorder : (iy * w + ix0) * g.cin;
          continue;
        }
        for (int64_t kx = 0; kx < g.kw; ++kx) {
          const int64_t ix = ix0 + kx * g.dw;
          *o++ = (in_y && ix >= 0 && ix < w) ? (iy * w + ix) * g.cin : kPlanZero;
        }
      }
    }
}

}  // namespace edgepack::convf
