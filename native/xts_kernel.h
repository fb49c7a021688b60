// The AES-XTS kernels (IEEE 1619-2018; NIST SP 800-38E) from one source: one
// template over a vector-width traits type, as Linux's
// arch/x86/crypto/aes-xts-avx-x86_64.S is one macro for every vector length.
// C_j = AES-Enc(K1, P_j ^ T_j) ^ T_j with T_0 = AES-Enc(K2, sector number) and
// T_{j+1} = T_j * x in GF(2^128) mod x^128 + x^7 + x^2 + x + 1 (IEEE 1619-2018
// §5.2, §5.3.1). Sector sizes are powers of two from 16 to 4096, so data is whole
// blocks: there is no ciphertext stealing (§5.3.2) and none is needed.
//
// Variants (each instantiated by its own translation unit; cpu_features.cc says
// which this CPU and OS can run, from CPUID and XCR0):
//
//   aesni        Xmm: __m128i, AESENC/AESDEC (AES-NI) on 1 block per vector,
//                8 vectors (8 blocks) in flight. Tweaks advance one block at a
//                time by shifts (PSLLD/PSRAD/PSHUFD): PCLMULQDQ is many uops with an
//                8-cycle throughput on Westmere to Ivy Bridge, the CPUs this kernel
//                exists for. Round keys are memory operands.
//                CPUs: every x86-64 with AES-NI: Intel Westmere and later (Atom
//                from Silvermont), AMD Bulldozer/Jaguar and later.
//   vaes-avx2    Ymm: __m256i, VAESENC/VAESDEC (VAES) on 2 blocks per vector,
//                8 vectors (16 blocks) in flight; tweaks spread and advanced by x^16
//                with VPCLMULQDQ. With 16 ymm registers the round keys are memory
//                operands read from the key schedule's pre-broadcast rows.
//                CPUs: VAES + VPCLMULQDQ + AVX2: Intel Ice Lake, Tiger Lake, Alder
//                Lake and later; AMD Zen 3 and later.
//   vaes-avx512  Zmm: __m512i, VAES on 4 blocks per vector, 4 vectors (16 blocks)
//                in flight, all round keys in registers (32 zmm), three-way xors by
//                VPTERNLOGQ (AVX-512F/BW/VL); tweaks as for vaes-avx2.
//                CPUs: Intel Ice Lake (client and Xeon), Tiger Lake, Sapphire
//                Rapids and later Xeons; AMD Zen 4 and later.
//
// The VAES kernels hand sectors shorter than one step (under 256 bytes) to aesni.
//
// A unit defines VHDCRYPT_XTS_WIDTH (128, 256 or 512) and includes this header
// once. Everything here has internal linkage; the generic code carries the unit's
// target attribute and each traits type its own width's, so each unit gets its
// own copy compiled for its own instruction set: the linker cannot pick a
// VAES-compiled copy for a caller on a CPU without VAES, and no VAES instruction
// runs unless dispatch chose a VAES kernel. Using a wider traits type in a
// narrower unit fails to compile (target mismatch on always_inline).
#ifdef VHDCRYPT_XTS_KERNEL_H
#error "xts_kernel.h is included once per translation unit (one width per unit)"
#endif
#define VHDCRYPT_XTS_KERNEL_H

#include <cstddef>
#include <cstdint>

#include "xts_kernels.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#define VHDCRYPT_TARGET_XMM "aes,sse4.1,pclmul"
#define VHDCRYPT_TARGET_YMM "aes,sse4.1,pclmul,avx,avx2,vaes,vpclmulqdq"
#define VHDCRYPT_TARGET_ZMM "aes,sse4.1,pclmul,avx2,avx512f,avx512bw,avx512vl,vaes,vpclmulqdq"

