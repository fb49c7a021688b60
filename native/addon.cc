// Node-API entry of the native XTS backend: an XtsKey object that owns the key
// schedules (wiped on dispose, on finalization and at environment teardown) and
// runs a whole batch of sectors per call. State is per environment, so the addon
// loads in any number of worker_threads. No C++ exceptions cross N-API
// (NAPI_DISABLE_CPP_EXCEPTIONS): every failure becomes a pending JS error built
// by the error factory the JS side registers (a VhdcryptError subclass).
#include <napi.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <unordered_map>

#include "buffer_address.h"
#include "addon_shared.h"
#include "af_merge.h"
#include "bitlk_stretch.h"
#include "cpu_features.h"
#include "file_space.h"
#include "gmac.h"
#include "heap_trim.h"
#include "huge_pages.h"
#include "nbd_direct_read.h"
#include "peer_cred.h"
#include "writeback.h"
#include "xts_kernels.h"

namespace vhdcrypt {

// Live key schedules of one environment (XtsKey objects, the NBD reply thread's DirectReadFile), each with the
// lock its users hold while they run with it. Owners register and release on the JS thread; a DirectReadFile's
// schedule may be released by the last reply thread to let go of it, hence the mutex.
struct ScheduleRegistry {
  std::mutex mu;
  std::unordered_map<XtsKeySchedule*, std::shared_mutex*> live;
};

namespace {

struct EnvState {
  Napi::FunctionReference errorFactory;  // (code, message, errnoName?) => Error, set by src/native-addon.ts
  std::shared_ptr<ScheduleRegistry> registry = std::make_shared<ScheduleRegistry>();
};

void WipeRegistry(void* arg) {
  auto* holder = static_cast<std::shared_ptr<ScheduleRegistry>*>(arg);
  {
    std::lock_guard<std::mutex> lk((*holder)->mu);
    for (auto& [ks, guard] : (*holder)->live) {
      if (guard != nullptr) {
        std::unique_lock<std::shared_mutex> wiping(*guard);
        SecureWipe(ks, sizeof *ks);
      } else {
        SecureWipe(ks, sizeof *ks);
      }
    }
  }
  delete holder;
}

void Throw(Napi::Env env, const char* code, const std::string& message, const char* errnoName) {
  EnvState* st = env.GetInstanceData<EnvState>();
  if (st != nullptr && !st->errorFactory.IsEmpty()) {
    Napi::Value name = errnoName != nullptr ? Napi::String::New(env, errnoName) : env.Undefined();
    Napi::Value err = st->errorFactory.Call({Napi::String::New(env, code), Napi::String::New(env, message), name});
    if (env.IsExceptionPending()) return;  // the factory itself threw: let that propagate
    napi_throw(env, err);
    return;
  }
  Napi::Error err = Napi::Error::New(env, message);
  err.Set("code", Napi::String::New(env, code));
  if (errnoName != nullptr) err.Set("errnoName", Napi::String::New(env, errnoName));
  err.ThrowAsJavaScriptException();
}

}  // namespace

void ThrowTyped(Napi::Env env, const char* code, const std::string& message) { Throw(env, code, message, nullptr); }

std::string ErrnoName(int err) {
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 32))
  if (const char* name = strerrorname_np(err)) return name;
#endif
  return "errno " + std::to_string(err);
}

void ThrowErrno(Napi::Env env, const char* code, const std::string& what, int err) {
  const std::string name = ErrnoName(err);
  Throw(env, code, what + ": " + std::strerror(err) + " (" + name + ")", name.c_str());
}

std::shared_ptr<ScheduleRegistry> RegisterSchedule(Napi::Env env, XtsKeySchedule* ks, std::shared_mutex* guard) {
  std::shared_ptr<ScheduleRegistry> registry = env.GetInstanceData<EnvState>()->registry;
  std::lock_guard<std::mutex> lk(registry->mu);
  registry->live.emplace(ks, guard);
  return registry;
}

