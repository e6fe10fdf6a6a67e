// AVX-512 spmm kernels (F + BW + DQ + VL).
//  - small M, CSR: 16 nonzeros per step: load values, widen uint16 columns, gather x, FMA; two
//    accumulators per row so the gathers of consecutive steps overlap.
//  - large M, CSR tile: per nonzero one broadcast weight times mt/16 rows of the transposed tile.
//  - small M, 2:4: 8 groups (16 values) per step; x[32 k] is two loads and one two-source permute
//    picks each value's partner by its 2-bit position: no gathers, no index loads.
//  - int8: x arrives as sign-extended int32; a weight widened with a zero high half makes
//    vpmaddwd produce the exact product in each 32-bit lane (lo*lo + hi*0).
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "core/dispatch.h"
#include "kernels/spmm/spmm.h"

namespace edgepack::avx512 {
namespace {

inline __mmask16 tail_mask(int64_t r) { return static_cast<__mmask16>((1u << r) - 1u); }

inline __m512i load_col16(const uint16_t* c) {
  return _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(c)));
}
inline __m512i maskz_col16(__mmask16 k, const uint16_t* c) {
  return _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(k, c));
}
// int8 weights as (w, 0) int16 pairs: the zero high half cancels x's sign-extension in vpmaddwd.
inline __m512i widen_w16(__m128i v) {
  return _mm512_and_si512(_mm512_cvtepi8_epi32(v), _mm512_set1_epi32(0xFFFF));
}

template <int MR>
void csr_vec_f32_t(const int64_t* rp, const uint16_t* col, const float* val, int64_t n, const float* x,
                   int64_t ldx, float* y, int64_t ldy) {
  for (int64_t i = 0; i < n; ++i) {
    __m512 a0[MR], a1[MR];
    for (int r = 0; r < MR; ++r) a0[r] = a1[r] = _mm512_setzero_ps();
    int64_t p = rp[i];
    const int64_t end = rp[i + 1];
    for (; p + 32 <= end; p += 32) {
      const __m512i i0 = load_col16(col + p), i1 = load_col16(col + p + 16);
      const __m512 v0 = _mm512_loadu_ps(val + p), v1 = _mm512_loadu_ps(val + p + 16);
      for (int r = 0; r < MR; ++r) {
        a0[r] = _mm512_fmadd_ps(v0, _mm512_i32gather_ps(i0, x + r * ldx, 4), a0[r]);
        a1[r] = _mm512_fmadd_ps(v1, _mm512_i32gather_ps(i1, x + r * ldx, 4), a1[r]);
      }
    }
    for (; p < end; p += 16) {
      const __mmask16 k = end - p >= 16 ? __mmask16(0xFFFF) : tail_mask(end - p);
      const __m512i i0 = maskz_col16(k, col + p);
      const __m512 v0 = _mm512_maskz_loadu_ps(k, val + p);
      for (int r = 0; r < MR; ++r)
        a0[r] = _mm512_fmadd_ps(v0, _mm512_mask_i32gather_ps(_mm512_setzero_ps(), k, i0, x + r * ldx, 4), a0[r]);
    }
    for (int r = 0; r < MR; ++r) y[r * ldy + i] = _mm512_reduce_add_ps(_mm512_add_ps(a0[r], a1[r]));
  }
}

void csr_vec_f32(const int64_t* rp, const uint16_t* col, const float* val, int64_t n, const float* x,
                 int64_t ldx, int mr, float* y, int64_t ldy) {
  switch (mr) {
    case 1: csr_vec_f32_t<1>(rp, col, val, n, x, ldx, y, ldy); break;
    case 2: csr_vec_f32_t<2>(rp, col, val, n, x, ldx, y, ldy); break;
    case 3: csr_vec_f32_t<3>(rp, col, val, n, x, ldx, y, ldy); break;
    default: csr_vec_f32_t<4>(rp, col, val, n, x, ldx, y, ldy); break;
  }
}

template <int MR>
void csr_vec_s8_t(const int64_t* rp, const uint16_t* col, const int8_t* val, int64_t n, const int32_t* x,
                  int64_t ldx, int32_t* y, int64_t ldy) {
  for (int64_t i = 0; i < n; ++i) {
    __m512i a0[MR], a1[MR];
    for (int r = 0; r < MR; ++r) a0[r] = a1[r] = _mm512_setzero_si512();
    int64_t p = rp[i];
    const int64_t end = rp[i + 1];
    for (; p + 32 <= end; p += 32) {
      const __m512i i0 = load_col16(col + p), i1 = load_col16(col + p + 16);
      const __m512i v0 = widen_w16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(val + p)));
      const __m512i v1 = widen_w16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(val + p + 16)));
      for (int r = 0; r < MR; ++r) {
        a0[r] = _mm512_add_epi32(a0[r], _mm512_madd_epi16(v0, _mm512_i32gather_epi32(i0, x + r * ldx, 4)));
        a1[r] = _mm512_add_epi32(a1[r], _mm512_madd_epi16(v1, _mm512_i32gather_epi32(i1, x + r * ldx, 4)));
      }
    }
    for (; p < end; p += 16) {
      const __mmask16 k = end - p >= 16 ? __mmask16(0xFFFF) : tail_mask(end - p);
      const __m512i i0 = maskz_col16(k, col + p);
      const __m512i v0 = widen_w16(_mm_maskz_loadu_epi8(k, val + p));
      for (int r = 0; r < MR; ++r)
        a0[r] = _mm512_add_epi32(
            a0[r], _mm512_madd_epi16(v0, _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), k, i0, x + r * ldx, 4)));
    }
    for (int r = 0; r < MR; ++r) y[r * ldy + i] = _mm512_reduce_add_epi32(_mm512_add_epi32(a0[r], a1[r]));
  }
}

