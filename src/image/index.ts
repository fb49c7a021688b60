/** Disk images: VHD (fixed, dynamic, differencing) and raw behind one interface. */
export type { DiskImage, WritableImage, Extent, ImageFormat } from './types.js';
/** One link of a differencing chain (or a dynamic disk) read block by block: its BAT and sector bitmaps. */
export { SparseVhdImage } from './sparse-vhd-image.js';
export { openImage, parentSearch, type OpenImageOptions, type ParentSearchOptions } from './open-image.js';
export { createImage, newVhdFooter, footerGeometry, type CreateImageOptions, CREATOR_APPLICATION, MAX_VIRTUAL_SIZE } from './create-image.js';
export { checkAzureReady } from './azure.js';
// One-pass VHD streams: the reader of an incoming stream and the layout of an outgoing one.
export {
  readStreamSource,
  enterBlock,
  readEndFooter,
  blockInFileOrder,
  type StreamInputFormat,
  type StreamSource,
  type FlatSource,
  type DynamicSource,
  type BlockPlace,
  type VhdStreamInput,
  type VhdStreamFaults,
} from './vhd-stream-reader.js';
export { planDynamicOutput, fixedFooter, type DynamicOutput } from './vhd-stream-writer.js';
export { openSource, registerSourceKind, sourceKindOf, isFileLocation, locationScheme, type SourceKind } from './source-registry.js';
export { ImageError, type ImageErrorCode } from './errors.js';
// Layout: one table per structure, shared by our reader and writer and by streaming parsers.
export {
  readVhdFooter,
  encodeVhdFooter,
  VHD_FOOTER_LAYOUT,
  VHD_FOOTER_SIZE,
  VHD_FOOTER_COOKIE,
  VhdDiskType,
  type VhdFooter,
} from './vhd-footer.js';
export {
  readDynamicHeader,
  encodeDynamicHeader,
  readBat,
  sectorBitmapSize,
  DYNAMIC_HEADER_LAYOUT,
  PARENT_LOCATOR_LAYOUT,
  DYNAMIC_HEADER_SIZE,
  BAT_UNALLOCATED,
  DEFAULT_BLOCK_SIZE,
  EMPTY_LOCATOR,
  PlatformCode,
  type DynamicHeader,
  type ParentLocator,
} from './vhd-dynamic-header.js';
export { chsGeometry, chsSectors, MAX_CHS, type ChsGeometry } from './chs-geometry.js';
export { vhdChecksum } from './vhd-checksum.js';
export { vhdTimestamp, dateFromVhdTimestamp, VHD_EPOCH_UNIX_SECONDS } from './vhd-time.js';
export { bitmapTest, bitmapSetRange } from './sector-bitmap.js';
export { encodeRelativeLocator, encodeAbsoluteLocator } from './parent-locator.js';
/** For buffers meant for direct writes (the engine's batch slots). */
export { DIRECT_ADDRESS_ALIGNMENT } from './direct-writes.js';
export { addressMisalignment, HUGE_PAGE_BYTES, hugePageView } from './native-io.js';
/** Batches read and written by worker threads on the image's own descriptors. */
export { readPlannedSync, writePlannedSync, type FileReadPlan, type FileWritePlan, type FileWriteReport, type ReadPiece } from './planned-io.js';
