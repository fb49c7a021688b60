// GMAC (NIST SP 800-38D: GCM authenticating data it does not encrypt) of the pieces of a buffer, for the block
// tags of a chain manifest (src/engine/pool/block-tag.ts). GHASH is computed as POLYVAL (RFC 8452 §3) of the
// byte-reversed blocks under mulX_POLYVAL(ByteReverse(H)), which RFC 8452 Appendix A shows equal: POLYVAL's
// little-endian order lets carry-less multiplication (PCLMULQDQ) work on the blocks as loaded, with a Montgomery
// reduction and no bit reflection.
#ifndef VHDCRYPT_GMAC_H
#define VHDCRYPT_GMAC_H

#include <cstddef>
#include <cstdint>
#include <vector>

namespace vhdcrypt {

// Powers of the hash key in POLYVAL form, highest first: desc[j] = H'^(16 - j), so desc[15] is H' itself and a
// step of N blocks multiplies block b by desc[16 - N + b]. Secret: derived from the key alone.
struct alignas(64) GhashKey {
  uint8_t desc[16][16];
};

// Folds `blocks` whole 16-byte blocks of GCM data into the POLYVAL accumulator `state` (16 bytes, little-endian).
using GhashBlocksFn = void (*)(const GhashKey& hk, uint8_t state[16], const uint8_t* data, size_t blocks);

void GhashBlocksPclmul(const GhashKey& hk, uint8_t state[16], const uint8_t* data, size_t blocks);
void GhashBlocksVpclmulAvx512(const GhashKey& hk, uint8_t state[16], const uint8_t* data, size_t blocks);

struct GhashKernelEntry {
  const char* name;
  GhashBlocksFn fn;
};

// GHASH kernels usable on this CPU, best first (empty without PCLMULQDQ and AES-NI, or off x86).
const std::vector<GhashKernelEntry>& UsableGhashKernels();

// The tags of `data` cut in `pieceBytes` pieces (the last may be shorter), piece k being block firstIndex + k:
// each is GMAC under the AES-256 `key` with the 96-bit IV (firstIndex + k as 8 bytes big-endian, then 4 zero bytes)
// over `prefix` (whole blocks) followed by the piece. 16 bytes per piece into `tags`.
void GmacPieceTags(GhashBlocksFn ghash, const uint8_t key[32], const uint8_t* prefix, size_t prefixLen, const uint8_t* data,
                   size_t length, size_t pieceBytes, uint64_t firstIndex, uint8_t* tags);

}  // namespace vhdcrypt

#endif
