// trimHeap(): malloc_trim(0) (glibc), giving the C heap's free pages back to
// the kernel. Reply buffers freed when clients go away otherwise stay in the
// process's RSS (glibc keeps freed memory below the top of its heaps). Returns
// true when memory was released; false elsewhere or when there was none.
//
// detachArrayBuffer(ab): ECMA-262 DetachArrayBuffer through Node-API, for
// engines without ArrayBuffer.prototype.transfer (Node 20). V8 drops its
// reference to the backing store when it detaches, so the memory is freed now
// instead of at a major GC, which an idle process may not run for minutes.
//
// keepFreedHeap(mmapThreshold, trimThreshold): mallopt(M_MMAP_THRESHOLD) and
// mallopt(M_TRIM_THRESHOLD) (glibc, mallopt(3)), once per process. A stream
// hands each chunk it makes to its reader, so every chunk is new memory; with
// glibc's defaults a chunk of 128 KiB or more is mapped fresh from the kernel
// or comes from heap pages trimmed back to it when the collector freed the
// chunks before it, and every first touch of such a page is a fault (on a PVM
// guest a trap to the hypervisor, several microseconds each: more than the
// crypto of the page). Chunks up to mmapThreshold then come from the heap, and
// up to trimThreshold of freed memory stays in the process for the next ones.
// The next stretch of the heap is also advised for transparent huge pages
// (MADV_HUGEPAGE, as glibc.malloc.hugetlb=1 would do), so the chunks placed
// there are faulted in 2 MiB at a time: a stream's heap grows to ~60-70 MiB
// once, ~16 000 faults in 4 KiB pages (~0.2 s on those guests), ~30 in huge
// ones. Left alone when the user tuned malloc (MALLOC_*_ variables or
// GLIBC_TUNABLES). Returns true when this call set them.
#include "heap_trim.h"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <utility>
#include <cstdlib>
#include <cstring>

#include "addon_shared.h"

#if defined(__GLIBC__)
#include <malloc.h>
#include <sys/mman.h>
#endif

namespace vhdcrypt {

Napi::Value TrimHeap(const Napi::CallbackInfo& info) {
#if defined(__GLIBC__)
  return Napi::Boolean::New(info.Env(), malloc_trim(0) != 0);
#else
  return Napi::Boolean::New(info.Env(), false);
#endif
}

#if defined(__GLIBC__) && defined(__linux__) && defined(MADV_HUGEPAGE)
namespace {

// Grows the heap by two blocks just under the mmap threshold, advises their pages for huge pages before anything
// touches them, and frees them: they join the heap's top chunk, which stays (smaller than the trim threshold), so
// the next allocations are carved from advised memory. Best effort: the advice is lost if the top is trimmed later.
void AdviseHeapTop(size_t mmapBytes, size_t trimBytes) {
  const size_t block = std::min(mmapBytes - (64u << 10), (trimBytes - (8u << 20)) / 2);
  if (mmapBytes <= (64u << 10) || trimBytes <= (8u << 20) || block < (4u << 20)) return;
  void* a = std::malloc(block);
  void* b = std::malloc(block);
  if (a != nullptr && b != nullptr) {
    constexpr uintptr_t kHuge = uintptr_t{2} << 20;
    const uintptr_t pa = reinterpret_cast<uintptr_t>(a), pb = reinterpret_cast<uintptr_t>(b);
    // Contiguous (both from the heap's top) they are advised as one range; otherwise each alone.
    const bool joined = pb > pa && pb - pa <= block + (64u << 10);
    const std::pair<uintptr_t, uintptr_t> ranges[2] = {{pa, joined ? pb + block : pa + block}, {pb, joined ? pb : pb + block}};
    for (const auto& [from, to] : ranges) {
      const uintptr_t first = (from + kHuge - 1) & ~(kHuge - 1), end = to & ~(kHuge - 1);
      if (end > first) madvise(reinterpret_cast<void*>(first), end - first, MADV_HUGEPAGE);
    }
  }
  std::free(b);
  std::free(a);
}

}  // namespace
#endif

Napi::Value KeepFreedHeap(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsNumber() || !info[1].IsNumber()) {
    ThrowTyped(env, "XTS_BAD_ARG", "keepFreedHeap expects (mmapThreshold: number, trimThreshold: number)");
    return env.Undefined();
  }
  const double mmapBytes = info[0].As<Napi::Number>().DoubleValue();
  const double trimBytes = info[1].As<Napi::Number>().DoubleValue();
  // glibc caps M_MMAP_THRESHOLD at HEAP_MAX_SIZE/2 (32 MiB on 64-bit) and takes an int.
  if (!(mmapBytes >= 0 && mmapBytes <= 32.0 * 1024 * 1024) || !(trimBytes >= 0 && trimBytes <= 1024.0 * 1024 * 1024)) {
    ThrowTyped(env, "XTS_BAD_ARG", "keepFreedHeap: mmapThreshold at most 32 MiB, trimThreshold at most 1 GiB");
    return env.Undefined();
  }
#if defined(__GLIBC__)
  // Worker threads load their own instance of the addon; the allocator is the process's.
  static std::atomic<bool> applied{false};
  if (applied.exchange(true)) return Napi::Boolean::New(env, false);
  const char* tunables = std::getenv("GLIBC_TUNABLES");
  if (std::getenv("MALLOC_MMAP_THRESHOLD_") != nullptr || std::getenv("MALLOC_TRIM_THRESHOLD_") != nullptr ||
      std::getenv("MALLOC_TOP_PAD_") != nullptr || (tunables != nullptr && std::strstr(tunables, "glibc.malloc") != nullptr)) {
    return Napi::Boolean::New(env, false);
  }
  const bool ok = mallopt(M_MMAP_THRESHOLD, static_cast<int>(mmapBytes)) == 1 && mallopt(M_TRIM_THRESHOLD, static_cast<int>(trimBytes)) == 1;
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  if (ok) AdviseHeapTop(static_cast<size_t>(mmapBytes), static_cast<size_t>(trimBytes));
#endif
  return Napi::Boolean::New(env, ok);
#else
  return Napi::Boolean::New(env, false);
#endif
}

Napi::Value DetachArrayBuffer(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsArrayBuffer()) {
    ThrowTyped(env, "NBD_NATIVE_BAD_ARG", "detachArrayBuffer expects (buffer: ArrayBuffer)");
    return env.Undefined();
  }
  if (napi_detach_arraybuffer(env, info[0]) != napi_ok) {
    ThrowTyped(env, "NBD_NATIVE_BAD_ARG", "detachArrayBuffer: the buffer cannot be detached");
  }
  return env.Undefined();
}

}  // namespace vhdcrypt
