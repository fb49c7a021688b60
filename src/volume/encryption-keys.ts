/**
 * Keys for a new encrypted volume: a random volume key in a LUKS header whose
 * keyslot opens with a random 256-bit passphrase sealed in the vault under the
 * KEK (recorded in a vhdcrypt-vault token on LUKS2), or with the caller's own
 * passphrase or key file; plain volumes seal the volume key itself.
 *
 * The sealed passphrase is text, the base64 of 32 random bytes (as
 * systemd-cryptenroll makes its recovery and TPM2 passphrases): QEMU's luks
 * driver takes a secret object that must be valid UTF-8, so raw random bytes
 * could never be handed to it. Images sealed with raw bytes still open: unseal
 * returns the sealed bytes and the keyslot is tried with them as they are.
 */
import { randomFillSync, randomUUID } from 'node:crypto';
import {
  KDF_RANDOM_SECRET,
  KDF_TYPED_PASSPHRASE,
  addKeyslot,
  addToken,
  format as luksFormat,
  vaultToken,
  type KdfOptions,
  type LuksSecret,
} from '../luks/index.js';
import type { WrapAlgorithm } from '../vault/index.js';
import { VolumeError } from './errors.js';
import { luksLayout, plainLayout, type EncryptionFormat, type PayloadLayout } from './payload-layout.js';
import { hasUserSecret, plainKeyFromFile, userSecret, wipeSecret, type KeySourceOptions } from './key-source.js';
import { DEFAULT_KEK, TAG_PENDING, openVolumeVault, withVaultSecret, type VolumeVault } from './vault-link.js';
import { KDF_SYSTEMD_PKCS11, base64Bytes, preparePkcs11Keyslot, type Pkcs11Enrollment } from './pkcs11-token.js';

/** For typed passphrases on LUKS1, which has PBKDF2 only (OWASP 2023 figure for PBKDF2-SHA256). */
export const KDF_TYPED_PASSPHRASE_LUKS1: KdfOptions = { type: 'pbkdf2', hash: 'sha256', iterations: 600_000 };

export interface EncryptionPlan {
  readonly format: EncryptionFormat;
  readonly keyBits: 256 | 512;
  readonly sectorSize: 512 | 4096;
  readonly dataOffset: bigint;
  /** Virtual size of the encrypted disk (header area + payload). */
  readonly diskSize: bigint;
  /** Container UUID of the output (names a plain volume's secret). */
  readonly containerUuid: string;
  readonly sourceName: string;
  /** Tag the sealed secret pending for this job (see TAG_PENDING) until the caller settles it. */
  readonly pendingJob?: string;
}

export interface EncryptionKeyOptions extends KeySourceOptions {
  readonly vault?: string;
  readonly vaultCredentials?: unknown;
  /** KEK name in the vault (created on first use); default 'vhdcrypt-kek'. */
  readonly kek?: string;
  /** Wrap algorithm with an RSA KEK (default RSA-OAEP-256). */
  readonly kekAlg?: WrapAlgorithm;
  /** Seal as an Azure Disk Encryption secret (LUKS formats only: ADE's secret holds a passphrase). */
  readonly ade?: { readonly machineName: string };
  /** KDF of a keyslot for the caller's passphrase or key file (default: argon2id as cryptsetup; PBKDF2 on LUKS1). */
  readonly kdf?: KdfOptions;
  /** A second keyslot for a passphrase a person types. */
  readonly recoveryPassphrase?: string | Uint8Array;
  readonly recoveryKdf?: KdfOptions;
  /** LUKS2: a keyslot and systemd-pkcs11 token that open with a PKCS#11 token's RSA key (see pkcs11-token.ts). */
  readonly enrollPkcs11?: Pkcs11Enrollment;
  /** The vault to seal into, opened by the caller (who closes it); else `vault` is opened and closed here. */
  readonly openVault?: VolumeVault;
}

