// CPU feature detection for kernel dispatch (CPUID + XGETBV), done once per process.
#ifndef VHDCRYPT_CPU_FEATURES_H
#define VHDCRYPT_CPU_FEATURES_H

#include <vector>
#include <string>
#include "xts_kernels.h"

namespace vhdcrypt {

struct KernelEntry {
  const char* name;
  XtsKernelFn fn;
};

// Kernels usable on this CPU, best first (empty when AES-NI is missing or not x86).
const std::vector<KernelEntry>& UsableKernels();

}  // namespace vhdcrypt

#endif
