// AVX2 + FMA spmm kernels: the AVX-512 designs on 8-lane vectors.
//  - small M, CSR: gather x by widened uint16 columns (masked gather for the row tail).
//  - large M, CSR tile: broadcast weight times mt/8 vectors of the transposed tile.
//  - small M, 2:4: 4 groups (8 values) per step. vpermilps permutes within 128-bit lanes, and each
//    128-bit lane of a 16-float x window load is one group, so one index vector (the 2-bit
//    positions shifted into place) serves two loads; a blend merges them and the values are put in
//    the matching qword order (groups 0,2 | 1,3).
//  - int8: x as sign-extended int32; weights widened with a zero high half, exact via vpmaddwd.
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "core/dispatch.h"
#include "kernels/spmm/spmm.h"

namespace edgepack::avx2 {
namespace {

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}
inline int32_t hsum(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
  return _mm_cvtsi128_si32(s);
}
inline __m256i load_col8(const uint16_t* c) {
  return _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(c)));
}
// int8 weights as (w, 0) int16 pairs: the zero high half cancels x's sign-extension in vpmaddwd.
inline __m256i widen_w16(__m128i v8) {
  return _mm256_and_si256(_mm256_cvtepi8_epi32(v8), _mm256_set1_epi32(0xFFFF));
}
inline __m128i load8_s8(const int8_t* p) { return _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)); }

// The last (< 16) nonzeros of a row, copied into zero-padded buffers; lanes past the end are
// masked out of the gather, so they read nothing and add 0.
struct Tail {
  alignas(32) int32_t idx[16];
  alignas(32) int32_t valid[16];
  void load(const uint16_t* col, int64_t rem) {
    for (int q = 0; q < 16; ++q) {
      idx[q] = q < rem ? col[q] : 0;
      valid[q] = q < rem ? -1 : 0;
    }
  }
};

template <int MR>
void csr_vec_f32_t(const int64_t* rp, const uint16_t* col, const float* val, int64_t n, const float* x,
                   int64_t ldx, float* y, int64_t ldy) {
  for (int64_t i = 0; i < n; ++i) {
    __m256 a0[MR], a1[MR];
    for (int r = 0; r < MR; ++r) a0[r] = a1[r] = _mm256_setzero_ps();
    int64_t p = rp[i];
    const int64_t end = rp[i + 1];
    for (; p + 16 <= end; p += 16) {
      const __m256i i0 = load_col8(col + p), i1 = load_col8(col + p + 8);
      const __m256 v0 = _mm256_loadu_ps(val + p), v1 = _mm256_loadu_ps(val + p + 8);
      for (int r = 0; r < MR; ++r) {
        a0[r] = _mm256_fmadd_ps(v0, _mm256_i32gather_ps(x + r * ldx, i0, 4), a0[r]);
        a1[r] = _mm256_fmadd_ps(v1, _mm256_i32gather_ps(x + r * ldx, i1, 4), a1[r]);
      }
    }
    if (p < end) {
      Tail t;
      t.load(col + p, end - p);
      alignas(32) float vb[16];
      for (int q = 0; q < 16; ++q) vb[q] = q < end - p ? val[p + q] : 0.0f;
      for (int h = 0; h < 2; ++h) {
        const __m256i ix = _mm256_load_si256(reinterpret_cast<const __m256i*>(t.idx + 8 * h));
        const __m256 mk = _mm256_castsi256_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(t.valid + 8 * h)));
        const __m256 v = _mm256_load_ps(vb + 8 * h);
        for (int r = 0; r < MR; ++r)
          a0[r] = _mm256_fmadd_ps(v, _mm256_mask_i32gather_ps(_mm256_setzero_ps(), x + r * ldx, ix, mk, 4), a0[r]);
      }
    }
    for (int r = 0; r < MR; ++r) y[r * ldy + i] = hsum(_mm256_add_ps(a0[r], a1[r]));
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
    __m256i a0[MR], a1[MR];
    for (int r = 0; r < MR; ++r) a0[r] = a1[r] = _mm256_setzero_si256();
    int64_t p = rp[i];
    const int64_t end = rp[i + 1];
    for (; p + 16 <= end; p += 16) {
      const __m256i i0 = load_col8(col + p), i1 = load_col8(col + p + 8);
      const __m256i v0 = widen_w16(load8_s8(val + p)), v1 = widen_w16(load8_s8(val + p + 8));
      for (int r = 0; r < MR; ++r) {
        a0[r] = _mm256_add_epi32(a0[r], _mm256_madd_epi16(v0, _mm256_i32gather_epi32(x + r * ldx, i0, 4)));
        a1[r] = _mm256_add_epi32(a1[r], _mm256_madd_epi16(v1, _mm256_i32gather_epi32(x + r * ldx, i1, 4)));
      }
    }
    if (p < end) {
      Tail t;
      t.load(col + p, end - p);
      alignas(16) int8_t vb[16];
      for (int q = 0; q < 16; ++q) vb[q] = q < end - p ? val[p + q] : int8_t(0);
      for (int h = 0; h < 2; ++h) {
        const __m256i ix = _mm256_load_si256(reinterpret_cast<const __m256i*>(t.idx + 8 * h));
        const __m256i mk = _mm256_load_si256(reinterpret_cast<const __m256i*>(t.valid + 8 * h));
        const __m256i v = widen_w16(load8_s8(vb + 8 * h));
        for (int r = 0; r < MR; ++r)
          a0[r] = _mm256_add_epi32(
              a0[r], _mm256_madd_epi16(v, _mm256_mask_i32gather_epi32(_mm256_setzero_si256(), x + r * ldx, ix, mk, 4)));
      }
    }
    for (int r = 0; r < MR; ++r) y[r * ldy + i] = hsum(_mm256_add_epi32(a0[r], a1[r]));
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

