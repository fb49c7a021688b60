// bitlkStretch(initial, salt): BitLocker's key stretching (libbde "Stretch key"): a struct
// { last[32], initial[32], salt[16], u64 LE count } starting with last = 0 and count = 0, then
// 0x100000 rounds of last = SHA-256(struct), count += 1; the result is `last`. A million
// node:crypto calls cost about 1.6 s of call overhead; one native loop over OpenSSL's SHA-256
// (the library Node links, SHA-NI where the CPU has it) costs a fraction of that.
// Returns null for arguments it does not take (the caller then runs its JS loop); the
// struct and the digest context are wiped.
#include "bitlk_stretch.h"

#include <openssl/sha.h>

#include <cstdint>
#include <cstring>

#include "xts_kernels.h"

namespace vhdcrypt {

namespace {
constexpr uint32_t kRounds = 0x100000;
}  // namespace

Napi::Value BitlkStretch(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() != 2 || !info[0].IsTypedArray() || !info[1].IsTypedArray()) return env.Null();
  auto initial = info[0].As<Napi::Uint8Array>();
  auto salt = info[1].As<Napi::Uint8Array>();
  if (initial.ByteLength() != 32 || salt.ByteLength() != 16) return env.Null();
  uint8_t s[88] = {0};
  std::memcpy(s + 32, initial.Data(), 32);
  std::memcpy(s + 64, salt.Data(), 16);
  // The low-level SHA-256 calls: EVP's per-call provider dispatch costs more than the two compressions a round
  // needs. They are deprecated as an API in OpenSSL 3, not removed.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
  SHA256_CTX ctx;
  for (uint32_t i = 0; i < kRounds; i++) {
    SHA256_Init(&ctx);
    SHA256_Update(&ctx, s, sizeof s);
    SHA256_Final(s, &ctx);
    const uint64_t count = static_cast<uint64_t>(i) + 1;
    for (int b = 0; b < 8; b++) s[80 + b] = static_cast<uint8_t>(count >> (8 * b));
  }
#pragma GCC diagnostic pop
  SecureWipe(&ctx, sizeof ctx);
  Napi::Uint8Array out = Napi::Uint8Array::New(env, 32);
  std::memcpy(out.Data(), s, 32);
  SecureWipe(s, sizeof s);
  return out;
}

}  // namespace vhdcrypt
