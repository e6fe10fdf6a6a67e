#include "core/cpu_features.h"

#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__)
#include <cpuid.h>
#define EP_X86 1
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

}  // namespace edgepack
