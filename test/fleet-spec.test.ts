/**
 * What a fleet job may carry and where the queue is: Redis URLs of every accepted form (and the refusals, which
 * never echo a password), job specs that refuse secret values and unknown options, the failures a job retries and
 * those it does not; and the engine's outputName, which names the temp file and journal a retried job resumes from.
 */
import { describe, expect, it } from 'vitest';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { checkJobSpec, classifyFailure, defaultJobId, parseFailure, redisOptions } from '../src/fleet/index.js';
import { encryptImage, EngineError } from '../src/engine/index.js';
import { VhdcryptError } from '../src/errors.js';
import { makeRaw, removeDir, tempDir } from './fixtures/engine/helpers.js';
import { writeFileSync } from 'node:fs';

describe('--redis URLs', () => {
  it('takes redis://, rediss:// and unix:// with maxRetriesPerRequest null', () => {
    expect(redisOptions('redis://h.example:6380/2')).toMatchObject({ host: 'h.example', port: 6380, db: 2, maxRetriesPerRequest: null });
    expect(redisOptions('redis://h.example')).toMatchObject({ host: 'h.example', port: 6379 });
    expect(redisOptions('rediss://:s3cret@h.example:6390')).toMatchObject({ host: 'h.example', port: 6390, password: 's3cret', tls: { servername: 'h.example' } });
    expect(redisOptions('redis://[::1]:7000')).toMatchObject({ host: '::1', port: 7000 });
    expect(redisOptions('unix:///run/redis/redis.sock?db=3')).toMatchObject({ path: '/run/redis/redis.sock', db: 3, maxRetriesPerRequest: null });
  });

  it('refuses other forms with FLEET_BAD_REDIS_URL, never quoting the password', () => {
    for (const bad of ['http://h:1', 'unix://relative/redis.sock', 'redis://:pw-XYZ@h:1/x', 'not a url', 'redis://:pw-XYZ@']) {
      let err: unknown;
      try {
        redisOptions(bad);
      } catch (e) {
        err = e;
      }
      expect(err, bad).toBeInstanceOf(VhdcryptError);
      expect((err as VhdcryptError).code).toBe('FLEET_BAD_REDIS_URL');
      expect((err as Error).message).not.toContain('pw-XYZ');
    }
  });
});

