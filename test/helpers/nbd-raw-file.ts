/** A raw file opened as a writable ContainerImage with every byte allocated (a stand-in where the image layer is not needed). */
import { open } from 'node:fs/promises';
import type { ContainerImage } from '../../src/nbd/index.js';

export async function openRawFile(path: string): Promise<ContainerImage> {
  const fh = await open(path, 'r+');
  const size = BigInt((await fh.stat()).size);
  return {
    format: 'raw',
    virtualSize: size,
    async *extents() {
      yield { offset: 0n, length: size, allocated: true };
    },
    // The virtual disk is the file, byte for byte.
    fileSpan: (offset, length) => (offset >= 0n && offset + BigInt(length) <= size ? Number(offset) : null),
    async read(offset, into) {
      await fh.read(into, 0, into.length, Number(offset));
    },
    async write(offset, data) {
      await fh.write(data, 0, data.length, Number(offset));
    },
    async flush() {
      await fh.sync();
    },
    async close() {
      await fh.close();
    },
  };
}
