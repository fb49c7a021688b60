// The 'vaes-avx512' XTS kernel: VAES on zmm registers, 4 blocks per instruction,
// 16 blocks (4 zmm) in flight, all round keys held in registers. Tweaks are
// computed 4 per zmm and advanced with VPCLMULQDQ; the first tweak of 16 sectors
// at a time is encrypted in one pass. Sectors under 256 bytes go to 'aesni'.
#include "xts_kernels.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

// GCC 12's avx512fintrin.h trips -Wmaybe-uninitialized on its own _mm512_undefined_* (a known false positive).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#define Z_TARGET "aes,sse4.1,pclmul,avx2,avx512f,avx512bw,avx512vl,vaes,vpclmulqdq"
#define Z_FN __attribute__((target(Z_TARGET)))
#define Z_INLINE static inline __attribute__((always_inline, target(Z_TARGET)))

namespace vhdcrypt {

namespace {

// Each 128-bit lane times x^K in GF(2^128) mod x^128+x^7+x^2+x+1 (IEEE 1619-2018
// §5.2, little-endian lanes), 0 < K < 56: shift left by K across the lane, and
// fold the K bits shifted out of the top back in as (those bits) * 0x87.
template <int K>
Z_INLINE __m512i MulXk(__m512i t, __m512i poly) {
  const __m512i out = _mm512_srli_epi64(t, 64 - K);  // bits leaving each qword
  return _mm512_ternarylogic_epi64(_mm512_slli_epi64(t, K), _mm512_bslli_epi128(out, 8),
                                   _mm512_clmulepi64_epi128(out, poly, 0x01), 0x96);
}

// [T*x^B, T*x^(B+1), T*x^(B+2), T*x^(B+3)] from T (B <= 12), by per-lane variable shifts.
template <int B>
Z_INLINE __m512i SpreadTweak(__m512i t, __m512i poly) {
  const __m512i out = _mm512_srlv_epi64(t, _mm512_set_epi64(61 - B, 61 - B, 62 - B, 62 - B, 63 - B, 63 - B, 64 - B, 64 - B));
  const __m512i in = _mm512_sllv_epi64(t, _mm512_set_epi64(B + 3, B + 3, B + 2, B + 2, B + 1, B + 1, B, B));
  return _mm512_ternarylogic_epi64(in, _mm512_bslli_epi128(out, 8), _mm512_clmulepi64_epi128(out, poly, 0x01), 0x96);
}

Z_INLINE __m512i TweakKey(const XtsKeySchedule& ks, int r) {
  return _mm512_broadcast_i32x4(_mm_load_si128(reinterpret_cast<const __m128i*>(ks.enc2[r])));
}

constexpr int kTweakBatch = 16;  // sectors whose first tweak is encrypted together

// T0 = AES-Enc(K2, n) for 16 sector numbers n = first + i*step (IEEE 1619-2018 §5.3.1).
template <int Nr>
Z_INLINE void InitialTweaks(__m128i* out, const XtsKeySchedule& ks, uint64_t first, uint64_t step) {
  alignas(64) uint64_t n[2 * kTweakBatch];
  for (int i = 0; i < kTweakBatch; i++) {
    n[2 * i] = first + static_cast<uint64_t>(i) * step;  // past the batch end this may wrap; unused then
    n[2 * i + 1] = 0;
  }
  __m512i b[4];
  for (int i = 0; i < 4; i++) b[i] = _mm512_load_si512(n + 8 * i);
  const __m512i k0 = TweakKey(ks, 0);
  for (int i = 0; i < 4; i++) b[i] = _mm512_xor_si512(b[i], k0);
  for (int r = 1; r < Nr; r++) {
    const __m512i k = TweakKey(ks, r);
    for (int i = 0; i < 4; i++) b[i] = _mm512_aesenc_epi128(b[i], k);
  }
  const __m512i kl = TweakKey(ks, Nr);
  for (int i = 0; i < 4; i++) _mm512_store_si512(out + 4 * i, _mm512_aesenclast_epi128(b[i], kl));
}

// One sector of 16*m blocks: C_j = AES(K1, P_j ^ T_j) ^ T_j, 16 blocks per step.
template <bool Enc, int Nr>
Z_INLINE void CryptSector(const uint8_t* src, uint8_t* dst, size_t blocks, __m128i t0, const __m512i* rk,
                          __m512i poly) {
  const __m512i t = _mm512_broadcast_i32x4(t0);
  __m512i tw[4] = {SpreadTweak<0>(t, poly), SpreadTweak<4>(t, poly), SpreadTweak<8>(t, poly), SpreadTweak<12>(t, poly)};
  for (size_t j = 0;;) {
    const uint8_t* s = src + 16 * j;
    uint8_t* d = dst + 16 * j;
    __m512i b[4];
    for (int i = 0; i < 4; i++) b[i] = _mm512_ternarylogic_epi64(_mm512_loadu_si512(s + 64 * i), tw[i], rk[0], 0x96);
    for (int r = 1; r < Nr; r++)
      for (int i = 0; i < 4; i++) b[i] = Enc ? _mm512_aesenc_epi128(b[i], rk[r]) : _mm512_aesdec_epi128(b[i], rk[r]);
    for (int i = 0; i < 4; i++) {
      const __m512i last = _mm512_xor_si512(rk[Nr], tw[i]);  // the last round's key xor also applies the tweak
      b[i] = Enc ? _mm512_aesenclast_epi128(b[i], last) : _mm512_aesdeclast_epi128(b[i], last);
      _mm512_storeu_si512(d + 64 * i, b[i]);
    }
    j += 16;
    if (j >= blocks) break;
    for (int i = 0; i < 4; i++) tw[i] = MulXk<16>(tw[i], poly);
  }
}

template <bool Enc, int Nr>
Z_FN void CryptBatch(const XtsKeySchedule& ks, const uint8_t* src, uint8_t* dst, size_t sectorCount,
                     size_t sectorSize, uint64_t firstTweak, uint64_t tweakStep) {
  __m512i rk[Nr + 1];
  for (int r = 0; r <= Nr; r++) rk[r] = _mm512_load_si512(Enc ? ks.enc1Wide[r] : ks.dec1Wide[r]);
  const __m512i poly = _mm512_set1_epi64(0x87);
  const size_t blocks = sectorSize / 16;
  alignas(64) __m128i t0[kTweakBatch];
  for (size_t s = 0; s < sectorCount; s += kTweakBatch) {
    InitialTweaks<Nr>(t0, ks, firstTweak + s * tweakStep, tweakStep);
    const size_t count = sectorCount - s < kTweakBatch ? sectorCount - s : kTweakBatch;
    for (size_t k = 0; k < count; k++) {
      const size_t off = (s + k) * sectorSize;
      CryptSector<Enc, Nr>(src + off, dst + off, blocks, t0[k], rk, poly);
    }
  }
  // The compiler keeps this round-key array on the stack: wipe it, and the encrypted tweaks.
  SecureWipe(rk, sizeof rk);
  SecureWipe(t0, sizeof t0);
}

}  // namespace

void XtsCryptVaesAvx512(const XtsKeySchedule& ks, bool encrypt, const uint8_t* src, uint8_t* dst, size_t sectorCount,
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
