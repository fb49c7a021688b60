/**
 * The README's streams example is examples/stream-backup.mjs, word for word, and it works as the README says: a
 * qemu-made dynamic VHD backed up through createEncryptStream and restored through createDecryptStream reads the
 * same to `qemu-img compare`; the backup is a LUKS2 volume in a dynamic VHD that qemu-img reads; a damaged input
 * ends with a typed error, no output under either name, and no live vault secret left for it.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, truncateSync, copyFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { openVault } from '../src/vault/index.js';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const EXAMPLE = join(root, 'examples', 'stream-backup.mjs');
const CLI = join(root, 'bin', 'vhdcrypt.cjs');

let dir: string;
let env: NodeJS.ProcessEnv;

function run(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8', env, stdio: ['ignore', 'pipe', 'pipe'] });
}

function example(...args: string[]): ReturnType<typeof spawnSync> {
  return spawnSync(process.execPath, [EXAMPLE, ...args], { encoding: 'utf8', env, cwd: dir });
}

async function liveDiskSecrets(): Promise<string[]> {
  const v = await openVault(`file:${join(dir, 'vault')}`);
  try {
    return (await v.listSecrets()).filter((s) => s.contentType === 'application/vnd.vhdcrypt.wrapped-key+json').map((s) => s.id);
  } finally {
    await v.close();
  }
}

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'vhdcrypt-readme-stream-'));
  env = { ...process.env, VHDCRYPT_VAULT: join(dir, 'vault') };
  delete env.VHDCRYPT_VAULT_TOKEN;
  run(process.execPath, [CLI, 'vault', 'init']);
  // A dynamic VHD with data at both ends and a hole between, written by qemu-io.
  run('qemu-img', ['create', '-q', '-f', 'vpc', '-o', 'subformat=dynamic', join(dir, 'disk.vhd'), '48M']);
  run('qemu-io', ['-f', 'vpc', '-c', 'write -P 0x5a 0 3M', '-c', 'write -P 0xc3 40M 5M', join(dir, 'disk.vhd')]);
});

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

describe('README streams example', () => {
  it('is examples/stream-backup.mjs word for word', () => {
    const readme = readFileSync(join(root, 'README.md'), 'utf8');
    const code = readFileSync(EXAMPLE, 'utf8');
    expect(readme).toContain('```js\n' + code + '```');
  });

  it('backs a dynamic VHD up and restores it byte for byte', async () => {
    const backup = example('backup', 'disk.vhd', 'disk.enc.vhd');
    expect(backup.stderr).toMatch(/opened by vault secret .*\/secrets\//);
    expect(backup.status).toBe(0);
    expect(existsSync(join(dir, 'disk.enc.vhd.partial'))).toBe(false);
    const info = JSON.parse(run('qemu-img', ['info', '-f', 'vpc', '--output=json', join(dir, 'disk.enc.vhd')])) as { 'virtual-size': number };
    expect(info['virtual-size']).toBeGreaterThan(48 << 20);
    // The hole stayed a hole: the backup is far smaller than the disk.
    expect(statSync(join(dir, 'disk.enc.vhd')).size).toBeLessThan(40 << 20);
    expect(run(process.execPath, [CLI, 'info', join(dir, 'disk.enc.vhd')])).toMatch(/encryption: +luks2/);
    expect(await liveDiskSecrets()).toHaveLength(1);

    const restore = example('restore', 'disk.enc.vhd', 'disk.out.vhd');
    expect(restore.status).toBe(0);
    run('qemu-img', ['compare', '-f', 'vpc', '-F', 'vpc', join(dir, 'disk.vhd'), join(dir, 'disk.out.vhd')]);
  });

  it('a cut input ends with a typed error, leaves no output and no live secret', async () => {
    const before = await liveDiskSecrets();
    copyFileSync(join(dir, 'disk.vhd'), join(dir, 'cut.vhd'));
    truncateSync(join(dir, 'cut.vhd'), 3 << 20);
    const r = example('backup', 'cut.vhd', 'cut.enc.vhd');
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/ENGINE_STREAM_BAD_INPUT|VHD_TRUNCATED/);
    expect(existsSync(join(dir, 'cut.enc.vhd'))).toBe(false);
    expect(existsSync(join(dir, 'cut.enc.vhd.partial'))).toBe(false);
    expect(await liveDiskSecrets()).toEqual(before);
  });
});
