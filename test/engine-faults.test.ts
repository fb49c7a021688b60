/**
 * Faults: kill -9 then resume, SIGINT, abort, ENOSPC (tmpfs), existing
 * destination, wrong passphrase, a missing vault, a disabled secret. In every
 * case the source is unchanged and nothing appears under the destination name.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, constants, existsSync, statSync, readFileSync, rmSync, writeFileSync, openSync, writeSync, closeSync, statfsSync, watch, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { encryptImage, decryptImage, unlockImage, describeImage } from '../src/engine/index.js';
import { openImage } from '../src/image/index.js';
import { openVault, unsealDiskKey } from '../src/vault/index.js';
import { PBKDF2_FAST, entries, firstDifference, makeRaw, qemuCompare, rawToVhd, removeDir, run, tempDir } from './fixtures/engine/helpers.js';

const MIB = 1 << 20;
const ROOT = join(import.meta.dirname, '..');
let dir: string;
let raw: string;
let model: Uint8Array;
let fixed: string;
let dynamic: string;
let vaultDir: string;
const savedVault = process.env.VHDCRYPT_VAULT;

function sha(path: string): string {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}

beforeAll(async () => {
  dir = tempDir('engine-faults');
  vaultDir = join(dir, 'vault');
  process.env.VHDCRYPT_VAULT = vaultDir;
  // Only `vault init` (create: true) makes a vault that is not the default location.
  await (await openVault(`file:${vaultDir}`, { create: true })).close();
  raw = join(dir, 'src.raw');
  model = makeRaw(raw, 12 * MIB, [[0, 12 * MIB]]);
  fixed = join(dir, 'src.vhd');
  rawToVhd(raw, fixed, 'fixed');
  dynamic = join(dir, 'src-dyn.vhd');
  rawToVhd(raw, dynamic, 'dynamic');
});

afterAll(() => {
  if (savedVault === undefined) delete process.env.VHDCRYPT_VAULT;
  else process.env.VHDCRYPT_VAULT = savedVault;
  removeDir(dir);
});

/** Start the child encryptor; resolve after it reported `killAt` bytes done, then kill -9 it. */
function runAndKill(src: string, dst: string, format: string, killAt: number, op: 'encrypt' | 'decrypt' = 'encrypt'): Promise<{ killed: boolean }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [join(ROOT, 'test/fixtures/engine/encrypt-child.mjs'), src, dst, format, 'fresh', op], { stdio: ['ignore', 'pipe', 'pipe'] });
    let killed = false;
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    createInterface({ input: child.stdout }).on('line', (line) => {
      const m = /^P (\d+)$/.exec(line);
      if (m && !killed && Number(m[1]) >= killAt) {
        killed = true;
        child.kill('SIGKILL');
      }
    });
    child.on('error', reject);
    child.on('exit', (code, signal) => {
      if (!killed && code !== 0) reject(new Error(`child failed (${code}): ${stderr}`));
      else resolve({ killed: killed && signal === 'SIGKILL' });
    });
  });
}

