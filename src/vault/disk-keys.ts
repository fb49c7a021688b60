/**
 * Disk keys sealed the way Azure Disk Encryption keeps them: the material is
 * wrapped inside the vault by a key-encryption key (KEK) and only the wrapped
 * form is stored, as a secret named after the disk.
 *
 * KEK choice: an RSA key (2048 bits, or the provider's kekRsaBits: 3072 on
 * Azure Key Vault) used with RSA-OAEP-256, Microsoft's recommended wrap, as
 * ADE's KEKs are RSA (Key Vault vaults hold only RSA/EC keys; oct keys live on
 * Managed HSM); RSA-OAEP (SHA-1) on request, as ADE itself wraps. An existing
 * oct KEK is used with A256KW (RFC 3394).
 *
 * Two shapes of disk secret: vhdcrypt's (contentType WRAPPED_KEY_CONTENT_TYPE,
 * value a JSON { alg, kid, wrapped }) and Azure Disk Encryption's (contentType
 * `Wrapped BEK`, value the base64url of the wrapped passphrase, algorithm and
 * KEK id in the tags DiskEncryptionKeyEncryptionAlgorithm and
 * DiskEncryptionKeyEncryptionKeyURL). Both are sealed, unsealed and rotated here.
 *
 * A KEK may also live in a PKCS#11 token (`kek: 'pkcs11:token=...;object=...'`): the material is then wrapped
 * and unwrapped inside the token (see src/pkcs11/kek.ts), the document records the token URI as its kid and
 * the PKCS#11 mechanism as its alg, and the tags say the same; the vault stores only the wrapped form.
 *
 * Versions: rotateKek rewraps a secret version V into a new version tagged
 * RewrapOf=<V's root version>. A version, its root and the root's rewraps form
 * a lineage holding the same material, and unsealing any member uses the
 * lineage's newest member, so a stored id stays valid after rotation and
 * disabling the newest member shreds the whole lineage.
 */
import { createHash } from 'node:crypto';
import { isPkcs11Mechanism, isPkcs11Uri, unwrapWithToken, wrapWithToken, type Pkcs11Access, type Pkcs11Mechanism, type Pkcs11WrapOptions } from '../pkcs11/index.js';
import { VaultError } from './errors.js';
import { MAX_TAG_VALUE_CHARS } from './limits.js';
import { resolveRef } from './object-id.js';
import type { Secret, SecretProperties, Vault, WrapAlgorithm } from './types.js';

export const WRAPPED_KEY_CONTENT_TYPE = 'application/vnd.vhdcrypt.wrapped-key+json';
export const TAG_ALGORITHM = 'DiskEncryptionKeyEncryptionAlgorithm';
export const TAG_KEK_URL = 'DiskEncryptionKeyEncryptionKeyURL';
export const TAG_VOLUME_UUID = 'VolumeUuid';
export const TAG_SOURCE_IMAGE = 'SourceImage';
export const TAG_DISK_ID = 'DiskId';
export const TAG_REWRAP_OF = 'RewrapOf';
/** Azure Disk Encryption's disk secret: the KEK-wrapped passphrase (Linux) or BEK (Windows). */
export const ADE_CONTENT_TYPE = 'Wrapped BEK';
export const TAG_ADE_FILE_NAME = 'DiskEncryptionKeyFileName';
export const TAG_ADE_MACHINE_NAME = 'MachineName';
/** The file name ADE's Linux agent reads the passphrase from on the BEK volume. */
export const ADE_LINUX_FILE_NAME = 'LinuxPassPhraseFileName';
const KEK_RSA_BITS = 2048;
const RSA_ALGS: readonly WrapAlgorithm[] = ['RSA-OAEP', 'RSA-OAEP-256'];

