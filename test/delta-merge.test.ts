/**
 * Merging encrypted chains on ciphertext (no key): a link into its parent and, with --into-child, the parent into
 * the link, checked against the plaintext model, node:crypto as the XTS oracle, libvhdi, verify, and kill -9 at
 * random points of a merge followed by a rerun. Chains are written by the tests' own differencing writer.
 */
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { copyFileSync, mkdirSync, readFileSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { describeImage, encryptChain, mergeImage, mergeJournalPath, unlockImage, verifyImage } from '../src/engine/index.js';
import { openImage, SparseVhdImage } from '../src/image/index.js';
import { openVault } from '../src/vault/index.js';
import { oracleDecryptSector, removeDir, tempDir } from './fixtures/engine/helpers.js';
import { DiffModel, writeDifferencingVhd } from './helpers/diff-vhd-writer.js';
import { patternBytes, readAll } from './image-helpers.js';
import { BS, cliRun as cliAt, D, decrypted, firstDiff4k, libvhdiRead, MiB, qemuBase, ROOT, SIZE } from './helpers/delta-helpers.js';

let dir: string;
let vault: string;

beforeAll(async () => {
  dir = tempDir('delta-merge');
  vault = `file:${join(dir, 'vault')}`;
  await (await openVault(vault, { create: true })).close();
});
afterAll(() => removeDir(dir));

const cliRun = (args: string[]) => cliAt(join(dir, 'vault'), args);

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
    // Times kept: a merge into the child records its new parent's mtime, so copies compare byte for byte.
    for (const f of enc) for (const x of [f, f + '.chain-manifest']) copyFileSync(x, join(to, basename(x)));
    for (const f of enc) for (const x of [f, f + '.chain-manifest']) utimesSync(join(to, basename(x)), statSync(x).atime, statSync(x).mtime);
    return (f: string) => join(to, basename(f));
  };

  /** Runs the merge in a child process held at `holdAt` (a block number, or step:NAME) and kill -9s it there. */
  const killMergeAt = (file: string, into: boolean, holdAt: string, sealWith?: string) =>
    new Promise<boolean>((res, rej) => {
      const child = spawn(process.execPath, [join(ROOT, 'test/fixtures/engine/merge-child.mjs'), file, into ? 'into' : 'parent', holdAt, ...(sealWith ? [sealWith] : [])], { stdio: ['ignore', 'pipe', 'pipe'] });
      let k = false;
      let err = '';
      child.stderr.on('data', (d: Buffer) => (err += d.toString()));
      createInterface({ input: child.stdout }).on('line', (line) => {
        // The child blocks at holdAt (its writes to a pipe are synchronous on Linux, so HOLD is out first).
        if (line === 'HOLD' && !k) {
          k = true;
          child.kill('SIGKILL');
        }
      });
      child.on('error', rej);
      child.on('exit', (code) => (k || code === 0 ? res(k) : rej(new Error(err))));
    });

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
      const killAt = 1 + Math.floor(Math.random() * held);
      const killed = await killMergeAt(at(enc[2]!), into, String(killAt));
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
  // Every step boundary after the copy, in order, for each direction (MergeStep).
  const steps = {
    parent: ['copy-flushed', 'journal-copied', 'removed', 'manifest', 'old-manifest-removed'],
    into: ['copy-flushed', 'journal-copied', 'end-footer', 'footer-0', 'locators', 'header', 'removed', 'manifest'],
  } as const;
  // Into the child twice: over a grandparent (its parent locators rewritten), then over the base (it becomes dynamic).
  it.each([
    [false, 0],
    [true, 0],
    [true, 1],
  ])('kill -9 at each step boundary after the copy (into child: %s, links merged before: %s): the chain reads correctly there, and a rerun ends in the same image', async (into, pre) => {
    // Every run in the same directory: the merged child's absolute parent locator names it, so files compare byte for byte.
    const name = `m-step${into}${pre}`;
    const fresh = () => {
      rmSync(join(dir, name), { recursive: true, force: true });
      return copyChain(name);
    };
    const prepared = async () => {
      const at = fresh();
      if (pre === 1) await mergeImage(at(enc[2]!), { intoChild: true });
      return at;
    };
    const kept = into ? enc[2]! : enc[1]!;
    const removed = into ? enc[1 - pre]! : enc[2]!;
    let at = await prepared();
    // What the chain reads before the merge, which the merged link reads after it.
    const before = await cipherOf(at(enc[2]!));
    await mergeImage(at(enc[2]!), { intoChild: into });
    const want = readFileSync(at(kept));
    // Over the base only the metadata rewrite differs from the merge over a grandparent.
    const at1 = ['end-footer', 'footer-0', 'locators', 'header'];
    for (const step of steps[into ? 'into' : 'parent'].filter((s) => pre === 0 || at1.includes(s))) {
      at = await prepared();
      expect(await killMergeAt(at(enc[2]!), into, `step:${step}`), step).toBe(true);
      expect(statSync(mergeJournalPath(at(enc[2]!))).isFile(), step).toBe(true);
      // The chain, from the link that tops it (the merged child is gone once removed), reads the same ciphertext.
      const top = statSync(at(enc[2]!), { throwIfNoEntry: false }) ? at(enc[2]!) : at(kept);
      const read = await cipherOf(top).catch((e: Error) => {
        throw new Error(`killed at ${step}: ${e.message}`);
      });
      expect(firstDiff4k(read, before), step).toBe(-1);
      const r = await mergeImage(at(enc[2]!), { intoChild: into });
      expect(r.resumed, step).toBe(true);
      // Byte-identical, metadata included, to the uninterrupted merge.
      expect(readFileSync(at(kept)).equals(want), step).toBe(true);
      expect(statSync(at(removed), { throwIfNoEntry: false }), step).toBeUndefined();
      expect(statSync(mergeJournalPath(at(enc[2]!)), { throwIfNoEntry: false }), step).toBeUndefined();
    }
    expect(firstDiff4k(await decrypted(at(kept)), models[2]!)).toBe(-1);
  });

  it('with --seal, killed at each step boundary after the child is removed: a rerun seals the parent with the child\'s source again', async () => {
    const source = (JSON.parse(readFileSync(enc[2]! + '.chain-manifest', 'utf8')) as { sourceUuid: string }).sourceUuid;
    expect(source).toBeTruthy();
    for (const step of ['removed', 'manifest', 'old-manifest-removed']) {
      const name = `m-sealstep-${step}`;
      const at = copyChain(name);
      expect(await killMergeAt(at(enc[2]!), false, `step:${step}`, vault), step).toBe(true);
      const r = await mergeImage(at(enc[2]!), { seal: true, vault });
      expect([r.resumed, r.manifest], step).toEqual([true, 'sealed']);
      expect((JSON.parse(readFileSync(at(enc[1]!) + '.chain-manifest', 'utf8')) as { sourceUuid: string }).sourceUuid, step).toBe(source);
      const v = await verifyImage(at(enc[1]!), { blocks: true, vault });
      expect(v.links[0]!.problems, step).toEqual([]);
    }
  });
});
