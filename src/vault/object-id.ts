/** Object ids in Key Vault's shape: `<vault-uri>/(secrets|keys)/<name>[/<version>]`. */
import { VaultError } from './errors.js';
import { assertName } from './limits.js';

export type ObjectKind = 'secrets' | 'keys';

export interface ObjectRef {
  readonly name: string;
  readonly version: string | undefined;
}

const VERSION_RE = /^[0-9a-f]{32}$/;

/** The id of an object version (or of the object when `version` is absent). */
export function objectId(vaultUri: string, kind: ObjectKind, name: string, version?: string): string {
  return version ? `${vaultUri}/${kind}/${name}/${version}` : `${vaultUri}/${kind}/${name}`;
}

/** Resolve a bare name or a full id of this vault into name + version. */
export function resolveRef(vaultUri: string, kind: ObjectKind, nameOrId: string, version?: string): ObjectRef {
  const prefix = `${vaultUri}/${kind}/`;
  if (!nameOrId.includes('/')) {
    assertName(nameOrId, kind);
    if (version !== undefined) assertVersion(version);
    return { name: nameOrId, version };
  }
  if (!nameOrId.startsWith(prefix)) {
    throw new VaultError('VAULT_BAD_ID', `'${nameOrId}' is not a ${kind === 'keys' ? 'key' : 'secret'} id of vault ${vaultUri}`);
  }
  const parts = nameOrId.slice(prefix.length).split('/');
  if (parts.length > 2 || parts[0] === undefined) throw new VaultError('VAULT_BAD_ID', `malformed object id '${nameOrId}'`);
  assertName(parts[0], kind);
  const v = parts[1] !== undefined && parts[1] !== '' ? parts[1] : version;
  if (v !== undefined) assertVersion(v);
  return { name: parts[0], version: v };
}

/** Versions are 32 lowercase hex digits, as Key Vault's. */
export function assertVersion(version: string): void {
  if (!VERSION_RE.test(version)) throw new VaultError('VAULT_BAD_ID', `'${version}' is not an object version (32 hex digits)`);
}
