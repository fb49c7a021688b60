/**
 * The stream API (createEncryptStream / createDecryptStream) against tools we
 * did not write: sources made by qemu-img/qemu-io, outputs read by qemu-img
 * (vpc container, and its luks driver on LUKS1), cryptsetup on a raw LUKS2
 * output, and the expected plaintext from `qemu-img convert -O raw` of the
 * source. The file API's output for the same source is the peer: same
 * layout, same plaintext. Needs `npx tsc -p tsconfig.json` (worker threads).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync, spawnSync } from 'node:child_process';
import { createDecipheriv, randomBytes } from 'node:crypto';
import { closeSync, createReadStream, createWriteStream, mkdtempSync, openSync, readFileSync, rmSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Readable, Writable, type Duplex } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { decryptImage } from '../src/engine/file-jobs/decrypt-image.js';
import { encryptImage } from '../src/engine/file-jobs/encrypt-image.js';
import { createEncryptStream, type StreamResult } from '../src/engine/streams/stream-encrypt.js';
import { createDecryptStream } from '../src/engine/streams/stream-decrypt.js';
import { readVolumeInfo } from '../src/luks/index.js';
import { unlockImage } from '../src/volume/index.js';
import { openImage } from '../src/image/index.js';
import { isVhdcryptError } from '../src/errors.js';

const MIB = 1 << 20;
const FAST = { type: 'pbkdf2', hash: 'sha256', iterations: 1000 } as const;
const PASS = 'stream test passphrase';
const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');

let dir: string;
let passFile: string;
let rawSrc: string; // 40 MiB with holes
let dynSrc: string; // qemu-made dynamic VHD of rawSrc
let fixedSrc: string; // qemu-made fixed VHD of rawSrc
let patternDyn: string; // qemu-io patterns in a qemu-img created dynamic disk, odd size
let model: Buffer; // qemu-img convert -O raw of the sources
let patternModel: Buffer;

function run(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

function p(name: string): string {
  return join(dir, name);
}

/** What qemu reads as the virtual disk of a vpc (or raw) file. */
function qemuRaw(path: string, format: 'vpc' | 'raw'): Buffer {
  const out = `${path}.qemu.raw`;
  rmSync(out, { force: true });
  run('qemu-img', ['convert', '-f', format, '-O', 'raw', path, out]);
  const b = readFileSync(out);
  rmSync(out);
  return b;
}

function qemuInfo(path: string): { format: string; 'virtual-size': number } {
  return JSON.parse(run('qemu-img', ['info', '-f', 'vpc', '--output=json', path])) as { format: string; 'virtual-size': number };
}

/** Virtual ranges holding data, from qemu-img map. */
function qemuMap(path: string): Array<[number, number]> {
  const j = JSON.parse(run('qemu-img', ['map', '-f', 'vpc', '--output=json', path])) as Array<{ start: number; length: number; data: boolean }>;
  const out: Array<[number, number]> = [];
  for (const e of j.filter((x) => x.data)) {
    const last = out[out.length - 1];
    if (last && last[0] + last[1] === e.start) last[1] += e.length;
    else out.push([e.start, e.length]);
  }
  return out;
}

/** Pipe a file through a stream into a file; resolves with the stream's result. */
async function through(src: string, s: Duplex & { result: StreamResult | null }, dst: string, chunk?: number): Promise<StreamResult> {
  const input = chunk ? oddChunks(src, chunk) : createReadStream(src);
  await pipeline(input, s, createWriteStream(dst));
  expect(s.result).not.toBeNull();
  return s.result!;
}

/** A file read in chunks of a size that lines up with nothing (exercises every boundary). */
function oddChunks(path: string, size: number): Readable {
  return Readable.from(
    (async function* () {
      for await (const c of createReadStream(path, { highWaterMark: 64 * 1024 })) {
        const b = c as Buffer;
        for (let o = 0; o < b.length; o += size) yield b.subarray(o, Math.min(o + size, b.length));
      }
    })(),
  );
}

function decryptedByEngine(enc: string, name: string, opts: Parameters<typeof decryptImage>[2] = {}): Promise<Buffer> {
  const out = p(name);
  return decryptImage(enc, out, { outFormat: 'raw', ...opts }).then(() => {
    const b = readFileSync(out);
    rmSync(out);
    return b;
  });
}

