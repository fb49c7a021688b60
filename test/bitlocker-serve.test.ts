/**
 * `vhdcrypt serve` of a disk holding a BitLocker partition: the export is the decrypted disk, read-only, read by
 * nbdcopy (libnbd) and compared with `vhdcrypt decrypt`'s output; --writable is refused.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { extractCorpus, type Corpus } from './helpers/bitlk-images.js';
import { startServe } from './helpers/nbd-serve-cli.js';
import { TOOL_ENV } from './helpers/nbd-harness.js';

const CLI = join(import.meta.dirname, '..', 'bin', 'vhdcrypt.cjs');
const NAME = 'bitlk-aes-cbc-128-4k';
let corpus: Corpus;
let disk: string;
let pw: string;
beforeAll(() => {
  corpus = extractCorpus();
  const raw = join(corpus.dir, 'disk.raw');
  const vol = statSync(corpus.path(NAME)).size;
  execFileSync('truncate', ['-s', String(vol + 4 * 1024 * 1024), raw]);
  execFileSync('sfdisk', ['--no-reread', '--no-tell-kernel', '-q', raw], { input: `label: gpt\nstart=2048, size=${vol / 512}, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7\n` });
  execFileSync('dd', [`if=${corpus.path(NAME)}`, `of=${raw}`, 'bs=1M', 'seek=1', 'conv=notrunc,sparse', 'status=none']);
  disk = join(corpus.dir, 'disk.vhd');
  execFileSync('qemu-img', ['convert', '-q', '-f', 'raw', '-O', 'vpc', '-o', 'subformat=dynamic,force_size=on', raw, disk]);
  pw = join(corpus.dir, 'pw');
  writeFileSync(pw, 'anaconda\n');
});
afterAll(() => corpus?.cleanup());

const sha = (p: string) => createHash('sha256').update(readFileSync(p)).digest('hex');

describe('serving a BitLocker disk', () => {
  it('nbdcopy reads the decrypted disk, equal to decrypt\'s output; the partition hashes to images.conf', async () => {
    const out = join(corpus.dir, 'dec.vhd');
    const d = spawnSync(process.execPath, [CLI, 'decrypt', disk, out, '--passphrase-file', pw], { encoding: 'utf8' });
    expect(d.status).toBe(0);
    const decRaw = join(corpus.dir, 'dec.raw');
    execFileSync('qemu-img', ['convert', '-q', '-f', 'vpc', '-O', 'raw', out, decRaw]);
    const s = await startServe([disk, '--passphrase-file', pw]);
    try {
      expect(s.line).toContain('(read-only');
      const copy = join(corpus.dir, 'served.raw');
      execFileSync('nbdcopy', [s.uri, copy], { env: TOOL_ENV });
      expect(sha(copy)).toBe(sha(decRaw));
      const part = readFileSync(copy).subarray(1 << 20, (1 << 20) + statSync(corpus.path(NAME)).size);
      expect(createHash('sha256').update(part).digest('hex')).toBe(corpus.images[NAME]!.SHA256SUM);
    } finally {
      expect(await s.stop()).toBe(0);
    }
  });

  it('--writable is refused with BITLK_BAD_ARGUMENT; a wrong password exits 4', () => {
    const w = spawnSync(process.execPath, [CLI, 'serve', disk, '--passphrase-file', pw, '--writable'], { encoding: 'utf8' });
    expect(w.status).toBe(2);
    expect(w.stderr).toMatch(/BITLK_BAD_ARGUMENT: .*read-only/);
    const bad = join(corpus.dir, 'bad');
    writeFileSync(bad, 'nope\n');
    const b = spawnSync(process.execPath, [CLI, 'serve', disk, '--passphrase-file', bad], { encoding: 'utf8' });
    expect(b.status).toBe(4);
    expect(b.stderr.trim()).toBe('vhdcrypt: BITLK_WRONG_KEY: wrong password');
  });
});
