// AES key expansion for the XTS kernels (AES-NI, FIPS 197 §5.2 and §5.3.5) and
// SecureWipe. Compiled for AES-NI only: every kernel needs AES-NI (cpu_features.cc).
#include "xts_kernels.h"

#include <cstring>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#define AESNI_FN __attribute__((target("aes,sse4.1,pclmul")))
#define AESNI_INLINE static inline __attribute__((always_inline, target("aes,sse4.1,pclmul")))

namespace vhdcrypt {

namespace {

// One step of the FIPS 197 §5.2 key schedule: fold the previous words and the
// aeskeygenassist output (already broadcast from the right dword).
AESNI_INLINE __m128i FoldKey(__m128i key, __m128i assist) {
  key = _mm_xor_si128(key, _mm_slli_si128(key, 4));
  key = _mm_xor_si128(key, _mm_slli_si128(key, 4));
  key = _mm_xor_si128(key, _mm_slli_si128(key, 4));
  return _mm_xor_si128(key, assist);
}

#define AES128_STEP(i, rcon) \
  rk[i] = FoldKey(rk[i - 1], _mm_shuffle_epi32(_mm_aeskeygenassist_si128(rk[i - 1], rcon), 0xff))

AESNI_FN void Expand128(uint8_t out[15][16], const uint8_t* key) {
  __m128i rk[11];
  rk[0] = _mm_loadu_si128(reinterpret_cast<const __m128i*>(key));
  AES128_STEP(1, 0x01); AES128_STEP(2, 0x02); AES128_STEP(3, 0x04); AES128_STEP(4, 0x08);
  AES128_STEP(5, 0x10); AES128_STEP(6, 0x20); AES128_STEP(7, 0x40); AES128_STEP(8, 0x80);
  AES128_STEP(9, 0x1b); AES128_STEP(10, 0x36);
  for (int i = 0; i <= 10; i++) _mm_store_si128(reinterpret_cast<__m128i*>(out[i]), rk[i]);
  SecureWipe(rk, sizeof rk);  // no copy of the schedule left on the stack
}

// AES-256: even round keys take RotWord+SubWord+Rcon of the previous odd one, odd
// round keys take SubWord only (FIPS 197 §5.2, Nk = 8).
#define AES256_EVEN(i, rcon) \
  rk[i] = FoldKey(rk[i - 2], _mm_shuffle_epi32(_mm_aeskeygenassist_si128(rk[i - 1], rcon), 0xff))
#define AES256_ODD(i) \
  rk[i] = FoldKey(rk[i - 2], _mm_shuffle_epi32(_mm_aeskeygenassist_si128(rk[i - 1], 0), 0xaa))

AESNI_FN void Expand256(uint8_t out[15][16], const uint8_t* key) {
  __m128i rk[15];
  rk[0] = _mm_loadu_si128(reinterpret_cast<const __m128i*>(key));
  rk[1] = _mm_loadu_si128(reinterpret_cast<const __m128i*>(key + 16));
  AES256_EVEN(2, 0x01); AES256_ODD(3); AES256_EVEN(4, 0x02); AES256_ODD(5);
  AES256_EVEN(6, 0x04); AES256_ODD(7); AES256_EVEN(8, 0x08); AES256_ODD(9);
  AES256_EVEN(10, 0x10); AES256_ODD(11); AES256_EVEN(12, 0x20); AES256_ODD(13);
  AES256_EVEN(14, 0x40);
  for (int i = 0; i <= 14; i++) _mm_store_si128(reinterpret_cast<__m128i*>(out[i]), rk[i]);
  SecureWipe(rk, sizeof rk);  // no copy of the schedule left on the stack
}

// Decryption keys for aesdec (FIPS 197 §5.3.5 equivalent inverse cipher):
// reversed order, InvMixColumns applied to all but the first and last.
AESNI_FN void MakeDecryptKeys(uint8_t dec[15][16], const uint8_t enc[15][16], int rounds) {
  auto ld = [&](int i) { return _mm_load_si128(reinterpret_cast<const __m128i*>(enc[i])); };
  _mm_store_si128(reinterpret_cast<__m128i*>(dec[0]), ld(rounds));
  for (int i = 1; i < rounds; i++) _mm_store_si128(reinterpret_cast<__m128i*>(dec[i]), _mm_aesimc_si128(ld(rounds - i)));
  _mm_store_si128(reinterpret_cast<__m128i*>(dec[rounds]), ld(0));
}

}  // namespace

void ExpandXtsKey(XtsKeySchedule& ks, const uint8_t* key1, const uint8_t* key2, size_t keyBytes) {
  if (keyBytes == 16) {
    Expand128(ks.enc1, key1);
    Expand128(ks.enc2, key2);
    ks.rounds = 10;
  } else {
    Expand256(ks.enc1, key1);
    Expand256(ks.enc2, key2);
    ks.rounds = 14;
  }
  MakeDecryptKeys(ks.dec1, ks.enc1, ks.rounds);
  for (int r = 0; r <= ks.rounds; r++)
    for (int lane = 0; lane < 4; lane++) {
      std::memcpy(ks.enc1Wide[r] + 16 * lane, ks.enc1[r], 16);
      std::memcpy(ks.dec1Wide[r] + 16 * lane, ks.dec1[r], 16);
    }
}

int ExpandAesEncryptKey(uint8_t rk[15][16], const uint8_t* key, size_t keyBytes) {
  if (keyBytes == 16) {
    Expand128(rk, key);
    return 10;
  }
  Expand256(rk, key);
  return 14;
}

}  // namespace vhdcrypt

#else  // not x86: no kernels (UsableKernels() is empty, so these are never called)

namespace vhdcrypt {
void ExpandXtsKey(XtsKeySchedule& ks, const uint8_t*, const uint8_t*, size_t keyBytes) {
  std::memset(&ks, 0, sizeof ks);
  ks.rounds = keyBytes == 16 ? 10 : 14;
}
int ExpandAesEncryptKey(uint8_t rk[15][16], const uint8_t*, size_t keyBytes) {
  std::memset(rk, 0, 15 * 16);
  return keyBytes == 16 ? 10 : 14;
}
}  // namespace vhdcrypt

#endif

namespace vhdcrypt {

void SecureWipe(void* p, size_t n) {
  std::memset(p, 0, n);
  // The empty asm "reads" p's memory, so the memset is not a dead store the compiler may drop.
  __asm__ __volatile__("" : : "r"(p) : "memory");
}

}  // namespace vhdcrypt
