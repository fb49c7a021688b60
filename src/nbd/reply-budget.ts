/**
 * A budget of reply bytes a server holds for clients (read into memory, not
 * yet taken by the kernel's socket buffer or the reply thread). acquire()
 * waits, first come first served, until the bytes fit; one request larger
 * than the whole budget waits until nothing else is held, so it cannot wait
 * forever.
 */
export class ReplyBudget {
  private used = 0;
  private readonly waiters: Array<{ readonly n: number; readonly resolve: () => void }> = [];

  constructor(readonly limit: number) {}

  /** Bytes held now. */
  get held(): number {
    return this.used;
  }

  acquire(n: number): Promise<void> {
    if (this.waiters.length === 0 && this.fits(n)) {
      this.used += n;
      return Promise.resolve();
    }
    return new Promise((resolve) => this.waiters.push({ n, resolve }));
  }

  release(n: number): void {
    this.used -= n;
    while (this.waiters.length > 0 && this.fits(this.waiters[0]!.n)) {
      const w = this.waiters.shift()!;
      this.used += w.n;
      w.resolve();
    }
  }

  private fits(n: number): boolean {
    return this.used === 0 || this.used + n <= this.limit;
  }
}
