// float32 convolution bindings: ConvWeightsF32 (weights packed once with their geometry, plus a
// small cache of per-input-shape plans) and conv2d_f32. Every argument is validated here, with
// messages naming it; the kernels run with the GIL released.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "bindings/checks.h"
#include "core/dispatch.h"
#include "kernels/conv_f32/conv_f32.h"

namespace py = pybind11;

namespace edgepack::bindings {
namespace {

using checks::describe;
using checks::shape_str;
using convf::Act;
using convf::Geometry;

// Geometry values above this are refused: far beyond any real layer, and it keeps every size
// computation of the driver (padded extents, offsets) far from int64 overflow.
constexpr int64_t kMaxGeom = int64_t(1) << 20;

struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};

// One input shape's plan with its storage.
struct PlanEntry {
  std::vector<int64_t> off;
  std::vector<float> zero;
  convf::ConvPlan plan;
};

struct ConvWeightsF32 {
  Geometry g;
  std::unique_ptr<float, FreeDeleter> packed;
  int64_t n_packed = 0;
  // Plans of the most recent input shapes (first = newest). A call holds its plan through the
  // shared_ptr, so another thread evicting it cannot free it underneath.
  std::mutex mu;
  std::vector<std::shared_ptr<const PlanEntry>> plans;
  static constexpr size_t kMaxPlans = 4;

