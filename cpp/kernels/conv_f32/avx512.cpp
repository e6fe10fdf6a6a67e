// AVX-512 path for conv_f32 (avx512_vnni inherits it: float32 has nothing to gain from VNNI).
//
// GEMM tile: mr output pixels x np panels of 16 output channels, one zmm accumulator per (pixel,
// panel): 6x64, 8x48, 12x32 or 12x16, i.e. 24 (or 12) independent FMA chains, enough to cover
// the FMA latency on cores with one (Zen 4) or two (Intel) 512-bit FMA units. Per k step: np
// aligned panel loads and mr broadcasts (folded into the FMA as {1to16} memory operands), so
// loads never limit (at most 14 per 24 FMAs). Accumulators start at the bias; the products come
// tap by tap, channel by channel; then the residual, then the activation, from registers.
//
// Depthwise rows: channels in lanes (16 per zmm, masked loads/stores for the channel tail), each
// channel block run down all the call's output rows (their input stays in L2, the block's window
// of kh rows in L1) with its 9 or 25 weights (3x3, 5x5) in registers, four output pixels at a
// time for independent FMA chains. Border pixels read the zero row for their columns outside the
// input (a padding row is the zero row itself), four accumulators per pixel.
#include <immintrin.h>

#include <cstddef>
#include <cstdint>

#include "core/dispatch.h"
#include "kernels/conv_f32/conv_f32.h"

namespace edgepack::avx512 {
namespace {

#define EP_INLINE inline __attribute__((always_inline))
#include "kernels/common/vexp_zmm.inc"

using convf::Act;
using convf::kNR;

EP_INLINE __mmask16 lanes(int64_t n) {
  return n >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << n) - 1);
}

// 1 / (1 + e^-y) and y / (1 + e^-y); tanh(y) = sign(y) (1 - e^-2|y|) / (1 + e^-2|y|).
EP_INLINE __m512 v_act(__m512 y, const convf::Epilogue& e) {
  const __m512 zero = _mm512_setzero_ps(), one = _mm512_set1_ps(1.0f);
  switch (e.act) {
    case Act::none: return y;
    case Act::relu: return _mm512_max_ps(y, zero);
    case Act::clip: return _mm512_min_ps(_mm512_max_ps(y, _mm512_set1_ps(e.p0)), _mm512_set1_ps(e.p1));
    case Act::hardswish: {
      const __m512 h = _mm512_add_ps(_mm512_mul_ps(y, _mm512_set1_ps(1.0f / 6.0f)), _mm512_set1_ps(0.5f));
      return _mm512_mul_ps(y, _mm512_min_ps(_mm512_max_ps(h, zero), one));
    }
    case Act::hardsigmoid: {
      const __m512 h = _mm512_add_ps(_mm512_mul_ps(y, _mm512_set1_ps(e.p0)), _mm512_set1_ps(e.p1));
      return _mm512_min_ps(_mm512_max_ps(h, zero), one);
    }
    case Act::silu: return _mm512_div_ps(y, _mm512_add_ps(one, v_exp(_mm512_sub_ps(zero, y))));
    case Act::leakyrelu: {
      const __mmask16 neg = _mm512_cmp_ps_mask(y, zero, _CMP_LT_OQ);
      return _mm512_mask_mul_ps(y, neg, y, _mm512_set1_ps(e.p0));
    }
    case Act::sigmoid: return _mm512_div_ps(one, _mm512_add_ps(one, v_exp(_mm512_sub_ps(zero, y))));
    case Act::tanh: {
      const __m512 ay = _mm512_abs_ps(y);
      const __m512 t = v_exp(_mm512_mul_ps(ay, _mm512_set1_ps(-2.0f)));
      const __m512 r = _mm512_div_ps(_mm512_sub_ps(one, t), _mm512_add_ps(one, t));
      // sign of y onto r (r >= 0)
      return _mm512_castsi512_ps(_mm512_or_si512(
          _mm512_castps_si512(r), _mm512_and_si512(_mm512_castps_si512(y), _mm512_set1_epi32(int(0x80000000u)))));
    }
  }
  return y;
}

// ---- GEMM tile --------------------------------------------------------------------------------

