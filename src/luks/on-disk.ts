/**
 * LUKS on-disk facts that more than one reader or writer needs, declared once: the magics and the largest header
 * region a volume can have (everything before its data segment that is header: metadata and keyslot areas).
 */

/** "LUKS\xba\xbe": the LUKS1 phdr's magic (LUKS1 spec 1.2.3 §2.4) and the LUKS2 primary header's (LUKS2 spec §2.1). */
export const LUKS_MAGIC = Uint8Array.of(0x4c, 0x55, 0x4b, 0x53, 0xba, 0xbe);
/** "SKUL\xba\xbe": the LUKS2 secondary header's magic (LUKS2 spec §2.1). */
export const LUKS2_MAGIC_SECONDARY = Uint8Array.of(0x53, 0x4b, 0x55, 0x4c, 0xba, 0xbe);

/** Largest LUKS2 metadata area (hdr_size: binary header + JSON area) of one copy: 4 MiB (LUKS2 spec §2.1). */
export const LUKS2_MAX_HDR_SIZE = 4n << 20n;
/** cryptsetup's LUKS2_MAX_KEYSLOTS_SIZE (128 MiB): a larger keyslots area is refused, by cryptsetup too. */
export const LUKS2_MAX_KEYSLOTS_SIZE = 128n << 20n;
/**
 * The largest LUKS header region: two metadata copies of 4 MiB and a 128 MiB keyslots area, 136 MiB (cryptsetup's
 * largest LUKS2 layout; a LUKS1 header with 8 keyslots of 512-bit keys is far smaller). A data offset past it is
 * not a header anyone wrote, and no reader holds more than this in memory for one.
 */
export const LUKS_MAX_HEADER_REGION = 2n * LUKS2_MAX_HDR_SIZE + LUKS2_MAX_KEYSLOTS_SIZE;
