/**
 * The engine's use of the vault (issue 5): seal a disk's keyslot passphrase (or
 * a plain volume key) under the KEK, unseal it, find it by volume UUID.
 * Loaded lazily so that passphrase/key-file runs never touch a vault.
 */
import { EngineError } from './errors.js';

/** The part of src/vault the engine calls (its stated interface). */
interface VaultModule {
  openVault(uri?: string, credentials?: unknown): Promise<VaultHandle>;
  sealDiskKey(
    vault: VaultHandle,
    req: { diskId: string; material: Uint8Array; kek: string; tags?: Record<string, string>; volumeUuid?: string; sourceName?: string },
  ): Promise<{ secretId: string; kekId: string }>;
  unsealDiskKey(vault: VaultHandle, secretId: string): Promise<Uint8Array>;
  findDiskSecretByVolumeUuid(vault: VaultHandle, uuid: string): Promise<unknown>;
}

interface VaultHandle {
  readonly uri?: string;
  close?(): Promise<void> | void;
}

export const DEFAULT_KEK = 'vhdcrypt-kek';

export interface EngineVault {
  readonly uri: string;
  seal(req: { diskId: string; material: Uint8Array; kek: string; tags: Record<string, string>; volumeUuid?: string; sourceName?: string }): Promise<{ secretId: string; kekId: string }>;
  unseal(secretId: string): Promise<Uint8Array>;
  /** The secret id recorded for a volume UUID, or null. */
  findByVolumeUuid(uuid: string): Promise<string | null>;
  close(): Promise<void>;
}

const VAULT_MODULE = '../vault/index.js';

async function loadVaultModule(): Promise<VaultModule> {
  try {
    return (await import(VAULT_MODULE)) as VaultModule;
  } catch (e) {
    throw new EngineError('ENGINE_NO_KEY_SOURCE', 'the vault module is not available in this build; use --passphrase-file or --key-file', { cause: e });
  }
}

function secretIdOf(found: unknown): string | null {
  if (found == null) return null;
  if (typeof found === 'string') return found;
  if (typeof found === 'object') {
    const o = found as { secretId?: unknown; id?: unknown };
    if (typeof o.secretId === 'string') return o.secretId;
    if (typeof o.id === 'string') return o.id;
  }
  return null;
}

/** Open the vault at `uri` (default: the embedded vault at $VHDCRYPT_VAULT or the XDG data dir). */
export async function openEngineVault(uri?: string, credentials?: unknown): Promise<EngineVault> {
  const m = await loadVaultModule();
  const v = await m.openVault(uri, credentials);
  return {
    uri: v.uri ?? uri ?? '',
    seal: (req) => m.sealDiskKey(v, req),
    unseal: (id) => m.unsealDiskKey(v, id),
    findByVolumeUuid: async (uuid) => secretIdOf(await m.findDiskSecretByVolumeUuid(v, uuid)),
    close: async () => {
      await v.close?.();
    },
  };
}
