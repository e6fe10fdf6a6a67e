// The one place where Python input is validated. Every binding takes py::handle and calls these
// helpers, which raise TypeError for a non-array or a wrong dtype (never a silent cast) and
// ValueError for a wrong rank, shape or value, with messages that name the argument, what was
// expected and what came. A strided input gets one documented contiguous copy.
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <cstdlib>
#include <initializer_list>
#include <new>
#include <string>
#include <vector>

#include "core/status.h"

namespace edgepack::checks {
namespace py = pybind11;

template <class T> struct DType;
template <> struct DType<float> { static constexpr const char* name = "float32"; };
template <> struct DType<double> { static constexpr const char* name = "float64"; };
template <> struct DType<int8_t> { static constexpr const char* name = "int8"; };
template <> struct DType<uint8_t> { static constexpr const char* name = "uint8"; };
template <> struct DType<int16_t> { static constexpr const char* name = "int16"; };
template <> struct DType<uint16_t> { static constexpr const char* name = "uint16"; };
template <> struct DType<int32_t> { static constexpr const char* name = "int32"; };
template <> struct DType<int64_t> { static constexpr const char* name = "int64"; };

inline std::string shape_str(const py::array& a) {
  std::string s = "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) {
    if (i) s += ", ";
    s += std::to_string(a.shape(i));
  }
  if (a.ndim() == 1) s += ",";
  return s + ")";
}

// "float64 (10, 3)" for an array, the Python type name otherwise.
inline std::string describe(py::handle obj) {
  if (py::isinstance<py::array>(obj)) {
    py::array a = py::reinterpret_borrow<py::array>(obj);
    return py::str(a.dtype()).cast<std::string>() + " " + shape_str(a);
  }
  return std::string(py::str(py::type::handle_of(obj).attr("__name__")));
}

template <class T>
bool is_dtype(const py::array& a) {
  return a.dtype().is(py::dtype::of<T>()) || a.dtype().equal(py::dtype::of<T>());
}

// `obj` as a C-contiguous array of T with `ndim` dimensions (-1: any). `what` describes the
// expected shape for messages, e.g. "(M, K)".
template <class T>
py::array_t<T, py::array::c_style> array(py::handle obj, const char* name, int ndim = -1,
                                         const char* what = nullptr) {
  if (!py::isinstance<py::array>(obj)) {
    throw py::type_error(std::string(name) + " must be a numpy.ndarray of " + DType<T>::name +
                         "; got " + describe(obj));
  }
  py::array a = py::reinterpret_borrow<py::array>(obj);
  if (!is_dtype<T>(a)) {
    throw py::type_error(std::string(name) + " must be " + DType<T>::name +
                         (what ? std::string(" of shape ") + what : std::string()) + "; got " +
                         describe(obj));
  }
  if (ndim >= 0 && a.ndim() != ndim) {
    throw py::value_error(std::string(name) + " must be " + std::to_string(ndim) + "-D" +
                          (what ? std::string(" ") + what : std::string()) + "; got " +
                          std::to_string(a.ndim()) + "-D " + shape_str(a));
  }
  // One contiguous copy for strided views; contiguous input is used in place.
  return py::array_t<T, py::array::c_style>::ensure(a);
}

// Raises ValueError unless `a` has exactly these dimensions (-1: any).
inline void require_shape(const py::array& a, const char* name, std::initializer_list<py::ssize_t> dims,
                          const char* what) {
  bool ok = static_cast<size_t>(a.ndim()) == dims.size();
  size_t i = 0;
  for (auto d : dims) {
    if (!ok) break;
    if (d >= 0 && a.shape(i) != d) ok = false;
    ++i;
  }
  if (!ok)
    throw py::value_error(std::string(name) + " must have shape " + what + "; got " + shape_str(a));
}

// An `out=` argument: must already be a writeable C-contiguous T array of exactly `shape`.
template <class T>
py::array_t<T, py::array::c_style> out_array(py::handle obj, const char* name,
                                             const std::vector<py::ssize_t>& shape) {
  if (!py::isinstance<py::array>(obj))
    throw py::type_error(std::string(name) + " must be a numpy.ndarray of " + DType<T>::name +
                         "; got " + describe(obj));
  py::array a = py::reinterpret_borrow<py::array>(obj);
  std::string want = "(";
  for (size_t i = 0; i < shape.size(); ++i) want += (i ? ", " : "") + std::to_string(shape[i]);
  want += ")";
  if (!is_dtype<T>(a))
    throw py::type_error(std::string(name) + " must be " + DType<T>::name + " of shape " + want +
                         "; got " + describe(obj));
  bool same = static_cast<size_t>(a.ndim()) == shape.size();
  for (size_t i = 0; same && i < shape.size(); ++i) same = a.shape(i) == shape[i];
  if (!same)
    throw py::value_error(std::string(name) + " must have shape " + want + "; got " + shape_str(a));
  if (!(a.flags() & py::array::c_style))
    throw py::value_error(std::string(name) + " must be C-contiguous (np.ascontiguousarray)");
  if (!a.writeable()) throw py::value_error(std::string(name) + " must be writeable");
  return py::reinterpret_borrow<py::array_t<T, py::array::c_style>>(a);
}

// An optional `out=` argument: None -> a new C-contiguous T array of `shape`, else out_array.
template <class T>
py::array_t<T, py::array::c_style> out_or_new(py::handle obj, const char* name,
                                              const std::vector<py::ssize_t>& shape) {
  if (obj.is_none()) return py::array_t<T, py::array::c_style>(shape);
  return out_array<T>(obj, name, shape);
}

// 64-byte aligned storage for packed weights (freed with std::free through FreeDeleter).
struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};
inline void* aligned_bytes(int64_t bytes) {
  const size_t sz = static_cast<size_t>((bytes + 63) / 64 * 64);
  void* p = std::aligned_alloc(64, sz ? sz : 64);
  if (!p) throw std::bad_alloc();
  return p;
}

// A kernel's Status as a Python exception about argument `name`.
inline void raise_if_bad(const Status& st, const char* name) {
  switch (st.code) {
    case StatusCode::ok: return;
    case StatusCode::non_finite:
      throw py::value_error(std::string(name) + " must be finite; found NaN or Inf at flat index " +
                            std::to_string(st.index));
    case StatusCode::out_of_range:
      throw py::value_error(std::string(name) + " has a value out of the allowed range at flat index " +
                            std::to_string(st.index));
    case StatusCode::out_of_memory:
      throw std::bad_alloc();  // pybind11 raises MemoryError
  }
}

}  // namespace edgepack::checks