void csr_vec_s8(const int64_t* rp, const uint16_t* col, const int8_t* val, int64_t n, const int32_t* x,
                int64_t ldx, int mr, int32_t* y, int64_t ldy) {
  switch (mr) {
    case 1: csr_vec_s8_t<1>(rp, col, val, n, x, ldx, y, ldy); break;
    case 2: csr_vec_s8_t<2>(rp, col, val, n, x, ldx, y, ldy); break;
    case 3: csr_vec_s8_t<3>(rp, col, val, n, x, ldx, y, ldy); break;
    default: csr_vec_s8_t<4>(rp, col, val, n, x, ldx, y, ldy); break;
  }
}

// NV vectors of 16 per tile row; S nonzeros in flight (independent accumulator sets) so FMA latency
// is hidden when NV is small.
template <int NV, int S>
void csr_tile_f32_t(const int64_t* seg, int64_t ss, const uint16_t* col, const float* val, int64_t n,
                    const float* xt, float* yt, bool accumulate) {
  constexpr int MT = NV * 16;
  for (int64_t i = 0; i < n; ++i) {
    __m512 acc[S][NV];
    for (int s = 0; s < S; ++s)
      for (int v = 0; v < NV; ++v) acc[s][v] = _mm512_setzero_ps();
    int64_t p = seg[i * ss];
    const int64_t end = seg[i * ss + 1];
    for (; p + S <= end; p += S) {
      for (int s = 0; s < S; ++s) {
        const __m512 w = _mm512_set1_ps(val[p + s]);
        const float* xr = xt + int64_t(col[p + s]) * MT;
        for (int v = 0; v < NV; ++v) acc[s][v] = _mm512_fmadd_ps(w, _mm512_loadu_ps(xr + 16 * v), acc[s][v]);
      }
    }
    for (; p < end; ++p) {
      const __m512 w = _mm512_set1_ps(val[p]);
      const float* xr = xt + int64_t(col[p]) * MT;
      for (int v = 0; v < NV; ++v) acc[0][v] = _mm512_fmadd_ps(w, _mm512_loadu_ps(xr + 16 * v), acc[0][v]);
    }
    for (int v = 0; v < NV; ++v) {
      __m512 t = acc[0][v];
      for (int s = 1; s < S; ++s) t = _mm512_add_ps(t, acc[s][v]);
      if (accumulate) t = _mm512_add_ps(t, _mm512_loadu_ps(yt + i * MT + 16 * v));
      _mm512_storeu_ps(yt + i * MT + 16 * v, t);
    }
  }
}

void csr_tile_f32(const int64_t* seg, int64_t ss, const uint16_t* col, const float* val, int64_t n,
                  const float* xt, int mt, float* yt, bool accumulate) {
  switch (mt) {
    case 16: csr_tile_f32_t<1, 4>(seg, ss, col, val, n, xt, yt, accumulate); break;
    case 32: csr_tile_f32_t<2, 4>(seg, ss, col, val, n, xt, yt, accumulate); break;
    case 48: csr_tile_f32_t<3, 2>(seg, ss, col, val, n, xt, yt, accumulate); break;
    default: csr_tile_f32_t<4, 2>(seg, ss, col, val, n, xt, yt, accumulate); break;
  }
}

template <int NV, int S>
void csr_tile_s8_t(const int64_t* seg, int64_t ss, const uint16_t* col, const int8_t* val, int64_t n,
                   const int32_t* xt, int32_t* yt, bool accumulate) {
  constexpr int MT = NV * 16;
  for (int64_t i = 0; i < n; ++i) {
    __m512i acc[S][NV];
    for (int s = 0; s < S; ++s)
      for (int v = 0; v < NV; ++v) acc[s][v] = _mm512_setzero_si512();
    int64_t p = seg[i * ss];
    const int64_t end = seg[i * ss + 1];
    for (; p + S <= end; p += S) {
      for (int s = 0; s < S; ++s) {
        const __m512i w = _mm512_set1_epi32(int32_t(uint16_t(int16_t(val[p + s]))));
        const int32_t* xr = xt + int64_t(col[p + s]) * MT;
        for (int v = 0; v < NV; ++v)
          acc[s][v] = _mm512_add_epi32(acc[s][v], _mm512_madd_epi16(w, _mm512_loadu_si512(xr + 16 * v)));
      }
    }
    for (; p < end; ++p) {
      const __m512i w = _mm512_set1_epi32(int32_t(uint16_t(int16_t(val[p]))));
      const int32_t* xr = xt + int64_t(col[p]) * MT;
      for (int v = 0; v < NV; ++v)
        acc[0][v] = _mm512_add_epi32(acc[0][v], _mm512_madd_epi16(w, _mm512_loadu_si512(xr + 16 * v)));
    }
    for (int v = 0; v < NV; ++v) {
      __m512i t = acc[0][v];
      for (int s = 1; s < S; ++s) t = _mm512_add_epi32(t, acc[s][v]);
      if (accumulate) t = _mm512_add_epi32(t, _mm512_loadu_si512(yt + i * MT + 16 * v));
      _mm512_storeu_si512(yt + i * MT + 16 * v, t);
    }
  }
}

