/** Cylinder/head/sector geometry as stored in the VHD footer. */
export interface ChsGeometry {
  readonly cylinders: number;
  readonly heads: number;
  readonly sectorsPerTrack: number;
}

/** The largest geometry the footer can hold (65535 x 16 x 255), about 127 GiB. */
export const MAX_CHS: ChsGeometry = { cylinders: 65535, heads: 16, sectorsPerTrack: 255 };

/** Sectors covered by a geometry. */
export function chsSectors(g: ChsGeometry): bigint {
  return BigInt(g.cylinders) * BigInt(g.heads) * BigInt(g.sectorsPerTrack);
}

/**
 * CHS geometry for a disk of `sizeBytes`, by the algorithm of the VHD
 * specification, Appendix "CHS Calculation" (the result may cover less than
 * the size: the footer's current size stays authoritative).
 */
export function chsGeometry(sizeBytes: bigint): ChsGeometry {
  const maxSectors = 65535 * 16 * 255;
  const total = sizeBytes / 512n > BigInt(maxSectors) ? maxSectors : Number(sizeBytes / 512n);
  let spt: number;
  let heads: number;
  let cth: number;
  if (total >= 65535 * 16 * 63) {
    spt = 255;
    heads = 16;
    cth = Math.floor(total / spt);
  } else {
    spt = 17;
    cth = Math.floor(total / spt);
    heads = Math.floor((cth + 1023) / 1024);
    if (heads < 4) heads = 4;
    if (cth >= heads * 1024 || heads > 16) {
      spt = 31;
      heads = 16;
      cth = Math.floor(total / spt);
    }
    if (cth >= heads * 1024) {
      spt = 63;
      heads = 16;
      cth = Math.floor(total / spt);
    }
  }
  return { cylinders: Math.floor(cth / heads), heads, sectorsPerTrack: spt };
}
