/** The engine: whole-image encrypt/decrypt through a worker pool, keyslot and header jobs, streams. */
export { EngineError, type EngineErrorCode } from './errors.js';
export { encryptImage, type EncryptOptions } from './encrypt-image.js';
export { decryptImage, type DecryptOptions } from './decrypt-image.js';
// The volume layer's names the engine's callers have always found here (declared in src/volume).
export { findPlainVolumeSecret, unlockImage, type UnlockImageOptions, type UnlockedImage } from '../volume/index.js';
export { luksLayout, plainLayout, type PayloadLayout, type EncryptionFormat } from '../volume/index.js';
export { readLuksInfo, readLuksRegion, writeLuksRegion, type LuksRegion } from '../volume/index.js';
export { DEFAULT_KEK } from '../volume/index.js';
export { CryptPool, defaultThreads, workerPath, type CryptJob, type SectorBatchRef } from './crypt-pool.js';
export { SlotRing, type Slot } from './slot-ring.js';
export { runSectorPipeline, type PipelineSpec, type SectorTweak } from './sector-pipeline.js';
export { exportImageKey, type ExportImageKeyOptions, type ExportImageKeyResult } from './key-export.js';
export type { OutputFormat, Progress, RunOptions, RunResult } from './run-options.js';
export {
  addImageKeyslot,
  removeImageKeyslot,
  listImageKeyslots,
  backupImageHeader,
  restoreImageHeader,
  describeImage,
  type ImageDescription,
} from './header-ops.js';
export { createEncryptStream, EncryptStream, type EncryptStreamOptions, type StreamResult } from './stream-encrypt.js';
export type { StreamInputFormat } from '../image/vhd-stream-reader.js';
export { createDecryptStream, DecryptStream, type DecryptStreamOptions } from './stream-decrypt.js';
/** Where a run's temp output and journal live beside its destination (what an interrupted run keeps). */
export { outputPaths, type OutputPaths } from './safe-output.js';
