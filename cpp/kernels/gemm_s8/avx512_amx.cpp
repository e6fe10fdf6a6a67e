// AVX-512 + AMX path (Intel Sapphire Rapids and later): int8 GEMM on the tile unit, TDPBSSD
// (16 x 64 int8 A tile times 64 x 16 int8 B tile into a 16 x 16 int32 C tile, ~16 cycles: about
// 8x the vpdpbusd rate of the same core; docs in /work/shared/design/AMX.md).
//
// Exact: TDPBSSD multiplies signed by signed and wraps mod 2^32 like vpdpbusd, so A stays int8
// (a_unsigned = false: no XOR 0x80, no column-sum correction for dynamic activations); a static
// zero point's row_corr[m] * colsum[n] is added (wrapping) in the epilogue. The int32 results are
// those of the scalar reference, and the float epilogue is the AVX-512 paths' own
// ((acc * row_scale) * col_scale + bias, no FMA, then the same vector activations), so
// linear_int8 gives the AVX-512 VNNI path's bits.
//
// Layout: nothing new. The packed B panel [kp/4][16][4] is the B-tile format: the tile of panel p
// at k step kb is data + p * kp * 16 + kb * 1024, 16 rows (k groups) of 64 bytes (16 columns x
// 4 k), stride 64. A is read in place (row stride lda) when K % 64 == 0, else from the driver's
// copy with rows zero-padded to a multiple of 64 (GemmOps::ka); one tile configuration covers
// the whole K (LDTILECFG zeroes the tiles, so a K tail cannot be reconfigured mid-sum).
// Over-reads: the last k step of a panel whose kp is not a multiple of 64 reads up to 15 B rows
// (960 bytes) past the panel. They are multiplied by A's zero pad, so their values never matter
// while they stay inside the packed data (the following panels' rows). For the last
// ceil(overrun / panel bytes) panels they would leave it (for K <= 16 a panel is 64-256 bytes, so
// up to 15 panels): their last step is read from zero-padded 1 KiB copies made by the task that
// needs them. The kernel never reads outside panels * kp * 16 bytes, so a PackedB needs no slack
// (found by the emulated build under ASan). A and C are never over-read or over-written: M tails
// use a configuration with fewer tile rows.
//
// Blocks (tile numbers are literals: the intrinsics paste them into the mnemonic):
//   2x2, 32 rows x 2 panels: C 0-3, A 4-5, B 6-7; per 64-k step 2 A + 2 B loads for 4 TDPBSSD.
//     Panel pairs outer, 32-row blocks inner: the B pair stays in L1/L2 while A streams from L2.
//   1x4, <= 16 rows x 4 panels: C 0-3, A 4, B 5/6/7 rotating; one A load per 4 TDPBSSD (M <= 16,
//     where streaming B dominates; beat 2x2 at every M <= 16 in the SPR probe).
// Each task (block call) configures the tiles on entry and releases them on exit: the pool's
// threads may run other code (onnxruntime, oneDNN) that configures tiles too, and a released
// thread has no 8 KiB tile state to save at a context switch. At most two configurations per
// task (full blocks, then the M tail), ~50 ns each.
//
// Small shapes stay on AVX-512 VNNI (GemmOps::route_m / route_k, chosen by the driver before it
// prepares A): at M = 1 a 16-row tile step wastes 15/16 of the work and AMX measured slower than
// VNNI; K <= 16 pads every step to 64 k. Provisional values from the SPR probe in AMX.md, to be
// set from `edgepack bench gemm --crossover` on an AMX machine.
//
// Hook for conv_s8 (implicit-GEMM convolution, landing in parallel): the conv weights use this
// packing, so an avx512_amx conv_s8 kernel reuses amx_tile.inc and the k_2x / k_1x step
// sequence below with one change, the A tile source: per 64-k step, 16 output pixels' input
// bytes, loaded in place when the 16 rows are equally spaced (a 1x1 or stride-1 row run without
// padding) or else gathered from the indirection buffer into a 1 KiB scratch (zero for padding
// and for k beyond K), then tile-loaded with stride 64 (EP_TILE_LOAD has the compiler barrier
// such a freshly written buffer needs). Its IgemmArgs then use xor80 = false (signed A).
#include <immintrin.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#if defined(EDGEPACK_AMX_EMULATE)
#include <cstdio>   // the scalar tile model reports a broken rule, then aborts
#include <cstdlib>
#endif

