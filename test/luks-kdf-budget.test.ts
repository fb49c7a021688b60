/**
 * KDF work per unlock attempt: one budget across keyslots (limits.maxUnlockWork),
 * abort inside a running KDF (an AbortSignal, and SIGINT to the CLI), and the
 * argon2 memory ceiling. Headers come from luks.format/addKeyslot and from
 * cryptsetup; costly keyslots are made by raising the KDF parameters of a cheap
 * one (LUKS1 spec 1.2.3 table 2: keyslot i's iterations at 208 + 48 i + 4; LUKS2
 * JSON keyslots[i].kdf), since a wrong passphrase only has to run the KDF.
 * Work units are recomputed here from their definition (src/luks/kdf.ts,
 * kdfWork): PBKDF2-SHA256 iterations per 32-byte output block, argon2 KiB x time x 4.
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as luks from '../src/luks/index.js';
import { kdfWork } from '../src/luks/kdf.js';
import { cryptsetup, luks2JsonAt, makeTmp, setLuks2Json, writeVolume } from './luks-helpers.js';

const ROOT = join(import.meta.dirname, '..');
const PASS = { passphrase: 'good' };
const tmp = makeTmp('kdf-budget');
afterAll(() => tmp.remove());

async function fails(p: Promise<unknown>, code: string, message?: RegExp): Promise<Error> {
  const e = (await p.then(
    () => {
      throw new Error(`expected ${code}, it resolved`);
    },
    (err: unknown) => err,
  )) as Error & { code?: string };
  expect(e.code, e.message).toBe(code);
  if (message) expect(e.message).toMatch(message);
  return e;
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
function editJson(buf: Uint8Array, edit: (j: any) => void): Uint8Array {
  const out = Uint8Array.from(buf);
  const j = JSON.parse(luks2JsonAt(out, 0).text);
  edit(j);
  setLuks2Json(out, JSON.stringify(j));
  return out;
}

/** Child pids of `pid`, over all its threads. */
function childrenOf(pid: number): number[] {
  const out: number[] = [];
  for (const t of readdirSync(`/proc/${pid}/task`)) {
    let text: string;
    try {
      text = readFileSync(`/proc/${pid}/task/${t}/children`, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') continue; // the thread ended meanwhile
      throw e;
    }
    out.push(...text.split(/\s+/).filter(Boolean).map(Number));
  }
  return out;
}

function isKdfChild(pid: number): boolean {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('hashRawSync');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw e;
  }
}

/** Resolves when cond() holds, checking every few ms (the event here is a process appearing or going). */
async function until<T>(cond: () => T | undefined | false): Promise<T> {
  for (;;) {
    const v = cond();
    if (v !== undefined && v !== false) return v;
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** The KDF child process of `pid` once it runs. */
const kdfChildOf = (pid: number) => until(() => childrenOf(pid).find(isKdfChild));
const gone = (pid: number) => until(() => !existsSync(`/proc/${pid}`) || /\) Z /.test(readFileSync(`/proc/${pid}/stat`, 'utf8')));

/**
 * Stops a running KDF process (SIGSTOP; resolves once /proc shows it stopped), so it can never finish on its own:
 * whoever waits for its result instead of killing it waits forever, and the test fails on its timeout, whatever
 * the speed of the machine. `release` kills it if the code under test left it behind.
 */
async function freeze(pid: number): Promise<{ release: () => void }> {
  process.kill(pid, 'SIGSTOP');
  await until(() => /\) [TtZ] /.test(readFileSync(`/proc/${pid}/stat`, 'utf8')));
  return {
    release: () => {
      if (existsSync(`/proc/${pid}`)) process.kill(pid, 'SIGKILL');
    },
  };
}

