// adviseHugePages(view): madvise(MADV_HUGEPAGE) on the whole 2 MiB pages inside the view's bytes (any
// ArrayBuffer or SharedArrayBuffer), before they are first touched: with transparent huge pages in "madvise" mode
// (the common default) each then takes one page fault instead of 512. A first touch of a 4 KiB page costs ~16 us on
// the VMs this engine is measured on (a trap to the hypervisor), so a 16 MiB batch ring costs ~65 ms in small pages
// and ~1 ms in huge ones (docs/performance.md). Returns the bytes advised: 0 where the view holds no whole huge
// page, the kernel has no THP, or it refused (EINVAL); -1 for bad arguments. The content is unchanged.
#include "huge_pages.h"

#include <cstdint>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace vhdcrypt {

Napi::Value AdviseHugePages(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const Napi::Number bad = Napi::Number::New(env, -1);
  if (info.Length() < 1 || !info[0].IsTypedArray()) return bad;
  napi_typedarray_type type;
  size_t len = 0;
  void* ptr = nullptr;
  if (napi_get_typedarray_info(env, info[0], &type, &len, &ptr, nullptr, nullptr) != napi_ok || type != napi_uint8_array) return bad;
#if defined(__linux__) && defined(MADV_HUGEPAGE) && (defined(__x86_64__) || defined(__aarch64__))
  constexpr uintptr_t kHuge = uintptr_t{2} << 20;  // the PMD size of x86-64 and of arm64 with 4 KiB pages
  const uintptr_t start = reinterpret_cast<uintptr_t>(ptr);
  const uintptr_t first = (start + kHuge - 1) & ~(kHuge - 1);
  const uintptr_t end = (start + len) & ~(kHuge - 1);
  if (end <= first) return Napi::Number::New(env, 0);
  if (madvise(reinterpret_cast<void*>(first), end - first, MADV_HUGEPAGE) != 0) return Napi::Number::New(env, 0);
  return Napi::Number::New(env, static_cast<double>(end - first));
#else
  (void)len;
  (void)ptr;
  return Napi::Number::New(env, 0);
#endif
}

}  // namespace vhdcrypt
