// The extension module edgepack._core. Each area registers its functions from its own file.
#include <pybind11/pybind11.h>

namespace py = pybind11;

namespace edgepack::bindings {
void bind_runtime(py::module_& m);
void bind_quantize(py::module_& m);
void bind_gemm(py::module_& m);
void bind_sparse(py::module_& m);
void bind_attn(py::module_& m);
void bind_norm(py::module_& m);
void bind_conv(py::module_& m);
void bind_conv_f32(py::module_& m);
}  // namespace edgepack::bindings

PYBIND11_MODULE(_core, m) {
  m.doc() = "edgepack native kernels (private: use the edgepack package)";
  edgepack::bindings::bind_runtime(m);
  edgepack::bindings::bind_quantize(m);
  edgepack::bindings::bind_gemm(m);
  edgepack::bindings::bind_sparse(m);
  edgepack::bindings::bind_attn(m);
  edgepack::bindings::bind_norm(m);
  edgepack::bindings::bind_conv(m);
  edgepack::bindings::bind_conv_f32(m);
}
