/**
 * Opening the embedded vault: create it on first use (master key from a
 * passphrase through argon2id, else wrapped by a key in a PKCS#11 token, else
 * a new key file), or unlock it and check
 * the master key against a sealed check value. Creation writes its metadata in
 * one IMMEDIATE transaction that first re-checks for it, so concurrent first
 * uses agree on one vault.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { isPkcs11Uri, unwrapWithToken, wrapWithToken, type Pkcs11WrapOptions } from '../../pkcs11/index.js';
import { VaultError } from '../errors.js';
import { checkRetention } from '../limits.js';
import type { VaultPropertiesUpdate } from '../types.js';
import { anchorAudit, verifyAuditHead } from './audit-log.js';
import { LocalVault } from './local-vault.js';
import { MASTER_KEY_BYTES, createOrReadKeyFile, deriveMasterKey, newKdfParams, readKeyFile, type KdfParams } from './master-key.js';
import { RecordCipher } from './record-cipher.js';
import { toJson, type PropertiesRecord } from './records.js';
import { DB_FILE_NAME, VaultStore } from './store.js';

// The sealed check value also says whether the audit log's head is anchored (see audit-log.ts): a vault made
// before heads existed holds the first text and is anchored once when opened; after that a missing head is
// tampering, and the check value, sealed under the master key, cannot be turned back.
const CHECK_TEXT_UNANCHORED = 'vhdcrypt-vault-master-key-check';
const CHECK_TEXT = 'vhdcrypt-vault-master-key-check/audit-head';

export interface LocalVaultOptions {
  /** Create the vault when absent (default false: only vault init and the default location create one). */
  readonly create?: boolean;
  /** Called once when this open created the vault. */
  readonly onCreated?: (keySource: KeySource) => void;
  /** Refuse an existing vault (vault init). */
  readonly exclusive?: boolean;
  /** Bearer token of a non-owner principal. */
  readonly token?: string;
  /** Master-key passphrase (else $VHDCRYPT_VAULT_PASSPHRASE; else the key file). */
  readonly passphrase?: string;
  /** Properties of a newly created vault. */
  readonly initialProperties?: VaultPropertiesUpdate;
  /** argon2id cost of a newly created passphrase vault. */
  readonly kdf?: Partial<Omit<KdfParams, 'salt'>>;
  /**
   * A new vault's master key is wrapped by this key in a PKCS#11 token (a pkcs11: URI), as Key Vault's
   * HSM-protected tier: the vault then opens only with the token present (and its PIN).
   */
  readonly masterKey?: string;
  /** How to reach the token: module, PIN (else $VHDCRYPT_PKCS11_MODULE / $VHDCRYPT_PKCS11_PIN). */
  readonly pkcs11?: Pkcs11WrapOptions;
}

export type KeySource = 'passphrase' | 'key-file' | 'pkcs11';

/** What a token-held master key's vault records: the key's URI, the mechanism, the wrapped master key. */
interface TokenMasterRecord {
  readonly uri: string;
  readonly mechanism: string;
  readonly wrapped: string;
}


/** Open (creating it only when `options.create`) the embedded vault in directory `dir`. */
export async function openLocalVault(dir: string, uri: string, options: LocalVaultOptions = {}): Promise<LocalVault> {
  const create = options.create ?? false;
  if (options.exclusive && existsSync(join(dir, DB_FILE_NAME))) throw new VaultError('VAULT_ALREADY_EXISTS', `a vault already exists in ${dir}`);
  if (create) mkdirSync(dir, { recursive: true, mode: 0o700 });
  else if (!existsSync(join(dir, DB_FILE_NAME))) throw new VaultError('VAULT_NOT_FOUND', `no vault in ${dir}; create it with 'vhdcrypt vault init'`);
  const store = await VaultStore.open(join(dir, DB_FILE_NAME), { create });
  let cipher: RecordCipher | null = null;
  try {
    const passphrase = options.passphrase ?? process.env.VHDCRYPT_VAULT_PASSPHRASE;
    if (store.getMeta('vault_id') === undefined) {
      if (!create) throw new VaultError('VAULT_NOT_FOUND', `no vault in ${dir}; create it with 'vhdcrypt vault init'`);
      cipher = await initialize(store, dir, passphrase, options);
      if (cipher) options.onCreated?.(options.masterKey !== undefined ? 'pkcs11' : passphrase !== undefined && passphrase !== '' ? 'passphrase' : 'key-file');
    }
    cipher ??= await unlock(store, dir, passphrase, options.pkcs11);
    verifyAuditHead(store, cipher);
    const vault = new LocalVault(store, cipher, uri);
    vault.authenticate(options.token);
    vault.purgeExpiredDeleted();
    return vault;
  } catch (e) {
    cipher?.wipe();
    store.close();
    throw e;
  }
}

/**
 * Create the vault's metadata; null when another process created it meanwhile.
 * The (slow) key derivation runs before the write lock is taken.
 */
