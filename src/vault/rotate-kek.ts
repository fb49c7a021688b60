/**
 * KEK rotation: make a new KEK version, rewrap every disk secret lineage whose
 * newest member is wrapped by an older version (a new secret version; the data
 * on disk is untouched), then disable the older KEK versions. Restartable: the
 * new version carries the tag vhdcrypt-rotation=pending until the run ends, so
 * a rerun resumes with it. At every instant each lineage's newest member is
 * wrapped by an enabled KEK version, so no disk is ever unopenable. A seal
 * running concurrently rewraps itself if the KEK gained a version after its
 * wrap (see sealDiskKey), so it cannot be left on a version disabled here.
 *
 * With `to` (a PKCS#11 URI), the lineages wrapped by `kekName` (a vault KEK, or the URI of another token key)
 * move to the token key instead: each is unwrapped, wrapped inside the token and stored as a new version; a
 * vault KEK's versions no longer needed are then disabled. A token key itself is never given a new version
 * here: make a new one in the token (pkcs11 keygen) and rotate into it.
 */
import { isPkcs11Uri, wrapWithToken, type Pkcs11WrapOptions } from '../pkcs11/index.js';
import { VaultError } from './errors.js';
import { MAX_TAG_VALUE_CHARS } from './limits.js';
import { objectId, resolveRef } from './object-id.js';
import {
  ADE_CONTENT_TYPE, TAG_ALGORITHM, TAG_KEK_URL, TAG_REWRAP_OF, WRAPPED_KEY_CONTENT_TYPE, diskLineages, isDiskSecretType, storedForm,
  unwrapDocument, wrappedKeyOf, type WrappedKeyDocument,
} from './disk-keys.js';
import type { VaultErrorCode } from './errors.js';
import type { KeyProperties, SecretProperties, Vault, WrapAlgorithm } from './types.js';

export const TAG_ROTATION = 'vhdcrypt-rotation';

export interface RotateKekOptions {
  /** Called after each rewrap is stored (progress; tests use it to stop the process midway). */
  readonly onRewrapped?: (secretId: string, index: number) => void;
  /** Move the disks to this key in a PKCS#11 token (a pkcs11: URI) instead of a new vault KEK version. */
  readonly to?: string;
  /** How to reach the token(s): module, PIN, whether an extractable key may serve. */
  readonly pkcs11?: Pkcs11WrapOptions;
}

export interface RotateKekResult {
  /** The KEK version everything is now wrapped by. */
  readonly kekId: string;
  /** New secret versions written by this run. */
  readonly rewrapped: string[];
  /** Disk secret versions left as they were: disabled, outside nbf..exp, deleted, or unreadable. */
  readonly skipped: string[];
  /**
   * Of those, versions under the disk content type whose value is no wrapped key this KEK opens (not a
   * document, a bad kid or algorithm, a failed unwrap): no disk can open through them, so they hold no KEK
   * version back. Each is also recorded in the audit log (operation rotateKek.skip, result the error code).
   */
  readonly unreadable: Array<{ id: string; code: VaultErrorCode }>;
  /** Old KEK versions disabled by this run. */
  readonly disabled: string[];
  /** Old KEK versions left enabled because a skipped secret still needs them. */
  readonly keptEnabled: string[];
}

// Refusals that say this secret version cannot be rewrapped (its content), not that the vault or the caller failed.
const UNREADABLE: ReadonlySet<string> = new Set([
  'VAULT_NOT_A_DISK_SECRET', 'VAULT_UNWRAP_FAILED', 'VAULT_UNSUPPORTED_ALGORITHM', 'VAULT_INVALID_KEY', 'VAULT_BAD_ID',
  'VAULT_KEY_NOT_FOUND', 'VAULT_KEY_DISABLED', 'VAULT_DELETED',
]);

function usable(p: SecretProperties, now: number): boolean {
  return p.enabled && (p.notBefore === null || p.notBefore.getTime() <= now) && (p.expiresOn === null || p.expiresOn.getTime() > now);
}

