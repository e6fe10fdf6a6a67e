// AVX2 + FMA path for conv_f32.
//
// GEMM tile: 6 output pixels x one panel of 16 output channels (two ymm per pixel): 12
// accumulators, 2 panel loads and 6 broadcasts per k step, 15 of the 16 ymm registers: the
// classic 6x16 FMA3 shape, 12 independent chains for two FMA units of latency 4-5. The
// accumulators start at the bias; then the residual and the activation from registers. Channel
// tails use vmaskmov (slow on some AMD cores, but only at the last panel of a layer whose
// channel count is not a multiple of 16).
//
// Depthwise rows: 8 channels per ymm, each channel block run down all the call's output rows; the
// 9 weights of a 3x3 block stay in registers (5x5 reads its weights from L1: 25 would not fit),
// four output pixels per step for independent chains. Border pixels read the zero row for their
// columns outside the input.
#include <immintrin.h>

#include <cstddef>
#include <cstdint>

#include "core/dispatch.h"
#include "kernels/conv_f32/conv_f32.h"

namespace edgepack::avx2 {
namespace {

#define EP_INLINE inline __attribute__((always_inline))
#include "kernels/common/vexp_ymm.inc"

using convf::Act;
using convf::kNR;

// Lanes [0, n) of a ymm (n clamped to [0, 8]) as a vmaskmov mask.
EP_INLINE __m256i lanes(int64_t n) {
  const int v = n < 0 ? 0 : (n > 8 ? 8 : static_cast<int>(n));
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(v), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

EP_INLINE __m256 v_act(__m256 y, const convf::Epilogue& e) {
  const __m256 zero = _mm256_setzero_ps(), one = _mm256_set1_ps(1.0f);
  switch (e.act) {
    case Act::none: return y;
    case Act::relu: return _mm256_max_ps(y, zero);
    case Act::clip: return _mm256_min_ps(_mm256_max_ps(y, _mm256_set1_ps(e.p0)), _mm256_set1_ps(e.p1));
    case Act::hardswish: {
      const __m256 h = _mm256_add_ps(_mm256_mul_ps(y, _mm256_set1_ps(1.0f / 6.0f)), _mm256_set1_ps(0.5f));
      return _mm256_mul_ps(y, _mm256_min_ps(_mm256_max_ps(h, zero), one));
    }
    case Act::hardsigmoid: {
      const __m256 h = _mm256_add_ps(_mm256_mul_ps(y, _mm256_set1_ps(e.p0)), _mm256_set1_ps(e.p1));
      return _mm256_min_ps(_mm256_max_ps(h, zero), one);
    }
    case Act::silu: return _mm256_div_ps(y, _mm256_add_ps(one, v_exp(_mm256_sub_ps(zero, y))));
    case Act::leakyrelu: {
      const __m256 neg = _mm256_cmp_ps(y, zero, _CMP_LT_OQ);
      return _mm256_blendv_ps(y, _mm256_mul_ps(y, _mm256_set1_ps(e.p0)), neg);
    }
    case Act::sigmoid: return _mm256_div_ps(one, _mm256_add_ps(one, v_exp(_mm256_sub_ps(zero, y))));
    case Act::tanh: {
      const __m256 sign = _mm256_set1_ps(-0.0f);
      const __m256 ay = _mm256_andnot_ps(sign, y);
      const __m256 t = v_exp(_mm256_mul_ps(ay, _mm256_set1_ps(-2.0f)));
      const __m256 r = _mm256_div_ps(_mm256_sub_ps(one, t), _mm256_add_ps(one, t));
      return _mm256_or_ps(r, _mm256_and_ps(y, sign));
    }
  }
  return y;
}

// ---- GEMM tile --------------------------------------------------------------------------------

EP_INLINE __m256 load_n(const float* p, int64_t n) {
  return n >= 8 ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, lanes(n));
}
EP_INLINE void store_n(float* p, int64_t n, __m256 v) {
  if (n >= 8)
    _mm256_storeu_ps(p, v);
  else if (n > 0)
    _mm256_maskstore_ps(p, lanes(n), v);
}

// Any activation from a spilled tile (acc[mr][16]), out of line so that the K loop's
// accumulators never need an address.
__attribute__((noinline)) void finish_any(const ConvTile& t, int mr, const float* acc) {
  for (int r = 0; r < mr; ++r)
    for (int h = 0; h < 2; ++h) {
      const int64_t n = t.nvalid - 8 * h;
      if (n <= 0) break;
      __m256 v = _mm256_load_ps(acc + r * 16 + 8 * h);
      if (t.res) v = _mm256_add_ps(v, load_n(t.res + r * t.ldr + 8 * h, n));
      store_n(t.c + r * t.ldc + 8 * h, n, v_act(v, t.ep));
    }
}

template <int MR>
void tile(const ConvTile& t) {
  __m256 acc[MR][2];
  if (t.first) {
    const __m256 b0 = t.bias ? load_n(t.bias, t.nvalid) : _mm256_setzero_ps();
    const __m256 b1 = t.bias && t.nvalid > 8 ? load_n(t.bias + 8, t.nvalid - 8) : _mm256_setzero_ps();
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      acc[r][0] = b0;
      acc[r][1] = b1;
    }
  } else {
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      acc[r][0] = _mm256_loadu_ps(t.part + r * t.parts);
      acc[r][1] = _mm256_loadu_ps(t.part + r * t.parts + 8);
    }
  }
  const int64_t kc = t.kc;
  const float* w = t.w;
  for (int64_t tap = 0; tap < t.taps; ++tap) {
    const float* const* ap = t.a + tap * t.amr;
    const float* ar[MR];
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) ar[r] = ap[r] + t.a_off;
    for (int64_t i = 0; i < kc; ++i) {
      const __m256 w0 = _mm256_loadu_ps(w), w1 = _mm256_loadu_ps(w + 8);
#pragma GCC unroll 8
      for (int r = 0; r < MR; ++r) {
        const __m256 av = _mm256_broadcast_ss(ar[r] + i);
        acc[r][0] = _mm256_fmadd_ps(av, w0, acc[r][0]);
        acc[r][1] = _mm256_fmadd_ps(av, w1, acc[r][1]);
      }
      w += kNR;
    }
  }
  if (!t.last) {
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      _mm256_storeu_ps(t.part + r * t.parts, acc[r][0]);
      _mm256_storeu_ps(t.part + r * t.parts + 8, acc[r][1]);
    }
    return;
  }
  const Act act = t.ep.act;
  if (act == Act::none || act == Act::relu || act == Act::clip) {
    const bool clamp = act != Act::none;
    const __m256 lo = _mm256_set1_ps(act == Act::relu ? 0.0f : t.ep.p0);
    const __m256 hi = act == Act::relu ? _mm256_set1_ps(__builtin_inff()) : _mm256_set1_ps(t.ep.p1);
    const bool full = t.nvalid == kNR;
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r)
#pragma GCC unroll 2
      for (int h = 0; h < 2; ++h) {
        const int64_t n = t.nvalid - 8 * h;
        __m256 v = acc[r][h];
        if (t.res) v = _mm256_add_ps(v, full ? _mm256_loadu_ps(t.res + r * t.ldr + 8 * h) : load_n(t.res + r * t.ldr + 8 * h, n));
        if (clamp) v = _mm256_min_ps(_mm256_max_ps(v, lo), hi);
        if (full)
          _mm256_storeu_ps(t.c + r * t.ldc + 8 * h, v);
        else
          store_n(t.c + r * t.ldc + 8 * h, n, v);
      }
    return;
  }
  alignas(32) float buf[MR * 16];
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r) {
    _mm256_store_ps(buf + r * 16, acc[r][0]);
    _mm256_store_ps(buf + r * 16 + 8, acc[r][1]);
  }
  finish_any(t, MR, buf);
}

