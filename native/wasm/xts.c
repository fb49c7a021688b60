/*
 * AES-XTS (IEEE 1619-2018) for WebAssembly SIMD, constant time.
 *
 * AES is bitsliced as in Kasper & Schwabe, "Faster and Timing-Attack Resistant
 * AES-GCM" (CHES 2009): eight blocks are transposed into eight v128 registers,
 * register c holding bit c of every byte; within a register, byte j holds that
 * bit of state byte j for the eight blocks (one bit per block). ShiftRows and
 * the MixColumns rotations are then constant-index byte shuffles, and SubBytes is
 * the Boyar-Peralta boolean circuit (J. Boyar, R. Peralta, "A depth-16 circuit
 * for the AES S-box", 2012) evaluated on whole registers. The inverse S-box is
 * A^-1(S(A^-1(y))) where A^-1 is the inverse affine map (FIPS-197 5.3.2), so no
 * second circuit is needed. Nothing indexes memory or branches on key or data.
 *
 * The key schedule runs once per key; its SubWord uses the same bitsliced S-box.
 * Round keys are kept pre-transposed (each bit broadcast over the 8 blocks).
 *
 * Exports (all buffers live in this module's memory; JS copies in and out):
 *   xts_key_ptr()   -> 64-byte area where JS writes the XTS key before xts_set_key
 *   xts_buf_ptr()   -> XTS_BUF_SIZE-byte working buffer
 *   xts_set_key(keyBytes)  keyBytes 32 (AES-128-XTS) or 64 (AES-256-XTS); wipes the key area
 *   xts_crypt(encrypt, nbytes, sectorSize, firstTweak, tweakStep)  in place on the buffer
 *   xts_wipe()      zero the key schedules
 */
#include <stdint.h>
#include <wasm_simd128.h>

#define XTS_BUF_SIZE 65536

typedef v128_t V;

static uint8_t key_area[64] __attribute__((aligned(16)));
static uint8_t work_buf[XTS_BUF_SIZE] __attribute__((aligned(16)));
/* Bitsliced round keys: [round][bit]. 15 rounds max (AES-256). */
static V rk_data[15][8];
static V rk_tweak[15][8];
static int nrounds;

__attribute__((export_name("xts_key_ptr"))) uint8_t *xts_key_ptr(void) { return key_area; }
__attribute__((export_name("xts_buf_ptr"))) uint8_t *xts_buf_ptr(void) { return work_buf; }
__attribute__((export_name("xts_buf_size"))) uint32_t xts_buf_size(void) { return XTS_BUF_SIZE; }

static void wipe_bytes(void *p, uint32_t n) {
  volatile uint8_t *q = (volatile uint8_t *)p;
  for (uint32_t i = 0; i < n; i++) q[i] = 0;
}

/* ---- bit transposition (8 blocks <-> 8 bit planes) ---- */

#define SWAPMOVE(a, b, m, n)                                                   \
  do {                                                                         \
    V t_ = wasm_v128_and(wasm_v128_xor(wasm_u64x2_shr((b), (n)), (a)), (m));  \
    (a) = wasm_v128_xor((a), t_);                                              \
    (b) = wasm_v128_xor((b), wasm_i64x2_shl(t_, (n)));                         \
  } while (0)

/* An 8x8 bit transpose inside every byte position; it is its own inverse. */
static inline void transpose(V x[8]) {
  const V m1 = wasm_i8x16_splat(0x55), m2 = wasm_i8x16_splat(0x33), m4 = wasm_i8x16_splat(0x0f);
  SWAPMOVE(x[1], x[0], m1, 1);
  SWAPMOVE(x[3], x[2], m1, 1);
  SWAPMOVE(x[5], x[4], m1, 1);
  SWAPMOVE(x[7], x[6], m1, 1);
  SWAPMOVE(x[2], x[0], m2, 2);
  SWAPMOVE(x[3], x[1], m2, 2);
  SWAPMOVE(x[6], x[4], m2, 2);
  SWAPMOVE(x[7], x[5], m2, 2);
  SWAPMOVE(x[4], x[0], m4, 4);
  SWAPMOVE(x[5], x[1], m4, 4);
  SWAPMOVE(x[6], x[2], m4, 4);
  SWAPMOVE(x[7], x[3], m4, 4);
}

