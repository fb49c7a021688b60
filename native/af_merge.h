#pragma once
#include <napi.h>

namespace vhdcrypt {
// afMerge(material, keyBytes, stripes, hash): Uint8Array | null — see af_merge.cc.
Napi::Value AfMerge(const Napi::CallbackInfo& info);
}  // namespace vhdcrypt
