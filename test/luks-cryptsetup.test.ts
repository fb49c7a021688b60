/**
 * Interop with cryptsetup 2.6 (no device-mapper needed): headers we write are
 * parsed, opened and edited by cryptsetup; headers cryptsetup writes are opened
 * and dumped by us.
 */
import { afterAll, describe, expect, test } from 'vitest';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import * as luks from '../src/luks/index.js';
import { LuksError } from '../src/luks/index.js';
import { cryptsetup, dumpField, dumpHexField, makeTmp, run, testPassphrase, writeSecretFile, writeVolume } from './luks-helpers.js';

const tmp = makeTmp('luks-cs');
afterAll(() => tmp.remove());

const CHEAP = { type: 'pbkdf2', iterations: 1000 } as const;
const CS_CHEAP = ['--pbkdf', 'pbkdf2', '--pbkdf-force-iterations', '1000'];

async function expectCode(p: Promise<unknown>, code: string): Promise<LuksError> {
  const e = await p.then(
    () => null,
    (err: unknown) => err,
  );
  expect(e).toBeInstanceOf(LuksError);
  expect((e as LuksError).code).toBe(code);
  return e as LuksError;
}

type Case = { version: 1 | 2; keyBits: 256 | 512; sectorSize: 512 | 4096 };
const OURS: Case[] = [
  { version: 1, keyBits: 256, sectorSize: 512 },
  { version: 1, keyBits: 512, sectorSize: 512 },
  { version: 2, keyBits: 256, sectorSize: 512 },
  { version: 2, keyBits: 512, sectorSize: 512 },
  { version: 2, keyBits: 256, sectorSize: 4096 },
  { version: 2, keyBits: 512, sectorSize: 4096 },
];

