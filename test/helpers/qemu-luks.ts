/**
 * A LUKS1 volume whose payload QEMU encrypted. `qemu-img convert -O luks` sizes its PBKDF2 by `iter-time`, a
 * benchmark against the clock that fails on a busy machine ("Unable to get accurate CPU usage"); so cryptsetup
 * formats the header with fixed iterations and qemu-img writes the data through its luks driver into it
 * (`convert -n --target-image-opts driver=luks`), which is still QEMU's own encryption of every payload sector.
 */
import { spawnSync } from 'node:child_process';
import { closeSync, ftruncateSync, openSync, statSync } from 'node:fs';

/** cryptsetup's LUKS1 data offset for a file: 4096 sectors (its default alignment). */
export const CRYPTSETUP_LUKS1_DATA_OFFSET = 2 * 1024 * 1024;

function mustRun(cmd: string, args: string[], input?: string): void {
  const r = spawnSync(cmd, args, { input, timeout: 120_000, env: { ...process.env, PATH: `/usr/bin:/usr/sbin:/sbin:${process.env.PATH ?? ''}` } });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status}): ${r.stderr?.toString() ?? ''}`);
}

/**
 * Writes `plainFile` (raw) into a new LUKS1 aes-xts-plain64 volume at `out` with `passphrase` as keyslot 0
 * (PBKDF2-SHA256, 1000 iterations); the volume's payload is at least the plaintext's size.
 */
export function qemuEncryptLuks1(plainFile: string, out: string, passphrase: string, keyBits: 256 | 512 = 512): void {
  const fd = openSync(out, 'w');
  try {
    ftruncateSync(fd, CRYPTSETUP_LUKS1_DATA_OFFSET + statSync(plainFile).size);
  } finally {
    closeSync(fd);
  }
  mustRun('cryptsetup', ['--batch-mode', 'luksFormat', '--type', 'luks1', '--cipher', 'aes-xts-plain64', '--key-size', String(keyBits),
    '--hash', 'sha256', '--pbkdf-force-iterations', '1000', '--key-file', '-', out], passphrase);
  mustRun('qemu-img', ['convert', '-n', '--object', `secret,id=s,data=${passphrase}`, '-f', 'raw', plainFile,
    '--target-image-opts', `driver=luks,key-secret=s,file.filename=${out}`]);
}
