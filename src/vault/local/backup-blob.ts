/**
 * Backup blobs: "VHDCVBK1" || kind byte || sealed payload (AES-256-GCM under a
 * backup key derived from the master key), so a blob restores only into a vault
 * holding the same master key. The payload is binary so that key material
 * never becomes a JS string: u32 header length || header JSON || materials.
 */
import { VaultError } from '../errors.js';
import type { ObjectKind } from '../object-id.js';
import type { RecordCipher } from './record-cipher.js';

const MAGIC = Buffer.from('VHDCVBK1', 'ascii');
const KIND_BYTE: Record<ObjectKind, number> = { secrets: 1, keys: 2 };
const MAX_BACKUP_BYTES = 64 * 1024 * 1024;

export interface BackupVersion {
  readonly version: string;
  /** The plain (unsealed) version record JSON. */
  readonly record: unknown;
  readonly material: Buffer;
}

export interface BackupContent {
  readonly name: string;
  readonly versions: BackupVersion[];
}

/** Seal an object's versions into a blob; wipes the plaintext staging buffer. */
export function encodeBackup(cipher: RecordCipher, kind: ObjectKind, c: BackupContent): Buffer {
  const header = Buffer.from(
    JSON.stringify({ name: c.name, versions: c.versions.map((v) => ({ version: v.version, record: v.record, materialLength: v.material.length })) }),
    'utf8',
  );
  const len = Buffer.alloc(4);
  len.writeUInt32BE(header.length);
  const plain = Buffer.concat([len, header, ...c.versions.map((v) => v.material)]);
  try {
    return Buffer.concat([MAGIC, Buffer.of(KIND_BYTE[kind]), cipher.sealBackup(plain, kind)]);
  } finally {
    plain.fill(0);
  }
}

/** Open a blob; anything not sealed by this master key for this kind is VAULT_BAD_BACKUP. */
export function decodeBackup(cipher: RecordCipher, kind: ObjectKind, blob: Uint8Array): BackupContent {
  if (!(blob instanceof Uint8Array) || blob.length > MAX_BACKUP_BYTES || blob.length < MAGIC.length + 1) {
    throw new VaultError('VAULT_BAD_BACKUP', 'not a vhdcrypt vault backup (wrong size)');
  }
  const b = Buffer.from(blob.buffer, blob.byteOffset, blob.byteLength);
  if (!b.subarray(0, MAGIC.length).equals(MAGIC)) throw new VaultError('VAULT_BAD_BACKUP', 'not a vhdcrypt vault backup (bad magic)');
  if (b[MAGIC.length] !== KIND_BYTE[kind]) throw new VaultError('VAULT_BAD_BACKUP', `this backup does not hold ${kind}`);
  const plain = cipher.openBackup(b.subarray(MAGIC.length + 1), kind);
  if (plain === null) {
    throw new VaultError('VAULT_BAD_BACKUP', 'the backup was not made by a vault holding this vault master key, or it was altered');
  }
  try {
    const hlen = plain.readUInt32BE(0);
    const header = JSON.parse(plain.subarray(4, 4 + hlen).toString('utf8')) as {
      name: string;
      versions: Array<{ version: string; record: unknown; materialLength: number }>;
    };
    let off = 4 + hlen;
    const versions = header.versions.map((v) => {
      const material = Buffer.from(plain.subarray(off, off + v.materialLength));
      off += v.materialLength;
      return { version: v.version, record: v.record, material };
    });
    if (off !== plain.length) throw new Error('length mismatch');
    return { name: header.name, versions };
  } catch (e) {
    throw new VaultError('VAULT_BAD_BACKUP', 'the backup content is malformed', { cause: e });
  } finally {
    plain.fill(0);
  }
}
