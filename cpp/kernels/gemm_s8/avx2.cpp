// AVX2 path, exact: vpmaddubsw (u8 x s8 pairs into saturating int16) on |a| and sign(a) * w.
// |a| <= 128 as an unsigned byte (vpabsb(-128) = 0x80 = 128) and sign(a) * w is in [-127, 127]
// since packed weights never hold -128 (vpsignb also zeroes w where a = 0, harmless), so a pair
// is at most 2 * 128 * 127 = 32512 < 32767: no saturation, ever. vpmaddwd by ones widens the
// pairs to int32. One packed 64-byte row [16][4] is two ymm: columns 0-7 and 8-15.
#include <immintrin.h>

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "core/dispatch.h"
#include "kernels/gemm_s8/gemm_s8.h"

namespace edgepack::avx2 {
namespace {

#define EP_INLINE inline __attribute__((always_inline))

// ---- vector math (8 lanes), same formulas as the 512-bit paths -----------------------------

#include "kernels/common/vexp_ymm.inc"

// gelu via erfc(z) ~ poly(t) e^{-z^2} (Abramowitz-Stegun 7.1.26), see zmm_kernel.inc.
EP_INLINE __m256 v_gelu(__m256 y) {
  const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  const __m256 z = _mm256_mul_ps(_mm256_and_ps(y, absmask), _mm256_set1_ps(0.70710678118654752f));
  const __m256 t = _mm256_div_ps(_mm256_set1_ps(1.0f),
                                 _mm256_fmadd_ps(z, _mm256_set1_ps(0.3275911f), _mm256_set1_ps(1.0f)));
  __m256 p = _mm256_set1_ps(1.061405429f);
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(-1.453152027f));
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(1.421413741f));
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(-0.284496736f));
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(0.254829592f));
  p = _mm256_mul_ps(p, t);
  const __m256 erfc = _mm256_mul_ps(p, v_exp(_mm256_mul_ps(_mm256_sub_ps(_mm256_setzero_ps(), z), z)));
  const __m256 pos = _mm256_cmp_ps(y, _mm256_setzero_ps(), _CMP_GE_OQ);
  const __m256 one_plus = _mm256_blendv_ps(erfc, _mm256_sub_ps(_mm256_set1_ps(2.0f), erfc), pos);
  return _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.5f), y), one_plus);
}

EP_INLINE __m256 v_act(__m256 y, gemm::Act act) {
  switch (act) {
    case gemm::Act::none: return y;
    case gemm::Act::relu: return _mm256_max_ps(y, _mm256_setzero_ps());
    case gemm::Act::gelu: return v_gelu(y);
    case gemm::Act::gelu_tanh: {
      const __m256 y3 = _mm256_mul_ps(_mm256_mul_ps(y, y), y);
      const __m256 u = _mm256_mul_ps(_mm256_set1_ps(-2.0f * 0.7978845608028654f),
                                     _mm256_fmadd_ps(y3, _mm256_set1_ps(0.044715f), y));
      return _mm256_div_ps(y, _mm256_add_ps(_mm256_set1_ps(1.0f), v_exp(u)));
    }
    case gemm::Act::silu:
      return _mm256_div_ps(y, _mm256_add_ps(_mm256_set1_ps(1.0f), v_exp(_mm256_sub_ps(_mm256_setzero_ps(), y))));
  }
  return y;
}

// ---- register tile: MR rows x NP panels (2 ymm per panel) ----------------------------------

#include "kernels/gemm_s8/ymm_tile.inc"

template <int MR, int NP>
void epilogue(const GemmArgs& g, int64_t m0, int64_t p0, const int32_t* res);

template <int MR, int NP>
void tile(const GemmArgs& g, int64_t m0, int64_t p0) {
  constexpr int NH = 2 * NP;
  const int64_t groups = g.b.kp / gemm::kKU;
  const int64_t pstride = groups * (gemm::kNR * gemm::kKU);
  const int8_t* bp = g.b.data + p0 * pstride;
  const uint8_t* ap[MR];
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r) ap[r] = g.a + (m0 + r) * g.lda;
  __m256i acc[MR][NH];
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 16
    for (int h = 0; h < NH; ++h) acc[r][h] = _mm256_setzero_si256();
  mac_tile<MR, NP, false>(acc, bp, pstride, 1, groups, [&](int64_t, const uint8_t* (&rows)[MR]) {
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) rows[r] = ap[r];
  });
  // row_corr * colsum is added in the epilogue (same value mod 2^32 as folding it into the init).
  alignas(32) int32_t res[MR][NH][8];
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 16
    for (int h = 0; h < NH; ++h) _mm256_store_si256(reinterpret_cast<__m256i*>(res[r][h]), acc[r][h]);
  epilogue<MR, NP>(g, m0, p0, &res[0][0][0]);
}

