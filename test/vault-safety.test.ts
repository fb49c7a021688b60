/**
 * Vault safety: a missing vault is never silently created (only `vault init`
 * and the default location on first use make one), the audit chain's head is
 * anchored, rotate-kek survives secrets it cannot parse and no error carries a
 * secret's value, least-privilege principals open disks after a rotation,
 * principal names cannot forge audit lines, and a run killed between sealing
 * and its first journal write leaves no orphaned secret.
 */
import { spawn, spawnSync } from 'node:child_process';
import { createCipheriv, hkdfSync, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { TAG_KEK_URL, WRAPPED_KEY_CONTENT_TYPE, openVault, sealDiskKey, unsealDiskKey } from '../src/vault/index.js';
import { ensureDist, root } from './fixtures/vault/dist.js';
import { cleanupTempDirs, expectCode, tempDir } from './fixtures/vault/temp-vault.js';
import { makeRaw, requireStrace } from './fixtures/engine/helpers.js';

afterAll(cleanupTempDirs);

const MIB = 1 << 20;
let work: string;
let src: string;

beforeAll(() => {
  ensureDist(true);
  work = tempDir();
  src = join(work, 'src.raw');
  makeRaw(src, 4 * MIB, [[0, MIB]]);
});

/** The compiled CLI with a clean vault environment (no $VHDCRYPT_VAULT unless given). */
function cli(args: string[], env: Record<string, string> = {}, input?: string): { status: number | null; stdout: string; stderr: string } {
  const base: Record<string, string | undefined> = { ...process.env };
  for (const k of ['VHDCRYPT_VAULT', 'VHDCRYPT_VAULT_TOKEN', 'VHDCRYPT_VAULT_PASSPHRASE', 'XDG_DATA_HOME']) delete base[k];
  const r = spawnSync(process.execPath, [join(root, 'bin', 'vhdcrypt.cjs'), ...args], { env: { ...base, ...env }, encoding: 'utf8', input });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('only vault init creates a vault', () => {
  test('encrypt --vault file:<typo> is VAULT_NOT_FOUND (exit 5), creates nothing and leaves no output', () => {
    const real = join(work, 'real-vault');
    expect(cli(['vault', 'init', '--vault', `file:${real}`]).status).toBe(0);
    const typo = join(work, 'reall-vault');
    const dst = join(work, 'typo.img');
    const r = cli(['encrypt', src, dst, '--vault', `file:${typo}`]);
    expect(r.status, r.stderr).toBe(5);
    expect(r.stderr).toMatch(/VAULT_NOT_FOUND/);
    expect(existsSync(typo)).toBe(false);
    expect(existsSync(dst)).toBe(false);
    // The same through $VHDCRYPT_VAULT: an explicit choice, so it must exist too.
    const viaEnv = cli(['encrypt', src, dst], { VHDCRYPT_VAULT: typo });
    expect(viaEnv.status, viaEnv.stderr).toBe(5);
    expect(viaEnv.stderr).toMatch(/VAULT_NOT_FOUND/);
    expect(existsSync(typo)).toBe(false);
    // An existing directory that holds no vault is not made into one either.
    const empty = join(work, 'empty-dir');
    mkdirSync(empty);
    expect(cli(['encrypt', src, dst, '--vault', `file:${empty}`]).status).toBe(5);
    expect(existsSync(join(empty, 'vault.sqlite'))).toBe(false);
    // The vault that was initialised works.
    const ok = cli(['encrypt', src, dst, '--vault', `file:${real}`]);
    expect(ok.status, ok.stderr).toBe(0);
  });

  test('a LUKS2 token naming a moved vault makes decrypt fail with VAULT_NOT_FOUND, not create it', () => {
    const v = join(work, 'moving-vault');
    expect(cli(['vault', 'init', '--vault', `file:${v}`]).status).toBe(0);
    const enc = join(work, 'moved.img');
    expect(cli(['encrypt', src, enc, '--vault', `file:${v}`]).status).toBe(0);
    const moved = join(work, 'moved-vault-new-home');
    expect(spawnSync('mv', [v, moved]).status).toBe(0);
    const dec = join(work, 'moved.dec.img');
    const r = cli(['decrypt', enc, dec]);
    expect(r.status, r.stderr).toBe(5);
    expect(r.stderr).toMatch(/VAULT_NOT_FOUND/);
    expect(existsSync(v)).toBe(false);
    expect(existsSync(dec)).toBe(false);
  });

  test('the default location is created on first use with a one-time notice naming the key file and how to back it up', () => {
    const xdg = join(work, 'xdg');
    mkdirSync(xdg);
    const home = join(xdg, 'vhdcrypt');
    const first = cli(['encrypt', src, join(work, 'default1.img')], { XDG_DATA_HOME: xdg });
    expect(first.status, first.stderr).toBe(0);
    expect(existsSync(join(home, 'vault.sqlite'))).toBe(true);
    expect(first.stderr).toContain(join(home, 'master.key'));
    expect(first.stderr).toMatch(/back up/i);
    const second = cli(['encrypt', src, join(work, 'default2.img')], { XDG_DATA_HOME: xdg });
    expect(second.status, second.stderr).toBe(0);
    expect(second.stderr).toBe('');
    // Reading commands do not create it: decrypt/info against a fresh default location say VAULT_NOT_FOUND.
    const xdg2 = join(work, 'xdg2');
    mkdirSync(xdg2);
    const show = cli(['vault', 'show'], { XDG_DATA_HOME: xdg2 });
    expect(show.status).toBe(5);
    expect(existsSync(join(xdg2, 'vhdcrypt'))).toBe(false);
  });
});

describe('the audit chain head is anchored', () => {
  async function vaultWithHistory(): Promise<string> {
    const dir = join(tempDir(), 'v');
    const v = await openVault(`file:${dir}`, { create: true });
    await v.setSecret('a', 'value-a');
    await v.getSecret('a');
    await v.setSecret('b', 'value-b');
    expect((await v.readAudit()).length).toBeGreaterThanOrEqual(3);
    await v.close();
    return dir;
  }

  /** What someone with write access to the database file does: drop the append-only trigger, then delete. */
  function deleteRows(dir: string, where: string): number {
    const d = new Database(join(dir, 'vault.sqlite'));
    try {
      d.exec('DROP TRIGGER IF EXISTS audit_append_only_delete');
      return d.prepare(`DELETE FROM audit ${where}`).run().changes;
    } finally {
      d.close();
    }
  }

  test('deleting the newest entry is VAULT_TAMPERED on reopen', async () => {
    const dir = await vaultWithHistory();
    expect(deleteRows(dir, 'WHERE seq = (SELECT MAX(seq) FROM audit)')).toBe(1);
    await expectCode(openVault(`file:${dir}`), 'VAULT_TAMPERED');
  });

  test('deleting the newest entries while a handle is open is VAULT_TAMPERED on readAudit and on the next call', async () => {
    const dir = await vaultWithHistory();
    const v = await openVault(`file:${dir}`);
    try {
      expect(deleteRows(dir, 'WHERE seq > (SELECT MAX(seq) - 2 FROM audit)')).toBe(2);
      await expectCode(v.readAudit(), 'VAULT_TAMPERED');
    } finally {
      await v.close();
    }
  });

  test('deleting every entry is VAULT_TAMPERED; so is deleting the head with them', async () => {
    const dir = await vaultWithHistory();
    expect(deleteRows(dir, '')).toBeGreaterThan(3);
    await expectCode(openVault(`file:${dir}`), 'VAULT_TAMPERED');
    const d = new Database(join(dir, 'vault.sqlite'));
    d.prepare("DELETE FROM meta WHERE k = 'audit_head'").run();
    d.close();
    await expectCode(openVault(`file:${dir}`), 'VAULT_TAMPERED');
  });

  test('a vault made before the head existed is anchored once on open; after that its tail is protected too', async () => {
    const dir = await vaultWithHistory();
    // Make it look like the older format: the check value sealed (as documented) over the older text, no head.
    const master = readFileSync(join(dir, 'master.key'));
    const recordKey = Buffer.from(hkdfSync('sha256', master, Buffer.alloc(0), 'vhdcrypt vault records v1', 32));
    const d = new Database(join(dir, 'vault.sqlite'));
    const vaultId = String((d.prepare("SELECT v FROM meta WHERE k = 'vault_id'").get() as { v: string }).v);
    const nonce = randomBytes(12);
    const c = createCipheriv('aes-256-gcm', recordKey, nonce);
    c.setAAD(Buffer.from(`vhdcrypt-vault/v1|${vaultId}|meta|check`));
    const body = Buffer.concat([c.update('vhdcrypt-vault-master-key-check'), c.final()]);
    d.prepare("UPDATE meta SET v = ? WHERE k = 'check'").run(Buffer.concat([nonce, body, c.getAuthTag()]));
    d.prepare("DELETE FROM meta WHERE k = 'audit_head'").run();
    d.close();
    const v = await openVault(`file:${dir}`);
    expect((await v.readAudit()).length).toBeGreaterThan(3);
    await v.close();
    expect(deleteRows(dir, 'WHERE seq = (SELECT MAX(seq) FROM audit)')).toBe(1);
    await expectCode(openVault(`file:${dir}`), 'VAULT_TAMPERED');
  });

  test('an untouched log still verifies, across reopenings', async () => {
    const dir = await vaultWithHistory();
    const v = await openVault(`file:${dir}`);
    const log = await v.readAudit();
    expect(log.map((e) => e.seq)).toEqual(log.map((_, i) => i + 1));
    await v.close();
  });
});

/** Every error message and CLI stderr is checked against each planted value and every 8-character piece of it. */
function expectNoPlant(texts: string[], plants: string[]): void {
  for (const plant of plants) {
    for (let i = 0; i + 8 <= plant.length; i++) {
      const piece = plant.slice(i, i + 8);
      for (const t of texts) expect(t.includes(piece), `"${piece}" of a planted value appears in: ${t}`).toBe(false);
    }
  }
}

async function errorText(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    const parts: string[] = [];
    for (let x: unknown = e; x instanceof Error; x = x.cause) parts.push(`${x.message}\n${x.stack ?? ''}`);
    return parts.join('\n');
  }
  throw new Error('expected a failure');
}

describe('rotate-kek and secrets a principal planted', () => {
  test('rotate-kek skips, reports and audits unparsable disk secrets on every rerun; no error carries a planted value', async () => {
    const dir = join(tempDir(), 'v');
    const uri = `file:${dir}`;
    const env = { VHDCRYPT_VAULT: dir };
    expect(cli(['vault', 'init'], env).status).toBe(0);
    const owner = await openVault(uri);
    const good = await sealDiskKey(owner, { diskId: 'good-disk', material: randomBytes(32), kek: 'kek' });
    const { token } = await owner.addPrincipal('writer');
    await owner.setAccessPolicy('writer', { secrets: ['set'], keys: [] });
    const writer = await openVault(uri, { token });
    const kekId = (await owner.getKey('kek')).properties.id;
    const PLANT_RAW = 'Zq7 planted: hunter2-LONG-s3cr3t {not json}';
    const PLANT_NAME = 'Zq7planted-kid-s3cr3t-name';
    const PLANT_WRAP = 'Zq7plantedWrappedS3cr3tBase64url';
    const PLANT_ALG = 'Zq7-planted-ALG-s3cr3t';
    const plants = [PLANT_RAW, PLANT_NAME, PLANT_WRAP, PLANT_ALG];
    const shapes: Record<string, string> = {
      'p-raw': PLANT_RAW,
      'p-kid-id': JSON.stringify({ alg: 'RSA-OAEP-256', kid: `${uri}/keys/${PLANT_NAME}/${'a'.repeat(32)}`, wrapped: 'AAAA' }),
      'p-kid-name': JSON.stringify({ alg: 'RSA-OAEP-256', kid: PLANT_NAME, wrapped: 'AAAA' }),
      'p-kid-path': JSON.stringify({ alg: 'RSA-OAEP-256', kid: `/x/${PLANT_NAME}`, wrapped: 'AAAA' }),
      'p-wrapped': JSON.stringify({ alg: 'RSA-OAEP-256', kid: kekId, wrapped: PLANT_WRAP }),
      'p-alg': JSON.stringify({ alg: PLANT_ALG, kid: kekId, wrapped: 'AAAA' }),
      'p-array': JSON.stringify([PLANT_RAW]),
    };
    const ids: string[] = [];
    for (const [name, value] of Object.entries(shapes)) {
      ids.push((await writer.setSecret(name, value, { contentType: WRAPPED_KEY_CONTENT_TYPE, tags: { [TAG_KEK_URL]: kekId } })).id);
    }
    const plainText = (await writer.setSecret('p-text', PLANT_RAW, { contentType: 'text/plain' })).id;
    await writer.close();

    const texts: string[] = [];
    for (const run of [1, 2]) {
      const r = cli(['vault', 'rotate-kek', 'kek', '--json'], env);
      expect(r.status, `run ${run}: ${r.stderr}`).toBe(0);
      texts.push(r.stderr, r.stdout);
      const out = JSON.parse(r.stdout) as { rewrapped: string[]; unreadable: Array<{ id: string; code: string }> };
      expect(out.rewrapped).toHaveLength(1);
      expect(out.unreadable.map((u) => u.id).sort()).toEqual([...ids].sort());
      expect(r.stderr.split('\n').filter((l) => l.includes('skipped'))).toHaveLength(ids.length);
    }
    expect(Buffer.from(await unsealDiskKey(owner, good.secretId)).length).toBe(32);
    const skips = (await owner.readAudit()).filter((e) => e.operation === 'rotateKek.skip');
    expect(skips).toHaveLength(2 * ids.length);
    expect(new Set(skips.map((e) => e.objectId))).toEqual(new Set(ids));

    // Unsealing each planted secret, and one of the wrong content type, fails typed and valueless.
    for (const id of [...ids, plainText]) {
      texts.push(await errorText(unsealDiskKey(owner, id)));
      const d = cli(['decrypt', src, join(work, 'never.img'), '--secret', id], env);
      expect(d.status, d.stderr).toBe(5);
      texts.push(d.stderr);
    }
    texts.push(...(await owner.readAudit()).map((e) => JSON.stringify(e)));
    texts.push(cli(['vault', 'audit'], env).stdout);
    await owner.close();
    expectNoPlant(texts, plants);
  });
});

describe('least-privilege principals after rotate-kek', () => {
  test('secrets get + keys unwrapKey opens a disk sealed before the rotation (encrypt, rotate as owner, decrypt as the principal)', () => {
    const dir = join(tempDir(), 'v');
    const env = { VHDCRYPT_VAULT: dir };
    expect(cli(['vault', 'init'], env).status).toBe(0);
    const enc = join(work, 'ade.img');
    expect(cli(['encrypt', src, enc], env).status).toBe(0);
    const token = cli(['vault', 'principal', 'add', '--name', 'compute'], env).stdout.trim();
    expect(cli(['vault', 'policy', 'set', '--principal', 'compute', '--secret-permissions', 'get', '--key-permissions', 'unwrapKey'], env).status).toBe(0);
    for (const round of [1, 2]) {
      const rot = cli(['vault', 'rotate-kek', 'vhdcrypt-kek'], env);
      expect(rot.status, rot.stderr).toBe(0);
      const dec = join(work, `ade.dec${round}.img`);
      const r = cli(['decrypt', enc, dec], { ...env, VHDCRYPT_VAULT_TOKEN: token });
      expect(r.status, `after rotation ${round}: ${r.stderr}`).toBe(0);
      expect(readFileSync(dec).equals(readFileSync(src))).toBe(true);
    }
  });
});

describe('audit lines cannot be forged through names', () => {
  test('tabs and newlines in a token, a principal name or an object name never reach an audit line', async () => {
    const dir = join(tempDir(), 'v');
    const uri = `file:${dir}`;
    const owner = await openVault(uri, { create: true });
    const forged = `x\n999\t2030-01-01T00:00:00.000Z\towner\tpurgeDeletedSecret\t${uri}/secrets/s\tok`;
    await expectCode(openVault(uri, { token: `${forged}.abc` }), 'VAULT_UNAUTHENTICATED');
    await expectCode(owner.addPrincipal('bad\tname'), 'VAULT_BAD_NAME');
    await expectCode(owner.addPrincipal(forged), 'VAULT_BAD_NAME');
    await expectCode(owner.setAccessPolicy(forged, { secrets: ['get'] }), 'VAULT_BAD_NAME');
    await expectCode(owner.removePrincipal(forged), 'VAULT_BAD_NAME');
    await expectCode(owner.setSecret(forged, 'v'), 'VAULT_BAD_NAME');
    const log = await owner.readAudit();
    await owner.close();
    for (const e of log) for (const f of [e.principal, e.operation, e.objectId, e.result]) expect(f).not.toMatch(/[\t\n\r]/);
    const listing = cli(['vault', 'audit'], { VHDCRYPT_VAULT: dir }).stdout;
    // One line per entry: those read above plus that readAudit call's own entry.
    expect(listing.trimEnd().split('\n')).toHaveLength(log.length + 1);
  });
});

describe('vault secret set --value', () => {
  test('warns that argv is visible to other processes; --value - reads stdin without the warning', () => {
    const dir = join(tempDir(), 'v');
    const env = { VHDCRYPT_VAULT: dir };
    expect(cli(['vault', 'init'], env).status).toBe(0);
    const shown = cli(['vault', 'secret', 'set', '--name', 'a', '--value', 'on-the-command-line'], env);
    expect(shown.status).toBe(0);
    expect(shown.stderr).toMatch(/visible to other processes/);
    const piped = cli(['vault', 'secret', 'set', '--name', 'b', '--value', '-'], env, 'from stdin, with spaces\n');
    expect(piped.status, piped.stderr).toBe(0);
    expect(piped.stderr).toBe('');
    expect(cli(['vault', 'secret', 'show', '--name', 'b'], env).stdout).toBe('from stdin, with spaces\n');
    const big = cli(['vault', 'secret', 'set', '--name', 'c', '--value', '-'], env, 'x'.repeat(20_000));
    expect(big.status).toBe(2);
    expect(big.stderr).toMatch(/VAULT_VALUE_TOO_LARGE/);
  });
});

describe('resource exhaustion is a typed error', () => {
  test('encrypt and vault commands under a lowered ulimit -n: exit 0 or a one-line EMFILE report (exit 1), never internal error 70 or a crash', () => {
    const dir = join(tempDir(), 'v');
    const env = { VHDCRYPT_VAULT: dir };
    expect(cli(['vault', 'init'], env).status).toBe(0);
    const seen = new Set<number | null>();
    const underLimit = (n: number, args: string[]) =>
      spawnSync('bash', ['-c', `ulimit -n ${n}; exec "$@"`, 'bash', process.execPath, ...args], {
        env: { ...process.env, ...env }, encoding: 'utf8', timeout: 60_000,
      });
    // Below some limit Node itself fails before the first line of any script runs, so no program of ours can
    // report anything there: its start-up dies on a NULL event loop (SIGSEGV in node::Start: uv_default_loop()
    // fails with EMFILE; Node 20 up to 17 descriptors, Node 24 up to 20, measured here), then its module loader
    // cannot read package.json (exit 1 with its own message). The sweep starts at the lowest limit where this
    // Node runs a script file that does nothing, and it must keep running it at every limit above.
    const probe = join(tempDir(), 'start.mjs');
    writeFileSync(probe, 'process.exitCode = 0;\n');
    const nodeRuns = (n: number): boolean => underLimit(n, [probe]).status === 0;
    let first = 8;
    while (first < 64 && !nodeRuns(first)) first++;
    expect(first).toBeLessThan(64);
    // From there up to where a run succeeds, every run of ours is exit 0 or a typed EMFILE report, never a crash;
    // each hits EMFILE at a different place (module loading, the vault database, its key file, the output, the journal).
    for (let n = first; n <= first + 21; n++) {
      expect(nodeRuns(n), `Node itself fails at ulimit -n ${n}, above ${first}`).toBe(true);
      for (const args of [['encrypt', src, join(work, 'ulimit.img'), '--force'], ['vault', 'secret', 'list']]) {
        const r = underLimit(n, [join(root, 'bin', 'vhdcrypt.cjs'), ...args]);
        seen.add(r.status);
        expect(r.signal, `ulimit -n ${n} ${args[0]}: ${r.stderr}`).toBeNull();
        if (r.status === 0) continue;
        expect(r.status, `ulimit -n ${n} ${args.join(' ')}: ${r.stderr}`).toBe(1);
        expect(r.stderr).toMatch(/^vhdcrypt: EMFILE: [^\n]*ulimit -n[^\n]*\n$/);
      }
    }
    expect(seen.has(1)).toBe(true);
    expect(seen.has(0)).toBe(true);
  });

  test('a package required while the process has no descriptor left is EMFILE, not "Cannot find module" (CommonJS takes a failed read for absence)', () => {
    const script = `
      import { openSync } from 'node:fs';
      const { requirePackage } = await import(${JSON.stringify(join(root, 'dist', 'src', 'package-root.js'))});
      const held = [];
      try { for (;;) held.push(openSync('/dev/null', 'r')); } catch {}
      const codes = [];
      try { requirePackage(import.meta.url, 'piscina'); codes.push('loaded'); } catch (e) { codes.push(e.code + (String(e.message).includes('\\n') ? ' multiline' : '')); }
      // Not installed at all stays MODULE_NOT_FOUND once descriptors are back.
      for (const fd of held.splice(0, 8)) (await import('node:fs')).closeSync(fd);
      try { requirePackage(import.meta.url, 'no-such-package-vhdcrypt'); } catch (e) { codes.push(e.code); }
      process.stdout.write(codes.join(' '));`;
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { cwd: root, encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toBe('EMFILE MODULE_NOT_FOUND');
  });

  test('a file size limit (ulimit -f) is a one-line EFBIG report (exit 1) and the run leaves nothing behind', () => {
    const dir = join(tempDir(), 'v');
    const env = { VHDCRYPT_VAULT: dir };
    expect(cli(['vault', 'init'], env).status).toBe(0);
    const dst = join(work, 'fsize.img');
    const r = spawnSync('bash', ['-c', 'ulimit -f 2048; exec "$@"', 'bash', process.execPath, join(root, 'bin', 'vhdcrypt.cjs'), 'encrypt', src, dst], {
      env: { ...process.env, ...env }, encoding: 'utf8', timeout: 60_000,
    });
    expect(r.status, r.stderr).toBe(1);
    expect(r.stderr).toMatch(/^vhdcrypt: EFBIG: [^\n]*ulimit -f[^\n]*\n$/);
    expect(existsSync(dst)).toBe(false);
  });
});

describe('a run killed between sealing its key and its first journal write', () => {
  /** Start `vhdcrypt encrypt`, stop it as soon as its secret is committed, and SIGKILL it; true when no journal existed then. */
  async function killAfterSeal(env: Record<string, string>, vaultDir: string, dst: string): Promise<boolean> {
    const journal = join(work, `.${basename(dst)}.vhdcrypt-journal`);
    const child = spawn(process.execPath, [join(root, 'bin', 'vhdcrypt.cjs'), 'encrypt', src, dst], { env: { ...process.env, ...env }, stdio: 'ignore' });
    let exited = false;
    const done = new Promise<void>((resolve) => child.on('exit', () => {
      exited = true;
      resolve();
    }));
    const db = new Database(join(vaultDir, 'vault.sqlite'), { readonly: true, fileMustExist: true });
    try {
      const count = db.prepare("SELECT count(*) AS n FROM versions WHERE kind = 'secrets'");
      // Poll the vault read-only between turns of the event loop until the child's seal has committed.
      while (!exited && (count.get() as { n: number }).n === 0) await new Promise((r) => setImmediate(r));
    } finally {
      db.close();
    }
    if (exited) throw new Error('the child finished before its secret was seen');
    // Frozen first, so what is on disk at the kill is exactly what the check below sees.
    child.kill('SIGSTOP');
    const inWindow = !existsSync(journal);
    child.kill('SIGKILL');
    await done;
    return inWindow;
  }

  test('leaves no orphaned secret: the next run of the same job (--resume) removes it, and its own secret is not pending', async () => {
    let hit: { dir: string; dst: string } | null = null;
    for (let attempt = 0; attempt < 12 && !hit; attempt++) {
      const dir = join(tempDir(), 'v');
      const env = { VHDCRYPT_VAULT: dir };
      expect(cli(['vault', 'init'], env).status).toBe(0);
      const dst = join(work, `killed-${attempt}.img`);
      if (await killAfterSeal(env, dir, dst)) hit = { dir, dst };
    }
    expect(hit, 'no attempt stopped the run between its seal and its journal').not.toBeNull();
    const { dir, dst } = hit!;
    const env = { VHDCRYPT_VAULT: dir };
    const v0 = await openVault(`file:${dir}`);
    const orphans = (await v0.listSecrets()).filter((s) => s.contentType === WRAPPED_KEY_CONTENT_TYPE);
    await v0.close();
    expect(orphans).toHaveLength(1);
    expect(orphans[0]!.tags['vhdcrypt-pending']).toBeDefined();

    const again = cli(['encrypt', src, dst, '--resume', '--json'], env);
    expect(again.status, again.stderr).toBe(0);
    const secretId = (JSON.parse(again.stdout) as { secretId: string }).secretId;
    const v = await openVault(`file:${dir}`);
    try {
      const live = (await v.listSecrets()).filter((s) => s.contentType === WRAPPED_KEY_CONTENT_TYPE);
      expect(live.map((s) => s.id)).toEqual([secretId]);
      expect(live[0]!.tags['vhdcrypt-pending']).toBeUndefined();
      expect((await v.listDeletedSecrets()).map((d) => d.name)).toEqual([orphans[0]!.name]);
    } finally {
      await v.close();
    }
    const dec = join(work, 'killed.dec.img');
    expect(cli(['decrypt', dst, dec], env).status).toBe(0);
    expect(readFileSync(dec).equals(readFileSync(src))).toBe(true);
  });
});

describe('an encrypt opens its vault once', () => {
  test('the pending-secret check, the seal and settling it share one open of the database (strace: one openat of vault.sqlite)', () => {
    requireStrace();
    const dir = join(tempDir(), 'v');
    const env = { VHDCRYPT_VAULT: dir };
    expect(cli(['vault', 'init'], env).status).toBe(0);
    const trace = join(work, 'open-once.trace');
    const base: Record<string, string | undefined> = { ...process.env, ...env };
    for (const k of ['VHDCRYPT_VAULT_TOKEN', 'VHDCRYPT_VAULT_PASSPHRASE', 'XDG_DATA_HOME']) delete base[k];
    const r = spawnSync('strace', ['-f', '-qq', '-e', 'trace=openat', '-e', 'signal=none', '-o', trace, process.execPath, join(root, 'bin', 'vhdcrypt.cjs'), 'encrypt', src, join(work, 'open-once.img'), '--json'], { env: base, encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    // Its secret was sealed and settled: the journal named it, so it is not pending.
    const secretId = (JSON.parse(r.stdout) as { secretId: string }).secretId;
    expect(secretId).toContain('/secrets/');
    const opens = readFileSync(trace, 'utf8').split('\n').filter((l) => /openat\(.*vault\.sqlite"/.test(l));
    expect(opens, opens.join('\n')).toHaveLength(1);
  });

  test('a run that finished sealing leaves no sealing marker, so the next run of the job does not list the vault\'s secrets', async () => {
    const dir = join(tempDir(), 'v');
    const env = { VHDCRYPT_VAULT: dir };
    expect(cli(['vault', 'init'], env).status).toBe(0);
    const dst = join(work, 'no-scan.img');
    for (const force of [[], ['--force']]) {
      const r = cli(['encrypt', src, dst, ...force], env);
      expect(r.status, r.stderr).toBe(0);
      expect(existsSync(join(work, '.no-scan.img.vhdcrypt-sealing'))).toBe(false);
    }
    const v = await openVault(`file:${dir}`);
    try {
      const ops = (await v.readAudit()).map((e) => e.operation);
      expect(ops.filter((o) => o === 'setSecret')).toHaveLength(2);
      expect(ops).not.toContain('listSecrets');
    } finally {
      await v.close();
    }
  });
});