describe('per-attempt budget across keyslots', () => {
  const ITER = 10_000;
  // Keyslot KDF: 64-byte area key = 2 SHA-256 blocks; digest: 32 bytes, 1000 iterations (luks.format's).
  const SLOT_WORK = ITER * 2 + 1000 * 1;
  let h32: Uint8Array;

  beforeAll(async () => {
    const f = await luks.format(64n << 20n, { version: 2, keyBits: 512, kdf: { type: 'pbkdf2', hash: 'sha256', iterations: ITER }, ...PASS });
    f.volumeKey.fill(0);
    h32 = Uint8Array.from(f.header);
    for (let i = 1; i < 32; i++) await luks.addKeyslot(h32, PASS, { passphrase: `pw${i}` }, { kdf: { type: 'pbkdf2', iterations: ITER } });
  });

  test('32 keyslots, a wrong passphrase: stops at the budget with LUKS_KDF_TOO_COSTLY naming the total and the limit', async () => {
    const limits = { ...luks.DEFAULT_KDF_LIMITS, maxUnlockWork: 10 * SLOT_WORK };
    const e = await fails(luks.unlock(h32, { passphrase: 'none of them' }, { limits }), 'LUKS_KDF_TOO_COSTLY');
    expect(e.message).toContain(`would cost ${32 * SLOT_WORK} KDF work units`);
    expect(e.message).toContain(`budget of ${10 * SLOT_WORK}`);
    expect(e.message).toMatch(/stopped before keyslot 10; 10 keyslot\(s\) tried did not open/);
    // Within the budget: the 10th keyslot opens; the 21st is never tried unless named.
    expect((await luks.unlock(h32, { passphrase: 'pw9' }, { limits })).keyslot).toBe(9);
    await fails(luks.unlock(h32, { passphrase: 'pw20' }, { limits }), 'LUKS_KDF_TOO_COSTLY');
    expect((await luks.unlock(h32, { passphrase: 'pw20' }, { limits, keyslot: 20 })).keyslot).toBe(20);
    // A budget below the first keyslot refuses before any KDF runs.
    await fails(luks.unlock(h32, PASS, { limits: { ...limits, maxUnlockWork: SLOT_WORK - 1 } }), 'LUKS_KDF_TOO_COSTLY', /stopped before keyslot 0;/);
    // A budget that is not a number fails closed rather than spending without bound.
    await fails(luks.unlock(h32, PASS, { limits: { ...limits, maxUnlockWork: Number.NaN } }), 'LUKS_BAD_ARG', /maxUnlockWork/);
    // The default budget covers all 32 of these cheap keyslots.
    await fails(luks.unlock(h32, { passphrase: 'none of them' }), 'LUKS_WRONG_PASSPHRASE', /tried 32 keyslot/);
  });

  test('cryptsetup header of 8 keyslots: the last one opens within a budget of exactly 8 keyslots, not one unit less', async () => {
    const dev = tmp.path('eight.img');
    writeVolume(dev, new Uint8Array(0), 32 << 20);
    const key = (i: number) => {
      const p = tmp.path(`k${i}`);
      writeFileSync(p, `pass ${i}`);
      return p;
    };
    const pb = ['--pbkdf', 'pbkdf2', '--pbkdf-force-iterations', '1000'];
    cryptsetup('luksFormat', '--type', 'luks2', '--key-size', '512', ...pb, '--key-file', key(0), dev);
    for (let i = 1; i < 8; i++) cryptsetup('luksAddKey', ...pb, '--key-file', key(0), dev, key(i));
    const j = JSON.parse(luks2JsonAt(readFileSync(dev), 0).text);
    const d = j.digests['0'];
    const digestWork = d.iterations * Math.ceil(Buffer.from(d.digest, 'base64').length / 32);
    const eight = 8 * (1000 * 2 + digestWork);
    const r = await luks.unlock(dev, { keyFile: key(7) }, { limits: { ...luks.DEFAULT_KDF_LIMITS, maxUnlockWork: eight } });
    expect(r.keyslot).toBe(7);
    r.volumeKey.fill(0);
    await fails(luks.unlock(dev, { keyFile: key(7) }, { limits: { ...luks.DEFAULT_KDF_LIMITS, maxUnlockWork: eight - 1 } }), 'LUKS_KDF_TOO_COSTLY', new RegExp(`would cost ${eight} `));
  });

  test('the default budget admits 8 KDF_TYPED_PASSPHRASE keyslots (1 GiB, time 4) with digests of 2^22 iterations', () => {
    const typed = 1048576 * 4 * 4;
    expect(kdfWork({ type: 'argon2id', time: 4, memory: 1048576, cpus: 4, salt: new Uint8Array(32) }, 64)).toBe(typed);
    expect(8 * (typed + 2 ** 22)).toBeLessThanOrEqual(luks.DEFAULT_KDF_LIMITS.maxUnlockWork);
  });
});

describe('argon2 memory ceiling', () => {
  test("4 GiB (cryptsetup's maximum) is refused under default limits, for unlock and for a new keyslot", async () => {
    const f = await luks.format(64n << 20n, { version: 2, keyBits: 512, kdf: { type: 'argon2id', time: 4, memoryKiB: 1024, parallelism: 1 }, ...PASS });
    f.volumeKey.fill(0);
    const big = editJson(f.header, (j) => Object.assign(j.keyslots['0'].kdf, { memory: 4194304, time: 4, cpus: 4 }));
    await fails(luks.unlock(big, PASS), 'LUKS_KDF_TOO_COSTLY', /memory \(KiB\) 4194304 exceeds the ceiling 2097152/);
    await fails(luks.addKeyslot(f.header, PASS, { passphrase: 'x' }, { kdf: { type: 'argon2id', time: 4, memoryKiB: 4194304, parallelism: 4 } }), 'LUKS_BAD_ARG', /32\.\.2097152/);
  });
});

