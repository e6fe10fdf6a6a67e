// Sparse weights and spmm. The packed matrix lives in a C++ object that copies and validates its
// arrays once (O(nnz)), so each spmm call checks only shapes and never trusts mutable user memory.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cmath>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "bindings/checks.h"
#include "core/dispatch.h"
#include "kernels/spmm/driver.h"

namespace py = pybind11;

namespace edgepack::bindings {
namespace {

struct SparseMatrix {
  SpmmMatrix view;
  std::string format;  // "csr" or "2:4"
  std::vector<int64_t> row_ptr;
  std::vector<uint16_t> col;
  std::vector<float> val_f32;
  std::vector<int8_t> val_s8;
  std::vector<uint8_t> meta;
  std::vector<float> scale;
  SpmmSellStorage sell;  // derived, not saved: the small-M layout (built on first use)
  SpmmSellStorage slide;  // derived, not saved: the float32 M <= 2 sliding-windows layout
  int sell_rejected_rows = 0, sell_rejected_win = 0, sell_rejected_slots = 0;
  bool sell_rejected_nm24 = false, sell_rejected_sliding = false;  // geometry found not worth keeping

  int64_t nbytes() const {
    return int64_t(row_ptr.size() * 8 + col.size() * 2 + val_f32.size() * 4 + val_s8.size() +
                   meta.size() + scale.size() * 4);
  }
};

template <class T>
std::vector<T> copy_of(const py::array_t<T, py::array::c_style>& a) {
  return std::vector<T>(a.data(), a.data() + a.size());
}

template <class T>
py::array_t<T> to_numpy(const std::vector<T>& v, std::vector<py::ssize_t> shape) {
  py::array_t<T> a(shape);
  if (!v.empty()) std::memcpy(a.mutable_data(), v.data(), v.size() * sizeof(T));
  return a;
}

std::unique_ptr<SparseMatrix> make_matrix(const std::string& format, int64_t n, int64_t k, py::handle values,
                                          py::handle row_ptr, py::handle col, py::handle meta,
                                          py::handle scale) {
  if (n < 0 || k < 0)
    throw py::value_error("shape must be (N, K) with N, K >= 0; got (" + std::to_string(n) + ", " +
                          std::to_string(k) + ")");
  auto sm = std::make_unique<SparseMatrix>();
  sm->format = format;
  SpmmMatrix& v = sm->view;
  v.n = n;
  v.k = k;
  if (!py::isinstance<py::array>(values))
    throw py::type_error("values must be a numpy.ndarray of float32 or int8; got " + checks::describe(values));
  v.int8 = checks::is_dtype<int8_t>(py::reinterpret_borrow<py::array>(values));

  if (format == "csr") {
    v.format = SpmmFormat::csr;
    if (k > 65536)
      throw py::value_error("the unstructured format stores uint16 column indices, so K must be <= 65536; got K = " +
                            std::to_string(k));
    auto rp = checks::array<int64_t>(row_ptr, "row_ptr", 1, "(N + 1,)");
    checks::require_shape(rp, "row_ptr", {n + 1}, "(N + 1,)");
    auto c = checks::array<uint16_t>(col, "col", 1, "(nnz,)");
    const int64_t nnz = int64_t(c.size());
    const int64_t* r = rp.data();
    if (r[0] != 0) throw py::value_error("row_ptr[0] must be 0; got " + std::to_string(r[0]));
    if (r[n] != nnz)
      throw py::value_error("row_ptr[N] must equal len(col) = " + std::to_string(nnz) + "; got " +
                            std::to_string(r[n]));
    const uint16_t* cc = c.data();
    for (int64_t i = 0; i < n; ++i) {
      if (r[i + 1] < r[i])
        throw py::value_error("row_ptr must be non-decreasing; row_ptr[" + std::to_string(i + 1) + "] < row_ptr[" +
                              std::to_string(i) + "]");
      for (int64_t p = r[i]; p < r[i + 1]; ++p) {
        if (cc[p] >= k)
          throw py::value_error("col[" + std::to_string(p) + "] = " + std::to_string(cc[p]) +
                                " is out of range for K = " + std::to_string(k));
        if (p > r[i] && cc[p] <= cc[p - 1])
          throw py::value_error("col must be strictly increasing within each row; row " + std::to_string(i) +
                                " breaks it at col[" + std::to_string(p) + "]");
      }
    }
    sm->row_ptr = copy_of(rp);
    sm->col = copy_of(c);
    v.nnz = nnz;
    if (v.int8) {
      auto a = checks::array<int8_t>(values, "values", 1, "(nnz,)");
      checks::require_shape(a, "values", {nnz}, "(nnz,) matching col");
      sm->val_s8 = copy_of(a);
    } else {
      auto a = checks::array<float>(values, "values", 1, "(nnz,)");
      checks::require_shape(a, "values", {nnz}, "(nnz,) matching col");
      sm->val_f32 = copy_of(a);
    }
  } else if (format == "2:4") {
    v.format = SpmmFormat::nm24;
    if (k % 4 != 0)
      throw py::value_error("the 2:4 format needs K to be a multiple of 4; got K = " + std::to_string(k));
    const int64_t groups = k / 4, ms = (groups + 1) / 2;
    auto m = checks::array<uint8_t>(meta, "meta", 2, "(N, (K/4 + 1) // 2)");
    checks::require_shape(m, "meta", {n, ms}, "(N, (K/4 + 1) // 2)");
    const uint8_t* mm = m.data();
    for (int64_t i = 0; i < n; ++i)
      for (int64_t g = 0; g < groups; ++g) {
        const unsigned b = (mm[i * ms + g / 2] >> ((g & 1) * 4)) & 15u;
        if ((b & 3u) >= (b >> 2))
          throw py::value_error("meta: row " + std::to_string(i) + " group " + std::to_string(g) +
                                " must hold two distinct increasing 2-bit positions");
      }
    if (groups % 2 == 1)
      for (int64_t i = 0; i < n; ++i)
        if (mm[i * ms + ms - 1] >> 4)
          throw py::value_error("meta: the unused high nibble of row " + std::to_string(i) + " must be 0");
    sm->meta = copy_of(m);
    v.nnz = n * (k / 2);
    if (v.int8) {
      auto a = checks::array<int8_t>(values, "values", 2, "(N, K/2)");
      checks::require_shape(a, "values", {n, k / 2}, "(N, K/2)");
      sm->val_s8 = copy_of(a);
    } else {
      auto a = checks::array<float>(values, "values", 2, "(N, K/2)");
      checks::require_shape(a, "values", {n, k / 2}, "(N, K/2)");
      sm->val_f32 = copy_of(a);
    }
  } else {
    throw py::value_error("format must be 'csr' or '2:4'; got '" + format + "'");
  }

  if (v.int8) {
    if (scale.is_none()) throw py::value_error("int8 values need a per-row scale (float32 of shape (N,))");
    auto s = checks::array<float>(scale, "scale", 1, "(N,)");
    checks::require_shape(s, "scale", {n}, "(N,)");
    for (int64_t i = 0; i < n; ++i)
      if (!std::isfinite(s.data()[i]))
        throw py::value_error("scale must be finite; found NaN or Inf at index " + std::to_string(i));
    sm->scale = copy_of(s);
  } else if (!scale.is_none()) {
    throw py::value_error("scale applies only to int8 values; got float32 values with a scale");
  }
  v.row_ptr = sm->row_ptr.empty() ? nullptr : sm->row_ptr.data();
  v.col = sm->col.data();
  v.val = v.int8 ? static_cast<const void*>(sm->val_s8.data()) : static_cast<const void*>(sm->val_f32.data());
  v.meta = sm->meta.data();
  v.scale = sm->scale.data();
  return sm;
}

SpmmAct parse_act(py::handle a) {
  if (a.is_none()) return SpmmAct::none;
  if (!py::isinstance<py::str>(a))
    throw py::type_error("activation must be None or a str; got " + checks::describe(a));
  const std::string s = a.cast<std::string>();
  if (s == "relu") return SpmmAct::relu;
  if (s == "gelu") return SpmmAct::gelu;
  if (s == "gelu_tanh") return SpmmAct::gelu_tanh;
  if (s == "silu") return SpmmAct::silu;
  throw py::value_error("activation must be None, 'relu', 'gelu', 'gelu_tanh' or 'silu'; got '" + s + "'");
}

// The matrix view for a call with m activation rows. The small-M layout is derived on the first
// call that can use it (under the GIL), so models that only run large batches never pay its memory.
SpmmMatrix call_view(py::handle w, int64_t m) {
  if (!py::isinstance<SparseMatrix>(w))
    throw py::type_error("w must be a SparseWeights (edgepack.kernels.pack_sparse); got " + checks::describe(w));
  SparseMatrix& sm = w.cast<SparseMatrix&>();
  spmm_prepare_slide(sm.view, sm.slide, m);
  if (spmm_wants_sell(sm.view, m)) {  // absent, or built for another path's geometry
    const SpmmSellGeom g = spmm_sell_geom(sm.view);
    if (sm.sell_rejected_rows != g.rows || sm.sell_rejected_win != g.win || sm.sell_rejected_slots != g.slots ||
        sm.sell_rejected_nm24 != g.nm24 || sm.sell_rejected_sliding != g.sliding) {
      spmm_build_sell(sm.view, sm.sell);
      if (spmm_sell_worthwhile(sm.view, sm.sell)) {
        sm.view.sell = sm.sell.view();
        sm.view.has_sell = true;
      } else {
        sm.sell = SpmmSellStorage();
        sm.view.has_sell = false;
        sm.sell_rejected_rows = g.rows;
        sm.sell_rejected_win = g.win;
        sm.sell_rejected_slots = g.slots;
        sm.sell_rejected_nm24 = g.nm24;
        sm.sell_rejected_sliding = g.sliding;
      }
    }
  }
  return sm.view;  // a copy: a later build never changes what a running call reads
}

}  // namespace

void bind_sparse(py::module_& m) {
  py::class_<SparseMatrix>(m, "_SparseMatrix")
      .def(py::init(&make_matrix), py::arg("format"), py::arg("n"), py::arg("k"), py::arg("values"),
           py::arg("row_ptr") = py::none(), py::arg("col") = py::none(), py::arg("meta") = py::none(),
           py::arg("scale") = py::none())
      .def_property_readonly("format", [](const SparseMatrix& s) { return s.format; })
      .def_property_readonly("n", [](const SparseMatrix& s) { return s.view.n; })
      .def_property_readonly("k", [](const SparseMatrix& s) { return s.view.k; })
      .def_property_readonly("nnz", [](const SparseMatrix& s) { return s.view.nnz; })
      .def_property_readonly("int8", [](const SparseMatrix& s) { return s.view.int8; })
      .def_property_readonly("nbytes", &SparseMatrix::nbytes)
      .def_property_readonly("derived_nbytes", [](const SparseMatrix& s) { return s.sell.nbytes() + s.slide.nbytes(); })
      .def("arrays", [](const SparseMatrix& s) {
        py::dict d;
        const SpmmMatrix& v = s.view;
        if (v.format == SpmmFormat::csr) {
          d["row_ptr"] = to_numpy(s.row_ptr, {v.n + 1});
          d["col"] = to_numpy(s.col, {v.nnz});
          if (v.int8) d["values"] = to_numpy(s.val_s8, {v.nnz});
          else d["values"] = to_numpy(s.val_f32, {v.nnz});
        } else {
          d["meta"] = to_numpy(s.meta, {v.n, (v.k / 4 + 1) / 2});
          if (v.int8) d["values"] = to_numpy(s.val_s8, {v.n, v.k / 2});
          else d["values"] = to_numpy(s.val_f32, {v.n, v.k / 2});
        }
        if (v.int8) d["scale"] = to_numpy(s.scale, {v.n});
        return d;
      });

  m.def("spmm", [](py::handle x, py::handle w, py::handle bias, py::handle activation) {
    if (!py::isinstance<SparseMatrix>(w))
      throw py::type_error("w must be a SparseWeights (edgepack.kernels.pack_sparse); got " + checks::describe(w));
    auto xa = checks::array<float>(x, "x", 2, "(M, K)");
    const SpmmMatrix v = call_view(w, xa.shape(0));
    if (xa.shape(1) != v.k)
      throw py::value_error("x must have shape (M, K) with K = " + std::to_string(v.k) + " (w is " +
                            std::to_string(v.n) + " x " + std::to_string(v.k) + "); got " + checks::shape_str(xa));
    py::array_t<float, py::array::c_style> ba;
    const float* bp = nullptr;
    if (!bias.is_none()) {
      ba = checks::array<float>(bias, "bias", 1, "(N,)");
      checks::require_shape(ba, "bias", {v.n}, "(N,)");
      bp = ba.data();
    }
    const SpmmAct act = parse_act(activation);
    const int64_t mrows = xa.shape(0);
    py::array_t<float> y({py::ssize_t(mrows), py::ssize_t(v.n)});
    float* yp = y.mutable_data();
    const float* xp = xa.data();
    Status st;
    {
      py::gil_scoped_release nogil;
      st = spmm_run(v, xp, mrows, bp, act, yp);
    }
    checks::raise_if_bad(st, "x");
    return y;
  }, py::arg("x"), py::arg("w"), py::arg("bias") = py::none(), py::arg("activation") = py::none());

  m.def("_spmm_acc_s8", [](py::handle xq, py::handle w) {
    auto xa = checks::array<int8_t>(xq, "xq", 2, "(M, K)");
    const SpmmMatrix v = call_view(w, xa.shape(0));
    if (!v.int8) throw py::value_error("w must hold int8 values for _spmm_acc_s8");
    if (xa.shape(1) != v.k)
      throw py::value_error("xq must have shape (M, K) with K = " + std::to_string(v.k) + "; got " +
                            checks::shape_str(xa));
    const int64_t mrows = xa.shape(0);
    py::array_t<int32_t> acc({py::ssize_t(mrows), py::ssize_t(v.n)});
    int32_t* ap = acc.mutable_data();
    const int8_t* xp = xa.data();
    Status st;
    {
      py::gil_scoped_release nogil;
      st = spmm_acc_s8(v, xp, mrows, ap);
    }
    checks::raise_if_bad(st, "xq");
    return acc;
  }, py::arg("xq"), py::arg("w"));
}

}  // namespace edgepack::bindings