template <int NV, int S>
void csr_tile_f32_t(const int64_t* seg, int64_t ss, const uint16_t* col, const float* val, int64_t n,
                    const float* xt, float* yt, bool accumulate) {
  constexpr int MT = NV * 8;
  for (int64_t i = 0; i < n; ++i) {
    __m256 acc[S][NV];
    for (int s = 0; s < S; ++s)
      for (int v = 0; v < NV; ++v) acc[s][v] = _mm256_setzero_ps();
    int64_t p = seg[i * ss];
    const int64_t end = seg[i * ss + 1];
    for (; p + S <= end; p += S) {
      for (int s = 0; s < S; ++s) {
        const __m256 w = _mm256_broadcast_ss(val + p + s);
        const float* xr = xt + int64_t(col[p + s]) * MT;
        for (int v = 0; v < NV; ++v) acc[s][v] = _mm256_fmadd_ps(w, _mm256_loadu_ps(xr + 8 * v), acc[s][v]);
      }
    }
    for (; p < end; ++p) {
      const __m256 w = _mm256_broadcast_ss(val + p);
      const float* xr = xt + int64_t(col[p]) * MT;
      for (int v = 0; v < NV; ++v) acc[0][v] = _mm256_fmadd_ps(w, _mm256_loadu_ps(xr + 8 * v), acc[0][v]);
    }
    for (int v = 0; v < NV; ++v) {
      __m256 t = acc[0][v];
      for (int s = 1; s < S; ++s) t = _mm256_add_ps(t, acc[s][v]);
      if (accumulate) t = _mm256_add_ps(t, _mm256_loadu_ps(yt + i * MT + 8 * v));
      _mm256_storeu_ps(yt + i * MT + 8 * v, t);
    }
  }
}

void csr_tile_f32(const int64_t* seg, int64_t ss, const uint16_t* col, const float* val, int64_t n,
                  const float* xt, int mt, float* yt, bool accumulate) {
  switch (mt) {
    case 16: csr_tile_f32_t<2, 4>(seg, ss, col, val, n, xt, yt, accumulate); break;
    case 32: csr_tile_f32_t<4, 2>(seg, ss, col, val, n, xt, yt, accumulate); break;
    case 48: csr_tile_f32_t<6, 1>(seg, ss, col, val, n, xt, yt, accumulate); break;
    default: csr_tile_f32_t<8, 1>(seg, ss, col, val, n, xt, yt, accumulate); break;
  }
}

