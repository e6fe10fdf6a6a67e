// Scalar path: the C++ reference for the quantize area (plain loops, the formulas of quantize.h).
#include <cmath>
#include <cstdint>

#include "core/dispatch.h"
#include "kernels/quantize/quantize.h"

namespace edgepack::scalar {
namespace {

inline bool finite(float v) { return v - v == 0.0f; }

inline uint8_t quant_one(float v, float s, int32_t zp, bool u8) {
  const float lo = (u8 ? 0.0f : -128.0f) - static_cast<float>(zp);
  const float hi = (u8 ? 255.0f : 127.0f) - static_cast<float>(zp);
  float t = v / s;
  t = t < lo ? lo : (t > hi ? hi : t);
  const int32_t q = static_cast<int32_t>(std::nearbyint(t)) + zp;  // default mode: half to even
  return static_cast<uint8_t>(q);  // q in range: the low byte is the int8 or uint8 value
}

Status quant(const float* x, int64_t n, float s, int32_t zp, bool u8, uint8_t* out) {
  for (int64_t i = 0; i < n; ++i) {
    if (!finite(x[i])) return Status::at(StatusCode::non_finite, i);
    out[i] = quant_one(x[i], s, zp, u8);
  }
  return Status::good();
}

Status quant_v(const float* x, int64_t n, const float* s, const int32_t* zp, bool u8, uint8_t* out) {
  for (int64_t i = 0; i < n; ++i) {
    if (!finite(x[i])) return Status::at(StatusCode::non_finite, i);
    out[i] = quant_one(x[i], s[i], zp[i], u8);
  }
  return Status::good();
}

inline int32_t load_q(const uint8_t* q, int64_t i, bool u8) {
  return u8 ? static_cast<int32_t>(q[i]) : static_cast<int32_t>(static_cast<int8_t>(q[i]));
}

void dequant(const uint8_t* q, int64_t n, float s, int32_t zp, bool u8, float* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = static_cast<float>(load_q(q, i, u8) - zp) * s;
}

void dequant_v(const uint8_t* q, int64_t n, const float* s, const int32_t* zp, bool u8, float* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = static_cast<float>(load_q(q, i, u8) - zp[i]) * s[i];
}

Status minmax(const float* x, int64_t n, float* mn, float* mx) {
  float a = *mn, b = *mx;
  for (int64_t i = 0; i < n; ++i) {
    const float v = x[i];
    if (!finite(v)) return Status::at(StatusCode::non_finite, i);
    a = v < a ? v : a;
    b = v > b ? v : b;
  }
  *mn = a;
  *mx = b;
  return Status::good();
}

Status minmax_v(const float* x, int64_t n, float* mn, float* mx) {
  for (int64_t i = 0; i < n; ++i) {
    const float v = x[i];
    if (!finite(v)) return Status::at(StatusCode::non_finite, i);
    mn[i] = v < mn[i] ? v : mn[i];
    mx[i] = v > mx[i] ? v : mx[i];
  }
  return Status::good();
}

}  // namespace

void register_quantize(KernelTable& t) {
  t.quantize.quant = quant;
  t.quantize.quant_v = quant_v;
  t.quantize.dequant = dequant;
  t.quantize.dequant_v = dequant_v;
  t.quantize.minmax = minmax;
  t.quantize.minmax_v = minmax_v;
}

}  // namespace edgepack::scalar
