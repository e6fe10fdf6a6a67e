// Grow-only scratch buffers for the drivers (baseline code only; never included by an ISA
// translation unit): after the first call of a given size nothing is allocated.
#pragma once
#include <cstdint>
#include <vector>

namespace edgepack {

template <class T>
T* grow(std::vector<T>& v, int64_t n) {
  if (static_cast<int64_t>(v.size()) < n) v.resize(static_cast<size_t>(n));
  return v.data();
}

}  // namespace edgepack
