/**
 * Mutual exclusion over byte ranges: holders of overlapping ranges run one
 * at a time, disjoint ranges run in parallel. Read-modify-write of a crypto
 * sector and first-write filling of a container block need it.
 */
export class RangeLock {
  private readonly held = new Set<{ start: bigint; end: bigint }>();
  private waiters: Array<() => void> = [];

  /** Wait until [start, end) overlaps no held range, take it, and resolve with its release function. */
  async acquire(start: bigint, end: bigint): Promise<() => void> {
    while (this.overlaps(start, end)) await new Promise<void>((resolve) => this.waiters.push(resolve));
    const entry = { start, end };
    this.held.add(entry);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.held.delete(entry);
      const woken = this.waiters;
      this.waiters = [];
      for (const w of woken) w();
    };
  }

  /** Ranges held right now (for tests). */
  get size(): number {
    return this.held.size;
  }

  private overlaps(start: bigint, end: bigint): boolean {
    for (const h of this.held) if (h.start < end && start < h.end) return true;
    return false;
  }
}
