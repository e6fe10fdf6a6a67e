// Conv, AVX2: the implicit GEMM on gemm_s8's AVX2 tile (ymm_tile.inc: the exact sign trick,
// 4 rows x 16 columns; uint8 activations XOR 0x80 in the kernel), depthwise with 8 channels per
// ymm (vpmovzx/sxbd then vpmulld: exact, |x * w| <= 255 * 127), and the epilogue of conv_s8.h
// 8 channels at a time. AVX2 has no byte-masked loads: channel tails go through small copies.
#include <immintrin.h>

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "core/dispatch.h"
#include "kernels/conv_s8/conv_s8.h"

namespace edgepack::avx2 {
namespace {

#define EP_INLINE inline __attribute__((always_inline))

#include "kernels/common/vexp_ymm.inc"
#include "kernels/gemm_s8/ymm_tile.inc"

// ---- epilogue (8 channels) -------------------------------------------------------------------

// _mm256_max_ps(a, b) / _mm256_min_ps(a, b) are a > b ? a : b and a < b ? a : b (the reference).
EP_INLINE __m256 v_act(__m256 y, const ConvEpi& e) {
  const __m256 zero = _mm256_setzero_ps(), one = _mm256_set1_ps(1.0f);
  switch (e.act) {
    case conv::Act::none: return y;
    case conv::Act::relu: return _mm256_max_ps(y, zero);
    case conv::Act::clip: return _mm256_min_ps(_mm256_max_ps(y, _mm256_set1_ps(e.p0)), _mm256_set1_ps(e.p1));
    case conv::Act::hardsigmoid: {
      const __m256 t = _mm256_add_ps(_mm256_mul_ps(y, _mm256_set1_ps(e.p0)), _mm256_set1_ps(e.p1));
      return _mm256_min_ps(_mm256_max_ps(t, zero), one);
    }
    case conv::Act::hardswish: {
      const __m256 t = _mm256_add_ps(_mm256_mul_ps(y, _mm256_set1_ps(1.0f / 6.0f)), _mm256_set1_ps(0.5f));
      return _mm256_mul_ps(y, _mm256_min_ps(_mm256_max_ps(t, zero), one));
    }
    case conv::Act::leakyrelu:
      return _mm256_blendv_ps(y, _mm256_mul_ps(y, _mm256_set1_ps(e.p0)), _mm256_cmp_ps(y, zero, _CMP_LT_OQ));
    case conv::Act::sigmoid: return _mm256_div_ps(one, _mm256_add_ps(one, v_exp(_mm256_sub_ps(zero, y))));
    case conv::Act::silu: return _mm256_div_ps(y, _mm256_add_ps(one, v_exp(_mm256_sub_ps(zero, y))));
  }
  return y;
}

// Channels [n, n + min(left, 8)) of output row m.
EP_INLINE void store8(const ConvEpi& e, int64_t m, int64_t n, __m256i acc, int64_t left) {
  const int64_t i = m * e.ldy + n;
  const bool full = left >= 8;
  const __m256i mask = lane_mask(left);
  if (e.out == conv::Out::i32) {
    int32_t* c = static_cast<int32_t*>(e.y) + i;
    if (full) _mm256_storeu_si256(reinterpret_cast<__m256i*>(c), acc);
    else _mm256_maskstore_epi32(c, mask, acc);
    return;
  }
  auto load = [&](const float* p) { return full ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, mask); };
  __m256 y = _mm256_mul_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(acc), _mm256_set1_ps(e.x_scale)), load(e.w_scale + n));
  if (e.bias) y = _mm256_add_ps(y, load(e.bias + n));
  if (e.residual) y = _mm256_add_ps(y, load(e.residual + i));
  y = v_act(y, e);
  if (e.out == conv::Out::f32) {
    float* c = static_cast<float*>(e.y) + i;
    if (full) _mm256_storeu_ps(c, y);
    else _mm256_maskstore_ps(c, mask, y);
    return;
  }
  __m256 v = _mm256_mul_ps(y, _mm256_set1_ps(e.inv_out_scale));
  v = _mm256_min_ps(_mm256_max_ps(v, _mm256_set1_ps(e.qlo)), _mm256_set1_ps(e.qhi));
  const __m256i q = _mm256_add_epi32(_mm256_cvtps_epi32(v), _mm256_set1_epi32(e.out_zp));  // in [-128, 255]
  const __m128i w16 = _mm_packs_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1));
  const __m128i b8 = e.out == conv::Out::u8 ? _mm_packus_epi16(w16, w16) : _mm_packs_epi16(w16, w16);
  uint8_t* c = static_cast<uint8_t*>(e.y) + i;
  if (full) {
    _mm_storel_epi64(reinterpret_cast<__m128i*>(c), b8);
  } else {
    alignas(16) uint8_t tmp[16];
    _mm_store_si128(reinterpret_cast<__m128i*>(tmp), b8);
    std::memcpy(c, tmp, static_cast<size_t>(left));
  }
}

