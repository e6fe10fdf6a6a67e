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

// Polling before a thread sleeps: about 20-50 microseconds by default, long enough to catch the
// next layer's call in a model, short enough not to steal a core from the next library.
// EDGEPACK_SPIN (iterations of a pause loop, 0 = sleep at once) overrides it.
int spin_iters() {
  static const int n = [] {
    if (const char* e = std::getenv("EDGEPACK_SPIN")) {
      const int v = std::atoi(e);
      if (v >= 0) return v;
    }
    return 4000;
  }();
  return n;
}

// A job is joined, not assigned: a worker takes part only if it wakes while the job is still
// open. `join` packs the job's id (low 32 bits of its generation), an "open" bit and the number of
// workers inside the job, so joining and closing are single atomic steps. The caller waits until
// every task is done, closes the job, then waits only for the workers that did join (they are
// running). A worker the OS has not scheduled yet never stalls a call: it finds the job closed.
constexpr uint64_t kOpen = uint64_t(1) << 31;
constexpr uint64_t kActiveMask = kOpen - 1;

struct Pool {
  std::mutex m;
  std::condition_variable cv_work, cv_done;
  std::vector<std::thread> workers;
  bool stop = false;
  std::atomic<uint64_t> generation{0};
  // The current job (written before the generation is bumped, read only by joined workers).
  const TaskRef* task = nullptr;
  int64_t n_tasks = 0;
  // Read by workers only once they have joined; atomic so that a future reader outside a job
  // cannot be a data race (ThreadSanitizer, scripts/test-sanitizers.sh).
  std::atomic<int> job_workers{0};  // workers 0..job_workers-1 may join
  std::atomic<int64_t> next{0};
  std::atomic<int64_t> done{0};
  std::atomic<uint64_t> join{0};
  std::atomic<bool> busy{false};
  std::atomic<int> num_threads{1};  // read by get_num_threads/parallel_for without the busy flag

  void run_tasks() {
    const TaskRef& t = *task;
    const int64_t n = n_tasks;
    for (int64_t i = next.fetch_add(1, std::memory_order_relaxed); i < n;
         i = next.fetch_add(1, std::memory_order_relaxed)) {
      t(i);
      if (done.fetch_add(1, std::memory_order_acq_rel) + 1 == n) {
        std::lock_guard<std::mutex> lk(m);
        cv_done.notify_one();
      }
    }
  }

  bool try_join(uint64_t g) {
    uint64_t s = join.load(std::memory_order_acquire);
    for (;;) {
      if ((s >> 32) != (g & 0xffffffffu) || !(s & kOpen)) return false;
      if (join.compare_exchange_weak(s, s + 1, std::memory_order_acq_rel)) return true;
    }
  }

  void worker_main(int index) {
    uint64_t seen = 0;
    const int spins = spin_iters();
    for (;;) {
      uint64_t g = generation.load(std::memory_order_acquire);
      for (int s = 0; g == seen && s < spins; ++s) {
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
      if (!try_join(g)) continue;
      // Read after joining: the join's acquire pairs with the caller's release, so this is the
      // open job's value (before joining, it could be a later caller's half-written job).
      if (index < job_workers.load(std::memory_order_relaxed)) run_tasks();
      join.fetch_sub(1, std::memory_order_acq_rel);
    }
  }

  void start(int n) {
    num_threads = n < 1 ? 1 : n;
    stop = false;
    for (int i = 0; i + 1 < num_threads; ++i) workers.emplace_back([this, i] { worker_main(i); });
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
  p.task = &task;
  p.n_tasks = n_tasks;
  p.job_workers.store(threads - 1, std::memory_order_relaxed);
  p.next.store(0, std::memory_order_relaxed);
  p.done.store(0, std::memory_order_relaxed);
  {
    std::lock_guard<std::mutex> lk(p.m);
    const uint64_t g = p.generation.load(std::memory_order_relaxed) + 1;
    p.join.store(((g & 0xffffffffu) << 32) | kOpen, std::memory_order_release);
    p.generation.store(g, std::memory_order_release);
  }
  p.cv_work.notify_all();
  tl_inside_task = true;
  p.run_tasks();
  tl_inside_task = false;
  // Tasks still running belong to workers that joined; wait for them to finish.
  const int spins = spin_iters();
  for (int s = 0; p.done.load(std::memory_order_acquire) != n_tasks && s < spins; ++s) EP_PAUSE();
  if (p.done.load(std::memory_order_acquire) != n_tasks) {
    std::unique_lock<std::mutex> lk(p.m);
    p.cv_done.wait(lk, [&] { return p.done.load(std::memory_order_acquire) == n_tasks; });
  }
  // Close the job; late wakers will not join. Wait for joined workers to leave run_tasks (their
  // remaining work is one failed fetch_add), since they still read the job.
  uint64_t s = p.join.load(std::memory_order_acquire);
  while (!p.join.compare_exchange_weak(s, s & ~kOpen, std::memory_order_acq_rel)) {
  }
  while ((p.join.load(std::memory_order_acquire) & kActiveMask) != 0) std::this_thread::yield();
  p.task = nullptr;
  p.busy.store(false, std::memory_order_release);
}

}  // namespace edgepack
