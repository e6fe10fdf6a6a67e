#include "core/thread_pool.h"

#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__linux__)
#include <pthread.h>
#include <sched.h>
#endif
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define EP_PAUSE() _mm_pause()
#elif defined(__aarch64__)
#define EP_PAUSE() __asm__ __volatile__("yield")
#else
#define EP_PAUSE() ((void)0)
#endif

namespace edgepack {
namespace {

// About 20-50 microseconds of polling before a thread sleeps: long enough to catch the next
// layer's call in a model, short enough not to steal a core from the next library.
constexpr int kSpinIters = 4000;

struct Pool {
  std::mutex m;
  std::condition_variable cv_work, cv_done;
  std::vector<std::thread> workers;
  bool stop = false;
  // (job sequence << 16) | number of workers taking part. The worker count travels in the same
  // word a worker acquires: a worker that wakes late for an old job must not read job_workers or
  // task, which the next job may already be rewriting (found by UBSan: a null task dereference,
  // and a worker counting itself into the next job twice).
  std::atomic<uint64_t> generation{0};
  // The current job.
  const TaskRef* task = nullptr;
  int64_t n_tasks = 0;
  std::atomic<int64_t> next{0};
  std::atomic<int> pending{0};
  std::atomic<bool> busy{false};
  std::atomic<int> num_threads{1};  // read by callers without the busy flag (get_num_threads, parallel_for)

  void run_tasks() {
    const TaskRef& t = *task;
    for (int64_t i = next.fetch_add(1, std::memory_order_relaxed); i < n_tasks;
         i = next.fetch_add(1, std::memory_order_relaxed))
      t(i);
  }

  // `seen` starts at the generation current when the worker is created: a worker started by
  // set_num_threads must not take the last, finished job for a new one (it would run a null
  // task and decrement pending for a job that is not waiting, so the next caller could return
  // while workers still run its tasks).
  void worker_main(int index, uint64_t seen) {
    for (;;) {
      uint64_t g = generation.load(std::memory_order_acquire);
      for (int s = 0; g == seen && s < kSpinIters; ++s) {
        EP_PAUSE();
        g = generation.load(std::memory_order_acquire);
      }
      if (g == seen) {
        std::unique_lock<std::mutex> lk(m);
        cv_work.wait(lk, [&] { return stop || generation.load(std::memory_order_acquire) != seen; });
        if (stop) return;
        g = generation.load(std::memory_order_acquire);
      }
      seen = g;
      // A participant is waited for (pending), so the job's fields stay put until it is done.
      if (index >= static_cast<int>(g & 0xFFFF)) continue;
      run_tasks();
      if (pending.fetch_sub(1, std::memory_order_acq_rel) == 1) {
        std::lock_guard<std::mutex> lk(m);
        cv_done.notify_one();
      }
    }
  }

  void start(int n) {
    num_threads = n < 1 ? 1 : n;
    stop = false;
    const uint64_t g0 = generation.load(std::memory_order_acquire);
    for (int i = 0; i + 1 < num_threads; ++i) workers.emplace_back([this, i, g0] { worker_main(i, g0); });
  }

  void stop_all() {
    {
      std::lock_guard<std::mutex> lk(m);
      stop = true;
    }
    cv_work.notify_all();
    for (auto& w : workers) w.join();
    workers.clear();
  }
};

thread_local bool tl_inside_task = false;
std::atomic<Pool*> g_pool{nullptr};
std::mutex g_create;

#if defined(__linux__)
// After fork() the child has none of the parent's threads, and the pool's mutexes may be held by
// threads that no longer exist: forget (leak) the old pool and build a new one on first use.
void after_fork_child() { g_pool.store(nullptr); new (&g_create) std::mutex(); }
#endif

Pool& pool() {
  Pool* p = g_pool.load(std::memory_order_acquire);
  if (p) return *p;
  std::lock_guard<std::mutex> lk(g_create);
  p = g_pool.load(std::memory_order_acquire);
  if (!p) {
#if defined(__linux__)
    static bool registered = (pthread_atfork(nullptr, nullptr, after_fork_child), true);
    (void)registered;
#endif
    p = new Pool();  // never freed: workers may be asleep in it at interpreter exit
    p->start(default_num_threads());
    g_pool.store(p, std::memory_order_release);
  }
  return *p;
}

bool acquire(Pool& p) {
  bool expected = false;
  return p.busy.compare_exchange_strong(expected, true, std::memory_order_acquire);
}

}  // namespace

int default_num_threads() {
  if (const char* env = std::getenv("EDGEPACK_NUM_THREADS")) {
    const int n = std::atoi(env);
    if (n >= 1) return n;
  }
#if defined(__linux__)
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    const int n = CPU_COUNT(&set);
    if (n >= 1) return n;
  }
#endif
  const unsigned hc = std::thread::hardware_concurrency();
  return hc ? static_cast<int>(hc) : 1;
}

int get_num_threads() { return pool().num_threads; }

void set_num_threads(int n) {
  if (n < 1) n = 1;
  Pool& p = pool();
  while (!acquire(p)) std::this_thread::yield();
  if (n != p.num_threads) {
    p.stop_all();
    p.start(n);
  }
  p.busy.store(false, std::memory_order_release);
}

void parallel_for(int64_t n_tasks, TaskRef task, int max_threads) {
  if (n_tasks <= 0) return;
  Pool& p = pool();
  int threads = p.num_threads;
  if (max_threads > 0 && max_threads < threads) threads = max_threads;
  if (threads > n_tasks) threads = static_cast<int>(n_tasks);
  if (threads <= 1 || tl_inside_task || !acquire(p)) {
    for (int64_t i = 0; i < n_tasks; ++i) task(i);
    return;
  }
  if (threads > p.num_threads) threads = p.num_threads;  // set_num_threads may have shrunk it
  if (threads > 0x10000) threads = 0x10000;               // the worker count has 16 bits in generation
  p.task = &task;
  p.n_tasks = n_tasks;
  p.next.store(0, std::memory_order_relaxed);
  p.pending.store(threads - 1, std::memory_order_relaxed);
  {
    std::lock_guard<std::mutex> lk(p.m);
    const uint64_t seq = (p.generation.load(std::memory_order_relaxed) >> 16) + 1;
    p.generation.store((seq << 16) | static_cast<uint64_t>(threads - 1), std::memory_order_release);
  }
  p.cv_work.notify_all();
  tl_inside_task = true;
  p.run_tasks();
  tl_inside_task = false;
  for (int s = 0; p.pending.load(std::memory_order_acquire) != 0 && s < kSpinIters; ++s) EP_PAUSE();
  if (p.pending.load(std::memory_order_acquire) != 0) {
    std::unique_lock<std::mutex> lk(p.m);
    p.cv_done.wait(lk, [&] { return p.pending.load(std::memory_order_acquire) == 0; });
  }
  p.task = nullptr;
  p.busy.store(false, std::memory_order_release);
}

}  // namespace edgepack
