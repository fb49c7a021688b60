/**
 * The CPU flags Linux reports in /proc/cpuinfo (it hides flags the OS cannot save), for the tests that check the
 * addon's kernel dispatch against something it did not compute itself; null off x86-64 or without /proc.
 */
import { existsSync, readFileSync } from 'node:fs';

export function cpuFlags(): Set<string> | null {
  if (process.arch !== 'x64' || !existsSync('/proc/cpuinfo')) return null;
  const line = readFileSync('/proc/cpuinfo', 'utf8').split('\n').find((l) => l.startsWith('flags'));
  return new Set((line ?? '').split(':')[1]?.trim().split(/\s+/) ?? []);
}
