/**
 * The append-only audit log: SQLite triggers refuse UPDATE and DELETE, and each
 * entry carries HMAC(previous MAC || entry) under a key derived from the master
 * key, so an edited, removed or reordered entry breaks the chain. The chain's
 * head (entry count and last MAC) is kept sealed in the vault metadata and
 * replaced in the same transaction as each append, so removing the newest
 * entries, or all of them, no longer leaves a valid chain: the head names an
 * entry that is gone. Entries hold time, principal, operation, object id and
 * result; never a value.
 */
import { timingSafeEqual } from 'node:crypto';
import { VaultError } from '../errors.js';
import type { AuditEntry } from '../types.js';
import type { RecordCipher } from './record-cipher.js';
import type { AuditRow, VaultStore } from './store.js';

const GENESIS = Buffer.alloc(32);
const HEAD_META = 'audit_head';
const HEAD_AAD = 'meta|audit_head';
// Longest principal, operation, object id or result text an entry keeps.
const MAX_FIELD_CHARS = 512;

interface AuditHead {
  readonly count: number;
  readonly mac: Buffer;
}

/** What the MAC covers; the client address only when the entry has one, so entries written before it existed verify unchanged. */
function entryText(r: Omit<AuditRow, 'mac'>): string {
  const fields: unknown[] = [r.seq, r.time, r.principal, r.operation, r.object_id, r.result];
  if (r.client !== null && r.client !== undefined) fields.push(r.client);
  return JSON.stringify(fields);
}

/**
 * Control characters (tab, newline, ...) in a field would let a caller's input forge lines of the
 * tab-separated audit listing; they are replaced, and a field is bounded in length.
 */
function field(s: string): string {
  // eslint-disable-next-line no-control-regex
  const clean = String(s).replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g, '?');
  return clean.length > MAX_FIELD_CHARS ? `${clean.slice(0, MAX_FIELD_CHARS)}...` : clean;
}

function sealHead(cipher: RecordCipher, head: AuditHead): Buffer {
  return cipher.seal(Buffer.from(JSON.stringify({ count: head.count, mac: head.mac.toString('hex') }), 'utf8'), HEAD_AAD);
}

/** The sealed head; a missing or unreadable one is tampering (every vault has one from creation). */
function readHead(store: VaultStore, cipher: RecordCipher): AuditHead {
  const blob = store.getMeta(HEAD_META);
  if (!Buffer.isBuffer(blob)) throw new VaultError('VAULT_TAMPERED', 'the audit log was modified: its sealed head is missing');
  const plain = cipher.open(blob, HEAD_AAD, 'the audit log head');
  const o = JSON.parse(plain.toString('utf8')) as { count?: unknown; mac?: unknown };
  if (!Number.isSafeInteger(o.count) || (o.count as number) < 0 || typeof o.mac !== 'string' || !/^[0-9a-f]{64}$/.test(o.mac)) {
    throw new VaultError('VAULT_TAMPERED', 'the audit log head is malformed');
  }
  return { count: o.count as number, mac: Buffer.from(o.mac, 'hex') };
}

/** Throw unless the newest stored entry is the one the head names (catches a removed tail, or all entries gone). */
function checkHead(head: AuditHead, last: AuditRow | undefined): void {
  const lastSeq = last?.seq ?? 0;
  const lastMac = last?.mac ?? GENESIS;
  if (lastSeq !== head.count || !Buffer.isBuffer(lastMac) || lastMac.length !== head.mac.length || !timingSafeEqual(lastMac, head.mac)) {
    throw new VaultError('VAULT_TAMPERED', `the audit log was modified: it should end at entry ${head.count}, but its last entry is ${lastSeq}`);
  }
}

/** Write the head of an empty log (vault creation), or of an existing chain after verifying it (a vault made before heads existed). */
export function anchorAudit(store: VaultStore, cipher: RecordCipher): void {
  const rows = verifyChain(store.auditRows(), cipher);
  const last = rows[rows.length - 1];
  store.setMeta(HEAD_META, sealHead(cipher, { count: last?.seq ?? 0, mac: last?.mac ?? GENESIS }));
}

/** Check the head against the newest entry (cheap; run when the vault is opened). */
export function verifyAuditHead(store: VaultStore, cipher: RecordCipher): void {
  // One read transaction: the head and the last entry come from one snapshot, even with other writers.
  store.db.transaction(() => checkHead(readHead(store, cipher), store.lastAudit()))();
}

