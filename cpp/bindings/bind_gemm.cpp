// int8 GEMM bindings: PackedWeights, gemm_int8, linear_int8 (dynamic and static), peak probe.
// Lean on purpose: validation is a few flag tests, the GIL is released around every kernel and
// nothing is copied unless the input is strided.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "bindings/checks.h"
#include "core/dispatch.h"
#include "kernels/gemm_s8/gemm_s8.h"

namespace py = pybind11;

#if defined(EDGEPACK_AMX_EMULATE)
namespace edgepack::avx512_amx {
void emu_counters(int64_t* configs, int64_t* releases, int64_t* tdps, int64_t* live);
}
#endif

namespace edgepack::bindings {
namespace {

using checks::aligned_bytes;
using checks::describe;
using checks::FreeDeleter;
using checks::shape_str;

// Packed int8 weights, built once per model. Owns 64-byte aligned storage.
struct PackedWeights {
  int64_t n = 0, k = 0, kp = 0, panels = 0;
  std::unique_ptr<int8_t, FreeDeleter> data;
  std::unique_ptr<int32_t, FreeDeleter> colsum;

  PackedB view() const {
    PackedB b;
    b.data = data.get();
    b.colsum = colsum.get();
    b.n = n;
    b.k = k;
    b.kp = kp;
    b.panels = panels;
    return b;
  }
  int64_t nbytes() const { return gemm::packed_data_bytes(n, k) + 4 * gemm::packed_colsum_len(n); }
};

// Packs w (int8 [N, K]); ValueError naming `name` for -128.
std::unique_ptr<PackedWeights> pack_from(py::handle obj, const char* name) {
  auto w = checks::array<int8_t>(obj, name, 2, "(N, K)");
  auto pw = std::make_unique<PackedWeights>();
  pw->n = w.shape(0);
  pw->k = w.shape(1);
  pw->kp = (pw->k + gemm::kKU - 1) / gemm::kKU * gemm::kKU;
  pw->panels = (pw->n + gemm::kNR - 1) / gemm::kNR;
  pw->data.reset(static_cast<int8_t*>(aligned_bytes(gemm::packed_data_bytes(pw->n, pw->k))));
  pw->colsum.reset(static_cast<int32_t*>(aligned_bytes(4 * gemm::packed_colsum_len(pw->n))));
  Status st;
  {
    py::gil_scoped_release nogil;
    st = gemm::pack(w.data(), pw->n, pw->k, pw->k, pw->data.get(), pw->colsum.get());
  }
  if (!st.ok()) {
    const int64_t r = st.index / (pw->k ? pw->k : 1), c = st.index % (pw->k ? pw->k : 1);
    throw py::value_error(std::string(name) +
                          " must hold int8 values in [-127, 127] (symmetric weights; -128 breaks the "
                          "exactness of the AVX2/AVX-512BW paths); found -128 at [" +
                          std::to_string(r) + ", " + std::to_string(c) + "]");
  }
  return pw;
}

// w as a packed view: a PackedWeights as is, a raw int8 [N, K] array packed into `tmp`.
PackedB weights_of(py::handle w, std::unique_ptr<PackedWeights>& tmp) {
  if (py::isinstance<PackedWeights>(w)) return w.cast<const PackedWeights&>().view();
  if (!py::isinstance<py::array>(w))
    throw py::type_error("w must be a PackedWeights (edgepack.kernels.pack_weights) or an int8 "
                         "numpy.ndarray of shape (N, K); got " + describe(w));
  tmp = pack_from(w, "w");
  return tmp->view();
}

gemm::Act parse_act(py::handle act) {
  if (act.is_none()) return gemm::Act::none;
  if (py::isinstance<py::str>(act)) {
    const std::string s = act.cast<std::string>();
    if (s == "relu") return gemm::Act::relu;
    if (s == "gelu") return gemm::Act::gelu;
    if (s == "gelu_tanh") return gemm::Act::gelu_tanh;
    if (s == "silu") return gemm::Act::silu;
    if (s == "none") return gemm::Act::none;
    throw py::value_error("activation must be None, 'relu', 'gelu', 'gelu_tanh' or 'silu'; got '" + s + "'");
  }
  throw py::type_error("activation must be None or a str ('relu', 'gelu', 'gelu_tanh', 'silu'); got " +
                       describe(act));
}

// w_scale: a number (one scale for every output) or float32 [N]. Returns a pointer to N floats.
const float* col_scales(py::handle ws, int64_t n, py::object& keep) {
  thread_local std::vector<float> expanded;
  float v;
  if (py::isinstance<py::array>(ws)) {
    py::array a = py::reinterpret_borrow<py::array>(ws);
    if (!checks::is_dtype<float>(a))
      throw py::type_error("w_scale must be float32 of shape (N,) with N = " + std::to_string(n) +
                           ", or a number; got " + describe(ws));
    if (a.ndim() == 1 && a.shape(0) == n) {
      auto arr = checks::array<float>(ws, "w_scale", 1);
      keep = arr;
      const float* p = arr.data();
      for (int64_t i = 0; i < n; ++i)
        if (!std::isfinite(p[i]))
          throw py::value_error("w_scale must be finite; found NaN or Inf at index " + std::to_string(i));
      return p;
    }
    if (a.ndim() != 0 && a.size() != 1)
      throw py::value_error("w_scale must have shape (N,) with N = " + std::to_string(n) +
                            " (or be a number); got " + shape_str(a));
    v = *static_cast<const float*>(a.data());
  } else if (PyFloat_Check(ws.ptr()) || PyLong_Check(ws.ptr()) || PyNumber_Check(ws.ptr())) {
    v = static_cast<float>(py::float_(py::reinterpret_borrow<py::object>(ws)).cast<double>());
  } else {
    throw py::type_error("w_scale must be a number or float32 numpy.ndarray of shape (N,); got " +
                         describe(ws));
  }
  if (!std::isfinite(v)) throw py::value_error("w_scale must be finite; got " + std::to_string(v));
  if (static_cast<int64_t>(expanded.size()) < n) expanded.resize(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) expanded[i] = v;
  return expanded.data();
}

const float* bias_of(py::handle bias, int64_t n, py::object& keep) {
  if (bias.is_none()) return nullptr;
  auto b = checks::array<float>(bias, "bias", 1, "(N,)");
  if (b.shape(0) != n)
    throw py::value_error("bias must have shape (N,) with N = " + std::to_string(n) + "; got " +
                          shape_str(b));
  keep = b;
  return b.data();
}

// The float output: `out` validated, or a new array.
py::array_t<float, py::array::c_style> float_out(py::handle out, bool one_d, int64_t m, int64_t n) {
  return checks::out_or_new<float>(out, "out", one_d ? std::vector<py::ssize_t>{n} : std::vector<py::ssize_t>{m, n});
}

void check_k(const py::array& a, const char* name, const char* what, int64_t k, int64_t ak) {
  if (ak != k)
    throw py::value_error(std::string(name) + " must have shape " + what + " with K = w.shape[1] = " +
                          std::to_string(k) + "; got " + shape_str(a));
}

py::array gemm_int8(py::handle a_obj, py::handle w_obj, py::handle out) {
  auto a = checks::array<int8_t>(a_obj, "a", 2, "(M, K)");
  std::unique_ptr<PackedWeights> tmp;
  const PackedB b = weights_of(w_obj, tmp);
  check_k(a, "a", "(M, K)", b.k, a.shape(1));
  const int64_t m = a.shape(0);
  auto c = checks::out_or_new<int32_t>(out, "out", {m, b.n});
  int32_t* cp = c.mutable_data();
  const uint8_t* ap = reinterpret_cast<const uint8_t*>(a.data());
  {
    py::gil_scoped_release nogil;
    gemm::gemm_i32(ap, gemm::AKind::s8, 0, m, b.k, b, cp, b.n);
  }
  return std::move(c);
}

py::array linear_int8(py::handle x_obj, py::handle w_obj, py::handle ws_obj, py::handle bias_obj,
                      py::handle act_obj, py::handle out) {
  if (!py::isinstance<py::array>(x_obj))
    throw py::type_error("x must be a numpy.ndarray of float32 of shape (M, K) or (K,); got " + describe(x_obj));
  py::array xa = py::reinterpret_borrow<py::array>(x_obj);
  const bool one_d = xa.ndim() == 1;
  auto x = checks::array<float>(x_obj, "x", one_d ? 1 : 2, "(M, K) or (K,)");
  std::unique_ptr<PackedWeights> tmp;
  const PackedB b = weights_of(w_obj, tmp);
  const int64_t m = one_d ? 1 : x.shape(0);
  check_k(x, "x", "(M, K)", b.k, x.shape(one_d ? 0 : 1));
  py::object keep_s, keep_b;
  const float* ws = col_scales(ws_obj, b.n, keep_s);
  const float* bias = bias_of(bias_obj, b.n, keep_b);
  const gemm::Act act = parse_act(act_obj);
  py::array_t<float, py::array::c_style> y = float_out(out, one_d, m, b.n);
  float* yp = y.mutable_data();
  const float* xp = x.data();
  Status st;
  {
    py::gil_scoped_release nogil;
    st = gemm::linear_dynamic(xp, m, b.k, b, ws, bias, act, yp, b.n);
  }
  checks::raise_if_bad(st, "x");
  return std::move(y);
}

// Static (calibrated) activations: x float32 quantized with (x_scale, zp) of the given kind, or
// x already int8/uint8 of that kind.
py::array linear_int8_static(py::handle x_obj, py::handle w_obj, py::handle ws_obj, py::handle bias_obj,
                             py::handle act_obj, py::handle out, double x_scale, bool u8, int32_t zp) {
  if (!py::isinstance<py::array>(x_obj))
    throw py::type_error("x must be a numpy.ndarray (float32, or " + std::string(u8 ? "uint8" : "int8") +
                         " quantized activations) of shape (M, K) or (K,); got " + describe(x_obj));
  if (!(std::isfinite(x_scale) && x_scale > 0))
    throw py::value_error("x_scale must be a finite number > 0; got " + std::to_string(x_scale));
  py::array xa = py::reinterpret_borrow<py::array>(x_obj);
  const bool one_d = xa.ndim() == 1;
  const gemm::AKind kind = u8 ? gemm::AKind::u8 : gemm::AKind::s8;
  std::unique_ptr<PackedWeights> tmp;
  const PackedB b = weights_of(w_obj, tmp);
  py::object keep_x;
  const uint8_t* ap;
  int64_t m;
  // Static quantization of float input goes to a grow-only per-thread buffer (no allocation
  // per call once warm).
  thread_local std::vector<uint8_t> q;
  if (checks::is_dtype<float>(xa)) {
    auto x = checks::array<float>(x_obj, "x", one_d ? 1 : 2, "(M, K) or (K,)");
    m = one_d ? 1 : x.shape(0);
    check_k(x, "x", "(M, K)", b.k, x.shape(one_d ? 0 : 1));
    if (q.size() < static_cast<size_t>(m * b.k)) q.resize(static_cast<size_t>(m * b.k));
    Status st;
    uint8_t* qp = q.data();
    {
      py::gil_scoped_release nogil;
      st = gemm::quantize_static(x.data(), m, b.k, static_cast<float>(x_scale), kind, zp, qp);
    }
    checks::raise_if_bad(st, "x");
    ap = qp;
  } else {
    if (u8 != checks::is_dtype<uint8_t>(xa) || (!u8 && !checks::is_dtype<int8_t>(xa)))
      throw py::type_error(std::string("x must be float32 or ") + (u8 ? "uint8" : "int8") +
                           " (the dtype of x_zero_point) of shape (M, K); got " + describe(x_obj));
    py::array xq = u8 ? py::array(checks::array<uint8_t>(x_obj, "x", one_d ? 1 : 2, "(M, K) or (K,)"))
                      : py::array(checks::array<int8_t>(x_obj, "x", one_d ? 1 : 2, "(M, K) or (K,)"));
    m = one_d ? 1 : xq.shape(0);
    check_k(xq, "x", "(M, K)", b.k, xq.shape(one_d ? 0 : 1));
    keep_x = xq;
    ap = static_cast<const uint8_t*>(xq.data());
  }
  py::object keep_s, keep_b;
  const float* ws = col_scales(ws_obj, b.n, keep_s);
  const float* bias = bias_of(bias_obj, b.n, keep_b);
  const gemm::Act act = parse_act(act_obj);
  py::array_t<float, py::array::c_style> y = float_out(out, one_d, m, b.n);
  float* yp = y.mutable_data();
  {
    py::gil_scoped_release nogil;
    gemm::linear_static(ap, kind, zp, static_cast<float>(x_scale), m, b.k, b, ws, bias, act, yp, b.n);
  }
  return std::move(y);
}

}  // namespace

void bind_gemm(py::module_& m) {
  py::class_<PackedWeights>(m, "PackedWeights")
      .def(py::init([](py::handle w) { return pack_from(w, "w"); }), py::arg("w"))
      .def_property_readonly("shape", [](const PackedWeights& p) { return py::make_tuple(p.n, p.k); })
      .def_property_readonly("nbytes", &PackedWeights::nbytes)
      .def("unpack", [](const PackedWeights& p) {
        py::array_t<int8_t> w({static_cast<py::ssize_t>(p.n), static_cast<py::ssize_t>(p.k)});
        int8_t* wp = w.mutable_data();
        {
          py::gil_scoped_release nogil;
          gemm::unpack(p.view(), wp);
        }
        return w;
      })
      .def("_column_sums", [](const PackedWeights& p) {
        py::array_t<int32_t> s(static_cast<py::ssize_t>(p.n));
        std::memcpy(s.mutable_data(), p.colsum.get(), static_cast<size_t>(4 * p.n));
        return s;
      });
  m.def("gemm_int8", &gemm_int8, py::arg("a"), py::arg("w"), py::arg("out") = py::none());
  m.def("linear_int8", &linear_int8, py::arg("x"), py::arg("w"), py::arg("w_scale"),
        py::arg("bias") = py::none(), py::arg("activation") = py::none(), py::arg("out") = py::none());
  m.def("linear_int8_static", &linear_int8_static, py::arg("x"), py::arg("w"), py::arg("w_scale"),
        py::arg("bias"), py::arg("activation"), py::arg("out"), py::arg("x_scale"), py::arg("u8"),
        py::arg("zp"));
  m.def("gemm_peak_gops", [](double seconds) {
    const GemmOps& ops = active().gemm;
    py::gil_scoped_release nogil;
    return ops.peak ? ops.peak(seconds) : 0.0;
  }, py::arg("seconds") = 0.2);
  m.def("gemm_a_unsigned", [] { return active().gemm.a_unsigned; });
  // Small-shape route of the active path (avx512_amx: M = 1 and tiny K run on avx512_vnni).
  m.def("gemm_get_route", [] {
    int32_t mm = 0, kk = 0;
    gemm::get_route(&mm, &kk);
    return py::make_tuple(mm, kk);
  });
  m.def("gemm_set_route", [](int64_t min_m, int64_t min_k) {
    if (min_m < -1 || min_k < -1 || min_m > (1 << 30) || min_k > (1 << 30))
      throw py::value_error("min_m and min_k must be -1 (the path's default) or >= 0; got " + std::to_string(min_m) +
                            ", " + std::to_string(min_k));
    gemm::set_route(static_cast<int32_t>(min_m), static_cast<int32_t>(min_k));
  }, py::arg("min_m"), py::arg("min_k"));
  m.def("gemm_routes_small", [](int64_t m_, int64_t k_) { return gemm::routes_small(m_, k_); }, py::arg("m"),
        py::arg("k"));
#if defined(EDGEPACK_AMX_EMULATE)
  // Test build only: counters of the scalar AMX tile model.
  m.def("_amx_emu_counters", [] {
    int64_t c = 0, r = 0, t = 0, l = 0;
    if (isa_available(Isa::avx512_amx)) avx512_amx::emu_counters(&c, &r, &t, &l);
    py::dict d;
    d["configs"] = c;
    d["releases"] = r;
    d["tdps"] = t;
    d["live"] = l;
    return d;
  });
#endif
}

}  // namespace edgepack::bindings
