/**
 * `vhdcrypt vault ...`: the vault from the command line, after `az keyvault`
 * (same flag spellings where az has them). Every command takes --vault URI
 * (default: the embedded vault) and --json. The caller acts as the vault owner
 * unless $VHDCRYPT_VAULT_TOKEN holds a principal's token; a passphrase vault
 * reads $VHDCRYPT_VAULT_PASSPHRASE.
 */
import { randomBytes } from 'node:crypto';
import { closeSync, fsyncSync, openSync, readFileSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { dirname, join, basename } from 'node:path';
import { Command } from 'commander';
import {
  KEY_PERMISSIONS, MAX_SECRET_VALUE_BYTES, SECRET_PERMISSIONS, VaultError, openVault, rotateKek,
  type DeletedObject, type JsonWebKey, type KeyPermission, type KeyProperties, type KeyType, type OpenVaultOptions, type SecretPermission,
  type SecretProperties, type Vault,
} from '../vault/index.js';

type DeletedSecret = DeletedObject & { properties: SecretProperties };
type DeletedKey = DeletedObject & { properties: KeyProperties };

interface CommonOptions {
  vault?: string;
  json?: boolean;
}

interface AttributeOptions {
  expires?: string;
  notBefore?: string;
  disabled?: boolean;
  enabled?: string;
  tags?: string[];
  contentType?: string;
}

function withCommon(cmd: Command): Command {
  return cmd
    .option('--vault <uri>', 'vault URI (file:<dir>; default: $VHDCRYPT_VAULT or ~/.local/share/vhdcrypt)')
    .option('--json', 'print JSON');
}

function usage(message: string): VaultError {
  return new VaultError('VAULT_BAD_ARGUMENT', message);
}

function parseDate(s: string | undefined, flag: string): Date | undefined {
  if (s === undefined) return undefined;
  // ISO 8601 date or date-time; Date.parse alone also accepts non-ISO forms.
  if (!/^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?$/.test(s) || Number.isNaN(Date.parse(s))) {
    throw usage(`${flag} takes an ISO 8601 date or date-time, not ${JSON.stringify(s)}`);
  }
  return new Date(s);
}

function parseBool(s: string | undefined, flag: string): boolean | undefined {
  if (s === undefined) return undefined;
  if (s === 'true') return true;
  if (s === 'false') return false;
  throw usage(`${flag} takes true or false, not ${JSON.stringify(s)}`);
}

function parseTags(list: string[] | undefined): Record<string, string> | undefined {
  if (list === undefined) return undefined;
  const tags: Record<string, string> = {};
  for (const kv of list) {
    const eq = kv.indexOf('=');
    if (eq <= 0) throw usage(`--tags takes name=value pairs, not ${JSON.stringify(kv)}`);
    tags[kv.slice(0, eq)] = kv.slice(eq + 1);
  }
  return tags;
}

function parseInteger(s: string | undefined, flag: string): number | undefined {
  if (s === undefined) return undefined;
  if (!/^\d+$/.test(s)) throw usage(`${flag} takes a whole number, not ${JSON.stringify(s)}`);
  return Number(s);
}

/** Write a file atomically (temp, fsync, rename), mode 0600: backups are sensitive. */
function writeFileAtomic(path: string, data: Uint8Array): void {
  const tmp = join(dirname(path), `.${basename(path)}.${randomBytes(6).toString('hex')}.tmp`);
  const fd = openSync(tmp, 'wx', 0o600);
  let open = true;
  try {
    writeSync(fd, data);
    fsyncSync(fd);
    closeSync(fd);
    open = false;
    renameSync(tmp, path);
  } catch (e) {
    if (open) closeSync(fd);
    unlinkSync(tmp);
    throw e;
  }
}

function readInputFile(path: string): Buffer {
  try {
    return readFileSync(path);
  } catch (e) {
    throw new VaultError('VAULT_BAD_ARGUMENT', `cannot read ${path}: ${(e as Error).message}`, { cause: e });
  }
}

/** All of stdin as UTF-8 (a secret value given as --value -), without the one trailing newline a shell adds. */
async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const c of process.stdin) {
    const b = c as Buffer;
    total += b.length;
    // One byte past the vault's limit is enough for setSecret to refuse it with VAULT_VALUE_TOO_LARGE.
    if (total > MAX_SECRET_VALUE_BYTES + 2) {
      for (const x of chunks) x.fill(0);
      b.fill(0);
      throw new VaultError('VAULT_VALUE_TOO_LARGE', `the value on stdin is over ${MAX_SECRET_VALUE_BYTES} bytes`);
    }
    chunks.push(b);
  }
  const all = Buffer.concat(chunks);
  for (const x of chunks) x.fill(0);
  const end = all.length > 0 && all[all.length - 1] === 0x0a ? (all.length > 1 && all[all.length - 2] === 0x0d ? all.length - 2 : all.length - 1) : all.length;
  const text = all.subarray(0, end).toString('utf8');
  all.fill(0);
  return text;
}