#if VHDCRYPT_XTS_WIDTH == 128
#define VHDCRYPT_TARGET_UNIT VHDCRYPT_TARGET_XMM
#elif VHDCRYPT_XTS_WIDTH == 256
#define VHDCRYPT_TARGET_UNIT VHDCRYPT_TARGET_YMM
#elif VHDCRYPT_XTS_WIDTH == 512
#define VHDCRYPT_TARGET_UNIT VHDCRYPT_TARGET_ZMM
#if defined(__GNUC__) && !defined(__clang__)
// GCC 12's avx512fintrin.h trips -Wmaybe-uninitialized on its own _mm512_undefined_* (a known false positive).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#else
#error "define VHDCRYPT_XTS_WIDTH as 128, 256 or 512 before including xts_kernel.h"
#endif

// Traits members carry their own width's target; the generic code carries the unit's.
#define VHDCRYPT_XMM static inline __attribute__((always_inline, target(VHDCRYPT_TARGET_XMM)))
#define VHDCRYPT_YMM static inline __attribute__((always_inline, target(VHDCRYPT_TARGET_YMM)))
#define VHDCRYPT_ZMM static inline __attribute__((always_inline, target(VHDCRYPT_TARGET_ZMM)))
#define VHDCRYPT_UNIT_FN __attribute__((target(VHDCRYPT_TARGET_UNIT)))
#define VHDCRYPT_UNIT_INLINE inline __attribute__((always_inline, target(VHDCRYPT_TARGET_UNIT)))

