// afMerge(material, keyBytes, stripes, hash): the key that LUKS's anti-forensic
// splitter spread over `stripes` blocks (LUKS1 spec §2.4, AF-merge; LUKS2's
// "af": "luks1"). Each unlock diffuses 4000 stripes, i.e. 8000 tiny hashes,
// which cost far more as 8000 node:crypto calls than in one native loop. The hashes
// are OpenSSL's, the one Node itself links (EVP_sha1/sha256/sha512), not ours.
// Returns null for arguments it does not take (the caller then uses its JS
// version); every intermediate copy of the key is wiped.
#include "af_merge.h"

#include <openssl/evp.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "addon_shared.h"
#include "xts_kernels.h"

namespace vhdcrypt {

namespace {

const EVP_MD* LuksDigest(const std::string& name) {
  if (name == "sha1") return EVP_sha1();
  if (name == "sha256") return EVP_sha256();
  if (name == "sha512") return EVP_sha512();
  return nullptr;
}

struct CtxFree {
  void operator()(EVP_MD_CTX* c) const { EVP_MD_CTX_free(c); }
};

// d[j] = H(be32(j) || d[j]) per digest-sized block j, the last block truncated (spec §2.4 "diffuse").
bool Diffuse(EVP_MD_CTX* ctx, const EVP_MD* md, uint8_t* d, size_t n, size_t ds, uint8_t* scratch) {
  for (size_t j = 0, off = 0; off < n; j++, off += ds) {
    const size_t len = n - off < ds ? n - off : ds;
    const uint8_t iv[4] = {static_cast<uint8_t>(j >> 24), static_cast<uint8_t>(j >> 16), static_cast<uint8_t>(j >> 8), static_cast<uint8_t>(j)};
    unsigned int outLen = 0;
    if (EVP_DigestInit_ex(ctx, md, nullptr) != 1 || EVP_DigestUpdate(ctx, iv, sizeof iv) != 1 || EVP_DigestUpdate(ctx, d + off, len) != 1 ||
        EVP_DigestFinal_ex(ctx, scratch, &outLen) != 1 || outLen != ds) {
      return false;
    }
    std::memcpy(d + off, scratch, len);
  }
  return true;
}

}  // namespace

Napi::Value AfMerge(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint8_t* material = nullptr;
  size_t materialLen = 0;
  if (info.Length() < 4 || !GetBytes(info[0], &material, &materialLen) || !info[1].IsNumber() || !info[2].IsNumber() || !info[3].IsString()) {
    return env.Null();
  }
  const double kb = info[1].As<Napi::Number>().DoubleValue();
  const double st = info[2].As<Napi::Number>().DoubleValue();
  // Keys up to 1 KiB (LUKS keys are at most 512 bits), stripes up to 65536 (the caller has checked the header).
  if (!(kb >= 1 && kb <= 1024 && kb == static_cast<double>(static_cast<size_t>(kb))) || !(st >= 1 && st <= 65536 && st == static_cast<double>(static_cast<size_t>(st)))) {
    return env.Null();
  }
  const size_t keyBytes = static_cast<size_t>(kb);
  const size_t stripes = static_cast<size_t>(st);
  if (materialLen < keyBytes * stripes) return env.Null();
  const EVP_MD* md = LuksDigest(info[3].As<Napi::String>().Utf8Value());
  if (md == nullptr) return env.Null();
  const size_t ds = static_cast<size_t>(EVP_MD_get_size(md));
  std::unique_ptr<EVP_MD_CTX, CtxFree> ctx(EVP_MD_CTX_new());
  if (!ctx) return env.Null();

  std::vector<uint8_t> d(keyBytes, 0);
  uint8_t scratch[EVP_MAX_MD_SIZE];
  bool ok = true;
  for (size_t i = 0; ok && i + 1 < stripes; i++) {
    const uint8_t* s = material + i * keyBytes;
    for (size_t k = 0; k < keyBytes; k++) d[k] ^= s[k];
    ok = Diffuse(ctx.get(), md, d.data(), keyBytes, ds, scratch);
  }
  Napi::Value result = env.Null();
  if (ok) {
    const uint8_t* last = material + (stripes - 1) * keyBytes;
    Napi::Uint8Array out = Napi::Uint8Array::New(env, keyBytes);
    for (size_t k = 0; k < keyBytes; k++) out[k] = d[k] ^ last[k];
    result = out;
  }
  SecureWipe(d.data(), d.size());
  SecureWipe(scratch, sizeof scratch);
  return result;
}

}  // namespace vhdcrypt