async function expectCode(promise: Promise<unknown>, code: string): Promise<void> {
  let caught: unknown = null;
  try {
    await promise;
  } catch (e) {
    caught = e;
  }
  expect(caught, `expected ${code}`).not.toBeNull();
  expect(isVhdcryptError(caught) ? caught.code : String(caught)).toBe(code);
}

/** Recompute a VHD footer's checksum (one's complement of the byte sum, spec "Hard Disk Footer Format") after an edit. */
function resealFooter(b: Buffer, at: number): void {
  b.writeUInt32BE(0, at + 64);
  let sum = 0;
  for (let i = at; i < at + 512; i++) sum += b[i]!;
  b.writeUInt32BE(~sum >>> 0, at + 64);
}

/** AES-XTS decrypt of one sector with node:crypto (IV = 16-byte little-endian tweak): the oracle. */
function oracleDecrypt(key: Uint8Array, tweak: bigint, data: Uint8Array): Buffer {
  const iv = Buffer.alloc(16);
  iv.writeBigUInt64LE(tweak, 0);
  const d = createDecipheriv(key.length === 64 ? 'aes-256-xts' : 'aes-128-xts', key, iv);
  return Buffer.concat([d.update(data), d.final()]);
}

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'vhdcrypt-engine-stream-'));
  process.env.VHDCRYPT_VAULT = join(dir, 'vault');
  expect(spawnSync(process.execPath, [join(root, 'bin', 'vhdcrypt.cjs'), 'vault', 'init'], { env: process.env, encoding: 'utf8' }).status).toBe(0);
  // The workers run compiled code.
  expect(statSync(join(root, 'dist', 'src', 'engine', 'pool', 'xts-worker.js')).isFile()).toBe(true);
  passFile = p('pass.txt');
  writeFileSync(passFile, `${PASS}\n`);
  rawSrc = p('src.raw');
  const fd = openSync(rawSrc, 'w');
  try {
    // Holes: most 2 MiB blocks stay empty; data inside blocks 0, 2, 10 and the last one.
    for (const [off, len] of [
      [4096, 300 * 1024],
      [4 * MIB + 512, 2 * MIB - 1024],
      [20 * MIB, MIB],
      [38 * MIB + 4096, 2 * MIB - 4096],
    ] as const) {
      writeSync(fd, randomBytes(len), 0, len, off);
    }
  } finally {
    closeSync(fd);
  }
  run('truncate', ['-s', String(40 * MIB), rawSrc]);
  dynSrc = p('src-dyn.vhd');
  run('qemu-img', ['convert', '-f', 'raw', '-O', 'vpc', '-o', 'subformat=dynamic,force_size=on', rawSrc, dynSrc]);
  fixedSrc = p('src-fixed.vhd');
  run('qemu-img', ['convert', '-f', 'raw', '-O', 'vpc', '-o', 'subformat=fixed,force_size=on', rawSrc, fixedSrc]);
  model = readFileSync(rawSrc);
  expect(qemuRaw(dynSrc, 'vpc').equals(model)).toBe(true);
  expect(qemuRaw(fixedSrc, 'vpc').equals(model)).toBe(true);
  // A disk whose size is not a whole number of blocks (last block partial), written by qemu-io.
  patternDyn = p('pattern-dyn.vhd');
  run('qemu-img', ['create', '-q', '-f', 'vpc', '-o', 'subformat=dynamic,force_size=on', patternDyn, String(21 * MIB - 512 * 8)]);
  run('qemu-io', ['-f', 'vpc', '-c', 'write -P 0xa5 0 64k', '-c', 'write -P 0x3c 6M 2M', '-c', `write -P 0x7e ${20 * MIB} ${MIB - 4096}`, patternDyn]);
  patternModel = qemuRaw(patternDyn, 'vpc');
});

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