// ---- implicit GEMM: 4 rows x 1 panel (8 accumulators; AVX2 has 16 registers) ------------------

constexpr int kMR = 4, kNP = 1;

template <int MR>
__attribute__((noinline)) void conv_epilogue(const IgemmArgs& a, int64_t m0, int64_t p0, const int32_t* res) {
  for (int r = 0; r < MR; ++r)
    for (int h = 0; h < 2; ++h) {
      const int64_t c = p0 * gemm::kNR + h * 8;
      const int64_t left = a.b.n - c;
      if (left > 0)
        store8(*a.epi, a.out_row0 + m0 + r, a.n_off + c,
               _mm256_load_si256(reinterpret_cast<const __m256i*>(res + (r * 2 + h) * 8)), left);
    }
}

template <int MR, bool kXor>
void conv_tile(const IgemmArgs& a, int64_t m0, int64_t p0) {
  const int64_t groups = a.b.kp / gemm::kKU, pstride = groups * (gemm::kNR * gemm::kKU);
  __m256i acc[MR][2];
  {
    const __m256i c = _mm256_set1_epi32(a.corr);
    const int32_t* cs = a.b.colsum + p0 * gemm::kNR;
    const __m256i s0 = _mm256_mullo_epi32(c, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(cs)));
    const __m256i s1 = _mm256_mullo_epi32(c, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(cs + 8)));
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      acc[r][0] = s0;
      acc[r][1] = s1;
    }
  }
  const int8_t* bp = a.b.data + p0 * pstride;
  const int64_t g = a.cp / gemm::kKU;
  if (!a.ind) {
    const uint8_t* base = a.x + m0 * a.pix_stride + a.goff;
    const int64_t ld = a.pix_stride;
    mac_tile<MR, 1, kXor>(acc, bp, pstride, 1, g, [&](int64_t, const uint8_t* (&rows)[MR]) {
#pragma GCC unroll 8
      for (int r = 0; r < MR; ++r) rows[r] = base + r * ld;
    });
  } else {
    const uint8_t* base[MR];
    const int32_t* ind[MR];
    for (int r = 0; r < MR; ++r) {
      const int64_t m = m0 + r, img = m / a.rows_per_img, pix = m - img * a.rows_per_img;
      base[r] = a.x + img * a.img_stride + a.goff;
      ind[r] = a.ind + pix * a.taps;
    }
    const uint8_t* zb = a.zbuf;
    mac_tile<MR, 1, kXor>(acc, bp, pstride, a.taps, g, [&](int64_t t, const uint8_t* (&rows)[MR]) {
#pragma GCC unroll 8
      for (int r = 0; r < MR; ++r) {
        const int32_t off = ind[r][t];
        rows[r] = off >= 0 ? base[r] + off : zb;
      }
    });
  }
  alignas(32) int32_t res[MR][2][8];
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r)
    for (int h = 0; h < 2; ++h) _mm256_store_si256(reinterpret_cast<__m256i*>(res[r][h]), acc[r][h]);
  conv_epilogue<MR>(a, m0, p0, &res[0][0][0]);
}

template <bool kXor>
void igemm_t(const IgemmArgs& a, int64_t m0, int64_t m1, int64_t p0, int64_t p1) {
  for (int64_t p = p0; p < p1; ++p)
    for (int64_t m = m0; m < m1; m += kMR) {
      switch (m1 - m < kMR ? m1 - m : kMR) {
        case 1: conv_tile<1, kXor>(a, m, p); break;
        case 2: conv_tile<2, kXor>(a, m, p); break;
        case 3: conv_tile<3, kXor>(a, m, p); break;
        default: conv_tile<4, kXor>(a, m, p); break;
      }
    }
}

void igemm(const IgemmArgs& a, int64_t m0, int64_t m1, int64_t p0, int64_t p1) {
  if (a.xor80) igemm_t<true>(a, m0, m1, p0, p1);
  else igemm_t<false>(a, m0, m1, p0, p1);
}

// ---- depthwise (8 channels per ymm) ------------------------------------------------------------

