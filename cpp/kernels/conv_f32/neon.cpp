// NEON path for conv_f32 (AArch64: Cortex-A53/A72 and up; neon_dotprod inherits it: float32 has
// nothing to gain from the dot-product instructions).
//
// GEMM tile: 6 output pixels x one panel of 16 output channels = 24 q-register accumulators,
// plus the 4 panel registers and one broadcast (ld1r) of 32: 24 independent FMA chains cover the
// 4-5 cycle FMA latency of two FMA pipes (Cortex-A72/A76). The accumulators start at the bias;
// then the residual and the activation from registers. Channel tails (a layer whose output
// channels are not a multiple of 16) go through a small stack buffer: NEON has no masked stores.
//
// Depthwise rows: 4 channels per q register, each channel block run down all the call's output
// rows with its weights in registers (9 for 3x3, 25 for 5x5: 32 registers), four output pixels
// per step for independent chains. Border pixels read the zero row for their columns outside
// the input; a channel tail (C not a multiple of 4) goes through a 4-float buffer.
#include <arm_neon.h>

#include <cstddef>
#include <cstdint>

#include "core/dispatch.h"
#include "kernels/conv_f32/conv_f32.h"

namespace edgepack::neon {
namespace {

#define EP_INLINE inline __attribute__((always_inline))
// a > b ? a : b and a < b ? a : b, the x86 max/min the shared v_exp clamps with
EP_INLINE float32x4_t v_max(float32x4_t a, float32x4_t b) { return vbslq_f32(vcgtq_f32(a, b), a, b); }
EP_INLINE float32x4_t v_min(float32x4_t a, float32x4_t b) { return vbslq_f32(vcltq_f32(a, b), a, b); }
#include "kernels/common/vexp_neon.inc"

using convf::Act;
using convf::kNR;

EP_INLINE float32x4_t v_act(float32x4_t y, const convf::Epilogue& e) {
  const float32x4_t zero = vdupq_n_f32(0.0f), one = vdupq_n_f32(1.0f);
  switch (e.act) {
    case Act::none: return y;
    case Act::relu: return vmaxq_f32(y, zero);
    case Act::clip: return vminq_f32(vmaxq_f32(y, vdupq_n_f32(e.p0)), vdupq_n_f32(e.p1));
    case Act::hardswish: {
      const float32x4_t h = vaddq_f32(vmulq_f32(y, vdupq_n_f32(1.0f / 6.0f)), vdupq_n_f32(0.5f));
      return vmulq_f32(y, vminq_f32(vmaxq_f32(h, zero), one));
    }
    case Act::hardsigmoid: {
      const float32x4_t h = vaddq_f32(vmulq_f32(y, vdupq_n_f32(e.p0)), vdupq_n_f32(e.p1));
      return vminq_f32(vmaxq_f32(h, zero), one);
    }
    case Act::silu: return vdivq_f32(y, vaddq_f32(one, v_exp(vnegq_f32(y))));
    case Act::leakyrelu: return vbslq_f32(vcltq_f32(y, zero), vmulq_f32(y, vdupq_n_f32(e.p0)), y);
    case Act::sigmoid: return vdivq_f32(one, vaddq_f32(one, v_exp(vnegq_f32(y))));
    case Act::tanh: {
      const float32x4_t t = v_exp(vmulq_f32(vabsq_f32(y), vdupq_n_f32(-2.0f)));
      const float32x4_t r = vdivq_f32(vsubq_f32(one, t), vaddq_f32(one, t));
      // sign of y onto r (r >= 0)
      return vreinterpretq_f32_u32(vorrq_u32(vreinterpretq_u32_f32(r),
                                             vandq_u32(vreinterpretq_u32_f32(y), vdupq_n_u32(0x80000000u))));
    }
  }
  return y;
}

// n (0..4) floats into a register (the rest zero) and back.
EP_INLINE float32x4_t load_n(const float* p, int64_t n) {
  if (n >= 4) return vld1q_f32(p);
  float b[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  for (int64_t i = 0; i < n; ++i) b[i] = p[i];
  return vld1q_f32(b);
}
EP_INLINE void store_n(float* p, int64_t n, float32x4_t v) {
  if (n >= 4) {
    vst1q_f32(p, v);
    return;
  }
  float b[4];
  vst1q_f32(b, v);
  for (int64_t i = 0; i < n; ++i) p[i] = b[i];
}

// ---- GEMM tile --------------------------------------------------------------------------------

template <int MR>
void tile(const ConvTile& t) {
  float32x4_t acc[MR][4];
  if (t.first) {
    float32x4_t b[4];
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) b[j] = t.bias ? load_n(t.bias + 4 * j, t.nvalid - 4 * j) : vdupq_n_f32(0.0f);
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
      for (int j = 0; j < 4; ++j) acc[r][j] = b[j];
  } else {
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
      for (int j = 0; j < 4; ++j) acc[r][j] = vld1q_f32(t.part + r * t.parts + 4 * j);
  }
  const int64_t kc = t.kc;
  const float* w = t.w;
  for (int64_t tap = 0; tap < t.taps; ++tap) {
    const float* const* ap = t.a + tap * t.amr;
    const float* ar[MR];
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) ar[r] = ap[r] + t.a_off;
    for (int64_t i = 0; i < kc; ++i) {
      const float32x4_t b0 = vld1q_f32(w), b1 = vld1q_f32(w + 4), b2 = vld1q_f32(w + 8), b3 = vld1q_f32(w + 12);
#pragma GCC unroll 8
      for (int r = 0; r < MR; ++r) {
        const float32x4_t av = vld1q_dup_f32(ar[r] + i);
        acc[r][0] = vfmaq_f32(acc[r][0], av, b0);
        acc[r][1] = vfmaq_f32(acc[r][1], av, b1);
        acc[r][2] = vfmaq_f32(acc[r][2], av, b2);
        acc[r][3] = vfmaq_f32(acc[r][3], av, b3);
      }
      w += kNR;
    }
  }
  if (!t.last) {
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
      for (int j = 0; j < 4; ++j) vst1q_f32(t.part + r * t.parts + 4 * j, acc[r][j]);
    return;
  }
  for (int r = 0; r < MR; ++r)
    for (int j = 0; j < 4; ++j) {
      const int64_t n = t.nvalid - 4 * j;
      if (n <= 0) break;
      float32x4_t v = acc[r][j];
      if (t.res) v = vaddq_f32(v, load_n(t.res + r * t.ldr + 4 * j, n));
      store_n(t.c + r * t.ldc + 4 * j, n, v_act(v, t.ep));
    }
}

constexpr int kMR = 6;
using TileFn = void (*)(const ConvTile&);
constexpr TileFn kTiles[kMR + 1] = {nullptr, &tile<1>, &tile<2>, &tile<3>, &tile<4>, &tile<5>, &tile<6>};

void gemm_tile(const ConvTile& t, int mr, int /*np: always 1 here*/) { kTiles[mr](t); }

// ---- depthwise row ---------------------------------------------------------------------------

// One channel block of 4 lanes (kFull) or a tail of n < 4 lanes (through load_n/store_n) down
// every output row of the call, KH x KW compile-time taps (0: runtime) with the weights in
// registers (3x3 and 5x5: 25 + 4 accumulators fit in 32 q registers).
template <int KH, int KW, bool kFull>
void dw_block(const DwRows& d, int64_t c, int64_t n, float32x4_t b) {
  constexpr int kT = KH * KW;
  const int64_t kh = KH ? KH : d.kh, kw = KW ? KW : d.kw;
  float32x4_t wv[kT > 0 ? kT : 1];
  if (kT > 0) {
#pragma GCC unroll 25
    for (int t = 0; t < (kT > 0 ? kT : 1); ++t) wv[t] = vld1q_f32(d.w + t * d.cp + c);
  }
  auto ld = [&](const float* p) { return kFull ? vld1q_f32(p) : load_n(p, n); };
  auto wt = [&](int64_t t) { return kT > 0 ? wv[t] : vld1q_f32(d.w + t * d.cp + c); };
  const float* zc = d.zero + c;
  const int64_t C = d.c, in_w = d.in_w, sw = d.sw, dil = d.dw, pl = d.pl, dh = d.dh;
  const int64_t xs = sw * C, xd = dil * C, ld_out = d.out_w * C;
  for (int64_t j = 0; j < d.nrows; ++j) {
    const float* const* rows = d.rows + j * d.sh;
    float* out = d.out + j * ld_out + c;
    const float* res = d.res ? d.res + j * ld_out + c : nullptr;
    auto store = [&](int64_t ox, float32x4_t acc) {
      if (res) acc = vaddq_f32(acc, ld(res + ox * C));
      acc = v_act(acc, d.ep);
      if (kFull)
        vst1q_f32(out + ox * C, acc);
      else
        store_n(out + ox * C, n, acc);
    };
    // A single pixel (border, or left over from the groups of four): taps spread over four
    // accumulators; a column outside the row reads the zero row.
    auto single = [&](int64_t ox) {
      float32x4_t a[4] = {b, vdupq_n_f32(0.0f), vdupq_n_f32(0.0f), vdupq_n_f32(0.0f)};
      const int64_t ix0 = ox * sw - pl;
#pragma GCC unroll 5
      for (int64_t kx = 0; kx < kw; ++kx) {
        const int64_t ix = ix0 + kx * dil;
        const bool in = static_cast<uint64_t>(ix) < static_cast<uint64_t>(in_w);
        const int64_t off = ix * C + c;
#pragma GCC unroll 5
        for (int64_t ky = 0; ky < kh; ++ky) {
          const float* p = in ? rows[ky * dh] + off : zc;
          const int t = static_cast<int>(ky * kw + kx);
          a[t & 3] = vfmaq_f32(a[t & 3], ld(p), wt(t));
        }
      }
      store(ox, vaddq_f32(vaddq_f32(a[0], a[1]), vaddq_f32(a[2], a[3])));
    };
    for (int64_t ox = 0; ox < d.ox_lo; ++ox) single(ox);
    int64_t ox = d.ox_lo;
    if (kT > 0 && kFull) {
      const float* base[KH > 0 ? KH : 1];
#pragma GCC unroll 5
      for (int ky = 0; ky < KH; ++ky) base[ky] = rows[ky * dh] + (ox * sw - pl) * C + c;
      for (; ox + 4 <= d.ox_hi; ox += 4) {
        float32x4_t a0 = b, a1 = b, a2 = b, a3 = b;
#pragma GCC unroll 5
        for (int ky = 0; ky < KH; ++ky) {
          const float* p = base[ky];
#pragma GCC unroll 5
          for (int kx = 0; kx < KW; ++kx) {
            const float32x4_t w = wv[ky * KW + kx];
            const float* q = p + kx * xd;
            a0 = vfmaq_f32(a0, vld1q_f32(q), w);
            a1 = vfmaq_f32(a1, vld1q_f32(q + xs), w);
            a2 = vfmaq_f32(a2, vld1q_f32(q + 2 * xs), w);
            a3 = vfmaq_f32(a3, vld1q_f32(q + 3 * xs), w);
          }
          base[ky] = p + 4 * xs;
        }
        store(ox, a0);
        store(ox + 1, a1);
        store(ox + 2, a2);
        store(ox + 3, a3);
      }
    }
    for (; ox < d.ox_hi; ++ox) single(ox);
    for (ox = d.ox_hi > d.ox_lo ? d.ox_hi : d.ox_lo; ox < d.out_w; ++ox) single(ox);
  }
}

template <int KH, int KW>
void dw_blocks(const DwRows& d) {
  for (int64_t c = d.c0; c < d.c1; c += 4) {
    const int64_t n = d.c1 - c < 4 ? d.c1 - c : 4;
    const float32x4_t b = d.bias ? load_n(d.bias + c, n) : vdupq_n_f32(0.0f);
    if (n == 4)
      dw_block<KH, KW, true>(d, c, n, b);
    else
      dw_block<KH, KW, false>(d, c, n, b);
  }
}

void dw_rows(const DwRows& d) {
  if (d.kh == 3 && d.kw == 3)
    dw_blocks<3, 3>(d);
  else if (d.kh == 5 && d.kw == 5)
    dw_blocks<5, 5>(d);
  else
    dw_blocks<0, 0>(d);
}

#undef EP_INLINE

}  // namespace

void register_conv_f32(KernelTable& t) {
  t.conv_f32.gemm_tile = gemm_tile;
  t.conv_f32.np = 1;
  t.conv_f32.mr[1] = kMR;
  t.conv_f32.dw_rows = dw_rows;
}

}  // namespace edgepack::neon