void csr_tile_s8(const int64_t* seg, int64_t ss, const uint16_t* col, const int8_t* val, int64_t n,
                 const int32_t* xt, int mt, int32_t* yt, bool accumulate) {
  switch (mt) {
    case 16: csr_tile_s8_t<1, 4>(seg, ss, col, val, n, xt, yt, accumulate); break;
    case 32: csr_tile_s8_t<2, 2>(seg, ss, col, val, n, xt, yt, accumulate); break;
    case 48: csr_tile_s8_t<3, 2>(seg, ss, col, val, n, xt, yt, accumulate); break;
    default: csr_tile_s8_t<4, 1>(seg, ss, col, val, n, xt, yt, accumulate); break;
  }
}

// Lane j of a 16-value step belongs to group j/2: its k within the 32-wide x window is
// 4*(j/2) + the 2-bit position found at bit 2j of the step's 32-bit meta word.
inline __m512i nm24_index(const uint8_t* meta_word) {
  uint32_t mw;
  std::memcpy(&mw, meta_word, 4);
  const __m512i shifts = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i base = _mm512_setr_epi32(0, 0, 4, 4, 8, 8, 12, 12, 16, 16, 20, 20, 24, 24, 28, 28);
  const __m512i pos = _mm512_and_si512(_mm512_srlv_epi32(_mm512_set1_epi32(int32_t(mw)), shifts),
                                       _mm512_set1_epi32(3));
  return _mm512_add_epi32(pos, base);
}

template <int MR>
void nm24_vec_f32_t(const float* val, const uint8_t* meta, int64_t k, int64_t n, const float* x, int64_t ldx,
                    float* y, int64_t ldy) {
  const int64_t groups = k / 4, vs = k / 2, ms = (groups + 1) / 2;
  for (int64_t i = 0; i < n; ++i) {
    const float* v = val + i * vs;
    const uint8_t* m = meta + i * ms;
    __m512 a0[MR], a1[MR];
    for (int r = 0; r < MR; ++r) a0[r] = a1[r] = _mm512_setzero_ps();
    int64_t g = 0;
    for (; g + 16 <= groups; g += 16) {
      const __m512i ix0 = nm24_index(m + g / 2), ix1 = nm24_index(m + g / 2 + 4);
      const __m512 v0 = _mm512_loadu_ps(v + 2 * g), v1 = _mm512_loadu_ps(v + 2 * g + 16);
      for (int r = 0; r < MR; ++r) {
        const float* xr = x + r * ldx + 4 * g;
        const __m512 x0 = _mm512_permutex2var_ps(_mm512_loadu_ps(xr), ix0, _mm512_loadu_ps(xr + 16));
        const __m512 x1 = _mm512_permutex2var_ps(_mm512_loadu_ps(xr + 32), ix1, _mm512_loadu_ps(xr + 48));
        a0[r] = _mm512_fmadd_ps(v0, x0, a0[r]);
        a1[r] = _mm512_fmadd_ps(v1, x1, a1[r]);
      }
    }
    for (; g + 8 <= groups; g += 8) {
      const __m512i ix0 = nm24_index(m + g / 2);
      const __m512 v0 = _mm512_loadu_ps(v + 2 * g);
      for (int r = 0; r < MR; ++r) {
        const float* xr = x + r * ldx + 4 * g;
        a0[r] = _mm512_fmadd_ps(v0, _mm512_permutex2var_ps(_mm512_loadu_ps(xr), ix0, _mm512_loadu_ps(xr + 16)), a0[r]);
      }
    }
    for (int r = 0; r < MR; ++r) {
      float t = _mm512_reduce_add_ps(_mm512_add_ps(a0[r], a1[r]));
      const float* xr = x + r * ldx;
      for (int64_t gg = g; gg < groups; ++gg) {
        const unsigned b = (m[gg >> 1] >> ((gg & 1) * 4)) & 15u;
        t += v[2 * gg] * xr[4 * gg + (b & 3u)];
        t += v[2 * gg + 1] * xr[4 * gg + (b >> 2)];
      }
      y[r * ldy + i] = t;
    }
  }
}

void nm24_vec_f32(const float* val, const uint8_t* meta, int64_t k, int64_t n, const float* x, int64_t ldx, int mr,
                  float* y, int64_t ldy) {
  switch (mr) {
    case 1: nm24_vec_f32_t<1>(val, meta, k, n, x, ldx, y, ldy); break;
    case 2: nm24_vec_f32_t<2>(val, meta, k, n, x, ldx, y, ldy); break;
    case 3: nm24_vec_f32_t<3>(val, meta, k, n, x, ldx, y, ldy); break;
    default: nm24_vec_f32_t<4>(val, meta, k, n, x, ldx, y, ldy); break;
  }
}