template <int NV, int S>
void csr_tile_s8_t(const int64_t* seg, int64_t ss, const uint16_t* col, const int8_t* val, int64_t n,
                   const int32_t* xt, int32_t* yt, bool accumulate) {
  constexpr int MT = NV * 8;
  for (int64_t i = 0; i < n; ++i) {
    __m256i acc[S][NV];
    for (int s = 0; s < S; ++s)
      for (int v = 0; v < NV; ++v) acc[s][v] = _mm256_setzero_si256();
    int64_t p = seg[i * ss];
    const int64_t end = seg[i * ss + 1];
    for (; p + S <= end; p += S) {
      for (int s = 0; s < S; ++s) {
        const __m256i w = _mm256_set1_epi32(int32_t(uint16_t(int16_t(val[p + s]))));
        const __m256i* xr = reinterpret_cast<const __m256i*>(xt + int64_t(col[p + s]) * MT);
        for (int v = 0; v < NV; ++v)
          acc[s][v] = _mm256_add_epi32(acc[s][v], _mm256_madd_epi16(w, _mm256_loadu_si256(xr + v)));
      }
    }
    for (; p < end; ++p) {
      const __m256i w = _mm256_set1_epi32(int32_t(uint16_t(int16_t(val[p]))));
      const __m256i* xr = reinterpret_cast<const __m256i*>(xt + int64_t(col[p]) * MT);
      for (int v = 0; v < NV; ++v)
        acc[0][v] = _mm256_add_epi32(acc[0][v], _mm256_madd_epi16(w, _mm256_loadu_si256(xr + v)));
    }
    __m256i* out = reinterpret_cast<__m256i*>(yt + i * MT);
    for (int v = 0; v < NV; ++v) {
      __m256i t = acc[0][v];
      for (int s = 1; s < S; ++s) t = _mm256_add_epi32(t, acc[s][v]);
      if (accumulate) t = _mm256_add_epi32(t, _mm256_loadu_si256(out + v));
      _mm256_storeu_si256(out + v, t);
    }
  }
}

void csr_tile_s8(const int64_t* seg, int64_t ss, const uint16_t* col, const int8_t* val, int64_t n,
                 const int32_t* xt, int mt, int32_t* yt, bool accumulate) {
  switch (mt) {
    case 16: csr_tile_s8_t<2, 4>(seg, ss, col, val, n, xt, yt, accumulate); break;
    case 32: csr_tile_s8_t<4, 2>(seg, ss, col, val, n, xt, yt, accumulate); break;
    case 48: csr_tile_s8_t<6, 1>(seg, ss, col, val, n, xt, yt, accumulate); break;
    default: csr_tile_s8_t<8, 1>(seg, ss, col, val, n, xt, yt, accumulate); break;
  }
}

// Index vector for 4 groups g..g+3 (meta bits 0..15): lanes [g, g, g+2, g+2 | g+1, g+1, g+3, g+3];
// vpermilps reads only the low 2 bits of each lane, so no mask is needed.
inline __m256i nm24_index(const uint8_t* meta_pair) {
  uint16_t mw;
  std::memcpy(&mw, meta_pair, 2);
  return _mm256_srlv_epi32(_mm256_set1_epi32(mw), _mm256_setr_epi32(0, 2, 8, 10, 4, 6, 12, 14));
}
// Values of groups g..g+3 reordered to qwords (g, g+2, g+1, g+3) to match nm24_index.
inline __m256 nm24_vals(const float* v) {
  return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_loadu_ps(v)), 0xD8));
}
inline __m256 nm24_x(const float* xr, __m256i ix) {
  return _mm256_blend_ps(_mm256_permutevar_ps(_mm256_loadu_ps(xr), ix),
                         _mm256_permutevar_ps(_mm256_loadu_ps(xr + 8), ix), 0xCC);
}

