/** `vhdcrypt encrypt|decrypt|info|keyslot|header`: the engine's commands. */
import { existsSync } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { basename } from 'node:path';
import { Command, InvalidArgumentError, Option } from 'commander';
import {
  addImageKeyslot,
  addImagePkcs11Keyslot,
  backupImageHeader,
  bitlockerToLuks,
  decryptBitlockerImage,
  decryptImage,
  describeBitlockerDisk,
  describeImage,
  hasBitlocker,
  encryptChain,
  mergeImage,
  verifyImage,
  encryptImage,
  exportImageKey,
  listImageKeyslots,
  outputPaths,
  removeImageKeyslot,
  restoreImageHeader,
  type BitlockerDescription,
  type Progress,
  type RunOptions,
  type RunResult,
} from '../engine/index.js';
import type { BackendChoice } from '../crypto/index.js';
import { MAX_BEK_BYTES, type Protector } from '../bitlocker/index.js';
import type { KdfOptions } from '../luks/index.js';
import { keyslotPriorityName } from '../luks/index.js';
import { VhdcryptError, isVhdcryptError } from '../errors.js';
import { ENCRYPTION_FORMATS, KEY_SIZES, SECTOR_SIZES, pkcs11Of } from '../volume/index.js';
import { packageVersion } from '../version.js';
import { keyslotLines, problemLines, tokenLines } from './luks-lines.js';
import { addPkcs11Options, withPkcs11, type Pkcs11Flags } from './pkcs11-command.js';

/** Where a differencing image's parents may be: --parent-dir (repeatable), --allow-absolute-parents. */
interface ParentFlags {
  parentDir?: string[];
  allowAbsoluteParents?: boolean;
}

interface CommonFlags extends ParentFlags, Pkcs11Flags {
  resume?: boolean;
  vault?: string;
  passphraseFile?: string;
  keyFile?: string;
  outFormat?: 'vhd-fixed' | 'vhd-dynamic' | 'raw';
  threads?: number;
  backend?: BackendChoice;
  force?: boolean;
  json?: boolean;
}

interface EncryptFlags extends CommonFlags {
  format?: 'luks2' | 'luks1' | 'plain';
  kek?: string;
  kekAlg?: 'RSA-OAEP-256' | 'RSA-OAEP' | 'A256KW';
  ade?: string | true;
  keySize?: string;
  sectorSize?: string;
  sparse?: boolean;
  addRecoveryPassphrase?: string | true;
  compat?: 'qemu';
  enrollPkcs11?: string;
  pkcs11Cert?: string;
  parentImage?: string;
  chain?: boolean;
  manifest?: boolean;
}

interface DecryptFlags extends CommonFlags {
  secret?: string;
  usePkcs11Token?: boolean;
  recoveryPasswordFile?: string;
  bekFile?: string;
  toLuks?: boolean;
  kek?: string;
  keySize?: string;
  sectorSize?: string;
}

function nonNegativeInt(v: string): number {
  const n = Number(v);
  if (!/^\d+$/.test(v) || !Number.isSafeInteger(n)) throw new InvalidArgumentError('expected a whole number');
  return n;
}

function positiveInt(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError('expected a positive integer');
  return n;
}

function collect(v: string, prev: string[] | undefined): string[] {
  return [...(prev ?? []), v];
}

/** The parent-locator options of every command that opens an image (a differencing chain). */
export function addParentOptions(cmd: Command): Command {
  return cmd
    .option('--parent-dir <dir>', "differencing images: a directory an absolute or ../ parent locator may lead into (repeatable; default: only the child's own directory)", collect)
    .option('--allow-absolute-parents', 'differencing images: follow parent locators wherever they lead (only for images you trust)');
}

/** The library's ParentSearchOptions from the flags. */
export function parentOptions(f: ParentFlags): { parentDirs?: string[]; allowAbsoluteParents?: boolean } {
  return {
    ...(f.parentDir !== undefined ? { parentDirs: f.parentDir } : {}),
    ...(f.allowAbsoluteParents === true ? { allowAbsoluteParents: true } : {}),
  };
}

const outFormatOption = () => new Option('--out-format <format>', 'output container (default: as the input)').choices(['vhd-fixed', 'vhd-dynamic', 'raw']);
const backendOption = () => new Option('--backend <backend>', 'AES-XTS backend').choices(['auto', 'native', 'wasm', 'js']).default('auto');

/** A --json result: the object with the vhdcrypt version that made it. */
function jsonResult(v: object): string {
  return toJson({ ...v, vhdcryptVersion: packageVersion() });
}

/** JSON with bigints as numbers when exact, else strings. */
function toJson(v: unknown): string {
  return JSON.stringify(v, (_k, x) => (typeof x === 'bigint' ? (x <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(x) : x.toString()) : x instanceof Uint8Array ? Buffer.from(x).toString('hex') : x), 2);
}