export interface SealDiskKeyRequest {
  readonly diskId: string;
  readonly material: Uint8Array;
  /** KEK name; created (RSA-2048) on first use. Or a PKCS#11 URI of a key in a token (see pkcs11). */
  readonly kek: string;
  /** How to reach the token of a `pkcs11:` KEK (module, PIN), whether an extractable KEK may serve, warnings. */
  readonly pkcs11?: Pkcs11WrapOptions;
  readonly tags?: Record<string, string>;
  readonly volumeUuid?: string;
  readonly sourceName?: string;
  /** Wrap algorithm for an RSA KEK: RSA-OAEP-256 (default) or RSA-OAEP (Azure Disk Encryption's). */
  readonly alg?: WrapAlgorithm;
  /** Store the secret in Azure Disk Encryption's shape (see ADE_CONTENT_TYPE); MachineName tag's value. */
  readonly ade?: { readonly machineName: string };
}

/**
 * The secret value: { alg, kid, wrapped } with wrapped in base64url. A vault KEK's kid is its key id and alg a
 * vault algorithm; a token KEK's kid is its PKCS#11 URI and alg the PKCS#11 mechanism.
 */
export interface WrappedKeyDocument {
  readonly alg: WrapAlgorithm | Pkcs11Mechanism;
  readonly kid: string;
  readonly wrapped: string;
}

/** The secret name for a disk id: the id itself when valid, else a sanitized form plus a hash suffix (no collisions). */
export function diskSecretName(diskId: string): string {
  if (/^[0-9A-Za-z-]{1,127}$/.test(diskId)) return diskId;
  const hash = createHash('sha256').update(diskId, 'utf8').digest('hex').slice(0, 8);
  const base = diskId.replace(/[^0-9A-Za-z-]+/g, '-').replace(/^-+|-+$/g, '').slice(0, 127 - 9).replace(/-+$/, '');
  return `${base || 'disk'}-${hash}`;
}

function algFor(kty: string, asked: WrapAlgorithm | undefined): WrapAlgorithm {
  if (kty === 'oct') {
    if (asked !== undefined && asked !== 'A256KW') throw new VaultError('VAULT_UNSUPPORTED_ALGORITHM', `${asked} does not apply to an oct KEK (A256KW)`);
    return 'A256KW';
  }
  if (asked !== undefined && !RSA_ALGS.includes(asked)) throw new VaultError('VAULT_UNSUPPORTED_ALGORITHM', `${String(asked)} does not apply to an RSA KEK (RSA-OAEP-256, RSA-OAEP)`);
  return asked ?? 'RSA-OAEP-256';
}

/** True for a contentType of either disk secret shape. */
export function isDiskSecretType(contentType: string | null | undefined): boolean {
  return contentType === WRAPPED_KEY_CONTENT_TYPE || contentType === ADE_CONTENT_TYPE;
}

/** The value and contentType that store `doc` in the shape of `contentType`'s kind (ADE keeps alg and kid in tags). */
export function storedForm(doc: WrappedKeyDocument, ade: boolean): { value: string; contentType: string } {
  return ade ? { value: doc.wrapped, contentType: ADE_CONTENT_TYPE } : { value: JSON.stringify(doc), contentType: WRAPPED_KEY_CONTENT_TYPE };
}

function isCode(e: unknown, code: string): boolean {
  return e instanceof VaultError && e.code === code;
}

