// edgepack._core attention binding: softmax(q k^T) v over packed sequences.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

#include "bindings/checks.h"
#include "core/dispatch.h"
#include "kernels/attn/attn.h"

namespace py = pybind11;

namespace edgepack::bindings {
namespace {

py::array_t<float> attention(py::handle qkv_obj, py::handle offsets_obj, py::handle heads_obj, py::handle out_obj) {
  auto qkv = checks::array<float>(qkv_obj, "qkv", 2, "(N, 3 * D)");
  auto offsets = checks::array<int64_t>(offsets_obj, "offsets", 1, "(sequences + 1,)");
  if (!py::isinstance<py::int_>(heads_obj) || py::isinstance<py::bool_>(heads_obj))
    throw py::type_error("num_heads must be an int; got " + checks::describe(heads_obj));
  const int64_t heads = heads_obj.cast<int64_t>();
  const int64_t n = qkv.shape(0), d3 = qkv.shape(1);
  if (heads < 1) throw py::value_error("num_heads must be >= 1; got " + std::to_string(heads));
  if (d3 % 3 != 0 || (d3 / 3) % heads != 0)
    throw py::value_error("qkv must have 3 * D columns with D divisible by num_heads (" + std::to_string(heads) +
                          "); got shape " + checks::shape_str(qkv));
  const int64_t d = d3 / 3;
  const int64_t ns = offsets.shape(0) - 1;
  const int64_t* off = offsets.data();
  if (ns < 0 || off[0] != 0 || off[ns] != n)
    throw py::value_error("offsets must start at 0 and end at N (" + std::to_string(n) + "); got " +
                          checks::shape_str(offsets) + " array");
  for (int64_t s = 0; s < ns; ++s)
    if (off[s + 1] < off[s])
      throw py::value_error("offsets must be non-decreasing; offsets[" + std::to_string(s + 1) + "] = " +
                            std::to_string(off[s + 1]) + " < " + std::to_string(off[s]));
  auto out = checks::out_or_new<float>(out_obj, "out", {static_cast<py::ssize_t>(n), static_cast<py::ssize_t>(d)});
  const float* q = qkv.data();
  float* o = out.mutable_data();
  Status st;
  {
    py::gil_scoped_release nogil;
    st = attn::attention(q, n, d, heads, off, ns, o);
  }
  checks::raise_if_bad(st, "qkv");
  return out;
}

}  // namespace

void bind_attn(py::module_& m) {
  m.def("attention", &attention, py::arg("qkv"), py::arg("offsets"), py::arg("num_heads"),
        py::arg("out") = py::none());
  m.def("attention_vectorized", []() { return active().attn.vectorized; });
}

}  // namespace edgepack::bindings