describe('encrypt stream output is a valid image that decrypts to the source', () => {
  it('dynamic VHD -> LUKS2 dynamic VHD, key sealed in the vault; qemu-img reads the container; decryptImage and the decrypt stream give the source', async () => {
    const enc = p('dyn-l2.vhd');
    const r = await through(dynSrc, createEncryptStream({ threads: 2 }), enc);
    expect(r).toMatchObject({ operation: 'encrypt', format: 'luks2', container: 'vhd-dynamic', sectorSize: 4096, dataOffset: 16n * 1024n * 1024n });
    expect(r.secretId).toEqual(expect.any(String));
    expect(r.outputBytes).toBe(BigInt(statSync(enc).size));
    const info = qemuInfo(enc);
    expect(info.format).toBe('vpc');
    expect(info['virtual-size']).toBe(16 * MIB + 40 * MIB);
    // Sparse: only the header area's non-zero blocks and the source's allocated blocks (shifted by 8) hold data.
    const map = qemuMap(enc);
    const srcMap = qemuMap(dynSrc);
    const payloadMap = map.filter(([s]) => s >= 16 * MIB).map(([s, l]) => [s - 16 * MIB, l]);
    expect(payloadMap).toEqual(srcMap);
    // The header area qemu reads is a LUKS2 header with our parameters.
    const head = qemuRaw(enc, 'vpc').subarray(0, 16 * MIB);
    const vi = await readVolumeInfo(new Uint8Array(head));
    expect(vi).toMatchObject({ version: 2, sectorSize: 4096, dataOffset: 16n * 1024n * 1024n });
    // Vault unlock (token), both ways back.
    expect((await decryptedByEngine(enc, 'dyn-l2.dec')).equals(model)).toBe(true);
    const dec = p('dyn-l2.dec.vhd');
    const d = await through(enc, createDecryptStream({}), dec);
    expect(d).toMatchObject({ operation: 'decrypt', container: 'vhd-dynamic', outputVirtualSize: BigInt(40 * MIB), secretId: r.secretId });
    expect(qemuRaw(dec, 'vpc').equals(model)).toBe(true);
    // Unallocated source blocks stay unallocated in the decrypted output.
    expect(qemuMap(dec)).toEqual(srcMap);
  });

  it('fixed VHD -> LUKS1 fixed VHD with a passphrase file: QEMU\'s own luks driver over vpc reads the source back', async () => {
    const enc = p('fixed-l1.vhd');
    const r = await through(fixedSrc, createEncryptStream({ format: 'luks1', passphraseFile: passFile, kdf: FAST, threads: 1 }), enc);
    expect(r).toMatchObject({ format: 'luks1', container: 'vhd-fixed', sectorSize: 512, dataOffset: 2n * 1024n * 1024n, secretId: null });
    expect(statSync(enc).size).toBe(2 * MIB + 40 * MIB + 512);
    expect(qemuInfo(enc)['virtual-size']).toBe(42 * MIB);
    const out = p('fixed-l1.qemu.raw');
    run('qemu-img', [
      'convert',
      '--object',
      `secret,id=s,data=${PASS}`,
      '--image-opts',
      `driver=luks,key-secret=s,file.driver=vpc,file.file.filename=${enc}`,
      '-O',
      'raw',
      out,
    ]);
    expect(readFileSync(out).equals(model)).toBe(true);
    expect((await decryptedByEngine(enc, 'fixed-l1.dec', { passphraseFile: passFile })).equals(model)).toBe(true);
    const dec = p('fixed-l1.dec.vhd');
    await through(enc, createDecryptStream({ passphraseFile: passFile }), dec);
    expect(qemuRaw(dec, 'vpc').equals(model)).toBe(true);
  });

  it('raw -> LUKS2 raw: cryptsetup accepts the header and the passphrase; both decrypt paths give the source', async () => {
    const enc = p('raw-l2.img');
    const r = await through(rawSrc, createEncryptStream({ inputFormat: 'raw', passphraseFile: passFile, kdf: FAST, sourceSize: BigInt(40 * MIB) }), enc);
    expect(r).toMatchObject({ format: 'luks2', container: 'raw', sectorSize: 4096, outputVirtualSize: BigInt(56 * MIB) });
    expect(statSync(enc).size).toBe(56 * MIB);
    const ok = spawnSync('cryptsetup', ['open', '--test-passphrase', '--key-file', passFile, '--keyfile-size', String(PASS.length), enc], { encoding: 'utf8' });
    expect(ok.status, ok.stderr).toBe(0);
    const dump = run('cryptsetup', ['luksDump', enc]);
    expect(dump).toMatch(/sector: 4096/);
    expect((await decryptedByEngine(enc, 'raw-l2.dec', { passphraseFile: passFile })).equals(model)).toBe(true);
    const dec = p('raw-l2.dec.raw');
    await through(enc, createDecryptStream({ inputFormat: 'raw', passphraseFile: passFile }), dec);
    expect(readFileSync(dec).equals(model)).toBe(true);
  });

  it('plain dynamic VHD (key in the vault, found by the VHD UUID), input in odd-sized chunks, partial last block', async () => {
    const enc = p('pattern-plain.vhd');
    const r = await through(patternDyn, createEncryptStream({ format: 'plain', sectorSize: 512, keySize: 256, threads: 1 }), enc, 7919);
    expect(r).toMatchObject({ format: 'plain', dataOffset: 0n, container: 'vhd-dynamic' });
    expect(qemuInfo(enc)['virtual-size']).toBe(patternModel.length);
    // Encrypted, not a copy.
    expect(qemuRaw(enc, 'vpc').equals(patternModel)).toBe(false);
    expect((await decryptedByEngine(enc, 'pattern-plain.dec', { plain: { sectorSize: 512, keyBits: 256 } })).equals(patternModel)).toBe(true);
    const dec = p('pattern-plain.dec.vhd');
    await through(enc, createDecryptStream({ plain: { sectorSize: 512, keyBits: 256 } }), dec, 4099);
    expect(qemuRaw(dec, 'vpc').equals(patternModel)).toBe(true);
  });

  it('plain dynamic VHD with 4096-byte sectors, key in the vault: the decrypt stream reads the sector size from the secret as decryptImage does', async () => {
    const enc = p('dyn-plain-4k.vhd');
    const r = await through(dynSrc, createEncryptStream({ format: 'plain', sectorSize: 4096, threads: 1 }), enc);
    expect(r).toMatchObject({ format: 'plain', sectorSize: 4096, dataOffset: 0n, container: 'vhd-dynamic' });
    // Neither decrypt is told the sector size: both find it in the vault secret's tags.
    const byEngine = await decryptedByEngine(enc, 'dyn-plain-4k.dec');
    expect(byEngine.equals(model)).toBe(true);
    const dec = p('dyn-plain-4k.dec.vhd');
    const d = await through(enc, createDecryptStream(), dec);
    expect(d).toMatchObject({ format: 'plain', sectorSize: 4096, secretId: r.secretId });
    expect(qemuRaw(dec, 'vpc').equals(byEngine)).toBe(true);
  });

  it('noSparse: every block is written (QEMU\'s luks driver over a dynamic vpc then reads zeros back)', async () => {
    const enc = p('dyn-l1-full.vhd');
    await through(dynSrc, createEncryptStream({ format: 'luks1', passphraseFile: passFile, kdf: FAST, noSparse: true }), enc);
    expect(qemuMap(enc)).toEqual([[0, 42 * MIB]]);
    const out = p('dyn-l1-full.qemu.raw');
    run('qemu-img', ['convert', '--object', `secret,id=s,data=${PASS}`, '--image-opts', `driver=luks,key-secret=s,file.driver=vpc,file.file.filename=${enc}`, '-O', 'raw', out]);
    expect(readFileSync(out).equals(model)).toBe(true);
  });
});

