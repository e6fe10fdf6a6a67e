// LayerNorm over rows on the pool: rows are independent, so any split gives the same bits.
#include <cstdint>

#include "core/dispatch.h"
#include "core/thread_pool.h"
#include "kernels/norm/norm.h"

namespace edgepack::norm {

void layer_norm(const float* x, const float* r, const float* w, const float* b, int64_t m, int64_t d, float eps,
                float* out) {
  if (m <= 0 || d <= 0) return;
  const LayerNormRowFn row = active().norm.layer_norm_row;
  // ~16K floats per task: below that a worker's wake-up costs more than the rows
  const int64_t rows_per_task = d >= 16384 ? 1 : 16384 / d;
  const int64_t tasks = (m + rows_per_task - 1) / rows_per_task;
  parallel_for(tasks, [&](int64_t t) {
    const int64_t r0 = t * rows_per_task, r1 = r0 + rows_per_task < m ? r0 + rows_per_task : m;
    for (int64_t i = r0; i < r1; ++i) row(x + i * d, r ? r + i * d : nullptr, w, b, d, eps, out + i * d);
  });
}

}  // namespace edgepack::norm