template <int MR>
void nm24_vec_f32_t(const float* val, const uint8_t* meta, int64_t k, int64_t n, const float* x, int64_t ldx,
                    float* y, int64_t ldy) {
  const int64_t groups = k / 4, vs = k / 2, ms = (groups + 1) / 2;
  for (int64_t i = 0; i < n; ++i) {
    const float* v = val + i * vs;
    const uint8_t* m = meta + i * ms;
    __m256 a0[MR], a1[MR];
    for (int r = 0; r < MR; ++r) a0[r] = a1[r] = _mm256_setzero_ps();
    int64_t g = 0;
    for (; g + 8 <= groups; g += 8) {
      const __m256i ix0 = nm24_index(m + g / 2), ix1 = nm24_index(m + g / 2 + 2);
      const __m256 v0 = nm24_vals(v + 2 * g), v1 = nm24_vals(v + 2 * g + 8);
      for (int r = 0; r < MR; ++r) {
        const float* xr = x + r * ldx + 4 * g;
        a0[r] = _mm256_fmadd_ps(v0, nm24_x(xr, ix0), a0[r]);
        a1[r] = _mm256_fmadd_ps(v1, nm24_x(xr + 16, ix1), a1[r]);
      }
    }
    for (; g + 4 <= groups; g += 4) {
      const __m256i ix0 = nm24_index(m + g / 2);
      const __m256 v0 = nm24_vals(v + 2 * g);
      for (int r = 0; r < MR; ++r) a0[r] = _mm256_fmadd_ps(v0, nm24_x(x + r * ldx + 4 * g, ix0), a0[r]);
    }
    for (int r = 0; r < MR; ++r) {
      float t = hsum(_mm256_add_ps(a0[r], a1[r]));
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
    __m256i a0[MR];
    for (int r = 0; r < MR; ++r) a0[r] = _mm256_setzero_si256();
    int64_t g = 0;
    for (; g + 4 <= groups; g += 4) {
      const __m256i ix = nm24_index(m + g / 2);
      const __m256i w = _mm256_permute4x64_epi64(widen_w16(load8_s8(v + 2 * g)), 0xD8);
      for (int r = 0; r < MR; ++r) {
        const __m256i xs = _mm256_castps_si256(
            nm24_x(reinterpret_cast<const float*>(x + r * ldx + 4 * g), ix));
        a0[r] = _mm256_add_epi32(a0[r], _mm256_madd_epi16(w, xs));
      }
    }
    for (int r = 0; r < MR; ++r) {
      int32_t t = hsum(a0[r]);
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
  using V = __m256;
  using X = float;
  using W = float;
  static constexpr int L = 8;
  static V zero() { return _mm256_setzero_ps(); }
  static V bcast(W w) { return _mm256_set1_ps(w); }
  static V madd(V acc, V w, const X* x) { return _mm256_fmadd_ps(w, _mm256_loadu_ps(x), acc); }
  static V add(V a, V b) { return _mm256_add_ps(a, b); }
  static V load(const X* p) { return _mm256_loadu_ps(p); }
  static void store(X* p, V v) { _mm256_storeu_ps(p, v); }
};
struct S8Ops {
  using V = __m256i;
  using X = int32_t;
  using W = int8_t;
  static constexpr int L = 8;
  static V zero() { return _mm256_setzero_si256(); }
  static V bcast(W w) { return _mm256_set1_epi32(int32_t(uint16_t(int16_t(w)))); }
  static V madd(V acc, V w, const X* x) {
    return _mm256_add_epi32(acc, _mm256_madd_epi16(w, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x))));
  }
  static V add(V a, V b) { return _mm256_add_epi32(a, b); }
  static V load(const X* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
  static void store(X* p, V v) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), v); }
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
    case 16: nm24_tile_t<F32Ops, 2, 4>(val, meta, k, g0, g1, n, xt, yt, accumulate); break;
    case 32: nm24_tile_t<F32Ops, 4, 2>(val, meta, k, g0, g1, n, xt, yt, accumulate); break;
    case 48: nm24_tile_t<F32Ops, 6, 1>(val, meta, k, g0, g1, n, xt, yt, accumulate); break;
    default: nm24_tile_t<F32Ops, 8, 1>(val, meta, k, g0, g1, n, xt, yt, accumulate); break;
  }
}

