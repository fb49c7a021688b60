/** Choosing a vault provider by URI scheme; the embedded local vault is the default. */
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { VaultError } from './errors.js';
import { openLocalVault, type LocalVaultOptions } from './local/open-local-vault.js';
import type { Vault, VaultCredentials } from './types.js';

export type OpenVaultOptions = VaultCredentials & Omit<LocalVaultOptions, 'token' | 'passphrase'>;

/** $VHDCRYPT_VAULT, else $XDG_DATA_HOME/vhdcrypt, else ~/.local/share/vhdcrypt. */
export function defaultVaultPath(): string {
  const env = process.env.VHDCRYPT_VAULT;
  if (env) return resolve(env.startsWith('file:') ? filePath(env) : env);
  const xdg = process.env.XDG_DATA_HOME;
  return join(xdg && xdg.startsWith('/') ? xdg : join(homedir(), '.local', 'share'), 'vhdcrypt');
}

/** The default vault's URI, `file:<absolute path>`. */
export function defaultVaultUri(): string {
  return `file:${defaultVaultPath()}`;
}

function filePath(uri: string): string {
  if (uri.startsWith('file://')) {
    try {
      return fileURLToPath(uri);
    } catch (e) {
      throw new VaultError('VAULT_BAD_ID', `bad file URI ${JSON.stringify(uri)}`, { cause: e });
    }
  }
  return uri.slice('file:'.length);
}

/**
 * Open the vault at `uri` (default: the embedded vault), acting as the owner
 * when no token is given (else $VHDCRYPT_VAULT_TOKEN's principal).
 * `file:<dir>` and bare paths open the embedded vault; other schemes
 * (https://NAME.vault.azure.net, ...) are VAULT_UNSUPPORTED_PROVIDER for now.
 */
export async function openVault(uri?: string, credentials: OpenVaultOptions = {}): Promise<Vault> {
  const u = uri ?? defaultVaultUri();
  const scheme = /^([a-zA-Z][a-zA-Z0-9+.-]*):/.exec(u)?.[1]?.toLowerCase();
  if (scheme !== undefined && scheme !== 'file') {
    throw new VaultError('VAULT_UNSUPPORTED_PROVIDER', `no vault provider for '${scheme}:' URIs in this build (supported: file:)`);
  }
  const dir = resolve(scheme === 'file' ? filePath(u) : u);
  if (dir === '' || u === 'file:') throw new VaultError('VAULT_BAD_ID', 'a file: vault URI needs a path');
  const token = credentials.token ?? (process.env.VHDCRYPT_VAULT_TOKEN || undefined);
  return openLocalVault(dir, `file:${dir}`, { ...credentials, token });
}
