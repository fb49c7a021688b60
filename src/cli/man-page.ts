/**
 * The man page, vhdcrypt(1), rendered at build time from the command tree (the same source as --help), so it
 * lists exactly the commands and options the CLI has. Roff as man(7) describes it.
 */
import type { Command } from 'commander';
import { commandTree } from './command-tree.js';

/** Text made safe for roff: backslashes and hyphens escaped, a leading control character neutralised. */
function roff(text: string): string {
  const escaped = text.replace(/\\/g, '\\e').replace(/-/g, '\\-');
  return /^[.']/.test(escaped) ? `\\&${escaped}` : escaped;
}

export function renderManPage(program: Command, version: string): string {
  const [root, ...commands] = commandTree(program);
  const lines = [
    `.TH VHDCRYPT 1 "" "vhdcrypt ${roff(version)}" "User Commands"`,
    '.SH NAME',
    `vhdcrypt \\- ${roff(root!.description)}`,
    '.SH SYNOPSIS',
    '.B vhdcrypt',
    '[\\fIoptions\\fR] \\fIcommand\\fR [\\fIargs\\fR]',
    '.SH OPTIONS',
  ];
  for (const o of root!.options) lines.push('.TP', `.B ${roff(o.flags)}`, roff(o.description));
  lines.push('.SH COMMANDS');
  for (const c of commands) {
    lines.push(`.SS "vhdcrypt ${roff(c.path.join(' '))} ${roff(c.usage)}"`, roff(c.description));
    if (c.subcommands.length > 0) lines.push('.PP', `Commands: ${roff(c.subcommands.join(', '))}.`);
    for (const o of c.options) lines.push('.TP', `.B ${roff(o.flags)}`, roff(o.description));
  }
  lines.push(
    '.SH EXIT STATUS',
    '0 done; 1 a typed error not listed here; 2 usage; 3 bad or damaged input; 4 wrong passphrase or key;',
    '5 the vault refused; 6 destination exists, an interrupted run is there, or no space; 7 unsupported;',
    '130 interrupted; 70 internal error. Every error prints one line, \\fBvhdcrypt: CODE: message\\fR;',
    'the README lists every code under its status.',
  );
  return lines.join('\n') + '\n';
}
