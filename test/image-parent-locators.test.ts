/**
 * Parent locators are written by whoever made a differencing child, so they
 * are followed only into the child's own directory by default: a hostile
 * child whose absolute (W2ku) or ../ relative (W2ru) locator names another
 * user's VHD is refused with a typed error that does not carry that file's
 * UUID (what it takes to forge a matching child). --parent-dir DIR (checked by
 * real path) and --allow-absolute-parents open it. libvhdi confirms each
 * crafted child is a valid differencing VHD naming that parent.
 */
import { mkdir, readFile, rename, symlink, writeFile } from 'node:fs/promises';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createImage, openImage, type DiskImage } from '../src/image/index.js';
import { encryptImage } from '../src/engine/index.js';
import { openExportBacking } from '../src/nbd/open-export.js';
import { patternBytes, readAll, tempDir } from './image-helpers.js';

const ROOT = path.join(import.meta.dirname, '..');
const MiB = 1024 * 1024;
const SIZE = 4 * MiB;
let dir: string;
let cleanup: () => Promise<void>;
let victimDir: string;
let attackerDir: string;
let base: string;
let baseUuid: string;
let baseBytes: Buffer;

beforeAll(async () => {
  ({ dir, cleanup } = await tempDir());
  victimDir = path.join(dir, 'victim');
  attackerDir = path.join(dir, 'attacker');
  await mkdir(victimDir);
  await mkdir(attackerDir);
  base = path.join(victimDir, 'base.vhd');
  const img = await createImage(base, { format: 'vhd-dynamic', virtualSize: BigInt(SIZE) });
  await img.write(0n, patternBytes(SIZE, 9));
  baseUuid = img.uuid!;
  baseBytes = await readAll(img);
  await img.close();
});
afterAll(async () => cleanup());

/** What libvhdi (an implementation we did not write) reads in a VHD: type and parent identifier. */
function libvhdi(file: string): { diskType: number; parentId: string } {
  const script = 'import pyvhdi,sys\nf=pyvhdi.file()\nf.open(sys.argv[1])\nprint(f.get_disk_type());print(f.get_parent_identifier() or "")\nf.close()';
  const r = spawnSync('/usr/bin/python3', ['-c', script, file], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`pyvhdi: ${r.stderr}`);
  const [t, id] = r.stdout.trim().split('\n');
  return { diskType: Number(t), parentId: (id ?? '').toLowerCase() };
}

/** Remove the locator entries with this platform code from a child we wrote (header at 512) and reseal its checksum. */
async function dropLocator(file: string, code: string): Promise<void> {
  const b = await readFile(file);
  const h = 512;
  for (let i = 0; i < 8; i++) {
    const at = h + 576 + 24 * i;
    if (b.toString('latin1', at, at + 4) === code) b.fill(0, at, at + 24);
  }
  b.writeUInt32BE(0, h + 36);
  let sum = 0;
  for (let i = h; i < h + 1024; i++) sum += b[i]!;
  b.writeUInt32BE(~sum >>> 0, h + 36);
  await writeFile(file, b);
}

