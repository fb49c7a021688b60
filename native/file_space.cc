// fileSpace(fd, offset, length, punch): fallocate(2) on a libuv pool thread.
// punch false: reserve blocks for [offset, offset + length) without changing
// the file size (FALLOC_FL_KEEP_SIZE); the range reads as zeros until written.
// ext4 runs direct writes that overwrite allocated blocks concurrently but
// serialises those that fill holes (fs/ext4/file.c, ext4_dio_write_checks), so
// the engine reserves its output ranges before writing them with O_DIRECT.
// punch true: FALLOC_FL_PUNCH_HOLE | KEEP_SIZE, giving the blocks back.
// Resolves 0, or the errno (EOPNOTSUPP where the platform or file system has
// no such call): the caller decides which failures matter. The raw fallocate
// call never falls back to writing zeros, unlike posix_fallocate(3).
#include "file_space.h"

#include <cerrno>
#include <cstdint>

#if defined(__linux__)
#include <fcntl.h>
#include <linux/falloc.h>
#endif

namespace vhdcrypt {

namespace {

class FileSpaceWorker : public Napi::AsyncWorker {
 public:
  FileSpaceWorker(Napi::Env env, int fd, int64_t offset, int64_t length, bool punch)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), fd_(fd), offset_(offset), length_(length), punch_(punch) {}

  Napi::Promise Promise() { return deferred_.Promise(); }

  void Execute() override {
#if defined(__linux__)
    const int mode = punch_ ? (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE) : FALLOC_FL_KEEP_SIZE;
    int rc;
    do {
      rc = fallocate(fd_, mode, static_cast<off_t>(offset_), static_cast<off_t>(length_));
    } while (rc != 0 && errno == EINTR);
    errno_ = rc == 0 ? 0 : errno;
#else
    errno_ = EOPNOTSUPP;
#endif
  }

  void OnOK() override { deferred_.Resolve(Napi::Number::New(Env(), errno_)); }

 private:
  Napi::Promise::Deferred deferred_;
  int fd_;
  int64_t offset_;
  int64_t length_;
  bool punch_;
  int errno_ = 0;
};

// A non-negative integer below 2^53 (offsets and lengths come from JS numbers).
bool SafeCount(const Napi::Value& v, int64_t* out) {
  if (!v.IsNumber()) return false;
  const double d = v.As<Napi::Number>().DoubleValue();
  if (!(d >= 0 && d <= 9007199254740991.0) || d != static_cast<double>(static_cast<int64_t>(d))) return false;
  *out = static_cast<int64_t>(d);
  return true;
}

}  // namespace

Napi::Value FileSpace(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t fd = 0, offset = 0, length = 0;
  if (info.Length() < 4 || !SafeCount(info[0], &fd) || fd > INT32_MAX || !SafeCount(info[1], &offset) || !SafeCount(info[2], &length) ||
      length == 0 || !info[3].IsBoolean()) {
    auto d = Napi::Promise::Deferred::New(env);
    d.Resolve(Napi::Number::New(env, EINVAL));
    return d.Promise();
  }
  auto* w = new FileSpaceWorker(env, static_cast<int>(fd), offset, length, info[3].As<Napi::Boolean>().Value());
  Napi::Promise p = w->Promise();
  w->Queue();  // the worker deletes itself after OnOK
  return p;
}

}  // namespace vhdcrypt