template <int MR>
void nm24_vec_s8_t(const int8_t* val, const uint8_t* meta, int64_t k, int64_t n, const int32_t* x, int64_t ldx,
                   int32_t* y, int64_t ldy) {
  const int64_t groups = k / 4, vs = k / 2, ms = (groups + 1) / 2;
  for (int64_t i = 0; i < n; ++i) {
    const int8_t* v = val + i * vs;
    const uint8_t* m = meta + i * ms;
    __m512i a0[MR];
    for (int r = 0; r < MR; ++r) a0[r] = _mm512_setzero_si512();
    int64_t g = 0;
    for (; g + 8 <= groups; g += 8) {
      const __m512i ix = nm24_index(m + g / 2);
      const __m512i w = widen_w16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(v + 2 * g)));
      for (int r = 0; r < MR; ++r) {
        const int32_t* xr = x + r * ldx + 4 * g;
        const __m512i xs = _mm512_permutex2var_epi32(_mm512_loadu_si512(xr), ix, _mm512_loadu_si512(xr + 16));
        a0[r] = _mm512_add_epi32(a0[r], _mm512_madd_epi16(w, xs));
      }
    }
    for (int r = 0; r < MR; ++r) {
      int32_t t = _mm512_reduce_add_epi32(a0[r]);
      const int32_t* xr = x + r * ldx;
      for (int64_t gg = g; gg < groups; ++gg) {
        const unsigned b = (m[gg >> 1] >> ((gg & 1) * 4)) & 15u;
        t += int32_t(v[2 * gg]) * xr[4 * gg + (b & 3u)];
        t += int32_t(v[2 * gg + 1]) * xr[4 * gg + (b >> 2)];
      }
      y[r * ldy + i] = t;
    }
  }
}

void nm24_vec_s8(const int8_t* val, const uint8_t* meta, int64_t k, int64_t n, const int32_t* x, int64_t ldx,
                 int mr, int32_t* y, int64_t ldy) {
  switch (mr) {
    case 1: nm24_vec_s8_t<1>(val, meta, k, n, x, ldx, y, ldy); break;
    case 2: nm24_vec_s8_t<2>(val, meta, k, n, x, ldx, y, ldy); break;
    case 3: nm24_vec_s8_t<3>(val, meta, k, n, x, ldx, y, ldy); break;
    default: nm24_vec_s8_t<4>(val, meta, k, n, x, ldx, y, ldy); break;
  }
}


struct F32Ops {
  using V = __m512;
  using X = float;
  using W = float;
  static constexpr int L = 16;
  static V zero() { return _mm512_setzero_ps(); }
  static V bcast(W w) { return _mm512_set1_ps(w); }
  static V madd(V acc, V w, const X* x) { return _mm512_fmadd_ps(w, _mm512_loadu_ps(x), acc); }
  static V add(V a, V b) { return _mm512_add_ps(a, b); }
  static V load(const X* p) { return _mm512_loadu_ps(p); }
  static void store(X* p, V v) { _mm512_storeu_ps(p, v); }
};
struct S8Ops {
  using V = __m512i;
  using X = int32_t;
  using W = int8_t;
  static constexpr int L = 16;
  static V zero() { return _mm512_setzero_si512(); }
  static V bcast(W w) { return _mm512_set1_epi32(int32_t(uint16_t(int16_t(w)))); }
  static V madd(V acc, V w, const X* x) { return _mm512_add_epi32(acc, _mm512_madd_epi16(w, _mm512_loadu_si512(x))); }
  static V add(V a, V b) { return _mm512_add_epi32(a, b); }
  static V load(const X* p) { return _mm512_loadu_si512(p); }
  static void store(X* p, V v) { _mm512_storeu_si512(p, v); }
};

// Large-M 2:4: one meta byte = 2 groups = 4 values per step; each value's row of the transposed
// tile is found from its 2-bit position (no expanded column indices). Value j of a step goes to
// accumulator set j % S, so S independent FMA chains hide latency at small tile widths.
template <class O, int NV, int S>
void nm24_tile_t(const typename O::W* val, const uint8_t* meta, int64_t k, int64_t g0, int64_t g1, int64_t n,
                 const typename O::X* xt, typename O::X* yt, bool accumulate) {
  using V = typename O::V;
  using X = typename O::X;
  constexpr int MT = NV * O::L;
  const int64_t vs = k / 2, ms = (k / 4 + 1) / 2;
  const int64_t pair_end = g0 + ((g1 - g0) & ~int64_t(1));
  for (int64_t i = 0; i < n; ++i) {
    const typename O::W* v = val + i * vs;
    const uint8_t* m = meta + i * ms;
    V acc[S][NV];
    for (int s = 0; s < S; ++s)
      for (int u = 0; u < NV; ++u) acc[s][u] = O::zero();
    int64_t g = g0;
    for (; g < pair_end; g += 2) {
      const unsigned b = m[g >> 1];
      const X* xg = xt + 4 * g * MT;
      const X* xp[4] = {xg + (b & 3u) * MT, xg + ((b >> 2) & 3u) * MT, xg + (4 + ((b >> 4) & 3u)) * MT,
                        xg + (4 + (b >> 6)) * MT};
      for (int j = 0; j < 4; ++j) {
        const V w = O::bcast(v[2 * g + j]);
        for (int u = 0; u < NV; ++u) acc[j % S][u] = O::madd(acc[j % S][u], w, xp[j] + u * O::L);
      }
    }
    if (g < g1) {
      const unsigned b = m[g >> 1] & 15u;
      const X* xg = xt + 4 * g * MT;
      const X* xp[2] = {xg + (b & 3u) * MT, xg + (b >> 2) * MT};
      for (int j = 0; j < 2; ++j) {
        const V w = O::bcast(v[2 * g + j]);
        for (int u = 0; u < NV; ++u) acc[j % S][u] = O::madd(acc[j % S][u], w, xp[j] + u * O::L);
      }
    }
    for (int u = 0; u < NV; ++u) {
      V t = acc[0][u];
      for (int s = 1; s < S; ++s) t = O::add(t, acc[s][u]);
      if (accumulate) t = O::add(t, O::load(yt + i * MT + u * O::L));
      O::store(yt + i * MT + u * O::L, t);
    }
  }
}