/** Human output: objects as "key: value" lines, lists one JSON line per item. */
function print(opts: CommonOptions, value: unknown, human?: () => string): void {
  if (opts.json) {
    process.stdout.write(JSON.stringify(value ?? null, null, 2) + '\n');
    return;
  }
  if (human) {
    process.stdout.write(human());
    return;
  }
  if (Array.isArray(value)) {
    for (const v of value) process.stdout.write(JSON.stringify(v) + '\n');
    return;
  }
  if (value && typeof value === 'object') {
    for (const [k, v] of Object.entries(value)) {
      process.stdout.write(`${k}: ${v instanceof Date ? v.toISOString() : typeof v === 'object' && v !== null ? JSON.stringify(v) : String(v)}\n`);
    }
  }
}

/** Open the vault named by --vault, run `fn`, close. */
async function withVault<T>(opts: CommonOptions, fn: (v: Vault) => Promise<T>, extra: OpenVaultOptions = { create: false }): Promise<T> {
  const v = await openVault(opts.vault, extra);
  try {
    return await fn(v);
  } finally {
    await v.close();
  }
}

function registerSecret(vault: Command): void {
  const secret = vault.command('secret').description('secrets: small values (up to 10 KB), versioned');

  withCommon(secret.command('set').description('store a new version of a secret'))
    .requiredOption('--name <name>', 'secret name')
    .option('--value <value>', "the value ('-' reads it from stdin; given here it is visible to other processes)")
    .option('--file <path>', 'read the value from a file')
    .option('--encoding <enc>', 'file encoding: utf-8 (default) or base64 (binary files are stored base64)', 'utf-8')
    .option('--content-type <type>', 'content type')
    .option('--expires <iso8601>', 'expiry (exp)')
    .option('--not-before <iso8601>', 'not before (nbf)')
    .option('--disabled', 'create it disabled')
    .option('--tags <name=value...>', 'tags')
    .action(async (o: CommonOptions & AttributeOptions & { name: string; value?: string; file?: string; encoding: string }) => {
      if ((o.value === undefined) === (o.file === undefined)) throw usage('give exactly one of --value and --file');
      let value = o.value;
      if (value === '-') {
        value = await readStdin();
      } else if (value !== undefined) {
        // argv is world-readable through /proc/PID/cmdline (ps) for as long as this process runs.
        process.stderr.write("vhdcrypt: warning: a value given with --value is visible to other processes (ps); use --value - (stdin) or --file\n");
      }
      if (o.file !== undefined) {
        const bytes = readInputFile(o.file);
        if (o.encoding === 'base64') value = bytes.toString('base64');
        else if (o.encoding === 'utf-8' || o.encoding === 'utf8') value = bytes.toString('utf8');
        else throw usage('--encoding is utf-8 or base64');
        bytes.fill(0);
      }
      const p = await withVault(o, (v) => v.setSecret(o.name, value!, {
        contentType: o.contentType, tags: parseTags(o.tags), enabled: o.disabled ? false : undefined,
        expiresOn: parseDate(o.expires, '--expires'), notBefore: parseDate(o.notBefore, '--not-before'),
      }));
      print(o, p, () => `${p.id}\n`);
    });

  withCommon(secret.command('show').description('show a secret and its value (latest version unless --version)'))
    .option('--name <name>', 'secret name')
    .option('--id <id>', 'full secret id (with or without version)')
    .option('--version <version>', 'version')
    .action(async (o: CommonOptions & { name?: string; id?: string; version?: string }) => {
      const ref = o.id ?? o.name;
      if (!ref) throw usage('give --name or --id');
      const s = await withVault(o, (v) => v.getSecret(ref, o.version));
      print(o, { ...s.properties, value: s.value }, () => `${s.value}\n`);
    });

  withCommon(secret.command('list').description('list secrets (or the versions of one with --name, or deleted ones); never values'))
    .option('--name <name>', 'list the versions of this secret')
    .option('--deleted', 'list soft-deleted secrets')
    .action(async (o: CommonOptions & { name?: string; deleted?: boolean }) => {
      const list = await withVault<Array<SecretProperties | DeletedSecret>>(o, (v) => (o.deleted ? v.listDeletedSecrets() : o.name ? v.listSecretVersions(o.name) : v.listSecrets()));
      print(o, list, () => list.map((p) => ('properties' in p ? `${p.name}\tdeleted ${p.deletedOn.toISOString()}\tpurge ${p.scheduledPurgeDate.toISOString()}\n`
        : `${p.id}\t${p.enabled ? 'enabled' : 'disabled'}\t${p.contentType ?? ''}\n`)).join(''));
    });

  for (const [name, what] of [['delete', 'soft-delete a secret (recoverable until its retention ends)'], ['recover', 'recover a soft-deleted secret'], ['purge', 'permanently remove a soft-deleted secret']] as const) {
    withCommon(secret.command(name).description(what))
      .requiredOption('--name <name>', 'secret name')
      .action(async (o: CommonOptions & { name: string }) => {
        const r = await withVault<unknown>(o, (v) => (name === 'delete' ? v.deleteSecret(o.name) : name === 'recover' ? v.recoverDeletedSecret(o.name) : v.purgeDeletedSecret(o.name)));
        print(o, r ?? { purged: o.name });
      });
  }

  withCommon(secret.command('set-attributes').description('change attributes of a secret version (latest unless --version) without a new value'))
    .requiredOption('--name <name>', 'secret name')
    .option('--version <version>', 'version')
    .option('--enabled <bool>', 'true or false')
    .option('--expires <iso8601>', 'expiry (exp)')
    .option('--not-before <iso8601>', 'not before (nbf)')
    .option('--content-type <type>', 'content type')
    .option('--tags <name=value...>', 'replace the tags')
    .action(async (o: CommonOptions & AttributeOptions & { name: string; version?: string }) => {
      const p = await withVault(o, (v) => v.updateSecretProperties(o.name, o.version, {
        enabled: parseBool(o.enabled, '--enabled'), expiresOn: parseDate(o.expires, '--expires'), notBefore: parseDate(o.notBefore, '--not-before'),
        contentType: o.contentType, tags: parseTags(o.tags),
      }));
      print(o, p);
    });

  withCommon(secret.command('backup').description('write an encrypted backup of all versions of a secret'))
    .requiredOption('--name <name>', 'secret name')
    .requiredOption('--file <path>', 'backup file to write')
    .action(async (o: CommonOptions & { name: string; file: string }) => {
      writeFileAtomic(o.file, await withVault(o, (v) => v.backupSecret(o.name)));
      print(o, { name: o.name, file: o.file });
    });

  withCommon(secret.command('restore').description('restore a secret backup (only into a vault holding the same master key)'))
    .requiredOption('--file <path>', 'backup file')
    .action(async (o: CommonOptions & { file: string }) => {
      print(o, await withVault(o, (v) => v.restoreSecretBackup(readInputFile(o.file))));
    });
}

