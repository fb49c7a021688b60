/**
 * The engine's use of the vault (issue 5): seal a disk's keyslot passphrase (or
 * a plain volume key) under the KEK, unseal it, find it by volume UUID, read a
 * secret's tags (a plain volume's parameters). Opened only when a run needs it.
 */
import { findDiskSecretByVolumeUuid, openVault, resolveRef, sealDiskKey, unsealDiskKey, type OpenVaultOptions } from '../vault/index.js';

export const DEFAULT_KEK = 'vhdcrypt-kek';

export interface EngineVault {
  readonly uri: string;
  seal(req: { diskId: string; material: Uint8Array; kek: string; tags: Record<string, string>; volumeUuid?: string; sourceName?: string }): Promise<{ secretId: string; kekId: string }>;
  /** The unwrapped material; the caller wipes it. */
  unseal(secretId: string): Promise<Uint8Array>;
  /** The secret id recorded for a volume UUID, or null. */
  findByVolumeUuid(uuid: string): Promise<string | null>;
  /** Soft-delete the secret (recoverable for the vault's retention period). */
  discard(secretId: string): Promise<void>;
  /** Tags of a secret version (no value leaves the vault unwrapped). */
  tags(secretId: string): Promise<Readonly<Record<string, string>>>;
  close(): Promise<void>;
}

/**
 * Open the vault at `uri` (default: the embedded vault at $VHDCRYPT_VAULT or the XDG data dir). Only a run that
 * seals (`forSealing`) may create the default vault on first use; nothing creates a vault it was merely pointed at.
 */
export async function openEngineVault(uri?: string, credentials?: unknown, forSealing = false): Promise<EngineVault> {
  const v = await openVault(uri, { ...(credentials ?? {}) as OpenVaultOptions, create: forSealing ? undefined : false });
  return {
    uri: v.uri,
    seal: (req) => sealDiskKey(v, req),
    unseal: (id) => unsealDiskKey(v, id),
    findByVolumeUuid: async (uuid) => (await findDiskSecretByVolumeUuid(v, uuid))?.id ?? null,
    discard: async (id) => {
      await v.deleteSecret(resolveRef(v.uri, 'secrets', id).name);
    },
    tags: async (id) => (await v.getSecret(id)).properties.tags,
    close: () => v.close(),
  };
}
