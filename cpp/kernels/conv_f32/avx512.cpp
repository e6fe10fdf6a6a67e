// AVX-512 path for conv_f32 (avx512_vnni inherits it: float32 has nothing to gain from VNNI).
//
// GEMM tile: mr output pixels x np panels of 16 output channels, one zmm accumulator per (pixel,
// panel): 6x64, 8x48, 12x32 or 12x16, i.e. 24 (or 12) independent FMA chains, enough to cover
// the FMA latency on cores with one (Zen 4) or two (Intel) 512-bit FMA units. Per k step: np
// aligned panel loads and mr broadcasts (folded into the FMA as {1to16} memory operands), so
// loads never limit (at most 14 per 24 FMAs). Accumulators start at the bias; the products come
// tap by tap, channel by channel; then the residual, then the activation, from registers.
//
// Depthwise row: channels in lanes (16 per zmm, masked loads/stores for the channel tail), the
// 9 or 25 weights of a 3x3 or 5x5 channel block held in registers across the whole output row,
// four output pixels at a time for independent FMA chains. Border pixels and rows with taps in
// the padding take a generic loop that skips those taps (adding nothing, as the zero padding
// would).
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

EP_INLINE void dw_store(const DwRow& d, int64_t ox, int64_t c, __mmask16 mk, __m512 acc) {
  if (d.res) acc = _mm512_add_ps(acc, _mm512_maskz_loadu_ps(mk, d.res + ox * d.c + c));
  if (mk == 0xFFFF)
    _mm512_storeu_ps(d.out + ox * d.c + c, v_act(acc, d.ep));
  else
    _mm512_mask_storeu_ps(d.out + ox * d.c + c, mk, v_act(acc, d.ep));
}

// Pixels [ox0, ox1), any tap possibly in the padding.
void dw_edge(const DwRow& d, int64_t c, __mmask16 mk, __m512 b, int64_t ox0, int64_t ox1) {
  for (int64_t ox = ox0; ox < ox1; ++ox) {
    __m512 acc = b;
    for (int64_t ky = 0; ky < d.kh; ++ky) {
      const float* row = d.rows[ky];
      if (!row) continue;
      for (int64_t kx = 0; kx < d.kw; ++kx) {
        const int64_t ix = ox * d.sw - d.pl + kx * d.dw;
        if (ix < 0 || ix >= d.in_w) continue;
        acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mk, row + ix * d.c + c),
                              _mm512_loadu_ps(d.w + (ky * d.kw + kx) * d.cp + c), acc);
      }
    }
    dw_store(d, ox, c, mk, acc);
  }
}

// Interior pixels [ox0, ox1) with every row present: KH x KW taps (0 = runtime d.kh/d.kw),
// weights in registers for the compile-time shapes, four pixels per step.
template <int KH, int KW>
void dw_interior(const DwRow& d, int64_t c, __mmask16 mk, __m512 b, int64_t ox0, int64_t ox1) {
  constexpr int kT = KH * KW;
  constexpr int kSlots = kT > 0 ? kT : 1;
  const int64_t kh = KH ? KH : d.kh, kw = KW ? KW : d.kw;
  __m512 wv[kSlots];
  if (kT > 0) {
#pragma GCC unroll 25
    for (int t = 0; t < kSlots; ++t) wv[t] = _mm512_loadu_ps(d.w + t * d.cp + c);
  }
  const int64_t xs = d.sw * d.c, xd = d.dw * d.c;
  const float* base[KH > 0 ? KH : 1];
  int64_t ox = ox0;
  if (kT > 0) {
#pragma GCC unroll 5
    for (int ky = 0; ky < KH; ++ky) base[ky] = d.rows[ky] + (ox0 * d.sw - d.pl) * d.c + c;
    for (; ox + 4 <= ox1; ox += 4) {
      __m512 a0 = b, a1 = b, a2 = b, a3 = b;
#pragma GCC unroll 5
      for (int ky = 0; ky < KH; ++ky) {
        const float* p = base[ky];
#pragma GCC unroll 5
        for (int kx = 0; kx < KW; ++kx) {
          const __m512 wt = wv[ky * KW + kx];
          const float* q = p + kx * xd;
          a0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mk, q), wt, a0);
          a1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mk, q + xs), wt, a1);
          a2 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mk, q + 2 * xs), wt, a2);
          a3 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mk, q + 3 * xs), wt, a3);
        }
        base[ky] = p + 4 * xs;
      }
      dw_store(d, ox, c, mk, a0);
      dw_store(d, ox + 1, c, mk, a1);
      dw_store(d, ox + 2, c, mk, a2);
      dw_store(d, ox + 3, c, mk, a3);
    }
    for (; ox < ox1; ++ox) {
      __m512 acc = b;
#pragma GCC unroll 5
      for (int ky = 0; ky < KH; ++ky) {
#pragma GCC unroll 5
        for (int kx = 0; kx < KW; ++kx)
          acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mk, base[ky] + kx * xd), wv[ky * KW + kx], acc);
        base[ky] += xs;
      }
      dw_store(d, ox, c, mk, acc);
    }
    return;
  }
  for (; ox < ox1; ++ox) {
    __m512 acc = b;
    const int64_t ix0 = ox * d.sw - d.pl;
    for (int64_t ky = 0; ky < kh; ++ky) {
      const float* p = d.rows[ky] + ix0 * d.c + c;
      const float* wr = d.w + ky * kw * d.cp + c;
      for (int64_t kx = 0; kx < kw; ++kx)
        acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mk, p + kx * xd), _mm512_loadu_ps(wr + kx * d.cp), acc);
    }
    dw_store(d, ox, c, mk, acc);
  }
}

void dw_row(const DwRow& d) {
  bool all_rows = true;
  for (int64_t ky = 0; ky < d.kh; ++ky) all_rows = all_rows && d.rows[ky] != nullptr;
  const bool k33 = d.kh == 3 && d.kw == 3, k55 = d.kh == 5 && d.kw == 5;
  for (int64_t c = d.c0; c < d.c1; c += 16) {
    const __mmask16 mk = lanes(d.c1 - c);
    const __m512 b = d.bias ? _mm512_maskz_loadu_ps(mk, d.bias + c) : _mm512_setzero_ps();
    if (!all_rows) {
      dw_edge(d, c, mk, b, 0, d.out_w);
      continue;
    }
    dw_edge(d, c, mk, b, 0, d.ox_lo);
    if (k33)
      dw_interior<3, 3>(d, c, mk, b, d.ox_lo, d.ox_hi);
    else if (k55)
      dw_interior<5, 5>(d, c, mk, b, d.ox_lo, d.ox_hi);
    else
      dw_interior<0, 0>(d, c, mk, b, d.ox_lo, d.ox_hi);
    dw_edge(d, c, mk, b, d.ox_hi, d.out_w);
  }
}

#undef EP_INLINE

}  // namespace

void register_conv_f32(KernelTable& t) {
  t.conv_f32.gemm_tile = gemm_tile;
  t.conv_f32.np = kNP;
  for (int q = 0; q <= kNP; ++q) t.conv_f32.mr[q] = kMR[q];
  t.conv_f32.dw_row = dw_row;
  static_assert(sizeof(Rows1::f) / sizeof(TileFn) == kMR[1] + 1 && sizeof(Rows2::f) / sizeof(TileFn) == kMR[2] + 1 &&
                    sizeof(Rows3::f) / sizeof(TileFn) == kMR[3] + 1 && sizeof(Rows4::f) / sizeof(TileFn) == kMR[4] + 1,
                "row tables cover every tile height");
}

}  // namespace edgepack::avx512
