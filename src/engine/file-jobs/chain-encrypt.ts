/**
 * encryptChain: every link of a plaintext differencing chain into a directory, parents first, keeping file names:
 * the base as encryptImage makes it (its own volume and vault secret), each child as a delta over the encrypted
 * image of its parent (delta-encrypt.ts). Links already encrypted there are reused, so a backup tool can run it
 * after each new incremental and only the new link is encrypted.
 */
import { stat } from 'node:fs/promises';
import { basename, join, resolve } from 'node:path';
import { openImage, parentSearch, type DiskImage } from '../../image/index.js';
import { hasLuksMagic } from '../../volume/index.js';
import { EngineError } from '../errors.js';
import type { RunResult } from '../run-options.js';
import { encryptImage, type EncryptOptions } from './encrypt-image.js';

export interface ChainLinkResult {
  readonly source: string;
  readonly destination: string;
  /** True when the link was already encrypted in the directory and was kept as it is. */
  readonly reused: boolean;
  /** The run that encrypted it (null when reused). */
  readonly result: RunResult | null;
}

/** The plaintext chain's files, base first. */
async function chainFiles(top: string, opts: EncryptOptions): Promise<string[]> {
  const img = await openImage(top, { format: 'vhd', ...parentSearch(opts) });
  try {
    const files: string[] = [];
    for (let l: DiskImage | undefined = img; l; l = l.parent) files.unshift(resolve(l.path));
    return files;
  } finally {
    await img.close();
  }
}

/**
 * True when `file` in the output directory is an encrypted link we can build on: it opens (with its parents, whose
 * UUIDs must match) and holds a LUKS volume. A file there that does not open is reported, not replaced.
 */
async function alreadyEncrypted(file: string, opts: EncryptOptions): Promise<boolean> {
  try {
    await stat(file);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw e;
  }
  const img = await openImage(file, { format: 'vhd', ...parentSearch(opts) });
  try {
    return await hasLuksMagic(img);
  } finally {
    await img.close();
  }
}

/** Encrypt the chain ending in `top` into `outDir`, parents first. */
export async function encryptChain(top: string, outDir: string, opts: EncryptOptions = {}): Promise<ChainLinkResult[]> {
  if (opts.parentImage !== undefined) throw new EngineError('ENGINE_BAD_ARGUMENT', 'a chain finds each parent image itself; parentImage cannot be given');
  let st;
  try {
    st = await stat(outDir);
  } catch (e) {
    throw new EngineError('ENGINE_BAD_ARGUMENT', `${outDir}: the chain's output directory cannot be used (${(e as NodeJS.ErrnoException).code ?? String(e)})`, { cause: e });
  }
  if (!st.isDirectory()) throw new EngineError('ENGINE_BAD_ARGUMENT', `${outDir} is not a directory: --chain writes every link into a directory`);
  const files = await chainFiles(top, opts);
  const names = files.map((f) => basename(f));
  const dup = names.find((n, i) => names.indexOf(n) !== i);
  if (dup !== undefined) throw new EngineError('ENGINE_BAD_ARGUMENT', `two links of the chain are named ${dup}: file names are kept, so they must differ`);
  const out: ChainLinkResult[] = [];
  const { force, ...rest } = opts;
  for (let i = 0; i < files.length; i++) {
    const dest = join(resolve(outDir), names[i]!);
    // A link already encrypted is kept, unless --force asks for the whole chain again.
    if (!force && (await alreadyEncrypted(dest, opts))) {
      out.push({ source: files[i]!, destination: dest, reused: true, result: null });
      continue;
    }
    // Anything else under the link's name is refused (ENGINE_DEST_EXISTS) unless --force.
    const common = { ...rest, ...(force !== undefined ? { force } : {}) };
    let result: RunResult;
    if (i === 0) result = await encryptImage(files[i]!, dest, common);
    else {
      const { format, keySize, sectorSize, dataOffset, outFormat, noSparse, addRecoveryPassphrase, kek, ...delta } = common;
      void [format, keySize, sectorSize, dataOffset, outFormat, noSparse, addRecoveryPassphrase, kek];
      result = await encryptImage(files[i]!, dest, { ...delta, parentImage: out[i - 1]!.destination });
    }
    out.push({ source: files[i]!, destination: dest, reused: false, result });
  }
  return out;
}