/* ---- SubBytes: Boyar-Peralta depth-16 circuit; U0/S0 are the most significant bit ---- */

#define X(a, b) wasm_v128_xor((a), (b))
#define A(a, b) wasm_v128_and((a), (b))
#define N(a) wasm_v128_not(a)

static inline void sub_bytes(V r[8]) {
  const V U0 = r[7], U1 = r[6], U2 = r[5], U3 = r[4], U4 = r[3], U5 = r[2], U6 = r[1], U7 = r[0];
  /* top linear layer */
  const V T1 = X(U0, U3), T2 = X(U0, U5), T3 = X(U0, U6), T4 = X(U3, U5), T5 = X(U4, U6);
  const V T6 = X(T1, T5), T7 = X(U1, U2), T8 = X(U7, T6), T9 = X(U7, T7), T10 = X(T6, T7);
  const V T11 = X(U1, U5), T12 = X(U2, U5), T13 = X(T3, T4), T14 = X(T6, T11), T15 = X(T5, T11);
  const V T16 = X(T5, T12), T17 = X(T9, T16), T18 = X(U3, U7), T19 = X(T7, T18), T20 = X(T1, T19);
  const V T21 = X(U6, U7), T22 = X(T7, T21), T23 = X(T2, T22), T24 = X(T2, T10), T25 = X(T20, T17);
  const V T26 = X(T3, T16), T27 = X(T1, T12);
  /* middle non-linear layer (inversion in GF(2^8) via GF(2^4)) */
  const V M1 = A(T13, T6), M2 = A(T23, T8), M3 = X(T14, M1), M4 = A(T19, U7), M5 = X(M4, M1);
  const V M6 = A(T3, T16), M7 = A(T22, T9), M8 = X(T26, M6), M9 = A(T20, T17), M10 = X(M9, M6);
  const V M11 = A(T1, T15), M12 = A(T4, T27), M13 = X(M12, M11), M14 = A(T2, T10), M15 = X(M14, M11);
  const V M16 = X(M3, M2), M17 = X(M5, T24), M18 = X(M8, M7), M19 = X(M10, M15), M20 = X(M16, M13);
  const V M21 = X(M17, M15), M22 = X(M18, M13), M23 = X(M19, T25), M24 = X(M22, M23), M25 = A(M22, M20);
  const V M26 = X(M21, M25), M27 = X(M20, M21), M28 = X(M23, M25), M29 = A(M28, M27), M30 = A(M26, M24);
  const V M31 = A(M20, M23), M32 = A(M27, M31), M33 = X(M27, M25), M34 = A(M21, M22), M35 = A(M24, M34);
  const V M36 = X(M24, M25), M37 = X(M21, M29), M38 = X(M32, M33), M39 = X(M23, M30), M40 = X(M35, M36);
  const V M41 = X(M38, M40), M42 = X(M37, M39), M43 = X(M37, M38), M44 = X(M39, M40), M45 = X(M42, M41);
  const V M46 = A(M44, T6), M47 = A(M40, T8), M48 = A(M39, U7), M49 = A(M43, T16), M50 = A(M38, T9);
  const V M51 = A(M37, T17), M52 = A(M42, T15), M53 = A(M45, T27), M54 = A(M41, T10), M55 = A(M44, T13);
  const V M56 = A(M40, T23), M57 = A(M39, T19), M58 = A(M43, T3), M59 = A(M38, T22), M60 = A(M37, T20);
  const V M61 = A(M42, T1), M62 = A(M45, T4), M63 = A(M41, T2);
  /* bottom linear layer (includes the affine map) */
  const V L0 = X(M61, M62), L1 = X(M50, M56), L2 = X(M46, M48), L3 = X(M47, M55), L4 = X(M54, M58);
  const V L5 = X(M49, M61), L6 = X(M62, L5), L7 = X(M46, L3), L8 = X(M51, M59), L9 = X(M52, M53);
  const V L10 = X(M53, L4), L11 = X(M60, L2), L12 = X(M48, M51), L13 = X(M50, L0), L14 = X(M52, M61);
  const V L15 = X(M55, L1), L16 = X(M56, L0), L17 = X(M57, L1), L18 = X(M58, L8), L19 = X(M63, L4);
  const V L20 = X(L0, L1), L21 = X(L1, L7), L22 = X(L3, L12), L23 = X(L18, L2), L24 = X(L15, L9);
  const V L25 = X(L6, L10), L26 = X(L7, L9), L27 = X(L8, L10), L28 = X(L11, L14), L29 = X(L11, L17);
  r[7] = X(L6, L24);
  r[6] = N(X(L16, L26));
  r[5] = N(X(L19, L28));
  r[4] = X(L6, L21);
  r[3] = X(L20, L22);
  r[2] = X(L25, L29);
  r[1] = N(X(L13, L27));
  r[0] = N(X(L6, L23));
}