export interface AuditEvent {
  readonly principal: string;
  readonly operation: string;
  readonly objectId: string;
  readonly result: string;
  /** The caller's network address (a vault server's client), else absent. */
  readonly client?: string;
  /**
   * false: the call changed nothing (a read, a refusal), so a group commit holding only such entries may skip the
   * fsync: it survives the process's death, not the machine's. Default true.
   */
  readonly durable?: boolean;
}

/** Append one entry (in its own IMMEDIATE transaction, so the chain stays linear across processes). */
export function appendAudit(store: VaultStore, cipher: RecordCipher, e: AuditEvent): void {
  appendAuditBatch(store, cipher, [e]);
}

/** Append entries in order in one IMMEDIATE transaction: one commit (one fsync) for them all. */
export function appendAuditBatch(store: VaultStore, cipher: RecordCipher, events: readonly AuditEvent[]): void {
  if (events.length === 0) return;
  store.tx(() => {
    let last: Pick<AuditRow, 'seq' | 'mac'> | undefined = store.lastAudit();
    checkHead(readHead(store, cipher), last as AuditRow | undefined);
    for (const e of events) {
      const row = {
        seq: (last?.seq ?? 0) + 1, time: new Date().toISOString(),
        principal: field(e.principal), operation: field(e.operation), object_id: field(e.objectId), result: field(e.result),
        client: e.client === undefined ? null : field(e.client),
      };
      const mac = cipher.auditMac(last?.mac ?? GENESIS, entryText(row));
      store.appendAudit({ ...row, mac });
      last = { seq: row.seq, mac };
    }
    store.setMeta(HEAD_META, sealHead(cipher, { count: last!.seq, mac: last!.mac }));
  });
}

/**
 * Group commit for a server: events queued in one turn of the event loop are appended in one transaction, and
 * each caller's promise settles once its entry is durable (so a reply is never sent for an unrecorded call).
 */
export class AuditQueue {
  #pending: Array<{ e: AuditEvent; resolve: () => void; reject: (err: unknown) => void }> = [];
  #scheduled = false;
  readonly #store: VaultStore;
  readonly #cipher: RecordCipher;

  constructor(store: VaultStore, cipher: RecordCipher) {
    this.#store = store;
    this.#cipher = cipher;
  }

  push(e: AuditEvent): Promise<void> {
    return new Promise((resolve, reject) => {
      this.#pending.push({ e, resolve, reject });
      if (!this.#scheduled) {
        this.#scheduled = true;
        setImmediate(() => this.flush());
      }
    });
  }

  /** Append what is queued now (also called before the store closes). */
  flush(): void {
    this.#scheduled = false;
    const batch = this.#pending.splice(0);
    if (batch.length === 0) return;
    // WAL with synchronous=NORMAL commits without an fsync (SQLite: "WAL mode is always consistent with
    // synchronous=NORMAL, but ... might roll back following a power loss"); the store is FULL again right after.
    const relaxed = batch.every((b) => b.e.durable === false);
    try {
      if (relaxed) this.#store.db.pragma('synchronous = NORMAL');
      try {
        appendAuditBatch(this.#store, this.#cipher, batch.map((b) => b.e));
      } finally {
        if (relaxed) this.#store.db.pragma('synchronous = FULL');
      }
    } catch (err) {
      for (const b of batch) b.reject(err);
      return;
    }
    for (const b of batch) b.resolve();
  }
}

function verifyChain(rows: AuditRow[], cipher: RecordCipher): AuditRow[] {
  let prev: Buffer = GENESIS;
  let expectSeq = 1;
  for (const r of rows) {
    const mac = cipher.auditMac(prev, entryText(r));
    if (r.seq !== expectSeq || !Buffer.isBuffer(r.mac) || r.mac.length !== mac.length || !timingSafeEqual(r.mac, mac)) {
      throw new VaultError('VAULT_TAMPERED', `the audit log was modified: entry ${r.seq} fails its chain check`);
    }
    prev = r.mac;
    expectSeq++;
  }
  return rows;
}

/** Read and verify the whole chain and its head; a broken link or a missing tail is VAULT_TAMPERED. */
export function readAudit(store: VaultStore, cipher: RecordCipher): AuditEntry[] {
  const rows = store.db.transaction(() => {
    const all = verifyChain(store.auditRows(), cipher);
    checkHead(readHead(store, cipher), all[all.length - 1]);
    return all;
  })();
  return rows.map((r) => ({
    seq: r.seq, time: new Date(r.time), principal: r.principal, operation: r.operation, objectId: r.object_id, result: r.result,
    ...(r.client !== null && r.client !== undefined ? { client: r.client } : {}),
  }));
}
