/**
 * The chain manifest, version 2: per-manifest salt, HKDF-SHA-256 keys, GMAC block tags (NIST SP 800-38D) taken by
 * the workers (and inline) as they write and, for the LUKS header region, from the bytes the engine wrote. Every tag
 * and the MAC are recomputed here from the file with node:crypto (the oracle: HKDF, AES-256-GCM with the block as
 * AAD, HMAC); verify catches a flipped byte in a data block and in the header region, a swapped pair of blocks and a
 * missing block; two manifests of one volume never share a salt. Version 1 manifests (written here the way earlier
 * releases wrote them) keep verifying and keep catching damage; unknown versions and malformed salts are refused.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { copyFileSync, readFileSync, writeFileSync } from 'node:fs';
import { createCipheriv, createHash, createHmac, hkdfSync, randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { CryptPool, encryptImage, unlockImage, verifyImage, writeManifest } from '../src/engine/index.js';
import { newManifestKeys, sealedSourceUuid, wipeManifestKeys, writtenRegionTags } from '../src/engine/file-jobs/chain-manifest.js';
import { createImage, openImage, SparseVhdImage, type WritableImage } from '../src/image/index.js';
import { makeRaw, PBKDF2_FAST, rawToVhd, removeDir, tempDir } from './fixtures/engine/helpers.js';

const MiB = 1 << 20;
const PIECE = 2 * MiB;
/** LUKS2's default data offset: the header region. */
const D = 16 * MiB;
const SIZE = 24 * MiB;
let dir: string;
let passphraseFile: string;

beforeAll(() => {
  dir = tempDir('vhdcrypt-manifest-');
  passphraseFile = join(dir, 'pass');
  writeFileSync(passphraseFile, 'correct horse');
});
afterAll(() => removeDir(dir));

interface ManifestJson {
  format: string;
  version: number;
  salt?: string;
  link: { uuid: string | null; container: string; virtualSize: string; blockSize: number; parent: unknown };
  volume: { luksUuid: string; dataOffset: string; sectorSize: number };
  metadataSha256: string;
  sourceUuid: string | null;
  blocks: Array<[number, string]>;
  mac: string;
}

const manifestOf = (file: string) => JSON.parse(readFileSync(file + '.chain-manifest', 'utf8')) as ManifestJson;

/** The volume key and LUKS UUID of an encrypted image, unlocked with the test's passphrase. */
async function volumeOf(file: string): Promise<{ key: Uint8Array; uuid: string }> {
  const img = await openImage(file);
  try {
    const u = await unlockImage(img, { passphraseFile });
    return { key: u.volumeKey, uuid: u.info!.uuid };
  } finally {
    await img.close();
  }
}

/** The oracle: GMAC of `parts` under `key`, IV = block index (8 bytes big-endian) + 4 zero bytes. */
function gmac(key: Uint8Array, index: number, parts: Uint8Array[]): string {
  const iv = Buffer.alloc(12);
  iv.writeBigUInt64BE(BigInt(index));
  const c = createCipheriv('aes-256-gcm', key, iv);
  c.setAAD(Buffer.concat(parts));
  c.final();
  return c.getAuthTag().toString('hex');
}

/** The oracle's keys of a v2 manifest: [HMAC key, GMAC key]. */
function v2Keys(volumeKey: Uint8Array, uuid: string, salt: string): [Buffer, Buffer] {
  const okm = Buffer.from(hkdfSync('sha256', volumeKey, Buffer.from(uuid), `vhdcrypt chain manifest v2 ${salt}`, 64));
  return [okm.subarray(0, 32), okm.subarray(32)];
}

const digestJson = (m: ManifestJson) =>
  JSON.stringify(
    m.version === 1
      ? { format: m.format, version: m.version, link: m.link, volume: m.volume, metadataSha256: m.metadataSha256, sourceUuid: m.sourceUuid, blocks: m.blocks }
      : { format: m.format, version: m.version, salt: m.salt, link: m.link, volume: m.volume, metadataSha256: m.metadataSha256, sourceUuid: m.sourceUuid, blocks: m.blocks },
  );

/** The blocks of a fixed VHD file as a manifest covers them: each 2 MiB of its data (the file less its footer). */
function fixedPieces(file: string): Uint8Array[] {
  const bytes = readFileSync(file);
  const data = bytes.subarray(0, bytes.length - 512);
  const out: Uint8Array[] = [];
  for (let o = 0; o < data.length; o += PIECE) out.push(data.subarray(o, o + PIECE));
  return out;
}