// The epilogue of any activation from a spilled tile (acc[MR][NP][16]): out of line, so that
// the accumulators of the K loop never need an address.
__attribute__((noinline)) void finish_any(const ConvTile& t, int mr, int np, const float* acc) {
  for (int r = 0; r < mr; ++r)
    for (int p = 0; p < np; ++p) {
      const __mmask16 mk = lanes(t.nvalid - p * kNR);
      __m512 v = _mm512_load_ps(acc + (r * np + p) * 16);
      if (t.res) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mk, t.res + r * t.ldr + p * kNR));
      _mm512_mask_storeu_ps(t.c + r * t.ldc + p * kNR, mk, v_act(v, t.ep));
    }
}

// One k step of the tile: NP panel rows times MR broadcast activations.
template <int MR, int NP>
EP_INLINE void kstep(__m512 (&acc)[MR][NP], const float* const (&ar)[MR], int64_t i, const float* w, int64_t ws) {
  __m512 b[NP];
#pragma GCC unroll 4
  for (int p = 0; p < NP; ++p) b[p] = _mm512_loadu_ps(w + p * ws);
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r) {
    const __m512 av = _mm512_set1_ps(ar[r][i]);
#pragma GCC unroll 4
    for (int p = 0; p < NP; ++p) acc[r][p] = _mm512_fmadd_ps(av, b[p], acc[r][p]);
  }
}

template <int MR, int NP>
void tile(const ConvTile& t) {
  __m512 acc[MR][NP];
  __mmask16 mk[NP];
#pragma GCC unroll 4
  for (int p = 0; p < NP; ++p) mk[p] = lanes(t.nvalid - p * kNR);
  if (t.first) {
#pragma GCC unroll 4
    for (int p = 0; p < NP; ++p) {
      const __m512 b = t.bias ? _mm512_maskz_loadu_ps(mk[p], t.bias + p * kNR) : _mm512_setzero_ps();
#pragma GCC unroll 16
      for (int r = 0; r < MR; ++r) acc[r][p] = b;
    }
  } else {
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
      for (int p = 0; p < NP; ++p) acc[r][p] = _mm512_loadu_ps(t.part + r * t.parts + p * kNR);
  }
  const int64_t kc = t.kc, ws = t.wstride;
  const float* w = t.w;
  if (kc == 3) {
    // The first layer of an image network (3 input channels): one tap's channels unrolled, so
    // that the 3-iteration loop's branch and bookkeeping do not dominate 72 FMAs per tap.
    for (int64_t tap = 0; tap < t.taps; ++tap) {
      const float* const* ap = t.a + tap * t.amr;
      const float* ar[MR];
#pragma GCC unroll 16
      for (int r = 0; r < MR; ++r) ar[r] = ap[r] + t.a_off;
      kstep<MR, NP>(acc, ar, 0, w, ws);
      kstep<MR, NP>(acc, ar, 1, w + kNR, ws);
      kstep<MR, NP>(acc, ar, 2, w + 2 * kNR, ws);
      w += 3 * kNR;
    }
  } else {
    for (int64_t tap = 0; tap < t.taps; ++tap) {
      const float* const* ap = t.a + tap * t.amr;
      const float* ar[MR];
#pragma GCC unroll 16
      for (int r = 0; r < MR; ++r) ar[r] = ap[r] + t.a_off;
      for (int64_t i = 0; i < kc; ++i) {
        kstep<MR, NP>(acc, ar, i, w, ws);
        w += kNR;
      }
    }
  }
  if (!t.last) {
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
      for (int p = 0; p < NP; ++p) _mm512_storeu_ps(t.part + r * t.parts + p * kNR, acc[r][p]);
    return;
  }
  const Act act = t.ep.act;
  if (act == Act::none || act == Act::relu || act == Act::clip) {
    // The common epilogues straight from registers: residual, clamp, store.
    const bool clamp = act != Act::none;
    const __m512 lo = _mm512_set1_ps(act == Act::relu ? 0.0f : t.ep.p0);
    const __m512 hi = act == Act::relu ? _mm512_set1_ps(__builtin_inff()) : _mm512_set1_ps(t.ep.p1);
    const bool full = t.nvalid == NP * kNR;
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
      for (int p = 0; p < NP; ++p) {
        __m512 v = acc[r][p];
        if (t.res) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mk[p], t.res + r * t.ldr + p * kNR));
        if (clamp) v = _mm512_min_ps(_mm512_max_ps(v, lo), hi);
        if (full)
          _mm512_storeu_ps(t.c + r * t.ldc + p * kNR, v);
        else
          _mm512_mask_storeu_ps(t.c + r * t.ldc + p * kNR, mk[p], v);
      }
    return;
  }
  alignas(64) float buf[MR * NP * 16];
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int p = 0; p < NP; ++p) _mm512_store_ps(buf + (r * NP + p) * 16, acc[r][p]);
  finish_any(t, MR, NP, buf);
}

