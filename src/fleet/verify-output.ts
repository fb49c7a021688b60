/**
 * Whether a job's destination already holds its complete output. The engine renames its temp file into place only
 * once the output is whole and fsynced, so a destination that exists came from a finished run: this job's earlier
 * attempt (a worker that died between the rename and telling the queue) or someone else's. It counts as this job's
 * when it opens as a sound image (container checks, LUKS header checksums) of the size this job makes from its
 * source; anything else is FLEET_DEST_MISMATCH, and the job does not write over it.
 */
import { readLuksInfo } from '../engine/index.js';
import { openSource } from '../image/index.js';
import { FleetError } from './errors.js';
import type { FleetJobSpec } from './job-spec.js';
import type { DiskImage } from '../image/index.js';

async function withImage<T>(path: string, opts: FleetJobSpec['options'], fn: (img: DiskImage) => Promise<T>): Promise<T> {
  const img = await openSource(path, {
    ...(opts['parentDirs'] !== undefined ? { parentDirs: opts['parentDirs'] as string[] } : {}),
    ...(opts['allowAbsoluteParents'] === true ? { allowAbsoluteParents: true } : {}),
  });
  try {
    return await fn(img);
  } finally {
    await img.close();
  }
}

/** Resolves when the destination is this job's complete output; throws FLEET_DEST_MISMATCH (or the image's own error) otherwise. */
export async function verifyComplete(spec: FleetJobSpec): Promise<void> {
  const src = await withImage(spec.source, spec.options, async (img) => ({ size: img.virtualSize, luks: await readLuksInfo(img) }));
  await withImage(spec.destination, {}, async (dst) => {
    const luks = await readLuksInfo(dst);
    let want: bigint;
    let got: bigint;
    if (spec.operation === 'encrypt') {
      const plain = spec.options['format'] === 'plain';
      if (!plain && !luks) throw new FleetError('FLEET_DEST_MISMATCH', `${spec.destination} exists and holds no LUKS volume: not this job's output (move it away and retry the job)`);
      want = src.size;
      got = plain ? dst.virtualSize : dst.virtualSize - luks!.dataOffset;
    } else {
      want = src.luks ? src.size - src.luks.dataOffset : src.size;
      got = dst.virtualSize;
    }
    if (want !== got) {
      throw new FleetError('FLEET_DEST_MISMATCH', `${spec.destination} exists with a disk of ${got} bytes where this job makes ${want}: not this job's output (move it away and retry the job)`);
    }
  });
}
