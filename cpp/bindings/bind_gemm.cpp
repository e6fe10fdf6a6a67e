// int8 GEMM bindings: pack_weights, gemm_int8, linear_int8. Validation happens here (checks.h);
// the kernels run with the GIL released.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <chrono>
#include <cmath>
#include <utility>
#include <memory>
#include <string>

#include "bindings/checks.h"
#include "core/dispatch.h"
#include "kernels/gemm_s8/driver.h"

namespace py = pybind11;

namespace edgepack::bindings {
namespace {

using Packed = std::shared_ptr<const PackedB>;

std::string shape2(int64_t a, int64_t b) { return "(" + std::to_string(a) + ", " + std::to_string(b) + ")"; }

Packed pack(py::handle w_obj) {
  auto w = checks::array<int8_t>(w_obj, "w", 2, "(N, K)");
  auto out = std::make_shared<PackedB>();
  const int64_t n = w.shape(0), k = w.shape(1);
  if (k > 65536) throw py::value_error("w must have K <= 65536 columns; got " + shape2(n, k));
  Status st;
  {
    py::gil_scoped_release nogil;
    st = pack_b(w.data(), n, k, k, out.get());
  }
  if (!st.ok())
    throw py::value_error("w must hold values in [-127, 127] (symmetric int8 weights); found -128 at (" +
                          std::to_string(st.index / std::max<int64_t>(k, 1)) + ", " +
                          std::to_string(st.index % std::max<int64_t>(k, 1)) + ")");
  return out;
}

Packed as_packed(py::handle w) {
  if (py::isinstance<PackedB>(w)) return w.cast<Packed>();
  if (py::isinstance<py::array>(w)) return pack(w);
  throw py::type_error("w must be PackedWeights (from pack_weights) or an int8 numpy.ndarray (N, K); got " +
                       checks::describe(w));
}

GemmAct parse_act(py::handle act) {
  if (act.is_none()) return GemmAct::none;
  if (!py::isinstance<py::str>(act))
    throw py::type_error("activation must be None or one of 'relu', 'gelu', 'gelu_tanh', 'silu'; got " +
                         checks::describe(act));
  const std::string s = act.cast<std::string>();
  if (s == "relu") return GemmAct::relu;
  if (s == "gelu") return GemmAct::gelu;
  if (s == "gelu_tanh") return GemmAct::gelu_tanh;
  if (s == "silu") return GemmAct::silu;
  throw py::value_error("activation must be None or one of 'relu', 'gelu', 'gelu_tanh', 'silu'; got '" + s + "'");
}

py::array_t<int32_t> gemm_int8(py::handle a_obj, py::handle w_obj) {
  auto a = checks::array<int8_t>(a_obj, "a", 2, "(M, K)");
  Packed w = as_packed(w_obj);
  if (a.shape(1) != w->k)
    throw py::value_error("a must have shape (M, K) with K = " + std::to_string(w->k) + " to match w " +
                          shape2(w->n, w->k) + "; got " + checks::shape_str(a));
  const int64_t m = a.shape(0);
  py::array_t<int32_t> c({py::ssize_t(m), py::ssize_t(w->n)});
  GemmInput in;
  in.kind = GemmInput::int8_raw;
  in.a = a.data();
  in.lda = w->k;
  GemmOutput out;
  out.c = c.mutable_data();
  out.ld = w->n;
  {
    py::gil_scoped_release nogil;
    gemm_s8_run(*w, m, in, out);
  }
  return c;
}

py::array linear_int8(py::handle x_obj, py::handle w_obj, py::handle ws_obj, py::handle bias_obj,
                      py::handle act_obj, py::handle out_obj, py::handle xs_obj, py::handle xzp_obj,
                      py::handle xdtype_obj) {
  auto x = checks::array<float>(x_obj, "x", 2, "(M, K)");
  if (!py::isinstance<PackedB>(w_obj))
    throw py::type_error("w must be PackedWeights (from pack_weights); got " + checks::describe(w_obj));
  Packed w = w_obj.cast<Packed>();
  const int64_t m = x.shape(0), n = w->n;
  if (x.shape(1) != w->k)
    throw py::value_error("x must have shape (M, K) with K = " + std::to_string(w->k) + " to match w " +
                          shape2(n, w->k) + "; got " + checks::shape_str(x));
  auto ws = checks::array<float>(ws_obj, "w_scale", 1, "(N,)");
  if (ws.shape(0) != n)
    throw py::value_error("w_scale must have shape (" + std::to_string(n) + ",); got " + checks::shape_str(ws));
  py::array_t<float, py::array::c_style> bias;
  if (!bias_obj.is_none()) {
    bias = checks::array<float>(bias_obj, "bias", 1, "(N,)");
    if (bias.shape(0) != n)
      throw py::value_error("bias must have shape (" + std::to_string(n) + ",); got " + checks::shape_str(bias));
  }
  const GemmAct act = parse_act(act_obj);
  py::array_t<float, py::array::c_style> y;
  if (out_obj.is_none()) {
    y = py::array_t<float, py::array::c_style>({py::ssize_t(m), py::ssize_t(n)});
  } else {
    y = checks::out_array<float>(out_obj, "out", {py::ssize_t(m), py::ssize_t(n)});
  }
  GemmInput in;
  in.a = x.data();
  in.lda = w->k;
  if (xs_obj.is_none()) {
    if (!xzp_obj.is_none()) throw py::value_error("x_zero_point needs x_scale (static quantization)");
    in.kind = GemmInput::f32_dynamic;
  } else {
    in.kind = GemmInput::f32_static;
    const double xs = xs_obj.cast<double>();
    if (!(xs > 0.0) || !std::isfinite(xs))
      throw py::value_error("x_scale must be a finite float > 0; got " + std::string(py::str(xs_obj)));
    in.x_scale = float(xs);
    const std::string dt = xdtype_obj.is_none() ? "int8" : std::string(py::str(xdtype_obj));
    if (dt != "int8" && dt != "uint8")
      throw py::value_error("x_dtype must be 'int8' or 'uint8'; got '" + dt + "'");
    in.x_uint8 = dt == "uint8";
    const int64_t zp = xzp_obj.is_none() ? (in.x_uint8 ? 128 : 0) : xzp_obj.cast<int64_t>();
    if (in.x_uint8 ? (zp < 0 || zp > 255) : (zp < -128 || zp > 127))
      throw py::value_error("x_zero_point must lie in the range of " + dt + "; got " + std::to_string(zp));
    in.x_zero_point = int32_t(zp);
  }
  GemmOutput out;
  out.y = y.mutable_data();
  out.ld = n;
  out.col_scale = ws.data();
  out.bias = bias_obj.is_none() ? nullptr : bias.data();
  out.act = act;
  Status st;
  {
    py::gil_scoped_release nogil;
    st = gemm_s8_run(*w, m, in, out);
  }
  checks::raise_if_bad(st, "x");
  return y;
}

}  // namespace

void bind_gemm(py::module_& m) {
  py::class_<PackedB, std::shared_ptr<PackedB>>(m, "PackedB", "int8 weights in the GEMM's packed layout")
      .def_property_readonly("shape", [](const PackedB& b) { return py::make_tuple(b.n, b.k); })
      .def_property_readonly("nbytes", &PackedB::nbytes)
      .def("unpack", [](const PackedB& b) {
        py::array_t<int8_t> w({py::ssize_t(b.n), py::ssize_t(b.k)});
        unpack_b(b, w.mutable_data());
        return w;
      });
  m.def("gemm_pack", &pack, py::arg("w"));
  m.def("gemm_int8", &gemm_int8, py::arg("a"), py::arg("w"));
  m.def("linear_int8", &linear_int8, py::arg("x"), py::arg("w"), py::arg("w_scale"), py::arg("bias"),
        py::arg("activation"), py::arg("out"), py::arg("x_scale"), py::arg("x_zero_point"), py::arg("x_dtype"));
  m.def("gemm_peak", [](int64_t iters) {
    const GemmOps& ops = active().gemm;
    py::gil_scoped_release nogil;
    const auto t0 = std::chrono::steady_clock::now();
    const int64_t macs = ops.peak(iters);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return std::make_pair(macs, s);
  }, py::arg("iters"));
}

}  // namespace edgepack::bindings