/** A progress bar on a terminal; nothing when stderr is not a TTY or --json is given. */
async function progressReporter(json: boolean | undefined): Promise<{ onProgress?: (p: Progress) => void; stop(): void }> {
  if (json || !process.stderr.isTTY) return { stop() {} };
  // Loaded only for a terminal: scripts and pipes (--json, no TTY) do not pay its start-up.
  const { SingleBar, Presets } = await import('cli-progress');
  const bar = new SingleBar(
    { stream: process.stderr, format: ' {bar} {percentage}% | {doneMiB}/{totalMiB} MiB | {rate} MB/s | ETA {eta}s', hideCursor: true },
    Presets.shades_classic,
  );
  let started = false;
  return {
    onProgress(p) {
      const total = Number(p.bytesTotal);
      // Own token names: cli-progress fills {total} and {value} itself (in bytes here), over any payload of that name.
      const payload = { doneMiB: (Number(p.bytesDone) / 2 ** 20).toFixed(0), totalMiB: (total / 2 ** 20).toFixed(0), rate: (p.rate / 1e6).toFixed(0) };
      if (!started) {
        bar.start(Math.max(total, 1), 0, payload);
        started = true;
      }
      bar.update(Number(p.bytesDone), payload);
    },
    stop() {
      if (started) bar.stop();
    },
  };
}