describe('payload crypto of the stream output, checked with node:crypto', () => {
  it('LUKS2 dynamic, 4096-byte sectors: sector k of the payload is AES-XTS under the volume key with tweak 8k (plain64 in 512-byte units); progress reaches the total', async () => {
    const enc = p('oracle-l2.vhd');
    const seen: bigint[] = [];
    const r = await through(dynSrc, createEncryptStream({ passphraseFile: passFile, kdf: FAST, onProgress: (x) => seen.push(x.bytesDone) }), enc);
    expect(seen.length).toBeGreaterThan(0);
    expect([...seen].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0))).toEqual(seen);
    expect(seen[seen.length - 1]).toBe(r.bytesProcessed);
    const img = await openImage(enc);
    const u = await unlockImage(img, { passphraseFile: passFile });
    try {
      expect(u.layout.dataOffset).toBe(16n * 1024n * 1024n);
      // Sectors in the data of blocks 0, 2, 10 and 19 of the source (block edges included).
      for (const k of [1, 2, 1025, 5120, 5375, 9729, 10239]) {
        const cipher = new Uint8Array(4096);
        await img.read(u.layout.dataOffset + BigInt(k) * 4096n, cipher);
        expect(oracleDecrypt(u.volumeKey, BigInt(k) * 8n, cipher).equals(model.subarray(k * 4096, (k + 1) * 4096)), `sector ${k}`).toBe(true);
      }
    } finally {
      u.volumeKey.fill(0);
      await img.close();
    }
  });
});

