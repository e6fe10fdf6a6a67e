#include "core/cpu_features.h"

#include "core/amx_detect.h"

#include <cerrno>
#include <cstdio>
#include <cstring>

#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__)
#include <cpuid.h>
#define EP_X86 1
#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif
#elif defined(__aarch64__)
#define EP_ARM64 1
#if defined(__linux__)
#include <sys/auxv.h>
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1 << 20)
#endif
#ifndef HWCAP2_I8MM
#define HWCAP2_I8MM (1 << 13)
#endif
#endif
#endif

namespace edgepack {
namespace {

#if defined(EP_X86)
unsigned long long read_xcr0() {
  unsigned int eax = 0, edx = 0;
  // xgetbv with ecx = 0; encoded as bytes so the baseline build needs no -mxsave.
  __asm__ volatile(".byte 0x0f, 0x01, 0xd0" : "=a"(eax), "=d"(edx) : "c"(0));
  return (static_cast<unsigned long long>(edx) << 32) | eax;
}
#endif

CpuFeatures detect() {
  CpuFeatures f;
#if defined(EP_X86)
  unsigned int a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid(0, &a, &b, &c, &d)) return f;
  const unsigned int max_leaf = a;
  __cpuid(1, a, b, c, d);
  f.sse41 = (c >> 19) & 1;
  const bool osxsave = (c >> 27) & 1;
  const bool cpu_avx = (c >> 28) & 1;
  f.fma = (c >> 12) & 1;
  f.f16c = (c >> 29) & 1;
  unsigned long long xcr0 = osxsave ? read_xcr0() : 0;
  // The OS must save xmm+ymm state (bits 1, 2) before any AVX path, and opmask + zmm state
  // (bits 5, 6, 7) before AVX-512: cpuid alone is not enough.
  const bool os_ymm = (xcr0 & 0x6) == 0x6;
  const bool os_zmm = os_ymm && (xcr0 & 0xE0) == 0xE0;
  f.avx = cpu_avx && os_ymm;
  f.fma = f.fma && f.avx;
  f.f16c = f.f16c && f.avx;
  if (max_leaf >= 7) {
    __cpuid_count(7, 0, a, b, c, d);
    f.avx2 = f.avx && ((b >> 5) & 1);
    f.bmi2 = (b >> 8) & 1;
    f.avx512f = os_zmm && ((b >> 16) & 1);
    f.avx512dq = f.avx512f && ((b >> 17) & 1);
    f.avx512bw = f.avx512f && ((b >> 30) & 1);
    f.avx512vl = f.avx512f && ((b >> 31) & 1);
    f.avx512_vnni = f.avx512f && ((c >> 11) & 1);
    f.avx512_vbmi = f.avx512f && ((c >> 1) & 1);
    f.amx_tile = (d >> 24) & 1;
    f.amx_int8 = (d >> 25) & 1;
    __cpuid_count(7, 1, a, b, c, d);
    f.avx_vnni = f.avx2 && ((a >> 4) & 1);
  }
#elif defined(EP_ARM64)
  f.neon = true;  // Advanced SIMD is mandatory on aarch64
#if defined(__linux__)
  // Never read ID_AA64ISAR0_EL1 directly: it traps on some kernels. The auxv bits are the ABI.
  const unsigned long hw = getauxval(AT_HWCAP);
  const unsigned long hw2 = getauxval(AT_HWCAP2);
  f.dotprod = (hw & HWCAP_ASIMDDP) != 0;
  f.i8mm = (hw2 & HWCAP2_I8MM) != 0;
#elif defined(__APPLE__)
  f.dotprod = true;  // every Apple arm64 core has dotprod
#endif
#endif
  return f;
}

}  // namespace

const CpuFeatures& cpu_features() {
  static const CpuFeatures f = detect();
  return f;
}