void ReleaseSchedule(const std::shared_ptr<ScheduleRegistry>& registry, XtsKeySchedule* ks) {
  {
    std::lock_guard<std::mutex> lk(registry->mu);
    registry->live.erase(ks);
  }
  SecureWipe(ks, sizeof *ks);
}

bool GetBytes(const Napi::Value& v, uint8_t** data, size_t* length) {
  if (!v.IsTypedArray()) return false;
  napi_typedarray_type type;
  size_t len = 0;
  void* ptr = nullptr;
  if (napi_get_typedarray_info(v.Env(), v, &type, &len, &ptr, nullptr, nullptr) != napi_ok) return false;
  if (type != napi_uint8_array) return false;
  *data = static_cast<uint8_t*>(ptr);
  *length = len;
  return true;
}

bool CheckXtsKey(Napi::Env env, const uint8_t* key, size_t keyLen) {
  if (keyLen != 32 && keyLen != 64) {
    ThrowTyped(env, "XTS_BAD_KEY", "XTS key must be 32 bytes (AES-128-XTS) or 64 bytes (AES-256-XTS), got " +
                                     std::to_string(keyLen));
    return false;
  }
  const size_t half = keyLen / 2;
  uint8_t diff = 0;  // compare the halves without an early exit
  for (size_t i = 0; i < half; i++) diff |= key[i] ^ key[half + i];
  if (diff == 0) {
    ThrowTyped(env, "XTS_EQUAL_KEY_HALVES", "XTS key halves must differ (IEEE 1619-2018 §5.1)");
    return false;
  }
  return true;
}

const KernelEntry* RequireKernel(Napi::Env env, const std::string& name) {
  for (const KernelEntry& k : UsableKernels())
    if (name == k.name) return &k;
  ThrowTyped(env, "XTS_BACKEND_UNAVAILABLE", "native kernel '" + name + "' is not supported on this CPU");
  return nullptr;
}

namespace {

class XtsKey : public Napi::ObjectWrap<XtsKey> {
 public:
  static Napi::Function DefineClass(Napi::Env env) {
    return Napi::ObjectWrap<XtsKey>::DefineClass(
        env, "XtsKey",
        {InstanceMethod<&XtsKey::Crypt>("crypt"), InstanceMethod<&XtsKey::Dispose>("dispose"),
         InstanceAccessor<&XtsKey::Kernel>("kernel")});
  }

  // new XtsKey(key: Uint8Array (32 or 64 bytes, unequal halves), kernel: string)
  explicit XtsKey(const Napi::CallbackInfo& info) : Napi::ObjectWrap<XtsKey>(info) {
    Napi::Env env = info.Env();
    uint8_t* key = nullptr;
    size_t keyLen = 0;
    if (info.Length() < 2 || !GetBytes(info[0], &key, &keyLen) || !info[1].IsString()) {
      ThrowTyped(env, "XTS_BAD_ARG", "XtsKey expects (key: Uint8Array, kernel: string)");
      return;
    }
    if (!CheckXtsKey(env, key, keyLen)) return;
    kernel_ = RequireKernel(env, info[1].As<Napi::String>().Utf8Value());
    if (kernel_ == nullptr) return;
    const size_t half = keyLen / 2;
    schedule_ = new XtsKeySchedule();
    ExpandXtsKey(*schedule_, key, key + half, half);
    registry_ = RegisterSchedule(env, schedule_, nullptr);  // used on this JS thread only: no guard
  }

  ~XtsKey() override { Release(); }

 private:
  void Release() {
    if (schedule_ == nullptr) return;
    ReleaseSchedule(registry_, schedule_);
    delete schedule_;
    schedule_ = nullptr;
  }

  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    Release();
    return info.Env().Undefined();
  }

  Napi::Value Kernel(const Napi::CallbackInfo& info) {
    return kernel_ ? Napi::String::New(info.Env(), kernel_->name) : info.Env().Undefined();
  }

