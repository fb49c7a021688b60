// GMAC piece tags (gmac.h): the hash key and its powers, the per-piece GHASH over prefix, data and lengths
// (SP 800-38D §7.1 with an empty ciphertext: the data is all additional authenticated data), and the IV's mask.
#include "gmac.h"

#include <cstring>

#include "xts_kernels.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>

#include "gmac_clmul.h"

#define VHDCRYPT_AES_TARGET "aes,pclmul,sse4.1"

namespace vhdcrypt {

namespace {

__attribute__((target(VHDCRYPT_AES_TARGET))) void AesEncryptBlock(const uint8_t rk[15][16], int rounds, const uint8_t in[16],
                                                                  uint8_t out[16]) {
  auto key = [&](int r) { return _mm_load_si128(reinterpret_cast<const __m128i*>(rk[r])); };
  __m128i x = _mm_xor_si128(_mm_loadu_si128(reinterpret_cast<const __m128i*>(in)), key(0));
  for (int r = 1; r < rounds; r++) x = _mm_aesenc_si128(x, key(r));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(out), _mm_aesenclast_si128(x, key(rounds)));
}

// H' = mulX_POLYVAL(ByteReverse(H)) (RFC 8452 Appendix A) and its powers up to the 16th.
__attribute__((target(VHDCRYPT_CLMUL_TARGET))) void MakeGhashKey(GhashKey& hk, const uint8_t h[16]) {
  uint64_t lo = 0, hi = 0;
  for (int i = 0; i < 8; i++) {
    lo |= static_cast<uint64_t>(h[15 - i]) << (8 * i);
    hi |= static_cast<uint64_t>(h[7 - i]) << (8 * i);
  }
  const bool carry = (hi >> 63) != 0;
  hi = (hi << 1) | (lo >> 63);
  lo <<= 1;
  if (carry) {  // x^128 = x^127 + x^126 + x^121 + 1 in POLYVAL's field
    hi ^= 0xc200000000000000ULL;
    lo ^= 1;
  }
  const __m128i h1 = _mm_set_epi64x(static_cast<long long>(hi), static_cast<long long>(lo));
  __m128i power = h1;
  _mm_store_si128(reinterpret_cast<__m128i*>(hk.desc[15]), power);
  for (int j = 14; j >= 0; j--) {
    power = Dot(power, h1);
    _mm_store_si128(reinterpret_cast<__m128i*>(hk.desc[j]), power);
  }
  lo = hi = 0;
}

std::vector<GhashKernelEntry> Detect() {
  std::vector<GhashKernelEntry> out;
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return out;
  const bool aesni = (c >> 25) & 1, pclmul = (c >> 1) & 1, sse41 = (c >> 19) & 1;
  if (!(aesni && pclmul && sse41)) return out;
  bool zmm = false;
  const bool osxsave = (c >> 27) & 1, avx = (c >> 28) & 1;
  if (osxsave && avx && __get_cpuid_max(0, nullptr) >= 7) {
    uint32_t xlo, xhi;
    __asm__ volatile("xgetbv" : "=a"(xlo), "=d"(xhi) : "c"(0));
    const bool osZmm = (xlo & 0xe6) == 0xe6;  // SSE, AVX, opmask, ZMM_Hi256, Hi16_ZMM state saved by the OS
    __cpuid_count(7, 0, a, b, c, d);
    const bool avx2 = (b >> 5) & 1, f = (b >> 16) & 1, bw = (b >> 30) & 1, vl = (b >> 31) & 1, vpclmul = (c >> 10) & 1;
    zmm = osZmm && avx2 && f && bw && vl && vpclmul;
  }
  if (zmm) out.push_back({"vpclmul-avx512", GhashBlocksVpclmulAvx512});
  out.push_back({"pclmul", GhashBlocksPclmul});
  return out;
}

}  // namespace

const std::vector<GhashKernelEntry>& UsableGhashKernels() {
  static const std::vector<GhashKernelEntry> kernels = Detect();  // thread-safe, once per process
  return kernels;
}

void GmacPieceTags(GhashBlocksFn ghash, const uint8_t key[32], const uint8_t* prefix, size_t prefixLen, const uint8_t* data,
                   size_t length, size_t pieceBytes, uint64_t firstIndex, uint8_t* tags) {
  alignas(16) uint8_t rk[15][16];
  const int rounds = ExpandAesEncryptKey(rk, key, 32);
  alignas(16) uint8_t block[16] = {0};
  AesEncryptBlock(rk, rounds, block, block);  // H = E_K(0^128)
  GhashKey hk;
  MakeGhashKey(hk, block);
  // The prefix is the same before every piece: its GHASH state once.
  alignas(16) uint8_t afterPrefix[16] = {0};
  ghash(hk, afterPrefix, prefix, prefixLen / 16);
  alignas(16) uint8_t state[16];
  uint64_t index = firstIndex;
  for (size_t at = 0; at < length; at += pieceBytes, index++, tags += 16) {
    const size_t n = length - at < pieceBytes ? length - at : pieceBytes;
    std::memcpy(state, afterPrefix, 16);
    ghash(hk, state, data + at, n / 16);
    if (n % 16 != 0) {  // the last partial block, zero-padded (SP 800-38D §6.4, §7.1 step 5)
      std::memset(block, 0, 16);
      std::memcpy(block, data + at + n - n % 16, n % 16);
      ghash(hk, state, block, 1);
    }
    // len(A) || len(C) in bits, each 64 bits big-endian; C is empty.
    const uint64_t bits = static_cast<uint64_t>(prefixLen + n) * 8;
    for (int i = 0; i < 8; i++) block[i] = static_cast<uint8_t>(bits >> (56 - 8 * i));
    std::memset(block + 8, 0, 8);
    ghash(hk, state, block, 1);
    // J0 = IV || 0^31 || 1 with the 96-bit IV of this piece; tag = GHASH (byte-reversed back) ^ E_K(J0).
    for (int i = 0; i < 8; i++) block[i] = static_cast<uint8_t>(index >> (56 - 8 * i));
    std::memset(block + 8, 0, 8);
    block[15] = 1;
    AesEncryptBlock(rk, rounds, block, block);
    for (int i = 0; i < 16; i++) tags[i] = static_cast<uint8_t>(state[15 - i] ^ block[i]);
  }
  SecureWipe(rk, sizeof rk);
  SecureWipe(&hk, sizeof hk);
  SecureWipe(block, sizeof block);
  SecureWipe(afterPrefix, sizeof afterPrefix);
  SecureWipe(state, sizeof state);
}

}  // namespace vhdcrypt

#else  // not x86: no kernels (UsableGhashKernels() is empty, so GmacPieceTags is never called)

namespace vhdcrypt {
const std::vector<GhashKernelEntry>& UsableGhashKernels() {
  static const std::vector<GhashKernelEntry> none;
  return none;
}
void GmacPieceTags(GhashBlocksFn, const uint8_t*, const uint8_t*, size_t, const uint8_t*, size_t, size_t, uint64_t, uint8_t*) {}
void GhashBlocksPclmul(const GhashKey&, uint8_t*, const uint8_t*, size_t) {}
void GhashBlocksVpclmulAvx512(const GhashKey&, uint8_t*, const uint8_t*, size_t) {}
}  // namespace vhdcrypt

#endif