void nm24_tile_f32(const float* val, const uint8_t* meta, int64_t k, int64_t g0, int64_t g1, int64_t n,
                   const float* xt, int mt, float* yt, bool accumulate) {
  switch (mt) {
    case 16: nm24_tile_t<F32Ops, 1, 4>(val, meta, k, g0, g1, n, xt, yt, accumulate); break;
    case 32: nm24_tile_t<F32Ops, 2, 4>(val, meta, k, g0, g1, n, xt, yt, accumulate); break;
    case 48: nm24_tile_t<F32Ops, 3, 2>(val, meta, k, g0, g1, n, xt, yt, accumulate); break;
    default: nm24_tile_t<F32Ops, 4, 2>(val, meta, k, g0, g1, n, xt, yt, accumulate); break;
  }
}

void nm24_tile_s8(const int8_t* val, const uint8_t* meta, int64_t k, int64_t g0, int64_t g1, int64_t n,
                   const int32_t* xt, int mt, int32_t* yt, bool accumulate) {
  switch (mt) {
    case 16: nm24_tile_t<S8Ops, 1, 4>(val, meta, k, g0, g1, n, xt, yt, accumulate); break;
    case 32: nm24_tile_t<S8Ops, 2, 4>(val, meta, k, g0, g1, n, xt, yt, accumulate); break;
    case 48: nm24_tile_t<S8Ops, 3, 2>(val, meta, k, g0, g1, n, xt, yt, accumulate); break;
    default: nm24_tile_t<S8Ops, 4, 2>(val, meta, k, g0, g1, n, xt, yt, accumulate); break;
  }
}

// The sliding-windows copy (SpmmOps::sell_slide_f32, layout in spmm.h): four steps per iteration,
// their windows from one 8-byte load and their indices from one 64-byte load and shifts; x is
// loaded once per window (kSpmmSlideShare steps), four registers for its 64 columns. Index bit 5
// picks the upper 32 columns: two permutes and a blend per step.
template <int MR>
void sell_slide_f32_t(const SpmmSell& w, int64_t s0, int64_t s1, int64_t n, const float* x, int64_t ldx, float* y,
                      int64_t ldy) {
  static_assert(kSpmmSlideWin == 64, "four x registers per window");
  constexpr int kShare = kSpmmSlideShare;
  const float* val = static_cast<const float*>(w.val);
  const __m512i upper = _mm512_set1_epi32(32);
  for (int64_t sl = s0; sl < s1; ++sl) {
    __m512 acc[MR][4];
    for (int r = 0; r < MR; ++r)
      for (int j = 0; j < 4; ++j) acc[r][j] = _mm512_setzero_ps();
    const int64_t end = w.step_ptr[sl + 1];
    for (int64_t st = w.step_ptr[sl]; st < end; st += 4) {
      uint64_t wins;
      std::memcpy(&wins, w.step_win + st, 8);
      const __m512i ig = _mm512_loadu_si512(w.idx + st * 16);
      __m512 xw[MR][4];
#pragma GCC unroll 4
      for (int j = 0; j < 4; ++j) {
        if (j % kShare == 0) {
          const float* xc = x + static_cast<int64_t>((wins >> (16 * j)) & 0xFFFFu);
          for (int r = 0; r < MR; ++r)
            for (int q = 0; q < 4; ++q) xw[r][q] = _mm512_loadu_ps(xc + r * ldx + 16 * q);
        }
        const __m512i ij = j == 0 ? ig : _mm512_srli_epi32(ig, 8 * j);
        const __mmask16 up = _mm512_test_epi32_mask(ij, upper);
        const __m512 v = _mm512_loadu_ps(val + (st + j) * 16);
        for (int r = 0; r < MR; ++r) {
          const __m512 lo = _mm512_permutex2var_ps(xw[r][0], ij, xw[r][1]);
          const __m512 hi = _mm512_permutex2var_ps(xw[r][2], ij, xw[r][3]);
          acc[r][j] = _mm512_fmadd_ps(v, _mm512_mask_blend_ps(up, lo, hi), acc[r][j]);
        }
      }
    }
    const int64_t row0 = sl * 16;
    const __mmask16 k = n - row0 >= 16 ? __mmask16(0xFFFF) : tail_mask(n - row0);
    for (int r = 0; r < MR; ++r)
      _mm512_mask_storeu_ps(y + r * ldy + row0, k,
                            _mm512_add_ps(_mm512_add_ps(acc[r][0], acc[r][1]), _mm512_add_ps(acc[r][2], acc[r][3])));
  }
}