describe('headers we write, read by cryptsetup', () => {
  for (const c of OURS) {
    test(`LUKS${c.version} ${c.keyBits}-bit ${c.sectorSize}-byte sectors`, async () => {
      const name = `ours-${c.version}-${c.keyBits}-${c.sectorSize}`;
      const dev = tmp.path(`${name}.img`);
      const pass = `pässword ${name}`;
      const passFile = writeSecretFile(tmp.path(`${name}.pass`), pass);
      const f = await luks.format(BigInt(24 << 20), { ...c, kdf: CHEAP, passphrase: pass });
      writeVolume(dev, f.header, 24 << 20);

      // luksDump parses it and reports what we wrote.
      const text = cryptsetup('luksDump', dev);
      expect(dumpField(text, 'Version')).toBe(String(c.version));
      expect(dumpField(text, 'UUID')).toBe(f.info.uuid);
      if (c.version === 1) {
        expect(dumpField(text, 'MK bits')).toBe(String(c.keyBits));
        expect(dumpField(text, 'Payload offset')).toBe(String(f.info.dataOffset / 512n));
        expect(dumpField(text, 'Cipher mode')).toBe('xts-plain64');
      } else {
        expect(dumpField(text, 'Key')).toBe(`${c.keyBits} bits`);
        expect(dumpField(text, 'sector')).toBe(`${c.sectorSize} [bytes]`);
        expect(dumpField(text, 'offset')).toBe(`${f.info.dataOffset} [bytes]`);
      }

      // open --test-passphrase accepts the passphrase and refuses another.
      expect(testPassphrase(dev, passFile)).toBe(0);
      expect(testPassphrase(dev, writeSecretFile(tmp.path(`${name}.wrong`), 'wrong'))).not.toBe(0);

      // A binary key file added by us is accepted by cryptsetup.
      const keyFile = writeSecretFile(tmp.path(`${name}.key`), randomBytes(64));
      const slot = await luks.addKeyslot(dev, { passphrase: pass }, { keyFile }, { kdf: CHEAP });
      expect(slot).toBe(1);
      expect(testPassphrase(dev, keyFile, ['--key-slot', '1'])).toBe(0);

      // cryptsetup luksAddKey on our header, then we unlock with the added key.
      const added = writeSecretFile(tmp.path(`${name}.added`), 'added by cryptsetup');
      cryptsetup('luksAddKey', ...(c.version === 1 ? ['--pbkdf-force-iterations', '1000'] : CS_CHEAP), '--key-file', passFile, dev, added);
      const u = await luks.unlock(dev, { keyFile: added });
      expect(u.keyslot).toBe(2);
      expect(Buffer.from(u.volumeKey).equals(f.volumeKey)).toBe(true);

      // luksKillSlot 0 on our header: the old passphrase fails, the others still unlock.
      cryptsetup('luksKillSlot', '--key-file', added, dev, '0');
      await expectCode(luks.unlock(dev, { passphrase: pass }), 'LUKS_WRONG_PASSPHRASE');
      expect(Buffer.from((await luks.unlock(dev, { keyFile })).volumeKey).equals(f.volumeKey)).toBe(true);

      // luksHeaderBackup / luksHeaderRestore around a destroyed header.
      const backup = tmp.path(`${name}.backup`);
      cryptsetup('luksHeaderBackup', dev, '--header-backup-file', backup);
      expect((await luks.unlock(backup, { keyFile: added })).keyslot).toBe(2);
      const img = readFileSync(dev);
      img.fill(0, 0, c.version === 1 ? 4096 : 65536);
      writeFileSync(dev, img);
      await expectCode(luks.unlock(dev, { keyFile: added }), 'LUKS_BAD_MAGIC');
      cryptsetup('luksHeaderRestore', dev, '--header-backup-file', backup);
      expect(Buffer.from((await luks.unlock(dev, { keyFile: added })).volumeKey).equals(f.volumeKey)).toBe(true);

      // Our backup restored by cryptsetup, and cryptsetup's backup restored by us.
      const ourBackup = tmp.path(`${name}.ourbackup`);
      await luks.backupHeader(dev, ourBackup);
      await expectCode(luks.backupHeader(dev, ourBackup), 'LUKS_DEST_EXISTS');
      img.fill(0, 0, c.version === 1 ? 4096 : 65536);
      writeFileSync(dev, img);
      cryptsetup('luksHeaderRestore', dev, '--header-backup-file', ourBackup);
      expect(testPassphrase(dev, keyFile)).toBe(0);
      writeFileSync(dev, img);
      await luks.restoreHeader(dev, backup);
      expect(testPassphrase(dev, added)).toBe(0);
    });
  }

  test('our keyslot and token edits on LUKS2 are accepted by cryptsetup', async () => {
    const dev = tmp.path('edits.img');
    const f = await luks.format(BigInt(20 << 20), { version: 2, keyBits: 512, sectorSize: 4096, kdf: CHEAP, passphrase: 'one' });
    writeVolume(dev, f.header, 20 << 20);
    const one = writeSecretFile(tmp.path('one'), 'one');
    const two = writeSecretFile(tmp.path('two'), 'two');
    const three = writeSecretFile(tmp.path('three'), 'three');
    expect(await luks.addKeyslot(dev, { passphrase: 'one' }, { passphrase: 'two' }, { kdf: { type: 'argon2id', time: 4, memoryKiB: 1024, parallelism: 1 } })).toBe(1);
    expect(testPassphrase(dev, two, ['--key-slot', '1'])).toBe(0);
    const id = await luks.addToken(dev, luks.vaultToken({ keyslot: 1, vault: 'vault://local/default', secret: 'disk-7@3' }));
    const text = cryptsetup('luksDump', dev);
    expect(text).toMatch(/Tokens:\n\s+0: vhdcrypt-vault\n\s+Keyslot:\s+1/);
    const exported = JSON.parse(cryptsetup('token', 'export', '--token-id', String(id), dev)) as Record<string, unknown>;
    expect(exported).toEqual({ type: 'vhdcrypt-vault', keyslots: ['1'], vault: 'vault://local/default', secret: 'disk-7@3' });
    expect((await luks.listTokens(dev)).map((t) => t.type)).toEqual(['vhdcrypt-vault']);

    expect(await luks.changePassphrase(dev, { passphrase: 'one' }, { passphrase: 'three' }, { kdf: CHEAP })).toBe(0);
    expect(testPassphrase(dev, one)).not.toBe(0);
    expect(testPassphrase(dev, three, ['--key-slot', '0'])).toBe(0);

    await luks.removeKeyslot(dev, 1);
    expect(testPassphrase(dev, two)).not.toBe(0);
    // The token lost its keyslot with it, and cryptsetup still validates the metadata.
    expect(JSON.parse(cryptsetup('token', 'export', '--token-id', '0', dev))).toMatchObject({ keyslots: [] });
    await luks.removeToken(dev, 0);
    expect(cryptsetup('luksDump', dev)).not.toMatch(/vhdcrypt-vault/);
    await expectCode(luks.removeKeyslot(dev, 0), 'LUKS_LAST_KEYSLOT');
    expect(Buffer.from((await luks.unlock(dev, { passphrase: 'three' })).volumeKey).equals(f.volumeKey)).toBe(true);
  });
});