export interface PreparedEncryption {
  /** Caller wipes. */
  readonly volumeKey: Uint8Array;
  /** The LUKS header region to write at offset 0 (null for plain). */
  readonly header: Uint8Array | null;
  readonly layout: PayloadLayout;
  readonly secretId: string | null;
  readonly kekId: string | null;
  readonly vaultUri: string | null;
  readonly luksUuid: string | null;
}

function pendingTag(plan: EncryptionPlan): Record<string, string> {
  return plan.pendingJob ? { [TAG_PENDING]: plan.pendingJob } : {};
}

/** KDF of a keyslot for a passphrase a person types (or the caller's key file): the one given, else the format's default. */
export function typedKdf(format: EncryptionFormat, given: KdfOptions | undefined): KdfOptions {
  return given ?? (format === 'luks1' ? KDF_TYPED_PASSPHRASE_LUKS1 : KDF_TYPED_PASSPHRASE);
}

/** Bytes of randomness in a generated keyslot passphrase (256 bits; 44 characters of base64). */
export const GENERATED_PASSPHRASE_BYTES = 32;

/**
 * A new keyslot passphrase: the ASCII bytes of base64(32 random bytes) (RFC 4648 section 4, padded), with no
 * string copy of it left that could not be wiped. Caller wipes.
 */
export function randomTextPassphrase(): Uint8Array {
  // Filled in place: a Buffer from randomBytes would be one more copy of the secret that nothing wipes.
  const raw = randomFillSync(new Uint8Array(GENERATED_PASSPHRASE_BYTES));
  try {
    return base64Bytes(raw);
  } finally {
    raw.fill(0);
  }
}

/** Make the volume key and header, sealing what opens them in the vault unless the caller gave a secret. */
export async function prepareEncryption(plan: EncryptionPlan, o: EncryptionKeyOptions): Promise<PreparedEncryption> {
  if (plan.format === 'plain') return preparePlain(plan, o);
  const version = plan.format === 'luks1' ? 1 : 2;
  const own = await userSecret(o);
  const generated = own ? null : randomTextPassphrase();
  const secret: LuksSecret = own ?? { passphrase: generated! };
  let volumeKey: Uint8Array | null = null;
  try {
    const f = await luksFormat(plan.diskSize, {
      version,
      keyBits: plan.keyBits,
      sectorSize: plan.sectorSize,
      dataOffset: plan.dataOffset,
      kdf: own ? typedKdf(plan.format, o.kdf) : KDF_RANDOM_SECRET,
      ...secret,
    });
    volumeKey = f.volumeKey;
    const header = f.header;
    const info = f.info;
    const slot = info.keyslots[0]?.id ?? 0;
    if (o.recoveryPassphrase !== undefined) {
      await addKeyslot(header, secret, { passphrase: o.recoveryPassphrase }, { kdf: o.recoveryKdf ?? typedKdf(plan.format, undefined), keyslot: slot });
    }
    if (o.enrollPkcs11 !== undefined) {
      if (version !== 2) throw new VolumeError('ENGINE_BAD_ARGUMENT', 'a systemd-pkcs11 token needs LUKS2 (LUKS1 has no tokens)');
      const p = await preparePkcs11Keyslot(o.enrollPkcs11);
      try {
        const id = await addKeyslot(header, secret, { passphrase: p.passphrase }, { kdf: KDF_SYSTEMD_PKCS11, keyslot: slot });
        await addToken(header, p.token(id));
      } finally {
        p.passphrase.fill(0);
      }
    }
    let sealed: { secretId: string; kekId: string } | null = null;
    let vaultUri: string | null = null;
    if (generated) {
      const vault = o.openVault ?? (await openVolumeVault(o.vault, o.vaultCredentials, true));
      try {
        sealed = await vault.seal({
          diskId: info.uuid,
          material: generated,
          kek: o.kek ?? DEFAULT_KEK,
          alg: o.kekAlg,
          ade: o.ade,
          tags: {
            VhdcryptFormat: plan.format, VolumeUuid: info.uuid, Cipher: 'aes-xts-plain64', KeyBits: String(plan.keyBits), SectorSize: String(plan.sectorSize), DataOffset: String(plan.dataOffset),
            ...pendingTag(plan),
          },
          volumeUuid: info.uuid,
          sourceName: plan.sourceName,
        });
        vaultUri = vault.uri;
      } finally {
        if (vault !== o.openVault) await vault.close();
      }
      if (version === 2) await addToken(header, vaultToken({ keyslot: slot, vault: vaultUri, secret: sealed.secretId }));
    }
    return {
      volumeKey,
      header,
      layout: luksLayout(info, plan.diskSize),
      secretId: sealed?.secretId ?? null,
      kekId: sealed?.kekId ?? null,
      vaultUri,
      luksUuid: info.uuid,
    };
  } catch (e) {
    volumeKey?.fill(0);
    throw e;
  } finally {
    generated?.fill(0);
    wipeSecret(own);
  }
}