void sell_slide_f32(const SpmmSell& w, int64_t s0, int64_t s1, int64_t n, const float* x, int64_t ldx, int mr,
                    float* y, int64_t ldy) {
  if (mr == 1)
    sell_slide_f32_t<1>(w, s0, s1, n, x, ldx, y, ldy);
  else
    sell_slide_f32_t<2>(w, s0, s1, n, x, ldx, y, ldy);
}

template <int MR>
void sell_vec_f32_t(const SpmmSell& w, int64_t s0, int64_t s1, int64_t n, const float* x, int64_t ldx, float* y,
                    int64_t ldy) {
  const float* val = static_cast<const float*>(w.val);
  for (int64_t sl = s0; sl < s1; ++sl) {
    __m512 a0[MR], a1[MR];
    for (int r = 0; r < MR; ++r) a0[r] = a1[r] = _mm512_setzero_ps();
    int64_t st = w.step_ptr[sl];
    for (int64_t run = w.run_ptr[sl]; run < w.run_ptr[sl + 1]; ++run) {
      const int64_t win = w.run_win[run];
      const int d = w.run_depth[run];
      __m512 xl[MR], xh[MR];
      for (int r = 0; r < MR; ++r) {
        xl[r] = _mm512_loadu_ps(x + r * ldx + 32 * win);
        xh[r] = _mm512_loadu_ps(x + r * ldx + 32 * win + 16);
      }
      int j = 0;
      for (; j + 2 <= d; j += 2, st += 2) {
        const __m512i i0 = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w.idx + st * 16)));
        const __m512i i1 =
            _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w.idx + st * 16 + 16)));
        const __m512 v0 = _mm512_loadu_ps(val + st * 16), v1 = _mm512_loadu_ps(val + st * 16 + 16);
        for (int r = 0; r < MR; ++r) {
          a0[r] = _mm512_fmadd_ps(v0, _mm512_permutex2var_ps(xl[r], i0, xh[r]), a0[r]);
          a1[r] = _mm512_fmadd_ps(v1, _mm512_permutex2var_ps(xl[r], i1, xh[r]), a1[r]);
        }
      }
      if (j < d) {
        const __m512i i0 = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w.idx + st * 16)));
        const __m512 v0 = _mm512_loadu_ps(val + st * 16);
        for (int r = 0; r < MR; ++r) a0[r] = _mm512_fmadd_ps(v0, _mm512_permutex2var_ps(xl[r], i0, xh[r]), a0[r]);
        ++st;
      }
    }
    const int64_t row0 = sl * 16;
    const __mmask16 k = n - row0 >= 16 ? __mmask16(0xFFFF) : tail_mask(n - row0);
    for (int r = 0; r < MR; ++r) _mm512_mask_storeu_ps(y + r * ldy + row0, k, _mm512_add_ps(a0[r], a1[r]));
  }
}

void sell_vec_f32(const SpmmSell& w, int64_t s0, int64_t s1, int64_t n, const float* x, int64_t ldx, int mr,
                  float* y, int64_t ldy) {
  switch (mr) {
    case 1: sell_vec_f32_t<1>(w, s0, s1, n, x, ldx, y, ldy); break;
    case 2: sell_vec_f32_t<2>(w, s0, s1, n, x, ldx, y, ldy); break;
    case 3: sell_vec_f32_t<3>(w, s0, s1, n, x, ldx, y, ldy); break;
    default: sell_vec_f32_t<4>(w, s0, s1, n, x, ldx, y, ldy); break;
  }
}

template <int MR>
void sell_vec_s8_t(const SpmmSell& w, int64_t s0, int64_t s1, int64_t n, const int32_t* x, int64_t ldx, int32_t* y,
                   int64_t ldy) {
  const int8_t* val = static_cast<const int8_t*>(w.val);
  for (int64_t sl = s0; sl < s1; ++sl) {
    __m512i a0[MR], a1[MR];
    for (int r = 0; r < MR; ++r) a0[r] = a1[r] = _mm512_setzero_si512();
    int64_t st = w.step_ptr[sl];
    for (int64_t run = w.run_ptr[sl]; run < w.run_ptr[sl + 1]; ++run) {
      const int64_t win = w.run_win[run];
      const int d = w.run_depth[run];
      __m512i xl[MR], xh[MR];
      for (int r = 0; r < MR; ++r) {
        xl[r] = _mm512_loadu_si512(x + r * ldx + 32 * win);
        xh[r] = _mm512_loadu_si512(x + r * ldx + 32 * win + 16);
      }
      int j = 0;
      for (; j + 2 <= d; j += 2, st += 2) {
        const __m512i i0 = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w.idx + st * 16)));
        const __m512i i1 =
            _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w.idx + st * 16 + 16)));
        const __m512i v0 = widen_w16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(val + st * 16)));
        const __m512i v1 = widen_w16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(val + st * 16 + 16)));
        for (int r = 0; r < MR; ++r) {
          a0[r] = _mm512_add_epi32(a0[r], _mm512_madd_epi16(v0, _mm512_permutex2var_epi32(xl[r], i0, xh[r])));
          a1[r] = _mm512_add_epi32(a1[r], _mm512_madd_epi16(v1, _mm512_permutex2var_epi32(xl[r], i1, xh[r])));
        }
      }
      if (j < d) {
        const __m512i i0 = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w.idx + st * 16)));
        const __m512i v0 = widen_w16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(val + st * 16)));
        for (int r = 0; r < MR; ++r)
          a0[r] = _mm512_add_epi32(a0[r], _mm512_madd_epi16(v0, _mm512_permutex2var_epi32(xl[r], i0, xh[r])));
        ++st;
      }
    }
    const int64_t row0 = sl * 16;
    const __mmask16 k = n - row0 >= 16 ? __mmask16(0xFFFF) : tail_mask(n - row0);
    for (int r = 0; r < MR; ++r) _mm512_mask_storeu_epi32(y + r * ldy + row0, k, _mm512_add_epi32(a0[r], a1[r]));
  }
}

