// AVX-512 attention head. Scores row by row against the head's keys transposed into scratch (16
// columns per zmm, no horizontal sums), a vectorized exp (Cody-Waite reduction, degree-6
// polynomial, vscalefps), then p @ v with four accumulators per 16-column chunk.
// avx512_vnni inherits this entry.
#include <immintrin.h>

#include <cstddef>
#include <cstdint>

#include "core/dispatch.h"
#include "kernels/attn/attn.h"

namespace edgepack::avx512 {
namespace {

#define EP_INLINE inline __attribute__((always_inline))

#include "kernels/common/vexp_zmm.inc"

// p[j0 .. j0 + 16 NV) = q_i . k_j for NV column vectors, keys transposed in kt (row stride lp).
template <int NV>
EP_INLINE void scores(const float* qi, const float* kt, int64_t lp, int64_t dh, int64_t j0, float* p) {
  __m512 acc[NV];
  for (int u = 0; u < NV; ++u) acc[u] = _mm512_setzero_ps();
  for (int64_t c = 0; c < dh; ++c) {
    const __m512 qc = _mm512_set1_ps(qi[c]);
    const float* kr = kt + c * lp + j0;
    for (int u = 0; u < NV; ++u) acc[u] = _mm512_fmadd_ps(qc, _mm512_loadu_ps(kr + 16 * u), acc[u]);
  }
  for (int u = 0; u < NV; ++u) _mm512_storeu_ps(p + j0 + 16 * u, acc[u]);
}

// oi[0 .. w) = inv * sum_j p[j] v[j, 0 .. w) for w <= 64, v rows of stride ld.
EP_INLINE void weighted_sum_any(const float* p, const float* v, int64_t ld, int64_t L, int64_t w, __m512 inv,
                                float* oi) {
  for (int64_t c0 = 0; c0 < w; c0 += 16) {
    const __mmask16 mk = w - c0 >= 16 ? __mmask16(0xFFFF) : static_cast<__mmask16>((1u << (w - c0)) - 1);
    __m512 a0 = _mm512_setzero_ps(), a1 = a0;
    int64_t j = 0;
    for (; j + 2 <= L; j += 2) {
      a0 = _mm512_fmadd_ps(_mm512_set1_ps(p[j]), _mm512_maskz_loadu_ps(mk, v + j * ld + c0), a0);
      a1 = _mm512_fmadd_ps(_mm512_set1_ps(p[j + 1]), _mm512_maskz_loadu_ps(mk, v + (j + 1) * ld + c0), a1);
    }
    if (j < L) a0 = _mm512_fmadd_ps(_mm512_set1_ps(p[j]), _mm512_maskz_loadu_ps(mk, v + j * ld + c0), a0);
    _mm512_mask_storeu_ps(oi + c0, mk, _mm512_mul_ps(_mm512_add_ps(a0, a1), inv));
  }
}

// out rows [i0, i0 + RB) = inv_i * sum_j P[i, j] v[j] for NC = ceil(dh / 16) column chunks, v
// contiguous [L, dh], P rows of stride lp: RB rows share every load of v (RB * NC accumulators).
template <int RB, int NC>
EP_INLINE void pv_block(const float* P, int64_t lp, const float* inv, const float* v, int64_t L, int64_t dh,
                        float* out, int64_t ldo) {
  __mmask16 mk[NC];
  for (int c = 0; c < NC; ++c)
    mk[c] = dh - 16 * c >= 16 ? __mmask16(0xFFFF) : static_cast<__mmask16>((1u << (dh - 16 * c)) - 1);
  __m512 a[RB][NC];
  for (int r = 0; r < RB; ++r)
    for (int c = 0; c < NC; ++c) a[r][c] = _mm512_setzero_ps();
  for (int64_t j = 0; j < L; ++j) {
    __m512 vj[NC];
    for (int c = 0; c < NC; ++c) vj[c] = _mm512_maskz_loadu_ps(mk[c], v + j * dh + 16 * c);
    for (int r = 0; r < RB; ++r) {
      const __m512 pr = _mm512_set1_ps(P[r * lp + j]);
      for (int c = 0; c < NC; ++c) a[r][c] = _mm512_fmadd_ps(pr, vj[c], a[r][c]);
    }
  }
  for (int r = 0; r < RB; ++r) {
    const __m512 s = _mm512_set1_ps(inv[r]);
    for (int c = 0; c < NC; ++c) _mm512_mask_storeu_ps(out + r * ldo + 16 * c, mk[c], _mm512_mul_ps(a[r][c], s));
  }
}

template <int RB, int NC>
void pv_rows(const float* P, int64_t lp, const float* inv, const float* v, int64_t L, int64_t dh, float* out,
             int64_t ldo) {
  int64_t i = 0;
  for (; i + RB <= L; i += RB) pv_block<RB, NC>(P + i * lp, lp, inv + i, v, L, dh, out + i * ldo, ldo);
  for (; i < L; ++i) pv_block<1, NC>(P + i * lp, lp, inv + i, v, L, dh, out + i * ldo, ldo);
}

void head(const float* q, const float* k, const float* v, int64_t ld, int64_t L, int64_t dh, float* out,
          int64_t ldo, float* kt, float* P) {
  const int64_t lp = (L + 15) / 16 * 16;
  attn::stage_keys_values(k, v, ld, L, dh, kt);
  const float* vt = kt + dh * lp;  // values, [L, dh] contiguous
  float* inv = P + L * lp;   // 1 / row sums
  const __m512 neg_inf = _mm512_set1_ps(-__builtin_inff());
  const __mmask16 real = static_cast<__mmask16>((1u << (16 - (lp - L))) - 1);
  // 1. all scores, then 2. exp and sums row by row: independent rows keep the core busy where one
  // row's scores -> max -> exp -> sum chain would stall it
  for (int64_t i = 0; i < L; ++i) {
    const float* qi = q + i * ld;
    float* p = P + i * lp;
    int64_t j0 = 0;
    for (; j0 + 128 <= lp; j0 += 128) scores<8>(qi, kt, lp, dh, j0, p);
    switch ((lp - j0) / 16) {
      case 7: scores<7>(qi, kt, lp, dh, j0, p); break;
      case 6: scores<6>(qi, kt, lp, dh, j0, p); break;
      case 5: scores<5>(qi, kt, lp, dh, j0, p); break;
      case 4: scores<4>(qi, kt, lp, dh, j0, p); break;
      case 3: scores<3>(qi, kt, lp, dh, j0, p); break;
      case 2: scores<2>(qi, kt, lp, dh, j0, p); break;
      case 1: scores<1>(qi, kt, lp, dh, j0, p); break;
      default: break;
    }
    // padded key columns must not take any weight
    _mm512_storeu_ps(p + lp - 16, _mm512_mask_blend_ps(real, neg_inf, _mm512_loadu_ps(p + lp - 16)));
  }
  for (int64_t i = 0; i < L; ++i) {
    float* p = P + i * lp;
    __m512 mx = _mm512_loadu_ps(p);
    for (int64_t j = 16; j < lp; j += 16) mx = _mm512_max_ps(mx, _mm512_loadu_ps(p + j));
    const __m512 m = _mm512_set1_ps(_mm512_reduce_max_ps(mx));
    __m512 den = _mm512_setzero_ps();
    for (int64_t j = 0; j < lp; j += 16) {
      const __m512 e = v_exp(_mm512_sub_ps(_mm512_loadu_ps(p + j), m));
      _mm512_storeu_ps(p + j, e);
      den = _mm512_add_ps(den, e);
    }
    inv[i] = 1.0f / _mm512_reduce_add_ps(den);
  }
  // 3. p @ v, four query rows per pass over v
  switch ((dh + 15) / 16) {
    case 1: pv_rows<4, 1>(P, lp, inv, vt, L, dh, out, ldo); break;
    case 2: pv_rows<4, 2>(P, lp, inv, vt, L, dh, out, ldo); break;
    case 3: pv_rows<2, 3>(P, lp, inv, vt, L, dh, out, ldo); break;
    case 4: pv_rows<2, 4>(P, lp, inv, vt, L, dh, out, ldo); break;
    default:
      for (int64_t i = 0; i < L; ++i)
        for (int64_t c0 = 0; c0 < dh; c0 += 64) {
          const int64_t w = dh - c0 < 64 ? dh - c0 : 64;
          weighted_sum_any(P + i * lp, vt + c0, dh, L, w, _mm512_set1_ps(inv[i]), out + i * ldo + c0);
        }
  }
}

}  // namespace

void register_attn(KernelTable& t) {
  t.attn.head = head;
  t.attn.vectorized = true;
}

}  // namespace edgepack::avx512
