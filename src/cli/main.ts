/** The `vhdcrypt` command line: each part registers its own subcommands. */
import { Command, CommanderError } from 'commander';
import { VhdcryptError } from '../errors.js';
import { packageVersion } from '../version.js';
import { VERSION_FLAGS } from './command-tree.js';
import { exitCodeFor } from './exit-codes.js';
import { systemErrorText } from './system-error-text.js';
import { registerBench } from './bench-command.js';
import { registerVault } from './vault-command.js';
import { registerImageCommands } from './image-commands.js';
import { registerServe } from './serve-command.js';
import { registerPkcs11 } from './pkcs11-command.js';
import { registerFleet } from './fleet-command.js';
import { registerNbdSource } from '../nbd/source-kind.js';

/** Errors opening a named file (Node system error codes), reported in one line with exit status 3 like other bad input. */
const FILE_ERRORS = new Set(['ENOENT', 'EACCES', 'EPERM', 'EISDIR', 'ENOTDIR', 'ELOOP', 'ENAMETOOLONG']);
const FILE_ERROR_STATUS = 3;
/**
 * A system resource ran out (open files per process or system-wide, memory, a temporarily unavailable
 * resource): the environment, not the input nor a bug. Reported by name with what to do, exit status 1.
 */
const RESOURCE_ERRORS: Readonly<Record<string, string>> = {
  EMFILE: 'too many open files in this process; raise the limit (ulimit -n) or use fewer --threads',
  ENFILE: 'too many open files on this system; close some or raise fs.file-max',
  ENOMEM: 'out of memory; free some or use fewer --threads',
  EAGAIN: 'a resource was temporarily unavailable (threads, processes or memory); retry, or use fewer --threads',
  EFBIG: 'a file would pass the file size limit (ulimit -f) or the largest file the file system holds',
};
const RESOURCE_ERROR_STATUS = 1;
/**
 * Node's module loader (Node 24) reports a package.json it could not read, here because a resource ran out while a
 * dependency loaded, as ERR_INVALID_PACKAGE_CONFIG with no errno: only libuv's text for it (uv_strerror) says which.
 */
const LOADER_CODE = 'ERR_INVALID_PACKAGE_CONFIG';
const UV_TEXTS: ReadonlyArray<readonly [string, string]> = [
  ['too many open files', 'EMFILE'],
  ['file table overflow', 'ENFILE'],
  ['not enough memory', 'ENOMEM'],
  ['resource temporarily unavailable', 'EAGAIN'],
];


/** The errno code of `e` or of an error in its cause chain (a typed error may wrap one), if it is a resource error. */
export function resourceErrorCode(e: unknown): string | null {
  for (let x = e, depth = 0; x !== null && typeof x === 'object' && depth < 8; x = (x as { cause?: unknown }).cause, depth++) {
    const code = (x as { code?: unknown }).code;
    if (typeof code === 'string' && Object.hasOwn(RESOURCE_ERRORS, code)) return code;
    // Worker threads and SQLite report EMFILE in their message only (ERR_WORKER_INIT_FAILED, SQLITE_CANTOPEN).
    const message = String((x as { message?: unknown }).message ?? '');
    const m = /\b(EMFILE|ENFILE|ENOMEM|EAGAIN|EFBIG)\b/.exec(message);
    if (m) return m[1]!;
    if (code === LOADER_CODE) {
      const hit = UV_TEXTS.find(([text]) => message.includes(text));
      if (hit) return hit[1];
    }
  }
  return null;
}

/** The one-line report of a resource error. */
export function resourceErrorLine(code: string, e: unknown): string {
  return `vhdcrypt: ${code}: ${RESOURCE_ERRORS[code]} (${(e as Error)?.message ?? String(e)})\n`;
}

/**
 * Each part of the CLI and the top-level commands it registers. A run builds only the part its command word names
 * (commander builds every option object of every command it is given: the vault's az-style commands alone take
 * ~7 ms of a cold start); help, completion and words no part names build them all. test/cli-shell.test.ts checks
 * these names against what each part registers.
 */
