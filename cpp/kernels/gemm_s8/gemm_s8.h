// Kernel contract for the gemm_s8 area: the function-pointer types each path implements.
// Declarations only: this header is included by ISA translation units.
#pragma once
#include <cstddef>
#include <cstdint>

#include "core/status.h"

namespace edgepack {

struct GemmOps {
  int reserved = 0;  // filled in by the gemm_s8 area
};

}  // namespace edgepack
