/**
 * An NBD export as a read-only disk image source for the engine: the same
 * surface as the image layer's DiskImage (format 'raw'), with extents() from
 * BLOCK_STATUS so ranges that read as zeros are skipped.
 */
import { NbdClient, type NbdClientOptions } from './client.js';
import { NBD_STATE_ZERO } from './protocol.js';

/** A read-only view of an NBD export, DiskImage-compatible. */
export interface NbdImage {
  readonly format: 'raw';
  /** The URI it was opened from. */
  readonly path: string;
  readonly virtualSize: bigint;
  readonly writable: false;
  readonly warnings: readonly string[];
  /** Merged extents covering the whole export; `allocated: false` reads as zeros (NBD_STATE_ZERO). */
  extents(): AsyncIterable<{ offset: bigint; length: bigint; allocated: boolean }>;
  read(offset: bigint, into: Uint8Array): Promise<void>;
  /** Always null: none of it is in a local file. */
  fileSpan(offset: bigint, length: number): null;
  close(): Promise<void>;
}

/** One BLOCK_STATUS query covers at most this much (the length field is 32 bits). */
const STATUS_SPAN = 1024 * 1024 * 1024;

/** Open nbd://HOST[:PORT]/EXPORT or nbd+unix:///EXPORT?socket=PATH as a read-only image. */
export async function openNbdImage(uri: string, opts: NbdClientOptions = {}): Promise<NbdImage> {
  const client = await NbdClient.connect(uri, opts);
  const warnings: string[] = [];
  if (!client.canBlockStatus) warnings.push('the NBD server offers no base:allocation: every byte is read');
  return {
    format: 'raw',
    path: uri,
    virtualSize: client.size,
    writable: false,
    warnings,
    async *extents() {
      const size = client.size;
      if (!client.canBlockStatus) {
        if (size > 0n) yield { offset: 0n, length: size, allocated: true };
        return;
      }
      let pos = 0n;
      let run = null as { offset: bigint; length: bigint; allocated: boolean } | null;
      while (pos < size) {
        const span = size - pos < BigInt(STATUS_SPAN) ? Number(size - pos) : STATUS_SPAN;
        for (const e of await client.blockStatus(pos, span)) {
          let len = BigInt(e.length);
          if (pos + len > size) len = size - pos;
          if (len <= 0n) break;
          const allocated = (e.flags & NBD_STATE_ZERO) === 0;
          if (run !== null && run.allocated === allocated) run = { offset: run.offset, length: run.length + len, allocated };
          else {
            if (run !== null) yield run;
            run = { offset: pos, length: len, allocated };
          }
          pos += len;
        }
      }
      if (run !== null) yield run;
    },
    read: (offset, into) => client.read(offset, into),
    fileSpan: () => null,
    close: () => client.close(),
  };
}