describe('format options as cryptsetup sees them', () => {
  test('64 KiB metadata, 4 MiB data offset, fixed segment, label and subsystem, key file ending in a newline', async () => {
    const dev = tmp.path('options.img');
    const keyFile = writeSecretFile(tmp.path('options.key'), 'line with newline\n');
    const f = await luks.format(BigInt(12 << 20), {
      version: 2, keyBits: 256, sectorSize: 4096, metadataSize: 65536, dataOffset: BigInt(4 << 20), segmentSize: BigInt(6 << 20),
      label: 'vhdcrypt-disk', subsystem: 'vhdcrypt', kdf: CHEAP, keyFile,
    });
    expect(f.header.length).toBe(4 << 20);
    writeVolume(dev, f.header, 12 << 20);
    const text = cryptsetup('luksDump', dev);
    expect(dumpField(text, 'Metadata area')).toBe('65536 [bytes]');
    expect(dumpField(text, 'Keyslots area')).toBe(`${(4 << 20) - 2 * 65536} [bytes]`);
    expect(dumpField(text, 'Label')).toBe('vhdcrypt-disk');
    expect(dumpField(text, 'Subsystem')).toBe('vhdcrypt');
    expect(dumpField(text, 'length')).toBe(`${6 << 20} [bytes]`);
    expect(testPassphrase(dev, keyFile)).toBe(0);
    // The newline is part of the key, as in cryptsetup: without it the passphrase is wrong.
    await expectCode(luks.unlock(dev, { passphrase: 'line with newline' }), 'LUKS_WRONG_PASSPHRASE');
    expect(f.info.dataSize).toBe(BigInt(6 << 20));
  });
});

describe('KDF defaults', () => {
  test('KDF_TYPED_PASSPHRASE (argon2id, 1 GiB, 4 lanes, time 4) is opened by cryptsetup', async () => {
    const dev = tmp.path('typed.img');
    const f = await luks.format(BigInt(20 << 20), { version: 2, keyBits: 512, kdf: luks.KDF_TYPED_PASSPHRASE, passphrase: 'typed by a person' });
    writeVolume(dev, f.header, 20 << 20);
    const k = JSON.parse(cryptsetup('luksDump', '--dump-json-metadata', dev)).keyslots['0'].kdf;
    expect([k.type, k.memory, k.cpus, k.time]).toEqual(['argon2id', 1048576, 4, 4]);
    expect(testPassphrase(dev, writeSecretFile(tmp.path('typed.pass'), 'typed by a person'))).toBe(0);
  });

  test('reencryption in progress (cryptsetup reencrypt --init-only) is refused, naming the requirement', async () => {
    const dev = tmp.path('init-only.img');
    writeFileSync(dev, randomBytes(40 << 20));
    const passFile = writeSecretFile(tmp.path('init.pass'), 'init');
    cryptsetup('reencrypt', '--encrypt', '--init-only', '--type', 'luks2', '--force-offline-reencrypt', '--reduce-device-size', String(32 << 20), ...CS_CHEAP, '--key-file', passFile, dev);
    await expectCode(luks.unlock(dev, { keyFile: passFile }), 'LUKS_UNSUPPORTED_REQUIREMENT').then((e) => expect(e.message).toMatch(/online-reencrypt/));
    expect((await luks.dump(dev)).requirements).toEqual(['online-reencrypt-v2']);
  });
});