export const COMMAND_PARTS: ReadonlyArray<{ readonly names: readonly string[]; readonly register: (program: Command) => void }> = [
  { names: ['encrypt', 'decrypt', 'info', 'verify', 'merge', 'keyslot', 'key', 'header'], register: registerImageCommands },
  { names: ['vault'], register: registerVault },
  { names: ['serve'], register: registerServe },
  { names: ['pkcs11'], register: registerPkcs11 },
  { names: ['bench'], register: registerBench },
  { names: ['fleet'], register: registerFleet },
];

/** The program; with `command`, only the part that registers that top-level command when one does. Exported for tests. */
export function buildProgram(command?: string): Command {
  const program = new Command('vhdcrypt')
    .description('Encrypt VHD and raw disk images into LUKS volumes with AES-XTS; keys sealed in a vault')
    .option('--debug', 'print stack traces on error')
    .addHelpText('after', '\n  -V, --version  print the version (alone)')
    .exitOverride();
  const part = command === undefined ? undefined : COMMAND_PARTS.find((p) => p.names.includes(command));
  for (const p of part !== undefined ? [part] : COMMAND_PARTS) p.register(program);
  program
    .command('completion')
    .description('print a shell completion script: source <(vhdcrypt completion bash)')
    .argument('<shell>', 'bash or zsh')
    .action(async (shell: string) => {
      if (shell !== 'bash' && shell !== 'zsh') throw new VhdcryptError('CLI_USAGE', `completion: expected bash or zsh, not ${JSON.stringify(shell)}`);
      const { bashCompletion, zshCompletion } = await import('./completion.js');
      process.stdout.write(shell === 'bash' ? bashCompletion(program) : zshCompletion(program));
    });
  return program;
}

/** Run the CLI; resolves to the process exit status. */
export async function main(argv: string[]): Promise<number> {
  // Only as the first word: commander's version option would also swallow `--version` given to a subcommand
  // (`vault secret show --version V`, as az has it).
  if (argv.length === 3 && VERSION_FLAGS.includes(argv[2]!)) {
    process.stdout.write(packageVersion() + '\n');
    return 0;
  }
  // Sources the commands open: files, and NBD exports (nbd://, nbd+unix://).
  registerNbdSource();
  // The command word: the first argument that is not an option (the program's only option, --debug, takes no value).
  const program = buildProgram(argv.slice(2).find((a) => !a.startsWith('-')));
  try {
    await program.parseAsync(argv);
    return typeof process.exitCode === 'number' ? process.exitCode : 0;
  } catch (e) {
    if (e instanceof CommanderError) return e.exitCode === 0 ? 0 : 2;
    const debug = argv.includes('--debug');
    const resource = e instanceof VhdcryptError && e.code.startsWith('VAULT_') && e.code !== 'VAULT_STORAGE' ? null : resourceErrorCode(e);
    if (resource !== null) {
      process.stderr.write(resourceErrorLine(resource, e));
      if (debug && (e as Error)?.stack) process.stderr.write((e as Error).stack + '\n');
      return RESOURCE_ERROR_STATUS;
    }
    if (e instanceof VhdcryptError) {
      process.stderr.write(`vhdcrypt: ${e.code}: ${e.message}\n`);
      if (debug && e.stack) process.stderr.write(e.stack + '\n');
      return exitCodeFor(e);
    }
    const fileCode = (e as NodeJS.ErrnoException | null)?.code;
    if (typeof fileCode === 'string' && FILE_ERRORS.has(fileCode)) {
      // A path given on the command line that cannot be opened: the user's input, not a bug.
      process.stderr.write(`vhdcrypt: ${fileCode}: ${systemErrorText(e as NodeJS.ErrnoException)}\n`);
      if (debug && (e as Error).stack) process.stderr.write((e as Error).stack + '\n');
      return FILE_ERROR_STATUS;
    }
    process.stderr.write(`vhdcrypt: internal error: ${(e as Error)?.message ?? String(e)}\n`);
    if (debug && (e as Error)?.stack) process.stderr.write((e as Error).stack + '\n');
    return 70;
  }
}