function registerKey(vault: Command): void {
  const key = vault.command('key').description('keys: RSA and 256-bit oct keys that never leave the vault');

  withCommon(key.command('create').description('create a key (or a new version of it)'))
    .requiredOption('--name <name>', 'key name')
    .option('--kty <kty>', 'RSA or oct', 'RSA')
    .option('--size <bits>', 'RSA: 2048, 3072 or 4096; oct: 256')
    .option('--expires <iso8601>', 'expiry (exp)')
    .option('--not-before <iso8601>', 'not before (nbf)')
    .option('--disabled', 'create it disabled')
    .option('--tags <name=value...>', 'tags')
    .action(async (o: CommonOptions & AttributeOptions & { name: string; kty: string; size?: string }) => {
      if (o.kty !== 'RSA' && o.kty !== 'oct') throw usage('--kty is RSA or oct');
      const k = await withVault(o, (v) => v.createKey(o.name, {
        kty: o.kty as KeyType, size: parseInteger(o.size, '--size'), tags: parseTags(o.tags), enabled: o.disabled ? false : undefined,
        expiresOn: parseDate(o.expires, '--expires'), notBefore: parseDate(o.notBefore, '--not-before'),
      }));
      print(o, k, () => `${k.properties.id}\n`);
    });

  withCommon(key.command('import').description('import a private RSA or 256-bit oct key from a JWK file'))
    .requiredOption('--name <name>', 'key name')
    .requiredOption('--file <path>', 'JWK (JSON) file')
    .option('--expires <iso8601>', 'expiry (exp)')
    .option('--not-before <iso8601>', 'not before (nbf)')
    .option('--disabled', 'import it disabled')
    .option('--tags <name=value...>', 'tags')
    .action(async (o: CommonOptions & AttributeOptions & { name: string; file: string }) => {
      const raw = readInputFile(o.file);
      let jwk: JsonWebKey;
      try {
        jwk = JSON.parse(raw.toString('utf8')) as JsonWebKey;
      } catch (e) {
        throw new VaultError('VAULT_INVALID_KEY', `${o.file} is not a JSON Web Key`, { cause: e });
      } finally {
        raw.fill(0);
      }
      const k = await withVault(o, (v) => v.importKey(o.name, jwk, {
        tags: parseTags(o.tags), enabled: o.disabled ? false : undefined,
        expiresOn: parseDate(o.expires, '--expires'), notBefore: parseDate(o.notBefore, '--not-before'),
      }));
      print(o, k, () => `${k.properties.id}\n`);
    });

  withCommon(key.command('show').description("show a key's public part and attributes"))
    .option('--name <name>', 'key name')
    .option('--id <id>', 'full key id')
    .option('--version <version>', 'version')
    .action(async (o: CommonOptions & { name?: string; id?: string; version?: string }) => {
      const ref = o.id ?? o.name;
      if (!ref) throw usage('give --name or --id');
      const k = await withVault(o, (v) => v.getKey(ref, o.version));
      print(o, k, () => `${JSON.stringify(k.key)}\n${Object.entries(k.properties).map(([a, b]) => `${a}: ${b instanceof Date ? b.toISOString() : typeof b === 'object' && b !== null ? JSON.stringify(b) : String(b)}`).join('\n')}\n`);
    });

  withCommon(key.command('list').description('list keys (or the versions of one with --name, or deleted ones)'))
    .option('--name <name>', 'list the versions of this key')
    .option('--deleted', 'list soft-deleted keys')
    .action(async (o: CommonOptions & { name?: string; deleted?: boolean }) => {
      const list = await withVault<Array<KeyProperties | DeletedKey>>(o, (v) => (o.deleted ? v.listDeletedKeys() : o.name ? v.listKeyVersions(o.name) : v.listKeys()));
      print(o, list, () => list.map((p) => ('properties' in p ? `${p.name}\tdeleted ${p.deletedOn.toISOString()}\tpurge ${p.scheduledPurgeDate.toISOString()}\n`
        : `${p.id}\t${p.kty}-${p.keySize}\t${p.enabled ? 'enabled' : 'disabled'}\n`)).join(''));
    });

  withCommon(key.command('rotate').description('create a new version of a key (same type and size)'))
    .requiredOption('--name <name>', 'key name')
    .action(async (o: CommonOptions & { name: string }) => {
      const k = await withVault(o, (v) => v.rotateKey(o.name));
      print(o, k, () => `${k.properties.id}\n`);
    });

  for (const [name, what] of [['delete', 'soft-delete a key'], ['recover', 'recover a soft-deleted key'], ['purge', 'permanently remove a soft-deleted key']] as const) {
    withCommon(key.command(name).description(what))
      .requiredOption('--name <name>', 'key name')
      .action(async (o: CommonOptions & { name: string }) => {
        const r = await withVault<unknown>(o, (v) => (name === 'delete' ? v.deleteKey(o.name) : name === 'recover' ? v.recoverDeletedKey(o.name) : v.purgeDeletedKey(o.name)));
        print(o, r ?? { purged: o.name });
      });
  }

  withCommon(key.command('set-attributes').description('change attributes of a key version (latest unless --version)'))
    .requiredOption('--name <name>', 'key name')
    .option('--version <version>', 'version')
    .option('--enabled <bool>', 'true or false')
    .option('--expires <iso8601>', 'expiry (exp)')
    .option('--not-before <iso8601>', 'not before (nbf)')
    .option('--tags <name=value...>', 'replace the tags')
    .action(async (o: CommonOptions & AttributeOptions & { name: string; version?: string }) => {
      print(o, await withVault(o, (v) => v.updateKeyProperties(o.name, o.version, {
        enabled: parseBool(o.enabled, '--enabled'), expiresOn: parseDate(o.expires, '--expires'), notBefore: parseDate(o.notBefore, '--not-before'),
        tags: parseTags(o.tags),
      })));
    });

  withCommon(key.command('backup').description('write an encrypted backup of all versions of a key'))
    .requiredOption('--name <name>', 'key name')
    .requiredOption('--file <path>', 'backup file to write')
    .action(async (o: CommonOptions & { name: string; file: string }) => {
      writeFileAtomic(o.file, await withVault(o, (v) => v.backupKey(o.name)));
      print(o, { name: o.name, file: o.file });
    });

  withCommon(key.command('restore').description('restore a key backup (only into a vault holding the same master key)'))
    .requiredOption('--file <path>', 'backup file')
    .action(async (o: CommonOptions & { file: string }) => {
      print(o, await withVault(o, (v) => v.restoreKeyBackup(readInputFile(o.file))));
    });
}

