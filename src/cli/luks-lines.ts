/** The readable lines `info` prints for a LUKS header's keyslots, tokens and problems (JSON stays in --json). */
import { keyslotPriorityName, type LuksDump } from '../luks/index.js';

type Dumped = LuksDump[string];

function str(v: Dumped | undefined): string {
  return typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean' ? String(v) : '';
}

function objects(v: Dumped | undefined): LuksDump[] {
  return Array.isArray(v) ? v.filter((x): x is LuksDump => typeof x === 'object' && x !== null && !Array.isArray(x)) : [];
}

/** `keyslot 0: argon2id, time 4, 1048576 KiB, 4 threads; 512-bit key; priority normal` and the like. */
export function keyslotLines(dump: LuksDump): string[] {
  const v1 = dump.version === 1;
  return objects(dump.keyslots)
    .filter((k) => !v1 || k.enabled === true)
    .map((k) => {
      const kdf = v1
        ? `pbkdf2-${str(dump.hashSpec)}, ${str(k.iterations)} iterations`
        : k.pbkdf === 'pbkdf2'
          ? `pbkdf2-${str(k.hash)}, ${str(k.iterations)} iterations`
          : k.time !== undefined
            ? `${str(k.pbkdf)}, time ${str(k.time)}, ${str(k.memory)} KiB, ${str(k.threads)} threads`
            : str(k.pbkdf);
      const keyBits = v1 ? `${str(dump.mkBits)}-bit key` : `${str(k.keyBits)}-bit key`;
      const priority = v1 ? keyslotPriorityName(1) : str(k.priority);
      return `keyslot ${str(k.id)}: ${kdf}; ${keyBits}; priority ${priority}`;
    });
}

/** `token 0: vhdcrypt-vault, keyslots 0; secret ID; vault URI`, or the type and keyslots of any other token. */
export function tokenLines(dump: LuksDump): string[] {
  return objects(dump.tokens).map((t) => {
    const slots = Array.isArray(t.keyslots) ? t.keyslots.map(str).join(',') : '';
    const extra = t.type === 'vhdcrypt-vault' ? `; secret ${str(t.secret)}; vault ${str(t.vault)}`
      : t.type === 'systemd-pkcs11' ? `; ${str(t['pkcs11-uri'])} (opens with the token's PIN)` : '';
    return `token ${str(t.id)}: ${str(t.type)}, keyslots ${slots}${extra}`;
  });
}

/** Header problems found on read (a damaged copy, a repaired field), one line each. */
export function problemLines(dump: LuksDump): string[] {
  return Array.isArray(dump.problems) ? dump.problems.map((p) => `header problem: ${str(p)}`) : [];
}