/** Wrap `material` under the KEK and store it as the disk's secret; returns the secret and KEK ids (with versions). */
export async function sealDiskKey(vault: Vault, req: SealDiskKeyRequest): Promise<{ secretId: string; kekId: string }> {
  if (typeof req.diskId !== 'string' || req.diskId === '') throw new VaultError('VAULT_BAD_ARGUMENT', 'sealDiskKey needs a diskId');
  if (!(req.material instanceof Uint8Array) || req.material.length === 0) throw new VaultError('VAULT_BAD_ARGUMENT', 'sealDiskKey needs key material');
  const props = await vault.getProperties();
  if (!props.enabledForDiskEncryption) {
    throw new VaultError('VAULT_NOT_FOR_DISK_ENCRYPTION', `vault ${vault.uri} is not enabled for disk encryption (vault set-property --enabled-for-disk-encryption true)`);
  }
  if (isPkcs11Uri(req.kek)) return sealInToken(vault, req);
  let kty: string;
  try {
    kty = (await vault.getKey(req.kek)).key.kty;
  } catch (e) {
    if (!isCode(e, 'VAULT_KEY_NOT_FOUND')) throw e;
    kty = (await vault.createKey(req.kek, { kty: 'RSA', size: vault.kekRsaBits ?? KEK_RSA_BITS, onlyIfAbsent: true })).key.kty;
  }
  const alg = algFor(kty, req.alg);
  const w = await vault.wrapKey(req.kek, alg, req.material);
  const doc: WrappedKeyDocument = { alg, kid: w.kid, wrapped: Buffer.from(w.result).toString('base64url') };
  const tags = sealTags(req, alg, w.kid);
  const name = diskSecretName(req.diskId);
  let stored = await vault.setSecret(name, storedForm(doc, req.ade !== undefined).value, { contentType: storedForm(doc, req.ade !== undefined).contentType, tags });
  let kid = w.kid;
  // A rotateKek that made its new KEK version after our wrap may have scanned before our secret existed and
  // will disable the version we used: while the KEK's latest version differs, rewrap the material we still hold.
  for (let latest = (await vault.getKey(req.kek)).properties.id; latest !== kid; latest = (await vault.getKey(req.kek)).properties.id) {
    const again = await vault.wrapKey(latest, alg, req.material);
    kid = again.kid;
    const next = storedForm({ alg, kid, wrapped: Buffer.from(again.result).toString('base64url') }, req.ade !== undefined);
    stored = await vault.setSecret(name, next.value, {
      contentType: next.contentType,
      tags: { ...tags, [TAG_KEK_URL]: kid, [TAG_REWRAP_OF]: stored.tags[TAG_REWRAP_OF] ?? stored.version },
    });
  }
  return { secretId: stored.id, kekId: kid };
}

/** The tags every sealing of a disk records. */
function sealTags(req: SealDiskKeyRequest, alg: string, kek: string): Record<string, string> {
  const tags: Record<string, string> = { ...req.tags, [TAG_ALGORITHM]: alg, [TAG_KEK_URL]: kek, [TAG_DISK_ID]: req.diskId.slice(0, 256) };
  if (req.volumeUuid) tags[TAG_VOLUME_UUID] = req.volumeUuid.toLowerCase();
  if (req.sourceName) tags[TAG_SOURCE_IMAGE] = req.sourceName.slice(-256);
  if (req.ade) {
    tags[TAG_ADE_FILE_NAME] = ADE_LINUX_FILE_NAME;
    tags[TAG_ADE_MACHINE_NAME] = req.ade.machineName.slice(0, 256);
  }
  return tags;
}

/** sealDiskKey with a KEK in a PKCS#11 token: wrapped inside the token, stored here. */
async function sealInToken(vault: Vault, req: SealDiskKeyRequest): Promise<{ secretId: string; kekId: string }> {
  // The URI is the KEK's name in the tags (rotation finds a KEK's secrets by it), so it must fit one whole.
  if (req.kek.length > MAX_TAG_VALUE_CHARS) throw new VaultError('VAULT_BAD_ARGUMENT', `a PKCS#11 KEK URI is at most ${MAX_TAG_VALUE_CHARS} characters here, not ${req.kek.length}`);
  const w = await wrapWithToken(req.kek, req.material, req.pkcs11 ?? {});
  const doc: WrappedKeyDocument = { alg: w.mechanism, kid: req.kek, wrapped: w.wrapped.toString('base64url') };
  const stored = await vault.setSecret(diskSecretName(req.diskId), JSON.stringify(doc), {
    contentType: WRAPPED_KEY_CONTENT_TYPE,
    tags: sealTags(req, w.mechanism, req.kek),
  });
  return { secretId: stored.id, kekId: req.kek };
}

