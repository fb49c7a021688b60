/**
 * Work is never lost by an interrupt: SIGINT/SIGTERM to the CLI and an AbortSignal in the library keep the temp
 * file, the journal and the run's vault secret, and --resume finishes the run; --force still starts over. Also:
 * source damage the image layer worked around is reported, and a LUKS volume is not encrypted again by mistake.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, spawnSync } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import { existsSync, openSync, readFileSync, readSync, closeSync, statSync, watch, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { decryptImage, encryptImage } from '../src/engine/index.js';
import { openVault } from '../src/vault/index.js';
import { PBKDF2_FAST, entries, makeRaw, qemuCompare, rawToVhd, removeDir, tempDir } from './fixtures/engine/helpers.js';

const MIB = 1 << 20;
const ROOT = join(import.meta.dirname, '..');
const CLI = join(ROOT, 'bin/vhdcrypt.cjs');
let dir: string;
let big: string;
let small: string;
let smallVhd: string;
let smallDyn: string;
let pass: string;
let vaultDir: string;
const savedVault = process.env.VHDCRYPT_VAULT;

beforeAll(async () => {
  dir = tempDir('engine-kept');
  vaultDir = join(dir, 'vault');
  process.env.VHDCRYPT_VAULT = vaultDir;
  await (await openVault(`file:${vaultDir}`, { create: true })).close();
  // Past the CLI's first checkpoint (256 MiB of payload) with as much again left to interrupt the run after it.
  big = join(dir, 'big.raw');
  const fd = openSync(big, 'w');
  try {
    const chunk = Buffer.alloc(16 * MIB);
    for (let off = 0; off < 512 * MIB; off += chunk.length) {
      randomFillSync(chunk);
      writeSync(fd, chunk, 0, chunk.length, off);
    }
  } finally {
    closeSync(fd);
  }
  small = join(dir, 'small.raw');
  makeRaw(small, 12 * MIB, [[0, 12 * MIB]]);
  smallVhd = join(dir, 'small.vhd');
  rawToVhd(small, smallVhd, 'fixed');
  smallDyn = join(dir, 'small-dyn.vhd');
  rawToVhd(small, smallDyn, 'dynamic');
  pass = join(dir, 'p.txt');
  writeFileSync(pass, 'kept-test\n');
});

afterAll(() => {
  if (savedVault === undefined) delete process.env.VHDCRYPT_VAULT;
  else process.env.VHDCRYPT_VAULT = savedVault;
  removeDir(dir);
});

function journalOf(dst: string): { doneBatches: number; secretId: string | null } | null {
  const p = join(dir, `.${dst.split('/').pop()}.vhdcrypt-journal`);
  try {
    return JSON.parse(readFileSync(p, 'utf8')) as { doneBatches: number; secretId: string | null };
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw e;
  }
}

function tempOf(dst: string): string {
  return join(dir, `.${dst.split('/').pop()}.vhdcrypt-tmp`);
}

/** Run the CLI to its end. */
function cli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('exit', (code) => resolve({ code, stdout, stderr }));
  });
}


