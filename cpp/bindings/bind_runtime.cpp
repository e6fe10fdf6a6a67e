// Runtime control: instruction-set path, threads, CPU features.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cerrno>
#include <string>

#include "core/amx_detect.h"
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
    d["amx_tile"] = f.amx_tile;
    d["amx_int8"] = f.amx_int8;
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
                            "'; expected one of scalar, avx2, avx512, avx512_vnni, avx512_amx, neon, "
                            "neon_dotprod (available here: " + avail() + ")");
    if (!isa_built(isa))
      throw py::value_error("path '" + name + "' is not compiled into this build (available here: " +
                            avail() + ")");
    if (!select_isa(isa)) {
      const char* why = isa_unavailable_reason(isa);
      throw py::value_error("this CPU cannot run path '" + name + "'" +
                            (isa == Isa::avx512_amx && why ? std::string(": ") + why : std::string()) +
                            " (available here: " + avail() + ")");
    }
  }, py::arg("name"));
  // None when the avx512_amx path is available, else why not (build, CPUID, XCR0, tile palette,
  // the Linux permission request).
  m.def("amx_reason", []() -> py::object {
    const char* r = isa_unavailable_reason(Isa::avx512_amx);
    if (!r) return py::none();
    return py::str(r);
  });
  m.def("amx_emulated", [] {
#if defined(EDGEPACK_AMX_EMULATE)
    return true;
#else
    return false;
#endif
  });
  // The detector on given facts (tests of every failure mode on any machine). perm: "granted"
  // (already permitted), "ok" (the request succeeds), "denied" (EPERM), "old-kernel" (EINVAL from
  // both calls), "ignored" (the request returns 0 but GET shows no XTILEDATA), "no-os" (an OS
  // without the calls), "none" (the CPUID/XCR0 checks only).
  m.def("_amx_check", [](py::dict facts, const std::string& perm) {
    AmxCpuid c;
    auto u = [&](const char* key, uint64_t dflt) {
      return facts.contains(key) ? facts[key].cast<uint64_t>() : dflt;
    };
    c.x86 = u("x86", 1) != 0;
    c.tile = u("tile", 1) != 0;
    c.int8 = u("int8", 1) != 0;
    c.avx512_vnni = u("avx512_vnni", 1) != 0;
    c.xcr0 = u("xcr0", 0x600e7);
    c.max_palette = static_cast<uint32_t>(u("max_palette", 1));
    c.bytes_per_tile = static_cast<uint32_t>(u("bytes_per_tile", 1024));
    c.bytes_per_row = static_cast<uint32_t>(u("bytes_per_row", 64));
    c.max_names = static_cast<uint32_t>(u("max_names", 8));
    c.max_rows = static_cast<uint32_t>(u("max_rows", 16));
    static thread_local uint64_t perm_mask;
    AmxOs os;
    if (perm == "granted") {
      os.get_perm = [](uint64_t* m) { *m = 0x600e7; return 0; };
      os.req_perm = [] { return EPERM; };
    } else if (perm == "ok") {
      perm_mask = 0x200e7;
      os.get_perm = [](uint64_t* m) { *m = perm_mask; return 0; };
      os.req_perm = [] { perm_mask |= 1ull << 18; return 0; };
    } else if (perm == "denied") {
      os.get_perm = [](uint64_t* m) { *m = 0x200e7; return 0; };
      os.req_perm = [] { return EPERM; };
    } else if (perm == "old-kernel") {
      os.get_perm = [](uint64_t*) { return EINVAL; };
      os.req_perm = [] { return EINVAL; };
    } else if (perm == "ignored") {
      os.get_perm = [](uint64_t* m) { *m = 0x200e7; return 0; };
      os.req_perm = [] { return 0; };
    } else if (perm != "none" && perm != "no-os") {
      throw py::value_error("perm must be one of granted, ok, denied, old-kernel, ignored, no-os, none; got '" +
                            perm + "'");
    }
    const std::string r = amx_check(c, perm == "none" ? nullptr : &os);
    return r.empty() ? py::object(py::none()) : py::object(py::str(r));
  }, py::arg("facts"), py::arg("perm") = "none");
  m.def("get_num_threads", [] { return get_num_threads(); });
  m.def("set_num_threads", [](int n) {
    if (n < 1) throw py::value_error("n must be an int >= 1; got " + std::to_string(n));
    py::gil_scoped_release nogil;
    set_num_threads(n);
  }, py::arg("n"));
  m.def("default_num_threads", [] { return default_num_threads(); });
}

}  // namespace edgepack::bindings
