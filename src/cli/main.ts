/** The `vhdcrypt` command line: each part registers its own subcommands. */
import { Command, CommanderError } from 'commander';
import { VhdcryptError } from '../errors.js';
import { packageVersion } from '../version.js';
import { exitCodeFor } from './exit-codes.js';
import { registerBench } from './bench-command.js';
import { registerVault } from './vault-command.js';
import { registerImageCommands } from './image-commands.js';
import { registerServe } from './serve-command.js';

/** Errors opening a named file (Node system error codes), reported in one line with exit status 3 like other bad input. */
const FILE_ERRORS = new Set(['ENOENT', 'EACCES', 'EPERM', 'EISDIR', 'ENOTDIR', 'ELOOP', 'ENAMETOOLONG']);
const FILE_ERROR_STATUS = 3;

/** Build the program; exported for tests. */
export function buildProgram(): Command {
  const program = new Command('vhdcrypt')
    .description('Encrypt VHD and raw disk images into LUKS volumes with AES-XTS; keys sealed in a vault')
    .version(packageVersion(), '-V, --version', 'print the version')
    .option('--debug', 'print stack traces on error')
    .exitOverride();
  registerImageCommands(program);
  registerVault(program);
  registerServe(program);
  registerBench(program);
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
  const program = buildProgram();
  try {
    await program.parseAsync(argv);
    return typeof process.exitCode === 'number' ? process.exitCode : 0;
  } catch (e) {
    if (e instanceof CommanderError) return e.exitCode === 0 ? 0 : 2;
    const debug = argv.includes('--debug');
    if (e instanceof VhdcryptError) {
      process.stderr.write(`vhdcrypt: ${e.code}: ${e.message}\n`);
      if (debug && e.stack) process.stderr.write(e.stack + '\n');
      return exitCodeFor(e);
    }
    const fileCode = (e as NodeJS.ErrnoException | null)?.code;
    if (typeof fileCode === 'string' && FILE_ERRORS.has(fileCode)) {
      // A path given on the command line that cannot be opened: the user's input, not a bug.
      process.stderr.write(`vhdcrypt: ${fileCode}: ${(e as Error).message}\n`);
      if (debug && (e as Error).stack) process.stderr.write((e as Error).stack + '\n');
      return FILE_ERROR_STATUS;
    }
    process.stderr.write(`vhdcrypt: internal error: ${(e as Error)?.message ?? String(e)}\n`);
    if (debug && (e as Error)?.stack) process.stderr.write((e as Error).stack + '\n');
    return 70;
  }
}