  // crypt(encrypt: boolean, src: Uint8Array, dst: Uint8Array, firstTweak: bigint,
  //       sectorSize: number, tweakStep: number): every argument re-checked here.
  Napi::Value Crypt(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (schedule_ == nullptr) {
      ThrowTyped(env, "XTS_DISPOSED", "XTS key was disposed");
      return env.Undefined();
    }
    uint8_t *src = nullptr, *dst = nullptr;
    size_t srcLen = 0, dstLen = 0;
    if (info.Length() < 6 || !info[0].IsBoolean() || !GetBytes(info[1], &src, &srcLen) ||
        !GetBytes(info[2], &dst, &dstLen) || !info[3].IsBigInt() || !info[4].IsNumber() || !info[5].IsNumber()) {
      ThrowTyped(env, "XTS_BAD_ARG",
               "crypt expects (encrypt: boolean, src: Uint8Array, dst: Uint8Array, firstTweak: bigint, "
               "sectorSize: number, tweakStep: number)");
      return env.Undefined();
    }
    const bool encrypt = info[0].As<Napi::Boolean>().Value();
    bool lossless = false;
    const uint64_t firstTweak = info[3].As<Napi::BigInt>().Uint64Value(&lossless);
    if (!lossless) {
      ThrowTyped(env, "XTS_TWEAK_OVERFLOW", "first tweak must be an integer from 0 to 2^64-1");
      return env.Undefined();
    }
    const double sectorSizeD = info[4].As<Napi::Number>().DoubleValue();
    if (!(sectorSizeD >= 16 && sectorSizeD <= 4096) || std::floor(sectorSizeD) != sectorSizeD ||
        (static_cast<size_t>(sectorSizeD) & (static_cast<size_t>(sectorSizeD) - 1)) != 0) {
      ThrowTyped(env, "XTS_BAD_SECTOR_SIZE", "sector size must be a power of two from 16 to 4096");
      return env.Undefined();
    }
    const size_t sectorSize = static_cast<size_t>(sectorSizeD);
    const double stepD = info[5].As<Napi::Number>().DoubleValue();
    if (!(stepD >= 1 && stepD <= 9007199254740991.0) || std::floor(stepD) != stepD) {
      ThrowTyped(env, "XTS_BAD_ARG", "tweak step must be an integer from 1 to 2^53-1");
      return env.Undefined();
    }
    const uint64_t step = static_cast<uint64_t>(stepD);
    if (srcLen != dstLen) {
      ThrowTyped(env, "XTS_BAD_LENGTH", "source is " + std::to_string(srcLen) + " bytes but destination is " +
                                          std::to_string(dstLen));
      return env.Undefined();
    }
    if (srcLen == 0 || srcLen % sectorSize != 0) {
      ThrowTyped(env, "XTS_BAD_LENGTH", "data length " + std::to_string(srcLen) +
                                          " is not a whole non-zero number of " + std::to_string(sectorSize) +
                                          "-byte sectors");
      return env.Undefined();
    }
    const size_t sectorCount = srcLen / sectorSize;
    uint64_t span = 0, lastTweak = 0;
    if (__builtin_mul_overflow(static_cast<uint64_t>(sectorCount - 1), step, &span) ||
        __builtin_add_overflow(firstTweak, span, &lastTweak)) {
      ThrowTyped(env, "XTS_TWEAK_OVERFLOW", "the batch's last sector number passes 2^64-1");
      return env.Undefined();
    }
    const uintptr_t s = reinterpret_cast<uintptr_t>(src), d = reinterpret_cast<uintptr_t>(dst);
    if (s != d && s < d + dstLen && d < s + srcLen) {
      ThrowTyped(env, "XTS_BAD_ARG", "source and destination overlap without being the same bytes");
      return env.Undefined();
    }
    kernel_->fn(*schedule_, encrypt, src, dst, sectorCount, sectorSize, firstTweak, step);
    return env.Undefined();
  }

