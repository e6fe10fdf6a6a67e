// int8 convolution bindings: ConvInt8 (packed weights + geometry + per-shape plans) and conv2d_int8.
// Every argument is validated here (TypeError for a dtype, ValueError for a shape or value, each
// naming the argument); the kernels run with the GIL released.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "bindings/checks.h"
#include "kernels/conv_s8/conv_s8.h"

namespace py = pybind11;

namespace edgepack::bindings {
namespace {

using checks::aligned_bytes;
using checks::describe;
using checks::FreeDeleter;
using checks::shape_str;

std::string tuple_str(std::initializer_list<int64_t> v) {
  std::string s = "(";
  size_t i = 0;
  for (int64_t x : v) s += (i++ ? ", " : "") + std::to_string(x);
  return s + ")";
}

// A packed int8 convolution layer.
struct ConvInt8 {
  conv::Geom g;
  conv::Layout l;
  std::unique_ptr<int8_t, FreeDeleter> data;
  std::unique_ptr<int32_t, FreeDeleter> sums;
  std::unique_ptr<conv::Packed> packed;

  int64_t nbytes() const { return l.data_bytes + 4 * l.sum_len; }
  const char* route() const { return l.depthwise ? "depthwise" : l.direct ? "direct" : l.im2row ? "im2row" : "igemm"; }
  // (OH, OW) for an H x W input; ValueError naming x when the kernel does not fit.
  std::array<int64_t, 2> out_hw(int64_t h, int64_t w) const {
    const int64_t oh = conv::out_size(h, g.kh, g.sh, g.dh, g.pt, g.pb);
    const int64_t ow = conv::out_size(w, g.kw, g.sw, g.dw, g.pl, g.pr);
    if (oh < 1 || ow < 1)
      throw py::value_error("x: input " + std::to_string(h) + "x" + std::to_string(w) +
                            " is smaller than the dilated kernel " + std::to_string(g.dh * (g.kh - 1) + 1) + "x" +
                            std::to_string(g.dw * (g.kw - 1) + 1) + " plus padding " +
                            tuple_str({g.pt, g.pl, g.pb, g.pr}) + " (top, left, bottom, right)");
    return {oh, ow};
  }
};

int64_t positive(py::handle v, const char* name, int64_t min) {
  if (!py::isinstance<py::int_>(v) || py::isinstance<py::bool_>(v))
    throw py::type_error(std::string(name) + " must be an int; got " + describe(v));
  const long long x = v.cast<long long>();
  if (x < min || x > (1 << 20))
    throw py::value_error(std::string(name) + " must be an int in [" + std::to_string(min) + ", 1048576]; got " +
                          std::to_string(x));
  return x;
}

std::unique_ptr<ConvInt8> make_conv(py::handle w_obj, py::handle stride, py::handle pads, py::handle dilation,
                                    py::handle groups) {
  auto w = checks::array<int8_t>(w_obj, "w", 4, "(Cout, Cin/groups, KH, KW)");
  auto c = std::make_unique<ConvInt8>();
  conv::Geom& g = c->g;
  g.groups = positive(groups, "groups", 1);
  g.cout = w.shape(0);
  g.cin = w.shape(1) * g.groups;
  g.kh = w.shape(2);
  g.kw = w.shape(3);
  if (g.cout < 1 || w.shape(1) < 1 || g.kh < 1 || g.kw < 1)
    throw py::value_error("w must have shape (Cout, Cin/groups, KH, KW) with every dimension >= 1; got " + shape_str(w));
  if (g.cout % g.groups)
    throw py::value_error("w: Cout = " + std::to_string(g.cout) + " must be a multiple of groups = " +
                          std::to_string(g.groups));
  auto seq = [](py::handle v, const char* name, size_t n) {
    if (!py::isinstance<py::tuple>(v) || py::len(v) != n)
      throw py::type_error(std::string(name) + " must be a tuple of " + std::to_string(n) + " ints; got " + describe(v));
    return py::reinterpret_borrow<py::tuple>(v);
  };
  py::tuple st = seq(stride, "stride", 2), dl = seq(dilation, "dilation", 2), pd = seq(pads, "pads", 4);
  g.sh = positive(st[0], "stride", 1);
  g.sw = positive(st[1], "stride", 1);
  g.dh = positive(dl[0], "dilation", 1);
  g.dw = positive(dl[1], "dilation", 1);
  g.pt = positive(pd[0], "pads", 0);
  g.pl = positive(pd[1], "pads", 0);
  g.pb = positive(pd[2], "pads", 0);
  g.pr = positive(pd[3], "pads", 0);
  c->l = conv::layout(g);
  if (c->l.kdim > (int64_t(1) << 28) || c->l.data_bytes > (int64_t(1) << 34))
    throw py::value_error("w is too large: " + shape_str(w));
  c->data.reset(static_cast<int8_t*>(aligned_bytes(c->l.data_bytes)));
  c->sums.reset(static_cast<int32_t*>(aligned_bytes(4 * c->l.sum_len)));
  Status s;
  {
    py::gil_scoped_release nogil;
    s = conv::pack(g, w.data(), c->data.get(), c->sums.get());
  }
  if (!s.ok()) {
    int64_t i = s.index, idx[4];
    for (int d = 3; d >= 0; --d) {
      idx[d] = i % w.shape(d);
      i /= w.shape(d);
    }
    throw py::value_error("w must hold int8 values in [-127, 127] (symmetric weights; -128 breaks the exactness "
                          "of the AVX2/AVX-512BW paths); found -128 at " + tuple_str({idx[0], idx[1], idx[2], idx[3]}));
  }
  c->packed = std::make_unique<conv::Packed>(g, c->data.get(), c->sums.get());
  return c;
}

py::array unpack(const ConvInt8& c) {
  py::array_t<int8_t> w({static_cast<py::ssize_t>(c.g.cout), static_cast<py::ssize_t>(c.g.cin / c.g.groups),
                         static_cast<py::ssize_t>(c.g.kh), static_cast<py::ssize_t>(c.g.kw)});
  int8_t* wp = w.mutable_data();
  {
    py::gil_scoped_release nogil;
    conv::unpack(c.g, c.data.get(), wp);
  }
  return std::move(w);
}

float finite_float(double v, const char* name, bool positive_only) {
  if (!std::isfinite(v) || (positive_only && !(v > 0)) || std::fabs(v) > 3.4e38)
    throw py::value_error(std::string(name) + " must be a finite float32 number" + (positive_only ? " > 0" : "") +
                          "; got " + std::to_string(v));
  return static_cast<float>(v);
}

// w_scale: a number or float32 [Cout], finite. Returns a pointer to Cout floats.
const float* w_scales(py::handle ws, int64_t n, py::object& keep) {
  thread_local std::vector<float> expanded;
  const std::string want = "(" + std::to_string(n) + ",)";
  if (py::isinstance<py::array>(ws)) {
    py::array a = py::reinterpret_borrow<py::array>(ws);
    if (!checks::is_dtype<float>(a))
      throw py::type_error("w_scale must be float32 of shape " + want + " (Cout) or a number; got " + describe(ws));
    auto arr = checks::array<float>(ws, "w_scale", 1, want.c_str());
    checks::require_shape(arr, "w_scale", {n}, (want + " (Cout)").c_str());
    keep = arr;
    const float* p = arr.data();
    for (int64_t i = 0; i < n; ++i)
      if (!std::isfinite(p[i]))
        throw py::value_error("w_scale must be finite; found NaN or Inf at index " + std::to_string(i));
    return p;
  }
  if (py::isinstance<py::bool_>(ws) || !(py::isinstance<py::float_>(ws) || py::isinstance<py::int_>(ws)))
    throw py::type_error("w_scale must be a number or float32 numpy.ndarray of shape " + want + "; got " + describe(ws));
  const float v = finite_float(ws.cast<double>(), "w_scale", false);
  if (static_cast<int64_t>(expanded.size()) < n) expanded.resize(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) expanded[i] = v;
  return expanded.data();
}

// Arguments after x and the layer, already parsed by the Python wrapper (activation code and
// parameters, output kind, zero points as ints in their dtype's range).
py::array conv2d(py::handle x_obj, py::handle c_obj, py::handle ws_obj, py::handle bias_obj, double x_scale, int32_t x_zp,
                 int act, double p0, double p1, py::handle res_obj, int out_kind, double out_scale, int32_t out_zp,
                 py::handle out_obj) {
  if (!py::isinstance<ConvInt8>(c_obj))
    throw py::type_error("packed must be a ConvInt8 (edgepack.kernels.pack_conv_weights); got " + describe(c_obj));
  const ConvInt8& c = c_obj.cast<const ConvInt8&>();
  const conv::Geom& g = c.g;
  if (!py::isinstance<py::array>(x_obj))
    throw py::type_error("x must be a numpy.ndarray of uint8 or int8 of shape (N, H, W, Cin); got " + describe(x_obj));
  py::array xa = py::reinterpret_borrow<py::array>(x_obj);
  const bool x_u8 = checks::is_dtype<uint8_t>(xa);
  if (!x_u8 && !checks::is_dtype<int8_t>(xa))
    throw py::type_error("x must be uint8 or int8 (quantized activations) of shape (N, H, W, Cin); got " + describe(x_obj));
  py::array x = x_u8 ? py::array(checks::array<uint8_t>(x_obj, "x", 4, "(N, H, W, Cin)"))
                     : py::array(checks::array<int8_t>(x_obj, "x", 4, "(N, H, W, Cin)"));
  const int64_t n = x.shape(0), h = x.shape(1), w = x.shape(2);
  if (x.shape(3) != g.cin)
    throw py::value_error("x must have shape (N, H, W, Cin) with Cin = " + std::to_string(g.cin) +
                          " (the layer's input channels); got " + shape_str(x));
  if (x_u8 ? (x_zp < 0 || x_zp > 255) : (x_zp < -128 || x_zp > 127))
    throw py::value_error("x_zero_point must be in the range of x's dtype; got " + std::to_string(x_zp));
  if (h * w * g.cin >= (int64_t(1) << 31) / 2)
    throw py::value_error("x: one image of " + std::to_string(h * w * g.cin) + " bytes is too large (limit 2**30)");
  const auto ohw = c.out_hw(h, w);
  const int64_t oh = ohw[0], ow = ohw[1];
  const std::vector<py::ssize_t> oshape = {n, oh, ow, g.cout};
  const std::string oshape_s = tuple_str({n, oh, ow, g.cout}) + " (N, OH, OW, Cout)";
  ConvEpi e;
  e.out = static_cast<conv::Out>(out_kind);
  e.ldy = g.cout;
  py::object keep_s, keep_b, keep_r;
  if (e.out != conv::Out::i32) {
    e.x_scale = finite_float(x_scale, "x_scale", true);
    e.w_scale = w_scales(ws_obj, g.cout, keep_s);
    if (!bias_obj.is_none()) {
      const std::string want = "(" + std::to_string(g.cout) + ",) (Cout)";
      auto b = checks::array<float>(bias_obj, "bias", 1, want.c_str());
      checks::require_shape(b, "bias", {g.cout}, want.c_str());
      keep_b = b;
      e.bias = b.data();
    }
    if (!res_obj.is_none()) {
      auto r = checks::array<float>(res_obj, "residual", 4, oshape_s.c_str());
      checks::require_shape(r, "residual", {n, oh, ow, g.cout}, oshape_s.c_str());
      keep_r = r;
      e.residual = r.data();
    }
    if (act < 0 || act > static_cast<int>(conv::Act::silu)) throw py::value_error("activation code out of range");
    e.act = static_cast<conv::Act>(act);
    e.p0 = finite_float(p0, "act_params", false);
    e.p1 = finite_float(p1, "act_params", false);
    if (e.act == conv::Act::clip && !(e.p0 <= e.p1))
      throw py::value_error("act_params for clip must be (lo, hi) with lo <= hi; got (" + std::to_string(p0) + ", " +
                            std::to_string(p1) + ")");
  }
  py::array y;
  if (e.out == conv::Out::f32) {
    y = checks::out_or_new<float>(out_obj, "out", oshape);
  } else if (e.out == conv::Out::i32) {
    y = checks::out_or_new<int32_t>(out_obj, "out", oshape);
  } else {
    const bool u8 = e.out == conv::Out::u8;
    y = u8 ? py::array(checks::out_or_new<uint8_t>(out_obj, "out", oshape))
           : py::array(checks::out_or_new<int8_t>(out_obj, "out", oshape));
    const float s = finite_float(out_scale, "out_scale", true);
    if (u8 ? (out_zp < 0 || out_zp > 255) : (out_zp < -128 || out_zp > 127))
      throw py::value_error("out_zero_point must be in the range of its dtype; got " + std::to_string(out_zp));
    e.inv_out_scale = 1.0f / s;
    e.out_zp = out_zp;
    e.qlo = static_cast<float>((u8 ? 0 : -128) - out_zp);
    e.qhi = static_cast<float>((u8 ? 255 : 127) - out_zp);
  }
  e.y = y.mutable_data();
  if (e.residual && e.y == static_cast<const void*>(e.residual) && e.out != conv::Out::f32)
    throw py::value_error("out must not share memory with residual");
  const uint8_t* xp = static_cast<const uint8_t*>(x.data());
  {
    py::gil_scoped_release nogil;
    c.packed->run(xp, x_u8, x_zp, n, h, w, e);
  }
  return y;
}

}  // namespace

void bind_conv(py::module_& m) {
  py::class_<ConvInt8>(m, "ConvInt8")
      .def(py::init(&make_conv), py::arg("w"), py::arg("stride"), py::arg("pads"), py::arg("dilation"),
           py::arg("groups"))
      .def_property_readonly("out_channels", [](const ConvInt8& c) { return c.g.cout; })
      .def_property_readonly("in_channels", [](const ConvInt8& c) { return c.g.cin; })
      .def_property_readonly("kernel_size", [](const ConvInt8& c) { return py::make_tuple(c.g.kh, c.g.kw); })
      .def_property_readonly("stride", [](const ConvInt8& c) { return py::make_tuple(c.g.sh, c.g.sw); })
      .def_property_readonly("dilation", [](const ConvInt8& c) { return py::make_tuple(c.g.dh, c.g.dw); })
      .def_property_readonly("pads", [](const ConvInt8& c) { return py::make_tuple(c.g.pt, c.g.pl, c.g.pb, c.g.pr); })
      .def_property_readonly("groups", [](const ConvInt8& c) { return c.g.groups; })
      .def_property_readonly("route", &ConvInt8::route)
      .def_property_readonly("nbytes", &ConvInt8::nbytes)
      .def("unpack", &unpack)
      .def("output_hw", [](const ConvInt8& c, int64_t h, int64_t w) {
        const auto o = c.out_hw(h, w);
        return py::make_tuple(o[0], o[1]);
      }, py::arg("h"), py::arg("w"));
  m.def("conv2d_int8", &conv2d, py::arg("x"), py::arg("packed"), py::arg("w_scale"), py::arg("bias"),
        py::arg("x_scale"), py::arg("x_zp"), py::arg("act"), py::arg("p0"), py::arg("p1"), py::arg("residual"),
        py::arg("out_kind"), py::arg("out_scale"), py::arg("out_zp"), py::arg("out"));
}

}  // namespace edgepack::bindings