template <int MR, int NP>
__attribute__((noinline)) void epilogue(const GemmArgs& g, int64_t m0, int64_t p0, const int32_t* res) {
  constexpr int NH = 2 * NP;
  for (int h = 0; h < NH; ++h) {
    const int64_t n0 = p0 * gemm::kNR + h * 8;
    const int64_t left = g.b.n - n0;
    const bool full = left >= 8;
    const __m256i mask = lane_mask(left);
    __m256 cs = _mm256_setzero_ps(), bs = _mm256_setzero_ps();
    if (!g.c_i32) {
      cs = full ? _mm256_loadu_ps(g.col_scale + n0) : _mm256_maskload_ps(g.col_scale + n0, mask);
      if (g.bias) bs = full ? _mm256_loadu_ps(g.bias + n0) : _mm256_maskload_ps(g.bias + n0, mask);
    }
    for (int r = 0; r < MR; ++r) {
      __m256i acc = _mm256_load_si256(reinterpret_cast<const __m256i*>(res + (r * NH + h) * 8));
      if (g.row_corr) {
        const __m256i cols = full ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(g.b.colsum + n0))
                                  : _mm256_maskload_epi32(g.b.colsum + n0, mask);
        acc = _mm256_add_epi32(acc, _mm256_mullo_epi32(_mm256_set1_epi32(g.row_corr[m0 + r]), cols));
      }
      if (g.c_i32) {
        int32_t* c = g.c_i32 + (m0 + r) * g.ldc + n0;
        if (full) _mm256_storeu_si256(reinterpret_cast<__m256i*>(c), acc);
        else _mm256_maskstore_epi32(c, mask, acc);
        continue;
      }
      __m256 y = _mm256_mul_ps(_mm256_cvtepi32_ps(acc), _mm256_set1_ps(g.row_scale[m0 + r]));
      y = _mm256_mul_ps(y, cs);
      if (g.bias) y = _mm256_add_ps(y, bs);
      y = v_act(y, g.act);
      float* c = g.c_f32 + (m0 + r) * g.ldc + n0;
      if (full) _mm256_storeu_ps(c, y);
      else _mm256_maskstore_ps(c, mask, y);
    }
  }
}

using TileFn = void (*)(const GemmArgs&, int64_t, int64_t);

// Rows x panels a block can ask for: 4 x 1 main tile (8 accumulators: AVX2 has 16 registers),
// wider for 1-2 rows so batch-1 keeps 8 independent chains while streaming B once.
constexpr int kMR = 4, kNP = 1;
constexpr int kSmallNP[5] = {0, 4, 2, 1, 1};

TileFn tile_for(int mr, int np) {
  switch (mr) {
    case 1: return np >= 4 ? &tile<1, 4> : np == 3 ? &tile<1, 3> : np == 2 ? &tile<1, 2> : &tile<1, 1>;
    case 2: return np >= 2 ? &tile<2, 2> : &tile<2, 1>;
    case 3: return &tile<3, 1>;
    default: return &tile<4, 1>;
  }
}

void block(const GemmArgs& g, int64_t m0, int64_t m1, int64_t p0, int64_t p1) {
  const int64_t rows = m1 - m0;
  if (rows <= 0) return;
  if (rows <= 2) {
    const int np = kSmallNP[rows];
    for (int64_t p = p0; p < p1; p += np) {
      const int n = static_cast<int>(p1 - p < np ? p1 - p : np);
      tile_for(static_cast<int>(rows), n)(g, m0, p);
    }
    return;
  }
  for (int64_t p = p0; p < p1; p += kNP)
    for (int64_t m = m0; m < m1; m += kMR) {
      const int r = static_cast<int>(m1 - m < kMR ? m1 - m : kMR);
      tile_for(r, 1)(g, m, p);
    }
}