namespace vhdcrypt {
namespace {

// Tweak times x (IEEE 1619-2018 §5.2): the 128-bit little-endian value shifted
// left by one, 0x87 folded into byte 0 when bit 127 falls out. `carryMask` is
// _mm_set_epi32(1, 1, 1, 0x87), hoisted by the caller.
VHDCRYPT_XMM __m128i MulX(__m128i t, __m128i carryMask) {
  const __m128i carry = _mm_shuffle_epi32(_mm_srai_epi32(t, 31), 0x93);  // each dword's sign to the next dword
  return _mm_xor_si128(_mm_slli_epi32(t, 1), _mm_and_si128(carry, carryMask));
}

// What a width provides: V, kLanes (blocks per vector), kVectors (vectors in
// flight per step), kTweakBatch (sectors whose T_0 are encrypted together),
// kKeysInRegisters, kSerialTweaks (advance one x at a time, kLanes == 1 only),
// loads/stores, xors, the four AES round instructions, round-key loads, the
// tweak constant, MulXk<K> (each lane times x^K), Spread (lane i = t * x^(b+i))
// and Lane0.

struct Xmm {
  using V = __m128i;
  static constexpr int kLanes = 1, kVectors = 8, kTweakBatch = 8;
  static constexpr bool kKeysInRegisters = false, kSerialTweaks = true;
  VHDCRYPT_XMM V Load(const void* p) { return _mm_loadu_si128(static_cast<const __m128i*>(p)); }
  VHDCRYPT_XMM void Store(void* p, V v) { _mm_storeu_si128(static_cast<__m128i*>(p), v); }
  VHDCRYPT_XMM V Xor(V a, V b) { return _mm_xor_si128(a, b); }
  VHDCRYPT_XMM V Xor3(V a, V b, V c) { return _mm_xor_si128(a, _mm_xor_si128(b, c)); }
  VHDCRYPT_XMM V Enc(V b, V k) { return _mm_aesenc_si128(b, k); }
  VHDCRYPT_XMM V EncLast(V b, V k) { return _mm_aesenclast_si128(b, k); }
  VHDCRYPT_XMM V Dec(V b, V k) { return _mm_aesdec_si128(b, k); }
  VHDCRYPT_XMM V DecLast(V b, V k) { return _mm_aesdeclast_si128(b, k); }
  // A round key from its 64-byte pre-broadcast row (the first copy).
  VHDCRYPT_XMM V RowKey(const uint8_t* row) { return _mm_load_si128(reinterpret_cast<const __m128i*>(row)); }
  // A 16-byte round key in every lane.
  VHDCRYPT_XMM V BroadcastKey(const uint8_t* k) { return _mm_load_si128(reinterpret_cast<const __m128i*>(k)); }
  VHDCRYPT_XMM V Broadcast(__m128i t) { return t; }
  VHDCRYPT_XMM V TweakConstant() { return _mm_set_epi32(1, 1, 1, 0x87); }
  template <int K>
  VHDCRYPT_XMM V MulXk(V t, V c) {
    static_assert(K == 1, "the xmm kernel advances its tweak one x at a time");
    return MulX(t, c);
  }
  VHDCRYPT_XMM __m128i Lane0(V v) { return v; }
  VHDCRYPT_XMM void Leave() {}
};

struct Ymm {
  using V = __m256i;
  static constexpr int kLanes = 2, kVectors = 8, kTweakBatch = 8;
  static constexpr bool kKeysInRegisters = false, kSerialTweaks = false;
  VHDCRYPT_YMM V Load(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }
  VHDCRYPT_YMM void Store(void* p, V v) { _mm256_storeu_si256(static_cast<__m256i*>(p), v); }
  VHDCRYPT_YMM V Xor(V a, V b) { return _mm256_xor_si256(a, b); }
  VHDCRYPT_YMM V Xor3(V a, V b, V c) { return _mm256_xor_si256(a, _mm256_xor_si256(b, c)); }
  VHDCRYPT_YMM V Enc(V b, V k) { return _mm256_aesenc_epi128(b, k); }
  VHDCRYPT_YMM V EncLast(V b, V k) { return _mm256_aesenclast_epi128(b, k); }
  VHDCRYPT_YMM V Dec(V b, V k) { return _mm256_aesdec_epi128(b, k); }
  VHDCRYPT_YMM V DecLast(V b, V k) { return _mm256_aesdeclast_epi128(b, k); }
  VHDCRYPT_YMM V RowKey(const uint8_t* row) { return _mm256_load_si256(reinterpret_cast<const __m256i*>(row)); }
  VHDCRYPT_YMM V BroadcastKey(const uint8_t* k) {
    return _mm256_broadcastsi128_si256(_mm_load_si128(reinterpret_cast<const __m128i*>(k)));
  }
  VHDCRYPT_YMM V Broadcast(__m128i t) { return _mm256_broadcastsi128_si256(t); }
  VHDCRYPT_YMM V TweakConstant() { return _mm256_set1_epi64x(0x87); }
  // Each 128-bit lane times x^K, 0 < K <= 56: shift left by K across the lane and
  // fold the K bits leaving the top back in as (those bits) * 0x87 (carry-less).
  template <int K>
  VHDCRYPT_YMM V MulXk(V t, V poly) {
    static_assert(K > 0 && K <= 56, "the folded bits times 0x87 must fit the low qword");
    const __m256i out = _mm256_srli_epi64(t, 64 - K);  // bits leaving each qword
    return _mm256_xor_si256(_mm256_xor_si256(_mm256_slli_epi64(t, K), _mm256_bslli_epi128(out, 8)),
                            _mm256_clmulepi64_epi128(out, poly, 0x01));
  }
  // [t*x^b, t*x^(b+1)] from t in both lanes (0 <= b <= 55), by per-lane variable shifts.
  VHDCRYPT_YMM V Spread(V t, int b, V poly) {
    const __m256i out = _mm256_srlv_epi64(t, _mm256_set_epi64x(63 - b, 63 - b, 64 - b, 64 - b));
    const __m256i in = _mm256_sllv_epi64(t, _mm256_set_epi64x(b + 1, b + 1, b, b));
    return _mm256_xor_si256(_mm256_xor_si256(in, _mm256_bslli_epi128(out, 8)), _mm256_clmulepi64_epi128(out, poly, 0x01));
  }
  VHDCRYPT_YMM __m128i Lane0(V v) { return _mm256_castsi256_si128(v); }
  VHDCRYPT_YMM void Leave() { _mm256_zeroupper(); }
};

struct Zmm {
  using V = __m512i;
  static constexpr int kLanes = 4, kVectors = 4, kTweakBatch = 16;
  static constexpr bool kKeysInRegisters = true, kSerialTweaks = false;
  VHDCRYPT_ZMM V Load(const void* p) { return _mm512_loadu_si512(p); }
  VHDCRYPT_ZMM void Store(void* p, V v) { _mm512_storeu_si512(p, v); }
  VHDCRYPT_ZMM V Xor(V a, V b) { return _mm512_xor_si512(a, b); }
  VHDCRYPT_ZMM V Xor3(V a, V b, V c) { return _mm512_ternarylogic_epi64(a, b, c, 0x96); }
  VHDCRYPT_ZMM V Enc(V b, V k) { return _mm512_aesenc_epi128(b, k); }
  VHDCRYPT_ZMM V EncLast(V b, V k) { return _mm512_aesenclast_epi128(b, k); }
  VHDCRYPT_ZMM V Dec(V b, V k) { return _mm512_aesdec_epi128(b, k); }
  VHDCRYPT_ZMM V DecLast(V b, V k) { return _mm512_aesdeclast_epi128(b, k); }
  VHDCRYPT_ZMM V RowKey(const uint8_t* row) { return _mm512_load_si512(row); }
  VHDCRYPT_ZMM V BroadcastKey(const uint8_t* k) {
    return _mm512_broadcast_i32x4(_mm_load_si128(reinterpret_cast<const __m128i*>(k)));
  }
  VHDCRYPT_ZMM V Broadcast(__m128i t) { return _mm512_broadcast_i32x4(t); }
  VHDCRYPT_ZMM V TweakConstant() { return _mm512_set1_epi64(0x87); }
  // As Ymm::MulXk, on four lanes.
  template <int K>
  VHDCRYPT_ZMM V MulXk(V t, V poly) {
    static_assert(K > 0 && K <= 56, "the folded bits times 0x87 must fit the low qword");
    const __m512i out = _mm512_srli_epi64(t, 64 - K);
    return _mm512_ternarylogic_epi64(_mm512_slli_epi64(t, K), _mm512_bslli_epi128(out, 8),
                                     _mm512_clmulepi64_epi128(out, poly, 0x01), 0x96);
  }
  // [t*x^b, ..., t*x^(b+3)] from t in every lane (0 <= b <= 53).
  VHDCRYPT_ZMM V Spread(V t, int b, V poly) {
    const __m512i out = _mm512_srlv_epi64(t, _mm512_set_epi64(61 - b, 61 - b, 62 - b, 62 - b, 63 - b, 63 - b, 64 - b, 64 - b));
    const __m512i in = _mm512_sllv_epi64(t, _mm512_set_epi64(b + 3, b + 3, b + 2, b + 2, b + 1, b + 1, b, b));
    return _mm512_ternarylogic_epi64(in, _mm512_bslli_epi128(out, 8), _mm512_clmulepi64_epi128(out, poly, 0x01), 0x96);
  }
  VHDCRYPT_ZMM __m128i Lane0(V v) { return _mm512_castsi512_si128(v); }
  VHDCRYPT_ZMM void Leave() {}
};

// Round key r of K1: from the caller's register copy when the width has the
// registers for all of them, otherwise a memory operand read from the key
// schedule itself, so no copy is left on the stack.
template <class W>
static VHDCRYPT_UNIT_INLINE typename W::V RoundKey(const typename W::V* regs, const uint8_t (*rows)[64], int r) {
  if constexpr (W::kKeysInRegisters) return regs[r];
  else return W::RowKey(rows[r]);
}

// T_0 = AES-Enc(K2, n) for kTweakBatch sector numbers n = first + i*step
// (IEEE 1619-2018 §5.3.1), kLanes per vector, all in flight together.
template <class W, int Nr>
static VHDCRYPT_UNIT_INLINE void InitialTweaks(__m128i* out, const XtsKeySchedule& ks, uint64_t first, uint64_t step) {
  using V = typename W::V;
  constexpr int kVecs = W::kTweakBatch / W::kLanes;
  alignas(64) uint64_t n[2 * W::kTweakBatch];
  for (int i = 0; i < W::kTweakBatch; i++) {
    n[2 * i] = first + static_cast<uint64_t>(i) * step;  // past the batch end this may wrap; unused then
    n[2 * i + 1] = 0;
  }
  V b[kVecs];
  const V k0 = W::BroadcastKey(ks.enc2[0]);
  for (int i = 0; i < kVecs; i++) b[i] = W::Xor(W::Load(n + 2 * W::kLanes * i), k0);
  for (int r = 1; r < Nr; r++) {
    const V k = W::BroadcastKey(ks.enc2[r]);
    for (int i = 0; i < kVecs; i++) b[i] = W::Enc(b[i], k);
  }
  const V kl = W::BroadcastKey(ks.enc2[Nr]);
  for (int i = 0; i < kVecs; i++) W::Store(out + W::kLanes * i, W::EncLast(b[i], kl));
}

// One block with 128-bit instructions (the xmm kernel's sectors under one step).
template <class W, bool Enc, int Nr>
static VHDCRYPT_UNIT_INLINE __m128i CryptBlock(__m128i x, const typename W::V* regs, const uint8_t (*rows)[64]) {
  x = _mm_xor_si128(x, W::Lane0(RoundKey<W>(regs, rows, 0)));
  for (int r = 1; r < Nr; r++) {
    const __m128i k = W::Lane0(RoundKey<W>(regs, rows, r));
    x = Enc ? _mm_aesenc_si128(x, k) : _mm_aesdec_si128(x, k);
  }
  const __m128i kl = W::Lane0(RoundKey<W>(regs, rows, Nr));
  return Enc ? _mm_aesenclast_si128(x, kl) : _mm_aesdeclast_si128(x, kl);
}

// One sector from its T_0: kVectors * kLanes blocks per step, block j's tweak in
// lane j % kLanes of vector (j / kLanes) % kVectors. Sector and step sizes are
// powers of two, so a sector is whole steps or shorter than one; only the xmm
// kernel sees the latter (XtsCrypt hands those sectors to it).
template <class W, bool Enc, int Nr>
static VHDCRYPT_UNIT_INLINE void CryptSector(const uint8_t* src, uint8_t* dst, size_t blocks, __m128i t0,
                                             const typename W::V* regs, const uint8_t (*rows)[64], typename W::V c) {
  using V = typename W::V;
  constexpr int N = W::kVectors, L = W::kLanes;
  constexpr size_t kStep = static_cast<size_t>(N) * L;
  if constexpr (L == 1) {
    if (blocks < kStep) {
      __m128i t = t0;
      for (size_t j = 0; j < blocks; j++) {
        const __m128i p = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 16 * j));
        const __m128i x = _mm_xor_si128(CryptBlock<W, Enc, Nr>(_mm_xor_si128(p, t), regs, rows), t);
        _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + 16 * j), x);
        t = W::template MulXk<1>(t, c);
      }
      return;
    }
  }
  V tw[N];
  if constexpr (W::kSerialTweaks) {
    static_assert(L == 1, "serial tweaks are one block per vector");
    tw[0] = W::Broadcast(t0);
    for (int i = 1; i < N; i++) tw[i] = W::template MulXk<1>(tw[i - 1], c);
  } else {
    const V tb = W::Broadcast(t0);
    for (int i = 0; i < N; i++) tw[i] = W::Spread(tb, i * L, c);
  }
  for (size_t j = 0;;) {
    const uint8_t* s = src + 16 * j;
    uint8_t* d = dst + 16 * j;
    V b[N];
    const V k0 = RoundKey<W>(regs, rows, 0);
    for (int i = 0; i < N; i++) b[i] = W::Xor3(W::Load(s + 16 * L * i), tw[i], k0);
    for (int r = 1; r < Nr; r++) {
      const V k = RoundKey<W>(regs, rows, r);
      for (int i = 0; i < N; i++) b[i] = Enc ? W::Enc(b[i], k) : W::Dec(b[i], k);
    }
    const V kl = RoundKey<W>(regs, rows, Nr);
    for (int i = 0; i < N; i++) {
      const V last = W::Xor(kl, tw[i]);  // the last round's key xor also applies the tweak
      b[i] = Enc ? W::EncLast(b[i], last) : W::DecLast(b[i], last);
      W::Store(d + 16 * L * i, b[i]);
    }
    j += kStep;
    if (j >= blocks) break;  // no tweak advance past the sector's end
    if constexpr (W::kSerialTweaks) {
      tw[0] = W::template MulXk<1>(tw[N - 1], c);
      for (int i = 1; i < N; i++) tw[i] = W::template MulXk<1>(tw[i - 1], c);
    } else {
      for (int i = 0; i < N; i++) tw[i] = W::template MulXk<N * L>(tw[i], c);
    }
  }
}

