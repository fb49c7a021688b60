/**
 * Unlocking verifies the master-key digest with PBKDF2 off the event loop: a
 * cryptsetup-made digest can take 100k+ iterations, and a server (vhdcrypt
 * serve) must keep answering meanwhile. Header layout: LUKS1 On-Disk Format
 * Specification 1.2.3, table 1 (mk-digest at 112, salt at 132, iterations at 164).
 */
import { describe, expect, test } from 'vitest';
import { pbkdf2Sync } from 'node:crypto';
import * as luks from '../src/luks/index.js';

describe('digest check off the event loop', () => {
  test('a LUKS1 header with a 1000000-iteration digest unlocks while timers keep firing', async () => {
    const f = await luks.format(64n << 20n, { version: 1, keyBits: 512, kdf: luks.KDF_RANDOM_SECRET, passphrase: 'pw' });
    const header = Uint8Array.from(f.header);
    const view = new DataView(header.buffer);
    const hash = Buffer.from(header.subarray(72, 104)).toString('latin1').replace(/\0+$/, '');
    const salt = header.subarray(132, 164);
    const iterations = 1_000_000;
    const t0 = performance.now();
    const digest = pbkdf2Sync(f.volumeKey, salt, iterations, 20, hash);
    const syncMs = performance.now() - t0;
    header.set(digest, 112);
    view.setUint32(164, iterations);

    let last = performance.now();
    let maxGap = 0;
    const timer = setInterval(() => {
      const now = performance.now();
      maxGap = Math.max(maxGap, now - last);
      last = now;
    }, 2);
    let u;
    try {
      last = performance.now();
      u = await luks.unlock(header, { passphrase: 'pw' });
      maxGap = Math.max(maxGap, performance.now() - last);
    } finally {
      clearInterval(timer);
    }
    expect(Buffer.compare(Buffer.from(u.volumeKey), Buffer.from(f.volumeKey))).toBe(0);
    expect(syncMs).toBeGreaterThan(100); // the check below means something only if the digest takes a while
    expect(maxGap).toBeLessThan(syncMs / 2);
  });
});
