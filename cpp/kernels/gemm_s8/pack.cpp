// The one weight packer for every path (layout documented in gemm_s8.h).
#include <cstdint>
#include <cstring>

#include "kernels/gemm_s8/gemm_s8.h"

namespace edgepack::gemm {

int64_t packed_data_bytes(int64_t n, int64_t k) {
  const int64_t kp = (k + kKU - 1) / kKU * kKU;
  const int64_t panels = (n + kNR - 1) / kNR;
  return panels * kp * kNR;
}

int64_t packed_colsum_len(int64_t n) { return (n + kNR - 1) / kNR * kNR; }

Status pack(const int8_t* w, int64_t n, int64_t k, int64_t ldw, int8_t* data, int32_t* colsum) {
  const int64_t kp = (k + kKU - 1) / kKU * kKU;
  const int64_t panels = (n + kNR - 1) / kNR;
  const int64_t groups = kp / kKU;
  for (int64_t r = 0; r < n; ++r)
    for (int64_t c = 0; c < k; ++c)
      if (w[r * ldw + c] == -128) return Status::at(StatusCode::out_of_range, r * k + c);
  std::memset(data, 0, static_cast<size_t>(panels * kp * kNR));
  for (int64_t p = 0; p < panels; ++p) {
    int8_t* panel = data + p * groups * (kNR * kKU);
    for (int j = 0; j < kNR; ++j) {
      const int64_t r = p * kNR + j;
      int32_t s = 0;
      if (r < n) {
        const int8_t* src = w + r * ldw;
        for (int64_t c = 0; c < k; ++c) {
          panel[(c / kKU) * (kNR * kKU) + j * kKU + (c % kKU)] = src[c];
          s += src[c];
        }
      }
      colsum[p * kNR + j] = s;
    }
  }
  return Status::good();
}

void unpack(const PackedB& b, int8_t* w) {
  const int64_t groups = b.kp / kKU;
  for (int64_t r = 0; r < b.n; ++r) {
    const int8_t* panel = b.data + (r / kNR) * groups * (kNR * kKU);
    const int j = static_cast<int>(r % kNR);
    for (int64_t c = 0; c < b.k; ++c) w[r * b.k + c] = panel[(c / kKU) * (kNR * kKU) + j * kKU + (c % kKU)];
  }
}

}  // namespace edgepack::gemm
