/**
 * The command line as data, read from the commander program itself, so shell completion and the man page can
 * never list a command or option the CLI does not have.
 */
import type { Command } from 'commander';

/** `vhdcrypt --version` / `-V`, alone on the line (see main.ts); listed here so completion and the man page show it. */
export const VERSION_FLAGS: readonly string[] = ['-V', '--version'];

export interface CommandNode {
  /** Words after `vhdcrypt`, e.g. ['vault', 'secret', 'set']; [] for the program. */
  readonly path: readonly string[];
  readonly description: string;
  /** Positional arguments as the help shows them (`<image>`, `[dest]`). */
  readonly usage: string;
  readonly subcommands: readonly string[];
  readonly options: readonly { readonly flags: string; readonly names: readonly string[]; readonly description: string }[];
}

/** Every command of `program`, depth first, the program itself first. */
export function commandTree(program: Command): CommandNode[] {
  const nodes: CommandNode[] = [];
  const visit = (cmd: Command, path: string[]): void => {
    const options = cmd.options.map((o) => ({
      flags: o.flags,
      names: [o.short, o.long].filter((n): n is string => typeof n === 'string'),
      description: o.description,
    }));
    if (path.length === 0) options.unshift({ flags: VERSION_FLAGS.join(', '), names: [...VERSION_FLAGS], description: 'print the version' });
    options.push({ flags: '-h, --help', names: ['-h', '--help'], description: 'display help for command' });
    nodes.push({
      path,
      description: cmd.description(),
      usage: cmd.usage(),
      subcommands: cmd.commands.map((c) => c.name()),
      options,
    });
    for (const c of cmd.commands) visit(c, [...path, c.name()]);
  };
  visit(program, []);
  return nodes;
}