describe('abort inside a running KDF', () => {
  async function abortWhileRunning(header: Uint8Array): Promise<void> {
    const ac = new AbortController();
    const p = luks.unlock(header, { passphrase: 'wrong' }, { signal: ac.signal });
    const settled = p.then(
      () => null,
      (e: unknown) => e as Error & { code?: string },
    );
    const kid = await kdfChildOf(process.pid);
    // The defect was an abort that waited for the whole KDF: with the KDF stopped, such a wait never ends.
    const frozen = await freeze(kid);
    try {
      ac.abort(new Error('test abort'));
      const e = await settled;
      expect(e?.code, e?.message).toBe('LUKS_ABORTED');
      expect(e?.message).toMatch(/test abort/);
      await gone(kid);
    } finally {
      frozen.release();
    }
  }

  test('argon2id of ~10 s (256 MiB x 100, one lane): rejects with LUKS_ABORTED at once and its process is gone', async () => {
    const f = await luks.format(64n << 20n, { version: 2, keyBits: 512, kdf: { type: 'argon2id', time: 4, memoryKiB: 1024, parallelism: 1 }, ...PASS });
    f.volumeKey.fill(0);
    await abortWhileRunning(editJson(f.header, (j) => Object.assign(j.keyslots['0'].kdf, { memory: 262144, time: 100, cpus: 1 })));
  });

  test('PBKDF2-SHA256 at the 2^25 ceiling (LUKS1, two blocks): rejects with LUKS_ABORTED at once', async () => {
    const f = await luks.format(64n << 20n, { version: 1, keyBits: 512, kdf: luks.KDF_RANDOM_SECRET, ...PASS });
    f.volumeKey.fill(0);
    const h = Uint8Array.from(f.header);
    new DataView(h.buffer).setUint32(208 + 4, 2 ** 25);
    await abortWhileRunning(h);
  });

  test('with a signal, a KDF run in the child derives the same key (PBKDF2 on LUKS1, argon2id on LUKS2)', async () => {
    for (const [version, kdf] of [
      [1, { type: 'pbkdf2', hash: 'sha256', iterations: 600_000 }],
      [2, { type: 'argon2id', time: 5, memoryKiB: 65536, parallelism: 2 }],
    ] as const) {
      const f = await luks.format(64n << 20n, { version, keyBits: 512, kdf, ...PASS });
      const ac = new AbortController();
      const seen = kdfChildOf(process.pid);
      const r = await luks.unlock(f.header, PASS, { signal: ac.signal });
      await seen; // it really ran in a child
      expect(Buffer.from(r.volumeKey).equals(Buffer.from(f.volumeKey))).toBe(true);
      r.volumeKey.fill(0);
      f.volumeKey.fill(0);
    }
  });
});

describe('SIGINT / SIGTERM to `vhdcrypt decrypt` inside the KDF', () => {
  test.each(['SIGINT', 'SIGTERM'] as const)('%s: exits 130 promptly, kills the KDF process, leaves no output or temp file', async (sig) => {
    const dir = tmp.path(`cli-${sig}`);
    const { mkdirSync } = await import('node:fs');
    mkdirSync(dir);
    const f = await luks.format(8n << 20n, { version: 1, keyBits: 512, kdf: luks.KDF_RANDOM_SECRET, ...PASS });
    f.volumeKey.fill(0);
    const h = Uint8Array.from(f.header);
    new DataView(h.buffer).setUint32(208 + 4, 2 ** 25);
    const src = join(dir, 'enc.raw');
    writeVolume(src, h, 8 << 20);
    const pass = join(dir, 'pass.txt');
    writeFileSync(pass, 'wrong\n');
    const child = spawn(process.execPath, [join(ROOT, 'bin/vhdcrypt.cjs'), 'decrypt', src, join(dir, 'out.raw'), '--passphrase-file', pass, '--threads', '1'], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    const exited = new Promise<number | null>((resolve, reject) => {
      child.on('error', reject);
      child.on('exit', (c) => resolve(c));
    });
    const kid = await kdfChildOf(child.pid!);
    // The defect: it waited for the KDF (seconds to minutes). With the KDF stopped, such a wait never ends.
    const frozen = await freeze(kid);
    try {
      child.kill(sig);
      const code = await exited;
      expect(code, stderr).toBe(130);
      expect(stderr).toMatch(/^vhdcrypt: ENGINE_ABORTED: interrupted before anything was written/);
      expect(stderr).not.toMatch(/--resume/); // nothing was kept, so nothing to resume
      await gone(kid);
    } finally {
      frozen.release();
    }
    expect(readdirSync(dir).sort()).toEqual(['enc.raw', 'pass.txt']);
  });
});
