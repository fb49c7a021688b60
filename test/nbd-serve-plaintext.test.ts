/**
 * `vhdcrypt serve` never exports an encrypted image's bytes as plaintext by
 * default: a headerless (plain dm-crypt) volume is unlocked through the vault
 * secret that names its VHD UUID, as decrypt does, and writes land encrypted;
 * an image served as it is needs --plaintext, which is refused for an image
 * that has a LUKS header or that a vault secret names. A raw plain volume has
 * no UUID: it needs its key (--key-file, --secret) or --plaintext, always.
 * Checked end to end with the compiled CLI, nbdsh writes and our decrypt.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createImage } from '../src/image/index.js';
import { NbdClient } from '../src/nbd/index.js';
import { openExportBacking } from '../src/nbd/open-export.js';
import { firstDifference, makeRaw, rawToVhd, removeDir, tempDir } from './fixtures/engine/helpers.js';
import { TOOL_ENV } from './helpers/nbd-harness.js';
import { startServe } from './helpers/nbd-serve-cli.js';

const ROOT = join(import.meta.dirname, '..');
const MIB = 1 << 20;
const SIZE = 8 * MIB;
let dir: string;
let env: NodeJS.ProcessEnv;
let srcRaw: string;
let srcVhd: string;
let model: Uint8Array;
let plainVhd: string;
let plainRaw: string;
let plainRawSecret: string;
let luksVhd: string;

function cli(args: string[], extraEnv: NodeJS.ProcessEnv = {}): { status: number | null; stdout: string; stderr: string } {
  // A serve that wrongly starts listens until killed: the timeout turns that into a failed status, not a hang.
  const r = spawnSync(process.execPath, [join(ROOT, 'bin/vhdcrypt.cjs'), ...args], { env: { ...env, ...extraEnv }, encoding: 'utf8', timeout: 30_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

async function readExport(uri: string, length = SIZE): Promise<Uint8Array> {
  const client = await NbdClient.connect(uri);
  try {
    const buf = new Uint8Array(length);
    await client.read(0n, buf);
    return buf;
  } finally {
    await client.close();
  }
}

/** True when `file` holds `len` bytes of `byte` in a row somewhere (plaintext written through unencrypted). */
function holdsRun(file: string, byte: number, len: number): boolean {
  return readFileSync(file).includes(Buffer.alloc(len, byte));
}

beforeAll(() => {
  dir = tempDir('serve-plaintext');
  env = { ...TOOL_ENV, VHDCRYPT_VAULT: join(dir, 'vault') };
  srcRaw = join(dir, 'src.raw');
  model = makeRaw(srcRaw, SIZE, [[0, SIZE]]);
  srcVhd = join(dir, 'src.vhd');
  rawToVhd(srcRaw, srcVhd, 'fixed');
  plainVhd = join(dir, 'plain.vhd');
  expect(cli(['vault', 'init']).status).toBe(0);
  let r = cli(['encrypt', srcVhd, plainVhd, '--format', 'plain', '--json']);
  expect(r.status, r.stderr).toBe(0);
  plainRaw = join(dir, 'plain.raw');
  r = cli(['encrypt', srcRaw, plainRaw, '--format', 'plain', '--json']);
  expect(r.status, r.stderr).toBe(0);
  plainRawSecret = String((JSON.parse(r.stdout) as { secretId: string }).secretId);
  luksVhd = join(dir, 'luks.vhd');
  r = cli(['encrypt', srcVhd, luksVhd, '--json']);
  expect(r.status, r.stderr).toBe(0);
});

afterAll(() => removeDir(dir));

