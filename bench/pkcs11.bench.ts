/**
 * npm run bench:pkcs11 — seal and unseal latency of a disk secret (44 bytes, the base64 keyslot passphrase)
 * through a KEK in SoftHSM2 (AES-256 with CKM_AES_KEY_WRAP_PAD; RSA-3072 with RSA-OAEP) beside the embedded
 * vault's default KEK (RSA-2048, RSA-OAEP-256), all in one embedded vault. (The vault's oct KEKs, A256KW without
 * padding, take multiples of 8 bytes only, so they cannot seal a 44-byte passphrase and are not measured.)
 * Rounds alternate the three KEKs (paired: each round seals and unseals once through each), and the medians are
 * reported. A token call loads and initialises the module, opens a session and logs in each time (what one
 * CLI run does), and seal includes the round-trip check of the wrap. Pass --rounds N (default 40) and --json.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { generateTokenKey } from '../src/pkcs11/index.js';
import { openVault, sealDiskKey, unsealDiskKey } from '../src/vault/index.js';

const json = process.argv.includes('--json');
const roundsArg = process.argv.indexOf('--rounds');
const rounds = roundsArg > 0 ? Number(process.argv[roundsArg + 1]) : 40;
const MODULE = ['/usr/lib/softhsm/libsofthsm2.so', '/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so'].find((p) => existsSync(p));
if (!MODULE) throw new Error('SoftHSM2 is not installed (apt-get install softhsm2)');

const dir = mkdtempSync(join(tmpdir(), 'vhdcrypt-pkcs11-bench-'));
mkdirSync(join(dir, 'tokens'));
process.env.SOFTHSM2_CONF = join(dir, 'softhsm2.conf');
writeFileSync(process.env.SOFTHSM2_CONF, `directories.tokendir = ${join(dir, 'tokens')}\nobjectstore.backend = file\nlog.level = ERROR\n`);
execFileSync('softhsm2-util', ['--init-token', '--free', '--label', 'bench', '--so-pin', '12345678', '--pin', '1234'], { stdio: 'ignore' });
const access = { module: MODULE, pin: Buffer.from('1234') };

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

try {
  await generateTokenKey({ token: 'bench', label: 'aes', type: 'aes256', access });
  await generateTokenKey({ token: 'bench', label: 'rsa', type: 'rsa3072', access });
  const vault = await openVault(join(dir, 'vault'), { create: true });
  await vault.createKey('rsa-kek', { kty: 'RSA', size: 2048 });
  const keks = [
    { name: 'SoftHSM2 AES-256, CKM_AES_KEY_WRAP_PAD', kek: 'pkcs11:token=bench;object=aes' },
    { name: 'embedded vault RSA-2048, RSA-OAEP-256', kek: 'rsa-kek' },
    { name: 'SoftHSM2 RSA-3072, RSA-OAEP (SHA-1)', kek: 'pkcs11:token=bench;object=rsa' },
  ];
  const seal = keks.map(() => [] as number[]);
  const unseal = keks.map(() => [] as number[]);
  for (let r = 0; r < rounds + 2; r++) {
    // Alternate the order each round so no KEK always runs first (after a GC, a cold cache).
    const order = r % 2 === 0 ? keks.map((_, i) => i) : keks.map((_, i) => keks.length - 1 - i);
    for (const i of order) {
      const material = randomBytes(44);
      let t = performance.now();
      const { secretId } = await sealDiskKey(vault, { diskId: `bench-${i}-${r}`, material, kek: keks[i]!.kek, pkcs11: { access } });
      const s = performance.now() - t;
      t = performance.now();
      const back = await unsealDiskKey(vault, secretId, { pkcs11: access });
      const u = performance.now() - t;
      if (!Buffer.from(back).equals(material)) throw new Error('unseal returned other bytes');
      back.fill(0);
      // The first two rounds warm up (module loading, JIT) and are not counted.
      if (r >= 2) {
        seal[i]!.push(s);
        unseal[i]!.push(u);
      }
    }
  }
  await vault.close();
  const rows = keks.map((k, i) => ({ kek: k.name, sealMs: Number(median(seal[i]!).toFixed(2)), unsealMs: Number(median(unseal[i]!).toFixed(2)) }));
  if (json) process.stdout.write(JSON.stringify({ rounds, rows }) + '\n');
  else {
    process.stdout.write(`seal/unseal of a 44-byte disk secret, medians of ${rounds} alternated rounds\n`);
    for (const r of rows) process.stdout.write(`  ${r.kek.padEnd(42)} seal ${r.sealMs.toFixed(2).padStart(7)} ms   unseal ${r.unsealMs.toFixed(2).padStart(7)} ms\n`);
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
