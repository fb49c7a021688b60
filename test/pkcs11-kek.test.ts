/**
 * Disk secrets wrapped by keys in a real SoftHSM2 token: an AES-256 KEK (CKM_AES_KEY_WRAP_PAD) and an RSA-3072
 * KEK (RSA-OAEP; SoftHSM 2.6 only has SHA-1 OAEP), made by `pkcs11 keygen`'s code with CKA_SENSITIVE true and
 * CKA_EXTRACTABLE false; pkcs11-tool reads the attributes back; each refusal is its typed error.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { createSoftHsm, haveSoftHsm, USER_PIN, type SoftHsm } from './helpers/softhsm.js';
import { join } from 'node:path';
import { openVault, sealDiskKey, unsealDiskKey, TAG_ALGORITHM, TAG_KEK_URL } from '../src/vault/index.js';
import {
  generateTokenKey, parsePkcs11Uri, tokenKeyAttributes, unwrapWithToken, wrapWithToken, Pkcs11Error,
} from '../src/pkcs11/index.js';

const hsmOk = haveSoftHsm();
let hsm: SoftHsm;
const pin = () => Buffer.from(USER_PIN);

describe.skipIf(!hsmOk)('PKCS#11 KEKs in SoftHSM2', () => {
  let access: { module: string; pin: Uint8Array };
  beforeAll(async () => {
    hsm = createSoftHsm();
    hsm.initToken('kek');
    access = { module: hsm.module, pin: pin() };
    await generateTokenKey({ token: 'kek', label: 'aes', type: 'aes256', access });
    await generateTokenKey({ token: 'pkcs11:token=kek', label: 'rsa', type: 'rsa3072', access });
  }, 60_000);
  afterAll(() => hsm?.cleanup());

  it('wraps and unwraps through an AES KEK with CKM_AES_KEY_WRAP_PAD, any length', async () => {
    for (const n of [44, 60, 64, 1, 16]) {
      const secret = randomBytes(n);
      const w = await wrapWithToken('pkcs11:token=kek;object=aes', secret, { access });
      expect(w.mechanism).toBe('CKM_AES_KEY_WRAP_PAD');
      // A 1-byte secret turns up in 16+ random-looking bytes by chance (about 6%): look for longer ones only.
      if (n >= 16) expect(w.wrapped.includes(secret)).toBe(false);
      const back = await unwrapWithToken('pkcs11:token=kek;object=aes', w.mechanism, w.wrapped, { access });
      expect(Buffer.from(back).equals(secret)).toBe(true);
    }
  });

  it('wraps through an RSA KEK with RSA-OAEP (SHA-1 on SoftHSM, which refuses SHA-256 OAEP)', async () => {
    const secret = randomBytes(44);
    const w = await wrapWithToken('pkcs11:token=kek;object=rsa', secret, { access });
    expect(w.mechanism).toBe('CKM_RSA_PKCS_OAEP-SHA1');
    expect(w.wrapped.length).toBe(384);
    const back = await unwrapWithToken('pkcs11:token=kek;object=rsa;type=private', w.mechanism, w.wrapped, { access });
    expect(Buffer.from(back).equals(secret)).toBe(true);
  });

  it('sealDiskKey/unsealDiskKey with a token KEK: only the wrapped form is in the vault, tagged with the URI and mechanism', async () => {
    const vault = await openVault(join(hsm.dir, 'vault'), { create: true });
    try {
      for (const [uri, mech] of [['pkcs11:token=kek;object=aes', 'CKM_AES_KEY_WRAP_PAD'], ['pkcs11:token=kek;object=rsa', 'CKM_RSA_PKCS_OAEP-SHA1']] as const) {
        const material = randomBytes(44);
        const { secretId, kekId } = await sealDiskKey(vault, { diskId: `disk-${mech}`, material, kek: uri, pkcs11: { access } });
        expect(kekId).toBe(uri);
        const secret = await vault.getSecret(secretId);
        expect(secret.properties.tags).toMatchObject({ [TAG_ALGORITHM]: mech, [TAG_KEK_URL]: uri });
        expect(JSON.parse(secret.value)).toMatchObject({ alg: mech, kid: uri });
        expect(secret.value).not.toContain(material.toString('base64url'));
        const back = await unsealDiskKey(vault, secretId, { pkcs11: access });
        expect(Buffer.from(back).equals(material)).toBe(true);
        const noPin = await unsealDiskKey(vault, secretId, { pkcs11: { module: hsm.module } }).catch((e: unknown) => e);
        expect((noPin as Pkcs11Error).code).toBe('PKCS11_PIN_REQUIRED');
      }
    } finally {
      await vault.close();
    }
  });

  it('the keys cannot leave the token: sensitive, not extractable (read by our code and by pkcs11-tool)', async () => {
    for (const uri of ['pkcs11:token=kek;object=aes', 'pkcs11:token=kek;object=rsa']) {
      const a = await tokenKeyAttributes(uri, access);
      expect(a).toMatchObject({ sensitive: true, extractable: false, alwaysSensitive: true, neverExtractable: true });
    }
    const listing = hsm.tool('kek', ['--list-objects']).toString();
    for (const label of ['aes', 'rsa']) {
      const block = listing.split(/\n(?=\S)/).find((b) => b.includes(`label:      ${label}`) && !b.startsWith('Public Key'));
      expect(block).toMatch(/Access:\s+.*sensitive.*always sensitive.*never extractable/);
      const flags = /Access:\s+(.*)/.exec(block!)![1]!.split(', ');
      expect(flags).not.toContain('extractable');
    }
  });

  it('refuses an extractable KEK unless allowed', async () => {
    await generateTokenKey({ token: 'kek', label: 'soft', type: 'aes256', access, allowExtractable: true });
    const err = await wrapWithToken('pkcs11:token=kek;object=soft', randomBytes(44), { access }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(Pkcs11Error);
    expect((err as Pkcs11Error).code).toBe('PKCS11_KEY_EXTRACTABLE');
    const w = await wrapWithToken('pkcs11:token=kek;object=soft', randomBytes(44), { access, allowExtractable: true });
    expect(w.mechanism).toBe('CKM_AES_KEY_WRAP_PAD');
  });

  it('names each refusal: wrong PIN, missing token, missing key, missing module, altered data, PIN in the URI', async () => {
    const code = async (p: Promise<unknown>) => ((await p.catch((e: unknown) => e)) as Pkcs11Error).code;
    expect(await code(wrapWithToken('pkcs11:token=kek;object=aes', randomBytes(44), { access: { module: hsm.module, pin: Buffer.from('9999') } }))).toBe('PKCS11_PIN_INCORRECT');
    expect(await code(wrapWithToken('pkcs11:token=nope;object=aes', randomBytes(44), { access }))).toBe('PKCS11_TOKEN_NOT_FOUND');
    expect(await code(wrapWithToken('pkcs11:token=kek;object=nope', randomBytes(44), { access }))).toBe('PKCS11_KEY_NOT_FOUND');
    expect(await code(wrapWithToken('pkcs11:token=kek;object=aes', randomBytes(44), { access: { module: '/nonexistent/libp11.so', pin: pin() } }))).toBe('PKCS11_MODULE_LOAD_FAILED');
    expect(await code(wrapWithToken('pkcs11:token=kek;object=aes', randomBytes(44), { access: { module: hsm.module } }))).toBe('PKCS11_PIN_REQUIRED');
    const w = await wrapWithToken('pkcs11:token=kek;object=aes', randomBytes(44), { access });
    w.wrapped[5]! ^= 1;
    expect(await code(unwrapWithToken('pkcs11:token=kek;object=aes', w.mechanism, w.wrapped, { access }))).toBe('PKCS11_UNWRAP_FAILED');
    expect(() => parsePkcs11Uri('pkcs11:token=kek?pin-value=1234')).toThrow(expect.objectContaining({ code: 'PKCS11_BAD_PIN_SOURCE' }));
  });
});

describe('RFC 7512 URIs', () => {
  it('parses path and query attributes, percent-decoding values and ids', () => {
    const u = parsePkcs11Uri('pkcs11:token=My%20Token;object=disk%3Bkek;id=%01%02;type=private?module-path=/usr/lib/x.so');
    expect(u).toMatchObject({ token: 'My Token', object: 'disk;kek', type: 'private', modulePath: '/usr/lib/x.so' });
    expect(u.id).toEqual(Buffer.from([1, 2]));
  });
  it('refuses what it cannot honour', () => {
    for (const bad of ['pkcs11:token=a;token=b', 'pkcs11:type=weird', 'pkcs11:nonsense=1', 'pkcs11:token=%zz', 'http://x', 'pkcs11:slot-id=x']) {
      expect(() => parsePkcs11Uri(bad), bad).toThrow(Pkcs11Error);
    }
    expect(() => parsePkcs11Uri('pkcs11:token=a?pin-source=file:/p')).toThrow(expect.objectContaining({ code: 'PKCS11_BAD_PIN_SOURCE' }));
  });
});