#include "core/dispatch.h"
#include "kernels/gemm_s8/gemm_s8.h"

namespace edgepack::avx512_amx {
namespace {

#define EP_INLINE inline __attribute__((always_inline))

#include "kernels/gemm_s8/amx_tile.inc"
#include "kernels/gemm_s8/zmm_act.inc"

constexpr int kMR = 32, kNP = 2;  // the 2x2 block
constexpr int kSmallNP = 4;       // the 1x4 block

// C0, C1 and A4 have r0 rows; C2, C3 and A5 have r1 rows (1..16); B6, B7 are full.
void config_2x2(int r0, int r1) {
  TileConfig c;
  set_tile(c, 0, r0, 64);
  set_tile(c, 1, r0, 64);
  set_tile(c, 2, r1, 64);
  set_tile(c, 3, r1, 64);
  set_tile(c, 4, r0, 64);
  set_tile(c, 5, r1, 64);
  set_tile(c, 6, kTileRows, 64);
  set_tile(c, 7, kTileRows, 64);
  EP_TILE_CONFIG(&c);
}

// C0-C3 and A4 have r rows (1..16); B5, B6, B7 are full.
void config_1x4(int r) {
  TileConfig c;
  for (int t = 0; t < 5; ++t) set_tile(c, t, r, 64);
  for (int t = 5; t < 8; ++t) set_tile(c, t, kTileRows, 64);
  EP_TILE_CONFIG(&c);
}

// The most panels whose last step can leave the packed data: 960 bytes over, 64-byte panels.
constexpr int kMaxTailPanels = 15;

// Where each B tile comes from.
struct BSrc {
  const int8_t* data;
  int64_t pstride;      // bytes per panel (kp * 16)
  int64_t steps;        // 64-k steps: ceil(kp / 64)
  int64_t first_tail;   // panels from here on read their last step from `tails` (panels: none)
  const int8_t* tails;  // [panel - first_tail][1024]: those steps, zero padded
  EP_INLINE const int8_t* at(int64_t p, int64_t kb) const { return data + p * pstride + kb * kTileBytes; }
  EP_INLINE const int8_t* step(int64_t p, int64_t kb) const {
    return (p >= first_tail && kb + 1 == steps) ? tails + (p - first_tail) * kTileBytes : at(p, kb);
  }
};

// Rows a0 .. a0 + 31 (A4 the first 16, A5 the rest) x panels p .. p + NT - 1 over all of K.
template <int NT>
EP_INLINE void k_2x(const uint8_t* a0, int64_t lda, const BSrc& B, int64_t p) {
  const uint8_t* a1 = a0 + kTileRows * lda;
  EP_TILE_ZERO(0);
  EP_TILE_ZERO(2);
  if constexpr (NT > 1) {
    EP_TILE_ZERO(1);
    EP_TILE_ZERO(3);
  }
  for (int64_t kb = 0; kb < B.steps; ++kb) {
    EP_TILE_LOAD(4, a0 + kb * kTileK, lda);
    EP_TILE_LOAD(6, B.step(p, kb), 64);
    EP_TILE_DPBSSD(0, 4, 6);
    if constexpr (NT > 1) {
      EP_TILE_LOAD(7, B.step(p + 1, kb), 64);
      EP_TILE_DPBSSD(1, 4, 7);
    }
    EP_TILE_LOAD(5, a1 + kb * kTileK, lda);
    EP_TILE_DPBSSD(2, 5, 6);
    if constexpr (NT > 1) EP_TILE_DPBSSD(3, 5, 7);
  }
}

// The 2x2 accumulators into res [32][NT * 16] int32 (only the configured rows are written).
template <int NT>
EP_INLINE void store_2x(int32_t* res) {
  constexpr int ld = NT * 16;
  EP_TILE_STORE(0, res, ld * 4);
  EP_TILE_STORE(2, res + kTileRows * ld, ld * 4);
  if constexpr (NT > 1) {
    EP_TILE_STORE(1, res + 16, ld * 4);
    EP_TILE_STORE(3, res + kTileRows * ld + 16, ld * 4);
  }
}

// Up to 16 rows at a0 x panels p .. p + NT - 1 over all of K; B tiles rotate through 5, 6, 7.
template <int NT>
EP_INLINE void k_1x(const uint8_t* a0, int64_t lda, const BSrc& B, int64_t p) {
  EP_TILE_ZERO(0);
  if constexpr (NT > 1) EP_TILE_ZERO(1);
  if constexpr (NT > 2) EP_TILE_ZERO(2);
  if constexpr (NT > 3) EP_TILE_ZERO(3);
  for (int64_t kb = 0; kb < B.steps; ++kb) {
    EP_TILE_LOAD(4, a0 + kb * kTileK, lda);
    EP_TILE_LOAD(5, B.step(p, kb), 64);
    EP_TILE_DPBSSD(0, 4, 5);
    if constexpr (NT > 1) {
      EP_TILE_LOAD(6, B.step(p + 1, kb), 64);
      EP_TILE_DPBSSD(1, 4, 6);
    }
    if constexpr (NT > 2) {
      EP_TILE_LOAD(7, B.step(p + 2, kb), 64);
      EP_TILE_DPBSSD(2, 4, 7);
    }
    if constexpr (NT > 3) {
      EP_TILE_LOAD(5, B.step(p + 3, kb), 64);
      EP_TILE_DPBSSD(3, 4, 5);
    }
  }
}

template <int NT>
EP_INLINE void store_1x(int32_t* res) {
  constexpr int ld = NT * 16;
  EP_TILE_STORE(0, res, ld * 4);
  if constexpr (NT > 1) EP_TILE_STORE(1, res + 16, ld * 4);
  if constexpr (NT > 2) EP_TILE_STORE(2, res + 32, ld * 4);
  if constexpr (NT > 3) EP_TILE_STORE(3, res + 48, ld * 4);
}

// Writes rows [m0, m0 + rows) x panels [p0, p0 + np) from res (row stride ld int32): the static
// zero point's correction, then int32 as is or the float epilogue; only columns < N are written.
__attribute__((noinline)) void epilogue(const GemmArgs& g, int64_t m0, int rows, int64_t p0, int np,
                                        const int32_t* res, int ld) {
  for (int q = 0; q < np; ++q) {
    const int64_t n0 = (p0 + q) * gemm::kNR, left = g.b.n - n0;
    const __mmask16 mask = left >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << left) - 1);
    const int32_t* rq = res + q * 16;
    const __m512i cs = g.row_corr ? _mm512_loadu_si512(g.b.colsum + n0) : _mm512_setzero_si512();
    if (g.c_i32) {
      for (int r = 0; r < rows; ++r) {
        __m512i acc = _mm512_load_si512(rq + r * ld);
        if (g.row_corr) acc = _mm512_add_epi32(acc, _mm512_mullo_epi32(_mm512_set1_epi32(g.row_corr[m0 + r]), cs));
        _mm512_mask_storeu_epi32(g.c_i32 + (m0 + r) * g.ldc + n0, mask, acc);
      }
      continue;
    }
    const __m512 csc = _mm512_maskz_loadu_ps(mask, g.col_scale + n0);
    const __m512 bs = g.bias ? _mm512_maskz_loadu_ps(mask, g.bias + n0) : _mm512_setzero_ps();
    for (int r = 0; r < rows; ++r) {
      __m512i acc = _mm512_load_si512(rq + r * ld);
      if (g.row_corr) acc = _mm512_add_epi32(acc, _mm512_mullo_epi32(_mm512_set1_epi32(g.row_corr[m0 + r]), cs));
      __m512 y = _mm512_mul_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(acc), _mm512_set1_ps(g.row_scale[m0 + r])), csc);
      if (g.bias) y = _mm512_add_ps(y, bs);
      y = v_act(y, g.act);
      _mm512_mask_storeu_ps(g.c_f32 + (m0 + r) * g.ldc + n0, mask, y);
    }
  }
}

