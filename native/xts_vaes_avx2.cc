// The 'vaes-avx2' XTS kernel: VAES on ymm registers, 2 blocks per instruction,
// 16 blocks (8 ymm) in flight. With only 16 ymm registers the round keys are
// memory operands read from the key schedule's pre-broadcast copies. Tweaks are
// computed 2 per ymm and advanced with VPCLMULQDQ. Sectors under 256 bytes go
// to 'aesni'.
#include "xts_kernels.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#define Y_TARGET "aes,sse4.1,pclmul,avx,avx2,vaes,vpclmulqdq"
#define Y_FN __attribute__((target(Y_TARGET)))
#define Y_INLINE static inline __attribute__((always_inline, target(Y_TARGET)))

namespace vhdcrypt {

namespace {

// Each 128-bit lane times x^K in GF(2^128) (IEEE 1619-2018 §5.2), 0 < K < 56:
// shift left by K, fold the K bits leaving the top back in as (bits) * 0x87.
template <int K>
Y_INLINE __m256i MulXk(__m256i t, __m256i poly) {
  const __m256i out = _mm256_srli_epi64(t, 64 - K);
  return _mm256_xor_si256(_mm256_xor_si256(_mm256_slli_epi64(t, K), _mm256_bslli_epi128(out, 8)),
                          _mm256_clmulepi64_epi128(out, poly, 0x01));
}

// [T, T*x] from T.
Y_INLINE __m256i SpreadTweak(__m128i t0, __m256i poly) {
  const __m256i t = _mm256_broadcastsi128_si256(t0);
  const __m256i out = _mm256_srlv_epi64(t, _mm256_set_epi64x(63, 63, 64, 64));
  return _mm256_xor_si256(_mm256_xor_si256(_mm256_sllv_epi64(t, _mm256_set_epi64x(1, 1, 0, 0)), _mm256_bslli_epi128(out, 8)),
                          _mm256_clmulepi64_epi128(out, poly, 0x01));
}

Y_INLINE __m256i WideKey(const uint8_t (*keys)[64], int r) {
  return _mm256_load_si256(reinterpret_cast<const __m256i*>(keys[r]));
}

constexpr int kTweakBatch = 8;  // sectors whose first tweak is encrypted together

// T0 = AES-Enc(K2, n) for 8 sector numbers n = first + i*step (IEEE 1619-2018 §5.3.1).
template <int Nr>
Y_INLINE void InitialTweaks(__m128i* out, const XtsKeySchedule& ks, uint64_t first, uint64_t step) {
  alignas(32) uint64_t n[2 * kTweakBatch];
  for (int i = 0; i < kTweakBatch; i++) {
    n[2 * i] = first + static_cast<uint64_t>(i) * step;  // past the batch end this may wrap; unused then
    n[2 * i + 1] = 0;
  }
  __m256i b[4];
  for (int i = 0; i < 4; i++) b[i] = _mm256_load_si256(reinterpret_cast<const __m256i*>(n + 4 * i));
  const __m256i k0 = _mm256_broadcastsi128_si256(_mm_load_si128(reinterpret_cast<const __m128i*>(ks.enc2[0])));
  for (int i = 0; i < 4; i++) b[i] = _mm256_xor_si256(b[i], k0);
  for (int r = 1; r < Nr; r++) {
    const __m256i k = _mm256_broadcastsi128_si256(_mm_load_si128(reinterpret_cast<const __m128i*>(ks.enc2[r])));
    for (int i = 0; i < 4; i++) b[i] = _mm256_aesenc_epi128(b[i], k);
  }
  const __m256i kl = _mm256_broadcastsi128_si256(_mm_load_si128(reinterpret_cast<const __m128i*>(ks.enc2[Nr])));
  for (int i = 0; i < 4; i++)
    _mm256_store_si256(reinterpret_cast<__m256i*>(out + 2 * i), _mm256_aesenclast_epi128(b[i], kl));
}

// One sector of 16*m blocks: C_j = AES(K1, P_j ^ T_j) ^ T_j, 16 blocks per step.
template <bool Enc, int Nr>
Y_INLINE void CryptSector(const uint8_t* src, uint8_t* dst, size_t blocks, __m128i t0, const uint8_t (*keys)[64],
                          __m256i poly) {
  __m256i tw[8];
  tw[0] = SpreadTweak(t0, poly);
  for (int i = 1; i < 8; i++) tw[i] = MulXk<2>(tw[i - 1], poly);
  for (size_t j = 0;;) {
    const uint8_t* s = src + 16 * j;
    uint8_t* d = dst + 16 * j;
    __m256i b[8];
    const __m256i k0 = WideKey(keys, 0);
    for (int i = 0; i < 8; i++)
      b[i] = _mm256_xor_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(s + 32 * i)), _mm256_xor_si256(tw[i], k0));
    for (int r = 1; r < Nr; r++) {
      const __m256i k = WideKey(keys, r);
      for (int i = 0; i < 8; i++) b[i] = Enc ? _mm256_aesenc_epi128(b[i], k) : _mm256_aesdec_epi128(b[i], k);
    }
    const __m256i kl = WideKey(keys, Nr);
    for (int i = 0; i < 8; i++) {
      const __m256i last = _mm256_xor_si256(kl, tw[i]);  // the last round's key xor also applies the tweak
      b[i] = Enc ? _mm256_aesenclast_epi128(b[i], last) : _mm256_aesdeclast_epi128(b[i], last);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(d + 32 * i), b[i]);
    }
    j += 16;
    if (j >= blocks) break;  // no tweak advance past the sector's end
    for (int i = 0; i < 8; i++) tw[i] = MulXk<16>(tw[i], poly);
  }
}

