// AVX-512 VNNI: the int8 small-M kernel with vpdpwssd, which fuses the int16 pair products and
// the accumulation (one instruction where AVX-512BW needs vpmaddwd + vpaddd). Exact: each lane
// is x * w + 0 * sign(x) (weights carry a zero high half), and vpdpwssd wraps like vpaddd.
// Everything else is inherited from the avx512 path.
//
// With AVX-512 VBMI (checked at registration; the TU's flags do not include it, only the quad
// kernel's own target attribute) int8 weights use the quad geometry instead: per step one vpermb
// gathers 4 activation bytes for each of 16 rows from a 64-byte window of (x + 128), and one
// vpdpbusd multiplies them with 64 weight bytes (4 nonzeros of each row), about 36 nonzeros per
// instruction pair at 90% sparsity where the vpdpwssd kernel does 16 slots (~8 nonzeros).
#include <immintrin.h>

#include <cstdint>

#include "core/cpu_features.h"
#include "core/dispatch.h"
#include "kernels/spmm/spmm.h"

namespace edgepack::avx512_vnni {
namespace {

inline __mmask16 tail_mask(int64_t r) { return static_cast<__mmask16>((1u << r) - 1u); }
inline __m512i widen_w16(__m128i v) {
  return _mm512_and_si512(_mm512_cvtepi8_epi32(v), _mm512_set1_epi32(0xFFFF));
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
          a0[r] = _mm512_dpwssd_epi32(a0[r], v0, _mm512_permutex2var_epi32(xl[r], i0, xh[r]));
          a1[r] = _mm512_dpwssd_epi32(a1[r], v1, _mm512_permutex2var_epi32(xl[r], i1, xh[r]));
        }
      }
      if (j < d) {
        const __m512i i0 = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w.idx + st * 16)));
        const __m512i v0 = widen_w16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(val + st * 16)));
        for (int r = 0; r < MR; ++r)
          a0[r] = _mm512_dpwssd_epi32(a0[r], v0, _mm512_permutex2var_epi32(xl[r], i0, xh[r]));
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

#define EP_VBMI __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")))

// Steps are walked flat (step_win gives each one's window): the trip count per slice is the only
// loop exit, so there is no per-window branch to mispredict. Two accumulator sets (even and odd
// steps) hide the vpdpbusd latency.
template <int MR>
EP_VBMI void sell_quad_s8_t(const SpmmSell& w, int64_t s0, int64_t s1, int64_t n, const uint8_t* x, int64_t ldx,
                            int32_t* y, int64_t ldy) {
  const int8_t* val = static_cast<const int8_t*>(w.val);
  for (int64_t sl = s0; sl < s1; ++sl) {
    __m512i a0[MR], a1[MR];
    for (int r = 0; r < MR; ++r) a0[r] = a1[r] = _mm512_setzero_si512();
    int64_t st = w.step_ptr[sl];
    const int64_t end = w.step_ptr[sl + 1];
    for (; st + 2 <= end; st += 2) {
      const __m512i i0 = _mm512_loadu_si512(w.idx + st * 64), i1 = _mm512_loadu_si512(w.idx + st * 64 + 64);
      const __m512i v0 = _mm512_loadu_si512(val + st * 64), v1 = _mm512_loadu_si512(val + st * 64 + 64);
      const uint8_t* x0 = x + int64_t(w.step_win[st]);
      const uint8_t* x1 = x + int64_t(w.step_win[st + 1]);
      for (int r = 0; r < MR; ++r) {
        a0[r] = _mm512_dpbusd_epi32(a0[r], _mm512_permutexvar_epi8(i0, _mm512_loadu_si512(x0 + r * ldx)), v0);
        a1[r] = _mm512_dpbusd_epi32(a1[r], _mm512_permutexvar_epi8(i1, _mm512_loadu_si512(x1 + r * ldx)), v1);
      }
    }
    if (st < end) {
      const __m512i i0 = _mm512_loadu_si512(w.idx + st * 64);
      const __m512i v0 = _mm512_loadu_si512(val + st * 64);
      const uint8_t* xw = x + int64_t(w.step_win[st]);
      for (int r = 0; r < MR; ++r)
        a0[r] = _mm512_dpbusd_epi32(a0[r], _mm512_permutexvar_epi8(i0, _mm512_loadu_si512(xw + r * ldx)), v0);
    }
    const int64_t row0 = sl * 16;
    const __m512i corr = _mm512_slli_epi32(_mm512_loadu_si512(w.wsum + row0), 7);
    const __mmask16 k = n - row0 >= 16 ? __mmask16(0xFFFF) : tail_mask(n - row0);
    for (int r = 0; r < MR; ++r)
      _mm512_mask_storeu_epi32(y + r * ldy + row0, k, _mm512_sub_epi32(_mm512_add_epi32(a0[r], a1[r]), corr));
  }
}

EP_VBMI void sell_quad_s8(const SpmmSell& w, int64_t s0, int64_t s1, int64_t n, const uint8_t* x, int64_t ldx,
                          int mr, int32_t* y, int64_t ldy) {
  switch (mr) {
    case 1: sell_quad_s8_t<1>(w, s0, s1, n, x, ldx, y, ldy); break;
    case 2: sell_quad_s8_t<2>(w, s0, s1, n, x, ldx, y, ldy); break;
    case 3: sell_quad_s8_t<3>(w, s0, s1, n, x, ldx, y, ldy); break;
    case 4: sell_quad_s8_t<4>(w, s0, s1, n, x, ldx, y, ldy); break;
    case 5: sell_quad_s8_t<5>(w, s0, s1, n, x, ldx, y, ldy); break;
    case 6: sell_quad_s8_t<6>(w, s0, s1, n, x, ldx, y, ldy); break;
    case 7: sell_quad_s8_t<7>(w, s0, s1, n, x, ldx, y, ldy); break;
    default: sell_quad_s8_t<8>(w, s0, s1, n, x, ldx, y, ldy); break;
  }
}

}  // namespace

void register_spmm(KernelTable& t) {
  t.spmm.sell_vec_s8 = sell_vec_s8;
  if (cpu_features().avx512_vbmi) t.spmm.sell_quad_s8 = sell_quad_s8;
}

}  // namespace edgepack::avx512_vnni
