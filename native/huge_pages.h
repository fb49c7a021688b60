#pragma once
#include <napi.h>

namespace vhdcrypt {
// adviseHugePages(view: Uint8Array): number — see huge_pages.cc.
Napi::Value AdviseHugePages(const Napi::CallbackInfo& info);
}  // namespace vhdcrypt
