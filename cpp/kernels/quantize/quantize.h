// Kernel contract for the quantize area: the function-pointer types each path implements.
// Declarations only: this header is included by ISA translation units.
#pragma once
#include <cstddef>
#include <cstdint>

#include "core/status.h"

namespace edgepack {

struct QuantizeOps {
  int reserved = 0;  // filled in by the quantize area
};

}  // namespace edgepack