  std::shared_ptr<const PlanEntry> plan_for(int64_t h, int64_t w) {
    std::lock_guard<std::mutex> lk(mu);
    for (size_t i = 0; i < plans.size(); ++i)
      if (plans[i]->plan.h == h && plans[i]->plan.w == w) {
        auto p = plans[i];
        plans.erase(plans.begin() + static_cast<std::ptrdiff_t>(i));
        plans.insert(plans.begin(), p);
        return p;
      }
    auto e = std::make_shared<PlanEntry>();
    e->off.resize(static_cast<size_t>(convf::plan_offsets(g, h, w)));
    e->zero.resize(static_cast<size_t>(convf::plan_zeros(g, w)));
    convf::build_plan(g, h, w, e->off.data(), e->zero.data(), &e->plan);
    plans.insert(plans.begin(), e);
    if (plans.size() > kMaxPlans) plans.pop_back();
    return e;
  }
  int64_t plan_bytes() {
    std::lock_guard<std::mutex> lk(mu);
    int64_t b = 0;
    for (auto& p : plans) b += int64_t(p->off.size() * 8 + p->zero.size() * 4);
    return b;
  }
};

bool is_int(py::handle o) { return py::isinstance<py::int_>(o) && !py::isinstance<py::bool_>(o); }

// An int, or a tuple/list of `n1` or `n2` ints, each in [lo, kMaxGeom]. Returns the ints (count
// 1, n1 or n2).
std::vector<int64_t> ints(py::handle o, const char* name, const char* what, int n1, int n2, int64_t lo) {
  std::vector<int64_t> v;
  auto bad_type = [&] {
    throw py::type_error(std::string(name) + " must be " + what + "; got " + describe(o));
  };
  auto take = [&](py::handle e) {
    if (!is_int(e)) bad_type();
    const int64_t x = e.cast<py::int_>().cast<long long>();  // pybind raises on overflow: caught below
    v.push_back(x);
  };
  try {
    if (is_int(o)) {
      take(o);
    } else if (py::isinstance<py::tuple>(o) || py::isinstance<py::list>(o)) {
      py::sequence s = py::reinterpret_borrow<py::sequence>(o);
      const size_t len = s.size();
      if (len != size_t(n1) && len != size_t(n2))
        throw py::value_error(std::string(name) + " must be " + what + "; got a sequence of " + std::to_string(len));
      for (size_t i = 0; i < len; ++i) take(s[i]);
    } else {
      bad_type();
    }
  } catch (py::cast_error&) {
    throw py::value_error(std::string(name) + " must be " + what + "; got a value that does not fit int64");
  }
  for (int64_t x : v)
    if (x < lo || x > kMaxGeom)
      throw py::value_error(std::string(name) + " must be " + what + " with values in [" + std::to_string(lo) + ", " +
                            std::to_string(kMaxGeom) + "]; got " + std::string(py::str(o)));
  return v;
}

std::unique_ptr<ConvWeightsF32> make_weights(py::handle w_obj, py::handle stride, py::handle pads,
                                             py::handle dilation, py::handle groups_obj) {
  auto w = checks::array<float>(w_obj, "w", 4, "(C_out, C_in / groups, KH, KW)");
  if (!is_int(groups_obj)) throw py::type_error("groups must be an int; got " + describe(groups_obj));
  const int64_t groups = ints(groups_obj, "groups", "an int >= 1", 1, 1, 1)[0];
  const int64_t cout = w.shape(0), cin_g = w.shape(1), kh = w.shape(2), kw = w.shape(3);
  if (cout < 1 || cin_g < 1 || kh < 1 || kw < 1)
    throw py::value_error("w must have shape (C_out, C_in / groups, KH, KW) with every dimension >= 1; got " +
                          shape_str(w));
  if (kh > kMaxGeom || kw > kMaxGeom)
    throw py::value_error("w: kernel sizes must be <= " + std::to_string(kMaxGeom) + "; got " + shape_str(w));
  if (cout % groups != 0)
    throw py::value_error("w.shape[0] (C_out = " + std::to_string(cout) + ") must be divisible by groups (" +
                          std::to_string(groups) + ")");
  auto st = ints(stride, "stride", "an int or a pair (sh, sw) of ints >= 1", 2, 2, 1);
  auto dl = ints(dilation, "dilation", "an int or a pair (dh, dw) of ints >= 1", 2, 2, 1);
  auto pd = ints(pads, "pads", "an int, a pair (ph, pw) or (top, left, bottom, right), ints >= 0", 2, 4, 0);
  auto ww = std::make_unique<ConvWeightsF32>();
  Geometry& g = ww->g;
  g.cout = cout;
  g.cin = cin_g * groups;
  g.groups = groups;
  g.kh = kh;
  g.kw = kw;
  g.sh = st[0];
  g.sw = st.size() > 1 ? st[1] : st[0];
  g.dh = dl[0];
  g.dw = dl.size() > 1 ? dl[1] : dl[0];
  if (pd.size() == 4) {
    g.pt = pd[0], g.pl = pd[1], g.pb = pd[2], g.pr = pd[3];
  } else {
    g.pt = g.pb = pd[0];
    g.pl = g.pr = pd.size() > 1 ? pd[1] : pd[0];
  }
  const float* wp = w.data();
  const int64_t nw = int64_t(w.size());
  for (int64_t i = 0; i < nw; ++i)
    if (!std::isfinite(wp[i]))
      throw py::value_error("w must be finite; found NaN or Inf at flat index " + std::to_string(i));
  ww->n_packed = convf::packed_floats(g);
  const size_t bytes = static_cast<size_t>((ww->n_packed * 4 + 63) / 64 * 64);
  ww->packed.reset(static_cast<float*>(std::aligned_alloc(64, bytes ? bytes : 64)));
  if (!ww->packed) throw std::bad_alloc();
  {
    py::gil_scoped_release nogil;
    convf::pack(g, wp, ww->packed.get());
  }
  return ww;
}

double number(py::handle o, const char* what) {
  if (py::isinstance<py::bool_>(o) || !(py::isinstance<py::int_>(o) || py::isinstance<py::float_>(o) ||
                                        (py::isinstance<py::array>(o) && py::reinterpret_borrow<py::array>(o).ndim() == 0 &&
                                         py::reinterpret_borrow<py::array>(o).dtype().kind() == 'f')))
    throw py::type_error(std::string("act_params must be ") + what + "; got " + describe(o));
  return py::float_(py::reinterpret_borrow<py::object>(o)).cast<double>();
}

// activation name + act_params -> Epilogue. act_params: None (defaults), a number, or a tuple.
convf::Epilogue epilogue_of(py::handle act, py::handle params) {
  convf::Epilogue e;
  if (act.is_none()) {
    if (!params.is_none()) throw py::value_error("act_params given without an activation");
    return e;
  }
  if (!py::isinstance<py::str>(act))
    throw py::type_error("activation must be None or a str (relu, relu6, clip, hardswish, hardsigmoid, silu, "
                         "leakyrelu, sigmoid, tanh); got " + describe(act));
  const std::string s = act.cast<std::string>();
  struct Spec {
    const char* name;
    Act act;
    int n;  // parameters it takes
    double d0, d1;  // defaults (NaN: required)
    const char* what;
  };
  const double req = std::nan("");
  const Spec specs[] = {
      {"none", Act::none, 0, 0, 0, "no parameters"},
      {"relu", Act::relu, 0, 0, 0, "no parameters"},
      {"relu6", Act::clip, 0, 0, 6, "no parameters"},
      {"clip", Act::clip, 2, req, req, "(lo, hi) with lo <= hi"},
      {"hardswish", Act::hardswish, 0, 0, 0, "no parameters"},
      {"hardsigmoid", Act::hardsigmoid, 2, 0.2, 0.5, "(alpha, beta), default (0.2, 0.5)"},
      {"silu", Act::silu, 0, 0, 0, "no parameters"},
      {"leakyrelu", Act::leakyrelu, 1, 0.01, 0, "alpha or (alpha,), default 0.01"},
      {"sigmoid", Act::sigmoid, 0, 0, 0, "no parameters"},
      {"tanh", Act::tanh, 0, 0, 0, "no parameters"},
  };
  const Spec* sp = nullptr;
  for (const Spec& c : specs)
    if (s == c.name) sp = &c;
  if (!sp)
    throw py::value_error("activation must be None, 'relu', 'relu6', 'clip', 'hardswish', 'hardsigmoid', 'silu', "
                          "'leakyrelu', 'sigmoid' or 'tanh'; got '" + s + "'");
  e.act = sp->act;
  double v[2] = {sp->d0, sp->d1};
  if (!params.is_none()) {
    const std::string what = std::string(sp->what) + " for activation '" + s + "'";
    if (sp->n == 0) throw py::value_error("act_params must be None (" + what + "); got " + describe(params));
    std::vector<double> got;
    if (py::isinstance<py::tuple>(params) || py::isinstance<py::list>(params)) {
      for (auto item : py::reinterpret_borrow<py::sequence>(params)) got.push_back(number(item, what.c_str()));
    } else {
      got.push_back(number(params, what.c_str()));
    }
    if (int(got.size()) != sp->n)
      throw py::value_error("act_params must be " + what + "; got " + std::to_string(got.size()) + " value(s)");
    for (int i = 0; i < sp->n; ++i) v[i] = got[size_t(i)];
  } else if (std::isnan(v[0])) {
    throw py::value_error("activation '" + s + "' needs act_params=" + sp->what);
  }
  for (int i = 0; i < sp->n; ++i)
    if (std::isnan(v[i]) || (sp->act != Act::clip && !std::isfinite(v[i])))
      throw py::value_error("act_params must be " + std::string(sp->what) + " for activation '" + s + "', finite" +
                            (sp->act == Act::clip ? " or +-inf" : "") + "; got " + std::string(py::str(params)));
  if (sp->act == Act::clip && !(v[0] <= v[1]))
    throw py::value_error("act_params for 'clip' must have lo <= hi; got (" + std::to_string(v[0]) + ", " +
                          std::to_string(v[1]) + ")");
  e.p0 = static_cast<float>(v[0]);
  e.p1 = static_cast<float>(v[1]);
  return e;
}

// A new C-contiguous float32 array whose data starts on a 64-byte boundary. numpy aligns large
// arrays to 16 bytes only; a zmm store or load at 16 mod 64 splits across two cache lines, which
// measured 2-4x slower on the memory-bound depthwise layers. One output's alignment becomes the
// next layer's input alignment, so a model run through conv2d_f32 stays aligned.
py::array_t<float, py::array::c_style> aligned_new(const std::vector<py::ssize_t>& shape) {
  py::ssize_t total = 1;
  for (py::ssize_t d : shape) total *= d;
  py::array_t<float> buf(total + 16);
  const std::uintptr_t addr = reinterpret_cast<std::uintptr_t>(buf.data());
  const py::ssize_t skip = static_cast<py::ssize_t>(((64 - addr % 64) % 64) / sizeof(float));
  return py::array_t<float, py::array::c_style>(shape, buf.mutable_data() + skip, buf);
}

bool overlaps(const py::array& a, const py::array& b) {
  const char* a0 = static_cast<const char*>(a.data());
  const char* b0 = static_cast<const char*>(b.data());
  const std::uintptr_t a_lo = reinterpret_cast<std::uintptr_t>(a0), b_lo = reinterpret_cast<std::uintptr_t>(b0);
  const std::uintptr_t a_hi = a_lo + static_cast<std::uintptr_t>(a.nbytes());
  const std::uintptr_t b_hi = b_lo + static_cast<std::uintptr_t>(b.nbytes());
  return a.nbytes() > 0 && b.nbytes() > 0 && a_lo < b_hi && b_lo < a_hi;
}

std::string geometry_str(const Geometry& g) {
  auto s = [](int64_t v) { return std::to_string(v); };
  return "kernel " + s(g.kh) + "x" + s(g.kw) + ", stride (" + s(g.sh) + ", " + s(g.sw) + "), dilation (" + s(g.dh) +
         ", " + s(g.dw) + "), pads (" + s(g.pt) + ", " + s(g.pl) + ", " + s(g.pb) + ", " + s(g.pr) + ")";
}

py::array conv2d_f32(py::handle x_obj, py::handle w_obj, py::handle bias_obj, py::handle act_obj,
                     py::handle params_obj, py::handle res_obj, py::handle out_obj) {
  if (!py::isinstance<ConvWeightsF32>(w_obj))
    throw py::type_error("weights must be a ConvWeightsF32 (edgepack.kernels.pack_conv_weights_f32); got " +
                         describe(w_obj));
  ConvWeightsF32& cw = w_obj.cast<ConvWeightsF32&>();
  const Geometry& g = cw.g;
  auto x = checks::array<float>(x_obj, "x", 4, "(N, H, W, C) (NHWC)");
  const int64_t n = x.shape(0), h = x.shape(1), w = x.shape(2), c = x.shape(3);
  if (c != g.cin)
    throw py::value_error("x must have shape (N, H, W, C) with C = " + std::to_string(g.cin) +
                          " (the weights' input channels); got " + shape_str(x));
  if (h < 1 || w < 1) throw py::value_error("x must have H >= 1 and W >= 1; got " + shape_str(x));
  const int64_t oh = g.out_h(h), ow = g.out_w(w);
  if (oh < 1 || ow < 1)
    throw py::value_error("x of shape " + shape_str(x) + " is too small for " + geometry_str(g) +
                          ": the dilated kernel does not fit the padded input");
  int64_t total = 0;
  if (__builtin_mul_overflow(n, oh, &total) || __builtin_mul_overflow(total, ow, &total) ||
      __builtin_mul_overflow(total, g.cout, &total) || total > (int64_t(1) << 40) ||
      __builtin_mul_overflow(oh * ow, g.taps(), &total) || total > (int64_t(1) << 36))
    throw py::value_error("x of shape " + shape_str(x) + " with " + geometry_str(g) + " gives an output of " +
                          std::to_string(n) + " x " + std::to_string(oh) + " x " + std::to_string(ow) + " x " +
                          std::to_string(g.cout) + ": too large");
  const std::vector<py::ssize_t> oshape = {n, oh, ow, g.cout};
  const std::string oshape_s = "(" + std::to_string(n) + ", " + std::to_string(oh) + ", " + std::to_string(ow) + ", " +
                               std::to_string(g.cout) + ")";
  py::array_t<float, py::array::c_style> bias, res;
  const float* bp = nullptr;
  const float* rp = nullptr;
  if (!bias_obj.is_none()) {
    const std::string want = "(" + std::to_string(g.cout) + ",)";
    bias = checks::array<float>(bias_obj, "bias", 1, want.c_str());
    checks::require_shape(bias, "bias", {g.cout}, want.c_str());
    bp = bias.data();
  }
  if (!res_obj.is_none()) {
    res = checks::array<float>(res_obj, "residual", 4, "(N, OH, OW, C_out) like the output");
    bool same = true;
    for (int i = 0; i < 4; ++i) same = same && res.shape(i) == oshape[size_t(i)];
    if (!same)
      throw py::value_error("residual must have the output's shape " + oshape_s + "; got " + shape_str(res));
    rp = res.data();
  }
  const convf::Epilogue ep = epilogue_of(act_obj, params_obj);
  auto out = out_obj.is_none() ? aligned_new(oshape) : checks::out_array<float>(out_obj, "out", oshape);
  if (overlaps(out, x)) throw py::value_error("out must not share memory with x");
  if (rp && overlaps(out, res) && out.data() != res.data())
    throw py::value_error("out may be the residual array itself, but must not partly overlap it");
  float* op = out.mutable_data();
  const float* xp = x.data();
  {
    py::gil_scoped_release nogil;
    auto plan = cw.plan_for(h, w);
    convf::run(g, cw.packed.get(), plan->plan, xp, n, bp, rp, ep, op);
  }
  return std::move(out);
}

py::tuple pair(int64_t a, int64_t b) { return py::make_tuple(a, b); }

}  // namespace