void sell_vec_s8(const SpmmSell& w, int64_t s0, int64_t s1, int64_t n, const int32_t* x, int64_t ldx, int mr,
                 int32_t* y, int64_t ldy) {
  switch (mr) {
    case 1: sell_vec_s8_t<1>(w, s0, s1, n, x, ldx, y, ldy); break;
    case 2: sell_vec_s8_t<2>(w, s0, s1, n, x, ldx, y, ldy); break;
    case 3: sell_vec_s8_t<3>(w, s0, s1, n, x, ldx, y, ldy); break;
    default: sell_vec_s8_t<4>(w, s0, s1, n, x, ldx, y, ldy); break;
  }
}

// 2:4 positions layout: step j's lanes all read group g = j/2 of the window, so the 4 x values
// of that group are broadcast to every 128-bit lane and vpermilps picks each lane's one by the
// low 2 bits of its index dword: the lane's position word shifted right by 2j (the bits above
// are ignored). One shift, one in-lane permute and one FMA per 16 values; no index bytes.
template <int MR>
void sell_nm24_f32_t(const SpmmSell& w, int64_t s0, int64_t s1, int64_t n, const float* x, int64_t ldx, float* y,
                     int64_t ldy) {
  const float* val = static_cast<const float*>(w.val);
  for (int64_t sl = s0; sl < s1; ++sl) {
    const int64_t half = w.step_ptr[sl + 1] - w.step_ptr[sl];  // K/2
    const int64_t windows = (half + 15) / 16;
    __m512 a0[MR], a1[MR];
    for (int r = 0; r < MR; ++r) a0[r] = a1[r] = _mm512_setzero_ps();
    const float* vs = val + w.step_ptr[sl] * 16;
    const uint32_t* ps = w.pos + sl * windows * 16;
    for (int64_t win = 0; win < windows; ++win) {
      const __m512i pos = _mm512_loadu_si512(ps + win * 16);
      const float* vw = vs + win * 256;
      const float* xw = x + 32 * win;
      const int steps = half - 16 * win >= 16 ? 16 : int(half - 16 * win);
      if (steps == 16) {
#pragma GCC unroll 8
        for (int j = 0; j < 16; j += 2) {
          const __m512i i0 = _mm512_srli_epi32(pos, 2 * j), i1 = _mm512_srli_epi32(pos, 2 * j + 2);
          const __m512 v0 = _mm512_loadu_ps(vw + 16 * j), v1 = _mm512_loadu_ps(vw + 16 * j + 16);
          for (int r = 0; r < MR; ++r) {
            const __m512 xg = _mm512_broadcast_f32x4(_mm_loadu_ps(xw + r * ldx + 2 * j));
            a0[r] = _mm512_fmadd_ps(v0, _mm512_permutevar_ps(xg, i0), a0[r]);
            a1[r] = _mm512_fmadd_ps(v1, _mm512_permutevar_ps(xg, i1), a1[r]);
          }
        }
      } else {
        for (int j = 0; j < steps; ++j) {
          const __m512i i0 = _mm512_srl_epi32(pos, _mm_cvtsi32_si128(2 * j));
          const __m512 v0 = _mm512_loadu_ps(vw + 16 * j);
          for (int r = 0; r < MR; ++r) {
            const __m512 xg = _mm512_broadcast_f32x4(_mm_loadu_ps(xw + r * ldx + 4 * (j / 2)));
            a0[r] = _mm512_fmadd_ps(v0, _mm512_permutevar_ps(xg, i0), a0[r]);
          }
        }
      }
    }
    const int64_t row0 = sl * 16;
    const __mmask16 k = n - row0 >= 16 ? __mmask16(0xFFFF) : tail_mask(n - row0);
    for (int r = 0; r < MR; ++r) _mm512_mask_storeu_ps(y + r * ldy + row0, k, _mm512_add_ps(a0[r], a1[r]));
  }
}

void sell_nm24_f32(const SpmmSell& w, int64_t s0, int64_t s1, int64_t n, const float* x, int64_t ldx, int mr,
                   float* y, int64_t ldy) {
  switch (mr) {
    case 1: sell_nm24_f32_t<1>(w, s0, s1, n, x, ldx, y, ldy); break;
    case 2: sell_nm24_f32_t<2>(w, s0, s1, n, x, ldx, y, ldy); break;
    case 3: sell_nm24_f32_t<3>(w, s0, s1, n, x, ldx, y, ldy); break;
    default: sell_nm24_f32_t<4>(w, s0, s1, n, x, ldx, y, ldy); break;
  }
}

// ---- the smooth activations, 16 lanes (the scalar ones cost ~10 ns per output, more than a
// 90%-sparse row's products) ----