function registerPrincipalsAndPolicies(vault: Command): void {
  const principal = vault.command('principal').description('named identities that present bearer tokens ($VHDCRYPT_VAULT_TOKEN)');
  withCommon(principal.command('add').description('add a principal and print its token (shown once; stored hashed)'))
    .requiredOption('--name <name>', 'principal name')
    .action(async (o: CommonOptions & { name: string }) => {
      const r = await withVault(o, (v) => v.addPrincipal(o.name));
      print(o, r, () => `${r.token}\n`);
    });
  withCommon(principal.command('remove').description('remove a principal (its token stops working at once)'))
    .requiredOption('--name <name>', 'principal name')
    .action(async (o: CommonOptions & { name: string }) => {
      await withVault(o, (v) => v.removePrincipal(o.name));
      print(o, { removed: o.name });
    });
  withCommon(principal.command('list').description('list principals and their permissions'))
    .action(async (o: CommonOptions) => {
      const list = await withVault(o, (v) => v.listPrincipals());
      print(o, list, () => list.map((p) => `${p.name}\tsecrets: ${p.policy.secrets.join(',') || '-'}\tkeys: ${p.policy.keys.join(',') || '-'}\n`).join(''));
    });

  const policy = vault.command('policy').description('access policies: permissions per principal and object kind');
  withCommon(policy.command('set').description('set the secret and/or key permissions of a principal'))
    .requiredOption('--principal <name>', 'principal name')
    .option('--secret-permissions <perm...>', `any of: ${SECRET_PERMISSIONS.join(' ')}`)
    .option('--key-permissions <perm...>', `any of: ${KEY_PERMISSIONS.join(' ')}`)
    .action(async (o: CommonOptions & { principal: string; secretPermissions?: string[]; keyPermissions?: string[] }) => {
      if (!o.secretPermissions && !o.keyPermissions) throw usage('give --secret-permissions and/or --key-permissions');
      print(o, await withVault(o, (v) => v.setAccessPolicy(o.principal, {
        secrets: o.secretPermissions as SecretPermission[] | undefined, keys: o.keyPermissions as KeyPermission[] | undefined,
      })));
    });
  withCommon(policy.command('delete').description('remove every permission of a principal'))
    .requiredOption('--principal <name>', 'principal name')
    .action(async (o: CommonOptions & { principal: string }) => {
      print(o, await withVault(o, (v) => v.deleteAccessPolicy(o.principal)));
    });
  withCommon(policy.command('list').description('list access policies'))
    .action(async (o: CommonOptions) => {
      const list = await withVault(o, (v) => v.listPrincipals());
      print(o, list.map((p) => ({ principal: p.name, ...p.policy })));
    });
}