template <class W, bool Enc, int Nr>
static VHDCRYPT_UNIT_FN void CryptBatch(const XtsKeySchedule& ks, const uint8_t* src, uint8_t* dst, size_t sectorCount,
                                        size_t sectorSize, uint64_t firstTweak, uint64_t tweakStep) {
  using V = typename W::V;
  const uint8_t(*rows)[64] = Enc ? ks.enc1Wide : ks.dec1Wide;
  // The register copy of the round keys (unused unless kKeysInRegisters); the
  // compiler keeps it on the stack, so it is wiped below.
  V regs[W::kKeysInRegisters ? Nr + 1 : 1];
  if constexpr (W::kKeysInRegisters)
    for (int r = 0; r <= Nr; r++) regs[r] = W::RowKey(rows[r]);
  const V c = W::TweakConstant();
  const size_t blocks = sectorSize / 16;
  alignas(64) __m128i t0[W::kTweakBatch];
  for (size_t s = 0; s < sectorCount; s += W::kTweakBatch) {
    InitialTweaks<W, Nr>(t0, ks, firstTweak + s * tweakStep, tweakStep);
    const size_t count = sectorCount - s < W::kTweakBatch ? sectorCount - s : W::kTweakBatch;
    for (size_t k = 0; k < count; k++) {
      const size_t off = (s + k) * sectorSize;
      CryptSector<W, Enc, Nr>(src + off, dst + off, blocks, t0[k], regs, rows, c);
    }
  }
  if constexpr (W::kKeysInRegisters) SecureWipe(regs, sizeof regs);
  SecureWipe(t0, sizeof t0);  // encrypted tweaks derive from K2
  W::Leave();
}