async function initialize(store: VaultStore, dir: string, passphrase: string | undefined, o: LocalVaultOptions): Promise<RecordCipher | null> {
  const vaultId = randomBytes(16).toString('hex');
  if (o.masterKey !== undefined && !isPkcs11Uri(o.masterKey)) throw new VaultError('VAULT_BAD_ARGUMENT', 'a master key kept elsewhere is named by a pkcs11: URI');
  const kdf = o.masterKey === undefined && passphrase !== undefined && passphrase !== '' ? newKdfParams(o.kdf) : null;
  let token: TokenMasterRecord | null = null;
  let master: Buffer;
  if (o.masterKey !== undefined) {
    master = randomBytes(MASTER_KEY_BYTES);
    try {
      const w = await wrapWithToken(o.masterKey, master, o.pkcs11 ?? {});
      token = { uri: o.masterKey, mechanism: w.mechanism, wrapped: w.wrapped.toString('base64') };
    } catch (e) {
      master.fill(0);
      throw e;
    }
  } else {
    master = kdf ? await deriveMasterKey(passphrase!, kdf) : createOrReadKeyFile(dir);
  }
  const cipher = new RecordCipher(master, vaultId);
  master.fill(0);
  const p = o.initialProperties ?? {};
  // The embedded vault exists to hold disk keys, so unlike Azure it starts enabledForDiskEncryption.
  const props: PropertiesRecord = {
    enabledForDiskEncryption: p.enabledForDiskEncryption ?? true,
    softDeleteRetentionDays: checkRetention(p.softDeleteRetentionDays ?? 90),
    purgeProtection: p.purgeProtection ?? false,
    created: Date.now(),
  };
  const created = store.tx(() => {
    if (store.getMeta('vault_id') !== undefined) return false;
    store.setMeta('key_source', token ? 'pkcs11' : kdf ? 'passphrase' : 'key-file');
    if (kdf) store.setMeta('kdf', JSON.stringify(kdf));
    if (token) store.setMeta('pkcs11_master', JSON.stringify(token));
    store.setMeta('vault_id', vaultId);
    store.setMeta('format', '1');
    store.setMeta('check', cipher.seal(Buffer.from(CHECK_TEXT), 'meta|check'));
    store.setMeta('properties', cipher.seal(toJson(props), 'meta|properties'));
    anchorAudit(store, cipher);
    return true;
  });
  if (created) return cipher;
  cipher.wipe();
  return null;
}

async function unlock(store: VaultStore, dir: string, passphrase: string | undefined, pkcs11: Pkcs11WrapOptions | undefined): Promise<RecordCipher> {
  const vaultId = String(store.getMeta('vault_id'));
  const source = String(store.getMeta('key_source'));
  let master: Buffer;
  if (source === 'passphrase') {
    if (passphrase === undefined || passphrase === '') {
      throw new VaultError('VAULT_PASSPHRASE_REQUIRED', 'this vault is protected by a passphrase; set VHDCRYPT_VAULT_PASSPHRASE');
    }
    let kdf: KdfParams;
    try {
      kdf = JSON.parse(String(store.getMeta('kdf'))) as KdfParams;
    } catch (e) {
      throw new VaultError('VAULT_TAMPERED', 'the vault KDF parameters are unreadable', { cause: e });
    }
    master = await deriveMasterKey(passphrase, kdf);
  } else if (source === 'key-file') {
    master = readKeyFile(dir);
  } else if (source === 'pkcs11') {
    master = await unwrapTokenMaster(store, pkcs11);
  } else {
    throw new VaultError('VAULT_TAMPERED', 'the vault does not say where its master key comes from');
  }
  const cipher = new RecordCipher(master, vaultId);
  master.fill(0);
  const check = store.getMeta('check');
  const opened = Buffer.isBuffer(check) ? cipher.tryOpen(check, 'meta|check') : null;
  const text = opened?.toString();
  if (text === CHECK_TEXT_UNANCHORED) {
    try {
      anchorLegacyVault(store, cipher);
    } catch (e) {
      cipher.wipe();
      throw e;
    }
  } else if (text !== CHECK_TEXT) {
    cipher.wipe();
    throw new VaultError('VAULT_WRONG_MASTER_KEY', source === 'passphrase'
      ? 'wrong vault passphrase (or the vault was altered)'
      : source === 'pkcs11' ? 'the token key does not open this vault (or the vault was altered)'
      : `the key file ${join(dir, 'master.key')} does not open this vault (or the vault was altered)`);
  }
  return cipher;
}

/** The master key of a vault whose key is wrapped by a token key: unwrapped inside the token. */
async function unwrapTokenMaster(store: VaultStore, pkcs11: Pkcs11WrapOptions | undefined): Promise<Buffer> {
  let rec: TokenMasterRecord;
  try {
    rec = JSON.parse(String(store.getMeta('pkcs11_master'))) as TokenMasterRecord;
  } catch (e) {
    throw new VaultError('VAULT_TAMPERED', 'the vault\'s token master key record is unreadable', { cause: e });
  }
  if (!rec || typeof rec.uri !== 'string' || !isPkcs11Uri(rec.uri) || typeof rec.mechanism !== 'string' || typeof rec.wrapped !== 'string') {
    throw new VaultError('VAULT_TAMPERED', 'the vault\'s token master key record is malformed');
  }
  const m = await unwrapWithToken(rec.uri, rec.mechanism, Buffer.from(rec.wrapped, 'base64'), { access: pkcs11?.access });
  if (m.length !== MASTER_KEY_BYTES) {
    m.fill(0);
    throw new VaultError('VAULT_WRONG_MASTER_KEY', 'the token key does not open this vault (or the vault was altered)');
  }
  return Buffer.from(m.buffer, m.byteOffset, m.length);
}

/** A vault made before the audit head existed: verify its chain, anchor its head and mark it anchored, at once. */
function anchorLegacyVault(store: VaultStore, cipher: RecordCipher): void {
  store.tx(() => {
    const again = store.getMeta('check');
    if (Buffer.isBuffer(again) && cipher.tryOpen(again, 'meta|check')?.toString() === CHECK_TEXT) return;
    anchorAudit(store, cipher);
    store.setMeta('check', cipher.seal(Buffer.from(CHECK_TEXT), 'meta|check'));
  });
}