// Per-row symmetric quantization (see QuantRowsFn), two passes over each row (the second from L1):
//  1. absmax as an unsigned integer max over the bit patterns of |x| (integer order = float order
//     for non-negative floats; NaN/Inf patterns >= 0x7f800000 exceed every finite one, so the same
//     instruction detects them);
//  2. q = vcvtps2dq(x / scale) (a true division: ONNX semantics; round half to even), saturating
//     packs to bytes with a -127 floor (a denormal scale is coarse, so |x| / scale can exceed 127).
// Four independent vectors per step; the next row is prefetched during pass 2.
template <bool kXor>
Status quant_rows_t(const float* x, int64_t m, int64_t k, int64_t ldx, uint8_t* out, int64_t ldo,
                    int64_t kp, float* scale, uint8_t xor_mask) {
  const __m256i absmask = _mm256_set1_epi32(0x7fffffff);
  const __m256i xm = _mm256_set1_epi8(static_cast<char>(xor_mask)), floor = _mm256_set1_epi8(-127);
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  for (int64_t r = 0; r < m; ++r) {
    const float* xr = x + r * ldx;
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
    int64_t c = 0;
    for (; c + 32 <= k; c += 32) {
      a0 = _mm256_max_epu32(a0, _mm256_and_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(xr + c)), absmask));
      a1 = _mm256_max_epu32(a1, _mm256_and_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(xr + c + 8)), absmask));
      a2 = _mm256_max_epu32(a2, _mm256_and_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(xr + c + 16)), absmask));
      a3 = _mm256_max_epu32(a3, _mm256_and_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(xr + c + 24)), absmask));
    }
    alignas(32) uint32_t lanes[8];
    _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), _mm256_max_epu32(_mm256_max_epu32(a0, a1), _mm256_max_epu32(a2, a3)));
    uint32_t bits = 0;
    for (int i = 0; i < 8; ++i) bits = lanes[i] > bits ? lanes[i] : bits;
    for (; c < k; ++c) {
      uint32_t b;
      std::memcpy(&b, xr + c, 4);
      b &= 0x7fffffffu;
      bits = b > bits ? b : bits;
    }
    if (bits >= 0x7f800000u) {
      for (int64_t i = 0; i < k; ++i) {
        const float v = xr[i];
        if (!(v - v == 0.0f)) return Status::at(StatusCode::non_finite, r * k + i);
      }
    }
    float am;
    std::memcpy(&am, &bits, 4);
    const float s0 = am / 127.0f, s = s0 > 0.0f ? s0 : 1.0f;  // 1 for a zero row, also when absmax / 127 underflows
    scale[r] = s;
    const __m256 vs = _mm256_set1_ps(s);
    uint8_t* o = out + r * ldo;
    const char* next = r + 1 < m ? reinterpret_cast<const char*>(xr + ldx) : reinterpret_cast<const char*>(xr);
    for (c = 0; c + 32 <= k; c += 32) {
      _mm_prefetch(next + 4 * c, _MM_HINT_T0);
      _mm_prefetch(next + 4 * c + 64, _MM_HINT_T0);
      const __m256i q0 = _mm256_cvtps_epi32(_mm256_div_ps(_mm256_loadu_ps(xr + c), vs));
      const __m256i q1 = _mm256_cvtps_epi32(_mm256_div_ps(_mm256_loadu_ps(xr + c + 8), vs));
      const __m256i q2 = _mm256_cvtps_epi32(_mm256_div_ps(_mm256_loadu_ps(xr + c + 16), vs));
      const __m256i q3 = _mm256_cvtps_epi32(_mm256_div_ps(_mm256_loadu_ps(xr + c + 24), vs));
      __m256i b = _mm256_packs_epi16(_mm256_packs_epi32(q0, q1), _mm256_packs_epi32(q2, q3));
      b = _mm256_max_epi8(_mm256_permutevar8x32_epi32(b, order), floor);
      if (kXor) b = _mm256_xor_si256(b, xm);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(o + c), b);
    }
    const __m128 s1 = _mm_set_ss(s);
    for (; c < k; ++c) {
      int32_t q = _mm_cvtss_si32(_mm_div_ss(_mm_set_ss(xr[c]), s1));
      q = q > 127 ? 127 : (q < -127 ? -127 : q);
      o[c] = static_cast<uint8_t>(static_cast<int8_t>(q)) ^ xor_mask;
    }
    for (c = k; c < kp; ++c) o[c] = xor_mask;
  }
  return Status::good();
}