// Rows [m, m + rows) (17..32) x panels [p0, p1) with the 2x2 block; the caller configured the tiles.
void rows_2x(const GemmArgs& g, int64_t m, int rows, int64_t p0, int64_t p1, const BSrc& B, int32_t* res) {
  const uint8_t* a0 = g.a + m * g.lda;
  for (int64_t p = p0; p < p1; p += kNP) {
    if (p + 1 < p1) {
      k_2x<2>(a0, g.lda, B, p);
      store_2x<2>(res);
      epilogue(g, m, rows, p, 2, res, 32);
    } else {
      k_2x<1>(a0, g.lda, B, p);
      store_2x<1>(res);
      epilogue(g, m, rows, p, 1, res, 16);
    }
  }
}

void block(const GemmArgs& g, int64_t m0, int64_t m1, int64_t p0, int64_t p1) {
  const int64_t rows = m1 - m0;
  if (rows <= 0 || p0 >= p1) return;
  BSrc B;
  B.data = g.b.data;
  B.pstride = g.b.kp * gemm::kNR;
  B.steps = (g.b.kp + kTileK - 1) / kTileK;
  B.first_tail = g.b.panels;
  alignas(64) int8_t tails[kMaxTailPanels * kTileBytes];
  B.tails = tails;
  const int64_t valid = g.b.kp / gemm::kKU - (B.steps - 1) * kTileRows;  // B rows of the last step in the panel
  if (B.steps > 0 && valid < kTileRows) {
    const int64_t over = (kTileRows - valid) * 64, unsafe = (over + B.pstride - 1) / B.pstride;
    B.first_tail = g.b.panels - (unsafe < g.b.panels ? unsafe : g.b.panels);
    for (int64_t p = p0 > B.first_tail ? p0 : B.first_tail; p < p1; ++p) {
      int8_t* t = tails + (p - B.first_tail) * kTileBytes;
      std::memcpy(t, B.at(p, B.steps - 1), static_cast<size_t>(valid * 64));
      std::memset(t + valid * 64, 0, static_cast<size_t>(over));
    }
  }
  alignas(64) int32_t res[kMR * kNP * 16];  // 32 x 32, or 16 x 64 for the 1x4 block
  const int64_t full = rows / kMR * kMR, rest = rows - full;
  if (full) {
    config_2x2(kTileRows, kTileRows);
    // Panel pairs outer, 32-row blocks inner (the B pair stays hot while A streams).
    for (int64_t p = p0; p < p1; p += kNP)
      for (int64_t m = m0; m < m0 + full; m += kMR) rows_2x(g, m, kMR, p, p + kNP < p1 ? p + kNP : p1, B, res);
  }
  if (rest > kTileRows) {
    config_2x2(kTileRows, static_cast<int>(rest - kTileRows));
    rows_2x(g, m0 + full, static_cast<int>(rest), p0, p1, B, res);
  } else if (rest > 0) {
    const int r = static_cast<int>(rest);
    config_1x4(r);
    const uint8_t* a0 = g.a + (m0 + full) * g.lda;
    for (int64_t p = p0; p < p1; p += kSmallNP) {
      switch (p1 - p >= kSmallNP ? kSmallNP : static_cast<int>(p1 - p)) {
        case 1: k_1x<1>(a0, g.lda, B, p); store_1x<1>(res); epilogue(g, m0 + full, r, p, 1, res, 16); break;
        case 2: k_1x<2>(a0, g.lda, B, p); store_1x<2>(res); epilogue(g, m0 + full, r, p, 2, res, 32); break;
        case 3: k_1x<3>(a0, g.lda, B, p); store_1x<3>(res); epilogue(g, m0 + full, r, p, 3, res, 48); break;
        default: k_1x<4>(a0, g.lda, B, p); store_1x<4>(res); epilogue(g, m0 + full, r, p, 4, res, 64); break;
      }
    }
  }
  EP_TILE_RELEASE();
}