/* Inverse affine map of FIPS-197 5.3.2: b_c = y_(c+2) ^ y_(c+5) ^ y_(c+7) ^ (0x05 bit c). */
static inline void inv_affine(V r[8]) {
  V o[8];
  for (int c = 0; c < 8; c++) o[c] = X(X(r[(c + 2) & 7], r[(c + 5) & 7]), r[(c + 7) & 7]);
  o[0] = N(o[0]);
  o[2] = N(o[2]);
  for (int c = 0; c < 8; c++) r[c] = o[c];
}

static inline void inv_sub_bytes(V r[8]) {
  inv_affine(r);
  sub_bytes(r);
  inv_affine(r);
}

/* ---- ShiftRows / MixColumns as byte shuffles (state byte 4*col + row) ---- */

#define SHIFT_ROWS(v) wasm_i8x16_shuffle((v), (v), 0, 5, 10, 15, 4, 9, 14, 3, 8, 13, 2, 7, 12, 1, 6, 11)
#define INV_SHIFT_ROWS(v) wasm_i8x16_shuffle((v), (v), 0, 13, 10, 7, 4, 1, 14, 11, 8, 5, 2, 15, 12, 9, 6, 3)
#define ROT1(v) wasm_i8x16_shuffle((v), (v), 1, 2, 3, 0, 5, 6, 7, 4, 9, 10, 11, 8, 13, 14, 15, 12)
#define ROT2(v) wasm_i8x16_shuffle((v), (v), 2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13)

/* out = 2*t ^ rot1(a) ^ rot2(t) with t = a ^ rot1(a) (FIPS-197 5.1.3 regrouped). */
static inline void mix_columns(V a[8]) {
  V r1[8], t[8];
  for (int c = 0; c < 8; c++) {
    r1[c] = ROT1(a[c]);
    t[c] = X(a[c], r1[c]);
  }
  /* xtime on bit planes: multiply by x modulo x^8+x^4+x^3+x+1 */
  V x2[8];
  x2[0] = t[7];
  x2[1] = X(t[0], t[7]);
  x2[2] = t[1];
  x2[3] = X(t[2], t[7]);
  x2[4] = X(t[3], t[7]);
  x2[5] = t[4];
  x2[6] = t[5];
  x2[7] = t[6];
  for (int c = 0; c < 8; c++) a[c] = X(X(x2[c], r1[c]), ROT2(t[c]));
}

static inline void xtime_planes(V o[8], const V t[8]) {
  o[0] = t[7];
  o[1] = X(t[0], t[7]);
  o[2] = t[1];
  o[3] = X(t[2], t[7]);
  o[4] = X(t[3], t[7]);
  o[5] = t[4];
  o[6] = t[5];
  o[7] = t[6];
}

