/**
 * Keys in a PKCS#11 token (an HSM, a smartcard, SoftHSM): RFC 7512 URIs, the module and PIN a process reaches
 * a token with, KEKs made in the token, disk secrets wrapped and unwrapped inside it, and the RSA operations
 * of systemd-cryptenroll's systemd-pkcs11 LUKS2 token. pkcs11js (optional) is loaded on first use only.
 * It imports only the root modules; the vault and the volume layer stand on it.
 */
export { Pkcs11Error, PKCS11_ERROR_CODES, type Pkcs11ErrorCode } from './errors.js';
export { parsePkcs11Uri, formatPkcs11Uri, isPkcs11Uri, OBJECT_TYPES, type Pkcs11Uri, type ObjectType } from './uri.js';
export { ENV_MODULE, ENV_PIN, readPinFile, resolveAccess, type Pkcs11Access, type ResolvedAccess } from './access.js';
export { loadPkcs11js, type KeyAttributes } from './token.js';
export {
  PKCS11_MECHANISMS, isPkcs11Mechanism, unwrapWithToken, wrapWithToken, type Pkcs11Mechanism, type Pkcs11WrapOptions, type Pkcs11Wrapped,
} from './kek.js';
export { KEYGEN_TYPES, generateTokenKey, tokenKeyAttributes, type KeygenRequest, type KeygenResult, type KeygenType } from './keygen.js';
export { certificateKey, decryptPkcs1InToken, tokenPublicKey } from './rsa-token.js';
