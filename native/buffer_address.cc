// addressMisalignment(view, alignment): how many bytes the view's first byte
// lies past a multiple of `alignment` (a power of two up to 1 GiB), or -1 for
// bad arguments. JS cannot see addresses; O_DIRECT writes need the buffer
// aligned (open(2), "O_DIRECT"), so the engine places its batch slots by this.
#include "buffer_address.h"

#include <cstdint>

namespace vhdcrypt {

Napi::Value AddressMisalignment(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const Napi::Number bad = Napi::Number::New(env, -1);
  if (info.Length() < 2 || !info[0].IsTypedArray() || !info[1].IsNumber()) return bad;
  const double a = info[1].As<Napi::Number>().DoubleValue();
  if (!(a >= 1 && a <= 1073741824)) return bad;
  const auto align = static_cast<uintptr_t>(a);
  if ((align & (align - 1)) != 0) return bad;
  napi_typedarray_type type;
  size_t len = 0;
  void* ptr = nullptr;
  if (napi_get_typedarray_info(env, info[0], &type, &len, &ptr, nullptr, nullptr) != napi_ok || type != napi_uint8_array) return bad;
  return Napi::Number::New(env, static_cast<double>(reinterpret_cast<uintptr_t>(ptr) & (align - 1)));
}

}  // namespace vhdcrypt
