/**
 * Encrypted differencing chains: plaintext chains of depth 1 and 3 written by the tests' own differencing writer
 * (test/helpers/diff-vhd-writer.ts) over qemu-made fixed and dynamic bases, with writes covering parts of blocks
 * and parts of 4 KiB crypto sectors; each link encrypted as a delta over the encrypted image of its parent. Every
 * decrypted link equals the plaintext model; libvhdi (libyal, an implementation we did not write) reads our
 * encrypted links to the same ciphertext as our reader; serve + nbdcopy gives the model too.
 */
import { spawnSync } from 'node:child_process';
import { copyFileSync, createReadStream, createWriteStream, mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { pipeline } from 'node:stream/promises';
import { basename, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createEncryptStream, describeImage, encryptImage, verifyImage } from '../src/engine/index.js';
import { openImage, SparseVhdImage } from '../src/image/index.js';
import { openVault } from '../src/vault/index.js';
import { removeDir, run, tempDir } from './fixtures/engine/helpers.js';
import { DiffModel, vhdUuidOf, writeDifferencingVhd } from './helpers/diff-vhd-writer.js';
import { startServe } from './helpers/nbd-serve-cli.js';
import { TOOL_ENV } from './helpers/nbd-harness.js';
import { patternBytes, readAll } from './image-helpers.js';
import { BS, cliRun as cliAt, D, decrypted, firstDiff4k, libvhdiRead, MiB, qemuBase, ROOT, SIZE } from './helpers/delta-helpers.js';

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

const cliRun = (args: string[]) => cliAt(join(dir, 'vault'), args);

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

  it('libvhdi reads the encrypted chain to the ciphertext our reader reads', async () => {
    // The top link's read goes through every link below it (libvhdi follows each sector's bitmap down the chain).
    for (const i of [depth]) {
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
    const cli = spawnSync(process.execPath, [join(ROOT, 'bin/vhdcrypt.cjs'), 'info', encLinks[depth]!], { encoding: 'utf8', env: { ...process.env, VHDCRYPT_VAULT: join(dir, 'vault') } });
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
    // A link above the base that holds a block of the LUKS header region is a structural fault (found without a key).
    if (depth > 1) {
      const to = join(dir, `${kind}-vthdr`);
      mkdirSync(to);
      for (const f of encLinks) copyFileSync(f, join(to, basename(f)));
      const mid = await openImage(join(to, basename(encLinks[1]!)), { writable: true });
      await mid.write(BigInt(BS), new Uint8Array(4096).fill(7));
      await mid.close();
      const r = await verifyImage(join(to, basename(encLinks[depth]!)));
      expect(r.ok).toBe(false);
      expect(r.links.find((l) => l.path.endsWith(basename(encLinks[1]!)))!.problems.join(';')).toContain(`block 1 (offset ${BS}) lies in the LUKS header region`);
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
    // A child of another disk of the same size: the encrypted base's sealed manifest names the disk it encrypts.
    const stranger = p('sz-stranger.vhd');
    run('qemu-img', ['create', '-q', '-f', 'vpc', '-o', 'subformat=dynamic,force_size=on', stranger, String(SIZE)]);
    const m2 = new DiffModel(new Uint8Array(SIZE));
    m2.write(4096, patternBytes(4096, 2));
    writeDifferencingVhd(p('sz-c2.vhd'), { parent: stranger, size: SIZE, blockSize: BS, model: m2.model, held: m2.held });
    await expect(encryptImage(p('sz-c2.vhd'), e('sz-c2.vhd'), { parentImage: e('sz-base.vhd') })).rejects.toMatchObject({ code: 'ENGINE_DELTA_MISMATCH' });
    // A source that is not a differencing VHD.
    await expect(encryptImage(base, e('sz-x.vhd'), { parentImage: e('sz-base.vhd') })).rejects.toMatchObject({ code: 'ENGINE_DELTA_MISMATCH' });
    // Options that would choose another volume.
    await expect(encryptImage(p('sz-c1.vhd'), e('sz-y.vhd'), { parentImage: e('sz-base.vhd'), format: 'luks1' })).rejects.toMatchObject({ code: 'ENGINE_BAD_ARGUMENT' });
  });
});

describe('encrypt --chain', () => {
  const cli = (args: string[]) => spawnSync(process.execPath, [join(ROOT, 'bin/vhdcrypt.cjs'), ...args], { encoding: 'utf8', env: { ...process.env, VHDCRYPT_VAULT: join(dir, 'vault') } });

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

describe('createEncryptStream with parentImage', () => {
  it('a differencing VHD stream in, the encrypted delta out: the same ciphertext as encrypt --parent-image', async () => {
    mkdirSync(join(dir, 'st'));
    const base = join(dir, 'st', 'base.vhd');
    const model = qemuBase(base, 'dynamic');
    const encBase = join(dir, 'st', 'base.enc.vhd');
    await encryptImage(base, encBase, { vault });
    const m = new DiffModel(model);
    m.write(4096 + 100, patternBytes(3000, 61));
    m.write(10 * MiB + 512, patternBytes(1024, 62));
    m.write(20 * MiB + 4096, patternBytes(BS, 63));
    const child = join(dir, 'st', 'inc.vhd');
    writeDifferencingVhd(child, { parent: base, size: SIZE, blockSize: BS, model: m.model, held: m.held });
    const out = join(dir, 'st', 'inc.stream.enc.vhd');
    const s = createEncryptStream({ parentImage: encBase });
    await pipeline(createReadStream(child, { highWaterMark: 100_000 }), s, createWriteStream(out));
    expect(s.result?.container).toBe('vhd-differencing');
    expect(firstDiff4k(await decrypted(out), m.model)).toBe(-1);
    await encryptImage(child, join(dir, 'st', 'inc.file.enc.vhd'), { parentImage: encBase });
    const read = async (f: string) => {
      const img = await openImage(f);
      try {
        return await readAll(img);
      } finally {
        await img.close();
      }
    };
    expect(firstDiff4k(await read(out), await read(join(dir, 'st', 'inc.file.enc.vhd')))).toBe(-1);
  });
});
