// Sparse kernels for ARM64 NEON (every aarch64 core; the dotprod path inherits them).
//
// Tile kernels (large M): each nonzero is broadcast against 16 consecutive activation columns of
// the transposed tile, multiply then add (no fused multiply-add), nonzeros in storage order: the
// same operations in the same order as the scalar reference, so the float results are identical
// to it, and the int8 ones exact.
// Vec kernels (small M): 4 nonzeros per step with their activations gathered lane by lane (NEON
// has no gather), the index and value loads shared by up to 4 activation rows; float sums are
// reassociated (4 partial sums), within the documented 1e-5 * sum|x w| bound.
#include <arm_neon.h>

#include <cstdint>

#include "core/dispatch.h"
#include "kernels/spmm/spmm.h"

namespace edgepack::neon {
namespace {

// ---- CSR, small M -------------------------------------------------------------------------------

void csr_vec_f32(const int64_t* rp, const uint16_t* col, const float* val, int64_t n, const float* x,
                 int64_t ldx, int mr, float* y, int64_t ldy) {
  for (int64_t i = 0; i < n; ++i) {
    const int64_t p0 = rp[i], p1 = rp[i + 1];
    float32x4_t acc[kSpmmVecRows];
    for (int r = 0; r < kSpmmVecRows; ++r) acc[r] = vdupq_n_f32(0.0f);
    int64_t p = p0;
    for (; p + 4 <= p1; p += 4) {
      const float32x4_t w = vld1q_f32(val + p);
      const int64_t c0 = col[p], c1 = col[p + 1], c2 = col[p + 2], c3 = col[p + 3];
      for (int r = 0; r < mr; ++r) {
        const float* xr = x + r * ldx;
        float32x4_t xv = vdupq_n_f32(xr[c0]);
        xv = vsetq_lane_f32(xr[c1], xv, 1);
        xv = vsetq_lane_f32(xr[c2], xv, 2);
        xv = vsetq_lane_f32(xr[c3], xv, 3);
        acc[r] = vaddq_f32(acc[r], vmulq_f32(w, xv));
      }
    }
    for (int r = 0; r < mr; ++r) {
      const float* xr = x + r * ldx;
      float s = vaddvq_f32(acc[r]);
      for (int64_t q = p; q < p1; ++q) s += val[q] * xr[col[q]];
      y[r * ldy + i] = s;
    }
  }
}

void csr_vec_s8(const int64_t* rp, const uint16_t* col, const int8_t* val, int64_t n, const int32_t* x,
                int64_t ldx, int mr, int32_t* y, int64_t ldy) {
  for (int64_t i = 0; i < n; ++i) {
    const int64_t p0 = rp[i], p1 = rp[i + 1];
    int32x4_t acc[kSpmmVecRows];
    for (int r = 0; r < kSpmmVecRows; ++r) acc[r] = vdupq_n_s32(0);
    int64_t p = p0;
    for (; p + 4 <= p1; p += 4) {
      int32x4_t w = vdupq_n_s32(val[p]);
      w = vsetq_lane_s32(val[p + 1], w, 1);
      w = vsetq_lane_s32(val[p + 2], w, 2);
      w = vsetq_lane_s32(val[p + 3], w, 3);
      const int64_t c0 = col[p], c1 = col[p + 1], c2 = col[p + 2], c3 = col[p + 3];
      for (int r = 0; r < mr; ++r) {
        const int32_t* xr = x + r * ldx;
        int32x4_t xv = vdupq_n_s32(xr[c0]);
        xv = vsetq_lane_s32(xr[c1], xv, 1);
        xv = vsetq_lane_s32(xr[c2], xv, 2);
        xv = vsetq_lane_s32(xr[c3], xv, 3);
        acc[r] = vmlaq_s32(acc[r], w, xv);
      }
    }
    for (int r = 0; r < mr; ++r) {
      const int32_t* xr = x + r * ldx;
      int32_t s = vaddvq_s32(acc[r]);
      for (int64_t q = p; q < p1; ++q) s += int32_t(val[q]) * xr[col[q]];
      y[r * ldy + i] = s;
    }
  }
}

// ---- CSR, tiles -----------------------------------------------------------------------------------

void csr_tile_f32(const int64_t* seg, int64_t ss, const uint16_t* col, const float* val, int64_t n,
                  const float* xt, int mt, float* yt, bool accumulate) {
  for (int64_t i = 0; i < n; ++i) {
    float* o = yt + i * mt;
    const int64_t p0 = seg[i * ss], p1 = seg[i * ss + 1];
    for (int jb = 0; jb < mt; jb += 16) {
      float32x4_t a0, a1, a2, a3;
      if (accumulate) {
        a0 = vld1q_f32(o + jb), a1 = vld1q_f32(o + jb + 4), a2 = vld1q_f32(o + jb + 8), a3 = vld1q_f32(o + jb + 12);
      } else {
        a0 = a1 = a2 = a3 = vdupq_n_f32(0.0f);
      }
      for (int64_t p = p0; p < p1; ++p) {
        const float w = val[p];
        const float* xr = xt + int64_t(col[p]) * mt + jb;
        a0 = vaddq_f32(a0, vmulq_n_f32(vld1q_f32(xr), w));
        a1 = vaddq_f32(a1, vmulq_n_f32(vld1q_f32(xr + 4), w));
        a2 = vaddq_f32(a2, vmulq_n_f32(vld1q_f32(xr + 8), w));
        a3 = vaddq_f32(a3, vmulq_n_f32(vld1q_f32(xr + 12), w));
      }
      vst1q_f32(o + jb, a0), vst1q_f32(o + jb + 4, a1), vst1q_f32(o + jb + 8, a2), vst1q_f32(o + jb + 12, a3);
    }
  }
}

void csr_tile_s8(const int64_t* seg, int64_t ss, const uint16_t* col, const int8_t* val, int64_t n,
                 const int32_t* xt, int mt, int32_t* yt, bool accumulate) {
  for (int64_t i = 0; i < n; ++i) {
    int32_t* o = yt + i * mt;
    const int64_t p0 = seg[i * ss], p1 = seg[i * ss + 1];
    for (int jb = 0; jb < mt; jb += 16) {
      int32x4_t a0, a1, a2, a3;
      if (accumulate) {
        a0 = vld1q_s32(o + jb), a1 = vld1q_s32(o + jb + 4), a2 = vld1q_s32(o + jb + 8), a3 = vld1q_s32(o + jb + 12);
      } else {
        a0 = a1 = a2 = a3 = vdupq_n_s32(0);
      }
      for (int64_t p = p0; p < p1; ++p) {
        const int32_t w = val[p];
        const int32_t* xr = xt + int64_t(col[p]) * mt + jb;
        a0 = vmlaq_n_s32(a0, vld1q_s32(xr), w);
        a1 = vmlaq_n_s32(a1, vld1q_s32(xr + 4), w);
        a2 = vmlaq_n_s32(a2, vld1q_s32(xr + 8), w);
        a3 = vmlaq_n_s32(a3, vld1q_s32(xr + 12), w);
      }
      vst1q_s32(o + jb, a0), vst1q_s32(o + jb + 4, a1), vst1q_s32(o + jb + 8, a2), vst1q_s32(o + jb + 12, a3);
    }
  }
}

// ---- 2:4 ------------------------------------------------------------------------------------------

inline unsigned nibble(const uint8_t* m, int64_t g) { return (m[g >> 1] >> ((g & 1) * 4)) & 15u; }

void nm24_vec_f32(const float* val, const uint8_t* meta, int64_t k, int64_t n, const float* x, int64_t ldx,
                  int mr, float* y, int64_t ldy) {
  const int64_t groups = k / 4, vs = k / 2, ms = (groups + 1) / 2;
  for (int64_t i = 0; i < n; ++i) {
    const float* v = val + i * vs;
    const uint8_t* m = meta + i * ms;
    float32x4_t acc[kSpmmVecRows];
    for (int r = 0; r < kSpmmVecRows; ++r) acc[r] = vdupq_n_f32(0.0f);
    int64_t g = 0;
    for (; g + 2 <= groups; g += 2) {  // two groups: four values, four gathered activations
      const unsigned b0 = nibble(m, g), b1 = nibble(m, g + 1);
      const int64_t c0 = 4 * g + (b0 & 3u), c1 = 4 * g + (b0 >> 2), c2 = 4 * g + 4 + (b1 & 3u),
                    c3 = 4 * g + 4 + (b1 >> 2);
      const float32x4_t w = vld1q_f32(v + 2 * g);
      for (int r = 0; r < mr; ++r) {
        const float* xr = x + r * ldx;
        float32x4_t xv = vdupq_n_f32(xr[c0]);
        xv = vsetq_lane_f32(xr[c1], xv, 1);
        xv = vsetq_lane_f32(xr[c2], xv, 2);
        xv = vsetq_lane_f32(xr[c3], xv, 3);
        acc[r] = vaddq_f32(acc[r], vmulq_f32(w, xv));
      }
    }
    for (int r = 0; r < mr; ++r) {
      const float* xr = x + r * ldx;
      float s = vaddvq_f32(acc[r]);
      if (g < groups) {
        const unsigned b = nibble(m, g);
        s += v[2 * g] * xr[4 * g + (b & 3u)];
        s += v[2 * g + 1] * xr[4 * g + (b >> 2)];
      }
      y[r * ldy + i] = s;
    }
  }
}

void nm24_vec_s8(const int8_t* val, const uint8_t* meta, int64_t k, int64_t n, const int32_t* x, int64_t ldx,
                 int mr, int32_t* y, int64_t ldy) {
  const int64_t groups = k / 4, vs = k / 2, ms = (groups + 1) / 2;
  for (int64_t i = 0; i < n; ++i) {
    const int8_t* v = val + i * vs;
    const uint8_t* m = meta + i * ms;
    int32x4_t acc[kSpmmVecRows];
    for (int r = 0; r < kSpmmVecRows; ++r) acc[r] = vdupq_n_s32(0);
    int64_t g = 0;
    for (; g + 2 <= groups; g += 2) {
      const unsigned b0 = nibble(m, g), b1 = nibble(m, g + 1);
      const int64_t c0 = 4 * g + (b0 & 3u), c1 = 4 * g + (b0 >> 2), c2 = 4 * g + 4 + (b1 & 3u),
                    c3 = 4 * g + 4 + (b1 >> 2);
      int32x4_t w = vdupq_n_s32(v[2 * g]);
      w = vsetq_lane_s32(v[2 * g + 1], w, 1);
      w = vsetq_lane_s32(v[2 * g + 2], w, 2);
      w = vsetq_lane_s32(v[2 * g + 3], w, 3);
      for (int r = 0; r < mr; ++r) {
        const int32_t* xr = x + r * ldx;
        int32x4_t xv = vdupq_n_s32(xr[c0]);
        xv = vsetq_lane_s32(xr[c1], xv, 1);
        xv = vsetq_lane_s32(xr[c2], xv, 2);
        xv = vsetq_lane_s32(xr[c3], xv, 3);
        acc[r] = vmlaq_s32(acc[r], w, xv);
      }
    }
    for (int r = 0; r < mr; ++r) {
      const int32_t* xr = x + r * ldx;
      int32_t s = vaddvq_s32(acc[r]);
      if (g < groups) {
        const unsigned b = nibble(m, g);
        s += int32_t(v[2 * g]) * xr[4 * g + (b & 3u)];
        s += int32_t(v[2 * g + 1]) * xr[4 * g + (b >> 2)];
      }
      y[r * ldy + i] = s;
    }
  }
}

void nm24_tile_f32(const float* val, const uint8_t* meta, int64_t k, int64_t g0, int64_t g1, int64_t n,
                   const float* xt, int mt, float* yt, bool accumulate) {
  const int64_t vs = k / 2, ms = (k / 4 + 1) / 2;
  for (int64_t i = 0; i < n; ++i) {
    const float* v = val + i * vs;
    const uint8_t* m = meta + i * ms;
    float* o = yt + i * mt;
    for (int jb = 0; jb < mt; jb += 16) {
      float32x4_t a[4];
      for (int q = 0; q < 4; ++q) a[q] = accumulate ? vld1q_f32(o + jb + 4 * q) : vdupq_n_f32(0.0f);
      for (int64_t g = g0; g < g1; ++g) {
        const unsigned b = nibble(m, g);
        const float w0 = v[2 * g], w1 = v[2 * g + 1];
        const float* x0 = xt + (4 * g + (b & 3u)) * mt + jb;
        const float* x1 = xt + (4 * g + (b >> 2)) * mt + jb;
        for (int q = 0; q < 4; ++q) {
          a[q] = vaddq_f32(a[q], vmulq_n_f32(vld1q_f32(x0 + 4 * q), w0));  // scalar order: w0 then w1
          a[q] = vaddq_f32(a[q], vmulq_n_f32(vld1q_f32(x1 + 4 * q), w1));
        }
      }
      for (int q = 0; q < 4; ++q) vst1q_f32(o + jb + 4 * q, a[q]);
    }
  }
}

void nm24_tile_s8(const int8_t* val, const uint8_t* meta, int64_t k, int64_t g0, int64_t g1, int64_t n,
                  const int32_t* xt, int mt, int32_t* yt, bool accumulate) {
  const int64_t vs = k / 2, ms = (k / 4 + 1) / 2;
  for (int64_t i = 0; i < n; ++i) {
    const int8_t* v = val + i * vs;
    const uint8_t* m = meta + i * ms;
    int32_t* o = yt + i * mt;
    for (int jb = 0; jb < mt; jb += 16) {
      int32x4_t a[4];
      for (int q = 0; q < 4; ++q) a[q] = accumulate ? vld1q_s32(o + jb + 4 * q) : vdupq_n_s32(0);
      for (int64_t g = g0; g < g1; ++g) {
        const unsigned b = nibble(m, g);
        const int32_t w0 = v[2 * g], w1 = v[2 * g + 1];
        const int32_t* x0 = xt + (4 * g + (b & 3u)) * mt + jb;
        const int32_t* x1 = xt + (4 * g + (b >> 2)) * mt + jb;
        for (int q = 0; q < 4; ++q) {
          a[q] = vmlaq_n_s32(a[q], vld1q_s32(x0 + 4 * q), w0);
          a[q] = vmlaq_n_s32(a[q], vld1q_s32(x1 + 4 * q), w1);
        }
      }
      for (int q = 0; q < 4; ++q) vst1q_s32(o + jb + 4 * q, a[q]);
    }
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
  // No sliced-windows kernels: without a two-source permute over 32 floats (tbl works on bytes of
  // at most 64), the small-M route stays on the vec kernels above.
  t.spmm.sell_vec_f32 = nullptr;
  t.spmm.sell_vec_s8 = nullptr;
}

}  // namespace edgepack::neon