/** The sector bitmap and data of every block a dynamic link holds (the image's reader finds them). */
async function dynamicBlocks(file: string): Promise<Array<[number, Uint8Array[]]>> {
  const l = (await openImage(file, { withoutParent: true })) as SparseVhdImage;
  try {
    const out: Array<[number, Uint8Array[]]> = [];
    for (let b = 0; b < l.blockCount; b++) {
      const map = await l.ownBitmap(b);
      if (map === null) continue;
      const data = new Uint8Array(l.blockSize!);
      await l.readOwnData(b, 0, data);
      out.push([b, [Uint8Array.from(map), data]]);
    }
    return out;
  } finally {
    await l.close();
  }
}

/** Replace a link's manifest with a version 1 one, written the way earlier releases did (SHA-256 blocks, v1 HKDF). */
async function writeV1(file: string, volumeKey: Uint8Array, uuid: string): Promise<void> {
  const v2 = manifestOf(file);
  const blocks: Array<[number, string]> =
    v2.link.container === 'vhd-fixed'
      ? fixedPieces(file).map((p, b) => [b, createHash('sha256').update(p).digest('hex')])
      : (await dynamicBlocks(file)).map(([b, parts]) => [b, createHash('sha256').update(Buffer.concat(parts)).digest('hex')]);
  const m: ManifestJson = { format: v2.format, version: 1, link: v2.link, volume: v2.volume, metadataSha256: v2.metadataSha256, sourceUuid: v2.sourceUuid, blocks, mac: '' };
  const key = Buffer.from(hkdfSync('sha256', volumeKey, Buffer.from(uuid), 'vhdcrypt chain manifest v1', 32));
  m.mac = createHmac('sha256', key).update(digestJson(m)).digest('hex');
  const { mac, ...rest } = m;
  writeFileSync(file + '.chain-manifest', JSON.stringify({ ...rest, mac }) + '\n');
}

/** A fixed VHD source of random data. */
async function fixedSource(name: string): Promise<string> {
  const path = join(dir, name);
  const src = (await createImage(path, { format: 'vhd-fixed', virtualSize: BigInt(SIZE) })) as WritableImage;
  await src.write(0n, new Uint8Array(randomBytes(SIZE)));
  await src.close();
  return path;
}

/** Flip one bit of a file at `at`. */
function flip(file: string, at: number): void {
  const b = readFileSync(file);
  b[at]! ^= 0x10;
  writeFileSync(file, b);
}

/** A copy of an encrypted link and its manifest under a new name. */
function copyLink(file: string, name: string): string {
  const to = join(dir, name);
  copyFileSync(file, to);
  copyFileSync(file + '.chain-manifest', to + '.chain-manifest');
  return to;
}

const problemsOf = async (file: string) => {
  const r = await verifyImage(file, { passphraseFile, blocks: true });
  return { ok: r.ok, problems: r.links.flatMap((l) => l.problems).concat(r.problems) };
};

