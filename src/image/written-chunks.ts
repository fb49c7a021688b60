/**
 * Which 64 KiB chunks of a freshly created sparse file have ever been written,
 * so all-zero chunks can be skipped (left as holes) without losing an earlier
 * write. Bits live in 4 KiB pages allocated on first use: memory follows the
 * data written, not the disk size.
 */
export const CHUNK_SIZE = 64 * 1024;
const BITS_PER_PAGE = 4096 * 8;

export class WrittenChunks {
  private readonly pages = new Map<number, Uint8Array>();

  has(chunk: number): boolean {
    const page = this.pages.get(Math.floor(chunk / BITS_PER_PAGE));
    if (!page) return false;
    const bit = chunk % BITS_PER_PAGE;
    return (page[bit >>> 3]! & (1 << (bit & 7))) !== 0;
  }

  add(chunk: number): void {
    const key = Math.floor(chunk / BITS_PER_PAGE);
    let page = this.pages.get(key);
    if (!page) {
      page = new Uint8Array(4096);
      this.pages.set(key, page);
    }
    const bit = chunk % BITS_PER_PAGE;
    page[bit >>> 3]! |= 1 << (bit & 7);
  }

  /** Runs [start, end) of chunks in [from, to) never written, in order (whole missing pages skipped at once). */
  *unwrittenRuns(from: number, to: number): Generator<[number, number]> {
    let runStart = -1;
    for (let c = from; c < to; ) {
      const page = this.pages.get(Math.floor(c / BITS_PER_PAGE));
      if (!page && c % BITS_PER_PAGE === 0) {
        if (runStart < 0) runStart = c;
        c = Math.min(to, c + BITS_PER_PAGE);
        continue;
      }
      if (this.has(c)) {
        if (runStart >= 0) yield [runStart, c];
        runStart = -1;
      } else if (runStart < 0) {
        runStart = c;
      }
      c++;
    }
    if (runStart >= 0) yield [runStart, to];
  }
}