constexpr int kMR = 6;
using TileFn = void (*)(const ConvTile&);
constexpr TileFn kTiles[kMR + 1] = {nullptr, &tile<1>, &tile<2>, &tile<3>, &tile<4>, &tile<5>, &tile<6>};

void gemm_tile(const ConvTile& t, int mr, int /*np: always 1 here*/) { kTiles[mr](t); }

// ---- depthwise row ---------------------------------------------------------------------------

// One channel block (8 lanes; kFull: all valid, else the first n) down every output row of the
// call, KH x KW compile-time taps (0: runtime). The 3x3 weights stay in registers (9 + 4
// accumulators + a load fit in 16 ymm); 5x5 reads its weights from L1.
template <int KH, int KW, bool kFull>
void dw_block(const DwRows& d, int64_t c, int64_t n, __m256 b) {
  constexpr int kT = KH * KW;
  constexpr bool kRegs = kT > 0 && kT <= 9;
  const int64_t kh = KH ? KH : d.kh, kw = KW ? KW : d.kw;
  __m256 wv[kRegs ? kT : 1];
  if (kRegs) {
#pragma GCC unroll 9
    for (int t = 0; t < (kRegs ? kT : 1); ++t) wv[t] = _mm256_loadu_ps(d.w + t * d.cp + c);
  }
  const __m256i mk = lanes(n);
  auto ld = [&](const float* p) { return kFull ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, mk); };
  auto wt = [&](int64_t t) { return kRegs ? wv[t] : _mm256_loadu_ps(d.w + t * d.cp + c); };
  // (The fields are copied to locals: the compiler would otherwise reload them per tap.)
  const float* zc = d.zero + c;
  const int64_t C = d.c, in_w = d.in_w, sw = d.sw, dil = d.dw, pl = d.pl, dh = d.dh;
  const int64_t xs = sw * C, xd = dil * C, ld_out = d.out_w * C;
  for (int64_t j = 0; j < d.nrows; ++j) {
    const float* const* rows = d.rows + j * d.sh;
    float* out = d.out + j * ld_out + c;
    const float* res = d.res ? d.res + j * ld_out + c : nullptr;
    auto store = [&](int64_t ox, __m256 acc) {
      if (res) acc = _mm256_add_ps(acc, ld(res + ox * C));
      acc = v_act(acc, d.ep);
      if (kFull)
        _mm256_storeu_ps(out + ox * C, acc);
      else
        _mm256_maskstore_ps(out + ox * C, mk, acc);
    };
    // A single pixel (border, or left over from the groups of four): taps spread over four
    // accumulators; a column outside the row reads the zero row.
    auto single = [&](int64_t ox) {
      __m256 a[4] = {b, _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
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
          a[t & 3] = _mm256_fmadd_ps(ld(p), wt(t), a[t & 3]);
        }
      }
      store(ox, _mm256_add_ps(_mm256_add_ps(a[0], a[1]), _mm256_add_ps(a[2], a[3])));
    };
    for (int64_t ox = 0; ox < d.ox_lo; ++ox) single(ox);
    int64_t ox = d.ox_lo;
    if constexpr (kT > 0) {
      const float* base[KH > 0 ? KH : 1];
#pragma GCC unroll 5
      for (int ky = 0; ky < KH; ++ky) base[ky] = rows[ky * dh] + (ox * sw - pl) * C + c;
      if (KH == 3 && KW == 3 && kRegs && dil == 1 && sw == 1) {
        // 3x3, stride 1: each kernel row loads its 6 input columns once for the four pixels'
        // 12 products, one column live at a time (9 weights + 4 accumulators + 1 of 16 ymm).
        for (; ox + 4 <= d.ox_hi; ox += 4) {
          __m256 a0 = b, a1 = b, a2 = b, a3 = b;
#pragma GCC unroll 3
          for (int ky = 0; ky < 3; ++ky) {
            const float* p = base[ky];
            const __m256 w0 = wv[ky * 3], w1 = wv[ky * 3 + 1], w2 = wv[ky * 3 + 2];
            __m256 v = ld(p);
            a0 = _mm256_fmadd_ps(v, w0, a0);
            v = ld(p + C);
            a0 = _mm256_fmadd_ps(v, w1, a0), a1 = _mm256_fmadd_ps(v, w0, a1);
            v = ld(p + 2 * C);
            a0 = _mm256_fmadd_ps(v, w2, a0), a1 = _mm256_fmadd_ps(v, w1, a1), a2 = _mm256_fmadd_ps(v, w0, a2);
            v = ld(p + 3 * C);
            a1 = _mm256_fmadd_ps(v, w2, a1), a2 = _mm256_fmadd_ps(v, w1, a2), a3 = _mm256_fmadd_ps(v, w0, a3);
            v = ld(p + 4 * C);
            a2 = _mm256_fmadd_ps(v, w2, a2), a3 = _mm256_fmadd_ps(v, w1, a3);
            v = ld(p + 5 * C);
            a3 = _mm256_fmadd_ps(v, w2, a3);
            base[ky] = p + 4 * C;
          }
          store(ox, a0);
          store(ox + 1, a1);
          store(ox + 2, a2);
          store(ox + 3, a3);
        }
      }
      for (; ox + 4 <= d.ox_hi; ox += 4) {
        __m256 a0 = b, a1 = b, a2 = b, a3 = b;
#pragma GCC unroll 5
        for (int ky = 0; ky < KH; ++ky) {
          const float* p = base[ky];
#pragma GCC unroll 5
          for (int kx = 0; kx < KW; ++kx) {
            const __m256 w = wt(ky * KW + kx);
            const float* q = p + kx * xd;
            a0 = _mm256_fmadd_ps(ld(q), w, a0);
            a1 = _mm256_fmadd_ps(ld(q + xs), w, a1);
            a2 = _mm256_fmadd_ps(ld(q + 2 * xs), w, a2);
            a3 = _mm256_fmadd_ps(ld(q + 3 * xs), w, a3);
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
  for (int64_t c = d.c0; c < d.c1; c += 8) {
    const int64_t n = d.c1 - c < 8 ? d.c1 - c : 8;
    const __m256 b = d.bias ? load_n(d.bias + c, n) : _mm256_setzero_ps();
    if (n == 8)
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

}  // namespace edgepack::avx2
