/**
 * The volume layer's use of the vault: seal a disk's keyslot passphrase (or
 * a plain volume key) under the KEK, unseal it, find it by volume UUID, read a
 * secret's tags (a plain volume's parameters). Opened only when a run needs it.
 */
import { existsSync } from 'node:fs';
import {
  VaultError, defaultVaultPath, defaultVaultUri, isDiskSecretType, findDiskSecretByVolumeUuid, openVault, resolveRef, sealDiskKey, unsealDiskKey, type OpenVaultOptions, type SealDiskKeyRequest,
} from '../vault/index.js';

export const DEFAULT_KEK = 'vhdcrypt-kek';
/**
 * Tag on a disk secret sealed for an output whose header and first journal are not written yet; its value
 * names the job (see pendingJobTag). A run killed in that window leaves the secret tagged, and the next run of
 * the same job removes it; the tag is cleared once the journal exists (from then on --resume uses the secret).
 */
export const TAG_PENDING = 'vhdcrypt-pending';

export interface VolumeVault {
  readonly uri: string;
  seal(req: SealDiskKeyRequest): Promise<{ secretId: string; kekId: string }>;
  /** The unwrapped material; the caller wipes it. */
  unseal(secretId: string): Promise<Uint8Array>;
  /** The secret id recorded for a volume UUID, or null. */
  findByVolumeUuid(uuid: string): Promise<string | null>;
  /** Soft-delete the secret (recoverable for the vault's retention period). */
  discard(secretId: string): Promise<void>;
  /** Tags of a secret version (no value leaves the vault unwrapped). */
  tags(secretId: string): Promise<Readonly<Record<string, string>>>;
  /** Clear the pending tag of a secret version (no-op when absent). */
  settle(secretId: string): Promise<void>;
  /** Soft-delete the disk secrets still pending for `job`; returns their ids. Needs secrets/list. */
  discardPending(job: string): Promise<string[]>;
  close(): Promise<void>;
}

/** True when the default vault's directory exists (no directory: no vault, so no secret in it). */
export function defaultVaultExists(): boolean {
  // A remote default vault ($VHDCRYPT_VAULT=https://...) is asked, not looked for on disk.
  return defaultVaultUri().startsWith('https:') || existsSync(defaultVaultPath());
}

/**
 * Open the vault at `uri` (default: the embedded vault at $VHDCRYPT_VAULT or the XDG data dir). Only a run that
 * seals (`forSealing`) may create the default vault on first use; nothing creates a vault it was merely pointed at.
 */
export async function openVolumeVault(uri?: string, credentials?: unknown, forSealing = false): Promise<VolumeVault> {
  const creds = (credentials ?? {}) as OpenVaultOptions;
  const v = await openVault(uri, { ...creds, create: forSealing ? undefined : false });
  // A KEK in a PKCS#11 token (kek: 'pkcs11:...') is reached with the same module and PIN as a token master key.
  const pkcs11 = creds.pkcs11;
  return {
    uri: v.uri,
    seal: (req) => sealDiskKey(v, { ...req, ...(pkcs11 ? { pkcs11 } : {}) }),
    unseal: (id) => unsealDiskKey(v, id, { pkcs11: pkcs11?.access }),
    findByVolumeUuid: async (uuid) => (await findDiskSecretByVolumeUuid(v, uuid))?.id ?? null,
    discard: async (id) => {
      await v.deleteSecret(resolveRef(v.uri, 'secrets', id).name);
    },
    tags: async (id) => (await v.getSecret(id)).properties.tags,
    settle: async (id) => {
      const ref = resolveRef(v.uri, 'secrets', id);
      let versions;
      try {
        versions = await v.listSecretVersions(ref.name);
      } catch (e) {
        // Without secrets/list, the version sealed (a concurrent rotation's rewrap of it is left to rotate again).
        if (!(e instanceof VaultError) || e.code !== 'VAULT_FORBIDDEN') throw e;
        versions = [(await v.getSecret(id)).properties];
      }
      for (const p of versions) {
        if (p.tags[TAG_PENDING] === undefined) continue;
        const { [TAG_PENDING]: _pending, ...tags } = p.tags;
        await v.updateSecretProperties(ref.name, p.version, { tags });
      }
    },
    discardPending: async (job) => {
      const gone: string[] = [];
      for (const s of await v.listSecrets()) {
        if (!isDiskSecretType(s.contentType) || s.tags[TAG_PENDING] !== job) continue;
        try {
          await v.deleteSecret(s.name);
          gone.push(s.id);
        } catch (e) {
          // Another run of the same job removed it first.
          if (!(e instanceof VaultError) || (e.code !== 'VAULT_SECRET_NOT_FOUND' && e.code !== 'VAULT_DELETED')) throw e;
        }
      }
      return gone;
    },
    close: () => v.close(),
  };
}

/** Best effort after a failure: the run's own error is the one reported, so a vault refusal here is not raised. */
export async function discardSecret(s: { secretId: string; vaultUri: string | undefined }, credentials: unknown): Promise<void> {
  await Promise.allSettled([
    (async () => {
      const vault = await openVolumeVault(s.vaultUri, credentials);
      try {
        await vault.discard(s.secretId);
      } finally {
        await vault.close();
      }
    })(),
  ]);
}

/**
 * Run `use` with the vault open, then close it (unless `ownsVault` is false: the caller opened it and closes it). What `use` unsealed or made (and passed to `hold`) was allocated here, so
 * it is wiped here when anything after the unseal fails, closing the vault included; otherwise it goes to the
 * caller, who wipes it. A failure keeps its own error even when closing fails too.
 */
export async function withVaultSecret<T>(vault: VolumeVault, use: (hold: (material: Uint8Array) => Uint8Array) => Promise<T>, ownsVault = true): Promise<T> {
  const held: Uint8Array[] = [];
  const wipeHeld = () => {
    for (const m of held) m.fill(0);
  };
  let result: T;
  try {
    result = await use((m) => {
      held.push(m);
      return m;
    });
  } catch (e) {
    wipeHeld();
    if (ownsVault) await Promise.allSettled([vault.close()]);
    throw e;
  }
  try {
    if (ownsVault) await vault.close();
  } catch (e) {
    wipeHeld();
    throw e;
  }
  return result;
}