/** Registers `vhdcrypt vault ...`. */
export function registerVault(program: Command): void {
  const vault = program.command('vault').description('the key vault: secrets, keys, disk keys sealed under a KEK (after az keyvault)');

  withCommon(vault.command('init').description('create a vault (master key: $VHDCRYPT_VAULT_PASSPHRASE via argon2id, else a 0600 key file)'))
    .option('--enabled-for-disk-encryption <bool>', 'allow sealing disk keys (default true)')
    .option('--retention-days <days>', 'soft-delete retention, 7-90 (default 90)')
    .option('--enable-purge-protection', 'refuse purges before the retention ends (cannot be undone)')
    .action(async (o: CommonOptions & { enabledForDiskEncryption?: string; retentionDays?: string; enablePurgeProtection?: boolean }) => {
      const props = await withVault(o, (v) => v.getProperties(), {
        create: true,
        exclusive: true,
        initialProperties: {
          enabledForDiskEncryption: parseBool(o.enabledForDiskEncryption, '--enabled-for-disk-encryption'),
          softDeleteRetentionDays: parseInteger(o.retentionDays, '--retention-days'),
          purgeProtection: o.enablePurgeProtection,
        },
      });
      print(o, props);
    });

  withCommon(vault.command('show').description('show the vault properties'))
    .action(async (o: CommonOptions) => print(o, await withVault(o, (v) => v.getProperties())));

  withCommon(vault.command('set-property').description('change vault properties (owner only)'))
    .option('--enabled-for-disk-encryption <bool>', 'true or false')
    .option('--retention-days <days>', 'soft-delete retention, 7-90')
    .option('--enable-purge-protection', 'turn purge protection on (cannot be undone)')
    .action(async (o: CommonOptions & { enabledForDiskEncryption?: string; retentionDays?: string; enablePurgeProtection?: boolean }) => {
      print(o, await withVault(o, (v) => v.setProperties({
        enabledForDiskEncryption: parseBool(o.enabledForDiskEncryption, '--enabled-for-disk-encryption'),
        softDeleteRetentionDays: parseInteger(o.retentionDays, '--retention-days'),
        purgeProtection: o.enablePurgeProtection ? true : undefined,
      })));
    });

  registerSecret(vault);
  registerKey(vault);
  registerPrincipalsAndPolicies(vault);

  withCommon(vault.command('rotate-kek').description('new KEK version, rewrap every disk secret under it, disable the old versions (restartable)'))
    .argument('<name>', 'KEK name')
    .action(async (name: string, o: CommonOptions) => {
      const r = await withVault(o, (v) => rotateKek(v, name));
      for (const u of r.unreadable) process.stderr.write(`vhdcrypt: warning: skipped ${u.id}: not a wrapped key this KEK opens (${u.code})\n`);
      print(o, r, () => `${r.kekId}\nrewrapped ${r.rewrapped.length}, skipped ${r.skipped.length}, disabled ${r.disabled.length} old version(s)`
        + `${r.keptEnabled.length ? `, kept ${r.keptEnabled.length} enabled for skipped secrets` : ''}\n`);
    });

  withCommon(vault.command('audit').description('print the audit log (owner only; its MAC chain is verified)'))
    .option('--limit <n>', 'only the last n entries')
    .action(async (o: CommonOptions & { limit?: string }) => {
      const entries = await withVault(o, (v) => v.readAudit({ limit: parseInteger(o.limit, '--limit') }));
      print(o, entries, () => entries.map((e) => `${e.seq}\t${e.time.toISOString()}\t${e.principal}\t${e.operation}\t${e.objectId}\t${e.result}\n`).join(''));
    });
}
