/** Reader for NIST CAVP XTSGenAES .rsp files (data-unit-sequence-number form). */
import { readFileSync } from 'node:fs';

export interface CavpXtsVector {
  readonly section: 'ENCRYPT' | 'DECRYPT';
  readonly count: number;
  readonly bits: number;
  readonly key: Buffer;
  readonly dusn: bigint;
  readonly pt: Buffer;
  readonly ct: Buffer;
}

export function readCavpXts(path: string): CavpXtsVector[] {
  const out: CavpXtsVector[] = [];
  let section: 'ENCRYPT' | 'DECRYPT' = 'ENCRYPT';
  let cur: Record<string, string> | null = null;
  const flush = () => {
    if (!cur) return;
    out.push({
      section,
      count: Number(cur['COUNT']),
      bits: Number(cur['DataUnitLen']),
      key: Buffer.from(cur['Key']!, 'hex'),
      dusn: BigInt(cur['DataUnitSeqNumber']!),
      pt: Buffer.from(cur['PT']!, 'hex'),
      ct: Buffer.from(cur['CT']!, 'hex'),
    });
    cur = null;
  };
  for (const raw of readFileSync(path, 'latin1').split(/\r?\n/)) {
    const line = raw.trim();
    if (line === '[ENCRYPT]' || line === '[DECRYPT]') {
      flush();
      section = line.slice(1, -1) as 'ENCRYPT' | 'DECRYPT';
      continue;
    }
    const m = /^(\w+) = (.*)$/.exec(line);
    if (!m) continue;
    if (m[1] === 'COUNT') {
      flush();
      cur = {};
    }
    if (cur) cur[m[1]!] = m[2]!;
  }
  flush();
  return out;
}