describe('manifest v2 of a fixed VHD output', () => {
  const outs: Record<'workers' | 'inline', string> = { workers: '', inline: '' };

  beforeAll(async () => {
    const src = await fixedSource('fixed-src.vhd');
    for (const [mode, threads] of [
      ['workers', 2],
      ['inline', 1],
    ] as const) {
      outs[mode] = join(dir, `fixed-${mode}.vhd`);
      const r = await encryptImage(src, outs[mode], { passphraseFile, kdf: PBKDF2_FAST, threads });
      expect(r.threads).toBe(threads);
    }
  });

  it.each(['workers', 'inline'] as const)('%s: every block tag (header region and payload) and the MAC are what node:crypto computes from the file', async (mode) => {
    const out = outs[mode];
    const m = manifestOf(out);
    expect(m.version).toBe(2);
    expect(m.salt).toMatch(/^[0-9a-f]{32}$/);
    const vol = await volumeOf(out);
    try {
      const [macKey, tagKey] = v2Keys(vol.key, vol.uuid, m.salt!);
      const pieces = fixedPieces(out);
      expect(pieces.length).toBe((D + SIZE) / PIECE);
      expect(m.blocks).toEqual(pieces.map((p, b) => [b, gmac(tagKey, b, [p])]));
      const file = readFileSync(out);
      expect(m.metadataSha256).toBe(createHash('sha256').update(file.subarray(file.length - 512)).digest('hex'));
      expect(m.mac).toBe(createHmac('sha256', macKey).update(digestJson(m)).digest('hex'));
    } finally {
      vol.key.fill(0);
    }
    expect((await problemsOf(out)).ok).toBe(true);
  });

  it('a run interrupted and resumed (its header and done batches read back, the rest tagged by the workers): the same tags node:crypto computes', async () => {
    const src = join(dir, 'fixed-src.vhd');
    const out = join(dir, 'fixed-resumed.vhd');
    const ac = new AbortController();
    const opts = { passphraseFile, kdf: PBKDF2_FAST, threads: 2, batchBytes: 4 * MiB, checkpointBytes: 4 * MiB };
    await expect(encryptImage(src, out, { ...opts, signal: ac.signal, onProgress: () => ac.abort(new Error('test abort')) })).rejects.toMatchObject({ code: 'ENGINE_ABORTED' });
    // Some batches were done before the interrupt: the resumed run reads them back for the manifest.
    expect((JSON.parse(readFileSync(join(dir, '.fixed-resumed.vhd.vhdcrypt-journal'), 'utf8')) as { doneBatches: number }).doneBatches).toBeGreaterThan(0);
    expect((await encryptImage(src, out, { ...opts, resume: true })).resumed).toBe(true);
    const m = manifestOf(out);
    const vol = await volumeOf(out);
    try {
      const [, tagKey] = v2Keys(vol.key, vol.uuid, m.salt!);
      expect(m.blocks).toEqual(fixedPieces(out).map((p, b) => [b, gmac(tagKey, b, [p])]));
    } finally {
      vol.key.fill(0);
    }
    expect((await problemsOf(out)).ok).toBe(true);
  });

  it('verify catches a flipped byte in a data block, in a hole and in a header copy of the LUKS header region', async () => {
    const cases: Array<[number, number]> = [
      [D + 5 * MiB + 77, (D + 4 * MiB) / PIECE],
      // Inside the keyslots area, past the keyslot: zeros the engine never wrote (a hole in the file).
      [10 * MiB + 123, 5],
      // The second LUKS2 binary header (at 16 KiB): the volume still opens from the first.
      [16 * 1024 + 300, 0],
    ];
    for (const [at, block] of cases) {
      const f = copyLink(outs.workers, `flip-${at}.vhd`);
      expect(manifestOf(f).version).toBe(2);
      flip(f, at);
      const r = await problemsOf(f);
      expect(r.ok, String(at)).toBe(false);
      expect(r.problems, String(at)).toEqual([`block ${block} (offset ${block * PIECE}) changed`]);
    }
  });

  it('verify names a swapped pair of blocks', async () => {
    const f = copyLink(outs.inline, 'swap.vhd');
    expect(manifestOf(f).version).toBe(2);
    const b = readFileSync(f);
    const [x, y] = [D / PIECE + 1, D / PIECE + 4];
    const a = Buffer.from(b.subarray(x * PIECE, (x + 1) * PIECE));
    b.copy(b, x * PIECE, y * PIECE, (y + 1) * PIECE);
    a.copy(b, y * PIECE);
    writeFileSync(f, b);
    const r = await problemsOf(f);
    expect(r.problems).toEqual([
      `block ${x} (offset ${x * PIECE}) holds the data of block ${y} (offset ${y * PIECE}) (blocks swapped or moved)`,
      `block ${y} (offset ${y * PIECE}) holds the data of block ${x} (offset ${x * PIECE}) (blocks swapped or moved)`,
    ]);
  });

  it('two manifests of one volume have their own salts and tags, and both verify', async () => {
    const f = copyLink(outs.workers, 'resealed.vhd');
    const first = manifestOf(f);
    const vol = await volumeOf(f);
    const given = Uint8Array.from(vol.key);
    try {
      await writeManifest(f, vol.key, { luksUuid: vol.uuid, dataOffset: BigInt(D), sectorSize: 4096 }, first.sourceUuid);
      // writeManifest wipes only the keys it derived, never the volume key it was given.
      expect(Buffer.from(vol.key).equals(Buffer.from(given))).toBe(true);
    } finally {
      vol.key.fill(0);
    }
    const second = manifestOf(f);
    expect(second.salt).toMatch(/^[0-9a-f]{32}$/);
    expect(second.salt).not.toBe(first.salt);
    expect(second.blocks.every(([b, t], i) => b === first.blocks[i]![0] && t !== first.blocks[i]![1])).toBe(true);
    expect(second.metadataSha256).toBe(first.metadataSha256);
    expect((await problemsOf(f)).ok).toBe(true);
    writeFileSync(f + '.chain-manifest', JSON.stringify(first));
    expect((await problemsOf(f)).ok).toBe(true);
  });

  it('a version 1 manifest (SHA-256 blocks) still verifies, still catches a flipped byte, and still seals its source UUID', async () => {
    const f = copyLink(outs.workers, 'v1.vhd');
    const vol = await volumeOf(f);
    try {
      await writeV1(f, vol.key, vol.uuid);
      expect(manifestOf(f).version).toBe(1);
      expect(await sealedSourceUuid(f, vol.key, vol.uuid)).toBe(manifestOf(outs.workers).sourceUuid);
    } finally {
      vol.key.fill(0);
    }
    expect((await problemsOf(f)).ok).toBe(true);
    const g = copyLink(f, 'v1-flipped.vhd');
    flip(g, D + 9 * MiB + 5);
    expect((await problemsOf(g)).problems).toEqual([`block ${(D + 8 * MiB) / PIECE} (offset ${D + 8 * MiB}) changed`]);
    // Its swapped blocks are still named (a SHA-256 names the data wherever it lies).
    const s = copyLink(f, 'v1-swap.vhd');
    const b = readFileSync(s);
    const a = Buffer.from(b.subarray(D, D + PIECE));
    b.copy(b, D, D + PIECE, D + 2 * PIECE);
    a.copy(b, D + PIECE);
    writeFileSync(s, b);
    expect((await problemsOf(s)).problems.join('; ')).toContain(`block ${D / PIECE} (offset ${D}) holds the data of block ${D / PIECE + 1}`);
  });

  it('an unknown version, a v2 without a well-formed salt, JSON that is no object, a MAC with a tail: the malformed-manifest or bad-MAC finding and ENGINE_VERIFY_FAILED', async () => {
    const good = manifestOf(outs.workers);
    const vol = await volumeOf(outs.workers);
    try {
      const bad: unknown[] = [
        { ...good, version: 3 },
        { ...good, salt: 'zz'.repeat(16) },
        { ...good, salt: good.salt!.toUpperCase() },
        { ...good, salt: good.salt!.slice(2) },
        { ...good, salt: undefined },
        // Version 1 has no salt.
        { ...good, version: 1 },
        null,
        [good],
        'manifest',
      ];
      for (const [i, m] of bad.entries()) {
        const f = copyLink(outs.workers, `malformed-${i}.vhd`);
        writeFileSync(f + '.chain-manifest', JSON.stringify(m));
        const r = await problemsOf(f);
        expect(r.ok, String(i)).toBe(false);
        expect(r.problems.join('; '), String(i)).toContain('is not a vhdcrypt chain manifest');
        await expect(sealedSourceUuid(f, vol.key, vol.uuid), String(i)).rejects.toMatchObject({ code: 'ENGINE_VERIFY_FAILED' });
      }
      // The right MAC with something after it is not the MAC.
      const f = copyLink(outs.workers, 'mac-tail.vhd');
      writeFileSync(f + '.chain-manifest', JSON.stringify({ ...good, mac: `${good.mac}zz` }));
      expect((await problemsOf(f)).problems.join('; ')).toContain('its MAC does not verify');
      await expect(sealedSourceUuid(f, vol.key, vol.uuid)).rejects.toMatchObject({ code: 'ENGINE_VERIFY_FAILED' });
    } finally {
      vol.key.fill(0);
    }
  });
});

