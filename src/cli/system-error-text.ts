/**
 * A Node system error as one readable clause naming its path: "/x.vhd: no such file or directory (open)" for
 * Node's "ENOENT: no such file or directory, open '/x.vhd'", whose code the line already starts with.
 */
export function systemErrorText(e: NodeJS.ErrnoException): string {
  const m = /^[A-Z0-9_]+: (.*?)(?:, [a-z_]+(?: '.*')*)?$/s.exec(e.message);
  const what = m?.[1] ?? e.message;
  const where = typeof e.path === 'string' ? `${e.path}: ` : '';
  return `${where}${what}${typeof e.syscall === 'string' ? ` (${e.syscall})` : ''}`;
}
