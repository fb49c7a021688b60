/**
 * cryptsetup's BitLocker test images (test/fixtures/bitlk): extracted once per test file into a temp dir, with
 * images.conf parsed. The images are sparse files; extraction keeps them sparse (tar -S is the default for xz
 * archives made with holes; the files are 100-128 MiB apparent size).
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, openSync, closeSync, fstatSync, readFileSync, readSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import type { VolumeBytes } from '../../src/bitlocker/index.js';

export const TARBALL = join(import.meta.dirname, '..', 'fixtures', 'bitlk', 'bitlk-images.tar.xz');

export type ImageConf = Record<string, string>;

export interface Corpus {
  readonly dir: string;
  readonly images: Readonly<Record<string, ImageConf>>;
  path(name: string): string;
  cleanup(): void;
}

export function extractCorpus(): Corpus {
  const root = mkdtempSync(join(tmpdir(), 'vhdcrypt-bitlk-'));
  execFileSync('tar', ['-xJf', TARBALL, '-C', root]);
  const dir = join(root, 'bitlk-images');
  const images: Record<string, ImageConf> = {};
  let cur = '';
  for (const line of readFileSync(join(dir, 'images.conf'), 'utf8').split('\n')) {
    const m = /^\[(.+)\]$/.exec(line);
    if (m) images[(cur = m[1]!)] = {};
    else if (cur && line.includes('=')) images[cur]![line.slice(0, line.indexOf('='))] = line.slice(line.indexOf('=') + 1);
  }
  return { dir, images, path: (n) => join(dir, `${n}.img`), cleanup: () => rmSync(root, { recursive: true, force: true }) };
}

/** A raw file as the bytes of a volume (a test's own reader: no layer of ours between). */
export function fileBytes(path: string): VolumeBytes & { close(): void } {
  const fd = openSync(path, 'r');
  return {
    size: BigInt(fstatSync(fd).size),
    read: async (o, b) => {
      readSync(fd, b, 0, b.length, Number(o));
    },
    close: () => closeSync(fd),
  };
}

/** SHA-256 of a reader's whole content, in 4 MiB reads. */
export async function sha256Of(r: { size: bigint; read(o: bigint, b: Uint8Array): Promise<void> }): Promise<string> {
  const h = createHash('sha256');
  const buf = Buffer.alloc(4 << 20);
  for (let o = 0n; o < r.size; o += BigInt(buf.length)) {
    const n = r.size - o < BigInt(buf.length) ? Number(r.size - o) : buf.length;
    await r.read(o, buf.subarray(0, n));
    h.update(buf.subarray(0, n));
  }
  return h.digest('hex');
}

/** The volume key cryptsetup 2.6 prints for an image and password (bitlkDump --dump-volume-key), or null when it refuses. */
export function cryptsetupVolumeKey(image: string, password: string): string | null {
  const r = spawnSync('cryptsetup', ['bitlkDump', '--dump-volume-key', image], { input: password, encoding: 'utf8' });
  if (r.status !== 0) return null;
  const m = /MK dump:\s*((?:[0-9a-f]{2}\s+)+)/.exec(r.stdout);
  return m ? m[1]!.replace(/\s+/g, '') : null;
}
