// Attention over packed sequences: (sequence, head) tasks on the pool, scratch per thread.
#include <atomic>
#include <cstdint>
#include <cstring>
#include <vector>

#include "core/dispatch.h"
#include "core/thread_pool.h"
#include "kernels/attn/attn.h"

namespace edgepack::attn {
namespace {

struct Scratch {
  std::vector<float> kt, p;
};
thread_local Scratch tl_scratch;

}  // namespace

void stage_keys_values(const float* k, const float* v, int64_t ld, int64_t L, int64_t dh, float* kt) {
  const int64_t lp = (L + 15) / 16 * 16;
  for (int64_t j = 0; j < L; ++j) {
    const float* kj = k + j * ld;
    for (int64_t c = 0; c < dh; ++c) kt[c * lp + j] = kj[c];
  }
  for (int64_t c = 0; c < dh; ++c)
    for (int64_t j = L; j < lp; ++j) kt[c * lp + j] = 0.0f;
  float* vt = kt + dh * lp;
  for (int64_t j = 0; j < L; ++j) std::memcpy(vt + j * dh, v + j * ld, size_t(dh) * sizeof(float));
}

Status attention(const float* qkv, int64_t n, int64_t d, int64_t heads, const int64_t* offsets, int64_t nseq,
                 float* out) {
  if (n <= 0 || nseq <= 0) return Status::good();
  const AttnHeadFn head = active().attn.head;
  const int64_t dh = d / heads, ld = 3 * d;
  int64_t max_len = 0;
  for (int64_t s = 0; s < nseq; ++s) max_len = offsets[s + 1] - offsets[s] > max_len ? offsets[s + 1] - offsets[s] : max_len;
  const int64_t lp = (max_len + 15) / 16 * 16;
  // One task per (sequence, head): a head of a 128-token sequence is ~10 us of work, enough to
  // be worth a worker; the split never changes a result.
  const int64_t total = nseq * heads;
  const int64_t flops = n * max_len * d * 4;
  const int max_threads = flops < (int64_t(1) << 21) ? 1 : 0;
  std::atomic<bool> no_memory{false};
  parallel_for(total, [&](int64_t t) {
    const int64_t s = t / heads, h = t % heads;
    const int64_t start = offsets[s], L = offsets[s + 1] - start;
    if (L <= 0) return;
    Scratch& sc = tl_scratch;
    try {  // a task must not throw: a long sequence's scratch (L^2 floats) may not fit
      if (sc.kt.size() < size_t(2 * dh * lp)) sc.kt.resize(size_t(2 * dh * lp));
      if (sc.p.size() < size_t(lp * (lp + 1))) sc.p.resize(size_t(lp * (lp + 1)));
    } catch (...) {
      no_memory.store(true, std::memory_order_relaxed);
      return;
    }
    const float* base = qkv + start * ld + h * dh;
    head(base, base + d, base + 2 * d, ld, L, dh, out + start * d + h * dh, d, sc.kt.data(), sc.p.data());
  }, max_threads);
  return no_memory.load() ? Status::at(StatusCode::out_of_memory, -1) : Status::good();
}

}  // namespace edgepack::attn
