// One persistent pool of worker threads for every kernel.
//
// Why not OpenMP: a second threading runtime in a process that already holds numpy's, torch's or
// onnxruntime's pools, with its own spin-wait policy. Why not threads per call: creating a thread
// costs more than a batch-1 GEMV. The caller runs tasks itself; workers spin only briefly after a
// call and then sleep on a condition variable, so an idle edgepack never takes a core from the
// library that runs next. Work is split into independent tasks (over N or M, never K), so
// results are bit-identical at any thread count.
#pragma once
#include <cstdint>

namespace edgepack {

// A non-owning callable reference, so that parallel_for allocates nothing per call.
class TaskRef {
 public:
  template <class F>
  TaskRef(const F& f)  // NOLINT: implicit on purpose
      : ctx_(const_cast<void*>(static_cast<const void*>(&f))),
        call_([](void* c, int64_t i) { (*static_cast<const F*>(c))(i); }) {}
  void operator()(int64_t i) const { call_(ctx_, i); }

 private:
  void* ctx_;
  void (*call_)(void*, int64_t);
};

// Threads this process may use by default: EDGEPACK_NUM_THREADS, else the CPUs in its affinity mask.
int default_num_threads();
int get_num_threads();
// n >= 1. Waits for a running parallel_for to finish; safe to call from any thread.
void set_num_threads(int n);

// Runs task(i) for every i in [0, n_tasks), on up to min(threads, max_threads) threads, the caller
// included. When the pool is already running another call (another Python thread, or a nested
// call), the tasks run on the calling thread alone. Tasks must not throw.
void parallel_for(int64_t n_tasks, TaskRef task, int max_threads = 0);

}  // namespace edgepack
