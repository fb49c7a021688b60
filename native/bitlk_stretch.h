#pragma once
#include <napi.h>

namespace vhdcrypt {
// bitlkStretch(initial: Uint8Array(32), salt: Uint8Array(16)): Uint8Array(32) | null — see bitlk_stretch.cc.
Napi::Value BitlkStretch(const Napi::CallbackInfo& info);
}  // namespace vhdcrypt
