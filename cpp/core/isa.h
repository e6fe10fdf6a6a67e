// Instruction-set paths. One token per path is used everywhere: the file name of each kernel
// (cpp/kernels/<area>/<isa>.cpp), its namespace (edgepack::<isa>), and the EDGEPACK_ISA value.
#pragma once
#include <cstdint>

namespace edgepack {

enum class Isa : int {
  scalar = 0,
  avx2 = 1,
  avx512 = 2,       // F + BW + DQ + VL
  avx512_vnni = 3,  // avx512 + VNNI
  neon = 4,
  neon_dotprod = 5,
  avx512_amx = 6,   // avx512_vnni + AMX-TILE/AMX-INT8 tiles (Sapphire Rapids and later), OS permission granted
};
constexpr int kNumIsas = 7;

// "scalar", "avx2", ...; nullptr for an out-of-range value.
const char* isa_name(Isa isa);
// false when the name is unknown.
bool isa_from_name(const char* name, Isa* out);
// The paths of this architecture in order of preference, weakest first (scalar is always first).
// Returns the count; `out` must hold kNumIsas entries.
int isa_order(Isa* out);

}  // namespace edgepack