describe('plain (dm-crypt) raw stream with a key file', () => {
  it('raw -> plain raw, 4096-byte sectors: same size, tweak counts 512-byte units from offset 0 (node:crypto); decrypt paths give the source', async () => {
    const keyFile = p('plain.key');
    writeFileSync(keyFile, randomBytes(64));
    const enc = p('raw-plain.img');
    const r = await through(rawSrc, createEncryptStream({ inputFormat: 'raw', format: 'plain', keyFile, sectorSize: 4096 }), enc, 65537);
    expect(r).toMatchObject({ format: 'plain', container: 'raw', dataOffset: 0n, outputVirtualSize: BigInt(40 * MIB), secretId: null });
    const cipher = readFileSync(enc);
    expect(cipher.length).toBe(40 * MIB);
    const key = readFileSync(keyFile);
    for (const k of [1, 1025, 5120, 10239]) {
      expect(oracleDecrypt(key, BigInt(k) * 8n, cipher.subarray(k * 4096, (k + 1) * 4096)).equals(model.subarray(k * 4096, (k + 1) * 4096)), `sector ${k}`).toBe(true);
    }
    expect((await decryptedByEngine(enc, 'raw-plain.dec', { keyFile, plain: { sectorSize: 4096 } })).equals(model)).toBe(true);
    const dec = p('raw-plain.dec.raw');
    await through(enc, createDecryptStream({ inputFormat: 'raw', keyFile, plain: { sectorSize: 4096 } }), dec);
    expect(readFileSync(dec).equals(model)).toBe(true);
  });
});

describe('stream output vs file API output (same source, same options)', () => {
  for (const [name, src, fmt] of [
    ['dynamic', () => dynSrc, 'luks2'],
    ['fixed', () => fixedSrc, 'luks1'],
  ] as const) {
    it(`${name} ${fmt}: same container, layout, LUKS parameters and allocation; each decrypts to the source by the other API`, async () => {
      const viaStream = p(`cmp-${name}-stream.vhd`);
      const viaFile = p(`cmp-${name}-file.vhd`);
      const opts = { format: fmt, passphraseFile: passFile, kdf: FAST } as const;
      const rs = await through(src(), createEncryptStream(opts), viaStream);
      const rf = await encryptImage(src(), viaFile, opts);
      expect(rs.container).toBe(rf.container);
      expect(rs.outputVirtualSize).toBe(rf.outputVirtualSize);
      expect(rs.dataOffset).toBe(rf.dataOffset);
      expect(rs.sectorSize).toBe(rf.sectorSize);
      expect(qemuInfo(viaStream)['virtual-size']).toBe(qemuInfo(viaFile)['virtual-size']);
      expect(qemuMap(viaStream)).toEqual(qemuMap(viaFile));
      const hs = await readVolumeInfo(new Uint8Array(qemuRaw(viaStream, 'vpc').subarray(0, Number(rs.dataOffset))));
      const hf = await readVolumeInfo(new Uint8Array(qemuRaw(viaFile, 'vpc').subarray(0, Number(rf.dataOffset))));
      for (const k of ['version', 'cipher', 'keyBits', 'sectorSize', 'dataOffset', 'dataSize'] as const) expect(hs?.[k as keyof typeof hs], k).toEqual(hf?.[k as keyof typeof hf]);
      // Volume keys are random, so the bytes differ; the plaintext is the same, crossing APIs.
      expect((await decryptedByEngine(viaStream, `cmp-${name}-s.dec`, { passphraseFile: passFile })).equals(model)).toBe(true);
      const dec = p(`cmp-${name}-f.dec.vhd`);
      await through(viaFile, createDecryptStream({ passphraseFile: passFile }), dec);
      expect(qemuRaw(dec, 'vpc').equals(model)).toBe(true);
    });
  }
});

