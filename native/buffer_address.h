#pragma once
#include <napi.h>

namespace vhdcrypt {
// addressMisalignment(view: Uint8Array, alignment: number): number — see buffer_address.cc.
Napi::Value AddressMisalignment(const Napi::CallbackInfo& info);
}  // namespace vhdcrypt
