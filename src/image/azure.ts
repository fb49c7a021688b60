/** Azure upload readiness of an image (Azure: "Prepare a Windows VHD": fixed VHD, size a whole MiB). */
import type { DiskImage } from './types.js';

const MIB = 1n << 20n;

/** Every reason Azure would refuse this image for upload; empty when it is ready. */
export function checkAzureReady(image: DiskImage): string[] {
  const reasons: string[] = [];
  if (image.format !== 'vhd-fixed') reasons.push(`Azure accepts only fixed VHDs; this image is ${image.format}`);
  if (image.virtualSize % MIB !== 0n) reasons.push(`virtual size ${image.virtualSize} is not a whole number of MiB`);
  if (image.virtualSize === 0n) reasons.push('virtual size is zero');
  const f = image.footer;
  if (f) {
    if (f.currentSize !== image.virtualSize) reasons.push('footer current size differs from the data size');
    if (f.savedState !== 0) reasons.push('the disk is marked as in a saved state');
  }
  for (const w of image.warnings) reasons.push(`image warning: ${w}`);
  return reasons;
}