  XtsKeySchedule* schedule_ = nullptr;
  const KernelEntry* kernel_ = nullptr;
  std::shared_ptr<ScheduleRegistry> registry_;
};

// The names of a dispatch list's entries, in its order (best first).
template <class Entry>
Napi::Value EntryNames(Napi::Env env, const std::vector<Entry>& entries) {
  Napi::Array out = Napi::Array::New(env, entries.size());
  for (size_t i = 0; i < entries.size(); i++) out.Set(static_cast<uint32_t>(i), Napi::String::New(env, entries[i].name));
  return out;
}

// kernels(): the XTS kernels this CPU can run, best first.
Napi::Value Kernels(const Napi::CallbackInfo& info) { return EntryNames(info.Env(), UsableKernels()); }

// gmacKernels(): the GHASH kernels this CPU can run, best first.
Napi::Value GmacKernels(const Napi::CallbackInfo& info) { return EntryNames(info.Env(), UsableGhashKernels()); }

// gmacTags(key: 32 bytes, prefix: Uint8Array | null, data: Uint8Array, pieceBytes, firstIndex, kernel?): a Buffer of
// the 16-byte GMAC tags of data's pieces (gmac.h GmacPieceTags), each over prefix then the piece.
Napi::Value GmacTags(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint8_t *key = nullptr, *prefix = nullptr, *data = nullptr;
  size_t keyLen = 0, prefixLen = 0, dataLen = 0;
  if (info.Length() < 5 || !GetBytes(info[0], &key, &keyLen) || !GetBytes(info[2], &data, &dataLen) || !info[3].IsNumber() ||
      !info[4].IsNumber()) {
    ThrowTyped(env, "XTS_BAD_ARG", "gmacTags expects (key, prefix, data, pieceBytes, firstIndex[, kernel])");
    return env.Undefined();
  }
  if (keyLen != 32) {
    ThrowTyped(env, "XTS_BAD_KEY", "a GMAC key must be 32 bytes (AES-256), got " + std::to_string(keyLen));
    return env.Undefined();
  }
  if (!info[1].IsNull() && !info[1].IsUndefined() && !GetBytes(info[1], &prefix, &prefixLen)) {
    ThrowTyped(env, "XTS_BAD_ARG", "gmacTags: prefix expected a Uint8Array or null");
    return env.Undefined();
  }
  if (prefixLen % 16 != 0) {
    ThrowTyped(env, "XTS_BAD_ARG", "gmacTags: prefix must be whole 16-byte blocks, got " + std::to_string(prefixLen) + " bytes");
    return env.Undefined();
  }
  const double piece = info[3].As<Napi::Number>().DoubleValue(), first = info[4].As<Napi::Number>().DoubleValue();
  if (!(piece >= 1 && piece <= 4294967296.0 && std::floor(piece) == piece)) {
    ThrowTyped(env, "XTS_BAD_ARG", "gmacTags: pieceBytes expected an integer from 1 to 2^32");
    return env.Undefined();
  }
  if (!(first >= 0 && first <= 9007199254740991.0 && std::floor(first) == first)) {
    ThrowTyped(env, "XTS_BAD_ARG", "gmacTags: firstIndex expected a safe non-negative integer");
    return env.Undefined();
  }
  const auto& kernels = UsableGhashKernels();
  const GhashKernelEntry* kernel = kernels.empty() ? nullptr : &kernels[0];
  if (info.Length() > 5 && !info[5].IsUndefined()) {
    const std::string name = info[5].ToString().Utf8Value();
    kernel = nullptr;
    for (const auto& k : kernels)
      if (name == k.name) kernel = &k;
    if (kernel == nullptr) {
      ThrowTyped(env, "XTS_BACKEND_UNAVAILABLE", "GHASH kernel '" + name + "' is not supported on this CPU");
      return env.Undefined();
    }
  }
  if (kernel == nullptr) {
    ThrowTyped(env, "XTS_BACKEND_UNAVAILABLE", "no GHASH kernel on this CPU (needs PCLMULQDQ and AES-NI)");
    return env.Undefined();
  }
  const size_t pieceBytes = static_cast<size_t>(piece);
  const size_t count = dataLen / pieceBytes + (dataLen % pieceBytes != 0 ? 1 : 0);
  Napi::Buffer<uint8_t> tags = Napi::Buffer<uint8_t>::New(env, count * 16);
  GmacPieceTags(kernel->fn, key, prefix, prefixLen, data, dataLen, pieceBytes, static_cast<uint64_t>(first), tags.Data());
  return tags;
}