/* InvMixColumns = MixColumns after a ^= 4*(a ^ rot2(a)) (FIPS-197 5.3.3 factored). */
static inline void inv_mix_columns(V a[8]) {
  V t[8], u[8], w[8];
  for (int c = 0; c < 8; c++) t[c] = X(a[c], ROT2(a[c]));
  xtime_planes(u, t);
  xtime_planes(w, u);
  for (int c = 0; c < 8; c++) a[c] = X(a[c], w[c]);
  mix_columns(a);
}

static inline void add_round_key(V s[8], const V k[8]) {
  for (int c = 0; c < 8; c++) s[c] = X(s[c], k[c]);
}

static void encrypt_planes(V s[8], V rk[15][8]) {
  const int nr = nrounds;
  add_round_key(s, rk[0]);
  for (int r = 1; r < nr; r++) {
    sub_bytes(s);
    for (int c = 0; c < 8; c++) s[c] = SHIFT_ROWS(s[c]);
    mix_columns(s);
    add_round_key(s, rk[r]);
  }
  sub_bytes(s);
  for (int c = 0; c < 8; c++) s[c] = SHIFT_ROWS(s[c]);
  add_round_key(s, rk[nr]);
}

static void decrypt_planes(V s[8], V rk[15][8]) {
  const int nr = nrounds;
  add_round_key(s, rk[nr]);
  for (int r = nr - 1; r >= 1; r--) {
    for (int c = 0; c < 8; c++) s[c] = INV_SHIFT_ROWS(s[c]);
    inv_sub_bytes(s);
    add_round_key(s, rk[r]);
    inv_mix_columns(s);
  }
  for (int c = 0; c < 8; c++) s[c] = INV_SHIFT_ROWS(s[c]);
  inv_sub_bytes(s);
  add_round_key(s, rk[0]);
}

/* ---- key schedule (FIPS-197 5.2), SubWord through the bitsliced S-box ---- */

static uint32_t sub_word(uint32_t w) {
  V s[8];
  s[0] = wasm_u32x4_make(w, 0, 0, 0);
  for (int c = 1; c < 8; c++) s[c] = wasm_i64x2_splat(0);
  transpose(s);
  sub_bytes(s);
  transpose(s);
  uint32_t out = wasm_u32x4_extract_lane(s[0], 0);
  for (int c = 0; c < 8; c++) s[c] = wasm_i64x2_splat(0);
  return out;
}

/* Expand a 16- or 32-byte AES key into nr+1 round keys, each stored as 8 bit planes. */
static void expand_key(const uint8_t *key, int nk, V rk[15][8]) {
  uint32_t w[60];
  const int nr = nk + 6, total = 4 * (nr + 1);
  for (int i = 0; i < nk; i++)
    w[i] = (uint32_t)key[4 * i] | ((uint32_t)key[4 * i + 1] << 8) | ((uint32_t)key[4 * i + 2] << 16) |
           ((uint32_t)key[4 * i + 3] << 24);
  uint32_t rcon = 1;
  for (int i = nk; i < total; i++) {
    uint32_t t = w[i - 1];
    if (i % nk == 0) { /* branch on the public index only */
      t = sub_word((t >> 8) | (t << 24)) ^ rcon;
      rcon = (rcon << 1) ^ (0x11b & -(rcon >> 7));
    } else if (nk > 6 && i % nk == 4) {
      t = sub_word(t);
    }
    w[i] = w[i - nk] ^ t;
  }
  /* Broadcast each key bit over the eight blocks: plane c, byte j = -(bit c of key byte j). */
  for (int r = 0; r <= nr; r++) {
    for (int c = 0; c < 8; c++) {
      uint8_t b[16];
      for (int j = 0; j < 16; j++) {
        const uint8_t kb = (uint8_t)(w[4 * r + j / 4] >> (8 * (j % 4)));
        b[j] = (uint8_t)(0 - ((kb >> c) & 1));
      }
      rk[r][c] = wasm_v128_load(b);
      wipe_bytes(b, sizeof b);
    }
  }
  wipe_bytes(w, sizeof w);
}