// The tile unit's rate: four independent TDPBSSD chains on fixed tiles, no loads (the 2x2
// block's compute). 16 x 16 x 64 multiply-accumulates each.
#if defined(EDGEPACK_AMX_EMULATE)
constexpr int64_t kPeakIters = 2;  // the scalar model is ~10^4 times slower: keep chunks short
#else
constexpr int64_t kPeakIters = 4096;
#endif
double peak(double seconds) {
  config_2x2(kTileRows, kTileRows);
  EP_TILE_ZERO(4);
  EP_TILE_ZERO(5);
  EP_TILE_ZERO(6);
  EP_TILE_ZERO(7);
  int64_t n = 0;
  const double start = gemm::now_seconds();
  double el = 0;
  do {
    for (int64_t i = 0; i < kPeakIters; ++i) {
      EP_TILE_DPBSSD(0, 4, 6);
      EP_TILE_DPBSSD(1, 4, 7);
      EP_TILE_DPBSSD(2, 5, 6);
      EP_TILE_DPBSSD(3, 5, 7);
    }
    n += kPeakIters * 4 * (16 * 16 * 64);
    el = gemm::now_seconds() - start;
  } while (el < seconds);
  EP_TILE_RELEASE();
  return 2.0 * static_cast<double>(n) / el * 1e-9;
}