using TileFn = void (*)(const ConvTile&);

constexpr int kNP = 4;
// Rows per tile for 1..4 panels: 12x16, 12x32, 8x48, 6x64.
constexpr int kMR[kNP + 1] = {0, 12, 12, 8, 6};

// f[mr] = tile<mr, NP> for every height a block of NP panels can ask for.
template <int NP, int... R>
struct Rows {
  static constexpr TileFn f[sizeof...(R) + 1] = {nullptr, &tile<R, NP>...};
};
using Rows1 = Rows<1, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12>;
using Rows2 = Rows<2, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12>;
using Rows3 = Rows<3, 1, 2, 3, 4, 5, 6, 7, 8>;
using Rows4 = Rows<4, 1, 2, 3, 4, 5, 6>;

void gemm_tile(const ConvTile& t, int mr, int np) {
  switch (np) {
    case 1: return Rows1::f[mr](t);
    case 2: return Rows2::f[mr](t);
    case 3: return Rows3::f[mr](t);
    default: return Rows4::f[mr](t);
  }
}

// ---- depthwise row ---------------------------------------------------------------------------

// One channel block (16 lanes; kFull: all valid, else the lanes of mk) down every output row of
// the call, KH x KW compile-time taps (0: the runtime d.kh x d.kw) with the weights in registers
// for all the rows.
template <int KH, int KW, bool kFull>
void dw_block(const DwRows& d, int64_t c, __mmask16 mk, __m512 b) {
  constexpr int kT = KH * KW;
  const int64_t kh = KH ? KH : d.kh, kw = KW ? KW : d.kw;
  __m512 wv[kT > 0 ? kT : 1];
  if (kT > 0) {
#pragma GCC unroll 25
    for (int t = 0; t < (kT > 0 ? kT : 1); ++t) wv[t] = _mm512_loadu_ps(d.w + t * d.cp + c);
  }
  auto ld = [&](const float* p) { return kFull ? _mm512_loadu_ps(p) : _mm512_maskz_loadu_ps(mk, p); };
  auto wt = [&](int64_t t) { return kT > 0 ? wv[t] : _mm512_loadu_ps(d.w + t * d.cp + c); };
  // (The fields are copied to locals: the compiler would otherwise reload them per tap.)
  const float* zc = d.zero + c;
  const int64_t C = d.c, in_w = d.in_w, sw = d.sw, dil = d.dw, pl = d.pl, dh = d.dh;
  const int64_t xs = sw * C, xd = dil * C, ld_out = d.out_w * C;
  for (int64_t j = 0; j < d.nrows; ++j) {
    const float* const* rows = d.rows + j * d.sh;
    float* out = d.out + j * ld_out + c;
    const float* res = d.res ? d.res + j * ld_out + c : nullptr;
    auto store = [&](int64_t ox, __m512 acc) {
      if (res) acc = _mm512_add_ps(acc, ld(res + ox * C));
      acc = v_act(acc, d.ep);
      if (kFull)
        _mm512_storeu_ps(out + ox * C, acc);
      else
        _mm512_mask_storeu_ps(out + ox * C, mk, acc);
    };
    // A single pixel (a border pixel, or one left over from the groups of four): its taps go to
    // four accumulators in turn, so that it is not one chain of kh*kw dependent FMAs (a 7-pixel
    // row of a 5x5 layer has four border pixels). A column outside the row reads the zero row.
    auto single = [&](int64_t ox) {
      __m512 a[4] = {b, _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
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
          a[t & 3] = _mm512_fmadd_ps(ld(p), wt(t), a[t & 3]);
        }
      }
      store(ox, _mm512_add_ps(_mm512_add_ps(a[0], a[1]), _mm512_add_ps(a[2], a[3])));
    };
    for (int64_t ox = 0; ox < d.ox_lo; ++ox) single(ox);
    int64_t ox = d.ox_lo;
    if constexpr (kT > 0) {
      const float* base[KH > 0 ? KH : 1];
#pragma GCC unroll 5
      for (int ky = 0; ky < KH; ++ky) base[ky] = rows[ky * dh] + (ox * sw - pl) * C + c;
      if (KH == 3 && KW == 3 && dil == 1 && (sw == 1 || sw == 2)) {
        // 3x3, stride 1 or 2: the four pixels' columns overlap, so each kernel row loads its
        // 6 (stride 1) or 9 (stride 2) input columns once for the 12 products, instead of 12.
        // Loads, not FMAs, bound the general loop below on Zen 4 (stride 1 measured 62 -> 86
        // GFLOP/s at 32 channels, 112x112).
        const bool s1 = sw == 1;
        for (; ox + 4 <= d.ox_hi; ox += 4) {
          __m512 a0 = b, a1 = b, a2 = b, a3 = b;
#pragma GCC unroll 3
          for (int ky = 0; ky < 3; ++ky) {
            const float* p = base[ky];
            const __m512 w0 = wv[ky * 3], w1 = wv[ky * 3 + 1], w2 = wv[ky * 3 + 2];
            if (s1) {
              const __m512 v0 = ld(p), v1 = ld(p + C), v2 = ld(p + 2 * C), v3 = ld(p + 3 * C),
                           v4 = ld(p + 4 * C), v5 = ld(p + 5 * C);
              a0 = _mm512_fmadd_ps(v0, w0, a0);
              a1 = _mm512_fmadd_ps(v1, w0, a1);
              a2 = _mm512_fmadd_ps(v2, w0, a2);
              a3 = _mm512_fmadd_ps(v3, w0, a3);
              a0 = _mm512_fmadd_ps(v1, w1, a0);
              a1 = _mm512_fmadd_ps(v2, w1, a1);
              a2 = _mm512_fmadd_ps(v3, w1, a2);
              a3 = _mm512_fmadd_ps(v4, w1, a3);
              a0 = _mm512_fmadd_ps(v2, w2, a0);
              a1 = _mm512_fmadd_ps(v3, w2, a1);
              a2 = _mm512_fmadd_ps(v4, w2, a2);
              a3 = _mm512_fmadd_ps(v5, w2, a3);
              base[ky] = p + 4 * C;
            } else {
              const __m512 v0 = ld(p), v1 = ld(p + C), v2 = ld(p + 2 * C), v3 = ld(p + 3 * C),
                           v4 = ld(p + 4 * C), v5 = ld(p + 5 * C), v6 = ld(p + 6 * C), v7 = ld(p + 7 * C),
                           v8 = ld(p + 8 * C);
              a0 = _mm512_fmadd_ps(v0, w0, a0);
              a1 = _mm512_fmadd_ps(v2, w0, a1);
              a2 = _mm512_fmadd_ps(v4, w0, a2);
              a3 = _mm512_fmadd_ps(v6, w0, a3);
              a0 = _mm512_fmadd_ps(v1, w1, a0);
              a1 = _mm512_fmadd_ps(v3, w1, a1);
              a2 = _mm512_fmadd_ps(v5, w1, a2);
              a3 = _mm512_fmadd_ps(v7, w1, a3);
              a0 = _mm512_fmadd_ps(v2, w2, a0);
              a1 = _mm512_fmadd_ps(v4, w2, a1);
              a2 = _mm512_fmadd_ps(v6, w2, a2);
              a3 = _mm512_fmadd_ps(v8, w2, a3);
              base[ky] = p + 8 * C;
            }
          }
          store(ox, a0);
          store(ox + 1, a1);
          store(ox + 2, a2);
          store(ox + 3, a3);
        }
      }
      if (KH == 5 && KW == 5 && dil == 1 && sw == 1) {
        // 5x5, stride 1: the same column sharing, one column live at a time (the 25 weights and
        // 4 accumulators hold 29 of the 32 registers): 8 loads per kernel row for 20 products.
        for (; ox + 4 <= d.ox_hi; ox += 4) {
          __m512 a0 = b, a1 = b, a2 = b, a3 = b;
#pragma GCC unroll 5
          for (int ky = 0; ky < 5; ++ky) {
            const float* p = base[ky];
            const __m512* w = wv + ky * 5;
            __m512 v = ld(p);
            a0 = _mm512_fmadd_ps(v, w[0], a0);
            v = ld(p + C);
            a0 = _mm512_fmadd_ps(v, w[1], a0), a1 = _mm512_fmadd_ps(v, w[0], a1);
            v = ld(p + 2 * C);
            a0 = _mm512_fmadd_ps(v, w[2], a0), a1 = _mm512_fmadd_ps(v, w[1], a1), a2 = _mm512_fmadd_ps(v, w[0], a2);
            v = ld(p + 3 * C);
            a0 = _mm512_fmadd_ps(v, w[3], a0), a1 = _mm512_fmadd_ps(v, w[2], a1), a2 = _mm512_fmadd_ps(v, w[1], a2);
            a3 = _mm512_fmadd_ps(v, w[0], a3);
            v = ld(p + 4 * C);
            a0 = _mm512_fmadd_ps(v, w[4], a0), a1 = _mm512_fmadd_ps(v, w[3], a1), a2 = _mm512_fmadd_ps(v, w[2], a2);
            a3 = _mm512_fmadd_ps(v, w[1], a3);
            v = ld(p + 5 * C);
            a1 = _mm512_fmadd_ps(v, w[4], a1), a2 = _mm512_fmadd_ps(v, w[3], a2), a3 = _mm512_fmadd_ps(v, w[2], a3);
            v = ld(p + 6 * C);
            a2 = _mm512_fmadd_ps(v, w[4], a2), a3 = _mm512_fmadd_ps(v, w[3], a3);
            v = ld(p + 7 * C);
            a3 = _mm512_fmadd_ps(v, w[4], a3);
            base[ky] = p + 4 * C;
          }
          store(ox, a0);
          store(ox + 1, a1);
          store(ox + 2, a2);
          store(ox + 3, a3);
        }
      }
      // Four pixels per step: four independent FMA chains over the KH x KW taps.
      for (; ox + 4 <= d.ox_hi; ox += 4) {
        __m512 a0 = b, a1 = b, a2 = b, a3 = b;
#pragma GCC unroll 5
        for (int ky = 0; ky < KH; ++ky) {
          const float* p = base[ky];
#pragma GCC unroll 5
          for (int kx = 0; kx < KW; ++kx) {
            const __m512 w = wv[ky * KW + kx];
            const float* q = p + kx * xd;
            a0 = _mm512_fmadd_ps(ld(q), w, a0);
            a1 = _mm512_fmadd_ps(ld(q + xs), w, a1);
            a2 = _mm512_fmadd_ps(ld(q + 2 * xs), w, a2);
            a3 = _mm512_fmadd_ps(ld(q + 3 * xs), w, a3);
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
  for (int64_t c = d.c0; c < d.c1; c += 16) {
    const __mmask16 mk = lanes(d.c1 - c);
    const __m512 b = d.bias ? _mm512_maskz_loadu_ps(mk, d.bias + c) : _mm512_setzero_ps();
    if (mk == 0xFFFF)
      dw_block<KH, KW, true>(d, c, mk, b);
    else
      dw_block<KH, KW, false>(d, c, mk, b);
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
  t.conv_f32.np = kNP;
  for (int q = 0; q <= kNP; ++q) t.conv_f32.mr[q] = kMR[q];
  t.conv_f32.dw_rows = dw_rows;
  static_assert(sizeof(Rows1::f) / sizeof(TileFn) == kMR[1] + 1 && sizeof(Rows2::f) / sizeof(TileFn) == kMR[2] + 1 &&
                    sizeof(Rows3::f) / sizeof(TileFn) == kMR[3] + 1 && sizeof(Rows4::f) / sizeof(TileFn) == kMR[4] + 1,
                "row tables cover every tile height");
}

}  // namespace edgepack::avx512