template <bool Enc, int Nr>
Y_FN void CryptBatch(const XtsKeySchedule& ks, const uint8_t* src, uint8_t* dst, size_t sectorCount,
                     size_t sectorSize, uint64_t firstTweak, uint64_t tweakStep) {
  const uint8_t(*keys)[64] = Enc ? ks.enc1Wide : ks.dec1Wide;
  const __m256i poly = _mm256_set1_epi64x(0x87);
  const size_t blocks = sectorSize / 16;
  alignas(32) __m128i t0[kTweakBatch];
  for (size_t s = 0; s < sectorCount; s += kTweakBatch) {
    InitialTweaks<Nr>(t0, ks, firstTweak + s * tweakStep, tweakStep);
    const size_t count = sectorCount - s < kTweakBatch ? sectorCount - s : kTweakBatch;
    for (size_t k = 0; k < count; k++) {
      const size_t off = (s + k) * sectorSize;
      CryptSector<Enc, Nr>(src + off, dst + off, blocks, t0[k], keys, poly);
    }
  }
  SecureWipe(t0, sizeof t0);
  _mm256_zeroupper();
}

}  // namespace

void XtsCryptVaesAvx2(const XtsKeySchedule& ks, bool encrypt, const uint8_t* src, uint8_t* dst, size_t sectorCount,
                      size_t sectorSize, uint64_t firstTweak, uint64_t tweakStep) {
  if (sectorSize < 256) {
    XtsCryptAesni(ks, encrypt, src, dst, sectorCount, sectorSize, firstTweak, tweakStep);
    return;
  }
  if (ks.rounds == 10) {
    if (encrypt) CryptBatch<true, 10>(ks, src, dst, sectorCount, sectorSize, firstTweak, tweakStep);
    else CryptBatch<false, 10>(ks, src, dst, sectorCount, sectorSize, firstTweak, tweakStep);
  } else {
    if (encrypt) CryptBatch<true, 14>(ks, src, dst, sectorCount, sectorSize, firstTweak, tweakStep);
    else CryptBatch<false, 14>(ks, src, dst, sectorCount, sectorSize, firstTweak, tweakStep);
  }
}

}  // namespace vhdcrypt

#endif