describe('bad input and abort', () => {
  /** Feed the first `n` bytes of a file. */
  function prefixOf(path: string, n: number): Readable {
    return createReadStream(path, { start: 0, end: n - 1 });
  }

  it('a dynamic VHD stream cut inside a block -> ENGINE_STREAM_BAD_INPUT, no hang', async () => {
    const s = createEncryptStream({ passphraseFile: passFile, kdf: FAST });
    await expectCode(pipeline(prefixOf(dynSrc, 3 * MIB), s, new Writable({ write: (_c, _e, cb) => cb() })), 'ENGINE_STREAM_BAD_INPUT');
  });

  it('a dynamic VHD stream missing its end footer, and a fixed one cut short -> ENGINE_STREAM_BAD_INPUT', async () => {
    const size = statSync(dynSrc).size;
    await expectCode(
      pipeline(prefixOf(dynSrc, size - 512), createEncryptStream({ passphraseFile: passFile, kdf: FAST }), new Writable({ write: (_c, _e, cb) => cb() })),
      'ENGINE_STREAM_BAD_INPUT',
    );
    await expectCode(
      pipeline(prefixOf(fixedSrc, 10 * MIB + 1024), createEncryptStream({ format: 'luks1', passphraseFile: passFile, kdf: FAST }), new Writable({ write: (_c, _e, cb) => cb() })),
      'ENGINE_STREAM_BAD_INPUT',
    );
  });

  it('a raw stream shorter than sourceSize, and an encrypted stream cut inside its header -> typed errors', async () => {
    await expectCode(
      pipeline(prefixOf(rawSrc, 8 * MIB), createEncryptStream({ inputFormat: 'raw', sourceSize: BigInt(40 * MIB), passphraseFile: passFile, kdf: FAST }), new Writable({ write: (_c, _e, cb) => cb() })),
      'ENGINE_STREAM_BAD_INPUT',
    );
    const enc = p('bad-l2.img');
    await through(rawSrc, createEncryptStream({ inputFormat: 'raw', passphraseFile: passFile, kdf: FAST }), enc);
    let caught: unknown = null;
    try {
      await pipeline(prefixOf(enc, 8192), createDecryptStream({ inputFormat: 'raw', passphraseFile: passFile }), new Writable({ write: (_c, _e, cb) => cb() }));
    } catch (e) {
      caught = e;
    }
    expect(isVhdcryptError(caught)).toBe(true);
    expect((caught as { code: string }).code).toMatch(/^(LUKS_|ENGINE_STREAM_)/);
  });

  it('a hostile virtual size in the footer copy (2 TiB over a 20-entry BAT) -> ENGINE_STREAM_BAD_INPUT before any allocation', async () => {
    const b = Buffer.from(readFileSync(dynSrc));
    b.writeBigUInt64BE(2n ** 41n, 48);
    resealFooter(b, 0);
    const hostile = p('hostile-size.vhd');
    writeFileSync(hostile, b);
    await expectCode(pipeline(createReadStream(hostile), createEncryptStream({ passphraseFile: passFile, kdf: FAST }), new Writable({ write: (_c, _e, cb) => cb() })), 'ENGINE_STREAM_BAD_INPUT');
  });

  it('a BAT entry pointing into the header -> ENGINE_STREAM_BAD_INPUT; a differencing VHD -> ENGINE_UNSUPPORTED_FORMAT', async () => {
    const bytes = readFileSync(dynSrc);
    const tableOffset = Number(bytes.readBigUInt64BE(512 + 16));
    const bad = Buffer.from(bytes);
    bad.writeUInt32BE(1, tableOffset); // block 0 at sector 1: inside the dynamic header
    const badPath = p('bad-bat.vhd');
    writeFileSync(badPath, bad);
    await expectCode(pipeline(createReadStream(badPath), createEncryptStream({ passphraseFile: passFile, kdf: FAST }), new Writable({ write: (_c, _e, cb) => cb() })), 'ENGINE_STREAM_BAD_INPUT');
    const child = p('child.vhd');
    run('qemu-img', ['create', '-q', '-f', 'vpc', '-o', 'subformat=dynamic', child, '8M']);
    // Make it claim to be differencing (disk type 4) with a valid checksum: the stream refuses it upfront.
    const c = readFileSync(child);
    for (const at of [0, c.length - 512]) {
      c.writeUInt32BE(4, at + 60);
      resealFooter(c, at);
    }
    writeFileSync(child, c);
    await expectCode(pipeline(createReadStream(child), createEncryptStream({ passphraseFile: passFile, kdf: FAST }), new Writable({ write: (_c, _e, cb) => cb() })), 'ENGINE_UNSUPPORTED_FORMAT');
  });

  /** A copy of a dynamic VHD with block 0 (the LUKS1 header area) moved behind every other block (copied before the end footer, BAT repointed). */
  function headerBlockLast(src: string, dst: string): void {
    const b = readFileSync(src);
    const tableOffset = Number(b.readBigUInt64BE(512 + 16));
    const span = 512 + 2 * MIB;
    const oldAt = b.readUInt32BE(tableOffset) * 512;
    const endAt = b.length - 512;
    const moved = Buffer.concat([b.subarray(0, endAt), b.subarray(oldAt, oldAt + span), b.subarray(endAt)]);
    moved.writeUInt32BE(endAt / 512, tableOffset);
    writeFileSync(dst, moved);
  }

  it('an encrypted dynamic VHD whose header block comes after its payload blocks: decrypted (payload held) up to 16 MiB of them, ENGINE_STREAM_ORDER past that', async () => {
    const enc = p('order-l1.vhd');
    await through(dynSrc, createEncryptStream({ format: 'luks1', passphraseFile: passFile, kdf: FAST }), enc);
    const reordered = p('order-l1-moved.vhd');
    headerBlockLast(enc, reordered);
    expect((await decryptedByEngine(reordered, 'order.dec', { passphraseFile: passFile })).equals(model)).toBe(true);
    // Four payload blocks (8 MiB) precede the header: held, then decrypted.
    const dec = p('order-l1.dec.vhd');
    await through(reordered, createDecryptStream({ passphraseFile: passFile }), dec);
    expect(qemuRaw(dec, 'vpc').equals(model)).toBe(true);
    expect(qemuMap(dec)).toEqual(qemuMap(dynSrc));
    // Every block written (20 payload blocks = 40 MiB before the header): too much to hold.
    const full = p('order-l1-full.vhd');
    await through(dynSrc, createEncryptStream({ format: 'luks1', passphraseFile: passFile, kdf: FAST, noSparse: true }), full);
    const fullMoved = p('order-l1-full-moved.vhd');
    headerBlockLast(full, fullMoved);
    expect((await decryptedByEngine(fullMoved, 'order-full.dec', { passphraseFile: passFile })).equals(model)).toBe(true);
    await expectCode(pipeline(createReadStream(fullMoved), createDecryptStream({ passphraseFile: passFile }), new Writable({ write: (_c, _e, cb) => cb() })), 'ENGINE_STREAM_ORDER');
  });

  it('a wrong passphrase on the decrypt stream -> LUKS_WRONG_PASSPHRASE-like typed error', async () => {
    const enc = p('wrong-l1.vhd');
    await through(fixedSrc, createEncryptStream({ format: 'luks1', passphraseFile: passFile, kdf: FAST }), enc);
    let caught: unknown = null;
    try {
      await pipeline(createReadStream(enc), createDecryptStream({ passphrase: 'not it' }), new Writable({ write: (_c, _e, cb) => cb() }));
    } catch (e) {
      caught = e;
    }
    expect(isVhdcryptError(caught)).toBe(true);
    expect((caught as { code: string }).code).toMatch(/WRONG_PASSPHRASE|NO_KEYSLOT/);
  });

  it('abort via AbortSignal mid-stream -> the stream is destroyed with ENGINE_ABORTED', async () => {
    const ac = new AbortController();
    const s = createEncryptStream({ passphraseFile: passFile, kdf: FAST, signal: ac.signal });
    let seen = 0;
    const sink = new Writable({
      write(c: Buffer, _e, cb) {
        seen += c.length;
        // Abort once the output has started flowing.
        if (seen > 4 * MIB && !ac.signal.aborted) ac.abort(new Error('test abort'));
        cb();
      },
    });
    await expectCode(pipeline(createReadStream(fixedSrc, { highWaterMark: 256 * 1024 }), s, sink), 'ENGINE_ABORTED');
    expect(s.destroyed).toBe(true);
    expect(seen).toBeLessThan(2 * MIB + 40 * MIB);
    // An already-aborted signal: nothing is produced.
    const s2 = createEncryptStream({ passphraseFile: passFile, kdf: FAST, signal: AbortSignal.abort() });
    await expectCode(pipeline(createReadStream(fixedSrc), s2, new Writable({ write: (_c, _e, cb) => cb() })), 'ENGINE_ABORTED');
  });
});

