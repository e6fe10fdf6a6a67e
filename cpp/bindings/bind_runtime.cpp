// Runtime control: instruction-set path, threads, CPU features.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>

#include "core/cpu_features.h"
#include "core/dispatch.h"
#include "core/thread_pool.h"

namespace py = pybind11;

namespace edgepack::bindings {
namespace {

py::list isa_list(bool (*pred)(Isa)) {
  py::list out;
  Isa order[kNumIsas];
  const int n = isa_order(order);
  for (int i = 0; i < n; ++i)
    if (pred(order[i])) out.append(isa_name(order[i]));
  return out;
}

}  // namespace

void bind_runtime(py::module_& m) {
  m.def("cpu_features", [] {
    const CpuFeatures& f = cpu_features();
    py::dict d;
#if defined(__x86_64__) || defined(_M_X64)
    d["sse4_1"] = f.sse41;
    d["avx"] = f.avx;
    d["avx2"] = f.avx2;
    d["fma"] = f.fma;
    d["f16c"] = f.f16c;
    d["bmi2"] = f.bmi2;
    d["avx512f"] = f.avx512f;
    d["avx512bw"] = f.avx512bw;
    d["avx512dq"] = f.avx512dq;
    d["avx512vl"] = f.avx512vl;
    d["avx512_vnni"] = f.avx512_vnni;
    d["avx_vnni"] = f.avx_vnni;
#elif defined(__aarch64__)
    d["neon"] = f.neon;
    d["dotprod"] = f.dotprod;
    d["i8mm"] = f.i8mm;
#endif
    return d;
  });
  m.def("built_isas", [] { return isa_list(isa_built); });
  m.def("available_isas", [] { return isa_list(isa_available); });
  m.def("best_isa", [] { return std::string(isa_name(best_isa())); });
  m.def("get_isa", [] { return std::string(isa_name(active().isa)); });
  m.def("set_isa", [](const std::string& name) {
    Isa isa;
    auto avail = [] {
      std::string s;
      Isa order[kNumIsas];
      const int n = isa_order(order);
      for (int i = 0; i < n; ++i)
        if (isa_available(order[i])) s += (s.empty() ? "" : ", ") + std::string(isa_name(order[i]));
      return s;
    };
    if (!isa_from_name(name.c_str(), &isa))
      throw py::value_error("unknown instruction-set path '" + name +
                            "'; expected one of scalar, avx2, avx512, avx512_vnni, neon, neon_dotprod "
                            "(available here: " + avail() + ")");
    if (!isa_built(isa))
      throw py::value_error("path '" + name + "' is not compiled into this build (available here: " +
                            avail() + ")");
    if (!select_isa(isa))
      throw py::value_error("this CPU cannot run path '" + name + "' (available here: " + avail() + ")");
  }, py::arg("name"));
  m.def("get_num_threads", [] { return get_num_threads(); });
  m.def("set_num_threads", [](int n) {
    if (n < 1) throw py::value_error("n must be an int >= 1; got " + std::to_string(n));
    py::gil_scoped_release nogil;
    set_num_threads(n);
  }, py::arg("n"));
  m.def("default_num_threads", [] { return default_num_threads(); });
}

}  // namespace edgepack::bindings
