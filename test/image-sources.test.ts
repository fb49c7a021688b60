/**
 * Sources by kind: files are the image layer's own kinds; an NBD export is a kind the NBD part registers. A URI
 * nobody registered is a typed error naming its scheme, never a file lookup; the package entry registers the NBD
 * export kind itself. Checked against a real export (nbdkit).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { isFileLocation, locationScheme, openSource, registerSourceKind, sourceKindOf, type SourceKind } from '../src/image/index.js';
import { NBD_SOURCE_KIND, registerNbdSource } from '../src/nbd/source-kind.js';
import { isVhdcryptError } from '../src/errors.js';

const MIB = 1024 * 1024;
let dir: string;
let raw: string;
let data: Buffer;
let sock: string;
let pidFile: string;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'vhdcrypt-sources-'));
  raw = join(dir, 'disk.raw');
  data = randomBytes(2 * MIB);
  writeFileSync(raw, data);
  sock = join(dir, 'nbd.sock');
  pidFile = join(dir, 'nbdkit.pid');
  // Without -f nbdkit returns once it listens, leaving its pid in the file.
  expect(spawnSync('nbdkit', ['-r', '-U', sock, '-P', pidFile, 'file', raw], { stdio: 'ignore' }).status).toBe(0);
});

afterAll(() => {
  try {
    process.kill(Number(readFileSync(pidFile, 'utf8').trim()));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    return isVhdcryptError(e) ? e.code : String(e);
  }
  return 'resolved';
}

describe('openSource', () => {
  it('tells URIs from file paths by an RFC 3986 scheme followed by //', () => {
    expect(locationScheme('NBD+Unix:///x?socket=/s')).toBe('nbd+unix');
    expect(locationScheme('/tmp/nbd://x')).toBeNull();
    expect(locationScheme('./disk.vhd')).toBeNull();
    expect(locationScheme('C:\\disk.vhd')).toBeNull();
    expect(isFileLocation('disk:1.raw')).toBe(true);
    expect(isFileLocation('nbd://host/x')).toBe(false);
  });

  it('an NBD URI before any NBD kind is registered: IMAGE_UNKNOWN_SOURCE_KIND naming the scheme, no connection, no file lookup', async () => {
    expect(sourceKindOf(`nbd+unix:///?socket=${sock}`)).toBeUndefined();
    const e = await openSource(`nbd+unix:///?socket=${sock}`).catch((x: unknown) => x);
    expect(isVhdcryptError(e, 'IMAGE_UNKNOWN_SOURCE_KIND')).toBe(true);
    expect((e as Error).message).toContain('nbd+unix://');
    expect(await codeOf(openSource('nbd://localhost/x'))).toBe('IMAGE_UNKNOWN_SOURCE_KIND');
    expect(await codeOf(openSource('s3://bucket/disk.vhd'))).toBe('IMAGE_UNKNOWN_SOURCE_KIND');
  });

  it('a file path is opened by the built-in file kinds', async () => {
    const img = await openSource(raw);
    try {
      expect(img.format).toBe('raw');
      expect(img.virtualSize).toBe(BigInt(2 * MIB));
    } finally {
      await img.close();
    }
    const missing = await openSource(join(dir, 'missing.raw')).catch((x: unknown) => x);
    expect((missing as NodeJS.ErrnoException).code).toBe('ENOENT');
  });

  it('once the NBD kind is registered, the export reads as the file it serves', async () => {
    registerNbdSource();
    registerNbdSource();
    expect(sourceKindOf(`NBD+UNIX:///?socket=${sock}`)).toBe(NBD_SOURCE_KIND);
    const img = await openSource(`nbd+unix:///?socket=${sock}`);
    try {
      expect(img.virtualSize).toBe(BigInt(2 * MIB));
      const got = new Uint8Array(MIB);
      await img.read(BigInt(MIB / 2), got);
      expect(Buffer.from(got).equals(data.subarray(MIB / 2, MIB / 2 + MIB))).toBe(true);
    } finally {
      await img.close();
    }
    // The kind's own URI checks still answer (a host-less nbd:// URI).
    expect(await codeOf(openSource('nbd:///x'))).toBe('NBD_BAD_URI');
  });

  it('a second kind claiming a registered scheme, or a malformed kind, is refused', () => {
    const rival: SourceKind = { name: 'rival', schemes: ['nbd'], open: () => Promise.reject(new Error('never')) };
    expect(() => registerSourceKind(rival)).toThrow(expect.objectContaining({ code: 'IMAGE_BAD_ARGUMENT' }));
    expect(() => registerSourceKind({ name: 'upper', schemes: ['NBD'], open: rival.open })).toThrow(expect.objectContaining({ code: 'IMAGE_BAD_ARGUMENT' }));
    expect(() => registerSourceKind({ name: 'none', schemes: [], open: rival.open })).toThrow(expect.objectContaining({ code: 'IMAGE_BAD_ARGUMENT' }));
    expect(sourceKindOf('nbd://h/x')).toBe(NBD_SOURCE_KIND);
  });
});