void nm24_tile_s8(const int8_t* val, const uint8_t* meta, int64_t k, int64_t g0, int64_t g1, int64_t n,
                   const int32_t* xt, int mt, int32_t* yt, bool accumulate) {
  switch (mt) {
    case 16: nm24_tile_t<S8Ops, 2, 4>(val, meta, k, g0, g1, n, xt, yt, accumulate); break;
    case 32: nm24_tile_t<S8Ops, 4, 2>(val, meta, k, g0, g1, n, xt, yt, accumulate); break;
    case 48: nm24_tile_t<S8Ops, 6, 1>(val, meta, k, g0, g1, n, xt, yt, accumulate); break;
    default: nm24_tile_t<S8Ops, 8, 1>(val, meta, k, g0, g1, n, xt, yt, accumulate); break;
  }
}


// Small-M sliced windows in the AVX2 geometry: slices of 8 rows (one ymm of lanes), windows of 16
// columns held in two registers; vpermps picks within each half by index bits 0-2 and a blend on
// bit 3 (shifted into the sign bit) chooses the half. No gathers.
inline __m256 sell_pick(__m256 xl, __m256 xh, __m256i ix) {
  return _mm256_blendv_ps(_mm256_permutevar8x32_ps(xl, ix), _mm256_permutevar8x32_ps(xh, ix),
                          _mm256_castsi256_ps(_mm256_slli_epi32(ix, 28)));
}
inline __m256i sell_idx(const uint8_t* p) {
  return _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
}
inline __m256i lane_mask(int64_t rows) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(int32_t(rows)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

template <int MR>
void sell_vec_f32_t(const SpmmSell& w, int64_t s0, int64_t s1, int64_t n, const float* x, int64_t ldx, float* y,
                    int64_t ldy) {
  const float* val = static_cast<const float*>(w.val);
  for (int64_t sl = s0; sl < s1; ++sl) {
    __m256 a0[MR], a1[MR];
    for (int r = 0; r < MR; ++r) a0[r] = a1[r] = _mm256_setzero_ps();
    int64_t st = w.step_ptr[sl];
    for (int64_t run = w.run_ptr[sl]; run < w.run_ptr[sl + 1]; ++run) {
      const int64_t win = w.run_win[run];
      const int d = w.run_depth[run];
      __m256 xl[MR], xh[MR];
      for (int r = 0; r < MR; ++r) {
        xl[r] = _mm256_loadu_ps(x + r * ldx + 16 * win);
        xh[r] = _mm256_loadu_ps(x + r * ldx + 16 * win + 8);
      }
      int j = 0;
      for (; j + 2 <= d; j += 2, st += 2) {
        const __m256i i0 = sell_idx(w.idx + st * 8), i1 = sell_idx(w.idx + st * 8 + 8);
        const __m256 v0 = _mm256_loadu_ps(val + st * 8), v1 = _mm256_loadu_ps(val + st * 8 + 8);
        for (int r = 0; r < MR; ++r) {
          a0[r] = _mm256_fmadd_ps(v0, sell_pick(xl[r], xh[r], i0), a0[r]);
          a1[r] = _mm256_fmadd_ps(v1, sell_pick(xl[r], xh[r], i1), a1[r]);
        }
      }
      if (j < d) {
        const __m256i i0 = sell_idx(w.idx + st * 8);
        const __m256 v0 = _mm256_loadu_ps(val + st * 8);
        for (int r = 0; r < MR; ++r) a0[r] = _mm256_fmadd_ps(v0, sell_pick(xl[r], xh[r], i0), a0[r]);
        ++st;
      }
    }
    const int64_t row0 = sl * 8;
    if (n - row0 >= 8) {
      for (int r = 0; r < MR; ++r) _mm256_storeu_ps(y + r * ldy + row0, _mm256_add_ps(a0[r], a1[r]));
    } else {
      const __m256i mk = lane_mask(n - row0);
      for (int r = 0; r < MR; ++r) _mm256_maskstore_ps(y + r * ldy + row0, mk, _mm256_add_ps(a0[r], a1[r]));
    }
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

inline __m256i sell_pick_i(__m256i xl, __m256i xh, __m256i ix) {
  return _mm256_castps_si256(sell_pick(_mm256_castsi256_ps(xl), _mm256_castsi256_ps(xh), ix));
}

template <int MR>
void sell_vec_s8_t(const SpmmSell& w, int64_t s0, int64_t s1, int64_t n, const int32_t* x, int64_t ldx, int32_t* y,
                   int64_t ldy) {
  const int8_t* val = static_cast<const int8_t*>(w.val);
  for (int64_t sl = s0; sl < s1; ++sl) {
    __m256i a0[MR], a1[MR];
    for (int r = 0; r < MR; ++r) a0[r] = a1[r] = _mm256_setzero_si256();
    int64_t st = w.step_ptr[sl];
    for (int64_t run = w.run_ptr[sl]; run < w.run_ptr[sl + 1]; ++run) {
      const int64_t win = w.run_win[run];
      const int d = w.run_depth[run];
      __m256i xl[MR], xh[MR];
      for (int r = 0; r < MR; ++r) {
        xl[r] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + r * ldx + 16 * win));
        xh[r] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + r * ldx + 16 * win + 8));
      }
      int j = 0;
      for (; j + 2 <= d; j += 2, st += 2) {
        const __m256i i0 = sell_idx(w.idx + st * 8), i1 = sell_idx(w.idx + st * 8 + 8);
        const __m256i v0 = widen_w16(load8_s8(val + st * 8)), v1 = widen_w16(load8_s8(val + st * 8 + 8));
        for (int r = 0; r < MR; ++r) {
          a0[r] = _mm256_add_epi32(a0[r], _mm256_madd_epi16(v0, sell_pick_i(xl[r], xh[r], i0)));
          a1[r] = _mm256_add_epi32(a1[r], _mm256_madd_epi16(v1, sell_pick_i(xl[r], xh[r], i1)));
        }
      }
      if (j < d) {
        const __m256i i0 = sell_idx(w.idx + st * 8);
        const __m256i v0 = widen_w16(load8_s8(val + st * 8));
        for (int r = 0; r < MR; ++r)
          a0[r] = _mm256_add_epi32(a0[r], _mm256_madd_epi16(v0, sell_pick_i(xl[r], xh[r], i0)));
        ++st;
      }
    }
    const int64_t row0 = sl * 8;
    if (n - row0 >= 8) {
      for (int r = 0; r < MR; ++r)
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(y + r * ldy + row0), _mm256_add_epi32(a0[r], a1[r]));
    } else {
      const __m256i mk = lane_mask(n - row0);
      for (int r = 0; r < MR; ++r) _mm256_maskstore_epi32(y + r * ldy + row0, mk, _mm256_add_epi32(a0[r], a1[r]));
    }
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

}  // namespace

