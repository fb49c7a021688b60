// AES key expansion (AES-NI) and the 'aesni' XTS kernel: xmm registers, 8 blocks
// in flight per sector. Also used by the VAES kernels for sectors under 256 bytes.
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

// Tweak times alpha in GF(2^128), IEEE 1619-2018 §5.2: the 128-bit little-endian
// value shifted left by one, 0x87 folded into byte 0 when bit 127 falls out.
AESNI_INLINE __m128i MulAlpha(__m128i t) {
  __m128i carry = _mm_shuffle_epi32(_mm_srai_epi32(t, 31), 0x93);  // each dword's sign to the next dword
  carry = _mm_and_si128(carry, _mm_set_epi32(1, 1, 1, 0x87));
  return _mm_xor_si128(_mm_slli_epi32(t, 1), carry);
}

template <int Nr>
AESNI_INLINE void EncryptBlocks8(__m128i* b, const __m128i* rk, int count) {
  for (int i = 0; i < count; i++) b[i] = _mm_xor_si128(b[i], rk[0]);
  for (int r = 1; r < Nr; r++)
    for (int i = 0; i < count; i++) b[i] = _mm_aesenc_si128(b[i], rk[r]);
  for (int i = 0; i < count; i++) b[i] = _mm_aesenclast_si128(b[i], rk[Nr]);
}

// T0 = AES-Enc(K2, tweak16) for `count` (<= 8) consecutive sectors (IEEE 1619-2018 §5.3.1).
template <int Nr>
AESNI_INLINE void InitialTweaks(__m128i* t, const __m128i* rk2, uint64_t first, uint64_t step, int count) {
  for (int i = 0; i < count; i++)
    t[i] = _mm_set_epi64x(0, static_cast<long long>(first + static_cast<uint64_t>(i) * step));
  for (int i = 0; i < count; i++) t[i] = _mm_xor_si128(t[i], rk2[0]);
  for (int r = 1; r < Nr; r++)
    for (int i = 0; i < count; i++) t[i] = _mm_aesenc_si128(t[i], rk2[r]);
  for (int i = 0; i < count; i++) t[i] = _mm_aesenclast_si128(t[i], rk2[Nr]);
}

template <bool Enc, int Nr>
AESNI_INLINE __m128i CryptOne(__m128i x, const __m128i* rk) {
  x = _mm_xor_si128(x, rk[0]);
  for (int r = 1; r < Nr; r++) x = Enc ? _mm_aesenc_si128(x, rk[r]) : _mm_aesdec_si128(x, rk[r]);
  return Enc ? _mm_aesenclast_si128(x, rk[Nr]) : _mm_aesdeclast_si128(x, rk[Nr]);
}

// One sector: C_j = AES(K1, P_j ^ T_j) ^ T_j, 8 blocks per step.
template <bool Enc, int Nr>
AESNI_INLINE void CryptSector(const uint8_t* src, uint8_t* dst, size_t blocks, __m128i t, const __m128i* rk) {
  size_t j = 0;
  for (; j + 8 <= blocks; j += 8) {
    __m128i tw[8], b[8];
    tw[0] = t;
    for (int i = 1; i < 8; i++) tw[i] = MulAlpha(tw[i - 1]);
    t = MulAlpha(tw[7]);
    for (int i = 0; i < 8; i++)
      b[i] = _mm_xor_si128(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 16 * (j + i))), _mm_xor_si128(tw[i], rk[0]));
    for (int r = 1; r < Nr; r++)
      for (int i = 0; i < 8; i++) b[i] = Enc ? _mm_aesenc_si128(b[i], rk[r]) : _mm_aesdec_si128(b[i], rk[r]);
    for (int i = 0; i < 8; i++) {
      const __m128i last = _mm_xor_si128(rk[Nr], tw[i]);  // AESENCLAST ends with a key xor: fold the tweak in
      b[i] = Enc ? _mm_aesenclast_si128(b[i], last) : _mm_aesdeclast_si128(b[i], last);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + 16 * (j + i)), b[i]);
    }
  }
  for (; j < blocks; j++) {
    __m128i x = _mm_xor_si128(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 16 * j)), t);
    x = _mm_xor_si128(CryptOne<Enc, Nr>(x, rk), t);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + 16 * j), x);
    t = MulAlpha(t);
  }
}

template <bool Enc, int Nr>
AESNI_FN void CryptBatch(const XtsKeySchedule& ks, const uint8_t* src, uint8_t* dst, size_t sectorCount,
                         size_t sectorSize, uint64_t firstTweak, uint64_t tweakStep) {
  // Round keys are read in place (memory operands), so no copy of them is left on the stack.
  const __m128i* rk = reinterpret_cast<const __m128i*>(Enc ? ks.enc1 : ks.dec1);
  const __m128i* rk2 = reinterpret_cast<const __m128i*>(ks.enc2);
  const size_t blocks = sectorSize / 16;
  for (size_t s = 0; s < sectorCount; s += 8) {
    const int count = sectorCount - s >= 8 ? 8 : static_cast<int>(sectorCount - s);
    __m128i t0[8];
    InitialTweaks<Nr>(t0, rk2, firstTweak + s * tweakStep, tweakStep, count);
    for (int k = 0; k < count; k++) {
      const size_t off = (s + k) * sectorSize;
      CryptSector<Enc, Nr>(src + off, dst + off, blocks, t0[k], rk);
    }
    SecureWipe(t0, sizeof t0);  // encrypted tweaks derive from K2
  }
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

void XtsCryptAesni(const XtsKeySchedule& ks, bool encrypt, const uint8_t* src, uint8_t* dst, size_t sectorCount,
                   size_t sectorSize, uint64_t firstTweak, uint64_t tweakStep) {
  if (ks.rounds == 10) {
    if (encrypt) CryptBatch<true, 10>(ks, src, dst, sectorCount, sectorSize, firstTweak, tweakStep);
    else CryptBatch<false, 10>(ks, src, dst, sectorCount, sectorSize, firstTweak, tweakStep);
  } else {
    if (encrypt) CryptBatch<true, 14>(ks, src, dst, sectorCount, sectorSize, firstTweak, tweakStep);
    else CryptBatch<false, 14>(ks, src, dst, sectorCount, sectorSize, firstTweak, tweakStep);
  }
}

}  // namespace vhdcrypt

#else  // not x86: no kernels (UsableKernels() is empty, so these are never called)

namespace vhdcrypt {
void ExpandXtsKey(XtsKeySchedule& ks, const uint8_t*, const uint8_t*, size_t keyBytes) {
  std::memset(&ks, 0, sizeof ks);
  ks.rounds = keyBytes == 16 ? 10 : 14;
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
