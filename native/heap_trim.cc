// trimHeap(): malloc_trim(0) (glibc), giving the C heap's free pages back to
// the kernel. Reply buffers freed when clients go away otherwise stay in the
// process's RSS (glibc keeps freed memory below the top of its heaps). Returns
// true when memory was released; false elsewhere or when there was none.
#include "heap_trim.h"

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

}  // namespace vhdcrypt