// The kernel contract of XtsKernelFn (xts_kernels.h) for width W.
template <class W>
static VHDCRYPT_UNIT_FN void XtsCrypt(const XtsKeySchedule& ks, bool encrypt, const uint8_t* src, uint8_t* dst,
                                      size_t sectorCount, size_t sectorSize, uint64_t firstTweak, uint64_t tweakStep) {
  if (W::kLanes > 1 && sectorSize / 16 < static_cast<size_t>(W::kVectors) * W::kLanes) {
    XtsCryptAesni(ks, encrypt, src, dst, sectorCount, sectorSize, firstTweak, tweakStep);
    return;
  }
  if (ks.rounds == 10) {
    if (encrypt) CryptBatch<W, true, 10>(ks, src, dst, sectorCount, sectorSize, firstTweak, tweakStep);
    else CryptBatch<W, false, 10>(ks, src, dst, sectorCount, sectorSize, firstTweak, tweakStep);
  } else {
    if (encrypt) CryptBatch<W, true, 14>(ks, src, dst, sectorCount, sectorSize, firstTweak, tweakStep);
    else CryptBatch<W, false, 14>(ks, src, dst, sectorCount, sectorSize, firstTweak, tweakStep);
  }
}

}  // namespace
}  // namespace vhdcrypt

#endif  // x86
