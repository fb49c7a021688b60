/**
 * What a fleet job carries: one image's operation, source, destination and options. Ids and options only, never a
 * key, passphrase or other secret value: a worker reaches the vault with its own principal, or reads a key file
 * or passphrase file every worker can reach by the path the job names. The same check runs where a job is
 * submitted and where a worker takes it (anyone who can write to Redis can write a job: fail closed).
 */
import { createHash } from 'node:crypto';
import { basename, isAbsolute, resolve } from 'node:path';
import type { DecryptOptions, EncryptOptions } from '../engine/index.js';
import { FleetError } from './errors.js';

export type FleetOperation = 'encrypt' | 'decrypt';

/** The options a job may carry, by operation, and the type each must have. */
const COMMON = {
  vault: 'string',
  keyFile: 'path',
  passphraseFile: 'path',
  outFormat: ['vhd-fixed', 'vhd-dynamic', 'raw'],
  parentDirs: 'paths',
  allowAbsoluteParents: 'boolean',
  backend: ['auto', 'native', 'wasm', 'js'],
  batchBytes: 'int',
  checkpointBytes: 'int',
} as const;
const ALLOWED: Record<FleetOperation, Record<string, string | readonly (string | number)[]>> = {
  encrypt: { ...COMMON, format: ['luks2', 'luks1', 'plain'], kek: 'string', keySize: [256, 512], sectorSize: [512, 4096], noSparse: 'boolean' },
  decrypt: { ...COMMON, secretId: 'string', plainKeyBits: [256, 512], plainSectorSize: [512, 4096] },
};
/** Options that hold a secret value: named in the refusal, so the submitter learns what to give instead. */
const SECRET_VALUES = new Set(['passphrase', 'addRecoveryPassphrase', 'vaultCredentials', 'key', 'volumeKey', 'password', 'token']);

export type JobOptionValue = string | number | boolean | readonly string[];

export interface FleetJobSpec {
  readonly operation: FleetOperation;
  /** An absolute path (or a source URI such as nbd://) every worker can reach. */
  readonly source: string;
  /** An absolute path every worker can reach. */
  readonly destination: string;
  readonly options: Readonly<Record<string, JobOptionValue>>;
  /** The source file's size when it was submitted, for the queue's ETA (0 when unknown, e.g. an NBD export). */
  readonly sourceBytes: number;
}

/** Job ids: what BullMQ takes as a custom id and what names a temp file (RunOptions.outputName). */
export const JOB_ID = /^[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}$/;

export function checkJobId(id: unknown): string {
  // BullMQ refuses custom ids that are integers (they would clash with its own counter).
  if (typeof id !== 'string' || !JOB_ID.test(id) || /^\d+$/.test(id)) {
    throw new FleetError('FLEET_BAD_ARGUMENT', `job id expected 1-100 of A-Z a-z 0-9 . _ - (not all digits, not starting with a dot), got ${JSON.stringify(String(id).slice(0, 120))}`);
  }
  return id;
}

/**
 * The default job id: the destination's name and a digest of the operation and its absolute path. The same
 * destination submitted twice is one job (BullMQ keeps the first), so no two jobs ever write one file.
 */
export function defaultJobId(operation: FleetOperation, destination: string): string {
  const name = basename(destination).replace(/[^A-Za-z0-9._-]/g, '_').replace(/^\.+/, '_').slice(0, 60);
  const digest = createHash('sha256').update(`${operation}\0${destination}`, 'utf8').digest('hex').slice(0, 12);
  return `${name}-${digest}`;
}

function isUri(s: string): boolean {
  return /^[a-z][a-z0-9+.-]*:\/\//i.test(s);
}

function bad(message: string): FleetError {
  return new FleetError('FLEET_BAD_JOB', message);
}

function checkOption(op: FleetOperation, key: string, v: unknown): JobOptionValue {
  if (SECRET_VALUES.has(key)) {
    throw bad(`options.${key}: a job carries no secret value; name a key file or passphrase file every worker can read (keyFile, passphraseFile), or use the vault`);
  }
  const type = ALLOWED[op][key];
  if (type === undefined) throw bad(`options.${key}: not an option of a fleet ${op} job (expected one of ${Object.keys(ALLOWED[op]).join(', ')})`);
  if (Array.isArray(type)) {
    if (!type.includes(v as string | number)) throw bad(`options.${key}: expected one of ${type.join(', ')}, got ${JSON.stringify(v)}`);
    return v as string | number;
  }
  switch (type) {
    case 'boolean':
      if (typeof v !== 'boolean') throw bad(`options.${key}: expected true or false`);
      return v;
    case 'int':
      if (!Number.isSafeInteger(v) || (v as number) <= 0) throw bad(`options.${key}: expected a positive whole number`);
      return v as number;
    case 'string':
      if (typeof v !== 'string' || v.length === 0 || v.length > 4096) throw bad(`options.${key}: expected a string of 1-4096 characters`);
      return v;
    case 'path':
      if (typeof v !== 'string' || !isAbsolute(v) || v.length > 4096) throw bad(`options.${key}: expected an absolute path every worker can read`);
      return v;
    case 'paths':
      if (!Array.isArray(v) || v.length > 64 || !v.every((p) => typeof p === 'string' && isAbsolute(p))) throw bad(`options.${key}: expected a list of absolute paths`);
      return v as string[];
  }
  throw bad(`options.${key}: unknown type`);
}