// liveKeySchedules(): how many key schedules this environment's registry holds (for the tests that check each
// owner registers its schedule and releases it when it closes).
Napi::Value LiveKeySchedules(const Napi::CallbackInfo& info) {
  const std::shared_ptr<ScheduleRegistry>& registry = info.Env().GetInstanceData<EnvState>()->registry;
  std::lock_guard<std::mutex> lk(registry->mu);
  return Napi::Number::New(info.Env(), static_cast<double>(registry->live.size()));
}

// setErrorFactory(fn: (code: string, message: string, errnoName?: string) => Error)
Napi::Value SetErrorFactory(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsFunction()) {
    ThrowTyped(env, "XTS_BAD_ARG", "setErrorFactory expects a function");
    return env.Undefined();
  }
  env.GetInstanceData<EnvState>()->errorFactory = Napi::Persistent(info[0].As<Napi::Function>());
  return env.Undefined();
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  auto* st = new EnvState();
  env.SetInstanceData<EnvState>(st);  // deleted by node-addon-api when this environment goes away
  napi_add_env_cleanup_hook(env, WipeRegistry, new std::shared_ptr<ScheduleRegistry>(st->registry));
  exports.Set("XtsKey", XtsKey::DefineClass(env));
  exports.Set("kernels", Napi::Function::New<Kernels>(env, "kernels"));
  exports.Set("gmacKernels", Napi::Function::New<GmacKernels>(env, "gmacKernels"));
  exports.Set("gmacTags", Napi::Function::New<GmacTags>(env, "gmacTags"));
  exports.Set("liveKeySchedules", Napi::Function::New<LiveKeySchedules>(env, "liveKeySchedules"));
  exports.Set("setErrorFactory", Napi::Function::New<SetErrorFactory>(env, "setErrorFactory"));
  exports.Set("startWriteback", Napi::Function::New<StartWriteback>(env, "startWriteback"));
  exports.Set("afMerge", Napi::Function::New<AfMerge>(env, "afMerge"));
  exports.Set("bitlkStretch", Napi::Function::New<BitlkStretch>(env, "bitlkStretch"));
  exports.Set("fileSpace", Napi::Function::New<FileSpace>(env, "fileSpace"));
  exports.Set("adviseHugePages", Napi::Function::New<AdviseHugePages>(env, "adviseHugePages"));
  exports.Set("addressMisalignment", Napi::Function::New<AddressMisalignment>(env, "addressMisalignment"));
  exports.Set("peerUid", Napi::Function::New<PeerUid>(env, "peerUid"));
  exports.Set("trimHeap", Napi::Function::New<TrimHeap>(env, "trimHeap"));
  exports.Set("keepFreedHeap", Napi::Function::New<KeepFreedHeap>(env, "keepFreedHeap"));
  exports.Set("detachArrayBuffer", Napi::Function::New<DetachArrayBuffer>(env, "detachArrayBuffer"));
  InitDirectRead(env, exports);
  return exports;
}

}  // namespace

}  // namespace vhdcrypt

static Napi::Object InitVhdcryptNative(Napi::Env env, Napi::Object exports) { return vhdcrypt::Init(env, exports); }

NODE_API_MODULE(vhdcrypt_native, InitVhdcryptNative)
