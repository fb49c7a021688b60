#pragma once
#include <napi.h>

namespace vhdcrypt {
// peerUid(fd): number | undefined — see peer_cred.cc.
Napi::Value PeerUid(const Napi::CallbackInfo& info);
}  // namespace vhdcrypt