/** Our dump beside luksDump's JSON metadata (LUKS2). */
function compareLuks2Dump(ours: luks.LuksDump, theirs: Record<string, any>, text: string): void {
  expect(ours.epoch).toBe(Number(dumpField(text, 'Epoch')));
  expect(ours.uuid).toBe(dumpField(text, 'UUID'));
  expect(ours.metadataArea).toBe(Number(theirs.config.json_size) + 4096);
  expect(ours.keyslotsArea).toBe(Number(theirs.config.keyslots_size));
  const seg = (ours.dataSegments as luks.LuksDump[])[0];
  const tseg = theirs.segments['0'];
  expect([seg.offset, seg.length === 'whole device' ? 'dynamic' : String(seg.length), seg.cipher, seg.sectorSize]).toEqual([
    Number(tseg.offset), tseg.size, tseg.encryption, tseg.sector_size,
  ]);
  for (const k of ours.keyslots as luks.LuksDump[]) {
    const t = theirs.keyslots[String(k.id)];
    expect(k.keyBits).toBe(t.key_size * 8);
    expect(k.pbkdf).toBe(t.kdf.type);
    expect(k.salt).toBe(Buffer.from(t.kdf.salt, 'base64').toString('hex'));
    if (t.kdf.type === 'pbkdf2') expect([k.hash, k.iterations]).toEqual([t.kdf.hash, t.kdf.iterations]);
    else expect([k.time, k.memory, k.threads]).toEqual([t.kdf.time, t.kdf.memory, t.kdf.cpus]);
    expect([k.areaOffset, k.areaLength, k.afStripes, k.afHash]).toEqual([Number(t.area.offset), Number(t.area.size), t.af.stripes, t.af.hash]);
  }
  expect((ours.keyslots as luks.LuksDump[]).map((k) => String(k.id))).toEqual(Object.keys(theirs.keyslots));
  const d = (ours.digests as luks.LuksDump[])[0];
  const td = theirs.digests['0'];
  expect([d.hash, d.iterations, d.salt, d.digest, d.keyslots]).toEqual([
    td.hash, td.iterations, Buffer.from(td.salt, 'base64').toString('hex'), Buffer.from(td.digest, 'base64').toString('hex'), td.keyslots,
  ]);
}

