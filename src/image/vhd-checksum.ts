/**
 * VHD checksum (spec "Hard Disk Footer Format", Checksum): one's complement of
 * the byte sum of the structure, the 4-byte checksum field counted as zero.
 */
export function vhdChecksum(bytes: Uint8Array, checksumOffset: number): number {
  let sum = 0;
  for (let i = 0; i < bytes.length; i++) {
    if (i >= checksumOffset && i < checksumOffset + 4) continue;
    sum = (sum + bytes[i]!) >>> 0;
  }
  return ~sum >>> 0;
}
