// trimHeap(): malloc_trim(0) (glibc), giving the C heap's free pages back to
// the kernel. Reply buffers freed when clients go away otherwise stay in the
// process's RSS (glibc keeps freed memory below the top of its heaps). Returns
// true when memory was released; false elsewhere or when there was none.
//
// detachArrayBuffer(ab): ECMA-262 DetachArrayBuffer through Node-API, for
// engines without ArrayBuffer.prototype.transfer (Node 20). V8 drops its
// reference to the backing store when it detaches, so the memory is freed now
// instead of at a major GC, which an idle process may not run for minutes.
#include "heap_trim.h"

#include "addon_shared.h"

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace vhdcrypt {

Napi::Value TrimHeap(const Napi::CallbackInfo& info) {
#if defined(__GLIBC__)
  return Napi::Boolean::New(info.Env(), malloc_trim(0) != 0);
#else
  return Napi::Boolean::New(info.Env(), false);
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