describe('manifest v2 of a dynamic VHD output', () => {
  let out: string;

  beforeAll(async () => {
    const raw = join(dir, 'dyn.raw');
    makeRaw(raw, SIZE, [
      [0, 3 * MiB],
      [8 * MiB + 4096, 64 * 1024],
      [14 * MiB, 5 * MiB],
    ]);
    rawToVhd(raw, join(dir, 'dyn-src.vhd'), 'dynamic');
    out = join(dir, 'dyn.vhd');
    await encryptImage(join(dir, 'dyn-src.vhd'), out, { passphraseFile, kdf: PBKDF2_FAST });
  });

  it('each held block\'s tag is GMAC of its bitmap and data, as node:crypto computes it', async () => {
    const m = manifestOf(out);
    expect(m.version).toBe(2);
    const vol = await volumeOf(out);
    try {
      const [, tagKey] = v2Keys(vol.key, vol.uuid, m.salt!);
      const held = await dynamicBlocks(out);
      expect(held.length).toBeGreaterThan(3);
      expect(m.blocks).toEqual(held.map(([b, parts]) => [b, gmac(tagKey, b, parts)]));
    } finally {
      vol.key.fill(0);
    }
    expect((await problemsOf(out)).ok).toBe(true);
  });

  it('verify names a missing block (BAT entry gone) and a swapped pair, and a v1 manifest of it verifies', async () => {
    const l = (await openImage(out, { withoutParent: true })) as SparseVhdImage;
    const bat = Number(l.dynamicHeader!.tableOffset);
    const held = Array.from({ length: l.blockCount }, (_, b) => b).filter((b) => b >= D / PIECE && l.ownBlockSector(b) !== null);
    await l.close();
    const [a, b] = [held[0]!, held.at(-1)!];
    const gone = copyLink(out, 'dyn-gone.vhd');
    const g = readFileSync(gone);
    g.writeUInt32BE(0xffffffff, bat + b * 4);
    writeFileSync(gone, g);
    expect((await problemsOf(gone)).problems).toEqual([`block ${b} (offset ${b * PIECE}) is missing (its BAT entry is gone)`]);
    const swapped = copyLink(out, 'dyn-swap.vhd');
    const s = readFileSync(swapped);
    const ea = s.readUInt32BE(bat + a * 4);
    s.writeUInt32BE(s.readUInt32BE(bat + b * 4), bat + a * 4);
    s.writeUInt32BE(ea, bat + b * 4);
    writeFileSync(swapped, s);
    expect((await problemsOf(swapped)).problems.join('; ')).toContain(`block ${a} (offset ${a * PIECE}) holds the data of block ${b} (offset ${b * PIECE})`);
    const v1 = copyLink(out, 'dyn-v1.vhd');
    const vol = await volumeOf(v1);
    try {
      await writeV1(v1, vol.key, vol.uuid);
    } finally {
      vol.key.fill(0);
    }
    expect((await problemsOf(v1)).ok).toBe(true);
  });
});

