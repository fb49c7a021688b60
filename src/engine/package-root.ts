/** The vhdcrypt package root, found from this module's location (works from src/ under vitest and from dist/). */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

let cached: string | undefined;

/** The nearest directory above this module whose package.json names vhdcrypt. */
export function packageRoot(): string {
  if (cached) return cached;
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const manifest = join(dir, 'package.json');
    if (existsSync(manifest)) {
      const parsed: unknown = JSON.parse(readFileSync(manifest, 'utf8'));
      if (typeof parsed === 'object' && parsed !== null && (parsed as { name?: unknown }).name === 'vhdcrypt') return (cached = dir);
    }
    const up = dirname(dir);
    if (up === dir) throw new Error('vhdcrypt package root not found above ' + fileURLToPath(import.meta.url));
    dir = up;
  }
}