describe('bounded memory', () => {
  it('a 256 MiB fully allocated dynamic VHD encrypts (on this thread and on workers) and decrypts with peak RSS within 64 MiB of an 8 MiB one', () => {
    const script = join(dir, 'mem.mjs');
    const encMod = join(root, 'dist', 'src', 'engine', 'streams', 'stream-encrypt.js');
    const decMod = join(root, 'dist', 'src', 'engine', 'streams', 'stream-decrypt.js');
    // One child process per run: its peak RSS (getrusage) is that run's, nothing else's.
    writeFileSync(
      script,
      `import { createReadStream, createWriteStream } from 'node:fs';
import { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createHash } from 'node:crypto';
import { createEncryptStream } from ${JSON.stringify(encMod)};
import { createDecryptStream } from ${JSON.stringify(decMod)};
const [mode, src, dst] = process.argv.slice(2);
const h = createHash('sha256');
let n = 0;
const threads = mode === 'encrypt-workers' ? { threads: 2 } : {};
const s = mode === 'decrypt' ? createDecryptStream({ passphrase: 'x' }) : createEncryptStream({ passphrase: 'x', kdf: { type: 'pbkdf2', hash: 'sha256', iterations: 1000 }, ...threads });
// A sink slower than the crypto (hashing each chunk 8 times): without backpressure the output would pile up in memory.
const sink = dst ? createWriteStream(dst) : new Writable({ write(c, _e, cb) { n += c.length; for (let i = 0; i < 8; i++) h.update(c); cb(); } });
await pipeline(createReadStream(src), s, sink);
process.stdout.write(JSON.stringify({ maxRss: process.resourceUsage().maxRSS * 1024, bytes: dst ? s.result.outputBytes.toString() : n }));
`,
    );
    const peaks = (size: number) => {
      const img = p(`mem-${size}.vhd`);
      const enc = p(`mem-${size}.enc.vhd`);
      run('qemu-img', ['create', '-q', '-f', 'vpc', '-o', 'subformat=dynamic,force_size=on', img, String(size)]);
      run('qemu-io', ['-f', 'vpc', '-c', `write -P 0x6b 0 ${size}`, img]);
      const e = JSON.parse(run(process.execPath, [script, 'encrypt', img])) as { maxRss: number; bytes: number };
      const w = JSON.parse(run(process.execPath, [script, 'encrypt-workers', img])) as { maxRss: number; bytes: number };
      run(process.execPath, [script, 'encrypt', img, enc]);
      const d = JSON.parse(run(process.execPath, [script, 'decrypt', enc])) as { maxRss: number; bytes: number };
      rmSync(img);
      rmSync(enc);
      return { e, w, d };
    };
    const small = peaks(8 * MIB);
    const big = peaks(256 * MIB);
    expect(big.e.bytes).toBeGreaterThan(256 * MIB);
    expect(big.d.bytes).toBeGreaterThan(256 * MIB);
    expect(big.w.bytes).toBe(big.e.bytes);
    expect(big.e.maxRss - small.e.maxRss, `encrypt peak RSS ${small.e.maxRss} -> ${big.e.maxRss}`).toBeLessThan(64 * MIB);
    expect(big.w.maxRss - small.w.maxRss, `encrypt (workers) peak RSS ${small.w.maxRss} -> ${big.w.maxRss}`).toBeLessThan(64 * MIB);
    expect(big.d.maxRss - small.d.maxRss, `decrypt peak RSS ${small.d.maxRss} -> ${big.d.maxRss}`).toBeLessThan(64 * MIB);
  });
});
