// Reference path for the spmm kernels: plain C++, one accumulator per output in storage order,
// so its float results are the exact sequential sum in float32 (built with -ffp-contract=off).
#include "core/dispatch.h"
#include "kernels/spmm/spmm.h"

namespace edgepack::scalar {
namespace {

void csr_vec_f32(const int64_t* rp, const uint16_t* col, const float* val, int64_t n, const float* x,
                 int64_t ldx, int mr, float* y, int64_t ldy) {
  for (int r = 0; r < mr; ++r) {
    const float* xr = x + r * ldx;
    for (int64_t i = 0; i < n; ++i) {
      float acc = 0.0f;
      for (int64_t p = rp[i]; p < rp[i + 1]; ++p) acc += val[p] * xr[col[p]];
      y[r * ldy + i] = acc;
    }
  }
}

void csr_vec_s8(const int64_t* rp, const uint16_t* col, const int8_t* val, int64_t n, const int32_t* x,
                int64_t ldx, int mr, int32_t* y, int64_t ldy) {
  for (int r = 0; r < mr; ++r) {
    const int32_t* xr = x + r * ldx;
    for (int64_t i = 0; i < n; ++i) {
      int32_t acc = 0;
      for (int64_t p = rp[i]; p < rp[i + 1]; ++p) acc += int32_t(val[p]) * xr[col[p]];
      y[r * ldy + i] = acc;
    }
  }
}

void csr_tile_f32(const int64_t* seg, int64_t ss, const uint16_t* col, const float* val, int64_t n,
                  const float* xt, int mt, float* yt, bool accumulate) {
  for (int64_t i = 0; i < n; ++i) {
    float* o = yt + i * mt;
    if (!accumulate)
      for (int j = 0; j < mt; ++j) o[j] = 0.0f;
    for (int64_t p = seg[i * ss]; p < seg[i * ss + 1]; ++p) {
      const float w = val[p];
      const float* xr = xt + int64_t(col[p]) * mt;
      for (int j = 0; j < mt; ++j) o[j] += w * xr[j];
    }
  }
}

void csr_tile_s8(const int64_t* seg, int64_t ss, const uint16_t* col, const int8_t* val, int64_t n,
                 const int32_t* xt, int mt, int32_t* yt, bool accumulate) {
  for (int64_t i = 0; i < n; ++i) {
    int32_t* o = yt + i * mt;
    if (!accumulate)
      for (int j = 0; j < mt; ++j) o[j] = 0;
    for (int64_t p = seg[i * ss]; p < seg[i * ss + 1]; ++p) {
      const int32_t w = val[p];
      const int32_t* xr = xt + int64_t(col[p]) * mt;
      for (int j = 0; j < mt; ++j) o[j] += w * xr[j];
    }
  }
}

template <class V, class X, class A>
void nm24_vec(const V* val, const uint8_t* meta, int64_t k, int64_t n, const X* x, int64_t ldx, int mr,
              A* y, int64_t ldy) {
  const int64_t groups = k / 4, vs = k / 2, ms = (groups + 1) / 2;
  for (int r = 0; r < mr; ++r) {
    const X* xr = x + r * ldx;
    for (int64_t i = 0; i < n; ++i) {
      const V* v = val + i * vs;
      const uint8_t* m = meta + i * ms;
      A acc = 0;
      for (int64_t g = 0; g < groups; ++g) {
        const unsigned b = (m[g >> 1] >> ((g & 1) * 4)) & 15u;
        acc += A(v[2 * g]) * A(xr[4 * g + (b & 3u)]);
        acc += A(v[2 * g + 1]) * A(xr[4 * g + (b >> 2)]);
      }
      y[r * ldy + i] = acc;
    }
  }
}

void nm24_vec_f32(const float* val, const uint8_t* meta, int64_t k, int64_t n, const float* x, int64_t ldx,
                  int mr, float* y, int64_t ldy) {
  nm24_vec<float, float, float>(val, meta, k, n, x, ldx, mr, y, ldy);
}

void nm24_vec_s8(const int8_t* val, const uint8_t* meta, int64_t k, int64_t n, const int32_t* x,
                 int64_t ldx, int mr, int32_t* y, int64_t ldy) {
  nm24_vec<int8_t, int32_t, int32_t>(val, meta, k, n, x, ldx, mr, y, ldy);
}

template <class V, class X>
void nm24_tile(const V* val, const uint8_t* meta, int64_t k, int64_t g0, int64_t g1, int64_t n, const X* xt,
               int mt, X* yt, bool accumulate) {
  const int64_t vs = k / 2, ms = (k / 4 + 1) / 2;
  for (int64_t i = 0; i < n; ++i) {
    const V* v = val + i * vs;
    const uint8_t* m = meta + i * ms;
    X* o = yt + i * mt;
    if (!accumulate)
      for (int j = 0; j < mt; ++j) o[j] = X(0);
    for (int64_t g = g0; g < g1; ++g) {
      const unsigned b = (m[g >> 1] >> ((g & 1) * 4)) & 15u;
      const X w0 = X(v[2 * g]), w1 = X(v[2 * g + 1]);
      const X* x0 = xt + (4 * g + (b & 3u)) * mt;
      const X* x1 = xt + (4 * g + (b >> 2)) * mt;
      for (int j = 0; j < mt; ++j) o[j] += w0 * x0[j];
      for (int j = 0; j < mt; ++j) o[j] += w1 * x1[j];
    }
  }
}

void nm24_tile_f32(const float* val, const uint8_t* meta, int64_t k, int64_t g0, int64_t g1, int64_t n,
                   const float* xt, int mt, float* yt, bool accumulate) {
  nm24_tile<float, float>(val, meta, k, g0, g1, n, xt, mt, yt, accumulate);
}

void nm24_tile_s8(const int8_t* val, const uint8_t* meta, int64_t k, int64_t g0, int64_t g1, int64_t n,
                  const int32_t* xt, int mt, int32_t* yt, bool accumulate) {
  nm24_tile<int8_t, int32_t>(val, meta, k, g0, g1, n, xt, mt, yt, accumulate);
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
}

}  // namespace edgepack::scalar
