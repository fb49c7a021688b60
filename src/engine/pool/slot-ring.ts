/**
 * A fixed set of equal slots in one SharedArrayBuffer: bounds the memory in flight whatever the image size.
 * Slots start on a 2 MiB address boundary when the addon can tell addresses, so the output can write them with
 * O_DIRECT (src/image/direct-writes.ts: 4096 bytes suffice) and the kernel can back them with transparent huge pages.
 */
import { HUGE_PAGE_BYTES, hugePageView } from '../../image/index.js';

export interface Slot {
  readonly index: number;
  readonly buffer: SharedArrayBuffer;
  readonly offset: number;
  readonly size: number;
  /** A view of `length` bytes at the slot's start. */
  view(length: number): Uint8Array;
}

/**
 * The memory of the last ring retired in this process, wiped: the next ring of the same size takes it instead of
 * fresh pages. A process that runs job after job (a fleet worker) then faults its slots in once, not per job (each
 * first touch of a page costs a trap to the hypervisor on some VMs: docs/performance.md).
 */
let spare: SharedArrayBuffer | null = null;

export class SlotRing {
  readonly slotSize: number;
  readonly count: number;
  private readonly buffer: SharedArrayBuffer;
  private readonly free: Slot[] = [];
  private readonly waiters: Array<(s: Slot) => void> = [];
  /** Slots handed out at least once: only they can hold plaintext (the others were never touched). */
  private readonly used = new Set<Slot>();

  constructor(count: number, slotSize: number) {
    this.count = count;
    this.slotSize = slotSize;
    // Slots on huge pages: each first touch of a 4 KiB page costs ~16 us on the VMs this is measured on, so a 16 MiB
    // ring faulted in small pages costs the job's first batches ~65 ms, in huge pages ~1 ms (docs/performance.md).
    const bytes = count * slotSize + HUGE_PAGE_BYTES;
    if (spare !== null && spare.byteLength === bytes) {
      this.buffer = spare;
      spare = null;
    } else {
      this.buffer = new SharedArrayBuffer(bytes);
    }
    const base = hugePageView(this.buffer, count * slotSize).byteOffset;
    for (let i = 0; i < count; i++) {
      const offset = base + i * slotSize;
      const buffer = this.buffer;
      this.free.push({ index: i, buffer, offset, size: slotSize, view: (n) => new Uint8Array(buffer, offset, n) });
    }
  }

  /** A free slot, waiting for one when all are in use. */
  acquire(): Promise<Slot> {
    const s = this.free.pop();
    if (s) {
      this.used.add(s);
      return Promise.resolve(s);
    }
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  release(s: Slot): void {
    const w = this.waiters.shift();
    if (w) w(s);
    else this.free.push(s);
  }

  /**
   * Zero every slot that was used (plaintext passes through them). Slots never handed out are left alone: their
   * pages were never touched, and touching them would cost a page fault each for nothing.
   */
  wipe(): void {
    for (const s of this.used) new Uint8Array(s.buffer, s.offset, s.size).fill(0);
    this.used.clear();
  }

  /** Wipe, and leave the memory to the next ring of this size in the process; this ring is not used again. */
  retire(): void {
    this.wipe();
    this.free.length = 0;
    spare = this.buffer;
  }
}
