// Picks the XTS kernels this CPU and OS can run. A feature counts only when CPUID
// reports it AND the OS saves the register state it needs (XGETBV XCR0): YMM for
// AVX2/VAES-256, opmask+ZMM for AVX-512 (Intel SDM vol. 1 §13.3, §15.2).
#include "cpu_features.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

namespace vhdcrypt {

namespace {

#if defined(__x86_64__) || defined(__i386__)
struct CpuFlags {
  bool aesni = false, pclmul = false, sse41 = false;
  bool avx2 = false, vaes = false, vpclmul = false;
  bool avx512f = false, avx512bw = false, avx512vl = false;
  bool osYmm = false, osZmm = false;
};

uint64_t ReadXcr0() {
  uint32_t lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (static_cast<uint64_t>(hi) << 32) | lo;
}

CpuFlags DetectFlags() {
  CpuFlags f;
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
  f.aesni = (c >> 25) & 1;
  f.pclmul = (c >> 1) & 1;
  f.sse41 = (c >> 19) & 1;
  const bool osxsave = (c >> 27) & 1;
  const bool avx = (c >> 28) & 1;
  if (osxsave && avx) {
    const uint64_t xcr0 = ReadXcr0();
    f.osYmm = (xcr0 & 0x6) == 0x6;      // SSE + AVX state
    f.osZmm = (xcr0 & 0xe6) == 0xe6;    // + opmask, ZMM_Hi256, Hi16_ZMM
  }
  if (__get_cpuid_max(0, nullptr) >= 7) {
    __cpuid_count(7, 0, a, b, c, d);
    f.avx2 = (b >> 5) & 1;
    f.avx512f = (b >> 16) & 1;
    f.avx512bw = (b >> 30) & 1;
    f.avx512vl = (b >> 31) & 1;
    f.vaes = (c >> 9) & 1;
    f.vpclmul = (c >> 10) & 1;
  }
  return f;
}

std::vector<KernelEntry> Detect() {
  std::vector<KernelEntry> out;
  const CpuFlags f = DetectFlags();
  // Every kernel uses AES-NI for key expansion and short sectors.
  if (!(f.aesni && f.pclmul && f.sse41)) return out;
  const bool vaesBase = f.vaes && f.vpclmul && f.osYmm && f.avx2;
  if (vaesBase && f.osZmm && f.avx512f && f.avx512bw && f.avx512vl) out.push_back({"vaes-avx512", XtsCryptVaesAvx512});
  if (vaesBase) out.push_back({"vaes-avx2", XtsCryptVaesAvx2});
  out.push_back({"aesni", XtsCryptAesni});
  return out;
}
#else
std::vector<KernelEntry> Detect() { return {}; }
#endif

}  // namespace

const std::vector<KernelEntry>& UsableKernels() {
  static const std::vector<KernelEntry> kernels = Detect();  // thread-safe, once per process
  return kernels;
}

}  // namespace vhdcrypt
