/**
 * Positional I/O that another thread of this process runs on an image's open
 * descriptors (descriptors belong to the process, so a worker thread can
 * pread/pwrite them): the image plans where a range of its virtual disk lies
 * in its file, the thread reads or writes it synchronously, and the image is
 * told what was written. The engine's batches go this way, so each worker
 * reads, encrypts and writes its own batch and the main thread only hands out
 * ranges. Plans are plain objects (they cross threads by structured clone) and
 * stay valid until the image is closed; the image decides what may be planned
 * (a flat file's data; a dynamic VHD's allocated blocks for reading), and
 * everything else goes through its read() and write().
 */
import { readSync, writeSync } from 'node:fs';
import { ImageError } from './errors.js';
import { directWriteAligned } from './direct-writes.js';
import { startWriteback } from './native-io.js';
import { isAllZero } from './zero-detect.js';
import { CHUNK_SIZE } from './written-chunks.js';

/** `length` bytes at file `position`, or zeros when `position` is -1 (a hole of a dynamic disk). */
export interface ReadPiece {
  readonly position: number;
  readonly length: number;
}

export interface FileReadPlan {
  readonly fd: number;
  readonly pieces: readonly ReadPiece[];
  /** A file that ends inside a piece reads as zeros past its end (a raw file that shrank), or fails (a VHD block). */
  readonly shortReads: 'zeros' | 'error';
  /** Named in errors. */
  readonly path: string;
}

export interface FileWritePlan {
  /** The buffered descriptor. */
  readonly fd: number;
  /** The O_DIRECT descriptor for whole aligned pages (direct-writes.ts), or -1. */
  readonly directFd: number;
  readonly position: number;
  /** A fresh sparse file none of whose whole chunks in the range were written yet: all-zero whole chunks stay holes. */
  readonly skipZeroChunks: boolean;
}

export interface FileWriteReport {
  /** First and last + 1 chunk (CHUNK_SIZE units of the file) written, as [start, end) runs. */
  readonly chunkRuns: readonly number[];
  /** The kernel refused a direct write (EINVAL): the image writes buffered from now on. */
  readonly directRefused: boolean;
}

/** Fill `into` as the plan says. Throws the errno error of a failed read, or VHD_TRUNCATED. */
export function readPlannedSync(plan: FileReadPlan, into: Uint8Array): void {
  let at = 0;
  for (const p of plan.pieces) {
    const part = into.subarray(at, at + p.length);
    at += p.length;
    if (p.position < 0) {
      part.fill(0);
      continue;
    }
    let done = 0;
    while (done < part.length) {
      const n = readSync(plan.fd, part, done, part.length - done, p.position + done);
      if (n === 0) break;
      done += n;
    }
    if (done === part.length) continue;
    if (plan.shortReads === 'zeros') part.fill(0, done);
    else throw new ImageError('VHD_TRUNCATED', `${plan.path}: file ends ${part.length - done} bytes short of offset ${p.position + part.length}`);
  }
}

function writeAllSync(fd: number, data: Uint8Array, position: number): void {
  let done = 0;
  while (done < data.length) done += writeSync(fd, data, done, data.length - done, position + done);
}

/**
 * Write `data` as the plan says: whole aligned pages through the direct descriptor (falling back to buffered on
 * EINVAL, as ImageBase.writeData), the rest buffered, whose writeback is then started (native-io.ts).
 */
export function writePlannedSync(plan: FileWritePlan, data: Uint8Array): FileWriteReport {
  let directFd = plan.directFd;
  let buffered = false;
  const put = (part: Uint8Array, pos: number) => {
    if (directFd >= 0 && directWriteAligned(part, pos)) {
      try {
        return writeAllSync(directFd, part, pos);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EINVAL') throw e;
        directFd = -1;
      }
    }
    buffered = true;
    writeAllSync(plan.fd, part, pos);
  };
  const runs: number[] = [];
  const note = (a: number, b: number) => {
    const first = Math.floor(a / CHUNK_SIZE);
    const last = Math.ceil(b / CHUNK_SIZE);
    if (runs.length > 0 && runs[runs.length - 1]! >= first) runs[runs.length - 1] = last;
    else runs.push(first, last);
  };
  const pos = plan.position;
  const end = pos + data.length;
  if (!plan.skipZeroChunks) {
    put(data, pos);
    note(pos, end);
  } else {
    // Whole all-zero chunks are skipped (the fresh file's holes already read as zeros); runs between are written.
    let runStart = pos;
    for (let p = pos; p < end; ) {
      const chunk = Math.floor(p / CHUNK_SIZE);
      const cEnd = Math.min((chunk + 1) * CHUNK_SIZE, end);
      const whole = p === chunk * CHUNK_SIZE && cEnd === (chunk + 1) * CHUNK_SIZE;
      if (whole && isAllZero(data.subarray(p - pos, cEnd - pos))) {
        if (p > runStart) {
          put(data.subarray(runStart - pos, p - pos), runStart);
          note(runStart, p);
        }
        runStart = cEnd;
      }
      p = cEnd;
    }
    if (end > runStart) {
      put(data.subarray(runStart - pos), runStart);
      note(runStart, end);
    }
  }
  if (buffered) startWriteback(plan.fd);
  return { chunkRuns: runs, directRefused: directFd !== plan.directFd };
}
