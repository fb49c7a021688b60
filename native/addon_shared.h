// Helpers of addon.cc shared with the addon's other Node-API classes (nbd_direct_read.cc).
#ifndef VHDCRYPT_ADDON_SHARED_H
#define VHDCRYPT_ADDON_SHARED_H

#include <napi.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "cpu_features.h"

namespace vhdcrypt {

// Throws a typed error: the JS error factory's object, or a plain Error with `code`.
void ThrowXts(Napi::Env env, const char* code, const std::string& message);

// A Uint8Array's bytes in place (any byte offset, ArrayBuffer or SharedArrayBuffer).
bool GetBytes(const Napi::Value& v, uint8_t** data, size_t* length);

// True for a 32- or 64-byte key with unequal halves (IEEE 1619-2018 §5.1); otherwise throws and returns false.
bool CheckXtsKey(Napi::Env env, const uint8_t* key, size_t keyLen);

// The usable kernel called `name`; nullptr after throwing XTS_BACKEND_UNAVAILABLE.
const KernelEntry* RequireKernel(Napi::Env env, const std::string& name);

}  // namespace vhdcrypt

#endif
