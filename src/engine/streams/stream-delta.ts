/**
 * createEncryptStream with `parentImage`: a plaintext differencing VHD stream in (what backup tools produce as
 * "what changed"), the encrypted differencing VHD out, made by the same delta encryption as `encrypt
 * --parent-image` (file-jobs/delta-encrypt.ts, reached through encryptImage). A differencing VHD keeps its BAT
 * and bitmaps apart from its blocks, and its blocks may come in any order, so the stream is spooled: its bytes go
 * to a private file (mode 0600, in a new 0700 directory under `spoolDir`, default the system's temp directory),
 * the delta is encrypted from there into a second private file, which is then streamed out; both are removed
 * whatever happens. Disk use follows the delta's size (a delta holds only changed blocks), memory stays bounded.
 */
import { createReadStream } from 'node:fs';
import { mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { encryptImage } from '../file-jobs/encrypt-image.js';
import { EngineError } from '../errors.js';
import type { StreamOutput } from './stream-duplex.js';
import type { StreamInput } from './stream-input.js';
import type { EncryptStreamOptions, StreamResult } from './stream-encrypt.js';

const CHUNK = 1 << 20;

/** The run of an encrypt stream given `parentImage` (see the module header). */
export async function runDeltaStream(input: StreamInput, o: EncryptStreamOptions & { readonly parentImage: string }, out: StreamOutput): Promise<StreamResult> {
  if ((o.inputFormat ?? 'vhd') !== 'vhd') throw new EngineError('ENGINE_BAD_ARGUMENT', 'parentImage: the input stream is a differencing VHD (inputFormat vhd)');
  const chosen = (['format', 'keySize', 'sectorSize', 'dataOffset', 'noSparse', 'addRecoveryPassphrase', 'kek'] as const).filter((k) => o[k] !== undefined);
  if (chosen.length > 0) throw new EngineError('ENGINE_BAD_ARGUMENT', `parentImage: the volume is the parent's; ${chosen.join(', ')} cannot be chosen`);
  const started = performance.now();
  const dir = await mkdtemp(join(o.spoolDir ?? tmpdir(), 'vhdcrypt-delta-'));
  try {
    const src = join(dir, 'child.vhd');
    const dst = join(dir, 'child.enc.vhd');
    const fh = await open(src, 'wx', 0o600);
    try {
      for (;;) {
        const piece = await input.readSome(CHUNK);
        if (piece === null) break;
        await fh.write(piece);
      }
    } finally {
      await fh.close();
    }
    const r = await encryptImage(src, dst, {
      parentImage: o.parentImage,
      vault: o.vault,
      vaultCredentials: o.vaultCredentials,
      passphraseFile: o.passphraseFile,
      keyFile: o.keyFile,
      passphrase: o.passphrase,
      backend: o.backend,
    });
    // The output's locators lead from the spool directory to the parent; its parent's name and UUID still find it
    // beside the stored stream (or through --parent-dir).
    for await (const chunk of createReadStream(dst, { highWaterMark: CHUNK })) await out.write(chunk as Buffer);
    return {
      operation: 'encrypt',
      format: r.format,
      container: 'vhd-differencing',
      sourceVirtualSize: r.sourceVirtualSize,
      outputVirtualSize: r.outputVirtualSize,
      outputBytes: out.written,
      dataOffset: r.dataOffset,
      sectorSize: r.sectorSize,
      bytesProcessed: r.bytesProcessed,
      backend: r.backend,
      kernel: r.kernel,
      threads: r.threads,
      seconds: (performance.now() - started) / 1000,
      secretId: r.secretId,
      kekId: null,
      vaultUri: r.vaultUri,
      luksUuid: r.luksUuid,
    };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