Status quant_rows(const float* x, int64_t m, int64_t k, int64_t ldx, uint8_t* out, int64_t ldo,
                  int64_t kp, float* scale, uint8_t xor_mask) {
  return xor_mask ? quant_rows_t<true>(x, m, k, ldx, out, ldo, kp, scale, xor_mask)
                  : quant_rows_t<false>(x, m, k, ldx, out, ldo, kp, scale, xor_mask);
}

// The sign-trick sequence on 6 chains with fixed registers (asm: nothing hoisted or spilled).
__attribute__((noinline)) void peak_chunk(int64_t iters) {
  __asm__ __volatile__(
      "vpcmpeqd %%ymm15, %%ymm15, %%ymm15\n\t"
      "vpabsw %%ymm15, %%ymm15\n\t"
      "vpxor %%ymm14, %%ymm14, %%ymm14\n\t"
      "vpsubb %%ymm15, %%ymm14, %%ymm6\n\t"
      "vpaddb %%ymm15, %%ymm15, %%ymm7\n\t"
      "vpaddb %%ymm7, %%ymm15, %%ymm8\n\t"
      "1:\n\t"
      "vpaddb %%ymm15, %%ymm14, %%ymm14\n\t"
      "vpabsb %%ymm14, %%ymm13\n\t"
      "vpsignb %%ymm14, %%ymm6, %%ymm9\n\t"
      "vpsignb %%ymm14, %%ymm7, %%ymm10\n\t"
      "vpsignb %%ymm14, %%ymm8, %%ymm11\n\t"
      "vpmaddubsw %%ymm9, %%ymm13, %%ymm9\n\t"
      "vpmaddubsw %%ymm10, %%ymm13, %%ymm10\n\t"
      "vpmaddubsw %%ymm11, %%ymm13, %%ymm11\n\t"
      "vpmaddwd %%ymm15, %%ymm9, %%ymm9\n\t"
      "vpmaddwd %%ymm15, %%ymm10, %%ymm10\n\t"
      "vpmaddwd %%ymm15, %%ymm11, %%ymm11\n\t"
      "vpaddd %%ymm9, %%ymm0, %%ymm0\n\t"
      "vpaddd %%ymm10, %%ymm1, %%ymm1\n\t"
      "vpaddd %%ymm11, %%ymm2, %%ymm2\n\t"
      "vpsignb %%ymm13, %%ymm6, %%ymm9\n\t"
      "vpsignb %%ymm13, %%ymm7, %%ymm10\n\t"
      "vpsignb %%ymm13, %%ymm8, %%ymm11\n\t"
      "vpmaddubsw %%ymm9, %%ymm13, %%ymm9\n\t"
      "vpmaddubsw %%ymm10, %%ymm13, %%ymm10\n\t"
      "vpmaddubsw %%ymm11, %%ymm13, %%ymm11\n\t"
      "vpmaddwd %%ymm15, %%ymm9, %%ymm9\n\t"
      "vpmaddwd %%ymm15, %%ymm10, %%ymm10\n\t"
      "vpmaddwd %%ymm15, %%ymm11, %%ymm11\n\t"
      "vpaddd %%ymm9, %%ymm3, %%ymm3\n\t"
      "vpaddd %%ymm10, %%ymm4, %%ymm4\n\t"
      "vpaddd %%ymm11, %%ymm5, %%ymm5\n\t"
      "dec %0\n\t"
      "jnz 1b\n\t"
      "vzeroupper\n\t"
      : "+r"(iters)
      :
      : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10",
        "xmm11", "xmm12", "xmm13", "xmm14", "xmm15", "cc");
}

double peak(double seconds) {
  int64_t n = 0;
  const double start = gemm::now_seconds();
  double el = 0;
  do {
    peak_chunk(20000);
    n += 20000LL * 6 * 32;
    el = gemm::now_seconds() - start;
  } while (el < seconds);
  return 2.0 * static_cast<double>(n) / el * 1e-9;
}

#undef EP_INLINE

}  // namespace

void register_gemm_s8(KernelTable& t) {
  t.gemm.block = block;
  t.gemm.quant_rows = quant_rows;
  t.gemm.peak = peak;
  t.gemm.a_unsigned = false;
  t.gemm.mr = kMR;
  t.gemm.np = kNP;
}

}  // namespace edgepack::avx2
