// quantize / dequantize / min-max / quantize_rows bindings. The Python wrapper
// (python/edgepack/kernels/_quantize.py) turns Python scalars into arrays (scale float32 0-D or 1-D,
// zero point int32 of the same shape); everything is checked again here, so calling _core directly
// with bad input raises too. Strided x is copied once to C order (checks::array). GIL released.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cmath>
#include <string>
#include <vector>

#include "bindings/checks.h"
#include "core/dispatch.h"
#include "kernels/quantize/quantize.h"

namespace py = pybind11;

namespace edgepack::bindings {
namespace {

using checks::describe;
using checks::shape_str;

// [outer, channels, inner] view of `a` for a per-channel axis (or per-tensor: axis < 0).
struct View {
  int64_t outer = 1, channels = 1, inner = 1;
};

// axis: None or an int in [-ndim, ndim). Returns -1 for None.
int normalize_axis(py::handle axis_obj, int ndim) {
  if (axis_obj.is_none()) return -1;
  if (!py::isinstance<py::int_>(axis_obj) || py::isinstance<py::bool_>(axis_obj))
    throw py::type_error("axis must be None or an int; got " + describe(axis_obj));
  long long a;
  try {
    a = axis_obj.cast<long long>();
  } catch (const py::cast_error&) {
    throw py::value_error("axis is out of range for x with " + std::to_string(ndim) + " dimension(s)");
  }
  if (a < -ndim || a >= ndim)
    throw py::value_error("axis " + std::to_string(a) + " is out of range for x with " + std::to_string(ndim) +
                          " dimension(s) (valid: " + std::to_string(-ndim) + " .. " + std::to_string(ndim - 1) + ")");
  return static_cast<int>(a < 0 ? a + ndim : a);
}

View view_of(const py::array& x, int axis, bool per_channel) {
  View v;
  int64_t total = 1;
  for (py::ssize_t i = 0; i < x.ndim(); ++i) total *= x.shape(i);
  if (!per_channel) {
    v.inner = total;
    return v;
  }
  for (int i = 0; i < axis; ++i) v.outer *= x.shape(i);
  v.channels = x.shape(axis);
  for (py::ssize_t i = axis + 1; i < x.ndim(); ++i) v.inner *= x.shape(i);
  return v;
}

// Scale and zero point as the kernels take them, validated against x and the axis.
struct Params {
  py::array_t<float, py::array::c_style> scale;
  std::vector<int32_t> zp;
  bool per_channel = false;
};

Params params(py::handle scale_obj, py::handle zp_obj, int axis, const py::array& x, bool u8) {
  Params p;
  p.scale = checks::array<float>(scale_obj, "scale");
  if (p.scale.ndim() > 1)
    throw py::value_error("scale must be a scalar or 1-D (one per channel along axis); got shape " + shape_str(p.scale));
  const bool vec = p.scale.ndim() == 1 && !(axis < 0 && p.scale.shape(0) == 1);
  if (vec && axis < 0)
    throw py::value_error("scale must be a scalar when axis is None (per-tensor); got shape " + shape_str(p.scale) +
                          " (pass axis= for per-channel scales)");
  p.per_channel = vec;
  const int64_t n = p.scale.size();
  if (vec && n != x.shape(axis))
    throw py::value_error("scale must have x.shape[axis] = " + std::to_string(x.shape(axis)) + " entries (axis " +
                          std::to_string(axis) + " of x " + shape_str(x) + "); got shape " + shape_str(p.scale));
  const float* s = p.scale.data();
  for (int64_t i = 0; i < n; ++i)
    if (!(std::isfinite(s[i]) && s[i] > 0.0f))
      throw py::value_error("scale must be finite and > 0 (as float32); got " + std::to_string(s[i]) +
                            (n > 1 ? " at index " + std::to_string(i) : std::string()));
  p.zp.assign(static_cast<size_t>(n), 0);
  if (!zp_obj.is_none()) {
    auto z = checks::array<int32_t>(zp_obj, "zero_point");
    if (!(z.size() == n && z.ndim() <= 1) && !(z.size() == 1 && z.ndim() == 0))
      throw py::value_error("zero_point must have the shape of scale " + shape_str(p.scale) + "; got " + shape_str(z));
    const int32_t lo = u8 ? 0 : -128, hi = u8 ? 255 : 127;
    for (int64_t i = 0; i < n; ++i) {
      const int32_t v = z.data()[z.size() == 1 ? 0 : i];
      if (v < lo || v > hi)
        throw py::value_error("zero_point must be in [" + std::to_string(lo) + ", " + std::to_string(hi) + "] for " +
                              (u8 ? "uint8" : "int8") + "; got " + std::to_string(v));
      p.zp[static_cast<size_t>(i)] = v;
    }
  }
  return p;
}

std::vector<py::ssize_t> shape_of(const py::array& a) {
  return std::vector<py::ssize_t>(a.shape(), a.shape() + a.ndim());
}

py::array quantize(py::handle x_obj, py::handle scale_obj, py::handle zp_obj, py::handle axis_obj, bool u8,
                   py::handle out_obj) {
  auto x = checks::array<float>(x_obj, "x");
  const int axis = normalize_axis(axis_obj, static_cast<int>(x.ndim()));
  Params p = params(scale_obj, zp_obj, axis, x, u8);
  const View v = view_of(x, axis, p.per_channel);
  py::array out = u8 ? py::array(checks::out_or_new<uint8_t>(out_obj, "out", shape_of(x)))
                     : py::array(checks::out_or_new<int8_t>(out_obj, "out", shape_of(x)));
  uint8_t* op = static_cast<uint8_t*>(out.mutable_data());
  Status st;
  {
    py::gil_scoped_release nogil;
    st = quant::quantize(x.data(), v.outer, v.channels, v.inner, p.scale.data(), p.zp.data(), u8, op);
  }
  checks::raise_if_bad(st, "x");
  return out;
}

py::array dequantize(py::handle q_obj, py::handle scale_obj, py::handle zp_obj, py::handle axis_obj,
                     py::handle out_obj) {
  if (!py::isinstance<py::array>(q_obj))
    throw py::type_error("q must be a numpy.ndarray of int8 or uint8; got " + describe(q_obj));
  py::array qa = py::reinterpret_borrow<py::array>(q_obj);
  const bool u8 = checks::is_dtype<uint8_t>(qa);
  if (!u8 && !checks::is_dtype<int8_t>(qa))
    throw py::type_error("q must be int8 or uint8; got " + describe(q_obj));
  py::array q = u8 ? py::array(checks::array<uint8_t>(q_obj, "q")) : py::array(checks::array<int8_t>(q_obj, "q"));
  const int axis = normalize_axis(axis_obj, static_cast<int>(q.ndim()));
  Params p = params(scale_obj, zp_obj, axis, q, u8);
  const View v = view_of(q, axis, p.per_channel);
  auto out = checks::out_or_new<float>(out_obj, "out", shape_of(q));
  float* op = out.mutable_data();
  const uint8_t* qp = static_cast<const uint8_t*>(q.data());
  {
    py::gil_scoped_release nogil;
    quant::dequantize(qp, v.outer, v.channels, v.inner, p.scale.data(), p.zp.data(), u8, op);
  }
  return std::move(out);
}

// (min, max) float32 arrays: shape (1,) for axis None, (x.shape[axis],) otherwise.
py::tuple minmax(py::handle x_obj, py::handle axis_obj) {
  auto x = checks::array<float>(x_obj, "x");
  const int axis = normalize_axis(axis_obj, static_cast<int>(x.ndim()));
  const View v = view_of(x, axis, axis >= 0);
  py::array_t<float> mn(v.channels), mx(v.channels);
  float* a = mn.mutable_data();
  float* b = mx.mutable_data();
  Status st;
  {
    py::gil_scoped_release nogil;
    st = quant::minmax(x.data(), v.outer, v.channels, v.inner, a, b);
  }
  checks::raise_if_bad(st, "x");
  return py::make_tuple(mn, mx);
}

py::tuple quantize_rows(py::handle x_obj) {
  auto x = checks::array<float>(x_obj, "x", 2, "(M, K)");
  const int64_t m = x.shape(0), k = x.shape(1);
  py::array_t<int8_t> q({static_cast<py::ssize_t>(m), static_cast<py::ssize_t>(k)});
  py::array_t<float> s(static_cast<py::ssize_t>(m));
  int8_t* qp = q.mutable_data();
  float* sp = s.mutable_data();
  Status st;
  {
    py::gil_scoped_release nogil;
    st = quant::quantize_rows(x.data(), m, k, qp, sp);
  }
  checks::raise_if_bad(st, "x");
  return py::make_tuple(q, s);
}

}  // namespace

void bind_quantize(py::module_& m) {
  m.def("quantize", &quantize, py::arg("x"), py::arg("scale"), py::arg("zero_point"), py::arg("axis"), py::arg("u8"),
        py::arg("out") = py::none());
  m.def("dequantize", &dequantize, py::arg("q"), py::arg("scale"), py::arg("zero_point"), py::arg("axis"),
        py::arg("out") = py::none());
  m.def("minmax", &minmax, py::arg("x"), py::arg("axis"));
  m.def("quantize_rows", &quantize_rows, py::arg("x"));
}

}  // namespace edgepack::bindings
