// AMX detection, split into injectable facts so every failure mode is testable on any machine.
// Baseline code only (bindings, dispatch, tests): it uses std::string, which an ISA translation
// unit must not instantiate.
#pragma once
#include <cstdint>
#include <string>

#include "core/cpu_features.h"

namespace edgepack {

// ---- AMX ---------------------------------------------------------------------------------------
// CPUID alone does not make AMX usable. The OS must enable the tile state in XCR0 (bits 17
// XTILECFG, 18 XTILEDATA), a VM must expose a tile palette (some advertise AMX with none, and
// the first tile instruction then raises #UD), and on Linux each process must ask for the 8 KiB
// tile state with arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) (kernel >= 5.16; before
// that request a tile instruction raises SIGILL). Every fact is an input of amx_check(), so the
// failure modes (no CPUID bit, XCR0 without tile state, 0 palettes, denied permission) are tested
// on machines without AMX.

// The CPUID / XCR0 facts the AMX path depends on (zero when the leaf does not exist).
struct AmxCpuid {
  bool x86 = false;
  bool tile = false, int8 = false;   // CPUID.(7,0):EDX[24] AMX-TILE, EDX[25] AMX-INT8
  bool avx512_vnni = false;          // the path's epilogue and its small shapes run on AVX-512 VNNI
  uint64_t xcr0 = 0;                 // XGETBV(0); 0 when the OS has not set CR4.OSXSAVE
  uint32_t max_palette = 0;          // CPUID.(0x1D,0):EAX
  uint32_t bytes_per_tile = 0, bytes_per_row = 0, max_names = 0, max_rows = 0;  // CPUID.(0x1D,1), palette 1
  uint32_t tmul_maxk = 0, tmul_maxn = 0;  // CPUID.(0x1E,0):EBX[7:0] rows, EBX[23:8] bytes per row
};
AmxCpuid amx_read_cpuid();

// The Linux permission calls, replaceable in tests. Each returns 0 or an errno value.
struct AmxOs {
  int (*get_perm)(uint64_t* mask) = nullptr;  // arch_prctl(ARCH_GET_XCOMP_PERM, &mask)
  int (*req_perm)() = nullptr;                // arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)
};
// The system's own calls (Linux); both null elsewhere (then AMX is reported unusable).
AmxOs amx_system_os();

// Why the AMX path cannot run given these facts; "" when it can. The permission step (oneDNN's
// order: GET, REQ when XTILEDATA is not yet permitted, GET again) runs only when `os` is given
// and every CPUID/XCR0 check passed.
std::string amx_check(const AmxCpuid& c, const AmxOs* os);

// amx_reason() (cpu_features.h) is amx_check(amx_read_cpuid(), &amx_system_os()) evaluated once:
// the permission request is made on the first call, never before, and it is per process, so pool
// threads created before or after it may all use tiles.

}  // namespace edgepack