function cli(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [path.join(ROOT, 'bin/vhdcrypt.cjs'), ...args], {
    encoding: 'utf8',
    timeout: 30_000,
    env: { ...process.env, VHDCRYPT_VAULT: path.join(dir, 'vault'), PATH: `/usr/bin:${process.env.PATH ?? ''}` },
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

async function expectParentBytes(img: DiskImage): Promise<void> {
  try {
    expect(img.parent?.path).toBe(base);
    expect((await readAll(img)).equals(baseBytes)).toBe(true);
  } finally {
    await img.close();
  }
}

function expectNoParentFacts(message: string): void {
  for (const form of [baseUuid, baseUuid.replace(/-/g, ''), baseUuid.toUpperCase()]) expect(message).not.toContain(form);
  expect(message).not.toContain(victimDir);
}

describe('a hostile child whose W2ku locator names a VHD in another directory', () => {
  let child: string;
  beforeAll(async () => {
    // Made next to the victim's disk, then moved away: its W2ru now names a missing file beside it,
    // its W2ku still the victim's disk.
    const made = path.join(victimDir, 'w2ku-child.vhd');
    await (await createImage(made, { format: 'vhd-differencing', parent: base })).close();
    child = path.join(attackerDir, 'w2ku-child.vhd');
    await rename(made, child);
  });

  it('is a valid differencing VHD naming that parent (libvhdi)', () => {
    expect(libvhdi(child)).toEqual({ diskType: 4, parentId: baseUuid });
  });

  it('is refused by default with a typed error that names neither the parent nor its UUID', async () => {
    const err = await openImage(child).then(
      () => null,
      (e: unknown) => e as { code: string; message: string },
    );
    expect(err).toMatchObject({ code: 'VHD_PARENT_NOT_ALLOWED' });
    expect(err!.message).toContain('--parent-dir');
    expectNoParentFacts(err!.message);
    await expect(openImage(child, { parentDirs: [attackerDir] })).rejects.toMatchObject({ code: 'VHD_PARENT_NOT_ALLOWED' });
    await expect(encryptImage(child, path.join(dir, 'stolen.vhd'), { passphrase: 'x', kdf: { type: 'pbkdf2', hash: 'sha256', iterations: 1000 } })).rejects.toMatchObject({ code: 'VHD_PARENT_NOT_ALLOWED' });
    await expect(openExportBacking(child, { readOnly: true })).rejects.toMatchObject({ code: 'VHD_PARENT_NOT_ALLOWED' });
  });

  it('opens with parentDirs naming the parent directory, and with allowAbsoluteParents', async () => {
    await expectParentBytes(await openImage(child, { parentDirs: [victimDir] }));
    await expectParentBytes(await openImage(child, { allowAbsoluteParents: true }));
  });

  it('parentDirs given through a symlinked directory matches a locator written with that path', async () => {
    const viaLink = path.join(dir, 'victim-link');
    await symlink(victimDir, viaLink);
    const made = path.join(viaLink, 'linked-child.vhd');
    await (await createImage(made, { format: 'vhd-differencing', parent: path.join(viaLink, 'base.vhd') })).close();
    const moved = path.join(attackerDir, 'linked-child.vhd');
    await rename(made, moved);
    await expect(openImage(moved)).rejects.toMatchObject({ code: 'VHD_PARENT_NOT_ALLOWED' });
    const img = await openImage(moved, { parentDirs: [viaLink] });
    try {
      expect(img.parent?.path).toBe(path.join(viaLink, 'base.vhd'));
      expect((await readAll(img)).equals(baseBytes)).toBe(true);
    } finally {
      await img.close();
    }
  });

  it('a decoy with another UUID beside the child: the mismatch names no UUID', async () => {
    const decoy = path.join(attackerDir, 'w2ku-child-decoy');
    await mkdir(decoy);
    const decoyChild = path.join(decoy, 'w2ku-child.vhd');
    await writeFile(decoyChild, await readFile(child));
    const other = await createImage(path.join(decoy, 'base.vhd'), { format: 'vhd-dynamic', virtualSize: BigInt(SIZE) });
    const otherUuid = other.uuid!;
    await other.close();
    const err = await openImage(decoyChild, { allowAbsoluteParents: true }).then(
      (img) => (void img.close(), null),
      (e: unknown) => e as { code: string; message: string },
    );
    // With every locator allowed the victim's disk still matches (W2ku); without, the decoy is the only candidate.
    expect(err).toBeNull();
    const refused = await openImage(decoyChild).then(
      (img) => (void img.close(), null),
      (e: unknown) => e as { code: string; message: string },
    );
    expect(refused).toMatchObject({ code: 'VHD_PARENT_MISMATCH' });
    expectNoParentFacts(refused!.message);
    expect(refused!.message).not.toContain(otherUuid);
  });

  it('the CLI: info, encrypt and serve refuse it (status 3) and follow it with --parent-dir or --allow-absolute-parents', async () => {
    const info = cli(['info', child, '--json']);
    expect(info.status).toBe(3);
    expect(info.stderr).toMatch(/VHD_PARENT_NOT_ALLOWED/);
    expectNoParentFacts(info.stderr);
    for (const allow of [['--parent-dir', victimDir], ['--allow-absolute-parents']]) {
      const ok = cli(['info', child, '--json', ...allow]);
      expect(ok.status, ok.stderr).toBe(0);
      expect(JSON.parse(ok.stdout)).toMatchObject({ container: 'vhd-differencing' });
    }
    const pass = path.join(dir, 'pass.txt');
    await writeFile(pass, 'parent test\n');
    const enc = path.join(dir, 'cli-stolen.vhd');
    const refused = cli(['encrypt', child, enc, '--passphrase-file', pass]);
    expect(refused.status).toBe(3);
    expect(refused.stderr).toMatch(/VHD_PARENT_NOT_ALLOWED/);
    const encOk = cli(['encrypt', child, enc, '--passphrase-file', pass, '--parent-dir', victimDir]);
    expect(encOk.status, encOk.stderr).toBe(0);
    const serve = cli(['serve', child, '--read-only', '--socket', path.join(dir, 'p.sock')]);
    expect(serve.status).toBe(3);
    expect(serve.stderr).toMatch(/VHD_PARENT_NOT_ALLOWED/);
    expectNoParentFacts(serve.stderr);
    // Every command that opens an image takes both options.
    for (const cmd of [['encrypt'], ['decrypt'], ['info'], ['serve'], ['keyslot', 'list'], ['keyslot', 'add'], ['keyslot', 'remove'], ['header', 'backup'], ['header', 'restore']]) {
      const help = cli([...cmd, '--help']).stdout;
      expect(help, cmd.join(' ')).toContain('--parent-dir <dir>');
      expect(help, cmd.join(' ')).toContain('--allow-absolute-parents');
    }
  });
});

describe('relative locators', () => {
  it('a W2ru locator with ../ leading out of the child directory is refused, and followed under --parent-dir', async () => {
    const child = path.join(attackerDir, 'escape-child.vhd');
    await (await createImage(child, { format: 'vhd-differencing', parent: base })).close();
    await dropLocator(child, 'W2ku');
    expect(libvhdi(child)).toEqual({ diskType: 4, parentId: baseUuid });
    const raw = await readFile(child);
    expect(raw.includes(Buffer.from('W2ku', 'latin1'))).toBe(false);
    expect(raw.includes(Buffer.from('..\\victim\\base.vhd', 'utf16le'))).toBe(true);
    const err = await openImage(child).then(
      () => null,
      (e: unknown) => e as { code: string; message: string },
    );
    expect(err).toMatchObject({ code: 'VHD_PARENT_NOT_ALLOWED' });
    expectNoParentFacts(err!.message);
    await expectParentBytes(await openImage(child, { parentDirs: [victimDir] }));
  });

  it('a symlink beside the child leading out of its directory is refused by real path', async () => {
    const link = path.join(attackerDir, 'link.vhd');
    await symlink(base, link);
    const child = path.join(attackerDir, 'link-child.vhd');
    await (await createImage(child, { format: 'vhd-differencing', parent: link })).close();
    await expect(openImage(child)).rejects.toMatchObject({ code: 'VHD_PARENT_NOT_ALLOWED' });
    const img = await openImage(child, { parentDirs: [victimDir] });
    try {
      expect((await readAll(img)).equals(baseBytes)).toBe(true);
    } finally {
      await img.close();
    }
  });

  it('normal chains keep working: parent beside the child, parent in a subdirectory, depth 2', async () => {
    const home = path.join(dir, 'home');
    await mkdir(path.join(home, 'bases'), { recursive: true });
    const b = path.join(home, 'bases', 'b.vhd');
    const bImg = await createImage(b, { format: 'vhd-dynamic', virtualSize: BigInt(SIZE) });
    await bImg.write(0n, patternBytes(SIZE, 3));
    const model = await readAll(bImg);
    await bImg.close();
    const c1 = path.join(home, 'c1.vhd');
    const c1Img = await createImage(c1, { format: 'vhd-differencing', parent: b });
    await c1Img.write(BigInt(MiB), patternBytes(4096, 4));
    model.set(patternBytes(4096, 4), MiB);
    await c1Img.close();
    const c2 = path.join(home, 'c2.vhd');
    const c2Img = await createImage(c2, { format: 'vhd-differencing', parent: c1 });
    await c2Img.write(0n, patternBytes(512, 5));
    model.set(patternBytes(512, 5), 0);
    await c2Img.close();
    const img = await openImage(c2);
    try {
      expect(img.parent?.path).toBe(c1);
      expect(img.parent?.parent?.path).toBe(b);
      expect((await readAll(img)).equals(model)).toBe(true);
    } finally {
      await img.close();
    }
  });
});
