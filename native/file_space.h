#pragma once
#include <napi.h>

namespace vhdcrypt {
// fileSpace(fd, offset, length, punch): Promise<number> — see file_space.cc.
Napi::Value FileSpace(const Napi::CallbackInfo& info);
}  // namespace vhdcrypt
