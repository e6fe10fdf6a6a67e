#include <pybind11/pybind11.h>

namespace py = pybind11;

namespace edgepack::bindings {
void bind_gemm(py::module_& m) { (void)m; }
}  // namespace edgepack::bindings
