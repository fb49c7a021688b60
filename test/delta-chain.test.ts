/**
 * Encrypted differencing chains: plaintext chains of depth 1 and 3 written by the tests' own differencing writer
 * (test/helpers/diff-vhd-writer.ts) over qemu-made fixed and dynamic bases, with writes covering parts of blocks
 * and parts of 4 KiB crypto sectors; each link encrypted as a delta over the encrypted image of its parent. Every
 * decrypted link equals the plaintext model; libvhdi (libyal, an implementation we did not write) reads our
 * encrypted links to the same ciphertext as our reader; serve + nbdcopy gives the model too.
 */
import { spawn, spawnSync } from 'node:child_process';
import { createInterface } from 'node:readline';
import { copyFileSync, mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decryptImage, describeImage, encryptChain, encryptImage, mergeImage, mergeJournalPath, unlockImage, verifyImage } from '../src/engine/index.js';
import { openImage, SparseVhdImage } from '../src/image/index.js';
import { openVault } from '../src/vault/index.js';
import { oracleDecryptSector, removeDir, run, tempDir } from './fixtures/engine/helpers.js';
import { DiffModel, vhdUuidOf, writeDifferencingVhd } from './helpers/diff-vhd-writer.js';
import { startServe } from './helpers/nbd-serve-cli.js';
import { TOOL_ENV } from './helpers/nbd-harness.js';
import { patternBytes, readAll } from './image-helpers.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const MiB = 1 << 20;
const SIZE = 40 * MiB;
const BS = 2 * MiB;
const D = 16 * MiB; // LUKS2 data offset
let dir: string;
let vault: string;

beforeAll(async () => {
  dir = tempDir('delta');
  mkdirSync(join(dir, 'plain'));
  mkdirSync(join(dir, 'enc'));
  vault = `file:${join(dir, 'vault')}`;
  await (await openVault(vault, { create: true })).close();
});
afterAll(() => removeDir(dir));

const p = (name: string) => join(dir, 'plain', name);
const e = (name: string) => join(dir, 'enc', name);

function cliRun(args: string[]) {
  return spawnSync(process.execPath, [join(ROOT, 'bin/vhdcrypt.js'), ...args], { encoding: 'utf8', env: { ...process.env, VHDCRYPT_VAULT: join(dir, 'vault') } });
}

/** A qemu-made base with data at scattered places (dynamic: holes elsewhere); returns its plaintext. */
function qemuBase(file: string, subformat: 'fixed' | 'dynamic'): Uint8Array {
  run('qemu-img', ['create', '-q', '-f', 'vpc', '-o', `subformat=${subformat},force_size=on`, file, String(SIZE)]);
  run('qemu-io', ['-f', 'vpc', '-c', 'write -q -P 0xa1 0 3M', '-c', 'write -q -P 0xa2 8M 64k', '-c', 'write -q -P 0xa3 20M 4M', file]);
  run('qemu-img', ['convert', '-f', 'vpc', '-O', 'raw', file, file + '.raw']);
  return new Uint8Array(readFileSync(file + '.raw'));
}

/** Decrypt an encrypted link (its whole chain) through the engine into raw bytes. */
async function decrypted(file: string): Promise<Buffer> {
  const out = file + '.dec.raw';
  await decryptImage(file, out, { outFormat: 'raw', force: true });
  return readFileSync(out);
}

/** Every byte of the encrypted disk as libvhdi reads it, each link's parent set by hand down to the base. */
function libvhdiRead(chain: string[]): Buffer {
  const script = [
    'import pyvhdi,sys',
    'files=[]',
    'for path in sys.argv[2:]:',
    '  f=pyvhdi.file(); f.open(path)',
    '  if files: f.set_parent(files[-1])',
    '  files.append(f)',
    'top=files[-1]; size=top.get_media_size(); out=open(sys.argv[1],"wb"); off=0',
    'while off<size:',
    '  n=min(4<<20,size-off); out.write(top.read_buffer_at_offset(n,off)); off+=n',
    'out.close()',
  ].join('\n');
  const outFile = chain[chain.length - 1]! + '.libvhdi';
  const r = spawnSync('/usr/bin/python3', ['-c', script, outFile, ...chain], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`pyvhdi: ${r.stderr}`);
  return readFileSync(outFile);
}