/** This command line with --resume, quoted for a POSIX shell: what finishes an interrupted run. */
function resumeCommandLine(): string {
  const args = process.argv.slice(2);
  if (!args.includes('--resume')) args.push('--resume');
  const quote = (a: string) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`);
  return ['vhdcrypt', ...args].map(quote).join(' ');
}

/**
 * An AbortSignal fired by SIGINT/SIGTERM for the duration of `fn`. The engine keeps an interrupted run's temp file
 * and journal (and its vault secret), and the error says how to resume it.
 */
async function withInterrupt<T>(fn: (signal: AbortSignal) => Promise<T>, resumable?: string): Promise<T> {
  const ac = new AbortController();
  // The first signal stops the run at its next batch with a last checkpoint; a second one exits at once (the
  // journal is replaced atomically and only names fsynced batches, so what it holds still resumes).
  const onSignal = (sig: NodeJS.Signals) => {
    if (ac.signal.aborted) process.exit(130);
    ac.abort(new Error(`interrupted by ${sig}`));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    return await fn(ac.signal);
  } catch (e) {
    if (ac.signal.aborted && (isVhdcryptError(e, 'ENGINE_ABORTED') || isVhdcryptError(e, 'LUKS_ABORTED'))) {
      // A run is kept only once its journal exists (keepForResume); before that there is nothing to resume.
      const kept = resumable !== undefined && existsSync(outputPaths(resumable).journal);
      throw new VhdcryptError('ENGINE_ABORTED', kept ? `interrupted; resume with --resume: ${resumeCommandLine()}` : 'interrupted before anything was written; nothing is left behind', { cause: e });
    }
    throw e;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

function summary(r: RunResult): Record<string, unknown> {
  return {
    operation: r.operation,
    source: r.source,
    destination: r.destination,
    format: r.format,
    container: r.container,
    sourceVirtualSize: r.sourceVirtualSize,
    outputVirtualSize: r.outputVirtualSize,
    outputFileSize: r.outputFileSize,
    dataOffset: r.dataOffset,
    sectorSize: r.sectorSize,
    bytesProcessed: r.bytesProcessed,
    backend: r.backend,
    kernel: r.kernel,
    threads: r.threads,
    directWrites: r.directWrites,
    seconds: Number(r.seconds.toFixed(3)),
    dataSeconds: Number(r.dataSeconds.toFixed(3)),
    mbPerSecond: Number(r.mbPerSecond.toFixed(1)),
    resumed: r.resumed,
    secretId: r.secretId,
    kekId: r.kekId,
    vault: r.vaultUri,
    luksUuid: r.luksUuid,
    warnings: r.warnings,
  };
}

/** Each warning of a run on stderr as it arises (with --json too; the summary lists them again). */
function printWarning(message: string): void {
  process.stderr.write(`vhdcrypt: warning: ${message}\n`);
}

function printResult(r: RunResult, json: boolean | undefined): void {
  if (json) {
    process.stdout.write(jsonResult(summary(r)) + '\n');
    return;
  }
  const what = r.operation === 'encrypt' ? `encrypted (${r.format}, ${r.container})` : `decrypted (${r.container})`;
  process.stdout.write(
    `${what}: ${r.destination}\n  ${(Number(r.bytesProcessed) / 2 ** 20).toFixed(1)} MiB in ${r.seconds.toFixed(2)} s, ${r.mbPerSecond.toFixed(0)} MB/s, ${r.backend}/${r.kernel}, ${r.threads} threads${r.resumed ? ', resumed' : ''}\n` +
      (r.secretId ? `  vault secret: ${r.secretId}\n` : ''),
  );
}

/** A recovery passphrase from a file (its first line), or typed at a prompt (see passphrase-prompt.ts). */
async function recoveryPassphrase(v: string | true): Promise<Uint8Array> {
  if (v === true) {
    const { promptNewPassphrase } = await import('./passphrase-prompt.js');
    return promptNewPassphrase('recovery passphrase');
  }
  const raw = new Uint8Array(await readFile(v));
  let n = raw.indexOf(0x0a);
  if (n < 0) n = raw.length;
  if (n > 0 && raw[n - 1] === 0x0d) n--;
  const out = raw.slice(0, n);
  raw.fill(0);
  if (out.length === 0) throw new InvalidArgumentError(`the recovery passphrase in ${v} is empty`);
  return out;
}

function kdfOption(v: string | undefined): KdfOptions | undefined {
  if (v === undefined) return undefined;
  if (v === 'pbkdf2') return { type: 'pbkdf2', hash: 'sha256', iterations: 600_000 };
  if (v === 'argon2id') return { type: 'argon2id', time: 4, memoryKiB: 1048576, parallelism: 4 };
  throw new InvalidArgumentError('expected pbkdf2 or argon2id');
}

/** The options every whole-image job takes from its flags, and what runs around it: progress, interrupt, result. */
async function runImageJob(f: CommonFlags & ParentFlags, dst: string, job: (common: RunOptions) => Promise<RunResult>): Promise<void> {
  const progress = await progressReporter(f.json);
  try {
    const r = await withInterrupt(
      (signal) => withPkcs11(f, (vaultCredentials) =>
        job({
          vaultCredentials,
          threads: f.threads,
          backend: f.backend,
          force: f.force,
          ...parentOptions(f),
          signal,
          onProgress: progress.onProgress,
          onWarning: printWarning,
        })),
      dst,
    );
    progress.stop();
    printResult(r, f.json);
  } finally {
    progress.stop();
  }
}

/** The first line of a file, without its line end (a password or a recovery password). */
async function firstLine(file: string): Promise<string> {
  const text = await readFile(file, 'utf8');
  return text.split(/\r?\n/)[0] ?? '';
}

async function bitlockerProtector(f: DecryptFlags): Promise<Protector | undefined> {
  if (f.keyFile !== undefined) throw new VhdcryptError('CLI_USAGE', '--key-file does not open BitLocker volumes: use --passphrase-file, --recovery-password-file, --bek-file or --secret');
  if (f.recoveryPasswordFile !== undefined) return { kind: 'recovery-password', recoveryPassword: await firstLine(f.recoveryPasswordFile) };
  if (f.passphraseFile !== undefined) return { kind: 'password', password: await firstLine(f.passphraseFile) };
  if (f.bekFile !== undefined) {
    const size = (await stat(f.bekFile)).size;
    if (size > MAX_BEK_BYTES) throw new VhdcryptError('BITLK_BAD_STARTUP_KEY', `${f.bekFile}: ${size} bytes is too large for a startup key (.BEK) file`);
    return { kind: 'startup-key', bek: await readFile(f.bekFile) };
  }
  return undefined;
}

/** decrypt of a disk holding BitLocker volumes. */
async function runBitlockerDecrypt(src: string, dst: string, f: DecryptFlags): Promise<void> {
  if (f.resume) throw new VhdcryptError('CLI_USAGE', '--resume: a BitLocker decrypt has no journal; run it again');
  const protector = await bitlockerProtector(f);
  const options = {
    ...(protector ? { protector } : {}),
    ...(f.secret !== undefined ? { bekSecret: f.secret } : {}),
    vault: f.vault,
    threads: f.threads,
    backend: f.backend,
    force: f.force,
    outFormat: f.outFormat,
    ...parentOptions(f),
    onWarning: printWarning,
  };
  if (f.toLuks) {
    const m = await withInterrupt((signal) => bitlockerToLuks(src, dst, { ...options, kek: f.kek, signal }), dst);
    if (f.json) process.stdout.write(jsonResult(m) + '\n');
    else process.stdout.write(`${m.luks.destination}: ${m.bitlocker.volumes.length} BitLocker volume(s) decrypted and re-encrypted into ${m.luks.format} (${m.luks.container}); key sealed as ${m.luks.secretId}\n`);
    return;
  }
  const r = await withInterrupt((signal) => decryptBitlockerImage(src, dst, { ...options, signal }), dst);
  if (f.json) {
    process.stdout.write(jsonResult(r) + '\n');
    return;
  }
  for (const v of r.volumes) {
    process.stderr.write(`vhdcrypt: BitLocker volume ${v.guid} (${r.scheme === 'volume' ? 'the whole disk' : `partition ${v.partition}`}, ${v.cipher}, ${v.sectorSize}-byte sectors) decrypted with VMK ${v.vmkGuid}\n`);
  }
  process.stdout.write(`${r.destination}: ${r.container}, ${r.volumes.length} BitLocker volume(s) decrypted, ${r.bytesDecrypted} bytes in ${r.seconds.toFixed(2)} s\n`);
}

function printBitlockerInfo(d: BitlockerDescription, json: boolean | undefined): void {
  if (json) {
    process.stdout.write(jsonResult(d) + '\n');
    return;
  }
  const lines = [`image:       ${d.path}`, `virtual:     ${d.virtualSize} bytes`, `partitions:  ${d.scheme === 'volume' ? 'none (a bare BitLocker volume)' : d.scheme}`];
  for (const p of d.partitions) {
    if (d.scheme !== 'volume') lines.push(`  ${p.index}: offset ${p.offset}, ${p.size} bytes, type ${p.type}${p.name ? ` "${p.name}"` : ''}${p.bitlocker ? ', BitLocker' : ''}`);
    if (p.error) lines.push(`    error: ${p.error.code}: ${p.error.message}`);
    const v = p.volume as Record<string, any> | undefined;
    if (!v) continue;
    lines.push(
      `    ${v.variant} volume ${v.guid} (${v.type}, ${v.state})`,
      `    cipher:      ${v.cipher}, ${v.sectorSize}-byte sectors`,
      `    created:     ${v.created ?? 'unknown'}`,
      `    description: ${v.description}`,
      `    metadata:    copies at ${v.metadataOffsets.join(', ')}; copy ${v.metadataCopyUsed} used`,
      `    header:      relocated to ${v.volumeHeader.offset} (${v.volumeHeader.size} bytes)`,
    );
    for (const c of v.damagedCopies) lines.push(`    damaged:     copy ${c.copy}: ${c.reason}`);
    for (const k of v.protectors) lines.push(`    protector:   ${k.guid} ${k.protection}${k.name ? ` "${k.name}"` : ''}`);
  }
  process.stdout.write(lines.join('\n') + '\n');
}

export function registerImageCommands(program: Command): void {
  addPkcs11Options(addParentOptions(program
    .command('encrypt')), { extractable: true })
    .description('encrypt a VHD or raw image into a LUKS (or plain) encrypted image; the key is sealed in the vault')
    .argument('<src>', 'source image (VHD fixed/dynamic/differencing, raw, or an nbd:// or nbd+unix:// export); never written')
    .argument('<dst>', 'encrypted image to create')
    .option('--resume', 'finish an interrupted run from its journal')
    .addOption(new Option('--format <format>', 'encryption format').choices(ENCRYPTION_FORMATS).default('luks2'))
    .option('--vault <uri>', 'vault URI (default: the embedded vault)')
    .option('--kek <name>', "key-encryption key in the vault (created on first use), or 'pkcs11:token=...;object=...' for a key in a PKCS#11 token", 'vhdcrypt-kek')
    .addOption(new Option('--kek-alg <alg>', 'wrap algorithm with an RSA KEK (RSA-OAEP is Azure Disk Encryption\'s)').choices(['RSA-OAEP-256', 'RSA-OAEP', 'A256KW']))
    .option('--ade [machine-name]', 'seal as an Azure Disk Encryption secret (contentType "Wrapped BEK", ADE\'s tags; MachineName default: the source\'s base name)')
    .addOption(new Option('--passphrase-file <file>', 'keyslot passphrase from a file (first line); no vault').conflicts('keyFile'))
    .addOption(new Option('--key-file <file>', 'keyslot key file (whole content; plain: the raw key); no vault').conflicts('passphraseFile'))
    .addOption(new Option('--key-size <bits>', 'AES-XTS key bits').choices(KEY_SIZES.map(String)).default('512'))
    .addOption(new Option('--sector-size <bytes>', 'crypto sector size (LUKS2 default 4096 when the size allows)').choices(SECTOR_SIZES.map(String)))
    .addOption(outFormatOption())
    .option('--no-sparse', 'write every block, unallocated ones as encrypted zeros (needed by QEMU luks over vpc)')
    .addOption(
      new Option('--compat <tool>', 'make an image the named tool reads: qemu = LUKS1 with every block written, which QEMU 7.2 and nbdkit 1.32 open')
        .choices(['qemu'])
        .conflicts(['format', 'sectorSize', 'sparse']),
    )
    .option('--add-recovery-passphrase [file]', 'add a second keyslot (argon2id) for a passphrase a person types (from the file, else one line of stdin)')
    .option('--enroll-pkcs11 <uri>', 'LUKS2: also a keyslot and systemd-pkcs11 token (as systemd-cryptenroll --pkcs11-token-uri) that open with this RSA key in a PKCS#11 token')
    .option('--pkcs11-cert <file>', "with --enroll-pkcs11: the key's X.509 certificate (PEM or DER), so the token is not needed now")
    .option('--no-manifest', 'no authenticated manifest beside the output (saves hashing it once more; verify --blocks then has nothing to check)')
    .option('--parent-image <file>', "src is a differencing VHD: encrypt it as a delta over this encrypted image of its parent (its volume, key and vault secret)")
    .addOption(new Option('--chain', 'src is the top of a differencing chain and dst a directory: encrypt every link into it, parents first, keeping file names (links already there are reused)').conflicts(['parentImage', 'resume']))
    .option('--threads <n>', 'worker threads (default: one per core)', positiveInt)
    .addOption(backendOption())
    .option('--force', 'replace an existing destination; discard a leftover interrupted run')
    .option('--json', 'print a JSON summary')
    .action(async (src: string, dst: string, f: EncryptFlags, cmd: Command) => {
      if (f.chain === true) {
        const links = await withInterrupt((signal) =>
          encryptChain(src, dst, {
            format: f.compat === 'qemu' ? 'luks1' : f.format,
            vault: f.vault,
            kek: f.kek,
            passphraseFile: f.passphraseFile,
            keyFile: f.keyFile,
            keySize: Number(f.keySize) as 256 | 512,
            sectorSize: f.sectorSize !== undefined ? (Number(f.sectorSize) as 512 | 4096) : undefined,
            threads: f.threads,
            backend: f.backend,
            force: f.force,
            ...parentOptions(f),
            signal,
            onWarning: printWarning,
          }),
        );
        if (f.json) process.stdout.write(jsonResult({ links: links.map((l) => ({ source: l.source, destination: l.destination, reused: l.reused, ...(l.result ? summary(l.result) : {}) })) }) + '\n');
        else for (const l of links) process.stdout.write(`${l.reused ? 'kept     ' : 'encrypted'} ${l.destination}${l.result ? ` (${l.result.container})` : ''}\n`);
        return;
      }
      if (f.parentImage !== undefined) {
        // The volume is the parent's: options that would choose another are refused, not ignored.
        const chosen = ['format', 'kek', 'keySize', 'sectorSize', 'outFormat', 'sparse', 'compat', 'addRecoveryPassphrase', 'enrollPkcs11', 'pkcs11Cert'].filter((k) => cmd.getOptionValueSource(k) === 'cli');
        if (chosen.length > 0) throw new VhdcryptError('CLI_USAGE', `--parent-image: the volume is the parent's; ${chosen.map((k) => '--' + k.replace(/[A-Z]/g, (c) => '-' + c.toLowerCase())).join(', ')} cannot be given`);
        const parentImage = f.parentImage;
        await runImageJob(f, dst, (common) =>
          encryptImage(src, dst, { resume: f.resume, vault: f.vault, passphraseFile: f.passphraseFile, keyFile: f.keyFile, parentImage, ...common }),
        );
        return;
      }
      if (f.pkcs11Cert !== undefined && f.enrollPkcs11 === undefined) throw new VhdcryptError('CLI_USAGE', '--pkcs11-cert goes with --enroll-pkcs11');
      const recovery = f.addRecoveryPassphrase !== undefined ? await recoveryPassphrase(f.addRecoveryPassphrase) : undefined;
      try {
        await runImageJob(f, dst, (common) =>
          encryptImage(src, dst, {
            resume: f.resume,
            // QEMU's and nbdkit's luks drivers read LUKS1 only, and decrypt unallocated VHD blocks into garbage.
            format: f.compat === 'qemu' ? 'luks1' : f.format,
            vault: f.vault,
            kek: f.kek,
            kekAlg: f.kekAlg,
            ade: f.ade === undefined ? undefined : { machineName: f.ade === true ? basename(src).replace(/\.[^.]*$/, '') : f.ade },
            passphraseFile: f.passphraseFile,
            keyFile: f.keyFile,
            keySize: Number(f.keySize) as 256 | 512,
            sectorSize: f.sectorSize !== undefined ? (Number(f.sectorSize) as 512 | 4096) : undefined,
            outFormat: f.outFormat,
            noSparse: f.sparse === false || f.compat === 'qemu',
            addRecoveryPassphrase: recovery,
            ...(f.enrollPkcs11 !== undefined ? { enrollPkcs11: { uri: f.enrollPkcs11, certFile: f.pkcs11Cert, access: pkcs11Of(common.vaultCredentials)?.access } } : {}),
            ...(f.manifest === false ? { manifest: false } : {}),
            ...common,
          }),
        );
      } finally {
        recovery?.fill(0);
      }
    });

  addPkcs11Options(addParentOptions(program
    .command('decrypt')))
    .description('decrypt an encrypted image back into a plaintext image')
    .argument('<src>', 'encrypted image; never written')
    .argument('<dst>', 'plaintext image to create')
    .option('--resume', 'finish an interrupted run from its journal')
    .option('--vault <uri>', 'vault URI (default: the token\'s vault, else the embedded vault)')
    .addOption(new Option('--passphrase-file <file>', 'keyslot passphrase from a file (first line)').conflicts('keyFile'))
    .addOption(new Option('--key-file <file>', 'keyslot key file (plain: the raw key)').conflicts('passphraseFile'))
    .option('--secret <id>', 'vault secret id (plain volumes without a VHD UUID; BitLocker: the Azure Disk Encryption BEK secret)')
    .option('--use-pkcs11-token', "unlock through the header's systemd-pkcs11 token (the PIN) even when a vault token is there too")
    .addOption(new Option('--recovery-password-file <file>', 'BitLocker: the 48-digit recovery password from a file').conflicts(['passphraseFile', 'keyFile', 'bekFile']))
    .addOption(new Option('--bek-file <file>', 'BitLocker: the startup key (.BEK file)').conflicts(['passphraseFile', 'keyFile']))
    .option('--to-luks', 'BitLocker: re-encrypt the decrypted disk into LUKS2, a new key sealed in the vault (the migration off Azure Disk Encryption)')
    .option('--kek <name>', 'with --to-luks: key-encryption key of the new key (default vhdcrypt-kek)')
    .addOption(new Option('--key-size <bits>', 'plain volumes: key bits').choices(KEY_SIZES.map(String)))
    .addOption(new Option('--sector-size <bytes>', 'plain volumes: crypto sector size').choices(SECTOR_SIZES.map(String)))
    .addOption(outFormatOption())
    .option('--threads <n>', 'worker threads (default: one per core)', positiveInt)
    .addOption(backendOption())
    .option('--force', 'replace an existing destination; discard a leftover interrupted run')
    .option('--json', 'print a JSON summary')
    .action(async (src: string, dst: string, f: DecryptFlags) => {
      if (f.toLuks || f.recoveryPasswordFile !== undefined || f.bekFile !== undefined || (await hasBitlocker(src, parentOptions(f)))) {
        await runBitlockerDecrypt(src, dst, f);
        return;
      }
      await runImageJob(f, dst, (common) =>
        decryptImage(src, dst, {
          resume: f.resume,
          vault: f.vault,
          passphraseFile: f.passphraseFile,
          keyFile: f.keyFile,
          secretId: f.secret,
          usePkcs11Token: f.usePkcs11Token,
          plain: {
            ...(f.sectorSize !== undefined ? { sectorSize: Number(f.sectorSize) as 512 | 4096 } : {}),
            ...(f.keySize !== undefined ? { keyBits: Number(f.keySize) as 256 | 512 } : {}),
          },
          outFormat: f.outFormat,
          ...common,
        }),
      );
    });

  addPkcs11Options(addParentOptions(program
    .command('info')))
    .description('container, size, allocation, LUKS summary, keyslots, tokens, and which vault secret unlocks it')
    .argument('<img>', 'image')
    .option('--vault <uri>', 'vault to look the LUKS UUID up in')
    .option('--json', 'print JSON')
    .action(async (img: string, f: { json?: boolean; vault?: string } & ParentFlags & Pkcs11Flags) => {
      if (await hasBitlocker(img, parentOptions(f))) {
        printBitlockerInfo(await describeBitlockerDisk(img, parentOptions(f)), f.json);
        return;
      }
      const d = await withPkcs11(f, (vaultCredentials) => describeImage(img, { vault: f.vault, vaultCredentials, ...parentOptions(f) }));
      if (f.json) {
        process.stdout.write(jsonResult(d) + '\n');
        return;
      }
      const mib = (b: bigint) => `${(Number(b) / 2 ** 20).toFixed(1)} MiB`;
      const lines = [
        `image:       ${d.path}`,
        `container:   ${d.container}${d.blockSize ? ` (block ${d.blockSize} bytes)` : ''}`,
        `virtual:     ${d.virtualSize} bytes (${mib(d.virtualSize)}), allocated ${mib(d.allocatedBytes)}, file ${mib(d.fileSize)}`,
        `encryption:  ${d.encryption}`,
      ];
      if (d.luks) {
        lines.push(`LUKS UUID:   ${String(d.luks.uuid)}`, `data offset: ${d.luks.dataOffset} bytes, sector ${d.luks.sectorSize} bytes`);
        for (const line of [...keyslotLines(d.luks), ...tokenLines(d.luks), ...problemLines(d.luks)]) lines.push(`  ${line}`);
      }
      lines.push(`secret:      ${d.secret ? `${d.secret.id} (via ${d.secret.via})` : 'none known'}`);
      if (d.chain.length > 1) {
        d.chain.forEach((l, i) => {
          const blocks = l.allocatedBlocks !== null ? `, ${l.allocatedBlocks} blocks` : '';
          lines.push(`link ${i}:      ${l.path} (${l.container}, ${String(l.uuid)}${blocks}${l.parent ? `; parent ${l.parent.name} ${l.parent.uuid}` : ''})`);
        });
      }
      for (const n of d.notes) lines.push(`note:        ${n}`);
      process.stdout.write(lines.join('\n') + '\n');
    });

  addParentOptions(program
    .command('verify'))
    .description("check an encrypted image or chain: structure without a key; with --blocks (or a key option) every block against each link's authenticated manifest")
    .argument('<img>', 'encrypted image (the top of a chain)')
    .option('--blocks', "check every block against the manifests (unseals the base's vault secret)")
    .option('--vault <uri>', "vault URI (default: the token's vault, else the embedded vault); implies --blocks")
    .addOption(new Option('--passphrase-file <file>', 'keyslot passphrase from a file (first line); implies --blocks').conflicts('keyFile'))
    .addOption(new Option('--key-file <file>', 'keyslot key file; implies --blocks').conflicts('passphraseFile'))
    .option('--json', 'print the report as JSON')
    .action(async (img: string, f: { blocks?: boolean; vault?: string; passphraseFile?: string; keyFile?: string; json?: boolean } & ParentFlags) => {
      const r = await verifyImage(img, {
        blocks: f.blocks === true || f.vault !== undefined,
        vault: f.vault,
        passphraseFile: f.passphraseFile,
        keyFile: f.keyFile,
        ...parentOptions(f),
      });
      if (f.json) process.stdout.write(jsonResult(r) + '\n');
      else {
        const lines = [`${r.ok ? 'ok' : 'DAMAGED'}: ${r.image} (${r.links.length} link${r.links.length === 1 ? '' : 's'}; ${r.blocksChecked ? 'structure and every block' : 'structure only, no key'})`];
        for (const p of r.problems) lines.push(`  ${p}`);
        r.links.forEach((l, i) => {
          lines.push(`  link ${i}: ${l.path} (${l.container})${l.blocksChecked !== null ? `, ${l.blocksChecked} blocks checked` : ''}${l.problems.length === 0 ? ', ok' : ''}`);
          for (const p of l.problems) lines.push(`    ${p}`);
        });
        process.stdout.write(lines.join('\n') + '\n');
      }
      if (!r.ok) throw new VhdcryptError('ENGINE_VERIFY_FAILED', `${img}: damaged (see the report above)`);
    });

  addParentOptions(program
    .command('merge'))
    .description('merge an encrypted differencing link into its parent on ciphertext only (no key needed); crash-safe, rerun after an interruption')
    .argument('<child>', 'encrypted differencing VHD; removed once merged')
    .option('--into-child', 'merge the parent into this link instead: it takes the parent\'s place (its parent becomes the grandparent; over the base, it becomes a dynamic VHD)')
    .option('--seal', "verify both links first and seal the merged link's new manifest (unseals the base's vault secret)")
    .option('--vault <uri>', 'vault URI; implies --seal')
    .addOption(new Option('--passphrase-file <file>', 'keyslot passphrase from a file; implies --seal').conflicts('keyFile'))
    .addOption(new Option('--key-file <file>', 'keyslot key file; implies --seal').conflicts('passphraseFile'))
    .option('--json', 'print a JSON summary')
    .action(async (child: string, f: { intoChild?: boolean; seal?: boolean; vault?: string; passphraseFile?: string; keyFile?: string; json?: boolean } & ParentFlags) => {
      const r = await withInterrupt((signal) =>
        mergeImage(child, { intoChild: f.intoChild, seal: f.seal, vault: f.vault, passphraseFile: f.passphraseFile, keyFile: f.keyFile, ...parentOptions(f), signal, onWarning: printWarning }),
      );
      if (f.json) process.stdout.write(jsonResult(r) + '\n');
      else process.stdout.write(`merged ${r.removed} into ${r.merged}: ${r.blocks} blocks${r.resumed ? ' (interrupted merge finished)' : ''}; manifest ${r.manifest}\n`);
    });

  const keyslot = program.command('keyslot').description('LUKS keyslots of an encrypted image');
  addParentOptions(keyslot
    .command('list'))
    .argument('<img>', 'encrypted image')
    .option('--json', 'print JSON')
    .action(async (img: string, f: { json?: boolean } & ParentFlags) => {
      const r = await listImageKeyslots(img, parentOptions(f));
      if (f.json) process.stdout.write(jsonResult(r) + '\n');
      else {
        process.stdout.write(`LUKS${r.version} ${r.uuid}\n`);
        for (const k of r.keyslots) process.stdout.write(`  keyslot ${k.id}: ${k.kdf}, priority ${keyslotPriorityName(k.priority)}\n`);
        for (const t of r.tokens) process.stdout.write(`  token ${t.id}: ${t.type} -> keyslots ${t.keyslots.join(',')}\n`);
      }
    });
  addPkcs11Options(addParentOptions(keyslot
    .command('add')))
    .argument('<img>', 'encrypted image')
    .option('--vault <uri>', 'vault holding the existing secret')
    .addOption(new Option('--passphrase-file <file>', 'existing passphrase (default: the vault secret)').conflicts('keyFile'))
    .addOption(new Option('--key-file <file>', 'existing key file').conflicts('passphraseFile'))
    .addOption(new Option('--new-passphrase-file <file>', 'passphrase for the new keyslot').conflicts('newKeyFile'))
    .option('--new-key-file <file>', 'key file for the new keyslot')
    .option('--kdf <kdf>', 'KDF of the new keyslot: argon2id (default, LUKS2) or pbkdf2', kdfOption)
    .option('--key-slot <n>', 'id of the new keyslot', nonNegativeInt)
    .option('--json', 'print JSON')
    .action(async (img: string, f: { vault?: string; passphraseFile?: string; keyFile?: string; newPassphraseFile?: string; newKeyFile?: string; kdf?: KdfOptions; keySlot?: number; json?: boolean } & ParentFlags & Pkcs11Flags) => {
      const id = await withPkcs11(f, (vaultCredentials) => addImageKeyslot(
        img,
        { vault: f.vault, vaultCredentials, passphraseFile: f.passphraseFile, keyFile: f.keyFile },
        { passphraseFile: f.newPassphraseFile, keyFile: f.newKeyFile },
        { kdf: f.kdf, keyslot: f.keySlot, ...parentOptions(f) },
      ));
      process.stdout.write(f.json ? jsonResult({ keyslot: id }) + '\n' : `added keyslot ${id}\n`);
    });
  addPkcs11Options(addParentOptions(keyslot
    .command('add-pkcs11'))
    .description('add a keyslot and systemd-pkcs11 token (as systemd-cryptenroll --pkcs11-token-uri writes them) that open with an RSA key in a PKCS#11 token')
    .argument('<img>', 'encrypted image (LUKS2)')
    .argument('<uri>', "pkcs11: URI of the token's RSA key (or its certificate)")
    .option('--pkcs11-cert <file>', "the key's X.509 certificate (PEM or DER): the token is not needed now")
    .option('--vault <uri>', 'vault holding the existing secret')
    .addOption(new Option('--passphrase-file <file>', 'existing passphrase (default: the vault secret)').conflicts('keyFile'))
    .addOption(new Option('--key-file <file>', 'existing key file').conflicts('passphraseFile'))
    .option('--key-slot <n>', 'id of the new keyslot', nonNegativeInt)
    .option('--json', 'print JSON'))
    .action(async (img: string, uri: string, f: { pkcs11Cert?: string; vault?: string; passphraseFile?: string; keyFile?: string; keySlot?: number; json?: boolean } & ParentFlags & Pkcs11Flags) => {
      const r = await withPkcs11(f, (vaultCredentials) => addImagePkcs11Keyslot(
        img,
        { vault: f.vault, vaultCredentials, passphraseFile: f.passphraseFile, keyFile: f.keyFile },
        { uri, certFile: f.pkcs11Cert, access: pkcs11Of(vaultCredentials)?.access },
        { keyslot: f.keySlot, ...parentOptions(f) },
      ));
      process.stdout.write(f.json ? jsonResult(r) + '\n' : `added keyslot ${r.keyslot} and systemd-pkcs11 token ${r.token}\n`);
    });
  addParentOptions(keyslot
    .command('remove'))
    .argument('<img>', 'encrypted image')
    .argument('<slot>', 'keyslot id', nonNegativeInt)
    .option('--force', 'allow removing the last keyslot (the data becomes unrecoverable)')
    .action(async (img: string, slot: number, f: { force?: boolean } & ParentFlags) => {
      await removeImageKeyslot(img, slot, { force: f.force, ...parentOptions(f) });
      process.stdout.write(`removed keyslot ${slot}\n`);
    });

  const key = program.command('key').description('the secrets that open an image, for other tools (cryptsetup, QEMU, nbdkit)');
  addPkcs11Options(addParentOptions(key
    .command('export')))
    .description("unseal an image's keyslot passphrase and/or volume key through the vault (as decrypt does) into new 0600 files")
    .argument('<img>', 'encrypted image')
    .option('--passphrase-file <file>', "write the keyslot passphrase (LUKS; no trailing newline) to a new file; '-' for standard output")
    .option('--volume-key-file <file>', "write the volume key (raw bytes, as cryptsetup's --volume-key-file; plain: the raw key) to a new file; '-' for standard output")
    .option('--vault <uri>', 'vault URI (default: the token\'s vault, else the embedded vault)')
    .option('--secret <id>', 'vault secret id (plain volumes without a VHD UUID)')
    .option('--force', 'replace an existing output file')
    .option('--use-pkcs11-token', "unlock through the header's systemd-pkcs11 token (the PIN) even when a vault token is there too")
    .option('--json', 'print what was written (never the key)')
    .action(async (img: string, f: { passphraseFile?: string; volumeKeyFile?: string; vault?: string; secret?: string; force?: boolean; json?: boolean; usePkcs11Token?: boolean } & ParentFlags & Pkcs11Flags) => {
      const r = await withInterrupt((signal) => withPkcs11(f, (vaultCredentials) =>
        exportImageKey(img, {
          vaultCredentials,
          usePkcs11Token: f.usePkcs11Token,
          passphraseFile: f.passphraseFile,
          volumeKeyFile: f.volumeKeyFile,
          vault: f.vault,
          secretId: f.secret,
          force: f.force,
          ...parentOptions(f),
          signal,
        })),
      );
      // A key sent to standard output owns it: the report goes to stderr then.
      const toStdout = r.passphraseFile === '-' || r.volumeKeyFile === '-';
      const report = toStdout ? process.stderr : process.stdout;
      if (f.json) {
        report.write(jsonResult(r) + '\n');
        return;
      }
      const where = (d: string) => (d === '-' ? 'standard output' : d);
      if (r.passphraseFile !== null) report.write(`keyslot passphrase (${r.passphraseBytes} bytes, keyslot ${r.keyslot}) written to ${where(r.passphraseFile)}\n`);
      if (r.volumeKeyFile !== null) report.write(`volume key (${r.volumeKeyBits} bits) written to ${where(r.volumeKeyFile)}\n`);
    });

  const header = program.command('header').description('LUKS header backup and restore');
  addParentOptions(header
    .command('backup'))
    .argument('<img>', 'encrypted image')
    .argument('<file>', 'backup file to create')
    .action(async (img: string, file: string, f: ParentFlags) => {
      const r = await backupImageHeader(img, file, parentOptions(f));
      process.stdout.write(`header region of ${r.bytes} bytes saved to ${file}\n`);
    });
  addParentOptions(header
    .command('restore'))
    .argument('<img>', 'encrypted image')
    .argument('<file>', 'backup file')
    .option('--force', 'replace a readable header of another volume')
    .action(async (img: string, file: string, f: { force?: boolean } & ParentFlags) => {
      const r = await restoreImageHeader(img, file, { force: f.force, ...parentOptions(f) });
      process.stdout.write(`header region of ${r.bytes} bytes restored into ${img}\n`);
    });
}
