// The 'pclmul' GHASH kernel: eight blocks per reduction (aggregated: the step's sum of X_b * H'^(8-b) reduced
// once), one 128-bit lane per PCLMULQDQ. Every x86-64 CPU with AES-NI has PCLMULQDQ.
#include "gmac.h"

#if defined(__x86_64__) || defined(__i386__)
#include "gmac_clmul.h"

namespace vhdcrypt {

__attribute__((target(VHDCRYPT_CLMUL_TARGET))) void GhashBlocksPclmul(const GhashKey& hk, uint8_t state[16], const uint8_t* p,
                                                                      size_t n) {
  __m128i s = _mm_loadu_si128(reinterpret_cast<const __m128i*>(state));
  if (n >= 8) {
    __m128i h[8];
    for (int b = 0; b < 8; b++) h[b] = _mm_load_si128(reinterpret_cast<const __m128i*>(hk.desc[8 + b]));
    for (; n >= 8; n -= 8, p += 128) {
      __m128i lo = _mm_setzero_si128(), hi = _mm_setzero_si128(), mid = _mm_setzero_si128();
      for (int b = 0; b < 8; b++) {
        __m128i x = ByteReversed(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 16 * b)));
        if (b == 0) x = _mm_xor_si128(x, s);
        MulAccumulate(x, h[b], lo, hi, mid);
      }
      s = ReduceProducts(lo, hi, mid);
    }
  }
  s = GhashTail(hk.desc, s, p, n);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(state), s);
}

}  // namespace vhdcrypt
#endif
