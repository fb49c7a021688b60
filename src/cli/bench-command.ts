import type { Command } from 'commander';

/** Registers this part's subcommands (filled in by its issue). */
export function registerBench(_program: Command): void {}
