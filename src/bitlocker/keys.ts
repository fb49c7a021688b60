/**
 * BitLocker keys: a protector's key opens a volume master key (VMK), the VMK opens the full-volume encryption key
 * (FVEK). Both are AES-CCM datums (RFC 3610, 12-byte nonce, 16-byte MAC; node:crypto's aes-256-ccm). Protector
 * keys (libbde "Volume master key", "Recovery key", "User key", "Startup key"):
 * - password: SHA-256(SHA-256(UTF-16LE(password))), stretched;
 * - recovery password: 8 groups of 6 digits, each divisible by 11, group/11 a u16 LE: SHA-256 of the 16 bytes,
 *   stretched;
 * - stretching: 0x100000 rounds of last = SHA-256(last || initial || salt || u64 LE count), count += 1;
 * - startup key (.BEK file): a 32-byte external key, used as it is;
 * - clear key: a 32-byte key stored beside the VMK (protection suspended).
 */
import { createDecipheriv, hash } from 'node:crypto';
import { nativeAddon } from '../native-addon.js';
import { BitlockerError } from './errors.js';
import { entries, EntryType, guidString, Protection, ValueType, type CcmBlob, type FveMetadata, type VmkEntry } from './metadata.js';

const STRETCH_ROUNDS = 0x100000;
/** Key datum plaintext: u32 size, u16 version, u16, u32 method, then the key. */
const KEY_DATUM_HEADER = 12;
const BEK_HEADER_LEN = 48;
const STARTUP_KEY_HEADER_LEN = 24;
/** Largest .BEK we read: a header and a few datums (Windows 11 writes 180 bytes). */
export const MAX_BEK_BYTES = 4096;

/** What opens a volume. Buffers given are copied where kept and never wiped (the caller owns them). */
export type Protector =
  | { readonly kind: 'password'; readonly password: string }
  | { readonly kind: 'recovery-password'; readonly recoveryPassword: string }
  | { readonly kind: 'startup-key'; readonly bek: Uint8Array }
  | { readonly kind: 'clear-key' }
  /** The FVEK itself, as cryptsetup's --volume-key-file takes it (not verifiable: BitLocker stores no digest of it). */
  | { readonly kind: 'volume-key'; readonly key: Uint8Array };

/** Decrypt and authenticate an AES-CCM datum; null when the MAC does not match (a wrong key). */
export function openCcm(key: Uint8Array, blob: CcmBlob): Buffer | null {
  if (key.length !== 32 && key.length !== 16) return null;
  const d = createDecipheriv(key.length === 32 ? 'aes-256-ccm' : 'aes-128-ccm', key, blob.nonce, { authTagLength: 16 });
  d.setAuthTag(blob.tag);
  const out = d.update(blob.data);
  try {
    d.final();
  } catch {
    out.fill(0);
    return null;
  }
  return out;
}

/** The key a key datum's plaintext holds, checked against its own size field; a copy (the caller wipes it). */
function keyOfDatum(plain: Buffer, what: string): { key: Buffer; method: number } {
  if (plain.length < KEY_DATUM_HEADER + 16) throw new BitlockerError('BITLK_BAD_METADATA', `${what}: decrypted key datum of ${plain.length} bytes is too short`);
  const size = plain.readUInt32LE(0);
  if (size < KEY_DATUM_HEADER + 16 || size > plain.length) throw new BitlockerError('BITLK_BAD_METADATA', `${what}: decrypted key datum records size ${size} of ${plain.length}`);
  return { key: Buffer.from(plain.subarray(KEY_DATUM_HEADER, size)), method: plain.readUInt16LE(8) };
}

type NativeStretch = (initial: Uint8Array, salt: Uint8Array) => Uint8Array | null;

/**
 * The stretched key of an initial hash and a salt (libbde "Stretch key"): the addon's loop (native/bitlk_stretch.cc)
 * when it is built, else the same loop here. Returns a new buffer the caller wipes.
 */
export function stretchKey(initial: Uint8Array, salt: Uint8Array): Buffer {
  const native = nativeAddon()?.bitlkStretch as NativeStretch | undefined;
  const r = typeof native === 'function' ? native(initial, salt) : null;
  if (r !== null) {
    const out = Buffer.from(r);
    r.fill(0);
    return out;
  }
  return stretchKeyJs(initial, salt);
}