/** The first differing 4 KiB unit of two buffers, or -1. */
function firstDiff4k(a: Uint8Array, b: Uint8Array): number {
  if (a.length !== b.length) return -2;
  for (let o = 0; o < a.length; o += 4096) if (!Buffer.from(a.subarray(o, o + 4096)).equals(Buffer.from(b.subarray(o, o + 4096)))) return o;
  return -1;
}

describe.each(['dynamic', 'fixed'] as const)('a chain over a %s base', (kind) => {
  const models: Uint8Array[] = [];
  const plainLinks: string[] = [];
  const encLinks: string[] = [];
  const depth = kind === 'dynamic' ? 3 : 1;

  beforeAll(async () => {
    const base = p(`${kind}-base.vhd`);
    models.push(qemuBase(base, kind));
    await encryptImage(base, e(`${kind}-base.vhd`), { vault });
    plainLinks.push(base);
    encLinks.push(e(`${kind}-base.vhd`));
    // Each link's writes: parts of blocks, parts of 4 KiB sectors (byte- and 512-aligned), across block ends,
    // into the base's holes and over the previous links' writes.
    const writes: Array<Array<[number, Uint8Array]>> = [
      [
        [4096 + 100, patternBytes(3000, 1)],
        [10 * MiB + 512, patternBytes(1024, 2)],
        [2 * MiB - 700, patternBytes(1400, 3)],
        [12 * MiB, patternBytes(BS, 4)],
        [8 * MiB + 4096, new Uint8Array(512)],
        [SIZE - 100, patternBytes(100, 5)],
      ],
      [
        [4096 + 2000, patternBytes(5000, 6)],
        [30 * MiB + 1536, patternBytes(512, 7)],
        [12 * MiB + 3 * 4096 + 7, patternBytes(9000, 8)],
      ],
      [
        [0, patternBytes(512, 9)],
        [30 * MiB + 4096 - 512, patternBytes(1024, 10)],
        [21 * MiB + 33, patternBytes(70_000, 11)],
      ],
    ];
    for (let i = 1; i <= depth; i++) {
      const m = new DiffModel(models[i - 1]!);
      for (const [off, data] of writes[i - 1]!) m.write(off, data);
      const file = p(`${kind}-c${i}.vhd`);
      writeDifferencingVhd(file, { parent: plainLinks[i - 1]!, size: SIZE, blockSize: BS, model: m.model, held: m.held });
      models.push(m.model);
      plainLinks.push(file);
    }
    // Our reader agrees with the tests' writer on the plaintext chain.
    const top = await openImage(plainLinks[depth]!);
    expect((await readAll(top)).equals(Buffer.from(models[depth]!))).toBe(true);
    await top.close();
    // The plaintext parents need not exist any more: only the child and the encrypted parent are read.
    for (let i = 1; i <= depth; i++) {
      const out = e(`${kind}-c${i}.vhd`);
      renameSync(plainLinks[i - 1]!, plainLinks[i - 1]! + '.gone');
      const r = await encryptImage(plainLinks[i]!, out, { parentImage: encLinks[i - 1]! });
      renameSync(plainLinks[i - 1]! + '.gone', plainLinks[i - 1]!);
      expect(r.container).toBe('vhd-differencing');
      expect(r.dataOffset).toBe(BigInt(D));
      expect(r.secretId).toMatch(/\/secrets\//);
      encLinks.push(out);
    }
  });

  it('every link decrypts to its plaintext model', async () => {
    for (let i = 0; i <= depth; i++) {
      const got = await decrypted(encLinks[i]!);
      expect(got.length).toBe(SIZE);
      expect(firstDiff4k(got, models[i]!)).toBe(-1);
    }
  });

  it("each link is a differencing VHD naming its encrypted parent and holding exactly the child's blocks, shifted", async () => {
    for (let i = 1; i <= depth; i++) {
      const link = await openImage(encLinks[i]!, { withoutParent: true });
      const plain = await openImage(plainLinks[i]!, { withoutParent: true });
      try {
        expect(link).toBeInstanceOf(SparseVhdImage);
        const l = link as SparseVhdImage;
        const c = plain as SparseVhdImage;
        const h = link.dynamicHeader!;
        expect(h.parentUniqueId).toBe(Buffer.from(vhdUuidOf(encLinks[i - 1]!)).toString('hex').replace(/^(.{8})(.{4})(.{4})(.{4})/, '$1-$2-$3-$4-'));
        expect(h.parentUnicodeName).toBe(`${kind}-${i === 1 ? 'base' : `c${i - 1}`}.vhd`);
        expect(h.parentTimestamp).toBe(Math.floor(statSync(encLinks[i - 1]!).mtimeMs / 1000) - 946684800);
        const codes = h.parentLocators.map((x) => x.platformCode).filter((x) => x !== 0);
        expect(codes).toEqual([0x57327275, 0x57326b75]);
        expect(link.virtualSize).toBe(BigInt(SIZE + D));
        const want: number[] = [];
        for (let b = 0; b < c.blockCount; b++) if (c.ownBlockSector(b) !== null) want.push(b + D / BS);
        const got: number[] = [];
        for (let b = 0; b < l.blockCount; b++) if (l.ownBlockSector(b) !== null) got.push(b);
        expect(got).toEqual(want);
        // At most one block (and its bitmap) larger per allocated child block.
        expect(statSync(encLinks[i]!).size).toBeLessThanOrEqual(statSync(plainLinks[i]!).size + want.length * (BS + 512));
      } finally {
        await link.close();
        await plain.close();
      }
    }
  });

  it('libvhdi reads every encrypted link to the ciphertext our reader reads', async () => {
    for (let i = 1; i <= depth; i++) {
      const ours = await openImage(encLinks[i]!);
      const mine = await readAll(ours);
      await ours.close();
      expect(firstDiff4k(libvhdiRead(encLinks.slice(0, i + 1)), mine)).toBe(-1);
    }
  });

  it('serve + nbdcopy gives the top link\'s plaintext', async () => {
    const srv = await startServe([encLinks[depth]!], 30_000, { ...TOOL_ENV, VHDCRYPT_VAULT: join(dir, 'vault') });
    try {
      const out = join(dir, `${kind}-nbd.raw`);
      const r = spawnSync('nbdcopy', [srv.uri, out], { env: TOOL_ENV, encoding: 'utf8' });
      expect(r.stderr).toBe('');
      expect(firstDiff4k(readFileSync(out), models[depth]!)).toBe(-1);
    } finally {
      await srv.stop();
    }
  });

  it('info describes the chain link by link, and the base\'s vault secret opens it', async () => {
    const d = await describeImage(encLinks[depth]!);
    expect(d.container).toBe(depth > 0 ? 'vhd-differencing' : `vhd-${kind}`);
    expect(d.chain.map((l) => l.path)).toEqual([...encLinks].reverse());
    for (let i = 0; i + 1 < d.chain.length; i++) expect(d.chain[i]!.parent?.uuid).toBe(d.chain[i + 1]!.uuid);
    expect(d.secret?.via).toBe('token');
    const cli = spawnSync(process.execPath, [join(ROOT, 'bin/vhdcrypt.js'), 'info', encLinks[depth]!], { encoding: 'utf8', env: { ...process.env, VHDCRYPT_VAULT: join(dir, 'vault') } });
    expect(cli.status).toBe(0);
    expect(cli.stdout).toContain(`link ${depth}:`);
  });

  it('verify: structure without a key; with it, every flipped byte, swapped block and deleted BAT entry, by link and offset', async () => {
    const ok = cliRun(['verify', encLinks[depth]!]);
    expect(ok.status, ok.stderr).toBe(0);
    expect(ok.stdout).toContain('structure only');
    const okBlocks = cliRun(['verify', encLinks[depth]!, '--blocks', '--json']);
    expect(okBlocks.status, okBlocks.stderr).toBe(0);
    const rep = JSON.parse(okBlocks.stdout) as { ok: boolean; links: Array<{ path: string; blocksChecked: number }> };
    expect(rep.ok).toBe(true);
    expect(rep.links.map((l) => l.path)).toEqual([...encLinks].reverse());
    expect(rep.links.every((l) => l.blocksChecked > 0)).toBe(true);
    let n = 0;
    /** A copy of the chain in its own directory, one link of it damaged by `damage`; returns the verify report of its top. */
    const damaged = async (link: number, damage: (file: Buffer, l: SparseVhdImage | null) => string) => {
      const to = join(dir, `${kind}-vt${n++}`);
      mkdirSync(to);
      for (const f of encLinks) {
        copyFileSync(f, join(to, basename(f)));
        copyFileSync(f + '.chain-manifest', join(to, basename(f) + '.chain-manifest'));
      }
      const file = join(to, basename(encLinks[link]!));
      const img = await openImage(file, { withoutParent: true });
      const bytes = readFileSync(file);
      const want = damage(bytes, img instanceof SparseVhdImage ? img : null);
      await img.close();
      writeFileSync(file, bytes);
      const r = await verifyImage(join(to, basename(encLinks[depth]!)), { blocks: true });
      expect(r.ok).toBe(false);
      const lr = r.links.find((x) => x.path === file)!;
      expect(lr.problems.join('; ')).toContain(want);
      for (const other of r.links) if (other !== lr) expect(other.problems).toEqual([]);
      return file;
    };
    // Payload blocks (a damaged LUKS header region is another matter: the chain no longer unlocks).
    const held = (l: SparseVhdImage) => Array.from({ length: l.blockCount }, (_, b) => b).filter((b) => b >= D / BS && l.ownBlockSector(b) !== null);
    const dataAt = (l: SparseVhdImage, b: number) => l.ownBlockSector(b)! * 512 + l.sectorBitmapBytes;
    for (let i = 0; i <= depth; i++) {
      // One flipped byte, in a block of every link (a fixed base: somewhere in its data).
      await damaged(i, (f, l) => {
        if (!l) {
          f[D + 5 * MiB + 77]! ^= 1;
          return `block ${(D + 4 * MiB) / BS} (offset ${D + 4 * MiB}) changed`;
        }
        const b = held(l).at(-1)!;
        f[dataAt(l, b) + 4097]! ^= 0x40;
        return `block ${b} (offset ${b * BS}) changed`;
      });
    }
    const sparse = kind === 'dynamic' ? [0, depth] : [1];
    for (const i of sparse) {
      // Two BAT entries swapped.
      await damaged(i, (f, l) => {
        const [a, b] = held(l!);
        const bat = Number(l!.dynamicHeader!.tableOffset);
        const ea = f.readUInt32BE(bat + a! * 4);
        f.writeUInt32BE(f.readUInt32BE(bat + b! * 4), bat + a! * 4);
        f.writeUInt32BE(ea, bat + b! * 4);
        return `block ${a} (offset ${a! * BS}) holds the data of block ${b} (offset ${b! * BS})`;
      });
      // One BAT entry deleted.
      await damaged(i, (f, l) => {
        const b = held(l!).at(-1)!;
        f.writeUInt32BE(0xffffffff, Number(l!.dynamicHeader!.tableOffset) + b * 4);
        return `block ${b} (offset ${b * BS}) is missing`;
      });
    }
    // The CLI's exit status for a damaged chain is 3, and without a key it still checks structure.
    const top = join(dir, `${kind}-vt0`, basename(encLinks[depth]!));
    const bad = cliRun(['verify', top, '--blocks']);
    expect(bad.status).toBe(3);
    expect(bad.stdout).toContain('DAMAGED');
    expect(cliRun(['verify', top]).status).toBe(0);
  });

  it('serve --writable writes into the top link only', async () => {
    const before = encLinks.slice(0, depth).map((f) => readFileSync(f));
    const srv = await startServe([encLinks[depth]!, '--writable'], 30_000, { ...TOOL_ENV, VHDCRYPT_VAULT: join(dir, 'vault') });
    try {
      // An unaligned write over parent data and one into a hole of every link.
      const r = spawnSync('qemu-io', ['-f', 'raw', '-c', 'write -q -P 0x5a 9000 5000', '-c', `write -q -P 0x6b ${36 * MiB + 1000} 3000`, srv.uri], { env: TOOL_ENV, encoding: 'utf8' });
      expect(r.status, r.stderr).toBe(0);
    } finally {
      await srv.stop();
    }
    const model = Uint8Array.from(models[depth]!);
    model.fill(0x5a, 9000, 14000);
    model.fill(0x6b, 36 * MiB + 1000, 36 * MiB + 4000);
    encLinks.slice(0, depth).forEach((f, i) => expect(readFileSync(f).equals(before[i]!)).toBe(true));
    expect(firstDiff4k(await decrypted(encLinks[depth]!), model)).toBe(-1);
  });
});

describe('refusals', () => {
  it('a child whose virtual size differs from the encrypted parent is ENGINE_DELTA_MISMATCH, and nothing is left', async () => {
    const base = p('sz-base.vhd');
    qemuBase(base, 'dynamic');
    await encryptImage(base, e('sz-base.vhd'), { vault });
    const other = p('sz-other.vhd');
    run('qemu-img', ['create', '-q', '-f', 'vpc', '-o', 'subformat=dynamic,force_size=on', other, String(SIZE + BS)]);
    const m = new DiffModel(new Uint8Array(SIZE + BS));
    m.write(4096, patternBytes(4096, 1));
    writeDifferencingVhd(p('sz-c1.vhd'), { parent: other, size: SIZE + BS, blockSize: BS, model: m.model, held: m.held });
    await expect(encryptImage(p('sz-c1.vhd'), e('sz-c1.vhd'), { parentImage: e('sz-base.vhd') })).rejects.toMatchObject({ code: 'ENGINE_DELTA_MISMATCH' });
    expect(() => statSync(e('.sz-c1.vhd.vhdcrypt-tmp'))).toThrow();
    // A source that is not a differencing VHD.
    await expect(encryptImage(base, e('sz-x.vhd'), { parentImage: e('sz-base.vhd') })).rejects.toMatchObject({ code: 'ENGINE_DELTA_MISMATCH' });
    // Options that would choose another volume.
    await expect(encryptImage(p('sz-c1.vhd'), e('sz-y.vhd'), { parentImage: e('sz-base.vhd'), format: 'luks1' })).rejects.toMatchObject({ code: 'ENGINE_BAD_ARGUMENT' });
  });
});

describe('encrypt --chain', () => {
  const cli = (args: string[]) => spawnSync(process.execPath, [join(ROOT, 'bin/vhdcrypt.js'), ...args], { encoding: 'utf8', env: { ...process.env, VHDCRYPT_VAULT: join(dir, 'vault') } });

  it('encrypts every link into OUTDIR parents first, keeping names, and reuses the links already there', async () => {
    mkdirSync(join(dir, 'ch'));
    mkdirSync(join(dir, 'ch-out'));
    const base = join(dir, 'ch', 'base.vhd');
    const models = [qemuBase(base, 'dynamic')];
    const files = [base];
    const addLink = (i: number) => {
      const m = new DiffModel(models[i - 1]!);
      m.write(i * 3 * MiB + 700, patternBytes(5000 + i, 20 + i));
      m.write(34 * MiB + i * 4096, patternBytes(512, 30 + i));
      const f = join(dir, 'ch', `inc${i}.vhd`);
      writeDifferencingVhd(f, { parent: files[i - 1]!, size: SIZE, blockSize: BS, model: m.model, held: m.held });
      models.push(m.model);
      files.push(f);
    };
    addLink(1);
    addLink(2);
    const r = cli(['encrypt', files[2]!, join(dir, 'ch-out'), '--chain', '--json']);
    expect(r.status, r.stderr).toBe(0);
    const links = (JSON.parse(r.stdout) as { links: Array<{ source: string; destination: string; reused: boolean; container?: string }> }).links;
    expect(links.map((l) => [l.source, l.destination, l.reused])).toEqual(files.map((f) => [f, join(dir, 'ch-out', f.split('/').pop()!), false]));
    expect(links.map((l) => l.container)).toEqual(['vhd-dynamic', 'vhd-differencing', 'vhd-differencing']);
    expect(firstDiff4k(await decrypted(links[2]!.destination), models[2]!)).toBe(-1);
    // The next incremental: only it is encrypted; the links already there are kept byte for byte.
    const kept = links.map((l) => readFileSync(l.destination));
    addLink(3);
    const again = cli(['encrypt', files[3]!, join(dir, 'ch-out'), '--chain', '--json']);
    expect(again.status, again.stderr).toBe(0);
    const links2 = (JSON.parse(again.stdout) as { links: Array<{ destination: string; reused: boolean }> }).links;
    expect(links2.map((l) => l.reused)).toEqual([true, true, true, false]);
    kept.forEach((b, i) => expect(readFileSync(links[i]!.destination).equals(b)).toBe(true));
    expect(firstDiff4k(await decrypted(links2[3]!.destination), models[3]!)).toBe(-1);
    // --chain into a file is a usage error.
    expect(cli(['encrypt', files[3]!, files[0]!, '--chain']).status).toBe(2);
  });
});

describe('merge on ciphertext', () => {
  let models: Uint8Array[];
  let enc: string[];
  let mdir: string;
  /** The whole virtual disk of an encrypted image (ciphertext) as our reader reads it. */
  const cipherOf = async (file: string) => {
    const img = await openImage(file);
    try {
      return await readAll(img);
    } finally {
      await img.close();
    }
  };
  /** A copy of the encrypted chain (with manifests) in a new directory. */
  const copyChain = (name: string) => {
    const to = join(dir, name);
    mkdirSync(to);
    for (const f of enc) for (const x of [f, f + '.chain-manifest']) copyFileSync(x, join(to, basename(x)));
    return (f: string) => join(to, basename(f));
  };

  beforeAll(async () => {
    mdir = join(dir, 'm');
    mkdirSync(join(mdir, 'out'), { recursive: true });
    const base = join(mdir, 'base.vhd');
    models = [qemuBase(base, 'dynamic')];
    const files = [base];
    const writes: Array<Array<[number, Uint8Array]>> = [
      [[4096 + 100, patternBytes(3000, 41)], [10 * MiB + 512, patternBytes(1024, 42)], [12 * MiB, patternBytes(BS, 43)], [26 * MiB + 4096, patternBytes(8192, 44)]],
      [[4096 + 2000, patternBytes(5000, 45)], [12 * MiB + 3 * 4096 + 7, patternBytes(9000, 46)], [30 * MiB + 1536, patternBytes(512, 47)], [36 * MiB, patternBytes(2 * BS, 48)], [1, patternBytes(7, 49)]],
    ];
    for (let i = 1; i <= 2; i++) {
      const m = new DiffModel(models[i - 1]!);
      for (const [off, data] of writes[i - 1]!) m.write(off, data);
      const f = join(mdir, `inc${i}.vhd`);
      writeDifferencingVhd(f, { parent: files[i - 1]!, size: SIZE, blockSize: BS, model: m.model, held: m.held });
      models.push(m.model);
      files.push(f);
    }
    enc = (await encryptChain(files[2]!, join(mdir, 'out'), { vault })).map((l) => l.destination);
  });

  it("merges the top link into its parent without the key: the parent's payload is the encryption of the merged plaintext", async () => {
    const at = copyChain('m-plain');
    const before = await cipherOf(at(enc[2]!));
    const r = await mergeImage(at(enc[2]!));
    expect(r.parent).toBe(at(enc[1]!));
    expect(r.manifest).toBe('removed');
    expect(statSync(at(enc[2]!), { throwIfNoEntry: false })).toBeUndefined();
    // The merged link reads the same ciphertext the chain read: every sector is what encrypting the merged plaintext gives.
    expect(firstDiff4k(await cipherOf(at(enc[1]!)), before)).toBe(-1);
    // And by node:crypto as the XTS oracle: each allocated sector decrypts to the merged plaintext.
    const img = await openImage(at(enc[1]!));
    const u = await unlockImage(img);
    try {
      const cipher = await readAll(img);
      let checked = 0;
      for await (const ext of img.extents()) {
        if (!ext.allocated) continue;
        for (let o = Math.max(Number(ext.offset), D); o < Number(ext.offset + ext.length); o += 4096) {
          const plain = oracleDecryptSector(u.volumeKey, BigInt((o - D) / 512), cipher.subarray(o, o + 4096));
          expect(Buffer.from(plain).equals(Buffer.from(models[2]!.subarray(o - D, o - D + 4096)))).toBe(true);
          checked++;
        }
      }
      expect(checked).toBeGreaterThan(0);
    } finally {
      u.volumeKey.fill(0);
      await img.close();
    }
    expect(firstDiff4k(await decrypted(at(enc[1]!)), models[2]!)).toBe(-1);
    // No key, no seal: verify says the merged link has no manifest.
    const v = await verifyImage(at(enc[1]!), { blocks: true });
    expect(v.links[0]!.problems.join(';')).toContain('no manifest');
  });

  it('with --seal verifies both links, then seals the parent: verify --blocks is clean, down to a merged base', async () => {
    const at = copyChain('m-seal');
    const r1 = await mergeImage(at(enc[2]!), { seal: true });
    expect(r1.manifest).toBe('sealed');
    const r2 = cliRun(['merge', at(enc[1]!), '--seal', '--json']);
    expect(r2.status, r2.stderr).toBe(0);
    expect(firstDiff4k(await decrypted(at(enc[0]!)), models[2]!)).toBe(-1);
    const v = cliRun(['verify', at(enc[0]!), '--blocks']);
    expect(v.status, v.stdout).toBe(0);
    // A damaged link is not merged (and so never sealed).
    const at2 = copyChain('m-bad');
    const f = readFileSync(at2(enc[2]!));
    f[f.length - 4096]! ^= 1;
    writeFileSync(at2(enc[2]!), f);
    await expect(mergeImage(at2(enc[2]!), { seal: true })).rejects.toMatchObject({ code: 'ENGINE_VERIFY_FAILED' });
  });

  it('--into-child: the parent goes into the child, which takes its place, down to a dynamic image over nothing', async () => {
    const at = copyChain('m-into');
    const r1 = await mergeImage(at(enc[2]!), { intoChild: true, seal: true });
    expect(r1.manifest).toBe('sealed');
    expect([r1.merged, r1.removed]).toEqual([at(enc[2]!), at(enc[1]!)]);
    expect(statSync(at(enc[1]!), { throwIfNoEntry: false })).toBeUndefined();
    const d = await describeImage(at(enc[2]!));
    expect(d.chain.map((l) => l.path)).toEqual([at(enc[2]!), at(enc[0]!)]);
    expect(d.chain[0]!.parent).toMatchObject({ uuid: d.chain[1]!.uuid, name: basename(enc[0]!) });
    expect(firstDiff4k(await decrypted(at(enc[2]!)), models[2]!)).toBe(-1);
    const r2 = cliRun(['merge', at(enc[2]!), '--into-child', '--seal']);
    expect(r2.status, r2.stderr).toBe(0);
    const alone = await openImage(at(enc[2]!));
    expect(alone.format).toBe('vhd-dynamic');
    await alone.close();
    expect(firstDiff4k(await decrypted(at(enc[2]!)), models[2]!)).toBe(-1);
    expect(cliRun(['verify', at(enc[2]!), '--blocks']).status).toBe(0);
    expect(firstDiff4k(libvhdiRead([at(enc[2]!)]), await cipherOf(at(enc[2]!)))).toBe(-1);
  });

  it.each([false, true])('kill -9 at random points of a merge (into child: %s), then the same command again: the same image, and the chain reads correctly meanwhile', async (into) => {
    const ref = copyChain(`m-ref${into}`);
    await mergeImage(ref(enc[2]!), { intoChild: into });
    const kept = into ? enc[2]! : enc[1]!;
    const want = await cipherOf(ref(kept));
    for (let round = 0; round < 2; round++) {
      const at = copyChain(`m-kill${into}${round}`);
      const blocks = (await openImage(at(into ? enc[1]! : enc[2]!), { withoutParent: true })) as SparseVhdImage;
      let held = 0;
      for (let b = 0; b < blocks.blockCount; b++) if (blocks.ownBlockSector(b) !== null) held++;
      await blocks.close();
      const killAt = 1 + Math.floor(Math.random() * (held - 1));
      const killed = await new Promise<boolean>((res, rej) => {
        const child = spawn(process.execPath, [join(ROOT, 'test/fixtures/engine/merge-child.mjs'), at(enc[2]!), into ? 'into' : 'parent'], { stdio: ['ignore', 'pipe', 'pipe'] });
        let n = 0;
        let k = false;
        let err = '';
        child.stderr.on('data', (d: Buffer) => (err += d.toString()));
        createInterface({ input: child.stdout }).on('line', (line) => {
          if (line.startsWith('P ') && ++n >= killAt && !k) {
            k = true;
            child.kill('SIGKILL');
          }
        });
        child.on('error', rej);
        child.on('exit', (code) => (k || code === 0 ? res(k) : rej(new Error(err))));
      });
      expect(killed).toBe(true);
      // Interrupted: the journal is there, and the chain still reads the merged plaintext.
      expect(statSync(mergeJournalPath(at(enc[2]!))).isFile()).toBe(true);
      expect(firstDiff4k(await decrypted(at(enc[2]!)), models[2]!)).toBe(-1);
      const r = await mergeImage(at(enc[2]!), { intoChild: into });
      expect(r.resumed).toBe(true);
      expect(firstDiff4k(await cipherOf(at(kept)), want)).toBe(-1);
      expect(firstDiff4k(await decrypted(at(kept)), models[2]!)).toBe(-1);
      expect(statSync(mergeJournalPath(at(enc[2]!)), { throwIfNoEntry: false })).toBeUndefined();
    }
  });
});