describe('serve: a headerless encrypted image is never exported as plaintext', () => {
  it('a plain VHD volume served with no key flag is unlocked through its vault secret, and writes land encrypted', async () => {
    const sock = join(dir, 'plain-vhd.sock');
    const srv = await startServe([plainVhd, '--writable', '--socket', sock], 20_000, env);
    try {
      expect(firstDifference(await readExport(srv.uri), model)).toBe(-1);
      const w = spawnSync('nbdsh', ['-u', srv.uri, '-c', `h.pwrite(b"\\x5a" * ${MIB}, ${MIB})`, '-c', 'h.flush()'], { env, encoding: 'utf8' });
      expect(w.status, w.stderr).toBe(0);
    } finally {
      expect(await srv.stop()).toBe(0);
    }
    // The written plaintext is nowhere in the file; our decrypt finds it in place.
    expect(holdsRun(plainVhd, 0x5a, 64 * 1024)).toBe(false);
    const dec = join(dir, 'plain-vhd.dec.raw');
    const d = cli(['decrypt', plainVhd, dec, '--out-format', 'raw']);
    expect(d.status, d.stderr).toBe(0);
    const want = Uint8Array.from(model);
    want.fill(0x5a, MIB, 2 * MIB);
    expect(firstDifference(new Uint8Array(readFileSync(dec)), want)).toBe(-1);
    model.set(want);
  });

  it('--plaintext is refused for an image a vault secret names, and for a LUKS image', () => {
    const named = cli(['serve', plainVhd, '--plaintext', '--socket', join(dir, 'refused1.sock')]);
    expect(named.status).toBe(2);
    expect(named.stderr).toMatch(/ENGINE_PLAINTEXT_REFUSED/);
    const luks = cli(['serve', luksVhd, '--plaintext', '--socket', join(dir, 'refused2.sock')]);
    expect(luks.status).toBe(2);
    expect(luks.stderr).toMatch(/ENGINE_PLAINTEXT_REFUSED/);
    const conflict = cli(['serve', plainVhd, '--plaintext', '--key-file', srcRaw]);
    expect(conflict.status).toBe(2);
  });

  it('a raw plain volume (no UUID) needs its key or --plaintext; with --secret it is served decrypted', async () => {
    const refused = cli(['serve', plainRaw, '--socket', join(dir, 'raw-refused.sock')]);
    expect(refused.status).toBe(2);
    expect(refused.stderr).toMatch(/ENGINE_PLAINTEXT_NOT_CONFIRMED/);
    expect(refused.stderr).toMatch(/--plaintext/);
    const srv = await startServe([plainRaw, '--secret', plainRawSecret, '--read-only', '--socket', join(dir, 'raw-secret.sock')], 20_000, env);
    try {
      const rawModel = new Uint8Array(readFileSync(srcRaw));
      expect(firstDifference(await readExport(srv.uri), rawModel)).toBe(-1);
    } finally {
      expect(await srv.stop()).toBe(0);
    }
  });

  it('a plaintext image is served as it is only with --plaintext (with or without a vault on the machine)', async () => {
    const clear = join(dir, 'clear.raw');
    const bytes = randomBytes(2 * MIB);
    writeFileSync(clear, bytes);
    const clearVhd = join(dir, 'clear.vhd');
    rawToVhd(clear, clearVhd, 'dynamic');
    for (const img of [clear, clearVhd]) {
      const refused = cli(['serve', img, '--socket', join(dir, 'clear-refused.sock')]);
      expect(refused.status, img).toBe(2);
      expect(refused.stderr).toMatch(/ENGINE_PLAINTEXT_NOT_CONFIRMED/);
      for (const vault of [join(dir, 'vault'), join(dir, 'no-vault-here')]) {
        const srv = await startServe([img, '--plaintext', '--read-only', '--socket', join(dir, 'clear.sock')], 20_000, { ...env, VHDCRYPT_VAULT: vault });
        try {
          expect(Buffer.from(await readExport(srv.uri, 2 * MIB)).equals(bytes)).toBe(true);
        } finally {
          expect(await srv.stop()).toBe(0);
        }
      }
    }
  });

  it('a plaintext differencing child whose parent is in another directory: --plaintext with --parent-dir', async () => {
    const parentDir = join(dir, 'parents');
    const childDir = join(dir, 'children');
    mkdirSync(parentDir);
    mkdirSync(childDir);
    const parent = await createImage(join(parentDir, 'p.vhd'), { format: 'vhd-dynamic', virtualSize: BigInt(2 * MIB) });
    const bytes = randomBytes(2 * MIB);
    await parent.write(0n, bytes);
    await parent.close();
    const child = join(childDir, 'c.vhd');
    await (await createImage(child, { format: 'vhd-differencing', parent: join(parentDir, 'p.vhd') })).close();
    const refused = cli(['serve', child, '--plaintext', '--read-only']);
    expect(refused.status).toBe(3);
    expect(refused.stderr).toMatch(/VHD_PARENT_NOT_ALLOWED/);
    const srv = await startServe([child, '--plaintext', '--read-only', '--parent-dir', parentDir, '--socket', join(dir, 'diff.sock')], 20_000, env);
    try {
      expect(Buffer.from(await readExport(srv.uri, 2 * MIB)).equals(bytes)).toBe(true);
    } finally {
      expect(await srv.stop()).toBe(0);
    }
  });

  it('the library needs plaintext: true too', async () => {
    const saved = process.env.VHDCRYPT_VAULT;
    process.env.VHDCRYPT_VAULT = join(dir, 'vault');
    try {
      await expect(openExportBacking(plainRaw, { readOnly: true })).rejects.toMatchObject({ code: 'ENGINE_PLAINTEXT_NOT_CONFIRMED' });
      await expect(openExportBacking(plainVhd, { readOnly: true, plaintext: true })).rejects.toMatchObject({ code: 'ENGINE_PLAINTEXT_REFUSED' });
      const backing = await openExportBacking(plainRaw, { readOnly: true, plaintext: true });
      await backing.close();
    } finally {
      if (saved === undefined) delete process.env.VHDCRYPT_VAULT;
      else process.env.VHDCRYPT_VAULT = saved;
    }
  });

  it('info says a plain VHD volume is plain, and names its secret', () => {
    const r = cli(['info', plainVhd, '--json']);
    expect(r.status, r.stderr).toBe(0);
    const d = JSON.parse(r.stdout) as { encryption: string; secret: { via: string } | null };
    expect(d.encryption).toBe('plain');
    expect(d.secret?.via).toBe('volume-uuid');
  });
});
