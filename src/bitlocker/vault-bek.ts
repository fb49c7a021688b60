/**
 * Azure Disk Encryption's BitLocker secrets: the startup key (.BEK file) as a Key Vault secret whose value is the
 * file's bytes in base64, contentType "BEK"; or, with a key-encryption key, contentType "Wrapped BEK": the value is
 * the BEK wrapped by the KEK (tags DiskEncryptionKeyEncryptionKeyURL, DiskEncryptionKeyEncryptionAlgorithm, RSA-OAEP
 * by default), unwrapped inside the vault (learn.microsoft.com: "Azure Disk Encryption with Key Vault", offline
 * unlock of Windows disks).
 */
import type { Vault, WrapAlgorithm } from '../vault/index.js';
import { BitlockerError } from './errors.js';
import { MAX_BEK_BYTES } from './keys.js';

const WRAP_ALGORITHMS: readonly string[] = ['RSA-OAEP', 'RSA-OAEP-256', 'A256KW'];

function base64Bytes(value: string, what: string): Buffer {
  const t = value.trim();
  if (!/^[A-Za-z0-9+/_-]*={0,2}$/.test(t) || t.length === 0) throw new BitlockerError('BITLK_NOT_A_BEK_SECRET', `${what}: the value is not base64`);
  return Buffer.from(t.replace(/-/g, '+').replace(/_/g, '/'), 'base64');
}

/** The .BEK bytes a vault secret holds (a new buffer the caller wipes). */
export async function bekFromVault(vault: Vault, secretId: string): Promise<Buffer> {
  const s = await vault.getSecret(secretId);
  const ct = (s.properties.contentType ?? '').trim();
  const id = s.properties.id;
  if (ct === 'BEK') {
    const b = base64Bytes(s.value, id);
    if (b.length > MAX_BEK_BYTES) throw new BitlockerError('BITLK_NOT_A_BEK_SECRET', `${id}: ${b.length} bytes is too large for a startup key`);
    return b;
  }
  if (ct === 'Wrapped BEK') {
    const kek = s.properties.tags['DiskEncryptionKeyEncryptionKeyURL'];
    const alg = s.properties.tags['DiskEncryptionKeyEncryptionAlgorithm'] ?? 'RSA-OAEP';
    if (kek === undefined || kek === '') throw new BitlockerError('BITLK_NOT_A_BEK_SECRET', `${id}: a Wrapped BEK secret without a DiskEncryptionKeyEncryptionKeyURL tag`);
    if (!WRAP_ALGORITHMS.includes(alg)) throw new BitlockerError('BITLK_NOT_A_BEK_SECRET', `${id}: unknown key wrap algorithm ${alg}`);
    const wrapped = base64Bytes(s.value, id);
    const r = await vault.unwrapKey(kek, alg as WrapAlgorithm, wrapped);
    if (r.result.length > MAX_BEK_BYTES) throw new BitlockerError('BITLK_NOT_A_BEK_SECRET', `${id}: the unwrapped value is too large for a startup key`);
    return Buffer.from(r.result);
  }
  throw new BitlockerError('BITLK_NOT_A_BEK_SECRET', `${id}: contentType ${JSON.stringify(ct)} is neither "BEK" nor "Wrapped BEK" (an Azure Disk Encryption BitLocker secret)`);
}
