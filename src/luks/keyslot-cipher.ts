/** Encryption of keyslot areas: aes-xts-plain64, 512-byte sectors, tweak 0 at the area start (LUKS1 §2.4, LUKS2 §3.2). */
import { createXts } from '../crypto/index.js';

/** Encrypts AF material in place (length a multiple of 512). */
export function encryptKeyslotArea(areaKey: Uint8Array, material: Uint8Array): void {
  const xts = createXts(areaKey);
  try {
    xts.encryptSectors(material, 0n, 512);
  } finally {
    xts.dispose();
  }
}

/** Decrypts AF material in place. */
export function decryptKeyslotArea(areaKey: Uint8Array, material: Uint8Array): void {
  const xts = createXts(areaKey);
  try {
    xts.decryptSectors(material, 0n, 512);
  } finally {
    xts.dispose();
  }
}
