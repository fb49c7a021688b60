/**
 * Unlocking verifies the master-key digest with PBKDF2 off the event loop: a
 * cryptsetup-made digest can take 100k+ iterations, and a server (vhdcrypt
 * serve) must keep answering meanwhile. Header layout: LUKS1 On-Disk Format
 * Specification 1.2.3, table 1 (mk-digest at 112, salt at 132, iterations at 164).
 * Told by the order of events, not by a clock: a chain of event-loop turns
 * started beside the unlock finishes first only if the digest leaves the loop
 * free (the longest timer gap in milliseconds is measured by npm run bench:luks).
 */
import { describe, expect, test } from 'vitest';
import { pbkdf2Sync } from 'node:crypto';
import * as luks from '../src/luks/index.js';

/** Turns of the event loop (one setImmediate each) the chain goes through. */
const TURNS = 20_000;

describe('digest check off the event loop', () => {
  test(`a LUKS1 header with a 5000000-iteration digest: ${TURNS} event-loop turns started beside unlock finish before it`, async () => {
    // The keyslot KDF costs 1000 iterations, the digest 5000 times more: the digest is nearly all of the unlock.
    const f = await luks.format(64n << 20n, { version: 1, keyBits: 512, kdf: luks.KDF_RANDOM_SECRET, passphrase: 'pw' });
    const header = Uint8Array.from(f.header);
    const view = new DataView(header.buffer);
    const hash = Buffer.from(header.subarray(72, 104)).toString('latin1').replace(/\0+$/, '');
    const salt = header.subarray(132, 164);
    const iterations = 5_000_000;
    header.set(pbkdf2Sync(f.volumeKey, salt, iterations, 20, hash), 112);
    view.setUint32(164, iterations);

    const order: string[] = [];
    const chain = (async () => {
      for (let i = 0; i < TURNS; i++) await new Promise<void>((r) => setImmediate(r));
      order.push('chain');
    })();
    const u = await luks.unlock(header, { passphrase: 'pw' });
    order.push('unlock');
    await chain;
    expect(Buffer.compare(Buffer.from(u.volumeKey), Buffer.from(f.volumeKey))).toBe(0);
    u.volumeKey.fill(0);
    f.volumeKey.fill(0);
    // A digest run on the loop (pbkdf2Sync) holds every turn back until it is done, so unlock would come first.
    expect(order).toEqual(['chain', 'unlock']);
  });
});
