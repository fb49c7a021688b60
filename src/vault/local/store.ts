/**
 * The embedded vault's SQLite storage (better-sqlite3): WAL journal, a busy
 * timeout and IMMEDIATE transactions so that several processes using one vault
 * serialize their writes and lose no update. Rows hold only sealed blobs plus
 * the plain columns needed to find them (kind, name, version, order).
 */
import { chmodSync, closeSync, existsSync, openSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type BetterSqlite3 from 'better-sqlite3';
import { VaultError } from '../errors.js';
import { requirePackage, resolvePackage } from '../../package-root.js';

export const DB_FILE_NAME = 'vault.sqlite';

interface LoadedSqlite {
  readonly Database: typeof BetterSqlite3;
  /** The addon's path where the package built or fetched it, else undefined (better-sqlite3 then searches). */
  readonly nativeBinding: string | undefined;
}

let sqlite: LoadedSqlite | null = null;

/**
 * better-sqlite3 through require (a CommonJS package: Node's ESM loader would scan its source for exports first)
 * and its addon by path, where it lies in the package's build/Release: otherwise the package's `bindings` helper
 * loads two more packages and probes a list of directories for it. ~5 ms less per first open (an encrypt's start-up).
 */
function loadSqlite(): LoadedSqlite {
  if (sqlite !== null) return sqlite;
  const Database = requirePackage<typeof BetterSqlite3>(import.meta.url, 'better-sqlite3');
  const built = join(dirname(resolvePackage(import.meta.url, 'better-sqlite3/package.json')), 'build', 'Release', 'better_sqlite3.node');
  sqlite = { Database, nativeBinding: existsSync(built) ? built : undefined };
  return sqlite;
}
const BUSY_TIMEOUT_MS = 30_000;

const SCHEMA = `
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS objects (
  kind TEXT NOT NULL, name TEXT NOT NULL COLLATE NOCASE, state BLOB NOT NULL,
  PRIMARY KEY (kind, name));
CREATE TABLE IF NOT EXISTS versions (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  kind TEXT NOT NULL, name TEXT NOT NULL COLLATE NOCASE, version TEXT NOT NULL,
  record BLOB NOT NULL, material BLOB NOT NULL,
  UNIQUE (kind, name, version));
CREATE TABLE IF NOT EXISTS principals (name TEXT PRIMARY KEY COLLATE NOCASE, record BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS audit (
  seq INTEGER PRIMARY KEY AUTOINCREMENT, time TEXT NOT NULL, principal TEXT NOT NULL,
  operation TEXT NOT NULL, object_id TEXT NOT NULL, result TEXT NOT NULL, mac BLOB NOT NULL, client TEXT);
CREATE TRIGGER IF NOT EXISTS audit_append_only_update BEFORE UPDATE ON audit
  BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_append_only_delete BEFORE DELETE ON audit
  BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
`;
/** The tables and triggers SCHEMA makes, by name. */
const SCHEMA_OBJECTS = [...SCHEMA.matchAll(/CREATE (?:TABLE|TRIGGER) IF NOT EXISTS (\w+)/g)].map((m) => m[1]!);

export interface VersionRow {
  readonly seq: number;
  readonly name: string;
  readonly version: string;
  readonly record: Buffer;
}

export interface AuditRow {
  readonly seq: number;
  readonly time: string;
  readonly principal: string;
  readonly operation: string;
  readonly object_id: string;
  readonly result: string;
  readonly mac: Buffer;
  /** The caller's network address when a vault server made the call; null otherwise (and in older entries). */
  readonly client: string | null;
}

/** Map SQLite failures to vault errors: corruption is tampering, the rest storage trouble. */
export function storageError(e: unknown): unknown {
  if (e instanceof VaultError) return e;
  const code = (e as { code?: unknown })?.code;
  if (code === 'SQLITE_CORRUPT' || code === 'SQLITE_NOTADB') {
    return new VaultError('VAULT_TAMPERED', `the vault database is damaged or not a vault (${String(code)})`, { cause: e });
  }
  if (typeof code === 'string' && code.startsWith('SQLITE_')) {
    return new VaultError('VAULT_STORAGE', `vault storage failed: ${(e as Error).message}`, { cause: e });
  }
  return e;
}

/** Create `path` empty with mode 0600 unless it exists. */
function createPrivateFile(path: string): void {
  try {
    closeSync(openSync(path, 'wx', 0o600));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
  }
}

/** Drop group and other access from a file we own (a vault made before files were created 0600); best effort. */
function makePrivate(path: string): void {
  try {
    const st = statSync(path);
    if ((st.mode & 0o077) !== 0 && st.uid === process.getuid?.()) chmodSync(path, st.mode & 0o700);
  } catch {
    // Missing (no WAL yet), or a file system that will not: the contents are encrypted either way.
  }
}

/**
 * SQLite says only SQLITE_CANTOPEN; opening the file ourselves tells a missing vault from a process out of
 * file descriptors (EMFILE), a denied path, and the rest.
 */
function cantOpen(path: string, e: unknown): VaultError {
  let errno: string | undefined;
  let detail = '';
  try {
    closeSync(openSync(path, 'r'));
  } catch (probe) {
    errno = (probe as NodeJS.ErrnoException).code;
    detail = (probe as Error).message;
  }
  if (errno === 'ENOENT') return new VaultError('VAULT_NOT_FOUND', `no vault at ${path}; create it with 'vhdcrypt vault init'`, { cause: e });
  return new VaultError('VAULT_STORAGE', `cannot open the vault database ${path}: ${detail || (e as Error).message}`, { cause: errno ? Object.assign(new Error(detail), { code: errno }) : e });
}

export class VaultStore {
  readonly db: BetterSqlite3.Database;
  // Prepared statements, compiled once: a vault server runs the same few thousands of times a second.
  readonly #statements = new Map<string, BetterSqlite3.Statement>();

  #stmt(sql: string): BetterSqlite3.Statement {
    let s = this.#statements.get(sql);
    if (s === undefined) {
      s = this.db.prepare(sql);
      this.#statements.set(sql, s);
    }
    return s;
  }

  /** Open (or create) the database. better-sqlite3 loads here, on first use: a job starts its workers sooner. */
  static async open(path: string, options: { create: boolean }): Promise<VaultStore> {
    return new VaultStore(loadSqlite(), path, options);
  }

  private constructor(sqlite: LoadedSqlite, path: string, options: { create: boolean }) {
    const { Database, nativeBinding } = sqlite;
    try {
      // A new database file is made 0600 first: its contents are encrypted, but its size and its change times
      // still say something, and SQLite gives its -wal and -shm files the database file's mode.
      if (options.create) createPrivateFile(path);
      this.db = new Database(path, { fileMustExist: !options.create, timeout: BUSY_TIMEOUT_MS, ...(nativeBinding !== undefined ? { nativeBinding } : {}) });
      for (const f of [path, `${path}-wal`, `${path}-shm`]) makePrivate(f);
      this.db.pragma(`busy_timeout = ${BUSY_TIMEOUT_MS}`);
      this.db.pragma('journal_mode = WAL');
      this.db.pragma('synchronous = FULL');
      // Only a database that lacks part of the schema takes the write lock here: on every other open this is a
      // read, so opening never waits for (or stalls) another process's write.
      if (!this.#schemaCurrent()) {
        this.tx(() => {
          this.db.exec(SCHEMA);
          // A vault made before audit entries carried the client address gains the column (NULL in old entries).
          if (!this.#auditHasClient()) this.db.exec('ALTER TABLE audit ADD COLUMN client TEXT');
        });
      }
    } catch (e) {
      if ((e as { code?: unknown })?.code === 'SQLITE_CANTOPEN') throw cantOpen(path, e);
      throw storageError(e);
    }
  }

  #schemaCurrent(): boolean {
    const have = new Set((this.db.prepare("SELECT name FROM sqlite_master WHERE type IN ('table', 'trigger')").all() as Array<{ name: string }>).map((r) => r.name));
    return SCHEMA_OBJECTS.every((n) => have.has(n)) && this.#auditHasClient();
  }

  #auditHasClient(): boolean {
    return (this.db.prepare('PRAGMA table_info(audit)').all() as Array<{ name: string }>).some((c) => c.name === 'client');
  }

  /** Run `fn` in an IMMEDIATE transaction (takes the write lock first, so read-modify-write is atomic across processes). */
  tx<T>(fn: () => T): T {
    try {
      return this.db.transaction(fn).immediate();
    } catch (e) {
      throw storageError(e);
    }
  }

  close(): void {
    this.db.close();
  }

  getMeta(k: string): Buffer | string | undefined {
    const row = this.#stmt('SELECT v FROM meta WHERE k = ?').get(k) as { v: Buffer | string } | undefined;
    return row?.v;
  }

  setMeta(k: string, v: Buffer | string): void {
    this.#stmt('INSERT INTO meta (k, v) VALUES (?, ?) ON CONFLICT (k) DO UPDATE SET v = excluded.v').run(k, v);
  }

  getObject(kind: string, name: string): { name: string; state: Buffer } | undefined {
    return this.#stmt('SELECT name, state FROM objects WHERE kind = ? AND name = ?').get(kind, name) as { name: string; state: Buffer } | undefined;
  }

  putObject(kind: string, name: string, state: Buffer): void {
    this.#stmt('INSERT INTO objects (kind, name, state) VALUES (?, ?, ?) ON CONFLICT (kind, name) DO UPDATE SET state = excluded.state')
      .run(kind, name, state);
  }

  listObjects(kind: string): Array<{ name: string; state: Buffer }> {
    return this.#stmt('SELECT name, state FROM objects WHERE kind = ? ORDER BY name').all(kind) as Array<{ name: string; state: Buffer }>;
  }

  /** Remove an object and all its versions (purge). */
  removeObject(kind: string, name: string): void {
    this.#stmt('DELETE FROM versions WHERE kind = ? AND name = ?').run(kind, name);
    this.#stmt('DELETE FROM objects WHERE kind = ? AND name = ?').run(kind, name);
  }

  insertVersion(kind: string, name: string, version: string, record: Buffer, material: Buffer): void {
    this.#stmt('INSERT INTO versions (kind, name, version, record, material) VALUES (?, ?, ?, ?, ?)').run(kind, name, version, record, material);
  }

  /** One version's record (latest when `version` is undefined). */
  getVersion(kind: string, name: string, version?: string): VersionRow | undefined {
    const row = version === undefined
      ? this.#stmt('SELECT seq, name, version, record FROM versions WHERE kind = ? AND name = ? ORDER BY seq DESC LIMIT 1').get(kind, name)
      : this.#stmt('SELECT seq, name, version, record FROM versions WHERE kind = ? AND name = ? AND version = ?').get(kind, name, version);
    return row as VersionRow | undefined;
  }

  getMaterial(kind: string, name: string, version: string): Buffer | undefined {
    const row = this.#stmt('SELECT material FROM versions WHERE kind = ? AND name = ? AND version = ?').get(kind, name, version) as
      | { material: Buffer }
      | undefined;
    return row?.material;
  }

  listVersions(kind: string, name: string): VersionRow[] {
    return this.#stmt('SELECT seq, name, version, record FROM versions WHERE kind = ? AND name = ? ORDER BY seq').all(kind, name) as VersionRow[];
  }

  /** Every version of every object of a kind, oldest first, without material (for export). */
  allVersions(kind: string, name: string): Array<VersionRow & { material: Buffer }> {
    return this.#stmt('SELECT seq, name, version, record, material FROM versions WHERE kind = ? AND name = ? ORDER BY seq')
      .all(kind, name) as Array<VersionRow & { material: Buffer }>;
  }

  setVersionRecord(kind: string, name: string, version: string, record: Buffer): void {
    this.#stmt('UPDATE versions SET record = ? WHERE kind = ? AND name = ? AND version = ?').run(record, kind, name, version);
  }

  getPrincipal(name: string): { name: string; record: Buffer } | undefined {
    return this.#stmt('SELECT name, record FROM principals WHERE name = ?').get(name) as { name: string; record: Buffer } | undefined;
  }

  putPrincipal(name: string, record: Buffer): void {
    this.#stmt('INSERT INTO principals (name, record) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET record = excluded.record').run(name, record);
  }

  deletePrincipal(name: string): boolean {
    return this.#stmt('DELETE FROM principals WHERE name = ?').run(name).changes > 0;
  }

  listPrincipals(): Array<{ name: string; record: Buffer }> {
    return this.#stmt('SELECT name, record FROM principals ORDER BY name').all() as Array<{ name: string; record: Buffer }>;
  }

  lastAudit(): AuditRow | undefined {
    return this.#stmt('SELECT * FROM audit ORDER BY seq DESC LIMIT 1').get() as AuditRow | undefined;
  }

  appendAudit(row: AuditRow): void {
    this.#stmt('INSERT INTO audit (seq, time, principal, operation, object_id, result, mac, client) VALUES (?, ?, ?, ?, ?, ?, ?, ?)')
      .run(row.seq, row.time, row.principal, row.operation, row.object_id, row.result, row.mac, row.client);
  }

  auditRows(): AuditRow[] {
    return this.#stmt('SELECT * FROM audit ORDER BY seq').all() as AuditRow[];
  }
}
