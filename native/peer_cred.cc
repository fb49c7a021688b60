// peerUid(fd): the uid of the process at the other end of a connected Unix
// socket, from getsockopt(SO_PEERCRED) (unix(7)): the credentials the kernel
// recorded when the peer called connect(2), so the peer cannot forge them.
// Node has no accessor for them. Returns undefined when the descriptor is not
// a Unix socket, the call fails, or the platform has no SO_PEERCRED.
#include "peer_cred.h"

#include <cstdint>

#if defined(__linux__)
#include <sys/socket.h>
#include <sys/types.h>
#endif

namespace vhdcrypt {

Napi::Value PeerUid(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsNumber()) return env.Undefined();
  const double d = info[0].As<Napi::Number>().DoubleValue();
  if (!(d >= 0 && d <= INT32_MAX) || d != static_cast<double>(static_cast<int32_t>(d))) return env.Undefined();
#if defined(__linux__)
  struct ucred cred {};
  socklen_t len = sizeof cred;
  if (getsockopt(static_cast<int>(d), SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 || len != sizeof cred) return env.Undefined();
  return Napi::Number::New(env, static_cast<double>(cred.uid));
#else
  return env.Undefined();
#endif
}

}  // namespace vhdcrypt