async function preparePlain(plan: EncryptionPlan, o: EncryptionKeyOptions): Promise<PreparedEncryption> {
  const layout = plainLayout(plan.diskSize, plan.sectorSize);
  const keyBytes = plan.keyBits / 8;
  if (o.keyFile !== undefined) {
    const volumeKey = await plainKeyFromFile(o.keyFile, keyBytes);
    return { volumeKey, header: null, layout, secretId: null, kekId: null, vaultUri: null, luksUuid: null };
  }
  if (hasUserSecret(o)) {
    throw new VolumeError('ENGINE_BAD_ARGUMENT', 'plain volumes take a key file (the raw key) or a vault, not a passphrase');
  }
  if (o.recoveryPassphrase !== undefined) throw new VolumeError('ENGINE_BAD_ARGUMENT', 'plain volumes have no keyslots for a recovery passphrase');
  if (o.enrollPkcs11 !== undefined) throw new VolumeError('ENGINE_BAD_ARGUMENT', 'plain volumes have no keyslots for a systemd-pkcs11 token');
  if (o.ade !== undefined) throw new VolumeError('ENGINE_BAD_ARGUMENT', "an Azure Disk Encryption secret holds a LUKS passphrase; plain volumes have none (use --format luks1 or luks2)");
  const vault = o.openVault ?? (await openVolumeVault(o.vault, o.vaultCredentials, true));
  return withVaultSecret(vault, async (hold) => {
    const volumeKey = hold(randomXtsKey(keyBytes));
    const diskId = plan.containerUuid || randomUUID();
    const sealed = await vault.seal({
      diskId,
      material: volumeKey,
      kek: o.kek ?? DEFAULT_KEK,
      alg: o.kekAlg,
      // Plain has no header: every parameter needed to open it lives in these tags.
      tags: {
        VhdcryptFormat: 'plain',
        Cipher: 'aes-xts-plain64',
        KeyBits: String(plan.keyBits),
        SectorSize: String(plan.sectorSize),
        IvOffset: '0',
        Offset: '0',
        Hash: 'plain',
        ContainerUuid: diskId,
        ...pendingTag(plan),
      },
      volumeUuid: diskId,
      sourceName: plan.sourceName,
    });
    return { volumeKey, header: null, layout, secretId: sealed.secretId, kekId: sealed.kekId, vaultUri: vault.uri, luksUuid: null };
  }, vault !== o.openVault);
}

/** A random AES-XTS key whose two halves differ (XTS_EQUAL_KEY_HALVES otherwise); a rejected draw is wiped. Caller wipes. */
function randomXtsKey(keyBytes: number): Uint8Array {
  for (;;) {
    const key = randomFillSync(new Uint8Array(keyBytes));
    if (Buffer.compare(key.subarray(0, keyBytes / 2), key.subarray(keyBytes / 2)) !== 0) return key;
    key.fill(0);
  }
}