/**
 * The wrapped key document in a disk secret's value. Anyone with secrets/set can store any value under the
 * disk content type, so every failure here is VAULT_NOT_A_DISK_SECRET naming the secret id only: no part of
 * the value (nor a parser's message quoting it, nor a cause carrying one) is in the error.
 */
export function parseWrappedKeyDocument(vault: Vault, value: string, id: string): WrappedKeyDocument {
  const refuse = (): never => {
    throw new VaultError('VAULT_NOT_A_DISK_SECRET', `secret ${id} does not hold a wrapped key document`);
  };
  let doc: unknown;
  try {
    doc = JSON.parse(value);
  } catch {
    // SyntaxError messages quote the start of the value: not carried, not even as a cause.
    return refuse();
  }
  const d = doc as Partial<WrappedKeyDocument> | null;
  if (!d || typeof d !== 'object' || typeof d.kid !== 'string' || typeof d.wrapped !== 'string') return refuse();
  if (isPkcs11Uri(d.kid)) {
    return isPkcs11Mechanism(d.alg) ? { alg: d.alg, kid: d.kid, wrapped: d.wrapped } : refuse();
  }
  if (!['RSA-OAEP', 'RSA-OAEP-256', 'A256KW'].includes(d.alg as string)) return refuse();
  try {
    resolveRef(vault.uri, 'keys', d.kid);
  } catch {
    return refuse();
  }
  return { alg: d.alg as WrapAlgorithm, kid: d.kid, wrapped: d.wrapped };
}

/**
 * The wrapped key a disk secret of either shape holds (checked as parseWrappedKeyDocument checks it). An ADE
 * secret's value is the base64 (or base64url, as ADE's own scripts store it) of the wrapped bytes; its
 * algorithm and KEK come from its tags.
 */
export function wrappedKeyOf(vault: Vault, secret: Secret): WrappedKeyDocument {
  const p = secret.properties;
  if (p.contentType !== ADE_CONTENT_TYPE) return parseWrappedKeyDocument(vault, secret.value, p.id);
  const v = secret.value.trim();
  if (!/^[A-Za-z0-9+/_-]+={0,2}$/.test(v)) throw new VaultError('VAULT_NOT_A_DISK_SECRET', `secret ${p.id} (${ADE_CONTENT_TYPE}) does not hold base64 data`);
  const wrapped = Buffer.from(v, 'base64').toString('base64url');
  return parseWrappedKeyDocument(vault, JSON.stringify({ alg: p.tags[TAG_ALGORITHM], kid: p.tags[TAG_KEK_URL], wrapped }), p.id);
}

/**
 * Unwrap a parsed document. A refusal keeps its code but names the secret (and the KEK its tags record), not
 * the document's kid as such: that came from the value, which a principal with secrets/set chose.
 */
export async function unwrapDocument(vault: Vault, doc: WrappedKeyDocument, secret: SecretProperties, pkcs11?: Pkcs11Access): Promise<Uint8Array> {
  // A token KEK unwraps in the token; its refusals (PIN, token, key) are the token's typed errors.
  if (isPkcs11Uri(doc.kid)) return unwrapWithToken(doc.kid, doc.alg, Buffer.from(doc.wrapped, 'base64url'), { access: pkcs11 });
  try {
    return (await vault.unwrapKey(doc.kid, doc.alg as WrapAlgorithm, Buffer.from(doc.wrapped, 'base64url'))).result;
  } catch (e) {
    if (!(e instanceof VaultError)) throw e;
    const kek = secret.tags[TAG_KEK_URL];
    throw new VaultError(e.code, `cannot unwrap disk secret ${secret.id}${kek ? ` (KEK ${kek.slice(0, 300)})` : ''}: ${e.code}`);
  }
}

/** Root version of a secret version's lineage. */
function rootOf(p: SecretProperties): string {
  return p.tags[TAG_REWRAP_OF] ?? p.version;
}

/** The newest member of `root`'s lineage among `versions` (oldest first). */
function newestOfLineage(versions: readonly SecretProperties[], root: string): SecretProperties | undefined {
  let found: SecretProperties | undefined;
  for (const v of versions) if (rootOf(v) === root) found = v;
  return found;
}

