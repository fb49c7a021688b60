// Shared declarations of the AES-XTS kernels (IEEE 1619-2018) and their key schedule.
// The kernels come from one width-parameterised source, xts_kernel.h; each is
// instantiated in its own translation unit with its own target attributes, so the
// addon builds and loads on CPUs that lack the wider ones.
#ifndef VHDCRYPT_XTS_KERNELS_H
#define VHDCRYPT_XTS_KERNELS_H

#include <cstddef>
#include <cstdint>

namespace vhdcrypt {

// Round keys of both XTS halves. K1 (the first key half) encrypts the data,
// K2 (the second half) encrypts the tweak (IEEE 1619-2018 §5.3.1).
struct alignas(64) XtsKeySchedule {
  uint8_t enc1[15][16];  // K1 encryption round keys
  uint8_t dec1[15][16];  // K1 decryption round keys (equivalent inverse cipher, via aesimc)
  uint8_t enc2[15][16];  // K2 encryption round keys
  // K1 round keys repeated across 64 bytes, so every width loads them (as memory
  // operands, or into its register copy) straight from this wiped object.
  alignas(64) uint8_t enc1Wide[15][64];
  alignas(64) uint8_t dec1Wide[15][64];
  int rounds;            // 10 (AES-128) or 14 (AES-256)
};

// One batch: sectorCount sectors of sectorSize bytes (a power of two, 16..4096),
// sector k uses tweak number firstTweak + k * tweakStep (the caller has checked
// that no sector's number passes 2^64-1). src == dst is allowed (in place).
using XtsKernelFn = void (*)(const XtsKeySchedule& ks, bool encrypt, const uint8_t* src, uint8_t* dst,
                             size_t sectorCount, size_t sectorSize, uint64_t firstTweak, uint64_t tweakStep);

// Expands a 16- or 32-byte AES key half into ks (needs AES-NI). keyBytes is 16 or 32.
void ExpandXtsKey(XtsKeySchedule& ks, const uint8_t* key1, const uint8_t* key2, size_t keyBytes);

void XtsCryptAesni(const XtsKeySchedule& ks, bool encrypt, const uint8_t* src, uint8_t* dst,
                   size_t sectorCount, size_t sectorSize, uint64_t firstTweak, uint64_t tweakStep);
void XtsCryptVaesAvx2(const XtsKeySchedule& ks, bool encrypt, const uint8_t* src, uint8_t* dst,
                      size_t sectorCount, size_t sectorSize, uint64_t firstTweak, uint64_t tweakStep);
void XtsCryptVaesAvx512(const XtsKeySchedule& ks, bool encrypt, const uint8_t* src, uint8_t* dst,
                        size_t sectorCount, size_t sectorSize, uint64_t firstTweak, uint64_t tweakStep);

// Expands a 16- or 32-byte AES key into its encryption round keys (needs AES-NI); returns the rounds, 10 or 14.
int ExpandAesEncryptKey(uint8_t rk[15][16], const uint8_t* key, size_t keyBytes);

// Overwrites n bytes at p with zeros in a way the compiler may not elide.
void SecureWipe(void* p, size_t n);

}  // namespace vhdcrypt

#endif
