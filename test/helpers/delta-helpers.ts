/** Shared by the encrypted-chain tests (delta-chain, delta-merge): sizes, qemu-made bases, readers to compare with. */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { decryptImage } from '../../src/engine/index.js';
import { run } from '../fixtures/engine/helpers.js';

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const MiB = 1 << 20;
export const SIZE = 40 * MiB;
export const BS = 2 * MiB;
/** The LUKS2 data offset of our encrypted images. */
export const D = 16 * MiB;

/** The compiled CLI with VHDCRYPT_VAULT set to `vaultDir`. */
export function cliRun(vaultDir: string, args: string[]) {
  return spawnSync(process.execPath, [join(ROOT, 'bin/vhdcrypt.cjs'), ...args], { encoding: 'utf8', env: { ...process.env, VHDCRYPT_VAULT: vaultDir } });
}

/** A qemu-made base with data at scattered places (dynamic: holes elsewhere); returns its plaintext. */
export function qemuBase(file: string, subformat: 'fixed' | 'dynamic'): Uint8Array {
  run('qemu-img', ['create', '-q', '-f', 'vpc', '-o', `subformat=${subformat},force_size=on`, file, String(SIZE)]);
  run('qemu-io', ['-f', 'vpc', '-c', 'write -q -P 0xa1 0 3M', '-c', 'write -q -P 0xa2 8M 64k', '-c', 'write -q -P 0xa3 20M 4M', file]);
  run('qemu-img', ['convert', '-f', 'vpc', '-O', 'raw', file, file + '.raw']);
  return new Uint8Array(readFileSync(file + '.raw'));
}

/** Decrypt an encrypted link (its whole chain) through the engine into raw bytes. */
export async function decrypted(file: string): Promise<Buffer> {
  const out = file + '.dec.raw';
  await decryptImage(file, out, { outFormat: 'raw', force: true });
  return readFileSync(out);
}

/** Every byte of the encrypted disk as libvhdi reads it, each link's parent set by hand down to the base. */
export function libvhdiRead(chain: string[]): Buffer {
  const script = [
    'import pyvhdi,sys',
    'files=[]',
    'for path in sys.argv[2:]:',
    '  f=pyvhdi.file(); f.open(path)',
    '  if files: f.set_parent(files[-1])',
    '  files.append(f)',
    'top=files[-1]; size=top.get_media_size(); out=open(sys.argv[1],"wb"); off=0',
    'while off<size:',
    '  n=min(4<<20,size-off); out.write(top.read_buffer_at_offset(n,off)); off+=n',
    'out.close()',
  ].join('\n');
  const outFile = chain[chain.length - 1]! + '.libvhdi';
  const r = spawnSync('/usr/bin/python3', ['-c', script, outFile, ...chain], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`pyvhdi: ${r.stderr}`);
  return readFileSync(outFile);
}

/** The first differing 4 KiB unit of two buffers, or -1. */
export function firstDiff4k(a: Uint8Array, b: Uint8Array): number {
  if (a.length !== b.length) return -2;
  for (let o = 0; o < a.length; o += 4096) if (!Buffer.from(a.subarray(o, o + 4096)).equals(Buffer.from(b.subarray(o, o + 4096)))) return o;
  return -1;
}