describe('kill -9 at random points, then --resume', () => {
  const fractions = [0.15, 0.5, 0.85].map((f) => f + (Math.random() - 0.5) * 0.1);
  for (const [i, f] of fractions.entries()) {
    const format = i === 1 ? 'luks1' : 'luks2';
    // The last case writes a dynamic VHD: its block allocation is interrupted too.
    const source = () => (i === 2 ? dynamic : fixed);
    it(`${format} ${i === 2 ? 'dynamic' : 'fixed'} VHD: killed at ~${Math.round(f * 100)}%, resumed on another backend, decrypts to the source`, async () => {
      const dst = join(dir, `resume-${i}.vhd`);
      const src = source();
      const before = sha(src);
      const { killed } = await runAndKill(src, dst, format, Math.floor(12 * MIB * f));
      expect(killed).toBe(true);
      expect(existsSync(dst)).toBe(false);
      expect(entries(dir).some((n) => n === `.resume-${i}.vhd.vhdcrypt-tmp`)).toBe(true);
      const r = await encryptImage(src, dst, {
        format: format as 'luks1' | 'luks2',
        passphrase: 'resume-test',
        kdf: PBKDF2_FAST,
        batchBytes: 256 * 1024,
        checkpointBytes: 512 * 1024,
        resume: true,
      });
      expect(r.resumed).toBe(true);
      expect(r.bytesProcessed).toBeLessThanOrEqual(BigInt(12 * MIB));
      // Past the first checkpoints the journal must have saved work (an early kill may precede the first one).
      if (f > 0.4) expect(r.bytesProcessed).toBeLessThan(BigInt(12 * MIB));
      expect(sha(src)).toBe(before);
      expect(entries(dir).filter((n) => n.includes('vhdcrypt'))).toEqual([]);
      if (format === 'luks1') {
        const q = join(dir, `resume-${i}.qemu.raw`);
        run('qemu-img', ['convert', '--object', 'secret,id=s,data=resume-test', '--image-opts', `driver=luks,key-secret=s,file.driver=vpc,file.file.filename=${dst}`, '-O', 'raw', q]);
        expect(firstDifference(new Uint8Array(readFileSync(q)), model)).toBe(-1);
      } else {
        const dec = join(dir, `resume-${i}.dec.vhd`);
        await decryptImage(dst, dec, { passphrase: 'resume-test' });
        expect(qemuCompare(src, 'vpc', dec, 'vpc').same).toBe(true);
      }
    });
  }

  it('decrypt killed halfway, then resumed: the plaintext equals the source', async () => {
    const enc = join(dir, 'resume-1.vhd'); // LUKS1 fixed, from the test above
    const dec = join(dir, 'resume-dec.vhd');
    expect((await runAndKill(enc, dec, '', Math.floor(12 * MIB * 0.6), 'decrypt')).killed).toBe(true);
    expect(existsSync(dec)).toBe(false);
    // The plaintext temp file is private from its creation; one an older run left readable is made private on resume.
    const temp = join(dir, '.resume-dec.vhd.vhdcrypt-tmp');
    expect((statSync(temp).mode & 0o777).toString(8)).toBe('600');
    chmodSync(temp, 0o644);
    const modesDuring: string[] = [];
    const r = await decryptImage(enc, dec, {
      passphrase: 'resume-test',
      batchBytes: 256 * 1024,
      checkpointBytes: 512 * 1024,
      resume: true,
      onProgress: () => void modesDuring.push((statSync(temp).mode & 0o777).toString(8)),
    });
    expect(modesDuring.length).toBeGreaterThan(0);
    expect(new Set(modesDuring)).toEqual(new Set(['600']));
    expect((statSync(dec).mode & 0o777).toString(8)).toBe('600');
    expect(r.resumed).toBe(true);
    expect(r.bytesProcessed).toBeLessThan(BigInt(12 * MIB));
    expect(qemuCompare(fixed, 'vpc', dec, 'vpc').same).toBe(true);
    expect(entries(dir).filter((n) => n.includes('vhdcrypt'))).toEqual([]);
  });

  it('without --resume a leftover run is refused (ENGINE_TEMP_EXISTS); --force starts over', async () => {
    const dst = join(dir, 'leftover.vhd');
    expect((await runAndKill(fixed, dst, 'luks2', 2 * MIB)).killed).toBe(true);
    await expect(encryptImage(fixed, dst, { passphrase: 'x', kdf: PBKDF2_FAST })).rejects.toMatchObject({ code: 'ENGINE_TEMP_EXISTS' });
    expect(existsSync(join(dir, '.leftover.vhd.vhdcrypt-tmp'))).toBe(true);
    const r = await encryptImage(fixed, dst, { passphrase: 'x', kdf: PBKDF2_FAST, force: true });
    expect(r.resumed).toBe(false);
    expect(existsSync(dst)).toBe(true);
  });
});