void bind_conv_f32(py::module_& m) {
  py::class_<ConvWeightsF32>(m, "ConvWeightsF32")
      .def(py::init(&make_weights), py::arg("w"), py::arg("stride") = 1, py::arg("pads") = 0,
           py::arg("dilation") = 1, py::arg("groups") = 1)
      .def_property_readonly("shape", [](const ConvWeightsF32& c) {
        return py::make_tuple(c.g.cout, c.g.cin_g(), c.g.kh, c.g.kw);
      })
      .def_property_readonly("in_channels", [](const ConvWeightsF32& c) { return c.g.cin; })
      .def_property_readonly("out_channels", [](const ConvWeightsF32& c) { return c.g.cout; })
      .def_property_readonly("groups", [](const ConvWeightsF32& c) { return c.g.groups; })
      .def_property_readonly("kernel_shape", [](const ConvWeightsF32& c) { return pair(c.g.kh, c.g.kw); })
      .def_property_readonly("stride", [](const ConvWeightsF32& c) { return pair(c.g.sh, c.g.sw); })
      .def_property_readonly("dilation", [](const ConvWeightsF32& c) { return pair(c.g.dh, c.g.dw); })
      .def_property_readonly("pads", [](const ConvWeightsF32& c) {
        return py::make_tuple(c.g.pt, c.g.pl, c.g.pb, c.g.pr);
      })
      .def_property_readonly("route", [](const ConvWeightsF32& c) {
        static const char* names[] = {"gemm", "rows", "igemm", "depthwise"};
        return std::string(names[static_cast<int>(c.g.route())]);
      })
      .def_property_readonly("nbytes", [](const ConvWeightsF32& c) { return c.n_packed * 4; })
      .def_property_readonly("plan_nbytes", [](ConvWeightsF32& c) { return c.plan_bytes(); })
      .def("output_hw", [](const ConvWeightsF32& c, int64_t h, int64_t w) {
        if (h < 1 || w < 1 || h > (int64_t(1) << 40) || w > (int64_t(1) << 40))
          throw py::value_error("h and w must be in [1, 2**40]; got (" + std::to_string(h) + ", " +
                                std::to_string(w) + ")");
        return pair(c.g.out_h(h), c.g.out_w(w));
      }, py::arg("h"), py::arg("w"))
      .def("unpack", [](const ConvWeightsF32& c) {
        py::array_t<float> w({static_cast<py::ssize_t>(c.g.cout), static_cast<py::ssize_t>(c.g.cin_g()),
                              static_cast<py::ssize_t>(c.g.kh), static_cast<py::ssize_t>(c.g.kw)});
        float* wp = w.mutable_data();
        {
          py::gil_scoped_release nogil;
          convf::unpack(c.g, c.packed.get(), wp);
        }
        return w;
      });
  m.def("conv2d_f32", &conv2d_f32, py::arg("x"), py::arg("weights"), py::arg("bias") = py::none(),
        py::arg("activation") = py::none(), py::arg("act_params") = py::none(), py::arg("residual") = py::none(),
        py::arg("out") = py::none());
}

}  // namespace edgepack::bindings
