/**
 * One behavioural suite for every vault provider (runSuite(provider)): the embedded file: vault, and the
 * https: provider (Azure Key Vault through Microsoft's SDKs) against `vhdcrypt vault serve`. Where a provider
 * cannot honour a rule, DEVIATIONS says so and why (the README's provider table says the same), and the test
 * asserts what the provider does instead: nothing is skipped.
 */
import { spawn } from 'node:child_process';
import { constants, createPublicKey, publicEncrypt, randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { inspect } from 'node:util';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import {
  ADE_CONTENT_TYPE, TAG_ROTATION, rotateKek, sealDiskKey, unsealDiskKey, type Vault,
} from '../src/vault/index.js';
import { ensureDist, root } from './fixtures/vault/dist.js';
import { ALL, fileProvider, httpsProvider, type ProviderName, type ProviderUnderTest } from './fixtures/vault/providers.js';
import { cleanupTempDirs, expectCode } from './fixtures/vault/temp-vault.js';

afterAll(cleanupTempDirs);

const HOUR = 3600_000;

type Rule = 'listed-ids-carry-versions';

/** Rules a provider does not honour as the file vault does, and why (the README's provider table says the same). */
const DEVIATIONS: Record<ProviderName, Partial<Record<Rule, string>>> = {
  file: {},
  https: {
    'listed-ids-carry-versions': "Key Vault's list of secrets returns each secret's id without a version (its latest version's attributes)",
  },
};

function honours(p: ProviderUnderTest, rule: Rule): boolean {
  return DEVIATIONS[p.name][rule] === undefined;
}

const name = (prefix: string) => `${prefix}-${randomBytes(4).toString('hex')}`;

function runSuite(label: ProviderName, start: () => Promise<ProviderUnderTest>): void {
  describe(`${label}: provider conformance`, () => {
    let p: ProviderUnderTest;
    let v: Vault;
    beforeAll(async () => {
      p = await start();
      v = await p.admin();
    }, 60_000);
    afterAll(async () => {
      await v?.close();
      await p?.stop();
    });

    test('versions: every set adds one, get returns the latest or the one named, lists are oldest first and never carry values', async () => {
      const n = name('s');
      const v1 = await v.setSecret(n, 'one', { contentType: 'text/plain', tags: { a: '1' } });
      const v2 = await v.setSecret(n, 'two');
      expect(v1.version).toMatch(/^[0-9a-f]{32}$/);
      expect(v2.version).not.toBe(v1.version);
      expect(v1.id).toBe(`${p.uri}/secrets/${n}/${v1.version}`);
      expect((await v.getSecret(n)).value).toBe('two');
      expect((await v.getSecret(n, v1.version)).value).toBe('one');
      expect((await v.getSecret(v1.id)).properties.tags).toEqual({ a: '1' });
      expect((await v.listSecretVersions(n)).map((x) => x.version)).toEqual([v1.version, v2.version]);
      const listed = (await v.listSecrets()).find((x) => x.name === n);
      expect(listed).toBeDefined();
      expect(listed!.id).toBe(honours(p, 'listed-ids-carry-versions') ? v2.id : `${p.uri}/secrets/${n}`);
      expect(JSON.stringify(listed)).not.toContain('two');
      // Attributes change without a new version.
      await v.updateSecretProperties(n, v1.version, { tags: { b: '2' }, contentType: 'x' });
      const after = await v.listSecretVersions(n);
      expect(after).toHaveLength(2);
      expect(after[0]!.tags).toEqual({ b: '2' });
    });

    test('enabled refuses get; dates on get where the provider enforces them', async () => {
      const off = name('off');
      await v.setSecret(off, 'v', { enabled: false });
      await expectCode(v.getSecret(off), 'VAULT_SECRET_DISABLED');
      await v.updateSecretProperties(off, undefined, { enabled: true });
      expect((await v.getSecret(off)).value).toBe('v');
      const future = name('future');
      const past = name('past');
      await v.setSecret(future, 'f', { notBefore: new Date(Date.now() + HOUR) });
      await v.setSecret(past, 'p', { expiresOn: new Date(Date.now() - HOUR) });
      await expectCode(v.getSecret(future), 'VAULT_SECRET_NOT_YET_VALID');
      await expectCode(v.getSecret(past), 'VAULT_SECRET_EXPIRED');
      await v.updateSecretProperties(future, undefined, { notBefore: null });
      expect((await v.getSecret(future)).value).toBe('f');
      // Dates are kept to the second either way.
      const props = (await v.listSecretVersions(past))[0]!;
      expect(props.expiresOn).not.toBeNull();
    });

    test('limits: names, 10 KB values, contentType, 15 tags', async () => {
      await expectCode(v.setSecret('bad_name', 'v'), 'VAULT_BAD_NAME');
      await expectCode(v.setSecret('x'.repeat(128), 'v'), 'VAULT_BAD_NAME');
      await expectCode(v.setSecret(name('big'), 'x'.repeat(10 * 1024 + 1)), 'VAULT_VALUE_TOO_LARGE');
      const fits = name('fits');
      await v.setSecret(fits, 'x'.repeat(10 * 1024));
      expect((await v.getSecret(fits)).value).toHaveLength(10 * 1024);
      const tags = Object.fromEntries(Array.from({ length: 16 }, (_, i) => [`t${i}`, 'v']));
      await expectCode(v.setSecret(name('tags'), 'v', { tags }), 'VAULT_TOO_MANY_TAGS');
    });

    test('soft delete hides a secret until recovered; purge removes it for good', async () => {
      const n = name('del');
      await v.setSecret(n, 'v');
      const d = await v.deleteSecret(n);
      expect(d.name).toBe(n);
      await expectCode(v.getSecret(n), 'VAULT_DELETED');
      expect((await v.listDeletedSecrets()).map((x) => x.name)).toContain(n);
      await v.recoverDeletedSecret(n);
      expect((await v.getSecret(n)).value).toBe('v');
      await expectCode(v.purgeDeletedSecret(n), 'VAULT_NOT_DELETED');
      await expectCode(v.recoverDeletedSecret(n), 'VAULT_NOT_DELETED');
      await v.deleteSecret(n);
      await v.purgeDeletedSecret(n);
      await expectCode(v.getSecret(n), 'VAULT_SECRET_NOT_FOUND');
    });

    test('access policies: each principal gets exactly what it was granted', async () => {
      const n = name('pol');
      await v.setSecret(n, 'v');
      const reader = await p.principal({ secrets: ['get'], keys: [] });
      try {
        expect((await reader.getSecret(n)).value).toBe('v');
        await expectCode(reader.setSecret(n, 'w'), 'VAULT_FORBIDDEN');
        await expectCode(reader.listSecrets(), 'VAULT_FORBIDDEN');
        const refused = await expectCode(reader.getKey('anything'), 'VAULT_FORBIDDEN');
        // Nothing that authenticates a caller travels with an error into a log (the SDK's request carries one).
        expect(inspect(refused, { depth: 20 })).not.toMatch(/bearer|authorization|eyJ[A-Za-z0-9_-]{10,}/i);
      } finally {
        await reader.close();
      }
    });

    test('keys: RSA-OAEP and RSA-OAEP-256 wraps are the standard ones (node:crypto wraps, the vault unwraps); no private part leaves', async () => {
      const k = name('k');
      const key = await v.createKey(k, { kty: 'RSA', size: 2048 });
      expect(JSON.stringify(key)).not.toMatch(/"(d|p|q|dp|dq|qi)":/);
      const pub = createPublicKey({ key: { kty: 'RSA', n: key.key.n!, e: key.key.e! }, format: 'jwk' });
      for (const alg of ['RSA-OAEP', 'RSA-OAEP-256'] as const) {
        const secret = randomBytes(32);
        const wrapped = publicEncrypt({ key: pub, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: alg === 'RSA-OAEP' ? 'sha1' : 'sha256' }, secret);
        const u = await v.unwrapKey(k, alg, wrapped);
        expect(Buffer.from(u.result).equals(secret)).toBe(true);
        expect(u.kid).toBe(key.properties.id);
        const w = await v.wrapKey(k, alg, secret);
        expect(Buffer.from((await v.unwrapKey(w.kid, alg, w.result)).result).equals(secret)).toBe(true);
      }
      await expectCode(v.unwrapKey(k, 'RSA-OAEP-256', randomBytes(256)), 'VAULT_UNWRAP_FAILED');
      const rotated = await v.rotateKey(k);
      expect(rotated.properties.version).not.toBe(key.properties.version);
      expect((await v.listKeyVersions(k)).map((x) => x.version)).toEqual([key.properties.version, rotated.properties.version]);
    });

    test('disk keys: seal and unseal in both shapes; a least-privilege principal (secrets get, keys get/unwrapKey) unseals', async () => {
      const material = randomBytes(48);
      const kek = name('kek');
      const own = await sealDiskKey(v, { diskId: name('disk'), material, kek, volumeUuid: '5c0f6a1e-8d2b-4e3a-9f10-1234567890ab' });
      expect(Buffer.from(await unsealDiskKey(v, own.secretId)).equals(material)).toBe(true);
      const ade = await sealDiskKey(v, { diskId: name('ade'), material, kek, alg: 'RSA-OAEP', ade: { machineName: 'vm1' } });
      const s = await v.getSecret(ade.secretId);
      expect(s.properties.contentType).toBe(ADE_CONTENT_TYPE);
      expect(s.properties.tags).toMatchObject({
        DiskEncryptionKeyEncryptionAlgorithm: 'RSA-OAEP', DiskEncryptionKeyEncryptionKeyURL: ade.kekId, DiskEncryptionKeyFileName: 'LinuxPassPhraseFileName', MachineName: 'vm1',
      });
      expect(s.value).toMatch(/^[A-Za-z0-9_-]+$/);
      const reader = await p.principal({ secrets: ['get'], keys: ['get', 'unwrapKey'] });
      try {
        expect(Buffer.from(await unsealDiskKey(reader, own.secretId)).equals(material)).toBe(true);
        expect(Buffer.from(await unsealDiskKey(reader, ade.secretId)).equals(material)).toBe(true);
      } finally {
        await reader.close();
      }
    });

    test('crypto-shredding: a disabled or deleted disk secret or KEK stops unseal; re-enabling or recovering restores it; purging the KEK is final', async () => {
      const material = randomBytes(64);
      const kek = name('kek');
      const disk = name('disk');
      const r = await sealDiskKey(v, { diskId: disk, material, kek });
      const opens = async () => expect(Buffer.from(await unsealDiskKey(v, r.secretId)).equals(material)).toBe(true);
      await opens();
      await v.updateSecretProperties(disk, undefined, { enabled: false });
      await expectCode(unsealDiskKey(v, r.secretId), 'VAULT_SECRET_DISABLED');
      await v.updateSecretProperties(disk, undefined, { enabled: true });
      await opens();
      await v.deleteSecret(disk);
      await expectCode(unsealDiskKey(v, r.secretId), 'VAULT_DELETED');
      await v.recoverDeletedSecret(disk);
      await opens();
      await v.updateKeyProperties(kek, undefined, { enabled: false });
      await expectCode(unsealDiskKey(v, r.secretId), 'VAULT_KEY_DISABLED');
      await v.updateKeyProperties(kek, undefined, { enabled: true });
      await opens();
      await v.deleteKey(kek);
      await expectCode(unsealDiskKey(v, r.secretId), 'VAULT_DELETED');
      await v.recoverDeletedKey(kek);
      await opens();
      await v.deleteKey(kek);
      await v.purgeDeletedKey(kek);
      await expectCode(unsealDiskKey(v, r.secretId), 'VAULT_KEY_NOT_FOUND');
    });

    test('rotate-kek rewraps every disk (both shapes, each keeping its algorithm), old ids keep opening, old KEK versions are disabled', async () => {
      const kek = name('kek');
      const disks = [];
      for (let i = 0; i < 3; i++) {
        const material = randomBytes(32);
        disks.push({ material, ...(await sealDiskKey(v, { diskId: name(`r${i}`), material, kek, ...(i === 2 ? { alg: 'RSA-OAEP' as const, ade: { machineName: 'vm' } } : {}) })) });
      }
      const result = await rotateKek(v, kek);
      expect(result.rewrapped).toHaveLength(3);
      const versions = await v.listKeyVersions(kek);
      expect(versions.map((x) => x.enabled)).toEqual([false, true]);
      expect(versions[1]!.tags[TAG_ROTATION]).toBeUndefined();
      for (const d of disks) expect(Buffer.from(await unsealDiskKey(v, d.secretId)).equals(d.material)).toBe(true);
      const adeNow = await v.getSecret(disks[2]!.secretId.split('/').at(-2)!);
      expect(adeNow.properties.contentType).toBe(ADE_CONTENT_TYPE);
      expect(adeNow.properties.tags.DiskEncryptionKeyEncryptionAlgorithm).toBe('RSA-OAEP');
      expect(adeNow.properties.tags.DiskEncryptionKeyEncryptionKeyURL).toBe(versions[1]!.id);
    });

    test('rotate-kek killed (SIGKILL) after some rewraps: every disk opens; the rerun resumes with the same new version and finishes', async () => {
      const mod = ensureDist();
      const kek = name('kek');
      const disks = [];
      for (let i = 0; i < 4; i++) {
        const material = randomBytes(32);
        disks.push({ material, ...(await sealDiskKey(v, { diskId: name(`k${i}`), material, kek })) });
      }
      const runChild = (killAfter: number) => new Promise<{ code: number | null; signal: NodeJS.Signals | null; out: string; err: string }>((resolve) => {
        const child = spawn(process.execPath, [join(root, 'test', 'fixtures', 'vault', 'rotate-child.mjs'), mod, p.uri, kek, String(killAfter)], { env: { ...process.env, ...p.childEnv } });
        let out = '';
        let err = '';
        child.stdout.on('data', (c) => (out += c));
        child.stderr.on('data', (c) => (err += c));
        child.on('close', (code, signal) => resolve({ code, signal, out, err }));
      });
      const killed = await runChild(2);
      expect(killed.signal, killed.err).toBe('SIGKILL');
      const mid = await v.listKeyVersions(kek);
      expect(mid.map((x) => x.enabled)).toEqual([true, true]);
      expect(mid[1]!.tags[TAG_ROTATION]).toBe('pending');
      for (const d of disks) expect(Buffer.from(await unsealDiskKey(v, d.secretId)).equals(d.material)).toBe(true);
      const rerun = await runChild(0);
      expect(rerun.code, rerun.err).toBe(0);
      const result = JSON.parse(rerun.out) as { kekId: string; rewrapped: string[] };
      expect(result.kekId).toBe(mid[1]!.id);
      expect(result.rewrapped).toHaveLength(2);
      for (const d of disks) expect(Buffer.from(await unsealDiskKey(v, d.secretId)).equals(d.material)).toBe(true);
    });
  });
}

runSuite('file', fileProvider);
runSuite('https', httpsProvider);
void ALL;