/** Lineage roots of a secret, oldest first, each with its newest member. */
export async function diskLineages(vault: Vault, name: string): Promise<Array<{ root: SecretProperties; newest: SecretProperties }>> {
  const versions = await vault.listSecretVersions(name);
  return versions.filter((v) => v.tags[TAG_REWRAP_OF] === undefined)
    .map((root) => ({ root, newest: newestOfLineage(versions, root.version) ?? root }));
}

/**
 * The secret version to unwrap for `r` with secrets/get alone (no list, like ADE's compute principal): the
 * name's latest version when it belongs to the same lineage (rotateKek's newest rewrap of it), else the
 * version named. Rewraps are always added as the name's latest version, so after a rotation the latest is the
 * rewrap; a lineage sealed later under the same name hides older rewraps, and then the named version is used.
 */
async function newestByGet(vault: Vault, r: { name: string; version: string }): Promise<Secret> {
  const latest = await vault.getSecret(r.name);
  const lr = rootOf(latest.properties);
  if (latest.properties.version === r.version || lr === r.version) return latest;
  const named = await vault.getSecret(r.name, r.version);
  return rootOf(named.properties) === lr ? latest : named;
}

/** Unwrap a disk's key material through the vault (or its token KEK's token); the caller wipes the result. */
export async function unsealDiskKey(vault: Vault, ref: string | { name: string; version?: string }, options: { pkcs11?: Pkcs11Access } = {}): Promise<Uint8Array> {
  const r = typeof ref === 'string' ? resolveRef(vault.uri, 'secrets', ref) : resolveRef(vault.uri, 'secrets', ref.name, ref.version);
  let target: string | undefined = r.version;
  let versions: SecretProperties[] | null = null;
  try {
    versions = await vault.listSecretVersions(r.name);
  } catch (e) {
    // A principal with secrets/get but not list (like ADE's compute principal) follows the lineage by get alone.
    if (!isCode(e, 'VAULT_FORBIDDEN')) throw e;
  }
  let secret: Secret;
  if (versions) {
    const named = r.version === undefined ? undefined : versions.find((v) => v.version === r.version);
    if (r.version !== undefined && !named) throw new VaultError('VAULT_SECRET_NOT_FOUND', `secret '${r.name}' version ${r.version} not found`);
    const roots = versions.filter((v) => v.tags[TAG_REWRAP_OF] === undefined);
    const root = named ? rootOf(named) : roots[roots.length - 1]?.version ?? versions[versions.length - 1]?.version;
    if (root !== undefined) target = newestOfLineage(versions, root)?.version ?? target;
    secret = await vault.getSecret(r.name, target);
  } else {
    secret = r.version === undefined ? await vault.getSecret(r.name) : await newestByGet(vault, { name: r.name, version: r.version });
  }
  if (!isDiskSecretType(secret.properties.contentType)) {
    throw new VaultError('VAULT_NOT_A_DISK_SECRET', `secret ${secret.properties.id} is not a wrapped disk key (contentType ${String(secret.properties.contentType).slice(0, 300)})`);
  }
  return unwrapDocument(vault, wrappedKeyOf(vault, secret), secret.properties, options.pkcs11);
}

/** The disk secret recording LUKS/volume UUID `uuid` (newest sealing wins), or null. */
export async function findDiskSecretByVolumeUuid(vault: Vault, uuid: string): Promise<SecretProperties | null> {
  const want = uuid.toLowerCase();
  let best: SecretProperties | null = null;
  let bestRootTime = -Infinity;
  for (const s of await vault.listSecrets()) {
    if (!isDiskSecretType(s.contentType)) continue;
    for (const { root, newest } of await diskLineages(vault, s.name)) {
      if (root.tags[TAG_VOLUME_UUID] === want && root.created.getTime() >= bestRootTime) {
        best = newest;
        bestRootTime = root.created.getTime();
      }
    }
  }
  return best;
}
