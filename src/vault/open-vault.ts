/** Choosing a vault provider by URI scheme; the embedded local vault is the default. */
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { VaultError } from './errors.js';
import type { KeySource, LocalVaultOptions } from './local/open-local-vault.js';
import type { Vault, VaultCredentials } from './types.js';
import type { AzureVaultOptions } from './azure/azure-vault.js';

export type OpenVaultOptions = VaultCredentials & AzureVaultOptions & Omit<LocalVaultOptions, 'token' | 'passphrase' | 'create' | 'onCreated'> & {
  /**
   * true: create the vault if absent (vault init); false: never. Absent: only the default location
   * (no URI and no $VHDCRYPT_VAULT) is created on first use, with a notice on stderr; any other
   * missing vault is VAULT_NOT_FOUND, so a mistyped or moved vault never silently becomes a new, empty one.
   */
  readonly create?: boolean;
};

/** $VHDCRYPT_VAULT, else $XDG_DATA_HOME/vhdcrypt, else ~/.local/share/vhdcrypt. */
export function defaultVaultPath(): string {
  const env = process.env.VHDCRYPT_VAULT;
  if (env) return resolve(env.startsWith('file:') ? filePath(env) : env);
  const xdg = process.env.XDG_DATA_HOME;
  return join(xdg && xdg.startsWith('/') ? xdg : join(homedir(), '.local', 'share'), 'vhdcrypt');
}

/** The default vault's URI: $VHDCRYPT_VAULT when it is an https: vault, else `file:<absolute path>`. */
export function defaultVaultUri(): string {
  const env = process.env.VHDCRYPT_VAULT;
  if (env && /^https:/i.test(env)) return env;
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

/** The one-time notice printed when the default vault is created on first use. */
function createdNotice(dir: string, keySource: KeySource): string {
  const key = keySource === 'pkcs11' ? 'its master key is wrapped by a key in a PKCS#11 token; lose that key and every disk sealed here is lost'
    : keySource === 'key-file'
    ? `its master key is ${join(dir, 'master.key')}; lose that file and every disk sealed here is lost`
    : 'its master key comes from $VHDCRYPT_VAULT_PASSPHRASE; lose the passphrase and every disk sealed here is lost';
  return `vhdcrypt: created the default vault at ${dir} (first use): ${key}. `
    + `Back up the whole directory (vault.sqlite${keySource === 'key-file' ? ' and master.key' : ''}), e.g. cp -a ${dir} <safe place>, and keep the copy private.\n`;
}

/**
 * Open the vault at `uri` (default: the embedded vault), acting as the owner
 * when no token is given (else $VHDCRYPT_VAULT_TOKEN's principal). Only the
 * default location is created implicitly (see OpenVaultOptions.create).
 * `file:<dir>` and bare paths open the embedded vault; `https://NAME.vault.azure.net` (or any https origin
 * serving Key Vault's REST API, such as `vhdcrypt vault serve`) opens Azure Key Vault through Microsoft's SDKs,
 * with `credentials.credential` or DefaultAzureCredential (a token and passphrase do not apply there).
 */
export async function openVault(uri?: string, credentials: OpenVaultOptions = {}): Promise<Vault> {
  const u = uri ?? defaultVaultUri();
  const scheme = /^([a-zA-Z][a-zA-Z0-9+.-]*):/.exec(u)?.[1]?.toLowerCase();
  if (scheme === 'https') {
    // Loaded on demand: the SDKs are a few hundred modules a file: vault never needs.
    const { AzureVault } = await import('./azure/azure-vault.js');
    return AzureVault.open(u, { credential: credentials.credential, caPem: credentials.caPem });
  }
  if (scheme !== undefined && scheme !== 'file') {
    throw new VaultError('VAULT_UNSUPPORTED_PROVIDER', `no vault provider for '${scheme}:' URIs (supported: file:, https: for Azure Key Vault)`);
  }
  const dir = resolve(scheme === 'file' ? filePath(u) : u);
  if (dir === '' || u === 'file:') throw new VaultError('VAULT_BAD_ID', 'a file: vault URI needs a path');
  const token = credentials.token ?? (process.env.VHDCRYPT_VAULT_TOKEN || undefined);
  const isDefaultLocation = uri === undefined && !process.env.VHDCRYPT_VAULT;
  const { create: asked, ...rest } = credentials;
  const create = asked ?? isDefaultLocation;
  // Loaded on demand too: the embedded vault's store, cipher and audit log are code an https: vault never runs.
  const { openLocalVault } = await import('./local/open-local-vault.js');
  return openLocalVault(dir, `file:${dir}`, {
    ...rest,
    token,
    create,
    onCreated: asked === undefined ? (keySource) => process.stderr.write(createdNotice(dir, keySource)) : undefined,
  });
}
