/**
 * `vhdcrypt pkcs11 ...` and the PKCS#11 options other commands share: --pkcs11-module (else
 * $VHDCRYPT_PKCS11_MODULE) and --pin-file (else $VHDCRYPT_PKCS11_PIN). No command takes a PIN as an argument.
 */
import type { Command } from 'commander';
import { InvalidArgumentError, Option } from 'commander';
import { KEYGEN_TYPES, generateTokenKey, resolveAccess, type KeygenType, type Pkcs11WrapOptions } from '../pkcs11/index.js';

export interface Pkcs11Flags {
  pkcs11Module?: string;
  pinFile?: string;
  allowExtractable?: boolean;
}

/** --pkcs11-module and --pin-file (and --allow-extractable where a command wraps with a token key). */
export function addPkcs11Options(cmd: Command, opts: { extractable?: boolean } = {}): Command {
  cmd
    .option('--pkcs11-module <path>', 'PKCS#11 module for pkcs11: URIs (default: $VHDCRYPT_PKCS11_MODULE)')
    .option('--pin-file <file>', "the token's user PIN: first line of FILE (default: $VHDCRYPT_PKCS11_PIN)");
  if (opts.extractable) cmd.option('--allow-extractable', 'let a token key that could leave the token (CKA_EXTRACTABLE) wrap disk keys');
  return cmd;
}

/**
 * The vault credentials carrying the token access, for the duration of `fn`; the PIN read from --pin-file is
 * wiped afterwards. Nothing is read when no PKCS#11 flag was given (the environment is read at use).
 */
export async function withPkcs11<T>(f: Pkcs11Flags, fn: (credentials: { pkcs11: Pkcs11WrapOptions } | undefined) => Promise<T>): Promise<T> {
  const given = f.pkcs11Module !== undefined || f.pinFile !== undefined || f.allowExtractable === true;
  if (!given) return fn({ pkcs11: { onWarning: warn } });
  const access = resolveAccess(f);
  try {
    return await fn({ pkcs11: { access, allowExtractable: f.allowExtractable === true, onWarning: warn } });
  } finally {
    access.dispose();
  }
}

function warn(message: string): void {
  process.stderr.write(`vhdcrypt: warning: ${message}\n`);
}

export function registerPkcs11(program: Command): void {
  const p = program.command('pkcs11').description('keys in a PKCS#11 token (HSM, smartcard, SoftHSM) for KEKs, vault master keys and LUKS2 tokens');
  addPkcs11Options(p
    .command('keygen')
    .description('make a key-encryption key inside a token: sensitive and not extractable; prints its pkcs11: URI'))
    .requiredOption('--token <name>', 'token label, or a pkcs11: URI naming the token')
    .requiredOption('--label <label>', 'label (CKA_LABEL) of the new key')
    .addOption(new Option('--type <type>', 'aes256 (AES key wrap) or rsa3072 (RSA-OAEP)').choices(KEYGEN_TYPES).makeOptionMandatory())
    .option('--allow-extractable', 'make a key that can be exported from the token (not recommended)')
    .option('--json', 'print JSON')
    .action(async (f: Pkcs11Flags & { token: string; label: string; type: KeygenType; json?: boolean }) => {
      if (f.label.trim() === '') throw new InvalidArgumentError('--label is empty');
      const access = resolveAccess(f);
      try {
        const r = await generateTokenKey({ token: f.token, label: f.label, type: f.type, allowExtractable: f.allowExtractable === true, access });
        process.stdout.write(f.json ? JSON.stringify(r) + '\n'
          : `${r.uri}\n  ${f.type}, id ${r.id}; sensitive ${String(r.attributes.sensitive)}, extractable ${String(r.attributes.extractable)}\n`);
      } finally {
        access.dispose();
      }
    });
}
