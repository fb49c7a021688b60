// Carry-less multiplication in POLYVAL's field (RFC 8452 §3: GF(2^128) mod x^128 + x^127 + x^126 + x^121 + 1,
// little-endian), shared by the GHASH kernels; each unit compiles it for its own instruction set.
#ifndef VHDCRYPT_GMAC_CLMUL_H
#define VHDCRYPT_GMAC_CLMUL_H

#include <immintrin.h>

#define VHDCRYPT_CLMUL_TARGET "pclmul,sse4.1"
#define VHDCRYPT_CLMUL_INLINE static inline __attribute__((always_inline, target(VHDCRYPT_CLMUL_TARGET)))

namespace vhdcrypt {
namespace {

// A GCM block as POLYVAL takes it: its bytes reversed (RFC 8452 Appendix A).
VHDCRYPT_CLMUL_INLINE __m128i ByteReversed(__m128i x) {
  return _mm_shuffle_epi8(x, _mm_set_epi8(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
}

// (hi:lo) * x^-128 mod the POLYVAL polynomial (Montgomery reduction in two 64-bit folds: the polynomial is 1 mod
// x^64, so each fold adds the low quadword times the polynomial, whose middle terms x^121 + x^126 + x^127 land as
// x^57 + x^62 + x^63 = 0xc2 << 56 once shifted down by 64).
VHDCRYPT_CLMUL_INLINE __m128i MontgomeryReduce(__m128i lo, __m128i hi) {
  const __m128i poly = _mm_set_epi64x(static_cast<long long>(0xc200000000000000ULL), 1);
  __m128i t = _mm_clmulepi64_si128(lo, poly, 0x10);
  lo = _mm_xor_si128(_mm_shuffle_epi32(lo, 0x4e), t);
  t = _mm_clmulepi64_si128(lo, poly, 0x10);
  lo = _mm_xor_si128(_mm_shuffle_epi32(lo, 0x4e), t);
  return _mm_xor_si128(hi, lo);
}

// The 256-bit products of a and b accumulated: lo, hi, and the middle (cross) terms.
VHDCRYPT_CLMUL_INLINE void MulAccumulate(__m128i a, __m128i b, __m128i& lo, __m128i& hi, __m128i& mid) {
  lo = _mm_xor_si128(lo, _mm_clmulepi64_si128(a, b, 0x00));
  hi = _mm_xor_si128(hi, _mm_clmulepi64_si128(a, b, 0x11));
  mid = _mm_xor_si128(mid, _mm_xor_si128(_mm_clmulepi64_si128(a, b, 0x01), _mm_clmulepi64_si128(a, b, 0x10)));
}

// POLYVAL's dot(a, b) = a * b * x^-128 of the sum of products given as lo, hi, mid.
VHDCRYPT_CLMUL_INLINE __m128i ReduceProducts(__m128i lo, __m128i hi, __m128i mid) {
  return MontgomeryReduce(_mm_xor_si128(lo, _mm_slli_si128(mid, 8)), _mm_xor_si128(hi, _mm_srli_si128(mid, 8)));
}

VHDCRYPT_CLMUL_INLINE __m128i Dot(__m128i a, __m128i b) {
  __m128i lo = _mm_setzero_si128(), hi = _mm_setzero_si128(), mid = _mm_setzero_si128();
  MulAccumulate(a, b, lo, hi, mid);
  return ReduceProducts(lo, hi, mid);
}

// The blocks a wide step left over, one at a time: s = dot(s + X, H').
VHDCRYPT_CLMUL_INLINE __m128i GhashTail(const uint8_t desc[16][16], __m128i s, const uint8_t* p, size_t n) {
  const __m128i h1 = _mm_load_si128(reinterpret_cast<const __m128i*>(desc[15]));
  for (; n > 0; n--, p += 16) s = Dot(_mm_xor_si128(s, ByteReversed(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)))), h1);
  return s;
}

}  // namespace
}  // namespace vhdcrypt

#endif
