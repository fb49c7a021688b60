// startWriteback(fd): ask Linux to begin writing a file's dirty pages now
// (sync_file_range(2) with SYNC_FILE_RANGE_WRITE only: it does not wait for
// the I/O and gives no durability; fsync still does that). Writing back while
// the job runs leaves the closing fsync little to do, instead of the whole
// output at once. Elsewhere it is a no-op that returns false.
#include "writeback.h"

#if defined(__linux__)
#include <fcntl.h>
#endif

namespace vhdcrypt {

Napi::Value StartWriteback(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsNumber()) return Napi::Boolean::New(env, false);
  const double fd = info[0].As<Napi::Number>().DoubleValue();
  if (!(fd >= 0 && fd <= 2147483647.0)) return Napi::Boolean::New(env, false);
#if defined(__linux__)
  // offset 0, nbytes 0: from the start to the end of the file.
  const int rc = sync_file_range(static_cast<int>(fd), 0, 0, SYNC_FILE_RANGE_WRITE);
  return Napi::Boolean::New(env, rc == 0);
#else
  return Napi::Boolean::New(env, false);
#endif
}

}  // namespace vhdcrypt