/** Rotate KEK `kekName` and rewrap the disk secrets that use it. */
export async function rotateKek(vault: Vault, kekName: string, options: RotateKekOptions = {}): Promise<RotateKekResult> {
  if (options.to !== undefined) return rotateIntoToken(vault, kekName, options.to, options);
  if (isPkcs11Uri(kekName)) {
    throw new VaultError('VAULT_BAD_ARGUMENT', 'a KEK in a PKCS#11 token gets no new version here: make a new key in the token (vhdcrypt pkcs11 keygen) and rotate into it with --to');
  }
  const versions = await vault.listKeyVersions(kekName);
  const latest = versions[versions.length - 1];
  if (!latest) throw new VaultError('VAULT_KEY_NOT_FOUND', `key '${kekName}' has no versions`);
  let target: KeyProperties = latest;
  if (latest.tags[TAG_ROTATION] !== 'pending') {
    const fresh = await vault.rotateKey(kekName);
    target = await vault.updateKeyProperties(fresh.properties.id, undefined, { tags: { ...fresh.properties.tags, [TAG_ROTATION]: 'pending' } });
  }
  const kekPrefix = objectId(vault.uri, 'keys', target.name) + '/';
  const defaultAlg: WrapAlgorithm = target.kty === 'oct' ? 'A256KW' : 'RSA-OAEP-256';
  const rewrapped: string[] = [];
  const skipped: string[] = [];
  const unreadable: Array<{ id: string; code: VaultErrorCode }> = [];
  const stillNeeded = new Set<string>();
  const now = Date.now();

  for (const s of await vault.listSecrets()) {
    if (!isDiskSecretType(s.contentType)) continue;
    for (const { root, newest } of await diskLineages(vault, s.name)) {
      const kekUrl = newest.tags[TAG_KEK_URL] ?? '';
      if (!kekUrl.startsWith(kekPrefix) || kekUrl === target.id) continue;
      if (!usable(newest, now)) {
        skipped.push(newest.id);
        stillNeeded.add(resolveRef(vault.uri, 'keys', kekUrl).version ?? '');
        continue;
      }
      let material: Uint8Array;
      // An RSA secret keeps its algorithm (ADE's platform unwraps RSA-OAEP); others take the KEK's default.
      let alg: WrapAlgorithm = defaultAlg;
      try {
        const secret = await vault.getSecret(newest.id);
        const doc = wrappedKeyOf(vault, secret);
        if (target.kty !== 'oct' && (doc.alg === 'RSA-OAEP' || doc.alg === 'RSA-OAEP-256')) alg = doc.alg;
        material = await unwrapDocument(vault, doc, secret.properties, options.pkcs11?.access);
      } catch (e) {
        // A principal with secrets/set can store anything under the disk content type: skip it, say so, go on.
        if (!(e instanceof VaultError) || !UNREADABLE.has(e.code)) throw e;
        skipped.push(newest.id);
        unreadable.push({ id: newest.id, code: e.code });
        await vault.recordAuditEvent('rotateKek.skip', newest.id, e.code);
        continue;
      }
      let w;
      try {
        w = await vault.wrapKey(target.id, alg, material);
      } finally {
        material.fill(0);
      }
      const next = storedForm({ alg, kid: w.kid, wrapped: Buffer.from(w.result).toString('base64url') }, newest.contentType === ADE_CONTENT_TYPE);
      const stored = await vault.setSecret(s.name, next.value, {
        contentType: next.contentType,
        tags: { ...newest.tags, [TAG_ALGORITHM]: alg, [TAG_KEK_URL]: w.kid, [TAG_REWRAP_OF]: root.version },
        notBefore: newest.notBefore,
        expiresOn: newest.expiresOn,
      });
      rewrapped.push(stored.id);
      options.onRewrapped?.(stored.id, rewrapped.length);
    }
  }
  // Soft-deleted disk secrets keep their KEK version usable, so recovering them still opens the disk.
  for (const d of await vault.listDeletedSecrets()) {
    const kekUrl = d.properties.tags[TAG_KEK_URL] ?? '';
    if (isDiskSecretType(d.properties.contentType) && kekUrl.startsWith(kekPrefix) && kekUrl !== target.id) {
      skipped.push(d.properties.id);
      stillNeeded.add(resolveRef(vault.uri, 'keys', kekUrl).version ?? '');
    }
  }

  const disabled: string[] = [];
  const keptEnabled: string[] = [];
  for (const v of await vault.listKeyVersions(kekName)) {
    if (v.version === target.version || !v.enabled) continue;
    if (stillNeeded.has(v.version)) {
      keptEnabled.push(v.id);
      continue;
    }
    await vault.updateKeyProperties(v.id, undefined, { enabled: false });
    disabled.push(v.id);
  }
  const { [TAG_ROTATION]: _pending, ...tags } = target.tags;
  await vault.updateKeyProperties(target.id, undefined, { tags });
  return { kekId: target.id, rewrapped, skipped, unreadable, disabled, keptEnabled };
}