void register_spmm(KernelTable& t) {
  t.spmm.csr_vec_f32 = csr_vec_f32;
  t.spmm.csr_vec_s8 = csr_vec_s8;
  t.spmm.csr_tile_f32 = csr_tile_f32;
  t.spmm.csr_tile_s8 = csr_tile_s8;
  t.spmm.nm24_vec_f32 = nm24_vec_f32;
  t.spmm.nm24_vec_s8 = nm24_vec_s8;
  t.spmm.nm24_tile_f32 = nm24_tile_f32;
  t.spmm.nm24_tile_s8 = nm24_tile_s8;
  t.spmm.sell_vec_f32 = sell_vec_f32;
  t.spmm.sell_vec_s8 = sell_vec_s8;
  t.spmm.sell_rows = 8;
  t.spmm.sell_win = 16;
  t.spmm.sell_max_m = kSpmmVecRows * 2 - 1;  // small batches only (measured: the tile route wins from 8)
  // Measured on Zen 5: at 90% sparsity the 8 x 16 layout beats gathers 3x while it is cache-sized
  // (3072 x 768: 2.6 MB) and loses 1.4x at 4096 x 4096 (19 MB).
  t.spmm.sell_keep_bytes = int64_t(8) << 20;
}

}  // namespace edgepack::avx2