// 2^n * e^r with n = round(x / ln2), r = x - n ln2 (ln2 split in two for accuracy), e^r by its
// degree-6 Taylor series (|r| <= 0.35: relative error ~2e-7); x clamped to [-87, 88].
inline __m512 vexp(__m512 x) {
  x = _mm512_max_ps(_mm512_min_ps(x, _mm512_set1_ps(88.0f)), _mm512_set1_ps(-87.0f));
  const __m512 nn = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.4426950408889634f)),
                                         _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512 r = _mm512_fnmadd_ps(nn, _mm512_set1_ps(1.4286068e-06f), _mm512_fnmadd_ps(nn, _mm512_set1_ps(0.69314575f), x));
  const float c[7] = {1.0f / 720, 1.0f / 120, 1.0f / 24, 1.0f / 6, 0.5f, 1.0f, 1.0f};
  __m512 p = _mm512_set1_ps(c[0]);
  for (int i = 1; i < 7; ++i) p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c[i]));
  return _mm512_scalef_ps(p, nn);
}

// gelu(y) = y/2 * (1 + erf(y / sqrt2)); with z = |y| / sqrt2, erfc(z) = q(t) e^{-z^2},
// t = 1 / (1 + 0.3275911 z) (Abramowitz & Stegun 7.1.26, absolute error < 1.5e-7). 1 + erf(y/sqrt2)
// is 2 - erfc(z) for y >= 0 and erfc(z) below, so the negative tail has no cancellation.
inline __m512 vgelu(__m512 y) {
  const __m512 z = _mm512_mul_ps(_mm512_abs_ps(y), _mm512_set1_ps(0.70710678118654752f));
  const __m512 t = _mm512_div_ps(_mm512_set1_ps(1.0f), _mm512_fmadd_ps(z, _mm512_set1_ps(0.3275911f), _mm512_set1_ps(1.0f)));
  const float a[5] = {1.061405429f, -1.453152027f, 1.421413741f, -0.284496736f, 0.254829592f};
  __m512 q = _mm512_set1_ps(a[0]);
  for (int i = 1; i < 5; ++i) q = _mm512_fmadd_ps(q, t, _mm512_set1_ps(a[i]));
  const __m512 erfc = _mm512_mul_ps(_mm512_mul_ps(q, t), vexp(_mm512_mul_ps(_mm512_sub_ps(_mm512_setzero_ps(), z), z)));
  const __mmask16 nonneg = _mm512_cmp_ps_mask(y, _mm512_setzero_ps(), _CMP_GE_OQ);
  const __m512 onep = _mm512_mask_sub_ps(erfc, nonneg, _mm512_set1_ps(2.0f), erfc);
  return _mm512_mul_ps(_mm512_mul_ps(y, _mm512_set1_ps(0.5f)), onep);
}

// y / (1 + e^{-s}): silu with s = y; gelu_tanh with s = 2u, since y/2 (1 + tanh u) = y / (1 + e^{-2u}).
inline __m512 vsig_times(__m512 y, __m512 s) {
  return _mm512_div_ps(y, _mm512_add_ps(_mm512_set1_ps(1.0f), vexp(_mm512_sub_ps(_mm512_setzero_ps(), s))));
}

template <int A>
inline __m512 vact(__m512 y) {
  if (A == 2) return vgelu(y);
  if (A == 3) {
    const __m512 u = _mm512_mul_ps(_mm512_fmadd_ps(_mm512_mul_ps(_mm512_mul_ps(y, y), y), _mm512_set1_ps(0.044715f), y),
                                   _mm512_set1_ps(2.0f * 0.79788456080286536f));
    return vsig_times(y, u);
  }
  return vsig_times(y, y);
}

template <int A>
void act_t(float* y, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, vact<A>(_mm512_loadu_ps(y + i)));
  if (i < n) {
    const __mmask16 k = tail_mask(n - i);
    _mm512_mask_storeu_ps(y + i, k, vact<A>(_mm512_maskz_loadu_ps(k, y + i)));
  }
}

void act_f32(float* y, int64_t n, int act) {
  switch (act) {
    case 2: act_t<2>(y, n); break;
    case 3: act_t<3>(y, n); break;
    case 4: act_t<4>(y, n); break;
    default: break;
  }
}

}  // namespace

void register_spmm(KernelTable& t) {
  t.spmm.act_f32 = act_f32;
  t.spmm.csr_vec_f32 = csr_vec_f32;
  t.spmm.csr_vec_s8 = csr_vec_s8;
  t.spmm.csr_tile_f32 = csr_tile_f32;
  t.spmm.csr_tile_s8 = csr_tile_s8;
  t.spmm.nm24_vec_f32 = nm24_vec_f32;
  t.spmm.nm24_vec_s8 = nm24_vec_s8;
  t.spmm.nm24_tile_f32 = nm24_tile_f32;
  t.spmm.nm24_tile_s8 = nm24_tile_s8;
  t.spmm.sell_vec_f32 = sell_vec_f32;
  t.spmm.sell_slide_f32 = sell_slide_f32;
  t.spmm.sell_nm24_f32 = sell_nm24_f32;
  t.spmm.sell_vec_s8 = sell_vec_s8;
  t.spmm.sell_rows = 16;
  t.spmm.sell_win = 32;
  t.spmm.sell_max_m = 64;
  t.spmm.sell_keep_bytes = int64_t(1) << 62;
}

}  // namespace edgepack::avx512
