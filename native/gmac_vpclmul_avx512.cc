// The 'vpclmul-avx512' GHASH kernel: four blocks per VPCLMULQDQ on 512-bit vectors, sixteen blocks per reduction
// (block b of a step times H'^(16-b), the four lanes summed before one Montgomery reduction), three-way xors by
// VPTERNLOGQ. CPUs: as the vaes-avx512 XTS kernel (Intel Ice Lake and later, AMD Zen 4 and later).
#include "gmac.h"

#if defined(__x86_64__) || defined(__i386__)
#include "gmac_clmul.h"

#define VHDCRYPT_ZMM_TARGET "pclmul,sse4.1,avx2,avx512f,avx512bw,avx512vl,vpclmulqdq"
#if defined(__GNUC__) && !defined(__clang__)
// GCC 12's avx512fintrin.h trips -Wmaybe-uninitialized on its own _mm512_undefined_* (a known false positive).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace vhdcrypt {

namespace {

__attribute__((always_inline, target(VHDCRYPT_ZMM_TARGET))) inline __m512i Xor3(__m512i a, __m512i b, __m512i c) {
  return _mm512_ternarylogic_epi64(a, b, c, 0x96);
}

// The xor of a vector's four 128-bit lanes.
__attribute__((always_inline, target(VHDCRYPT_ZMM_TARGET))) inline __m128i FoldLanes(__m512i v) {
  const __m256i y = _mm256_xor_si256(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64(v, 1));
  return _mm_xor_si128(_mm256_castsi256_si128(y), _mm256_extracti128_si256(y, 1));
}

}  // namespace

__attribute__((target(VHDCRYPT_ZMM_TARGET))) void GhashBlocksVpclmulAvx512(const GhashKey& hk, uint8_t state[16], const uint8_t* p,
                                                                           size_t n) {
  __m128i s = _mm_loadu_si128(reinterpret_cast<const __m128i*>(state));
  if (n >= 16) {
    const __m512i swap = _mm512_broadcast_i32x4(_mm_set_epi8(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
    // Vector v, lane l: block 4v + l of the step, times desc[4v + l] = H'^(16 - 4v - l).
    const __m512i h0 = _mm512_load_si512(hk.desc[0]), h1 = _mm512_load_si512(hk.desc[4]);
    const __m512i h2 = _mm512_load_si512(hk.desc[8]), h3 = _mm512_load_si512(hk.desc[12]);
    for (; n >= 16; n -= 16, p += 256) {
      const __m512i x0 = _mm512_xor_si512(_mm512_shuffle_epi8(_mm512_loadu_si512(p), swap), _mm512_zextsi128_si512(s));
      const __m512i x1 = _mm512_shuffle_epi8(_mm512_loadu_si512(p + 64), swap);
      const __m512i x2 = _mm512_shuffle_epi8(_mm512_loadu_si512(p + 128), swap);
      const __m512i x3 = _mm512_shuffle_epi8(_mm512_loadu_si512(p + 192), swap);
      __m512i lo = Xor3(_mm512_clmulepi64_epi128(x0, h0, 0x00), _mm512_clmulepi64_epi128(x1, h1, 0x00), _mm512_clmulepi64_epi128(x2, h2, 0x00));
      lo = _mm512_xor_si512(lo, _mm512_clmulepi64_epi128(x3, h3, 0x00));
      __m512i hi = Xor3(_mm512_clmulepi64_epi128(x0, h0, 0x11), _mm512_clmulepi64_epi128(x1, h1, 0x11), _mm512_clmulepi64_epi128(x2, h2, 0x11));
      hi = _mm512_xor_si512(hi, _mm512_clmulepi64_epi128(x3, h3, 0x11));
      __m512i mid = Xor3(_mm512_clmulepi64_epi128(x0, h0, 0x01), _mm512_clmulepi64_epi128(x0, h0, 0x10), _mm512_clmulepi64_epi128(x1, h1, 0x01));
      mid = Xor3(mid, _mm512_clmulepi64_epi128(x1, h1, 0x10), _mm512_clmulepi64_epi128(x2, h2, 0x01));
      mid = Xor3(mid, _mm512_clmulepi64_epi128(x2, h2, 0x10), _mm512_clmulepi64_epi128(x3, h3, 0x01));
      mid = _mm512_xor_si512(mid, _mm512_clmulepi64_epi128(x3, h3, 0x10));
      s = ReduceProducts(FoldLanes(lo), FoldLanes(hi), FoldLanes(mid));
    }
  }
  s = GhashTail(hk.desc, s, p, n);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(state), s);
}

}  // namespace vhdcrypt
#endif