// 8 channels of a pixel as int32 lanes; a tail of `left` < 8 channels goes through a copy.
template <bool kU8>
EP_INLINE __m256i widen8(const uint8_t* p, int64_t left) {
  __m128i b;
  if (left >= 8) {
    b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
  } else {
    alignas(16) uint8_t tmp[16] = {};
    std::memcpy(tmp, p, static_cast<size_t>(left));
    b = _mm_load_si128(reinterpret_cast<const __m128i*>(tmp));
  }
  return kU8 ? _mm256_cvtepu8_epi32(b) : _mm256_cvtepi8_epi32(b);
}

template <int KH, int KW, bool kU8>
void dw_tile(const DwArgs& a, int64_t oh0, int64_t oh1, int64_t c, int64_t left) {
  constexpr bool kFixed = KH > 0;
  const int kh = kFixed ? KH : a.kh, kw = kFixed ? KW : a.kw;
  const int64_t C = a.c;
  // Weights: the 9 of a 3x3 stay in registers; larger kernels are re-read (L1) per tap.
  auto wtap = [&](int t) {
    return _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(a.wt + t * a.cpad + c)));
  };
  __m256i wv[kFixed ? KH * KW : 1];
  if (kFixed)
#pragma GCC unroll 32
    for (int t = 0; t < (kFixed ? KH * KW : 1); ++t) wv[t] = wtap(t);
  const __m256i init = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.init + c));
  const int64_t rstep = a.dh * a.w * C, cstep = a.dw * C;
  const uint8_t* zb = a.zbuf + c;
  for (int64_t oy = oh0; oy < oh1; ++oy) {
    const int64_t iy0 = oy * a.sh - a.pt;
    const bool row_in = iy0 >= 0 && iy0 + (kh - 1) * a.dh < a.h;
    const int64_t orow = a.row0 + oy * a.ow;
    for (int64_t ox = 0; ox < a.ow; ++ox) {
      const int64_t ix0 = ox * a.sw - a.pl;
      const uint8_t* p = a.x + (iy0 * a.w + ix0) * C + c;
      __m256i acc = init;
      if (row_in && ix0 >= 0 && ix0 + (kw - 1) * a.dw < a.w) {
#pragma GCC unroll 8
        for (int ky = 0; ky < kh; ++ky)
#pragma GCC unroll 8
          for (int kx = 0; kx < kw; ++kx)
            acc = _mm256_add_epi32(acc, _mm256_mullo_epi32(widen8<kU8>(p + ky * rstep + kx * cstep, left),
                                                           kFixed ? wv[ky * kw + kx] : wtap(ky * kw + kx)));
      } else {
        for (int ky = 0; ky < kh; ++ky) {
          const int64_t iy = iy0 + ky * a.dh;
          for (int kx = 0; kx < kw; ++kx) {
            const int64_t ix = ix0 + kx * a.dw;
            const bool in = iy >= 0 && iy < a.h && ix >= 0 && ix < a.w;
            const uint8_t* q = in ? a.x + (iy * a.w + ix) * C + c : zb;
            acc = _mm256_add_epi32(acc, _mm256_mullo_epi32(widen8<kU8>(q, left), kFixed ? wv[ky * kw + kx] : wtap(ky * kw + kx)));
          }
        }
      }
      store8(*a.epi, orow + ox, c, acc, left);
    }
  }
}

template <bool kU8>
void dw_t(const DwArgs& a, int64_t oh0, int64_t oh1, int64_t c0, int64_t c1) {
  for (int64_t c = c0; c < c1; c += 8) {
    const int64_t left = c1 - c;
    if (a.kh == 3 && a.kw == 3) dw_tile<3, 3, kU8>(a, oh0, oh1, c, left);
    else dw_tile<0, 0, kU8>(a, oh0, oh1, c, left);
  }
}

void dw(const DwArgs& a, int64_t oh0, int64_t oh1, int64_t c0, int64_t c1) {
  if (a.x_unsigned) dw_t<true>(a, oh0, oh1, c0, c1);
  else dw_t<false>(a, oh0, oh1, c0, c1);
}

#undef EP_INLINE

}  // namespace

void register_conv_s8(KernelTable& t) {
  t.conv_s8.igemm = igemm;
  t.conv_s8.dw = dw;
  t.conv_s8.a_unsigned = false;
  t.conv_s8.mr = kMR;
  t.conv_s8.np = kNP;
  t.conv_s8.dw_ct = 8;
}

}  // namespace edgepack::avx2
