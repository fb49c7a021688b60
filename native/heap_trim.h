#pragma once
#include <napi.h>

namespace vhdcrypt {
// trimHeap(): boolean — see heap_trim.cc.
Napi::Value TrimHeap(const Napi::CallbackInfo& info);
// keepFreedHeap(mmapThreshold: number, trimThreshold: number): boolean — see heap_trim.cc.
Napi::Value KeepFreedHeap(const Napi::CallbackInfo& info);
// detachArrayBuffer(ab: ArrayBuffer): undefined — see heap_trim.cc.
Napi::Value DetachArrayBuffer(const Napi::CallbackInfo& info);
}  // namespace vhdcrypt
