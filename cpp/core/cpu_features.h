// What this CPU and OS can run, read once (cpuid + xgetbv on x86, getauxval on Linux aarch64).
#pragma once

namespace edgepack {

struct CpuFeatures {
  // x86
  bool sse41 = false, avx = false, avx2 = false, fma = false, f16c = false, bmi2 = false;
  bool avx512f = false, avx512bw = false, avx512dq = false, avx512vl = false, avx512_vnni = false;
  bool avx_vnni = false;
  bool avx512_vbmi = false;  // vpermb (not implied by any ISA token: Cascade Lake has VNNI without it)
  bool amx_tile = false, amx_int8 = false;  // CPUID bits only: see amx_reason() for whether tiles may be used
  // aarch64
  bool neon = false, dotprod = false, i8mm = false;
};

// Detected once, on first call; the OS support bits (XCR0) are folded in, so avx512f here means
// the OS also saves zmm state.
const CpuFeatures& cpu_features();

// AMX tiles may be used by this process: nullptr, or why not (static storage). The first call
// makes the once-per-process Linux permission request. Details in core/amx_detect.h.
const char* amx_reason();

}  // namespace edgepack