/** A job's spec, checked: what submit stores and what a worker runs (from Redis: anything could be there). */
export function checkJobSpec(data: unknown): FleetJobSpec {
  if (typeof data !== 'object' || data === null) throw bad('a job is an object { operation, source, destination, options }');
  const d = data as Record<string, unknown>;
  for (const k of Object.keys(d)) {
    if (!['operation', 'source', 'destination', 'options', 'sourceBytes'].includes(k)) throw bad(`${k}: not a field of a fleet job`);
  }
  const op = d['operation'];
  if (op !== 'encrypt' && op !== 'decrypt') throw bad(`operation expected encrypt or decrypt, got ${JSON.stringify(op)}`);
  const source = d['source'];
  if (typeof source !== 'string' || source.length === 0 || source.length > 4096 || !(isAbsolute(source) || isUri(source))) {
    throw bad('source expected an absolute path or a source URI (nbd://...) every worker can reach');
  }
  const destination = d['destination'];
  if (typeof destination !== 'string' || !isAbsolute(destination) || destination.length > 4096) throw bad('destination expected an absolute path every worker can reach');
  if (resolve(destination) !== destination) throw bad(`destination ${destination}: expected a normalised path (no ., .. or trailing /)`);
  const raw = d['options'] ?? {};
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw bad('options expected an object');
  const options: Record<string, JobOptionValue> = {};
  for (const [k, v] of Object.entries(raw)) options[k] = checkOption(op, k, v);
  if (options['keyFile'] !== undefined && options['passphraseFile'] !== undefined) throw bad('options: keyFile and passphraseFile exclude each other');
  const sourceBytes = d['sourceBytes'] ?? 0;
  if (!Number.isSafeInteger(sourceBytes) || (sourceBytes as number) < 0) throw bad('sourceBytes expected a whole number');
  return { operation: op, source, destination, options, sourceBytes: sourceBytes as number };
}

/** A spec as the submitter wrote it: relative paths resolved against `cwd` (the submitter's), then checked. */
export function specFromInput(input: { operation?: unknown; source?: unknown; destination?: unknown; options?: unknown }, cwd: string): FleetJobSpec {
  const abs = (p: unknown) => (typeof p === 'string' && p !== '' && !isUri(p) ? resolve(cwd, p) : p);
  const opts = (input.options ?? {}) as Record<string, unknown>;
  const options: Record<string, unknown> = { ...opts };
  for (const k of ['keyFile', 'passphraseFile']) if (typeof options[k] === 'string') options[k] = abs(options[k]);
  if (Array.isArray(options['parentDirs'])) options['parentDirs'] = (options['parentDirs'] as unknown[]).map(abs);
  return checkJobSpec({ operation: input.operation ?? 'encrypt', source: abs(input.source), destination: abs(input.destination), options });
}

/** The engine's options for a job (the worker adds threads, signal, progress and the temp name). */
export function engineOptions(spec: FleetJobSpec): EncryptOptions & DecryptOptions {
  const o = spec.options as Record<string, unknown>;
  const pick = <K extends string>(k: K) => (o[k] !== undefined ? { [k]: o[k] } : {});
  const common = {
    ...pick('vault'), ...pick('keyFile'), ...pick('passphraseFile'), ...pick('outFormat'), ...pick('parentDirs'), ...pick('allowAbsoluteParents'),
    ...pick('backend'), ...pick('batchBytes'), ...pick('checkpointBytes'),
  };
  if (spec.operation === 'encrypt') return { ...common, ...pick('format'), ...pick('kek'), ...pick('keySize'), ...pick('sectorSize'), ...pick('noSparse') } as EncryptOptions;
  return {
    ...common,
    ...pick('secretId'),
    plain: { ...(o['plainKeyBits'] !== undefined ? { keyBits: o['plainKeyBits'] } : {}), ...(o['plainSectorSize'] !== undefined ? { sectorSize: o['plainSectorSize'] } : {}) },
  } as DecryptOptions;
}