#undef EP_INLINE

}  // namespace

void register_gemm_s8(KernelTable& t) {
  // quant_rows stays AVX-512 VNNI's (this path is applied on top of it), called with mask 0.
  t.gemm.block = block;
  t.gemm.peak = peak;
  t.gemm.a_unsigned = false;
  t.gemm.mr = kMR;
  t.gemm.np = kNP;
  t.gemm.ka = kTileK;
  // Provisional, from the SPR probe (AMX.md): ~1.5 T MAC/s for a plain 2x2 tile kernel against
  // the ~0.23 T MAC/s VNNI rate the driver's thresholds were tuned at. To be measured.
  t.gemm.mac_cost = 0.15f;
  // M = 1 and K <= 16 stay on VNNI (AMX.md section 3, "Small-M policy"); to be measured with
  // `edgepack bench gemm --crossover`.
  t.gemm.route_m = 2;
  t.gemm.route_k = 17;
}

#if defined(EDGEPACK_AMX_EMULATE)
// Test-only (declared by the self-test and the test build's bindings): what the scalar tile
// model executed, so tests can tell the AMX kernel ran and that every task released its tiles.
void emu_counters(int64_t* configs, int64_t* releases, int64_t* tdps, int64_t* live) {
  *configs = __atomic_load_n(&amx_emu::g_configs, __ATOMIC_RELAXED);
  *releases = __atomic_load_n(&amx_emu::g_releases, __ATOMIC_RELAXED);
  *tdps = __atomic_load_n(&amx_emu::g_tdps, __ATOMIC_RELAXED);
  *live = __atomic_load_n(&amx_emu::g_live, __ATOMIC_RELAXED);
}
#endif

}  // namespace edgepack::avx512_amx