/** rotateKek with `to`: move every lineage `from` wraps to the token key `to`. */
async function rotateIntoToken(vault: Vault, from: string, to: string, options: RotateKekOptions): Promise<RotateKekResult> {
  if (!isPkcs11Uri(to)) throw new VaultError('VAULT_BAD_ARGUMENT', 'rotate-kek --to takes the pkcs11: URI of a key in a token');
  if (to.length > MAX_TAG_VALUE_CHARS) throw new VaultError('VAULT_BAD_ARGUMENT', `a PKCS#11 KEK URI is at most ${MAX_TAG_VALUE_CHARS} characters here`);
  if (from === to) throw new VaultError('VAULT_BAD_ARGUMENT', 'rotate-kek --to names the key the disks are already wrapped by');
  const fromToken = isPkcs11Uri(from);
  const fromPrefix = fromToken ? null : objectId(vault.uri, 'keys', from) + '/';
  if (!fromToken && (await vault.listKeyVersions(from)).length === 0) throw new VaultError('VAULT_KEY_NOT_FOUND', `key '${from}' has no versions`);
  const wrappedByFrom = (url: string): boolean => (fromPrefix === null ? url === from : url.startsWith(fromPrefix));
  const rewrapped: string[] = [];
  const skipped: string[] = [];
  const stillNeeded = new Set<string>();
  const now = Date.now();
  for (const s of await vault.listSecrets()) {
    if (!isDiskSecretType(s.contentType)) continue;
    for (const { root, newest } of await diskLineages(vault, s.name)) {
      const kekUrl = newest.tags[TAG_KEK_URL] ?? '';
      if (!wrappedByFrom(kekUrl)) continue;
      // An Azure Disk Encryption secret must stay unwrappable by the vault's KEK (Azure's platform unwraps it):
      // it is not moved into a token, and the KEK version it names stays enabled.
      if (!usable(newest, now) || newest.contentType === ADE_CONTENT_TYPE) {
        skipped.push(newest.id);
        if (fromPrefix !== null) stillNeeded.add(resolveRef(vault.uri, 'keys', kekUrl).version ?? '');
        continue;
      }
      const secret = await vault.getSecret(newest.id);
      const material = await unwrapDocument(vault, wrappedKeyOf(vault, secret), secret.properties, options.pkcs11?.access);
      let w;
      try {
        w = await wrapWithToken(to, material, options.pkcs11 ?? {});
      } finally {
        material.fill(0);
      }
      const next: WrappedKeyDocument = { alg: w.mechanism, kid: to, wrapped: w.wrapped.toString('base64url') };
      const stored = await vault.setSecret(s.name, JSON.stringify(next), {
        contentType: WRAPPED_KEY_CONTENT_TYPE,
        tags: { ...newest.tags, [TAG_ALGORITHM]: w.mechanism, [TAG_KEK_URL]: to, [TAG_REWRAP_OF]: root.version },
        notBefore: newest.notBefore,
        expiresOn: newest.expiresOn,
      });
      rewrapped.push(stored.id);
      options.onRewrapped?.(stored.id, rewrapped.length);
    }
  }
  const disabled: string[] = [];
  const keptEnabled: string[] = [];
  if (fromPrefix !== null) {
    for (const d of await vault.listDeletedSecrets()) {
      const kekUrl = d.properties.tags[TAG_KEK_URL] ?? '';
      if (isDiskSecretType(d.properties.contentType) && kekUrl.startsWith(fromPrefix)) {
        skipped.push(d.properties.id);
        stillNeeded.add(resolveRef(vault.uri, 'keys', kekUrl).version ?? '');
      }
    }
    for (const v of await vault.listKeyVersions(from)) {
      if (!v.enabled) continue;
      if (stillNeeded.has(v.version)) {
        keptEnabled.push(v.id);
        continue;
      }
      await vault.updateKeyProperties(v.id, undefined, { enabled: false });
      disabled.push(v.id);
    }
  }
  return { kekId: to, rewrapped, skipped, unreadable: [], disabled, keptEnabled };
}
