/**
 * The append-only audit log: SQLite triggers refuse UPDATE and DELETE, and each
 * entry carries HMAC(previous MAC || entry) under a key derived from the master
 * key, so an edited, removed or reordered entry breaks the chain. Entries hold
 * time, principal, operation, object id and result; never a value.
 */
import { timingSafeEqual } from 'node:crypto';
import { VaultError } from '../errors.js';
import type { AuditEntry } from '../types.js';
import type { RecordCipher } from './record-cipher.js';
import type { AuditRow, VaultStore } from './store.js';

const GENESIS = Buffer.alloc(32);

function entryText(r: Omit<AuditRow, 'mac'>): string {
  return JSON.stringify([r.seq, r.time, r.principal, r.operation, r.object_id, r.result]);
}

/** Append one entry (in its own IMMEDIATE transaction, so the chain stays linear across processes). */
export function appendAudit(store: VaultStore, cipher: RecordCipher, e: { principal: string; operation: string; objectId: string; result: string }): void {
  store.tx(() => {
    const last = store.lastAudit();
    const row = { seq: (last?.seq ?? 0) + 1, time: new Date().toISOString(), principal: e.principal, operation: e.operation, object_id: e.objectId, result: e.result };
    store.appendAudit({ ...row, mac: cipher.auditMac(last?.mac ?? GENESIS, entryText(row)) });
  });
}

/** Read and verify the whole chain; a broken link is VAULT_TAMPERED. */
export function readAudit(store: VaultStore, cipher: RecordCipher): AuditEntry[] {
  const rows = store.auditRows();
  let prev: Buffer = GENESIS;
  let expectSeq = 1;
  const out: AuditEntry[] = [];
  for (const r of rows) {
    const mac = cipher.auditMac(prev, entryText(r));
    if (r.seq !== expectSeq || !Buffer.isBuffer(r.mac) || r.mac.length !== mac.length || !timingSafeEqual(r.mac, mac)) {
      throw new VaultError('VAULT_TAMPERED', `the audit log was modified: entry ${r.seq} fails its chain check`);
    }
    prev = r.mac;
    expectSeq++;
    out.push({ seq: r.seq, time: new Date(r.time), principal: r.principal, operation: r.operation, objectId: r.object_id, result: r.result });
  }
  return out;
}
