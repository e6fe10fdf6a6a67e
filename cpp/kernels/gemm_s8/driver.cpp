// GEMM driver: activation preparation, per-row quantization, task split over N (and M), all in
// baseline code; the active path's kernels do the arithmetic.
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "core/dispatch.h"
#include "core/scratch.h"
#include "core/thread_pool.h"
#include "kernels/gemm_s8/gemm_s8.h"

namespace edgepack::gemm {
namespace {

// Grow-only per-thread scratch: after the first call of a given size nothing is allocated.
// Only the calling thread writes it; pool workers read it during the same call.
struct Scratch {
  std::vector<uint8_t> a;
  std::vector<int32_t> corr;
  std::vector<float> rscale;
};
Scratch& scratch() {
  thread_local Scratch s;
  return s;
}

// Calls below kMinParallelMacs (about 2-3 us of work on one core) run on the calling thread:
// waking a sleeping worker costs microseconds, and on a shared machine a descheduled worker can
// stall the caller for a whole time slice (measured: a 1x768x768 call taking 200 us instead of
// 3 us at two threads while other processes held the second core). Tasks are at least
// kMinMacsPerThread (MLAS uses 64K per thread).
constexpr double kMinParallelMacs = 1048576.0;
constexpr double kMinMacsPerThread = 65536.0;
// Rows of A a task keeps in L2 while the B tiles stream past them.
constexpr int64_t kABlockBytes = 192 * 1024;

// Route override (set_route): -1 = the path's own default.
std::atomic<int32_t> g_route_m{-1}, g_route_k{-1};

// The ops that run a call of this shape: the active path's, or for small shapes the path below.
const GemmOps& ops_for(int64_t m, int64_t k) {
  const GemmOps& ops = active().gemm;
  if (!ops.small) return ops;
  const int32_t om = g_route_m.load(std::memory_order_relaxed), ok = g_route_k.load(std::memory_order_relaxed);
  const int64_t min_m = om >= 0 ? om : ops.route_m, min_k = ok >= 0 ? ok : ops.route_k;
  return (m < min_m || k < min_k) ? *ops.small : ops;
}

int64_t round_up(int64_t v, int64_t to) { return (v + to - 1) / to * to; }
// Bytes of each A row the kernel reads (zero beyond k): kp for the vector paths, more for AMX.
int64_t a_stride(int64_t k, const GemmOps& ops) { return round_up(k, ops.ka > kKU ? ops.ka : kKU); }

void run(const GemmArgs& g, const GemmOps& ops) {
  const int64_t M = g.m, P = g.b.panels;
  if (M <= 0 || P <= 0) return;
  const int64_t mr = ops.mr > 0 ? ops.mr : 1, np = ops.np > 0 ? ops.np : 1;
  // Work in VNNI-equivalent multiply-accumulates, so the thresholds below stay amounts of time.
  const double macs = static_cast<double>(M) * static_cast<double>(P * kNR) *
                      static_cast<double>(g.b.kp > 0 ? g.b.kp : 1) * (ops.mac_cost > 0 ? ops.mac_cost : 1.0f);
  int threads = get_num_threads();
  if (macs < kMinParallelMacs) threads = 1;
  const int64_t kp = g.b.kp > 0 ? g.b.kp : 1;
  int64_t mc = kABlockBytes / kp / mr * mr;
  if (mc < mr) mc = mr;
  if (M <= 4 * mr) mc = M;  // small M: one strip, B streamed once
  const int64_t mchunks = (M + mc - 1) / mc;
  // Small M walks B in wide GEMV-like tiles (up to 8 panels): keep task edges on those.
  const int64_t align = M <= 4 ? 8 : np;
  const int64_t ntiles = (P + align - 1) / align;
  int64_t nchunks = 1;
  if (threads > 1) {
    // Several tasks per thread, handed out dynamically: on a shared machine a thread that loses
    // its core for a while leaves its remaining tasks to the others instead of stalling the call.
    const int64_t want = 8 * threads;
    nchunks = (want + mchunks - 1) / mchunks;
    const int64_t by_work = static_cast<int64_t>(macs / (kMinMacsPerThread * mchunks));
    if (nchunks > by_work) nchunks = by_work;
    if (nchunks > ntiles) nchunks = ntiles;
    if (nchunks < 1) nchunks = 1;
  }
  const int64_t tasks = mchunks * nchunks;
  auto task = [&](int64_t t) {
    const int64_t mi = t % mchunks, ni = t / mchunks;
    const int64_t m0 = mi * mc, m1 = (m0 + mc < M) ? m0 + mc : M;
    int64_t p0 = (ntiles * ni / nchunks) * align, p1 = (ntiles * (ni + 1) / nchunks) * align;
    if (p1 > P) p1 = P;
    if (p0 < p1) ops.block(g, m0, m1, p0, p1);
  };
  parallel_for(tasks, task, threads);
}

// A in the kernel's byte format with rows of kp bytes (the kernel's A stride, a_stride(): zero
// beyond k); returns the pointer and stride.
// The value shift of the XOR and the zero point go into corr (nullptr when all zero).
const uint8_t* prep_a(const uint8_t* a, AKind kind, int32_t zp, int64_t m, int64_t lda, int64_t k,
                      int64_t kp, const GemmOps& ops, int64_t* lda_out, const int32_t** corr_out) {
  Scratch& s = scratch();
  const bool in_unsigned = kind == AKind::u8;
  const bool flip = in_unsigned != ops.a_unsigned;
  const int32_t shift = flip ? (in_unsigned ? -128 : 128) : 0;
  const int32_t corr = -(zp + shift);
  if (corr != 0) {
    int32_t* c = grow(s.corr, m);
    for (int64_t i = 0; i < m; ++i) c[i] = corr;
    *corr_out = c;
  } else {
    *corr_out = nullptr;
  }
  if (!flip && kp == k) {
    *lda_out = lda;
    return a;
  }
  const uint8_t mask = flip ? 0x80 : 0x00;
  uint8_t* out = grow(s.a, m * kp);
  for (int64_t i = 0; i < m; ++i) {
    const uint8_t* src = a + i * lda;
    uint8_t* dst = out + i * kp;
    for (int64_t c = 0; c < k; ++c) dst[c] = src[c] ^ mask;
    for (int64_t c = k; c < kp; ++c) dst[c] = 0;  // AMX (ka = 64) needs true zeros here
  }
  *lda_out = kp;
  return out;
}

}  // namespace

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

void set_route(int32_t min_m, int32_t min_k) {
  g_route_m.store(min_m < 0 ? -1 : min_m, std::memory_order_relaxed);
  g_route_k.store(min_k < 0 ? -1 : min_k, std::memory_order_relaxed);
}

void get_route(int32_t* min_m, int32_t* min_k) {
  const GemmOps& ops = active().gemm;
  const int32_t om = g_route_m.load(std::memory_order_relaxed), ok = g_route_k.load(std::memory_order_relaxed);
  *min_m = ops.small ? (om >= 0 ? om : ops.route_m) : 0;
  *min_k = ops.small ? (ok >= 0 ? ok : ops.route_k) : 0;
}

bool routes_small(int64_t m, int64_t k) { return &ops_for(m, k) != &active().gemm; }

void gemm_i32(const uint8_t* a, AKind kind, int32_t zp, int64_t m, int64_t lda, const PackedB& b,
              int32_t* c, int64_t ldc) {
  const GemmOps& ops = ops_for(m, b.k);
  GemmArgs g;
  g.a = prep_a(a, kind, zp, m, lda, b.k, a_stride(b.k, ops), ops, &g.lda, &g.row_corr);
  g.m = m;
  g.b = b;
  g.c_i32 = c;
  g.ldc = ldc;
  run(g, ops);
}

// The float-output half of GemmArgs shared by the dynamic and static linear layers.
static GemmArgs float_args(int64_t m, const PackedB& b, const float* row_scale, const float* w_scale, const float* bias,
                           Act act, float* y, int64_t ldy) {
  GemmArgs g;
  g.m = m;
  g.b = b;
  g.c_f32 = y;
  g.ldc = ldy;
  g.row_scale = row_scale;
  g.col_scale = w_scale;
  g.bias = bias;
  g.act = act;
  return g;
}

Status linear_dynamic(const float* x, int64_t m, int64_t ldx, const PackedB& b, const float* w_scale,
                      const float* bias, Act act, float* y, int64_t ldy) {
  const GemmOps& ops = ops_for(m, b.k);
  Scratch& s = scratch();
  const int64_t kp = a_stride(b.k, ops);
  uint8_t* qa = grow(s.a, m * kp);
  float* rs = grow(s.rscale, m);
  const uint8_t mask = ops.a_unsigned ? 0x80 : 0x00;
  // Quantize on the threads too when there is enough of it; rows are independent.
  const int threads = get_num_threads();
  const int64_t qchunks = (threads > 1 && m * b.k >= (int64_t(1) << 17)) ? (m < 32 ? m : 32) : 1;
  Status st[32];
  auto qtask = [&](int64_t t) {
    const int64_t r0 = m * t / qchunks, r1 = m * (t + 1) / qchunks;
    st[t] = ops.quant_rows(x + r0 * ldx, r1 - r0, b.k, ldx, qa + r0 * kp, kp, kp, rs + r0, mask);
    if (!st[t].ok()) st[t].index += r0 * b.k;
  };
  parallel_for(qchunks, qtask, threads);
  for (int64_t t = 0; t < qchunks; ++t)
    if (!st[t].ok()) return st[t];
  int32_t* corr = nullptr;
  if (ops.a_unsigned) {
    corr = grow(s.corr, m);
    for (int64_t i = 0; i < m; ++i) corr[i] = -128;
  }
  GemmArgs g = float_args(m, b, rs, w_scale, bias, act, y, ldy);
  g.a = qa;
  g.lda = kp;
  g.row_corr = corr;
  run(g, ops);
  return Status::good();
}

void linear_static(const uint8_t* a, AKind kind, int32_t zp, float x_scale, int64_t m, int64_t lda,
                   const PackedB& b, const float* w_scale, const float* bias, Act act, float* y,
                   int64_t ldy) {
  const GemmOps& ops = ops_for(m, b.k);
  float* rs = grow(scratch().rscale, m);
  for (int64_t i = 0; i < m; ++i) rs[i] = x_scale;
  GemmArgs g = float_args(m, b, rs, w_scale, bias, act, y, ldy);
  g.a = prep_a(a, kind, zp, m, lda, b.k, a_stride(b.k, ops), ops, &g.lda, &g.row_corr);
  run(g, ops);
}

Status quantize_static(const float* x, int64_t m, int64_t k, float scale, AKind kind, int32_t zp,
                       uint8_t* out) {
  // The quantize area's per-tensor kernel (vectorized on every path, threaded when large).
  return quant::quantize(x, 1, 1, m * k, &scale, &zp, kind == AKind::u8, out);
}

}  // namespace edgepack::gemm
