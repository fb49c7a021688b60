/**
 * `vhdcrypt vault ...`: the vault from the command line, after `az keyvault`
 * (same flag spellings where az has them: -n/--name, --id, --version, --enabled/--disabled, --encoding,
 * list-versions/list-deleted/show-deleted, key encrypt/decrypt, -o json|table|tsv). Every command takes
 * --vault URI (default: the embedded vault) and -o (--json is -o json). The caller acts as the vault owner
 * unless $VHDCRYPT_VAULT_TOKEN holds a principal's token; a passphrase vault reads $VHDCRYPT_VAULT_PASSPHRASE.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { isPkcs11Uri } from '../pkcs11/index.js';
import { withPkcs11, type Pkcs11Flags } from './pkcs11-command.js';
import { Command, Option } from 'commander';
import { systemErrorText } from './system-error-text.js';
import { writeFileAtomic as writeWholeFile } from './atomic-file.js';
import {
  ENCRYPT_ALGORITHMS, KEY_PERMISSIONS, MAX_SECRET_VALUE_BYTES, SECRET_PERMISSIONS, VaultError, WRAP_ALGORITHMS, objectId, openVault, resolveRef, rotateKek,
  type DeletedObject, type EncryptAlgorithm, type JsonWebKey, type KeyPermission, type KeyProperties, type KeyType, type ObjectKind,
  type OpenVaultOptions, type SecretPermission, type SecretProperties, type Vault, type WrapAlgorithm,
} from '../vault/index.js';

type DeletedSecret = DeletedObject & { properties: SecretProperties };
type DeletedKey = DeletedObject & { properties: KeyProperties };

/** az's output formats (`-o`); absent = each command's plain output (a value, an id, or `key: value` lines). */
const OUTPUT_FORMATS = ['json', 'table', 'tsv'] as const;
type OutputFormat = (typeof OUTPUT_FORMATS)[number];

interface CommonOptions extends Pkcs11Flags {
  vault?: string;
  json?: boolean;
  output?: string;
}

interface AttributeOptions {
  expires?: string;
  notBefore?: string;
  /** `--disabled` alone is `--disabled true`. */
  disabled?: string | boolean;
  enabled?: string;
  tags?: string[];
  contentType?: string;
}

/** --name/-n, --id and --version as az takes them: a name (and version) or a full object id, never both. */
interface RefOptions {
  name?: string;
  id?: string;
  version?: string;
}

function usage(message: string): VaultError {
  return new VaultError('VAULT_BAD_ARGUMENT', message);
}

function formatOf(o: CommonOptions): OutputFormat | undefined {
  if (o.output !== undefined && !(OUTPUT_FORMATS as readonly string[]).includes(o.output)) {
    throw usage(`-o takes ${OUTPUT_FORMATS.join(', ')}, not ${JSON.stringify(o.output)}`);
  }
  if (o.json && o.output !== undefined && o.output !== 'json') throw usage(`--json is -o json; it cannot go with -o ${o.output}`);
  return o.json ? 'json' : (o.output as OutputFormat | undefined);
}

function withCommon(cmd: Command): Command {
  return cmd
    .option('--vault <uri>', 'vault URI (file:<dir>; default: $VHDCRYPT_VAULT or ~/.local/share/vhdcrypt)')
    .option('-o, --output <format>', `output format: ${OUTPUT_FORMATS.join(', ')} (default: plain)`)
    .option('--json', 'the same as -o json')
    .option('--pkcs11-module <path>', 'PKCS#11 module, for a vault whose master key (or a KEK) is in a token (default: $VHDCRYPT_PKCS11_MODULE)')
    .option('--pin-file <file>', "the token's user PIN: first line of FILE (default: $VHDCRYPT_PKCS11_PIN)")
    // Checked before the action opens the vault, so a mistyped format changes nothing.
    .hook('preAction', (_cmd, action) => void formatOf(action.opts<CommonOptions>()));
}

/** -n/--name (required unless `ref` allows --id), and --id/--version when `ref` says so. */
function withName(cmd: Command, what: string, ref: 'name' | 'id' | 'id+version'): Command {
  cmd.option('-n, --name <name>', `${what} name`);
  if (ref !== 'name') cmd.option('--id <id>', `full ${what} id, <vault>/${what}s/<name>${ref === 'id+version' ? '[/<version>]' : ''} (instead of --name${ref === 'id+version' ? ' and --version' : ''})`);
  if (ref === 'id+version') cmd.option('--version <version>', 'version (default: the latest)');
  return cmd;
}

/** Exactly one of --name and --id; --id carries its own version. */
function checkRef(o: RefOptions): void {
  if (o.id !== undefined) {
    if (o.name !== undefined || o.version !== undefined) throw usage('--id names the object (and version); give it instead of --name and --version, not with them');
    // A bare name is not an id: taking it as one would hide a mistyped id.
    if (!o.id.includes('/')) throw usage(`--id takes a full object id (<vault>/secrets|keys/<name>[/<version>]), not ${JSON.stringify(o.id)}`);
    return;
  }
  if (o.name === undefined) throw usage('give -n/--name or --id');
}

/** The name or id (with version when given) for calls that take `nameOrId`. */
function refOf(v: Vault, kind: ObjectKind, o: RefOptions): string {
  if (o.id !== undefined) return o.id;
  return o.version !== undefined ? objectId(v.uri, kind, o.name!, o.version) : o.name!;
}

