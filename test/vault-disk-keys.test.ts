/** Disk keys: sealing under the KEK, unsealing, lookup by volume UUID, crypto-shredding, KEK rotation killed halfway. */
import { spawn } from 'node:child_process';
import { constants, createPublicKey, publicEncrypt, randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, test } from 'vitest';
import {
  TAG_ROTATION, WRAPPED_KEY_CONTENT_TYPE, diskSecretName, findDiskSecretByVolumeUuid, openVault, rotateKek, sealDiskKey, unsealDiskKey,
  type Vault,
} from '../src/vault/index.js';
import { ensureDist, root } from './fixtures/vault/dist.js';
import { cleanupTempDirs, expectCode, tempDir } from './fixtures/vault/temp-vault.js';

let vault: Vault;
let uri: string;
beforeEach(async () => {
  uri = `file:${tempDir()}`;
  vault = await openVault(uri, { create: true });
});
afterEach(async () => {
  await vault.close();
});
afterAll(cleanupTempDirs);

const UUID = '5c0f6a1e-8d2b-4e3a-9f10-1234567890ab';

describe('seal and unseal', () => {
  test('the secret holds { alg, kid, wrapped } and ADE-style tags; the material never appears in it', async () => {
    const material = randomBytes(64);
    const r = await sealDiskKey(vault, { diskId: 'disk-1', material, kek: 'kek', tags: { Owner: 'ops' }, volumeUuid: UUID.toUpperCase(), sourceName: 'base.vhd' });
    const secret = await vault.getSecret(r.secretId);
    expect(secret.properties.contentType).toBe(WRAPPED_KEY_CONTENT_TYPE);
    const doc = JSON.parse(secret.value) as { alg: string; kid: string; wrapped: string };
    expect(doc.alg).toBe('RSA-OAEP-256');
    expect(doc.kid).toBe(r.kekId);
    expect(r.kekId).toMatch(new RegExp(`^${uri}/keys/kek/[0-9a-f]{32}$`));
    expect(secret.properties.tags).toEqual({
      Owner: 'ops',
      DiskEncryptionKeyEncryptionAlgorithm: 'RSA-OAEP-256',
      DiskEncryptionKeyEncryptionKeyURL: r.kekId,
      DiskId: 'disk-1',
      VolumeUuid: UUID,
      SourceImage: 'base.vhd',
    });
    expect(secret.value).not.toContain(material.toString('base64url'));
    expect(secret.value).not.toContain(material.toString('hex'));
    // The KEK was created on first use as RSA-2048.
    expect((await vault.getKey('kek')).properties).toMatchObject({ kty: 'RSA', keySize: 2048 });
    const back = await unsealDiskKey(vault, r.secretId);
    expect(Buffer.from(back).equals(material)).toBe(true);
    expect(Buffer.from(await unsealDiskKey(vault, { name: 'disk-1' })).equals(material)).toBe(true);
  });

  test('material wrapped by node:crypto with the KEK public JWK unseals (the wrapped form is standard RSA-OAEP-256)', async () => {
    const first = await sealDiskKey(vault, { diskId: 'warmup', material: randomBytes(32), kek: 'kek' });
    const pub = (await vault.getKey(first.kekId)).key;
    const material = randomBytes(48);
    const wrapped = publicEncrypt(
      { key: createPublicKey({ key: { kty: 'RSA', n: pub.n!, e: pub.e! }, format: 'jwk' }), padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' },
      material,
    );
    const s = await vault.setSecret('hand-made', JSON.stringify({ alg: 'RSA-OAEP-256', kid: first.kekId, wrapped: wrapped.toString('base64url') }), {
      contentType: WRAPPED_KEY_CONTENT_TYPE,
    });
    expect(Buffer.from(await unsealDiskKey(vault, s.id)).equals(material)).toBe(true);
  });

  test('an existing oct KEK seals with A256KW', async () => {
    await vault.createKey('octkek', { kty: 'oct' });
    const material = randomBytes(64);
    const r = await sealDiskKey(vault, { diskId: 'd', material, kek: 'octkek' });
    expect(JSON.parse((await vault.getSecret(r.secretId)).value).alg).toBe('A256KW');
    expect(Buffer.from(await unsealDiskKey(vault, r.secretId)).equals(material)).toBe(true);
  });

  test('disk ids become valid, distinct secret names', async () => {
    expect(diskSecretName('disk-1')).toBe('disk-1');
    const a = diskSecretName('/images/a_b.vhd');
    const b = diskSecretName('/images/a.b.vhd');
    for (const n of [a, b, diskSecretName('ü'), diskSecretName('x'.repeat(300))]) expect(n).toMatch(/^[0-9A-Za-z-]{1,127}$/);
    expect(a).not.toBe(b);
    const r = await sealDiskKey(vault, { diskId: '/images/a_b.vhd', material: randomBytes(32), kek: 'kek' });
    expect(r.secretId).toContain(`/secrets/${a}/`);
  });

  test('refused in a vault not enabled for disk encryption', async () => {
    await vault.setProperties({ enabledForDiskEncryption: false });
    await expectCode(sealDiskKey(vault, { diskId: 'd', material: randomBytes(32), kek: 'kek' }), 'VAULT_NOT_FOR_DISK_ENCRYPTION');
    expect(await vault.listKeys()).toEqual([]);
    expect(await vault.listSecrets()).toEqual([]);
  });

  test('a non-disk secret, or a wrong KEK in the document, does not unseal', async () => {
    const s = await vault.setSecret('plain', 'hello');
    await expectCode(unsealDiskKey(vault, s.id), 'VAULT_NOT_A_DISK_SECRET');
    const a = await sealDiskKey(vault, { diskId: 'a', material: randomBytes(32), kek: 'kek-a' });
    const b = await sealDiskKey(vault, { diskId: 'b', material: randomBytes(32), kek: 'kek-b' });
    const docA = JSON.parse((await vault.getSecret(a.secretId)).value) as { alg: string; wrapped: string };
    const forged = await vault.setSecret('forged', JSON.stringify({ ...docA, kid: b.kekId }), { contentType: WRAPPED_KEY_CONTENT_TYPE });
    await expectCode(unsealDiskKey(vault, forged.id), 'VAULT_UNWRAP_FAILED');
  });

  test('found by volume UUID (newest sealing wins), null when absent', async () => {
    await sealDiskKey(vault, { diskId: 'other', material: randomBytes(32), kek: 'kek', volumeUuid: randomBytes(16).toString('hex') });
    await sealDiskKey(vault, { diskId: 'old', material: randomBytes(32), kek: 'kek', volumeUuid: UUID });
    const material = randomBytes(32);
    const r = await sealDiskKey(vault, { diskId: 'new', material, kek: 'kek', volumeUuid: UUID });
    const found = await findDiskSecretByVolumeUuid(vault, UUID.toUpperCase());
    expect(found?.id).toBe(r.secretId);
    expect(Buffer.from(await unsealDiskKey(vault, found!.id)).equals(material)).toBe(true);
    expect(await findDiskSecretByVolumeUuid(vault, '00000000-0000-0000-0000-000000000000')).toBeNull();
  });

  test('a principal with only secrets/get and keys/unwrapKey can unseal (like ADE compute)', async () => {
    const material = randomBytes(32);
    const r = await sealDiskKey(vault, { diskId: 'd', material, kek: 'kek' });
    const { token } = await vault.addPrincipal('compute');
    await vault.setAccessPolicy('compute', { secrets: ['get'], keys: ['unwrapKey'] });
    const compute = await openVault(uri, { token });
    try {
      expect(Buffer.from(await unsealDiskKey(compute, r.secretId)).equals(material)).toBe(true);
      await expectCode(sealDiskKey(compute, { diskId: 'e', material, kek: 'kek' }), 'VAULT_FORBIDDEN');
    } finally {
      await compute.close();
    }
  });
});

describe('crypto-shredding', () => {
  test('disabling or deleting the disk secret or its KEK stops unseal; re-enabling or recovering restores it', async () => {
    const material = randomBytes(64);
    const r = await sealDiskKey(vault, { diskId: 'disk', material, kek: 'kek' });
    const opens = async () => expect(Buffer.from(await unsealDiskKey(vault, r.secretId)).equals(material)).toBe(true);
    await opens();

    await vault.updateSecretProperties('disk', undefined, { enabled: false });
    await expectCode(unsealDiskKey(vault, r.secretId), 'VAULT_SECRET_DISABLED');
    await vault.updateSecretProperties('disk', undefined, { enabled: true });
    await opens();

    await vault.deleteSecret('disk');
    await expectCode(unsealDiskKey(vault, r.secretId), 'VAULT_DELETED');
    await vault.recoverDeletedSecret('disk');
    await opens();

    await vault.updateKeyProperties('kek', undefined, { enabled: false });
    await expectCode(unsealDiskKey(vault, r.secretId), 'VAULT_KEY_DISABLED');
    await vault.updateKeyProperties('kek', undefined, { enabled: true });
    await opens();

    await vault.deleteKey('kek');
    await expectCode(unsealDiskKey(vault, r.secretId), 'VAULT_DELETED');
    await vault.recoverDeletedKey('kek');
    await opens();

    // Dates on the KEK do not lock the disk out.
    await vault.updateKeyProperties('kek', undefined, { expiresOn: new Date(Date.now() - 1000) });
    await opens();
    await expectCode(sealDiskKey(vault, { diskId: 'new', material, kek: 'kek' }), 'VAULT_KEY_EXPIRED');

    // Purging the KEK is final.
    await vault.deleteKey('kek');
    await vault.purgeDeletedKey('kek');
    await expectCode(unsealDiskKey(vault, r.secretId), 'VAULT_KEY_NOT_FOUND');
  });
});

describe('rotate-kek', () => {
  test('rewraps every disk secret, old ids keep working, old KEK versions are disabled', async () => {
    const disks = await Promise.all([0, 1, 2].map(async (i) => {
      const material = randomBytes(64);
      return { material, ...(await sealDiskKey(vault, { diskId: `disk-${i}`, material, kek: 'kek' })) };
    }));
    await vault.setSecret('unrelated', 'x');
    const res = await rotateKek(vault, 'kek');
    expect(res.rewrapped).toHaveLength(3);
    expect(res.disabled).toEqual([disks[0]!.kekId]);
    const versions = await vault.listKeyVersions('kek');
    expect(versions.map((v) => v.enabled)).toEqual([false, true]);
    expect(versions[1]!.tags[TAG_ROTATION]).toBeUndefined();
    for (const d of disks) {
      expect(Buffer.from(await unsealDiskKey(vault, d.secretId)).equals(d.material)).toBe(true);
      const latest = await vault.getSecret(d.secretId.split('/').slice(0, -1).join('/'));
      expect(JSON.parse(latest.value).kid).toBe(res.kekId);
    }
    // A second rotation is a new one (third version); nothing left to do leaves nothing rewrapped twice.
    const again = await rotateKek(vault, 'kek');
    expect(again.kekId).not.toBe(res.kekId);
    expect(again.rewrapped).toHaveLength(3);
    // Disabling the newest version of a disk's lineage shreds it, even through its first id.
    await vault.updateSecretProperties('disk-0', undefined, { enabled: false });
    await expectCode(unsealDiskKey(vault, disks[0]!.secretId), 'VAULT_SECRET_DISABLED');
  });

  test('a disabled or deleted disk secret keeps its KEK version enabled', async () => {
    const kept = await sealDiskKey(vault, { diskId: 'shredded', material: randomBytes(32), kek: 'kek' });
    const gone = await sealDiskKey(vault, { diskId: 'deleted', material: randomBytes(32), kek: 'kek' });
    await vault.updateSecretProperties(kept.secretId, undefined, { enabled: false });
    await vault.deleteSecret('deleted');
    const res = await rotateKek(vault, 'kek');
    expect(res.rewrapped).toEqual([]);
    expect(res.skipped.sort()).toEqual([kept.secretId, gone.secretId].sort());
    expect(res.keptEnabled).toEqual([kept.kekId]);
    await vault.updateSecretProperties(kept.secretId, undefined, { enabled: true });
    await vault.recoverDeletedSecret('deleted');
    await unsealDiskKey(vault, kept.secretId);
    await unsealDiskKey(vault, gone.secretId);
  });

  test('a seal racing a rotation (wrapped with the old version, stored after the rotation scanned) ends on the new version', async () => {
    const early = await sealDiskKey(vault, { diskId: 'early', material: randomBytes(32), kek: 'kek' });
    const rotator = await openVault(uri);
    let rotated: Awaited<ReturnType<typeof rotateKek>> | undefined;
    // The vault as seen by the sealing caller: its first setSecret waits for a whole rotation run by another handle.
    const racing = new Proxy(vault, {
      get(target, prop, receiver) {
        if (prop === 'setSecret' && !rotated) {
          return async (...args: Parameters<Vault['setSecret']>) => {
            rotated = await rotateKek(rotator, 'kek');
            return target.setSecret(...args);
          };
        }
        const v = Reflect.get(target, prop, receiver) as unknown;
        return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
      },
    });
    const material = randomBytes(64);
    const late = await sealDiskKey(racing, { diskId: 'late', material, kek: 'kek' });
    await rotator.close();
    expect(rotated!.disabled).toEqual([early.kekId]);
    expect(late.kekId).toBe(rotated!.kekId);
    expect(Buffer.from(await unsealDiskKey(vault, late.secretId)).equals(material)).toBe(true);
    expect((await vault.listSecretVersions('late'))).toHaveLength(2);
  });

  describe('killed halfway (a child process SIGKILLs itself after some rewraps)', () => {
    let mod: string;
    beforeAll(() => {
      mod = ensureDist();
    });

    const runChild = (killAfter: number) => new Promise<{ code: number | null; signal: NodeJS.Signals | null; out: string; err: string }>((resolve) => {
      const child = spawn(process.execPath, [join(root, 'test', 'fixtures', 'vault', 'rotate-child.mjs'), mod, uri, 'kek', String(killAfter)]);
      let out = '';
      let err = '';
      child.stdout.on('data', (c) => (out += c));
      child.stderr.on('data', (c) => (err += c));
      child.on('close', (code, signal) => resolve({ code, signal, out, err }));
    });

    test('every disk opens after the kill, the rerun resumes with the same new KEK version and finishes', async () => {
      const disks: Array<{ material: Buffer; secretId: string; kekId: string }> = [];
      for (let i = 0; i < 6; i++) {
        const material = randomBytes(64);
        disks.push({ material, ...(await sealDiskKey(vault, { diskId: `disk-${i}`, material, kek: 'kek' })) });
      }
      const allOpen = async () => {
        for (const d of disks) {
          expect(Buffer.from(await unsealDiskKey(vault, d.secretId)).equals(d.material)).toBe(true);
          expect(Buffer.from(await unsealDiskKey(vault, { name: d.secretId.split('/').at(-2)! })).equals(d.material)).toBe(true);
        }
      };

      const killed = await runChild(3);
      expect(killed.signal, killed.err).toBe('SIGKILL');
      const mid = await vault.listKeyVersions('kek');
      expect(mid).toHaveLength(2);
      expect(mid.map((v) => v.enabled)).toEqual([true, true]);
      expect(mid[1]!.tags[TAG_ROTATION]).toBe('pending');
      const onNew = (await Promise.all(disks.map(async (d) => JSON.parse((await vault.getSecret(d.secretId.split('/').at(-2)!)).value).kid)))
        .filter((kid) => kid === mid[1]!.id);
      expect(onNew).toHaveLength(3);
      await allOpen();

      const rerun = await runChild(0);
      expect(rerun.code, rerun.err).toBe(0);
      const result = JSON.parse(rerun.out) as { kekId: string; rewrapped: string[]; disabled: string[] };
      expect(result.kekId).toBe(mid[1]!.id);
      expect(result.rewrapped).toHaveLength(3);
      expect(result.disabled).toEqual([mid[0]!.id]);
      const after = await vault.listKeyVersions('kek');
      expect(after.map((v) => v.enabled)).toEqual([false, true]);
      expect(after[1]!.tags[TAG_ROTATION]).toBeUndefined();
      await allOpen();
    });
  });
});
