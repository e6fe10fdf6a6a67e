// Quantize-area driver: splits a tensor into independent blocks for the thread pool and calls the
// active path's kernels. Every element's result depends only on that element, its scale and zero
// point (min/max is exact in any order), so results are identical at any thread count.
#include <atomic>
#include <cmath>
#include <cstdint>

#include "core/dispatch.h"
#include "core/thread_pool.h"
#include "kernels/quantize/quantize.h"

namespace edgepack::quant {
namespace {

// Elements per task: ~256 KB of float32, long enough to hide the hand-off, short enough to balance.
constexpr int64_t kBlock = int64_t(1) << 16;
// Below this many elements everything runs on the calling thread (waking workers costs more).
constexpr int64_t kMinParallel = int64_t(1) << 18;

int threads_for(int64_t total) { return total >= kMinParallel ? get_num_threads() : 1; }

// The error path only: blocks run in any order and stop at their first bad element, so the
// reported index is recomputed here as the first in flat order.
Status first_nonfinite(const float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    if (!(x[i] - x[i] == 0.0f)) return Status::at(StatusCode::non_finite, i);
  return Status::good();
}

// A task plan over `runs` contiguous runs of `len` elements: one task per block of a long run, or
// one task per group of short runs.
struct Plan {
  int64_t runs, len, tasks, blocks_per_run = 1, runs_per_task = 1;
  Plan(int64_t runs_, int64_t len_) : runs(runs_), len(len_) {
    if (len >= kBlock) {
      blocks_per_run = (len + kBlock - 1) / kBlock;
      tasks = runs * blocks_per_run;
    } else {
      runs_per_task = len > 0 ? kBlock / len : runs;
      if (runs_per_task < 1) runs_per_task = 1;
      tasks = runs > 0 ? (runs + runs_per_task - 1) / runs_per_task : 0;
    }
  }
  // Calls f(run, begin, end) for the pieces of task t.
  template <class F>
  void each(int64_t t, F&& f) const {
    if (blocks_per_run > 1 || len >= kBlock) {
      const int64_t r = t / blocks_per_run, b = t % blocks_per_run;
      const int64_t e = (b + 1) * kBlock < len ? (b + 1) * kBlock : len;
      f(r, b * kBlock, e);
    } else {
      const int64_t r1 = (t + 1) * runs_per_task < runs ? (t + 1) * runs_per_task : runs;
      for (int64_t r = t * runs_per_task; r < r1; ++r) f(r, int64_t(0), len);
    }
  }
};

}  // namespace

Status quantize(const float* x, int64_t outer, int64_t channels, int64_t inner, const float* scale,
                const int32_t* zp, bool u8, uint8_t* out) {
  const QuantizeOps& ops = active().quantize;
  const int64_t total = outer * channels * inner;
  if (total == 0) return Status::good();
  std::atomic<bool> bad{false};
  if (inner == 1 && channels > 1) {
    // Channels along the last axis: each row of `channels` elements with the per-element kernel.
    const Plan p(outer, channels);
    parallel_for(p.tasks, [&](int64_t t) {
      p.each(t, [&](int64_t r, int64_t b, int64_t e) {
        const int64_t o = r * channels + b;
        if (!ops.quant_v(x + o, e - b, scale + b, zp + b, u8, out + o).ok()) bad.store(true, std::memory_order_relaxed);
      });
    }, threads_for(total));
  } else {
    const Plan p(outer * channels, inner);
    parallel_for(p.tasks, [&](int64_t t) {
      p.each(t, [&](int64_t r, int64_t b, int64_t e) {
        const int64_t c = r % channels, o = r * inner + b;
        if (!ops.quant(x + o, e - b, scale[c], zp[c], u8, out + o).ok()) bad.store(true, std::memory_order_relaxed);
      });
    }, threads_for(total));
  }
  return bad.load() ? first_nonfinite(x, total) : Status::good();
}

void dequantize(const uint8_t* q, int64_t outer, int64_t channels, int64_t inner, const float* scale,
                const int32_t* zp, bool u8, float* out) {
  const QuantizeOps& ops = active().quantize;
  const int64_t total = outer * channels * inner;
  if (total == 0) return;
  if (inner == 1 && channels > 1) {
    const Plan p(outer, channels);
    parallel_for(p.tasks, [&](int64_t t) {
      p.each(t, [&](int64_t r, int64_t b, int64_t e) {
        const int64_t o = r * channels + b;
        ops.dequant_v(q + o, e - b, scale + b, zp + b, u8, out + o);
      });
    }, threads_for(total));
  } else {
    const Plan p(outer * channels, inner);
    parallel_for(p.tasks, [&](int64_t t) {
      p.each(t, [&](int64_t r, int64_t b, int64_t e) {
        const int64_t c = r % channels, o = r * inner + b;
        ops.dequant(q + o, e - b, scale[c], zp[c], u8, out + o);
      });
    }, threads_for(total));
  }
}

Status minmax(const float* x, int64_t outer, int64_t channels, int64_t inner, float* mn, float* mx) {
  const QuantizeOps& ops = active().quantize;
  for (int64_t c = 0; c < channels; ++c) {
    mn[c] = INFINITY;
    mx[c] = -INFINITY;
  }
  const int64_t total = outer * channels * inner;
  if (total == 0) return Status::good();
  const int threads = threads_for(total);
  std::atomic<bool> bad{false};
  if (channels == 1) {
    // One tensor-wide reduction: fixed partial slots (min/max are exact, so any split agrees).
    constexpr int kParts = 64;
    float pmn[kParts], pmx[kParts];
    const int64_t parts = threads > 1 ? (total + kBlock - 1) / kBlock < kParts ? (total + kBlock - 1) / kBlock : kParts : 1;
    parallel_for(parts, [&](int64_t t) {
      const int64_t b = total * t / parts, e = total * (t + 1) / parts;
      pmn[t] = INFINITY;
      pmx[t] = -INFINITY;
      if (!ops.minmax(x + b, e - b, &pmn[t], &pmx[t]).ok()) bad.store(true, std::memory_order_relaxed);
    }, threads);
    for (int64_t t = 0; t < parts; ++t) {
      mn[0] = pmn[t] < mn[0] ? pmn[t] : mn[0];
      mx[0] = pmx[t] > mx[0] ? pmx[t] : mx[0];
    }
  } else if (inner == 1) {
    // Channels along the last axis: tasks own column ranges and walk every row.
    const int64_t cols = channels < 256 ? channels : 256;
    const int64_t tasks = (channels + cols - 1) / cols;
    parallel_for(tasks, [&](int64_t t) {
      const int64_t c0 = t * cols, c1 = c0 + cols < channels ? c0 + cols : channels;
      for (int64_t o = 0; o < outer; ++o)
        if (!ops.minmax_v(x + o * channels + c0, c1 - c0, mn + c0, mx + c0).ok()) {
          bad.store(true, std::memory_order_relaxed);
          return;
        }
    }, threads);
  } else {
    // Tasks own channels and walk every outer index.
    parallel_for(channels, [&](int64_t c) {
      for (int64_t o = 0; o < outer; ++o)
        if (!ops.minmax(x + (o * channels + c) * inner, inner, &mn[c], &mx[c]).ok()) {
          bad.store(true, std::memory_order_relaxed);
          return;
        }
    }, threads);
  }
  return bad.load() ? first_nonfinite(x, total) : Status::good();
}

Status quantize_rows(const float* x, int64_t m, int64_t k, int8_t* q, float* scale) {
  const GemmOps& ops = active().gemm;
  if (m == 0) return Status::good();
  const Plan p(m, k > 0 ? k : 1);
  // quant_rows needs whole rows: group rows (a row longer than a block is one task).
  const int64_t rows_per_task = p.runs_per_task;
  const int64_t tasks = (m + rows_per_task - 1) / rows_per_task;
  std::atomic<bool> bad{false};
  uint8_t* out = reinterpret_cast<uint8_t*>(q);
  parallel_for(tasks, [&](int64_t t) {
    const int64_t r0 = t * rows_per_task, r1 = r0 + rows_per_task < m ? r0 + rows_per_task : m;
    if (!ops.quant_rows(x + r0 * k, r1 - r0, k, k, out + r0 * k, k, k, scale + r0, 0).ok())
      bad.store(true, std::memory_order_relaxed);
  }, threads_for(m * k));
  return bad.load() ? first_nonfinite(x, m * k) : Status::good();
}

}  // namespace edgepack::quant