describe('the tags of a region written as ranges into a fresh file', () => {
  it('are the tags of the ranges\' bytes with zeros between them (what the file then reads), whatever the buffer holds elsewhere', () => {
    const volumeKey = new Uint8Array(randomBytes(64));
    const uuid = '3c9b7a51-2d40-4e8a-9d3c-0b5c6a7e8f90';
    const keys = newManifestKeys(volumeKey, uuid);
    try {
      const end = 6 * MiB;
      // Garbage outside the ranges: never written, so never tagged.
      const bytes = new Uint8Array(randomBytes(end));
      const ranges: Array<[number, number]> = [
        [3 * MiB - 10, 3 * MiB + 20],
        [100, 5000],
        [70_000, 70_001],
        [4 * MiB, 4 * MiB + 300_000],
      ];
      const file = new Uint8Array(end);
      for (const [s, e] of ranges) file.set(bytes.subarray(s, e), s);
      const [, tagKey] = v2Keys(volumeKey, uuid, keys.salt!);
      const got = writtenRegionTags(keys, bytes, ranges, PIECE, end);
      expect([...got]).toEqual([0, 1, 2].map((b) => [BigInt(b * PIECE), gmac(tagKey, b, [file.subarray(b * PIECE, (b + 1) * PIECE)])]));
    } finally {
      wipeManifestKeys(keys);
    }
  });
});

describe('the block tag key in the pool', () => {
  it('a job shares a copy of the tag key and endJob wipes that copy, never the caller\'s', async () => {
    const pool = new CryptPool({ inline: true });
    const key = new Uint8Array(randomBytes(64));
    const tagKey = new Uint8Array(randomBytes(32));
    const job = pool.startJob(key, tagKey);
    expect(Buffer.from(new Uint8Array(job.tagKey!)).equals(Buffer.from(tagKey))).toBe(true);
    await pool.endJob(job);
    await pool.destroy();
    expect(new Uint8Array(job.tagKey!).every((x) => x === 0)).toBe(true);
    expect(tagKey.some((x) => x !== 0)).toBe(true);
  });
});
