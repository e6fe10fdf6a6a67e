// edgepack._core LayerNorm binding (residual add fused).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cmath>
#include <cstdint>
#include <string>

#include "bindings/checks.h"
#include "kernels/norm/norm.h"

namespace py = pybind11;

namespace edgepack::bindings {
namespace {

py::array_t<float> layer_norm(py::handle x_obj, py::handle w_obj, py::handle b_obj, double eps, py::handle r_obj,
                              py::handle out_obj) {
  auto x = checks::array<float>(x_obj, "x", 2, "(M, D)");
  const int64_t m = x.shape(0), d = x.shape(1);
  const std::string dshape = "(" + std::to_string(d) + ",)";
  auto w = checks::array<float>(w_obj, "weight", 1, dshape.c_str());
  auto b = checks::array<float>(b_obj, "bias", 1, dshape.c_str());
  checks::require_shape(w, "weight", {d}, dshape.c_str());
  checks::require_shape(b, "bias", {d}, dshape.c_str());
  if (!(eps >= 0.0) || !std::isfinite(eps))
    throw py::value_error("eps must be a finite number >= 0; got " + std::to_string(eps));
  py::array_t<float, py::array::c_style> r;
  const float* rp = nullptr;
  if (!r_obj.is_none()) {
    r = checks::array<float>(r_obj, "residual", 2, "(M, D)");
    checks::require_shape(r, "residual", {m, d}, "(M, D) like x");
    rp = r.data();
  }
  auto out = checks::out_or_new<float>(out_obj, "out", {static_cast<py::ssize_t>(m), static_cast<py::ssize_t>(d)});
  const float *xp = x.data(), *wp = w.data(), *bp = b.data();
  float* op = out.mutable_data();
  {
    py::gil_scoped_release nogil;
    norm::layer_norm(xp, rp, wp, bp, m, d, static_cast<float>(eps), op);
  }
  return out;
}

}  // namespace

void bind_norm(py::module_& m) {
  m.def("layer_norm", &layer_norm, py::arg("x"), py::arg("weight"), py::arg("bias"), py::arg("eps"),
        py::arg("residual") = py::none(), py::arg("out") = py::none());
}

}  // namespace edgepack::bindings