describe('vault-held keys', () => {
  it('the sealed keyslot passphrase opens the raw LUKS2 output in cryptsetup; decrypt finds it through the token', async () => {
    const dst = join(dir, 'vault.img');
    const r = await encryptImage(raw, dst, { kek: 'test-kek' });
    expect(r.secretId).toMatch(/\/secrets\//);
    expect(r.kekId).toMatch(/\/keys\/test-kek\//);
    const v = await openVault();
    const material = await unsealDiskKey(v, r.secretId!);
    await v.close();
    // Text: base64 of 32 random bytes (QEMU's luks secret must be UTF-8).
    expect(Buffer.from(material).toString('latin1')).toMatch(/^[A-Za-z0-9+/]{43}=$/);
    const kf = join(dir, 'unsealed.key');
    writeFileSync(kf, material, { mode: 0o600 });
    const ok = spawnSync('cryptsetup', ['open', '--test-passphrase', '--key-file', kf, dst], { encoding: 'utf8' });
    rmSync(kf);
    expect(ok.status, ok.stderr).toBe(0);
    const dec = join(dir, 'vault.dec');
    const d = await decryptImage(dst, dec, {});
    expect(d.secretId).toBe(r.secretId);
    expect(firstDifference(new Uint8Array(readFileSync(dec)), model)).toBe(-1);
  });

  it('LUKS1 finds its secret by LUKS UUID; plain by its VHD UUID', async () => {
    for (const format of ['luks1', 'plain'] as const) {
      const dst = join(dir, `vault-${format}.vhd`);
      const r = await encryptImage(fixed, dst, { format });
      const img = await openImage(dst);
      const u = await unlockImage(img);
      u.volumeKey.fill(0);
      await img.close();
      expect(u.secretId).toBe(r.secretId);
      const d = await describeImage(dst);
      expect(d.encryption).toBe(format);
      expect(d.secret).toMatchObject({ id: r.secretId, via: 'volume-uuid' });
    }
  });

  it('a disabled secret refuses decrypt (VAULT_ code), and re-enabling it restores access', async () => {
    const dst = join(dir, 'shred.vhd');
    const r = await encryptImage(fixed, dst, {});
    const v = await openVault();
    const name = r.secretId!.split('/secrets/')[1]!.split('/')[0]!;
    const version = r.secretId!.split('/').pop()!;
    await v.updateSecretProperties(name, version, { enabled: false });
    const dec = join(dir, 'shred.dec.vhd');
    await expect(decryptImage(dst, dec, {})).rejects.toMatchObject({ code: expect.stringMatching(/^VAULT_/) });
    expect(existsSync(dec)).toBe(false);
    await v.updateSecretProperties(name, version, { enabled: true });
    await v.close();
    await decryptImage(dst, dec, {});
    expect(qemuCompare(fixed, 'vpc', dec, 'vpc').same).toBe(true);
  });

  it('a missing vault (its directory gone) refuses decrypt with VAULT_NOT_FOUND and is not recreated; nothing under the destination', async () => {
    const other = join(dir, 'other-vault');
    const dst = join(dir, 'gone.vhd');
    await (await openVault(`file:${other}`, { create: true })).close();
    await encryptImage(fixed, dst, { vault: `file:${other}` });
    removeDir(other);
    const dec = join(dir, 'gone.dec.vhd');
    // The LUKS2 token names the vault: a missing one is an error, never a new, empty vault.
    await expect(decryptImage(dst, dec, {})).rejects.toMatchObject({ code: 'VAULT_NOT_FOUND' });
    expect(existsSync(other)).toBe(false);
    expect(existsSync(dec)).toBe(false);
    expect(entries(dir).filter((n) => n.includes('vhdcrypt'))).toEqual([]);
  });
});

describe('refusals and interruptions', () => {
  it('an existing destination is refused (ENGINE_DEST_EXISTS) and left as it was; --force replaces it', async () => {
    const dst = join(dir, 'exists.img');
    writeFileSync(dst, 'keep me');
    await expect(encryptImage(raw, dst, { passphrase: 'x', kdf: PBKDF2_FAST })).rejects.toMatchObject({ code: 'ENGINE_DEST_EXISTS' });
    expect(readFileSync(dst, 'utf8')).toBe('keep me');
    await encryptImage(raw, dst, { passphrase: 'x', kdf: PBKDF2_FAST, force: true });
    expect(readFileSync(dst).length).toBe(12 * MIB + 16 * MIB);
  });

  it('a wrong passphrase is LUKS_WRONG_PASSPHRASE; nothing under the destination', async () => {
    const enc = join(dir, 'exists.img');
    const dec = join(dir, 'wrong.dec');
    await expect(decryptImage(enc, dec, { passphrase: 'not it' })).rejects.toMatchObject({ code: expect.stringMatching(/WRONG_PASSPHRASE|NO_KEYSLOT/) });
    expect(existsSync(dec)).toBe(false);
  });

  it('AbortSignal mid-run: ENGINE_ABORTED, temp and journal kept for resume, source unchanged, nothing under the destination', async () => {
    const before = sha(fixed);
    const ac = new AbortController();
    const dst = join(dir, 'aborted.vhd');
    await expect(
      encryptImage(fixed, dst, { passphrase: 'x', kdf: PBKDF2_FAST, backend: 'js', batchBytes: 256 * 1024, signal: ac.signal, onProgress: () => ac.abort(new Error('test abort')) }),
    ).rejects.toMatchObject({ code: 'ENGINE_ABORTED' });
    expect(existsSync(dst)).toBe(false);
    expect(entries(dir).filter((n) => n.includes('vhdcrypt'))).toEqual(['.aborted.vhd.vhdcrypt-journal', '.aborted.vhd.vhdcrypt-tmp']);
    expect(sha(fixed)).toBe(before);
    expect((await encryptImage(fixed, dst, { passphrase: 'x', kdf: PBKDF2_FAST, batchBytes: 256 * 1024, resume: true })).resumed).toBe(true);
    expect(entries(dir).filter((n) => n.includes('vhdcrypt'))).toEqual([]);
  });

  it('SIGINT to the CLI: exit 130 with the resume hint, nothing under the destination; --resume finishes', async () => {
    const dst = join(dir, 'sigint.vhd');
    const temp = '.sigint.vhd.vhdcrypt-tmp';
    const pass = join(dir, 'p.txt');
    writeFileSync(pass, 'pw\n');
    let stderr = '';
    const code = await new Promise<number | null>((resolve, reject) => {
      const w = watch(dir);
      const child = spawn(process.execPath, [join(ROOT, 'bin/vhdcrypt.cjs'), 'encrypt', fixed, dst, '--format', 'luks1', '--passphrase-file', pass, '--backend', 'js', '--threads', '1'], { stdio: ['ignore', 'ignore', 'pipe'] });
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      // The temp file appears once the header is written: interrupt then.
      w.on('change', (_e, name) => {
        if (String(name) === temp) {
          w.close();
          child.kill('SIGINT');
        }
      });
      child.on('error', reject);
      child.on('exit', (c) => {
        w.close();
        resolve(c);
      });
    });
    expect(code).toBe(130);
    expect(stderr).toContain('interrupted; resume with --resume: vhdcrypt encrypt');
    expect(existsSync(dst)).toBe(false);
    // Interrupted before or after its first journal: --resume finishes (or says it starts over) either way.
    const done = spawnSync(process.execPath, [join(ROOT, 'bin/vhdcrypt.cjs'), 'encrypt', fixed, dst, '--format', 'luks1', '--passphrase-file', pass, '--resume'], { encoding: 'utf8' });
    expect(done.status, done.stderr).toBe(0);
    expect(entries(dir).filter((n) => n.includes('vhdcrypt'))).toEqual([]);
  });
});

describe('ENOSPC on a small tmpfs', () => {
  let mnt: string;
  let mounted = false;
  beforeAll(() => {
    mnt = join(dir, 'small');
    mkdirSync(mnt);
    mounted = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=8m', 'tmpfs', mnt]).status === 0;
  });
  afterAll(() => {
    if (mounted) spawnSync('umount', [mnt]);
  });

  it('refuses up front when the file system reports too little free space (ENGINE_NO_SPACE)', async (ctx) => {
    if (!mounted) ctx.skip(); // mount needs root; skipped otherwise
    await expect(encryptImage(raw, join(mnt, 'big.img'), { passphrase: 'x', kdf: PBKDF2_FAST })).rejects.toMatchObject({ code: 'ENGINE_NO_SPACE' });
    expect(entries(mnt)).toEqual([]);
  });

  /** Take what is left of the file system at the first progress event, so later allocations fail. */
  function fillOnProgress(fs: string): () => void {
    let filled = false;
    return () => {
      if (filled) return;
      filled = true;
      // Take what is left of the file system, so the next output writes fail.
      const free = Number(statfsSync(fs).bavail) * Number(statfsSync(fs).bsize);
      const fd = openSync(join(fs, 'filler'), 'w');
      const chunk = Buffer.alloc(64 * 1024, 1);
      for (let left = free; left > 0; left -= chunk.length) {
        try {
          writeSync(fd, chunk, 0, Math.min(chunk.length, left));
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code !== 'ENOSPC') throw e;
          break;
        }
      }
      closeSync(fd);
    };
  }

  it('ENOSPC in the middle of a run is ENGINE_NO_SPACE; temp removed, the secret it sealed deleted again, nothing under the destination', async (ctx) => {
    if (!mounted) ctx.skip();
    // A file system of its own, large enough for the output's estimate (4 blocks of 2 MiB and their bitmaps).
    const roomy = join(dir, 'roomy');
    mkdirSync(roomy);
    if (spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=12m', 'tmpfs', roomy]).status !== 0) ctx.skip();
    try {
      const small = join(dir, 'small-src.raw');
      makeRaw(small, 4 * MIB, [[0, 4 * MIB]]);
      const v = await openVault();
      const before = (await v.listSecrets()).length;
      // A dynamic VHD allocates each 2 MiB block as it first writes it: the second payload block fails. The key is
      // sealed in the vault: a failure that is not an interrupt discards the run, its secret with it.
      await expect(
        encryptImage(small, join(roomy, 'out.vhd'), {
          format: 'luks1', backend: 'js', threads: 1, batchBytes: 256 * 1024, outFormat: 'vhd-dynamic', onProgress: fillOnProgress(roomy),
        }),
      ).rejects.toMatchObject({ code: 'ENGINE_NO_SPACE' });
      expect(entries(roomy)).toEqual(['filler']);
      expect((await v.listSecrets()).length).toBe(before);
      await v.close();
    } finally {
      spawnSync('umount', [roomy]);
    }
  });

  it('a raw output written directly has its blocks reserved first: filling the file system mid-run does not fail it', async (ctx) => {
    if (!mounted) ctx.skip();
    rmSync(join(mnt, 'filler'), { force: true });
    const small = join(dir, 'small-src2.raw');
    makeRaw(small, 4 * MIB, [[0, 4 * MIB]]);
    const dest = join(mnt, 'out.img');
    // Reservation goes with direct writes, which a tmpfs takes from Linux 6.6 on: probe for them first.
    let direct = true;
    try {
      closeSync(openSync(join(mnt, 'probe'), constants.O_CREAT | constants.O_WRONLY | constants.O_DIRECT, 0o600));
    } catch {
      direct = false;
    }
    rmSync(join(mnt, 'probe'), { force: true });
    const run = encryptImage(small, dest, { format: 'luks1', passphrase: 'x', kdf: PBKDF2_FAST, backend: 'js', threads: 1, batchBytes: 256 * 1024, onProgress: fillOnProgress(mnt) });
    if (direct) {
      const r = await run;
      expect(r.directWrites).toBe(true);
      const back = join(dir, 'small-back.raw');
      await decryptImage(dest, back, { passphrase: 'x', outFormat: 'raw' });
      expect(readFileSync(back).equals(readFileSync(small))).toBe(true);
    } else {
      await expect(run).rejects.toMatchObject({ code: 'ENGINE_NO_SPACE' });
      expect(entries(mnt)).toEqual(['filler']);
    }
  });
});