AmxCpuid amx_read_cpuid() {
  AmxCpuid c;
#if defined(EP_X86)
  c.x86 = true;
  const CpuFeatures& f = cpu_features();
  c.tile = f.amx_tile;
  c.int8 = f.amx_int8;
  c.avx512_vnni = f.avx512_vnni && f.avx512bw && f.avx512dq && f.avx512vl;
  unsigned int a = 0, b = 0, cx = 0, d = 0;
  if (!__get_cpuid(0, &a, &b, &cx, &d)) return c;
  const unsigned int max_leaf = a;
  __cpuid(1, a, b, cx, d);
  if ((cx >> 27) & 1) c.xcr0 = read_xcr0();
  if (max_leaf >= 0x1D) {
    __cpuid_count(0x1D, 0, a, b, cx, d);
    c.max_palette = a;
    if (c.max_palette >= 1) {
      __cpuid_count(0x1D, 1, a, b, cx, d);
      c.bytes_per_tile = a >> 16;
      c.bytes_per_row = b & 0xFFFF;
      c.max_names = b >> 16;
      c.max_rows = cx & 0xFFFF;
    }
  }
#endif
  return c;
}

namespace {
#if defined(EP_X86) && defined(__linux__) && defined(SYS_arch_prctl)
// arch/x86/include/uapi/asm/prctl.h (Linux 5.16); some published snippets define REQ as 0x1022,
// which is GET.
constexpr long kArchGetXcompPerm = 0x1022, kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
int sys_get_perm(uint64_t* mask) {
  unsigned long m = 0;
  if (syscall(SYS_arch_prctl, kArchGetXcompPerm, &m) != 0) return errno ? errno : EINVAL;
  *mask = m;
  return 0;
}
int sys_req_perm() { return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0 ? 0 : (errno ? errno : EINVAL); }
#endif

std::string hex(uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(v));
  return buf;
}
}  // namespace

AmxOs amx_system_os() {
  AmxOs os;
#if defined(EP_X86) && defined(__linux__) && defined(SYS_arch_prctl)
  os.get_perm = sys_get_perm;
  os.req_perm = sys_req_perm;
#endif
  return os;
}

std::string amx_check(const AmxCpuid& c, const AmxOs* os) {
  if (!c.x86) return "not an x86-64 CPU";
  if (!c.tile || !c.int8) {
    if (!c.tile && !c.int8) return "CPUID reports neither AMX-TILE nor AMX-INT8 (leaf 7 EDX bits 24, 25)";
    return !c.tile ? "CPUID reports AMX-INT8 but not AMX-TILE (leaf 7 EDX bit 24)"
                   : "CPUID reports AMX-TILE but not AMX-INT8 (leaf 7 EDX bit 25)";
  }
  if (!c.avx512_vnni)
    return "no AVX-512 VNNI (with the OS's zmm state): the AMX path's epilogue and its small shapes run on it";
  constexpr uint64_t kTileState = (1ull << 17) | (1ull << 18);  // XTILECFG, XTILEDATA
  if ((c.xcr0 & kTileState) != kTileState)
    return "the OS does not enable the tile state (XCR0 = " + hex(c.xcr0) + "; bits 17 XTILECFG and 18 XTILEDATA needed)";
  if (c.max_palette < 1)
    return "CPUID leaf 0x1D reports no tile palette (a virtual machine advertising AMX without tiles)";
  if (c.max_names < 8 || c.max_rows < 16 || c.bytes_per_row < 64)
    return "tile palette 1 has " + std::to_string(c.max_names) + " tiles of " + std::to_string(c.max_rows) + " rows x " +
           std::to_string(c.bytes_per_row) + " bytes; the kernels need 8 tiles of 16 x 64";
  if (!os) return "";
  if (!os->get_perm || !os->req_perm)
    return "no way to request the tile state on this OS (the Linux arch_prctl permission call is the only one implemented)";
  constexpr uint64_t kData = 1ull << 18;
  uint64_t mask = 0;
  if (os->get_perm(&mask) == 0 && (mask & kData)) return "";
  const int e = os->req_perm();
  if (e)
    return "arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) failed: errno " + std::to_string(e) + " (" +
           std::strerror(e) + "); Linux before 5.16, a seccomp filter, or an alternate signal stack too small "
           "for the tile state";
  mask = 0;
  const int e2 = os->get_perm(&mask);
  if (e2 || !(mask & kData))
    return "arch_prctl(ARCH_REQ_XCOMP_PERM) returned 0 but ARCH_GET_XCOMP_PERM " +
           (e2 ? "failed (errno " + std::to_string(e2) + ")" : "shows no XTILEDATA (mask " + hex(mask) + ")");
  return "";
}

const char* amx_reason() {
  static const std::string r = [] {
    const AmxOs os = amx_system_os();
    return amx_check(amx_read_cpuid(), &os);
  }();
  return r.empty() ? nullptr : r.c_str();
}

}  // namespace edgepack