describe('headers cryptsetup writes, read by us', () => {
  const pass = 'cryptsetup made this';
  const passFile = writeSecretFile(tmp.path('cs.pass'), pass);

  for (const hash of ['sha1', 'sha256', 'sha512'] as const) {
    for (const keyBits of [256, 512] as const) {
      test(`LUKS1 pbkdf2-${hash} ${keyBits}-bit`, async () => {
        const dev = tmp.path(`cs1-${hash}-${keyBits}.img`);
        writeVolume(dev, new Uint8Array(0), 8 << 20);
        cryptsetup('luksFormat', '--type', 'luks1', '--hash', hash, '--key-size', String(keyBits), '--pbkdf-force-iterations', '1000', '--key-file', passFile, dev);
        const u = await luks.unlock(dev, { passphrase: pass });
        expect([u.keyslot, u.info.keyBytes * 8, u.info.version]).toEqual([0, keyBits, 1]);
        await expectCode(luks.unlock(dev, { passphrase: 'nope' }), 'LUKS_WRONG_PASSPHRASE');
        // Our dump agrees with luksDump.
        const text = cryptsetup('luksDump', dev);
        const ours = await luks.dump(dev);
        expect(ours.hashSpec).toBe(dumpField(text, 'Hash spec'));
        expect(ours.payloadOffset).toBe(Number(dumpField(text, 'Payload offset')));
        expect(ours.mkBits).toBe(Number(dumpField(text, 'MK bits')));
        expect(ours.mkDigest).toBe(dumpHexField(text, 'MK digest'));
        expect(ours.mkSalt).toBe(dumpHexField(text, 'MK salt'));
        expect(ours.mkIterations).toBe(Number(dumpField(text, 'MK iterations')));
        expect(ours.uuid).toBe(dumpField(text, 'UUID'));
        const k0 = (ours.keyslots as luks.LuksDump[])[0];
        const slotAt = text.indexOf('Key Slot 0');
        expect([k0.enabled, k0.iterations, k0.keyMaterialOffset, k0.stripes]).toEqual([
          true, Number(dumpField(text.slice(slotAt), 'Iterations')), Number(dumpField(text.slice(slotAt), 'Key material offset')), 4000,
        ]);
        expect(k0.salt).toBe(dumpHexField(text, 'Salt', slotAt));
        // The volume key is the one cryptsetup holds.
        const vkFile = tmp.path(`cs1-${hash}-${keyBits}.vk`);
        cryptsetup('luksDump', '--dump-volume-key', '--volume-key-file', vkFile, '--key-file', passFile, dev);
        expect(Buffer.from(u.volumeKey).equals(readFileSync(vkFile))).toBe(true);
      });
    }
  }

  const LUKS2_CASES: Array<{ name: string; args: string[]; keyBits: 256 | 512; sector: 512 | 4096 }> = [
    { name: 'pbkdf2 sha512', args: ['--pbkdf', 'pbkdf2', '--hash', 'sha512', '--pbkdf-force-iterations', '1000'], keyBits: 256, sector: 512 },
    { name: 'pbkdf2 sha256', args: CS_CHEAP, keyBits: 512, sector: 4096 },
    { name: 'argon2i', args: ['--pbkdf', 'argon2i', '--pbkdf-force-iterations', '4', '--pbkdf-memory', '32768', '--pbkdf-parallel', '1'], keyBits: 512, sector: 512 },
    { name: 'argon2id', args: ['--pbkdf', 'argon2id', '--pbkdf-force-iterations', '5', '--pbkdf-memory', '65536', '--pbkdf-parallel', '2'], keyBits: 256, sector: 4096 },
    // cryptsetup's default memory cost (1 GiB) and lanes; time forced to its minimum to keep the test short.
    { name: 'argon2id default memory', args: ['--pbkdf', 'argon2id', '--pbkdf-force-iterations', '4'], keyBits: 512, sector: 4096 },
  ];
  for (const c of LUKS2_CASES) {
    test(`LUKS2 ${c.name} ${c.keyBits}-bit ${c.sector}-byte sectors`, async () => {
      const dev = tmp.path(`cs2-${c.name.replace(/ /g, '_')}.img`);
      writeVolume(dev, new Uint8Array(0), 20 << 20);
      cryptsetup('luksFormat', '--type', 'luks2', ...c.args, '--key-size', String(c.keyBits), '--sector-size', String(c.sector), '--key-file', passFile, dev);
      const theirs = JSON.parse(cryptsetup('luksDump', '--dump-json-metadata', dev)) as Record<string, any>;
      if (c.name.includes('default')) expect(theirs.keyslots['0'].kdf.memory).toBe(1048576);
      const u = await luks.unlock(dev, { keyFile: passFile });
      expect([u.keyslot, u.info.keyBytes * 8, u.info.sectorSize, u.info.version]).toEqual([0, c.keyBits, c.sector, 2]);
      if (!c.name.includes('default')) {
        // (Skipped at 1 GiB to save a derivation: unlock already matched cryptsetup's digest.)
        const vkFile = tmp.path(`cs2-${c.name.replace(/ /g, '_')}.vk`);
        cryptsetup('luksDump', '--dump-volume-key', '--volume-key-file', vkFile, '--key-file', passFile, dev);
        expect(Buffer.from(u.volumeKey).equals(readFileSync(vkFile))).toBe(true);
      }
      compareLuks2Dump(await luks.dump(dev), theirs, cryptsetup('luksDump', dev));
      if (!c.name.includes('default')) await expectCode(luks.unlock(dev, { passphrase: 'nope' }), 'LUKS_WRONG_PASSPHRASE');
    });
  }

  test('a second keyslot added by cryptsetup: unlock picks it, and the given keyslot is tried first', async () => {
    const dev = tmp.path('cs2-two.img');
    writeVolume(dev, new Uint8Array(0), 20 << 20);
    cryptsetup('luksFormat', '--type', 'luks2', ...CS_CHEAP, '--key-file', passFile, dev);
    const other = writeSecretFile(tmp.path('cs2-two.other'), 'other');
    cryptsetup('luksAddKey', ...CS_CHEAP, '--key-slot', '5', '--key-file', passFile, dev, other);
    expect((await luks.unlock(dev, { keyFile: other })).keyslot).toBe(5);
    expect((await luks.unlock(dev, { keyFile: other }, { keyslot: 5 })).keyslot).toBe(5);
    expect((await luks.unlock(dev, { keyFile: passFile }, { keyslot: 5 })).keyslot).toBe(0);
    await expectCode(luks.unlock(dev, { keyFile: other }, { keyslot: 3 }), 'LUKS_KEYSLOT_INACTIVE');
    await expectCode(luks.unlock(dev, { keyFile: other }, { keyslot: 32 }), 'LUKS_KEYSLOT_OUT_OF_RANGE');
    const e = await expectCode(luks.unlock(dev, { passphrase: 'neither' }), 'LUKS_WRONG_PASSPHRASE');
    expect(e.message).toMatch(/tried 2 keyslot/);
    // luksDump still agrees after cryptsetup's edit (epoch, both keyslots).
    compareLuks2Dump(await luks.dump(dev), JSON.parse(cryptsetup('luksDump', '--dump-json-metadata', dev)), cryptsetup('luksDump', dev));
    expect(run('cryptsetup', ['isLuks', dev]).status).toBe(0);
  });
});