describe('fleet job specs', () => {
  const base = { operation: 'encrypt', source: '/s/a.vhd', destination: '/d/a.enc.vhd' };

  it('carry ids and options, never a secret value', () => {
    expect(checkJobSpec({ ...base, options: { format: 'luks1', keyFile: '/k/key', vault: 'file:/v' } }).options).toEqual({ format: 'luks1', keyFile: '/k/key', vault: 'file:/v' });
    for (const secret of ['passphrase', 'addRecoveryPassphrase', 'vaultCredentials']) {
      expect(() => checkJobSpec({ ...base, options: { [secret]: 'hunter2' } }), secret).toThrow(/carries no secret value/);
    }
    expect(() => checkJobSpec({ ...base, options: { passphrase: 'hunter2' } })).toThrow(expect.objectContaining({ code: 'FLEET_BAD_JOB' }));
    expect(() => checkJobSpec({ ...base, options: { passphrase: 'hunter2' } })).not.toThrow(/hunter2/);
  });

  it('refuse unknown options, relative paths, bad values and extra fields', () => {
    expect(() => checkJobSpec({ ...base, options: { frobnicate: 1 } })).toThrow(/not an option/);
    expect(() => checkJobSpec({ ...base, source: 'a.vhd' })).toThrow(/absolute path/);
    expect(() => checkJobSpec({ ...base, destination: '/d/../x' })).toThrow(/normalised/);
    expect(() => checkJobSpec({ ...base, options: { keyFile: 'key' } })).toThrow(/absolute path/);
    expect(() => checkJobSpec({ ...base, options: { keySize: 384 } })).toThrow(/one of 256, 512/);
    expect(() => checkJobSpec({ ...base, operation: 'decrypt', options: { format: 'luks2' } })).toThrow(/not an option of a fleet decrypt job/);
    expect(() => checkJobSpec({ ...base, extra: 1 })).toThrow(/not a field/);
    expect(checkJobSpec({ ...base, source: 'nbd+unix:///?socket=/run/x.sock' }).source).toBe('nbd+unix:///?socket=/run/x.sock');
  });

  it('default ids: the destination name and a digest, one per destination, usable as a file name', () => {
    const a = defaultJobId('encrypt', '/d/disk 1.enc.vhd');
    expect(a).toMatch(/^disk_1\.enc\.vhd-[0-9a-f]{12}$/);
    expect(defaultJobId('encrypt', '/d/disk 1.enc.vhd')).toBe(a);
    expect(defaultJobId('encrypt', '/e/disk 1.enc.vhd')).not.toBe(a);
    expect(defaultJobId('encrypt', '/d/.hidden')).toMatch(/^_hidden-/);
  });

  it('typed bad input, wrong keys and vault refusals are permanent; I/O, no space and the untyped are retried', () => {
    expect(classifyFailure(new VhdcryptError('VHD_BAD_CHECKSUM', 'x'))).toMatchObject({ code: 'VHD_BAD_CHECKSUM', permanent: true });
    expect(classifyFailure(new VhdcryptError('LUKS_WRONG_PASSPHRASE', 'x')).permanent).toBe(true);
    expect(classifyFailure(new VhdcryptError('VAULT_FORBIDDEN', 'x')).permanent).toBe(true);
    expect(classifyFailure(new VhdcryptError('ENGINE_NO_SPACE', 'x')).permanent).toBe(false);
    expect(classifyFailure(new VhdcryptError('ENGINE_IO', 'x')).permanent).toBe(false);
    expect(classifyFailure(new VhdcryptError('VAULT_STORAGE', 'x')).permanent).toBe(false);
    expect(classifyFailure(Object.assign(new Error('eio'), { code: 'EIO' }))).toMatchObject({ code: 'EIO', permanent: false });
    expect(classifyFailure(Object.assign(new Error('gone'), { code: 'ENOENT' }))).toMatchObject({ code: 'ENOENT', permanent: true });
    expect(classifyFailure(new Error('?'))).toMatchObject({ code: 'INTERNAL', permanent: false });
    expect(parseFailure('VHD_BAD_CHECKSUM: a.vhd: bad')).toEqual({ code: 'VHD_BAD_CHECKSUM', message: 'a.vhd: bad' });
    expect(parseFailure('job stalled more than allowable limit')).toEqual({ code: 'QUEUE', message: 'job stalled more than allowable limit' });
  });
});

describe('the engine\'s outputName', () => {
  it('names the temp file and journal an interrupted run keeps, and refuses a name that is not one path component', async () => {
    const dir = tempDir('outname');
    try {
      const src = join(dir, 'a.raw');
      makeRaw(src, 8 << 20, [[0, 8 << 20]]);
      const key = join(dir, 'key');
      writeFileSync(key, 'k'.repeat(32));
      const ac = new AbortController();
      const kdf = { type: 'pbkdf2', hash: 'sha256', iterations: 1000 } as const;
      await expect(
        encryptImage(src, join(dir, 'a.enc.raw'), {
          keyFile: key, kdf, threads: 1, batchBytes: 1 << 20, checkpointBytes: 1 << 20, outputName: 'job-42',
          signal: ac.signal, onProgress: (p) => { if (p.bytesDone >= 2n << 20n) ac.abort(); },
        }),
      ).rejects.toMatchObject({ code: 'ENGINE_ABORTED' });
      expect(readdirSync(dir).filter((n) => n.startsWith('.')).sort()).toEqual(['.job-42.vhdcrypt-journal', '.job-42.vhdcrypt-tmp']);
      // Another run of the job, by its name, resumes from there.
      const r = await encryptImage(src, join(dir, 'a.enc.raw'), { keyFile: key, kdf, threads: 1, batchBytes: 1 << 20, checkpointBytes: 1 << 20, outputName: 'job-42', resume: true });
      expect(r.resumed).toBe(true);
      expect(readdirSync(dir).filter((n) => n.startsWith('.'))).toEqual([]);
      for (const bad of ['../x', 'a/b', '.hidden', '', 'x'.repeat(201)]) {
        await expect(encryptImage(src, join(dir, 'b.enc.raw'), { keyFile: key, kdf, outputName: bad }), bad).rejects.toBeInstanceOf(EngineError);
      }
    } finally {
      removeDir(dir);
    }
  });
});
