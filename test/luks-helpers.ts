/** Helpers for the LUKS tests: temp dirs, running the real tools, and spec facts recomputed independently. */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync, openSync, closeSync, ftruncateSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export function makeTmp(prefix: string): { dir: string; path: (name: string) => string; remove: () => void } {
  const dir = mkdtempSync(join(tmpdir(), `vhdcrypt-${prefix}-`));
  return { dir, path: (n) => join(dir, n), remove: () => rmSync(dir, { recursive: true, force: true }) };
}

export interface ToolRun {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a tool (no shell); input goes to stdin. */
export function run(cmd: string, args: string[], input?: string | Uint8Array, timeoutMs = 120_000): ToolRun {
  const r = spawnSync(cmd, args, { input, timeout: timeoutMs, maxBuffer: 64 << 20, env: { ...process.env, PATH: `/usr/bin:/usr/sbin:/sbin:${process.env.PATH ?? ''}` } });
  return { status: r.status, stdout: r.stdout?.toString() ?? '', stderr: r.stderr?.toString() ?? '' };
}

/** Runs cryptsetup in batch mode; throws with its stderr when it fails. */
export function cryptsetup(...args: string[]): string {
  const r = run('cryptsetup', ['--batch-mode', ...args]);
  if (r.status !== 0) throw new Error(`cryptsetup ${args.join(' ')} -> ${r.status}: ${r.stderr}`);
  return r.stdout;
}

/** Exit status of `cryptsetup open --test-passphrase` with a key file (0 = accepted). */
export function testPassphrase(device: string, keyFile: string, extra: string[] = []): number | null {
  return run('cryptsetup', ['--batch-mode', 'open', '--test-passphrase', '--key-file', keyFile, ...extra, device]).status;
}

/** Writes header at offset 0 of a new file of totalSize bytes (sparse), plus optional payload at its offset. */
export function writeVolume(path: string, header: Uint8Array, totalSize: number, payload?: { at: number; bytes: Uint8Array }): void {
  const fd = openSync(path, 'w');
  try {
    ftruncateSync(fd, totalSize);
    writeSync(fd, header, 0, header.length, 0);
    if (payload) writeSync(fd, payload.bytes, 0, payload.bytes.length, payload.at);
  } finally {
    closeSync(fd);
  }
}

export function writeSecretFile(path: string, content: string | Uint8Array): string {
  writeFileSync(path, content, { mode: 0o600 });
  return path;
}

/**
 * Recomputes both LUKS2 checksums in place per the spec (sha256 over hdr_size
 * bytes with the 64-byte csum field at 448 zeroed); independent of src/luks.
 * knownHdrSize: the layout's size when the hdr_size field itself was mutated.
 */
export function resealLuks2(buf: Uint8Array, knownHdrSize?: number): void {
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const hdrSize = knownHdrSize ?? Number(dv.getBigUint64(8, false));
  for (const at of [0, hdrSize]) {
    const region = buf.subarray(at, at + hdrSize);
    region.fill(0, 448, 512);
    region.set(createHash('sha256').update(region).digest(), 448);
  }
}

/** The JSON text of the LUKS2 copy at `at` (spec: JSON area after the 4096-byte header, NUL-terminated). */
export function luks2JsonAt(buf: Uint8Array, at: number): { text: string; hdrSize: number } {
  const hdrSize = Number(new DataView(buf.buffer, buf.byteOffset).getBigUint64(at + 8, false));
  const area = buf.subarray(at + 4096, at + hdrSize);
  const nul = area.indexOf(0);
  return { text: Buffer.from(area.subarray(0, nul)).toString('utf8'), hdrSize };
}

/** Replaces the JSON of both copies (NUL-padded) and reseals them. */
export function setLuks2Json(buf: Uint8Array, text: string): void {
  const { hdrSize } = luks2JsonAt(buf, 0);
  const bytes = Buffer.from(text, 'utf8');
  for (const at of [0, hdrSize]) {
    buf.fill(0, at + 4096, at + hdrSize);
    buf.set(bytes.subarray(0, hdrSize - 4096), at + 4096);
  }
  resealLuks2(buf);
}

/** "Key:        512 bits" style fields of `cryptsetup luksDump` text, first occurrence each. */
export function dumpField(text: string, label: string): string | undefined {
  const re = new RegExp(`^\\s*${label.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:\\s*(.*)$`, 'm');
  return re.exec(text)?.[1]?.trim();
}

/** Hex of a multi-line "Salt:" style field in luksDump text starting at `label`. */
export function dumpHexField(text: string, label: string, from = 0): string {
  const lines = text.slice(from).split('\n');
  const i = lines.findIndex((l) => new RegExp(`^\\s*${label}:`).test(l));
  if (i < 0) return '';
  let hex = lines[i]!.replace(new RegExp(`^\\s*${label}:`), '');
  for (let j = i + 1; j < lines.length && /^\s+([0-9a-f]{2} ?)+\s*$/.test(lines[j]!); j++) hex += lines[j];
  return hex.replace(/\s+/g, '');
}