__attribute__((export_name("xts_wipe"))) void xts_wipe(void) {
  wipe_bytes(rk_data, sizeof rk_data);
  wipe_bytes(rk_tweak, sizeof rk_tweak);
  wipe_bytes(key_area, sizeof key_area);
  nrounds = 0;
}

/* keyBytes: 32 or 64; the first half keys the data, the second the tweak (IEEE 1619 5.1). */
__attribute__((export_name("xts_set_key"))) int xts_set_key(uint32_t key_bytes) {
  if (key_bytes != 32 && key_bytes != 64) return -1;
  const int half = (int)key_bytes / 2, nk = half / 4;
  expand_key(key_area, nk, rk_data);
  expand_key(key_area + half, nk, rk_tweak);
  nrounds = nk + 6;
  wipe_bytes(key_area, sizeof key_area);
  return 0;
}

/* ---- XTS ---- */

/* Multiply a tweak by alpha in GF(2^128), little-endian (IEEE 1619-2018 5.2), branch-free. */
static inline void mul_alpha(uint64_t *lo, uint64_t *hi) {
  const uint64_t carry = *hi >> 63;
  *hi = (*hi << 1) | (*lo >> 63);
  *lo = (*lo << 1) ^ (0x87 & (0 - carry));
}

/* Encrypt/decrypt n (1..8) gathered blocks with their tweaks, in place. */
static void crypt_blocks(int encrypt, uint8_t *const blk[8], const V tw[8], int n) {
  V s[8];
  for (int k = 0; k < 8; k++) s[k] = k < n ? X(wasm_v128_load(blk[k]), tw[k]) : wasm_i64x2_splat(0);
  transpose(s);
  if (encrypt)
    encrypt_planes(s, rk_data);
  else
    decrypt_planes(s, rk_data);
  transpose(s);
  for (int k = 0; k < n; k++) wasm_v128_store(blk[k], X(s[k], tw[k]));
}

/*
 * Process nbytes of work_buf in place as whole sectors; sector k uses tweak number
 * first + k*step. Sectors are taken 8 at a time so their initial tweaks
 * (AES-K2 of the tweak block) share one bitsliced encryption.
 */
__attribute__((export_name("xts_crypt")))
int xts_crypt(int encrypt, uint32_t nbytes, uint32_t sector_size, uint64_t first, uint64_t step) {
  if (nrounds == 0 || sector_size < 16 || sector_size > XTS_BUF_SIZE || (sector_size & (sector_size - 1)) != 0 ||
      nbytes > XTS_BUF_SIZE || nbytes % sector_size != 0)
    return -1;
  const uint32_t nsectors = nbytes / sector_size, bps = sector_size / 16;
  uint8_t *blk[8];
  V tw[8];
  int pending = 0;
  for (uint32_t s0 = 0; s0 < nsectors; s0 += 8) {
    const uint32_t g = nsectors - s0 < 8 ? nsectors - s0 : 8;
    /* initial tweaks of up to 8 sectors in one bitsliced AES-K2 encryption */
    V t[8];
    for (uint32_t k = 0; k < 8; k++) t[k] = wasm_i64x2_make((int64_t)(first + (uint64_t)(s0 + k) * step), 0);
    transpose(t);
    encrypt_planes(t, rk_tweak);
    transpose(t);
    for (uint32_t k = 0; k < g; k++) {
      uint64_t lo = wasm_i64x2_extract_lane(t[k], 0), hi = wasm_i64x2_extract_lane(t[k], 1);
      uint8_t *p = work_buf + (s0 + k) * sector_size;
      for (uint32_t b = 0; b < bps; b++) {
        blk[pending] = p + 16 * b;
        tw[pending] = wasm_i64x2_make((int64_t)lo, (int64_t)hi);
        pending++;
        mul_alpha(&lo, &hi);
        if (pending == 8) {
          crypt_blocks(encrypt, blk, tw, 8);
          pending = 0;
        }
      }
    }
  }
  if (pending) crypt_blocks(encrypt, blk, tw, pending);
  return 0;
}
