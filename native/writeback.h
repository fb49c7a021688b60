#pragma once
#include <napi.h>

namespace vhdcrypt {
// startWriteback(fd: number): boolean — see writeback.cc.
Napi::Value StartWriteback(const Napi::CallbackInfo& info);
}  // namespace vhdcrypt
