// Kernel result codes. Kernels never throw, abort or print: they return a Status and the
// binding turns it into a Python exception with the argument's name.
#pragma once
#include <cstdint>

namespace edgepack {

enum class StatusCode : int { ok = 0, non_finite = 1, out_of_range = 2, out_of_memory = 3 };

struct Status {
  StatusCode code = StatusCode::ok;
  int64_t index = -1;  // flat index of the offending element, when there is one
  bool ok() const { return code == StatusCode::ok; }
  static Status good() { return Status{}; }
  static Status at(StatusCode c, int64_t i) { return Status{c, i}; }
};

}  // namespace edgepack