/** The bare name for calls that act on a whole object (every version): an --id with a version is refused. */
function nameOf(v: Vault, kind: ObjectKind, o: RefOptions): string {
  if (o.id === undefined) return o.name!;
  const r = resolveRef(v.uri, kind, o.id);
  if (r.version !== undefined) throw usage(`this command acts on every version; --id takes <vault>/${kind}/<name> without a version`);
  return r.name;
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

/** `enabled` from --enabled true|false and/or --disabled [true|false] (az spells it both ways); they must agree. */
function enabledOf(o: AttributeOptions): boolean | undefined {
  const enabled = parseBool(o.enabled, '--enabled');
  const disabled = o.disabled === true ? true : parseBool(o.disabled === false ? undefined : o.disabled, '--disabled');
  if (enabled !== undefined && disabled !== undefined && enabled === disabled) throw usage(`--enabled ${String(enabled)} and --disabled ${String(disabled)} contradict each other`);
  return enabled ?? (disabled === undefined ? undefined : !disabled);
}

function withEnabled(cmd: Command): Command {
  return cmd
    .option('--enabled <bool>', 'true or false')
    .option('--disabled [bool]', 'true (the default when given alone) or false');
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

/** Strict base64 (RFC 4648 §4, padded): Buffer.from(s, 'base64') would skip any character it does not know. */
function parseBase64(s: string, what: string): Buffer {
  if (s.length % 4 !== 0 || !/^[A-Za-z0-9+/]*={0,2}$/.test(s)) throw usage(`${what} is not base64`);
  return Buffer.from(s, 'base64');
}

const UTF8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** Bytes as UTF-8 text, refused (not replaced with U+FFFD) when they are not UTF-8. */
function utf8Text(bytes: Uint8Array, what: string, hint: string): string {
  try {
    return UTF8.decode(bytes);
  } catch (e) {
    throw new VaultError('VAULT_BAD_ARGUMENT', `${what} is not UTF-8 text; ${hint}`, { cause: e });
  }
}

/** az's --encoding values for a secret kept in a file (az also has hex and utf-16, not taken here). */
const FILE_ENCODINGS = ['utf-8', 'ascii', 'base64'] as const;
type FileEncoding = (typeof FILE_ENCODINGS)[number];
/** The tag az puts on a secret set from a file, which `secret download` reads back. */
const TAG_FILE_ENCODING = 'file-encoding';

function parseEncoding(s: string | undefined): FileEncoding | undefined {
  if (s === undefined) return undefined;
  const e = s === 'utf8' ? 'utf-8' : s;
  if (!(FILE_ENCODINGS as readonly string[]).includes(e)) throw usage(`--encoding is ${FILE_ENCODINGS.join(', ')}, not ${JSON.stringify(s)}`);
  return e as FileEncoding;
}

/** A file's bytes as the secret value the encoding stores. */
function fileToValue(bytes: Buffer, encoding: FileEncoding, path: string): string {
  if (encoding === 'base64') return bytes.toString('base64');
  if (encoding === 'ascii' && bytes.some((b) => b > 0x7f)) throw usage(`${path} is not ASCII text; store binary files with --encoding base64`);
  return utf8Text(bytes, path, 'store binary files with --encoding base64');
}

/**
 * Write a file atomically (atomic-file.ts), mode 0600: backups and downloaded secrets are sensitive. With `noClobber`
 * an existing file is refused (az's download refuses one).
 */
function writeFileAtomic(path: string, data: Uint8Array, noClobber = false): void {
  try {
    writeWholeFile(path, data, noClobber);
  } catch (e) {
    if (noClobber && (e as NodeJS.ErrnoException).code === 'EEXIST') throw usage(`${path} exists; it is not overwritten`);
    throw e;
  }
}

function readInputFile(path: string): Buffer {
  try {
    return readFileSync(path);
  } catch (e) {
    throw new VaultError('VAULT_BAD_ARGUMENT', `cannot read ${systemErrorText(e as NodeJS.ErrnoException)}`, { cause: e });
  }
}

/** All of stdin (a value given as --value -), without the one trailing newline a shell adds; the caller wipes it. */
async function readStdinBytes(): Promise<Buffer> {
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
  const out = Buffer.from(all.subarray(0, end));
  all.fill(0);
  return out;
}

/** stdin as UTF-8 text (refused when it is not). */
async function readStdin(): Promise<string> {
  const bytes = await readStdinBytes();
  try {
    return utf8Text(bytes, 'the value on stdin', 'store binary data with --file and --encoding base64');
  } finally {
    bytes.fill(0);
  }
}

function cell(v: unknown): string {
  if (v === null || v === undefined) return '';
  if (v instanceof Date) return v.toISOString();
  if (Array.isArray(v)) return v.map(cell).join(',');
  if (typeof v === 'object') return JSON.stringify(v);
  return String(v);
}

/**
 * One result as a flat row for table and tsv: nested objects (a key's JWK and properties, a deleted object's
 * properties) are merged in, the outer field winning; tags become name=value,name=value.
 */
function flatRow(v: unknown): Record<string, string> {
  if (v === null || typeof v !== 'object' || v instanceof Date) return { value: cell(v) };
  const row: Record<string, string> = {};
  const add = (obj: object): void => {
    for (const [k, x] of Object.entries(obj)) {
      if (k === 'tags' && x && typeof x === 'object') {
        if (!(k in row)) row[k] = Object.entries(x as Record<string, string>).map(([a, b]) => `${a}=${b}`).join(',');
      } else if (x && typeof x === 'object' && !Array.isArray(x) && !(x instanceof Date)) {
        add(x);
      } else if (!(k in row)) {
        row[k] = cell(x);
      }
    }
  };
  add(v);
  return row;
}

/** tsv keeps one record per line: tabs, newlines and backslashes inside a field are escaped as \t, \n, \r, \\. */
function tsvField(s: string): string {
  return s.replace(/[\\\t\n\r]/g, (c) => (c === '\\' ? '\\\\' : c === '\t' ? '\\t' : c === '\n' ? '\\n' : '\\r'));
}

function rowsOf(value: unknown): Array<Record<string, string>> {
  if (value === null || value === undefined) return [];
  return (Array.isArray(value) ? value : [value]).map(flatRow);
}

/** Columns in the order fields first appear. */
function columnsOf(rows: Array<Record<string, string>>): string[] {
  const cols: string[] = [];
  for (const r of rows) for (const k of Object.keys(r)) if (!cols.includes(k)) cols.push(k);
  return cols;
}

/**
 * Print a command's result in ONE format: -o json (one JSON document), -o table (a header, a rule and aligned
 * columns), -o tsv (tab-separated values, no header, as az), else the command's plain output (`human`), else
 * `key: value` lines for an object and one JSON line per item for a list.
 */
function print(opts: CommonOptions, value: unknown, human?: () => string): void {
  const format = formatOf(opts);
  if (format === 'json') {
    process.stdout.write(JSON.stringify(value ?? null, null, 2) + '\n');
    return;
  }
  if (format === 'table' || format === 'tsv') {
    const rows = rowsOf(value);
    const cols = columnsOf(rows);
    if (format === 'tsv') {
      for (const r of rows) process.stdout.write(cols.map((c) => tsvField(r[c] ?? '')).join('\t') + '\n');
      return;
    }
    if (cols.length === 0) return;
    const cells = rows.map((r) => cols.map((c) => (r[c] ?? '').replace(/[\t\n\r]/g, ' ')));
    const widths = cols.map((c, i) => Math.max(c.length, ...cells.map((r) => r[i]!.length)));
    const line = (fields: string[]): string => fields.map((f, i) => f.padEnd(widths[i]!)).join('  ').trimEnd() + '\n';
    process.stdout.write(line(cols) + line(widths.map((w) => '-'.repeat(w))) + cells.map(line).join(''));
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
    for (const [k, v] of Object.entries(value)) process.stdout.write(`${k}: ${cell(v)}\n`);
  }
}

/** Open the vault named by --vault, run `fn`, close. */
async function withVault<T>(opts: CommonOptions, fn: (v: Vault) => Promise<T>, extra: OpenVaultOptions = { create: false }): Promise<T> {
  return withPkcs11(opts, async (credentials) => {
    const v = await openVault(opts.vault, { ...credentials, ...extra });
    try {
      return await fn(v);
    } finally {
      await v.close();
    }
  });
}

function deletedLine(p: DeletedObject): string {
  return `${p.name}\tdeleted ${p.deletedOn.toISOString()}\tpurge ${p.scheduledPurgeDate.toISOString()}\n`;
}

/** `show-deleted`: the one deleted object of that name, from the deleted list (the vault's list permission, as Key Vault's). */
function findDeleted<T extends DeletedObject>(list: T[], name: string, kind: ObjectKind): T {
  const d = list.find((x) => x.name.toLowerCase() === name.toLowerCase());
  if (d) return d;
  throw new VaultError(kind === 'secrets' ? 'VAULT_SECRET_NOT_FOUND' : 'VAULT_KEY_NOT_FOUND', `no deleted ${kind === 'secrets' ? 'secret' : 'key'} named ${name}`);
}

function registerSecret(vault: Command): void {
  const secret = vault.command('secret').description('secrets: small values (up to 10 KB), versioned');

  withEnabled(withName(withCommon(secret.command('set').description('store a new version of a secret')), 'secret', 'name'))
    .option('--value <value>', "the value ('-' reads it from stdin; given here it is visible to other processes)")
    .option('-f, --file <path>', 'read the value from a file')
    .option('-e, --encoding <enc>', `file encoding: ${FILE_ENCODINGS.join(', ')} (default utf-8; binary files need base64, which stores them base64-encoded)`)
    .option('--content-type <type>', 'content type')
    .option('--expires <iso8601>', 'expiry (exp)')
    .option('--not-before <iso8601>', 'not before (nbf)')
    .option('--tags <name=value...>', 'tags')
    .action(async (o: CommonOptions & AttributeOptions & RefOptions & { value?: string; file?: string; encoding?: string }) => {
      checkRef(o);
      if ((o.value === undefined) === (o.file === undefined)) throw usage('give exactly one of --value and --file');
      const encoding = parseEncoding(o.encoding);
      if (encoding !== undefined && o.file === undefined) throw usage('--encoding applies to --file');
      const enabled = enabledOf(o);
      let tags = parseTags(o.tags);
      let value = o.value;
      if (value === '-') {
        value = await readStdin();
      } else if (value !== undefined) {
        // argv is world-readable through /proc/PID/cmdline (ps) for as long as this process runs.
        process.stderr.write("vhdcrypt: warning: a value given with --value is visible to other processes (ps); use --value - (stdin) or --file\n");
      }
      if (o.file !== undefined) {
        const bytes = readInputFile(o.file);
        try {
          value = fileToValue(bytes, encoding ?? 'utf-8', o.file);
        } finally {
          bytes.fill(0);
        }
        // As az: the encoding is recorded on the secret so that `secret download` turns it back into the file.
        tags = { [TAG_FILE_ENCODING]: encoding ?? 'utf-8', ...tags };
      }
      const p = await withVault(o, (v) => v.setSecret(o.name!, value!, {
        contentType: o.contentType, tags, enabled,
        expiresOn: parseDate(o.expires, '--expires'), notBefore: parseDate(o.notBefore, '--not-before'),
      }));
      print(o, p, () => `${p.id}\n`);
    });

  withName(withCommon(secret.command('show').description('show a secret and its value (latest version unless --version)')), 'secret', 'id+version')
    .action(async (o: CommonOptions & RefOptions) => {
      checkRef(o);
      const s = await withVault(o, (v) => v.getSecret(refOf(v, 'secrets', o)));
      print(o, { ...s.properties, value: s.value }, () => `${s.value}\n`);
    });

  withName(withCommon(secret.command('download').description('write a secret value to a new file (mode 0600), decoded by --encoding or its file-encoding tag')), 'secret', 'id+version')
    .requiredOption('-f, --file <path>', 'file to create (an existing one is refused)')
    .option('-e, --encoding <enc>', `${FILE_ENCODINGS.join(', ')} (default: the secret's ${TAG_FILE_ENCODING} tag, else utf-8)`)
    .action(async (o: CommonOptions & RefOptions & { file: string; encoding?: string }) => {
      checkRef(o);
      const given = parseEncoding(o.encoding);
      const s = await withVault(o, (v) => v.getSecret(refOf(v, 'secrets', o)));
      const tagged = s.properties.tags[TAG_FILE_ENCODING];
      const encoding = given ?? (tagged !== undefined ? parseEncoding(tagged) : 'utf-8')!;
      const bytes = encoding === 'base64' ? parseBase64(s.value, `the value of ${s.properties.id}`) : Buffer.from(s.value, 'utf8');
      try {
        writeFileAtomic(o.file, bytes, true);
      } finally {
        bytes.fill(0);
      }
      print(o, { id: s.properties.id, file: o.file, encoding }, () => `${o.file}\n`);
    });

  const secretLine = (p: SecretProperties): string => `${p.id}\t${p.enabled ? 'enabled' : 'disabled'}\t${p.contentType ?? ''}\n`;

  withCommon(secret.command('list').description('list secrets (or the versions of one with --name, or deleted ones); never values'))
    .option('-n, --name <name>', 'list the versions of this secret (as list-versions)')
    .option('--deleted', 'list soft-deleted secrets (as list-deleted)')
    .action(async (o: CommonOptions & { name?: string; deleted?: boolean }) => {
      const list = await withVault<Array<SecretProperties | DeletedSecret>>(o, (v) => (o.deleted ? v.listDeletedSecrets() : o.name ? v.listSecretVersions(o.name) : v.listSecrets()));
      print(o, list, () => list.map((p) => ('properties' in p ? deletedLine(p) : secretLine(p))).join(''));
    });

  withName(withCommon(secret.command('list-versions').description('list the versions of a secret, oldest first; never values')), 'secret', 'id')
    .action(async (o: CommonOptions & RefOptions) => {
      checkRef(o);
      const list = await withVault(o, (v) => v.listSecretVersions(nameOf(v, 'secrets', o)));
      print(o, list, () => list.map(secretLine).join(''));
    });

  withCommon(secret.command('list-deleted').description('list soft-deleted secrets; never values'))
    .action(async (o: CommonOptions) => {
      const list = await withVault(o, (v) => v.listDeletedSecrets());
      print(o, list, () => list.map(deletedLine).join(''));
    });

  withName(withCommon(secret.command('show-deleted').description('show a soft-deleted secret (never its value)')), 'secret', 'id')
    .action(async (o: CommonOptions & RefOptions) => {
      checkRef(o);
      const d = await withVault(o, async (v) => findDeleted(await v.listDeletedSecrets(), nameOf(v, 'secrets', o), 'secrets'));
      print(o, d);
    });

  for (const [name, what] of [['delete', 'soft-delete a secret (recoverable until its retention ends)'], ['recover', 'recover a soft-deleted secret'], ['purge', 'permanently remove a soft-deleted secret']] as const) {
    withName(withCommon(secret.command(name).description(what)), 'secret', 'id')
      .action(async (o: CommonOptions & RefOptions) => {
        checkRef(o);
        const r = await withVault<unknown>(o, (v) => {
          const n = nameOf(v, 'secrets', o);
          return name === 'delete' ? v.deleteSecret(n) : name === 'recover' ? v.recoverDeletedSecret(n) : v.purgeDeletedSecret(n).then(() => ({ purged: n }));
        });
        print(o, r);
      });
  }

  withEnabled(withName(withCommon(secret.command('set-attributes').description('change attributes of a secret version (latest unless --version) without a new value')), 'secret', 'id+version'))
    .option('--expires <iso8601>', 'expiry (exp)')
    .option('--not-before <iso8601>', 'not before (nbf)')
    .option('--content-type <type>', 'content type')
    .option('--tags <name=value...>', 'replace the tags')
    .action(async (o: CommonOptions & AttributeOptions & RefOptions) => {
      checkRef(o);
      const enabled = enabledOf(o);
      const p = await withVault(o, (v) => v.updateSecretProperties(refOf(v, 'secrets', o), undefined, {
        enabled, expiresOn: parseDate(o.expires, '--expires'), notBefore: parseDate(o.notBefore, '--not-before'),
        contentType: o.contentType, tags: parseTags(o.tags),
      }));
      print(o, p);
    });

  withName(withCommon(secret.command('backup').description('write an encrypted backup of all versions of a secret')), 'secret', 'id')
    .requiredOption('-f, --file <path>', 'backup file to write')
    .action(async (o: CommonOptions & RefOptions & { file: string }) => {
      checkRef(o);
      const r = await withVault(o, async (v) => {
        const n = nameOf(v, 'secrets', o);
        writeFileAtomic(o.file, await v.backupSecret(n));
        return { name: n, file: o.file };
      });
      print(o, r);
    });

  withCommon(secret.command('restore').description('restore a secret backup (only into a vault holding the same master key)'))
    .requiredOption('-f, --file <path>', 'backup file')
    .action(async (o: CommonOptions & { file: string }) => {
      print(o, await withVault(o, (v) => v.restoreSecretBackup(readInputFile(o.file))));
    });
}

/** `key encrypt|decrypt|wrap|unwrap`: the operation, its vault call and the algorithms it takes. */
const KEY_OPERATIONS = {
  encrypt: { forward: true, algorithms: ENCRYPT_ALGORITHMS, what: 'encrypt a short value with an RSA key (as az keyvault key encrypt)' },
  decrypt: { forward: false, algorithms: ENCRYPT_ALGORITHMS, what: 'decrypt what key encrypt produced' },
  wrap: { forward: true, algorithms: WRAP_ALGORITHMS, what: 'wrap a key (RSA-OAEP, RSA-OAEP-256; A256KW with an oct key)' },
  unwrap: { forward: false, algorithms: WRAP_ALGORITHMS, what: 'unwrap what key wrap produced' },
} as const;

function registerKeyOperations(key: Command): void {
  for (const [op, spec] of Object.entries(KEY_OPERATIONS) as Array<[keyof typeof KEY_OPERATIONS, (typeof KEY_OPERATIONS)[keyof typeof KEY_OPERATIONS]]>) {
    withName(withCommon(key.command(op).description(spec.what)), 'key', 'id+version')
      .requiredOption('-a, --algorithm <alg>', spec.algorithms.join(', '))
      .requiredOption('--value <value>', spec.forward
        ? "the data: base64, or text with --data-type plaintext ('-' reads it from stdin; given here it is visible to other processes)"
        : 'the result of the forward operation, base64')
      .option('--data-type <type>', `base64 (default) or plaintext: how ${spec.forward ? '--value is given' : 'the result is printed'}`, 'base64')
      .action(async (o: CommonOptions & RefOptions & { algorithm: string; value: string; dataType: string }) => {
        checkRef(o);
        if (o.dataType !== 'base64' && o.dataType !== 'plaintext') throw usage(`--data-type is base64 or plaintext, not ${JSON.stringify(o.dataType)}`);
        let input: Buffer;
        if (spec.forward && o.value === '-') {
          const raw = await readStdinBytes();
          if (o.dataType === 'plaintext') {
            input = raw;
          } else {
            try {
              input = parseBase64(raw.toString('latin1').trim(), 'the value on stdin');
            } finally {
              raw.fill(0);
            }
          }
        } else {
          // argv is world-readable through /proc/PID/cmdline (ps) for as long as this process runs.
          if (spec.forward) process.stderr.write('vhdcrypt: warning: a value given with --value is visible to other processes (ps); use --value - (stdin)\n');
          input = spec.forward && o.dataType === 'plaintext' ? Buffer.from(o.value, 'utf8') : parseBase64(o.value, '--value');
        }
        // The algorithm is checked by the vault, which refuses one the operation or the key does not take.
        const alg = o.algorithm as WrapAlgorithm & EncryptAlgorithm;
        try {
          const r = await withVault(o, (v) => {
            const ref = refOf(v, 'keys', o);
            return op === 'encrypt' ? v.encrypt(ref, alg, input) : op === 'decrypt' ? v.decrypt(ref, alg, input)
              : op === 'wrap' ? v.wrapKey(ref, alg, input) : v.unwrapKey(ref, alg, input);
          });
          try {
            const result = !spec.forward && o.dataType === 'plaintext'
              ? utf8Text(r.result, 'the result', 'print it with --data-type base64')
              : Buffer.from(r.result).toString('base64');
            // az's shape: { kid, result, algorithm }.
            print(o, { kid: r.kid, result, algorithm: r.alg }, () => `${result}\n`);
          } finally {
            r.result.fill(0);
          }
        } finally {
          input.fill(0);
        }
      });
  }
}

function registerKey(vault: Command): void {
  const key = vault.command('key').description('keys: RSA and 256-bit oct keys that never leave the vault');

  withEnabled(withName(withCommon(key.command('create').description('create a key (or a new version of it)')), 'key', 'name'))
    .option('--kty <kty>', 'RSA or oct', 'RSA')
    .option('--size <bits>', 'RSA: 2048, 3072 or 4096; oct: 256')
    .option('--expires <iso8601>', 'expiry (exp)')
    .option('--not-before <iso8601>', 'not before (nbf)')
    .option('--tags <name=value...>', 'tags')
    .action(async (o: CommonOptions & AttributeOptions & RefOptions & { kty: string; size?: string }) => {
      checkRef(o);
      if (o.kty !== 'RSA' && o.kty !== 'oct') throw usage('--kty is RSA or oct');
      const enabled = enabledOf(o);
      const k = await withVault(o, (v) => v.createKey(o.name!, {
        kty: o.kty as KeyType, size: parseInteger(o.size, '--size'), tags: parseTags(o.tags), enabled,
        expiresOn: parseDate(o.expires, '--expires'), notBefore: parseDate(o.notBefore, '--not-before'),
      }));
      print(o, k, () => `${k.properties.id}\n`);
    });

  withEnabled(withName(withCommon(key.command('import').description('import a private RSA or 256-bit oct key from a JWK file')), 'key', 'name'))
    .requiredOption('-f, --file <path>', 'JWK (JSON) file')
    .option('--expires <iso8601>', 'expiry (exp)')
    .option('--not-before <iso8601>', 'not before (nbf)')
    .option('--tags <name=value...>', 'tags')
    .action(async (o: CommonOptions & AttributeOptions & RefOptions & { file: string }) => {
      checkRef(o);
      const enabled = enabledOf(o);
      const raw = readInputFile(o.file);
      let jwk: JsonWebKey;
      try {
        jwk = JSON.parse(raw.toString('utf8')) as JsonWebKey;
      } catch (e) {
        throw new VaultError('VAULT_INVALID_KEY', `${o.file} is not a JSON Web Key`, { cause: e });
      } finally {
        raw.fill(0);
      }
      const k = await withVault(o, (v) => v.importKey(o.name!, jwk, {
        tags: parseTags(o.tags), enabled,
        expiresOn: parseDate(o.expires, '--expires'), notBefore: parseDate(o.notBefore, '--not-before'),
      }));
      print(o, k, () => `${k.properties.id}\n`);
    });

  withName(withCommon(key.command('show').description("show a key's public part and attributes")), 'key', 'id+version')
    .action(async (o: CommonOptions & RefOptions) => {
      checkRef(o);
      const k = await withVault(o, (v) => v.getKey(refOf(v, 'keys', o)));
      // Plain output: the JWK's and the attributes' fields as `name: value` lines, one format for the whole result.
      print(o, k, () => Object.entries(flatRow(k)).map(([a, b]) => `${a}: ${b}\n`).join(''));
    });

  const keyLine = (p: KeyProperties): string => `${p.id}\t${p.kty}-${p.keySize}\t${p.enabled ? 'enabled' : 'disabled'}\n`;

  withCommon(key.command('list').description('list keys (or the versions of one with --name, or deleted ones)'))
    .option('-n, --name <name>', 'list the versions of this key (as list-versions)')
    .option('--deleted', 'list soft-deleted keys (as list-deleted)')
    .action(async (o: CommonOptions & { name?: string; deleted?: boolean }) => {
      const list = await withVault<Array<KeyProperties | DeletedKey>>(o, (v) => (o.deleted ? v.listDeletedKeys() : o.name ? v.listKeyVersions(o.name) : v.listKeys()));
      print(o, list, () => list.map((p) => ('properties' in p ? deletedLine(p) : keyLine(p))).join(''));
    });

  withName(withCommon(key.command('list-versions').description('list the versions of a key, oldest first')), 'key', 'id')
    .action(async (o: CommonOptions & RefOptions) => {
      checkRef(o);
      const list = await withVault(o, (v) => v.listKeyVersions(nameOf(v, 'keys', o)));
      print(o, list, () => list.map(keyLine).join(''));
    });

  withCommon(key.command('list-deleted').description('list soft-deleted keys'))
    .action(async (o: CommonOptions) => {
      const list = await withVault(o, (v) => v.listDeletedKeys());
      print(o, list, () => list.map(deletedLine).join(''));
    });

  withName(withCommon(key.command('show-deleted').description('show a soft-deleted key')), 'key', 'id')
    .action(async (o: CommonOptions & RefOptions) => {
      checkRef(o);
      const d = await withVault(o, async (v) => findDeleted(await v.listDeletedKeys(), nameOf(v, 'keys', o), 'keys'));
      print(o, d);
    });

  withName(withCommon(key.command('rotate').description('create a new version of a key (same type and size)')), 'key', 'id')
    .action(async (o: CommonOptions & RefOptions) => {
      checkRef(o);
      const k = await withVault(o, (v) => v.rotateKey(nameOf(v, 'keys', o)));
      print(o, k, () => `${k.properties.id}\n`);
    });

  for (const [name, what] of [['delete', 'soft-delete a key'], ['recover', 'recover a soft-deleted key'], ['purge', 'permanently remove a soft-deleted key']] as const) {
    withName(withCommon(key.command(name).description(what)), 'key', 'id')
      .action(async (o: CommonOptions & RefOptions) => {
        checkRef(o);
        const r = await withVault<unknown>(o, (v) => {
          const n = nameOf(v, 'keys', o);
          return name === 'delete' ? v.deleteKey(n) : name === 'recover' ? v.recoverDeletedKey(n) : v.purgeDeletedKey(n).then(() => ({ purged: n }));
        });
        print(o, r);
      });
  }

  withEnabled(withName(withCommon(key.command('set-attributes').description('change attributes of a key version (latest unless --version)')), 'key', 'id+version'))
    .option('--expires <iso8601>', 'expiry (exp)')
    .option('--not-before <iso8601>', 'not before (nbf)')
    .option('--tags <name=value...>', 'replace the tags')
    .action(async (o: CommonOptions & AttributeOptions & RefOptions) => {
      checkRef(o);
      const enabled = enabledOf(o);
      print(o, await withVault(o, (v) => v.updateKeyProperties(refOf(v, 'keys', o), undefined, {
        enabled, expiresOn: parseDate(o.expires, '--expires'), notBefore: parseDate(o.notBefore, '--not-before'),
        tags: parseTags(o.tags),
      })));
    });

  withName(withCommon(key.command('backup').description('write an encrypted backup of all versions of a key')), 'key', 'id')
    .requiredOption('-f, --file <path>', 'backup file to write')
    .action(async (o: CommonOptions & RefOptions & { file: string }) => {
      checkRef(o);
      const r = await withVault(o, async (v) => {
        const n = nameOf(v, 'keys', o);
        writeFileAtomic(o.file, await v.backupKey(n));
        return { name: n, file: o.file };
      });
      print(o, r);
    });

  withCommon(key.command('restore').description('restore a key backup (only into a vault holding the same master key)'))
    .requiredOption('-f, --file <path>', 'backup file')
    .action(async (o: CommonOptions & { file: string }) => {
      print(o, await withVault(o, (v) => v.restoreKeyBackup(readInputFile(o.file))));
    });

  registerKeyOperations(key);
}

function registerPrincipalsAndPolicies(vault: Command): void {
  const principal = vault.command('principal').description('named identities that present bearer tokens ($VHDCRYPT_VAULT_TOKEN)');
  withCommon(principal.command('add').description('add a principal and print its token (shown once; stored hashed)'))
    .requiredOption('-n, --name <name>', 'principal name')
    .action(async (o: CommonOptions & { name: string }) => {
      const r = await withVault(o, (v) => v.addPrincipal(o.name));
      // The client secret is also the principal's $VHDCRYPT_VAULT_TOKEN; plain output keeps it alone on stdout for scripts.
      const creds = { tenantId: r.tenantId, clientId: r.clientId, clientSecret: r.clientSecret ?? r.token };
      print(o, creds, () => {
        process.stderr.write(`vhdcrypt: principal ${r.name}: tenantId ${r.tenantId}, clientId ${r.clientId}; the line on stdout is its client secret `
          + '(also its $VHDCRYPT_VAULT_TOKEN), shown once\n');
        return `${creds.clientSecret}\n`;
      });
    });
  withCommon(principal.command('remove').description('remove a principal (its token stops working at once)'))
    .requiredOption('-n, --name <name>', 'principal name')
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

  withCommon(vault.command('init').description('create a vault (master key: wrapped by a key in a PKCS#11 token with --master-key, else $VHDCRYPT_VAULT_PASSPHRASE via argon2id, else a 0600 key file)'))
    .option('--master-key <uri>', 'wrap the master key with this key in a PKCS#11 token (pkcs11:token=...;object=...): the vault opens only with the token and its PIN')
    .option('--allow-extractable', 'with --master-key: accept a token key that could leave the token')
    .option('--enabled-for-disk-encryption <bool>', 'allow sealing disk keys (default true)')
    .option('--retention-days <days>', 'soft-delete retention, 7-90 (default 90)')
    .option('--enable-purge-protection', 'refuse purges before the retention ends (cannot be undone)')
    .action(async (o: CommonOptions & { masterKey?: string; enabledForDiskEncryption?: string; retentionDays?: string; enablePurgeProtection?: boolean }) => {
      if (o.masterKey !== undefined && !isPkcs11Uri(o.masterKey)) throw usage('--master-key takes a pkcs11: URI');
      const props = await withVault(o, (v) => v.getProperties(), {
        create: true,
        exclusive: true,
        ...(o.masterKey !== undefined ? { masterKey: o.masterKey } : {}),
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

  withCommon(vault.command('rotate-kek').description('new KEK version, rewrap every disk secret under it, disable the old versions (restartable); with --to, move them to a key in a PKCS#11 token'))
    .argument('<name>', 'KEK name (or the pkcs11: URI of a token key, with --to)')
    .option('--to <uri>', 'rewrap into this key in a PKCS#11 token (pkcs11:token=...;object=...) instead of a new vault KEK version')
    .option('--allow-extractable', 'with --to: accept a token key that could leave the token')
    .action(async (name: string, o: CommonOptions & { to?: string }) => {
      const r = await withPkcs11(o, (credentials) => withVault({ ...o, pkcs11Module: undefined, pinFile: undefined }, (v) => rotateKek(v, name, { ...(o.to !== undefined ? { to: o.to } : {}), ...credentials }), { create: false, ...credentials }));
      for (const u of r.unreadable) process.stderr.write(`vhdcrypt: warning: skipped ${u.id}: not a wrapped key this KEK opens (${u.code})\n`);
      print(o, r, () => `${r.kekId}\nrewrapped ${r.rewrapped.length}, skipped ${r.skipped.length}, disabled ${r.disabled.length} old version(s)`
        + `${r.keptEnabled.length ? `, kept ${r.keptEnabled.length} enabled for skipped secrets` : ''}\n`);
    });

  registerServe(vault);

  withCommon(vault.command('audit').description('print the audit log (owner only; its MAC chain is verified)'))
    .option('--limit <n>', 'only the last n entries')
    .action(async (o: CommonOptions & { limit?: string }) => {
      const entries = await withVault(o, (v) => v.readAudit({ limit: parseInteger(o.limit, '--limit') }));
      print(o, entries, () => entries.map((e) => `${e.seq}\t${e.time.toISOString()}\t${e.principal}\t${e.operation}\t${e.objectId}\t${e.result}${e.client !== undefined ? `\t${e.client}` : ''}\n`).join(''));
    });
}

/** `host:port` or `[v6]:port`. */
function parseListen(s: string): { host: string; port: number } {
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(s);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) throw usage(`--listen takes HOST:PORT (IPv6 as [ADDR]:PORT; port 0 picks a free one), not ${JSON.stringify(s)}`);
  return { host: (m[1] ?? m[2])!, port };
}

/** The first line of a passphrase file, as the image commands read one. */
function readPassphraseFile(path: string): string {
  const raw = readInputFile(path);
  try {
    const text = utf8Text(raw, path, 'a passphrase file holds text');
    const line = text.split(/\r?\n/, 1)[0] ?? '';
    if (line === '') throw usage(`${path} holds no passphrase on its first line`);
    return line;
  } finally {
    raw.fill(0);
  }
}

function registerServe(vault: Command): void {
  withCommon(vault.command('serve').description("serve the vault over HTTPS as Azure Key Vault's data plane, with an Entra-style client-credentials token endpoint"))
    .option('--listen <host:port>', 'address to listen on (default 127.0.0.1:8443; port 0 picks a free one)')
    .option('--tls-cert <file>', 'server certificate (PEM); default: a CA and certificate generated into <vault>/server/')
    .option('--tls-key <file>', 'server private key (PEM, mode 0600)')
    .option('--tenant <id>', "tenant id the token endpoint answers for (default: the vault's id as a UUID)")
    .option('--passphrase-file <file>', 'master-key passphrase from a file (first line), instead of $VHDCRYPT_VAULT_PASSPHRASE')
    .addOption(new Option('--token-lifetime <seconds>', 'access token lifetime, 1-3600').default('3600').hideHelp())
    .action(async (o: CommonOptions & { listen?: string; tlsCert?: string; tlsKey?: string; tenant?: string; passphraseFile?: string; tokenLifetime: string }) => {
      const listen = parseListen(o.listen ?? '127.0.0.1:8443');
      if ((o.tlsCert === undefined) !== (o.tlsKey === undefined)) throw usage('give --tls-cert and --tls-key together');
      const lifetime = parseInteger(o.tokenLifetime, '--token-lifetime');
      const passphrase = o.passphraseFile !== undefined ? readPassphraseFile(o.passphraseFile) : undefined;
      // Handlers first: a signal that comes while the vault opens, or just after the line below is read, still ends
      // the server cleanly (status 0) rather than killing the process.
      let stopRequested = false;
      let wake: (() => void) | null = null;
      const stop = (): void => {
        stopRequested = true;
        wake?.();
      };
      process.on('SIGINT', stop);
      process.on('SIGTERM', stop);
      try {
        // Loaded only here: the other vault commands do not pay for the server at start-up.
        const { startVaultServer } = await import('../vault-server/index.js');
        const server = await startVaultServer({
          ...(o.vault !== undefined ? { vault: o.vault } : {}),
          ...(passphrase !== undefined ? { passphrase } : {}),
          host: listen.host, port: listen.port,
          ...(o.tlsCert !== undefined ? { tls: { certPath: o.tlsCert, keyPath: o.tlsKey! } } : {}),
          ...(o.tenant !== undefined ? { tenantId: o.tenant } : {}),
          ...(lifetime !== undefined ? { tokenLifetimeS: lifetime } : {}),
        });
        try {
          if (!stopRequested) {
            // Scripts and tests wait for this line: the server accepts connections from now on. The URL comes first.
            const shown = { url: server.url, tenantId: server.tenantId, caPath: server.caPath, caSha256: server.caSha256 };
            print(o, shown, () => `${server.url} tenant ${server.tenantId} ca ${server.caPath} sha256 ${server.caSha256}\n`);
            await new Promise<void>((resolve) => {
              wake = resolve;
              if (stopRequested) resolve();
            });
          }
        } finally {
          // Stops accepting, lets requests in flight finish, flushes the audit log and closes the vault.
          await server.close();
        }
      } finally {
        process.off('SIGINT', stop);
        process.off('SIGTERM', stop);
      }
    });
}