/** stretchKey's loop with node:crypto (exported for the test that compares the two). */
export function stretchKeyJs(initial: Uint8Array, salt: Uint8Array): Buffer {
  const s = Buffer.alloc(88);
  Buffer.from(initial.buffer, initial.byteOffset, 32).copy(s, 32);
  Buffer.from(salt.buffer, salt.byteOffset, 16).copy(s, 64);
  for (let i = 0; i < STRETCH_ROUNDS; i++) {
    const h = hash('sha256', s, 'buffer');
    h.copy(s, 0);
    h.fill(0);
    // u64 LE count; it stays below 2^32.
    s.writeUInt32LE(i + 1, 80);
  }
  const out = Buffer.from(s.subarray(0, 32));
  s.fill(0);
  return out;
}

/** SHA-256(SHA-256(UTF-16LE(password))). */
export function passwordHash(password: string): Buffer {
  const u = Buffer.from(password, 'utf16le');
  const h1 = hash('sha256', u, 'buffer');
  u.fill(0);
  const h2 = hash('sha256', h1, 'buffer');
  h1.fill(0);
  return h2;
}

/**
 * The 16-byte key of a recovery password (48 digits in 8 groups, dashes optional, one trailing newline allowed),
 * with the per-group check: each group is a multiple of 11 below 11 * 65536.
 */
export function recoveryKey(text: string): Buffer {
  const t = text.replace(/\r?\n$/, '');
  const groups = /^\d{6}(-?\d{6}){7}$/.test(t) ? t.replace(/-/g, '').match(/\d{6}/g)! : null;
  if (groups === null) throw new BitlockerError('BITLK_BAD_RECOVERY_PASSWORD', 'a recovery password is 8 groups of 6 digits separated by dashes (48 digits)');
  const key = Buffer.alloc(16);
  groups.forEach((g, i) => {
    const v = Number(g);
    if (v % 11 !== 0 || v >= 11 * 65536) {
      key.fill(0);
      throw new BitlockerError('BITLK_BAD_RECOVERY_PASSWORD', `recovery password group ${i + 1} fails its check (a multiple of 11 below 720896): mistyped?`);
    }
    key.writeUInt16LE(v / 11, 2 * i);
  });
  return key;
}

/** A .BEK file: its GUID (the VMK it opens) and its 32-byte external key (a copy the caller wipes). */
export function parseBek(bek: Uint8Array): { guid: string; key: Buffer } {
  const b = Buffer.from(bek.buffer, bek.byteOffset, bek.length);
  if (b.length < BEK_HEADER_LEN + 8 || b.length > MAX_BEK_BYTES) throw new BitlockerError('BITLK_BAD_STARTUP_KEY', `a startup key (.BEK) of ${b.length} bytes: expected ${BEK_HEADER_LEN + 8} to ${MAX_BEK_BYTES}`);
  const size = b.readUInt32LE(0);
  const version = b.readUInt32LE(4);
  if (version !== 1) throw new BitlockerError('BITLK_BAD_STARTUP_KEY', `startup key metadata version ${version}, expected 1`);
  if (size !== b.length) throw new BitlockerError('BITLK_BAD_STARTUP_KEY', `startup key records ${size} bytes but has ${b.length}`);
  const guid = guidString(b.subarray(16, 32));
  for (const e of entries(b.subarray(BEK_HEADER_LEN), 'startup key')) {
    if (e.type !== EntryType.startupKey || e.value !== ValueType.externalKey) continue;
    if (e.data.length < STARTUP_KEY_HEADER_LEN) break;
    for (const p of entries(e.data.subarray(STARTUP_KEY_HEADER_LEN), 'startup key')) {
      if (p.value === ValueType.key && p.data.length >= 4 + 32) return { guid, key: Buffer.from(p.data.subarray(4, 36)) };
    }
  }
  throw new BitlockerError('BITLK_BAD_STARTUP_KEY', 'the startup key file holds no external key datum');
}

function kindOf(p: Protector): number {
  switch (p.kind) {
    case 'password':
      return Protection.password;
    case 'recovery-password':
      return Protection.recoveryPassword;
    case 'startup-key':
      return Protection.startupKey;
    case 'clear-key':
      return Protection.clearKey;
    case 'volume-key':
      return -1;
  }
}

export interface OpenedKeys {
  /** The FVEK as cryptsetup's --dump-volume-key shows it (Elephant: data key then tweak key, each of the AES size). */
  readonly fvek: Buffer;
  /** The VMK that opened it. */
  readonly vmkGuid: string;
}

