/**
 * The server's reply buffer pool frees what it does not keep when it is handed back, rather than leaving it to a
 * major GC that an idle process may not run (the nbd-memory test shows the effect on a server's RSS): a freed
 * buffer is detached, and the process's ArrayBuffer memory goes down at once.
 */
import { describe, expect, it } from 'vitest';
import { acquireBuffer, releaseBuffers, releaseIdleMemory } from '../src/nbd/buffer-pool.js';
import { nativeAddon } from '../src/native-addon.js';

const MIB = 1024 * 1024;

describe('reply buffer pool', () => {
  it('frees the buffers it does not keep when they are released, and the idle ones when the server goes idle', () => {
    releaseIdleMemory();
    const views = Array.from({ length: 64 }, () => acquireBuffer(MIB));
    for (const v of views) v.fill(0xa5); // touched, so the pages are really held
    const buffers = views.map((v) => v.buffer);
    const held = process.memoryUsage().arrayBuffers;
    releaseBuffers(views);
    // At most 16 MiB of one size class stays idle; the other 48 buffers are detached, their memory freed already.
    expect(buffers.filter((b) => b.byteLength === MIB)).toHaveLength(16);
    expect(buffers.filter((b) => b.byteLength === 0)).toHaveLength(48);
    const released = process.memoryUsage().arrayBuffers;
    expect(held - released).toBeGreaterThanOrEqual(48 * MIB);
    releaseIdleMemory();
    expect(buffers.every((b) => b.byteLength === 0)).toBe(true);
    expect(released - process.memoryUsage().arrayBuffers).toBeGreaterThanOrEqual(16 * MIB);
    // A released buffer is not handed out again once freed: the next one is new and whole.
    const again = acquireBuffer(MIB);
    expect(again.length).toBe(MIB);
    releaseBuffers([again]);
  });

  it('the addon detaches an ArrayBuffer (the path on engines without ArrayBuffer.prototype.transfer)', () => {
    const detach = nativeAddon()?.detachArrayBuffer as ((b: ArrayBuffer) => void) | undefined;
    expect(typeof detach).toBe('function');
    const b = new ArrayBuffer(8 * MIB);
    new Uint8Array(b).fill(1);
    const before = process.memoryUsage().arrayBuffers;
    detach!(b);
    expect(b.byteLength).toBe(0);
    expect(before - process.memoryUsage().arrayBuffers).toBeGreaterThanOrEqual(8 * MIB);
    expect(() => detach!(new SharedArrayBuffer(8) as unknown as ArrayBuffer)).toThrow(/expects \(buffer: ArrayBuffer\)/);
  });
});