describe('a kept run: refused without --resume or --force; --force starts over', () => {
  it('--force discards a kept run and starts over', async () => {
    const dst = join(dir, 'forced.raw');
    // A kept run made through the library (an abort after some progress): deterministic, unlike a signal racing
    // the run's own checkpoints.
    const ac = new AbortController();
    await expect(
      encryptImage(big, dst, {
        format: 'luks1', passphraseFile: pass, backend: 'js', threads: 1, signal: ac.signal,
        onProgress: (p) => {
          if (p.bytesDone >= 8n * BigInt(MIB)) ac.abort(new Error('test abort'));
        },
      }),
    ).rejects.toMatchObject({ code: 'ENGINE_ABORTED' });
    expect(existsSync(tempOf(dst))).toBe(true);
    // Without --resume or --force the kept run is refused, and stays.
    const refused = await cli(['encrypt', big, dst, '--format', 'luks1', '--passphrase-file', pass]);
    expect(refused.code).toBe(6);
    expect(refused.stderr).toContain('ENGINE_TEMP_EXISTS');
    expect(existsSync(tempOf(dst))).toBe(true);
    const forced = await cli(['encrypt', big, dst, '--format', 'luks1', '--passphrase-file', pass, '--force', '--json']);
    expect(forced.code, forced.stderr).toBe(0);
    const j = JSON.parse(forced.stdout) as { resumed: boolean; bytesProcessed: number };
    expect(j.resumed).toBe(false);
    expect(j.bytesProcessed).toBe(512 * MIB);
    expect(entries(dir).filter((n) => n.includes('vhdcrypt'))).toEqual([]);
    removeDir(dst);
  });

  it('--resume with nothing to resume says so on stderr, starts over and succeeds', async () => {
    const dst = join(dir, 'fresh.vhd');
    const r = await cli(['encrypt', smallVhd, dst, '--format', 'luks1', '--passphrase-file', pass, '--resume', '--json']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain(`vhdcrypt: warning: --resume: no interrupted run of ${dst} to finish; starting over`);
    const j = JSON.parse(r.stdout) as { resumed: boolean; warnings: string[] };
    expect(j.resumed).toBe(false);
    expect(j.warnings).toEqual([`--resume: no interrupted run of ${dst} to finish; starting over`]);
    await decryptImage(dst, join(dir, 'fresh.dec.vhd'), { passphraseFile: pass });
    expect(qemuCompare(smallVhd, 'vpc', join(dir, 'fresh.dec.vhd'), 'vpc').same).toBe(true);
  });
});

describe('the library: an AbortSignal keeps the run, resume finishes it', () => {
  it('encrypt with a vault key: aborted mid-run, the last checkpoint names the written batches, the secret is kept and reused', async () => {
    const dst = join(dir, 'abort-vault.vhd');
    const ac = new AbortController();
    const v = await openVault();
    const before = (await v.listSecrets()).length;
    await expect(
      encryptImage(smallVhd, dst, {
        backend: 'js', threads: 1, batchBytes: 256 * 1024,
        // No periodic checkpoint: only the one taken on abort can record work.
        checkpointBytes: 1 << 30,
        signal: ac.signal,
        onProgress: (p) => {
          if (p.bytesDone >= 3n * BigInt(MIB)) ac.abort(new Error('test abort'));
        },
      }),
    ).rejects.toMatchObject({ code: 'ENGINE_ABORTED' });
    expect(existsSync(dst)).toBe(false);
    expect(existsSync(tempOf(dst))).toBe(true);
    const j = journalOf(dst)!;
    expect(j.doneBatches).toBeGreaterThan(0);
    expect(j.secretId).toMatch(/\/secrets\//);
    // The secret stays, settled (not pending): the next run of this job must not remove it.
    const secrets = await v.listSecrets();
    expect(secrets.length).toBe(before + 1);
    expect((await v.getSecret(j.secretId!)).properties.tags['vhdcrypt-pending']).toBeUndefined();
    const r = await encryptImage(smallVhd, dst, { backend: 'js', threads: 1, batchBytes: 256 * 1024, resume: true });
    expect(r.resumed).toBe(true);
    expect(r.secretId).toBe(j.secretId);
    expect(r.bytesProcessed).toBe(BigInt(12 * MIB - j.doneBatches * 256 * 1024));
    expect((await v.listSecrets()).length).toBe(before + 1);
    await v.close();
    // The vault secret opens the result (decrypt finds it by the LUKS token).
    await decryptImage(dst, join(dir, 'abort-vault.dec.vhd'));
    expect(qemuCompare(smallVhd, 'vpc', join(dir, 'abort-vault.dec.vhd'), 'vpc').same).toBe(true);
    expect(entries(dir).filter((n) => n.includes('vhdcrypt'))).toEqual([]);
  });

  it('encrypt aborted, then force: the kept temp, journal and the secret sealed for it are discarded', async () => {
    const dst = join(dir, 'abort-force.vhd');
    const ac = new AbortController();
    const v = await openVault();
    const before = (await v.listSecrets()).length;
    await expect(
      encryptImage(smallVhd, dst, { backend: 'js', threads: 1, batchBytes: 256 * 1024, signal: ac.signal, onProgress: () => ac.abort(new Error('test abort')) }),
    ).rejects.toMatchObject({ code: 'ENGINE_ABORTED' });
    expect((await v.listSecrets()).length).toBe(before + 1);
    const old = journalOf(dst)!.secretId;
    const r = await encryptImage(smallVhd, dst, { backend: 'js', threads: 1, batchBytes: 256 * 1024, force: true });
    expect(r.resumed).toBe(false);
    expect(r.secretId).not.toBe(old);
    expect((await v.listSecrets()).length).toBe(before + 1);
    await v.close();
    expect(entries(dir).filter((n) => n.includes('vhdcrypt'))).toEqual([]);
  });

  it('decrypt aborted mid-run keeps its private temp file and journal; resume finishes it', async () => {
    const enc = join(dir, 'dec-src.vhd');
    await encryptImage(smallVhd, enc, { format: 'luks1', passphraseFile: pass, kdf: PBKDF2_FAST });
    const dst = join(dir, 'dec-abort.vhd');
    const ac = new AbortController();
    const batch = 256 * 1024;
    let doneAtAbort = 0n;
    await expect(
      decryptImage(enc, dst, {
        passphraseFile: pass, backend: 'js', threads: 1, batchBytes: batch, checkpointBytes: 1 << 30, signal: ac.signal,
        onProgress: (p) => {
          if (p.bytesDone < 4n * BigInt(MIB) || ac.signal.aborted) return;
          doneAtAbort = p.bytesDone;
          ac.abort(new Error('test abort'));
        },
      }),
    ).rejects.toMatchObject({ code: 'ENGINE_ABORTED' });
    expect((statSync(tempOf(dst)).mode & 0o777).toString(8)).toBe('600');
    // The only checkpoint is the one at the abort: it names at least every batch progress had counted (batches finish
    // out of order, so those written are not always the leading ones until the batches in flight have finished too).
    const j = journalOf(dst)!;
    expect(j.doneBatches).toBeGreaterThan(0);
    expect(BigInt(j.doneBatches * batch)).toBeGreaterThanOrEqual(doneAtAbort);
    const r = await decryptImage(enc, dst, { passphraseFile: pass, batchBytes: 256 * 1024, resume: true });
    expect(r.resumed).toBe(true);
    expect(r.bytesProcessed).toBeLessThan(BigInt(12 * MIB));
    expect(qemuCompare(smallVhd, 'vpc', dst, 'vpc').same).toBe(true);
    expect(entries(dir).filter((n) => n.includes('vhdcrypt'))).toEqual([]);
  });

  it('a failure other than an interrupt still discards the run', async () => {
    const dst = join(dir, 'wrong-key.vhd');
    const enc = join(dir, 'dec-src.vhd');
    await expect(decryptImage(enc, dst, { passphrase: 'not it' })).rejects.toMatchObject({ code: expect.stringMatching(/WRONG_PASSPHRASE|NO_KEYSLOT/) });
    expect(entries(dir).filter((n) => n.includes('vhdcrypt'))).toEqual([]);
  });
});

describe('encrypt reports source damage it worked around', () => {
  it('a dynamic VHD whose end footer checksum is bad: exit 0, the warning on stderr and in --json', async () => {
    const damaged = join(dir, 'damaged.vhd');
    // A dynamic VHD has a copy of its footer at offset 0 to fall back on.
    writeFileSync(damaged, readFileSync(smallDyn));
    // Flip a byte of the end footer's checksum field (offset 64 of the 512-byte footer).
    const fd = openSync(damaged, 'r+');
    try {
      const size = statSync(damaged).size;
      const b = Buffer.alloc(1);
      readSync(fd, b, 0, 1, size - 512 + 64);
      b[0] ^= 0xff;
      writeSync(fd, b, 0, 1, size - 512 + 64);
    } finally {
      closeSync(fd);
    }
    const dst = join(dir, 'damaged.enc.vhd');
    const r = await cli(['encrypt', damaged, dst, '--format', 'luks1', '--passphrase-file', pass, '--json']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/vhdcrypt: warning: .*damaged\.vhd: end footer unusable .*using the footer copy at offset 0/);
    const j = JSON.parse(r.stdout) as { warnings: string[] };
    expect(j.warnings).toHaveLength(1);
    expect(j.warnings[0]).toMatch(/end footer unusable .*using the footer copy at offset 0/);
    await decryptImage(dst, join(dir, 'damaged.dec.vhd'), { passphraseFile: pass });
    expect(qemuCompare(smallDyn, 'vpc', join(dir, 'damaged.dec.vhd'), 'vpc').same).toBe(true);
  });
});

describe('encrypt refuses a LUKS volume as its input unless --force', () => {
  it('an output of ours encrypted again: ENGINE_ALREADY_ENCRYPTED, exit 3, nothing written; --force encrypts it', async () => {
    const once = join(dir, 'once.vhd');
    await encryptImage(smallVhd, once, { format: 'luks2', passphraseFile: pass, kdf: PBKDF2_FAST });
    const twice = join(dir, 'twice.vhd');
    const r = await cli(['encrypt', once, twice, '--format', 'luks1', '--passphrase-file', pass]);
    expect(r.code).toBe(3);
    expect(r.stderr).toContain('ENGINE_ALREADY_ENCRYPTED');
    expect(r.stderr).toContain('already a LUKS volume');
    expect(existsSync(twice)).toBe(false);
    expect(entries(dir).filter((n) => n.includes('vhdcrypt'))).toEqual([]);
    await expect(encryptImage(once, twice, { format: 'luks1', passphraseFile: pass, kdf: PBKDF2_FAST })).rejects.toMatchObject({ code: 'ENGINE_ALREADY_ENCRYPTED' });
    const forced = await cli(['encrypt', once, twice, '--format', 'luks1', '--passphrase-file', pass, '--force', '--json']);
    expect(forced.code, forced.stderr).toBe(0);
    expect((JSON.parse(forced.stdout) as { warnings: string[] }).warnings).toEqual([`${once}: its disk is already a LUKS volume; encrypting it again (--force)`]);
    // Decrypting twice gives back the source.
    await decryptImage(twice, join(dir, 'twice.dec1.vhd'), { passphraseFile: pass });
    await decryptImage(join(dir, 'twice.dec1.vhd'), join(dir, 'twice.dec2.vhd'), { passphraseFile: pass });
    expect(qemuCompare(smallVhd, 'vpc', join(dir, 'twice.dec2.vhd'), 'vpc').same).toBe(true);
  });
});
