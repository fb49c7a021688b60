/**
 * Encryption at rest: every stored value, key and record is AES-256-GCM under a
 * key derived from the vault master key (HKDF-SHA256, RFC 5869), with the
 * record's identity (vault id, table, name, version, field) as additional
 * authenticated data so a ciphertext moved to another row fails to open.
 * Blob layout: nonce (12) || ciphertext || tag (16).
 */
import { createCipheriv, createDecipheriv, createHmac, hkdfSync, randomBytes } from 'node:crypto';
import { VaultError } from '../errors.js';

const NONCE = 12;
const TAG = 16;

export class RecordCipher {
  readonly #recordKey: Buffer;
  readonly #auditKey: Buffer;
  readonly #backupKey: Buffer;
  readonly #vaultId: string;

  /** Derives the sub-keys; the caller wipes `masterKey` afterwards. */
  constructor(masterKey: Uint8Array, vaultId: string) {
    this.#vaultId = vaultId;
    this.#recordKey = Buffer.from(hkdfSync('sha256', masterKey, Buffer.alloc(0), 'vhdcrypt vault records v1', 32));
    this.#auditKey = Buffer.from(hkdfSync('sha256', masterKey, Buffer.alloc(0), 'vhdcrypt vault audit v1', 32));
    // The backup key is independent of the vault id: a backup restores into any vault holding the same master key.
    this.#backupKey = Buffer.from(hkdfSync('sha256', masterKey, Buffer.alloc(0), 'vhdcrypt vault backup v1', 32));
  }

  /** Seal `plain` bound to `aad` (a record identity such as "secrets|name|version|value"). */
  seal(plain: Uint8Array, aad: string): Buffer {
    return gcmSeal(this.#recordKey, plain, `vhdcrypt-vault/v1|${this.#vaultId}|${aad}`);
  }

  /** Open a sealed blob; a failed tag check is VAULT_TAMPERED naming `what`. */
  open(blob: Uint8Array, aad: string, what: string): Buffer {
    const plain = gcmOpen(this.#recordKey, blob, `vhdcrypt-vault/v1|${this.#vaultId}|${aad}`);
    if (plain === null) throw new VaultError('VAULT_TAMPERED', `vault storage was modified or damaged: ${what} fails its authentication check`);
    return plain;
  }

  /** null instead of an error when the blob does not authenticate (the master-key check). */
  tryOpen(blob: Uint8Array, aad: string): Buffer | null {
    return gcmOpen(this.#recordKey, blob, `vhdcrypt-vault/v1|${this.#vaultId}|${aad}`);
  }

  sealBackup(plain: Uint8Array, kind: string): Buffer {
    return gcmSeal(this.#backupKey, plain, `vhdcrypt-vault-backup/v1|${kind}`);
  }

  /** null when the blob was not made by a vault holding this master key (or was altered). */
  openBackup(blob: Uint8Array, kind: string): Buffer | null {
    return gcmOpen(this.#backupKey, blob, `vhdcrypt-vault-backup/v1|${kind}`);
  }

  /** The audit chain MAC: HMAC-SHA256(auditKey, previous MAC || entry). */
  auditMac(previous: Uint8Array, entry: string): Buffer {
    return createHmac('sha256', this.#auditKey).update(previous).update(entry, 'utf8').digest();
  }

  wipe(): void {
    this.#recordKey.fill(0);
    this.#auditKey.fill(0);
    this.#backupKey.fill(0);
  }
}

function gcmSeal(key: Buffer, plain: Uint8Array, aad: string): Buffer {
  const nonce = randomBytes(NONCE);
  const c = createCipheriv('aes-256-gcm', key, nonce);
  c.setAAD(Buffer.from(aad, 'utf8'));
  const body = Buffer.concat([c.update(plain), c.final()]);
  return Buffer.concat([nonce, body, c.getAuthTag()]);
}

function gcmOpen(key: Buffer, blob: Uint8Array, aad: string): Buffer | null {
  if (!(blob instanceof Uint8Array) || blob.length < NONCE + TAG) return null;
  const b = Buffer.from(blob.buffer, blob.byteOffset, blob.byteLength);
  const d = createDecipheriv('aes-256-gcm', key, b.subarray(0, NONCE));
  d.setAAD(Buffer.from(aad, 'utf8'));
  d.setAuthTag(b.subarray(b.length - TAG));
  const out = d.update(b.subarray(NONCE, b.length - TAG));
  try {
    return Buffer.concat([out, d.final()]);
  } catch (e) {
    // Node reports a GCM tag mismatch only by throwing from final(): that is the tamper signal, not a fault.
    out.fill(0);
    if (e instanceof Error && /unable to authenticate|auth/i.test(e.message)) return null;
    throw e;
  }
}