/** The protector's key for one VMK, or null when this VMK is not of the protector's kind. Caller wipes it. */
function protectorKey(p: Protector, vmk: VmkEntry, bekKey: { guid: string; key: Buffer } | null): Buffer | null {
  switch (p.kind) {
    case 'password':
    case 'recovery-password': {
      if (vmk.salt === null) throw new BitlockerError('BITLK_BAD_METADATA', `VMK ${vmk.guid} (${vmk.protectionName}) has no stretch key salt`);
      const initial = p.kind === 'password' ? passwordHash(p.password) : (() => {
        const k = recoveryKey(p.recoveryPassword);
        const h = hash('sha256', k, 'buffer');
        k.fill(0);
        return h;
      })();
      const key = stretchKey(initial, vmk.salt);
      initial.fill(0);
      return key;
    }
    case 'startup-key':
      return bekKey !== null && bekKey.guid === vmk.guid ? Buffer.from(bekKey.key) : null;
    case 'clear-key':
      return vmk.clearKey !== null ? Buffer.from(vmk.clearKey) : null;
    case 'volume-key':
      return null;
  }
}

/**
 * Open the FVEK with a protector: each VMK of its kind is tried (a recovery password against every recovery VMK).
 * Wrong key: BITLK_WRONG_KEY; no VMK of that kind: BITLK_NO_PROTECTOR.
 */
export function openVolumeKey(meta: FveMetadata, p: Protector): OpenedKeys {
  if (p.kind === 'volume-key') {
    const c = meta.cipher;
    const want = c.mode === 'cbc' ? c.bits / 8 : c.bits / 4;
    if (p.key.length !== want) throw new BitlockerError('BITLK_WRONG_KEY', `a volume key of ${p.key.length} bytes for ${c.name}-${c.bits}, which takes ${want}`);
    return { fvek: Buffer.from(p.key), vmkGuid: '' };
  }
  const kind = kindOf(p);
  const candidates = meta.vmks.filter((v) => v.protection === kind && v.encryptedKey !== null);
  if (candidates.length === 0) {
    const have = meta.vmks.map((v) => v.protectionName).join(', ') || 'none';
    const hint = p.kind === 'clear-key' ? ': give its password, recovery password or startup key' : '';
    throw new BitlockerError('BITLK_NO_PROTECTOR', `the volume has no ${p.kind.replace('-', ' ')} protector (protectors: ${have})${hint}`);
  }
  const bek = p.kind === 'startup-key' ? parseBek(p.bek) : null;
  // A password is stretched once per salt: VMKs of one kind usually share none, so each is tried in turn.
  try {
    for (const vmk of candidates) {
      const key = protectorKey(p, vmk, bek);
      if (key === null) continue;
      const plain = openCcm(key, vmk.encryptedKey!);
      key.fill(0);
      if (plain === null) continue;
      const { key: vmKey } = keyOfDatum(plain, `VMK ${vmk.guid}`);
      plain.fill(0);
      try {
        const fplain = openCcm(vmKey, meta.fvek);
        if (fplain === null) throw new BitlockerError('BITLK_BAD_METADATA', `VMK ${vmk.guid} opened but does not authenticate the FVEK`);
        const { key: raw } = keyOfDatum(fplain, 'FVEK');
        fplain.fill(0);
        const fvek = volumeKeyOf(raw, meta);
        raw.fill(0);
        return { fvek, vmkGuid: vmk.guid };
      } finally {
        vmKey.fill(0);
      }
    }
  } finally {
    bek?.key.fill(0);
  }
  if (p.kind === 'startup-key') {
    throw new BitlockerError('BITLK_WRONG_KEY', `the startup key ${bek?.guid ?? ''} opens none of the volume's startup key protectors (${candidates.map((c) => c.guid).join(', ')})`);
  }
  throw new BitlockerError('BITLK_WRONG_KEY', `wrong ${p.kind.replace('-', ' ')}`);
}

/**
 * The FVEK's key bytes as the cipher needs them. The datum holds 64 bytes for Elephant methods (data key, zero
 * padding, tweak key, zero padding: 16+16+16+16 for 128-bit, 32+32 for 256-bit) and the data key for the others.
 */
function volumeKeyOf(raw: Buffer, meta: FveMetadata): Buffer {
  const c = meta.cipher;
  const n = c.bits / 8;
  if (c.mode === 'cbc-elephant') {
    if (raw.length < 64) throw new BitlockerError('BITLK_BAD_METADATA', `Elephant FVEK of ${raw.length} bytes, expected 64`);
    return Buffer.concat([raw.subarray(0, n), raw.subarray(32, 32 + n)]);
  }
  const want = c.mode === 'xts' ? 2 * n : n;
  if (raw.length < want) throw new BitlockerError('BITLK_BAD_METADATA', `FVEK of ${raw.length} bytes for ${c.name}-${c.bits}, expected ${want}`);
  return Buffer.from(raw.subarray(0, want));
}
