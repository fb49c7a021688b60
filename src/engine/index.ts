/**
 * The engine: jobs over whole images. pool/ is the worker pool and the batches it runs (shared by everything
 * below); file-jobs/ encrypts and decrypts files with resume, and runs keyslot, header and key-export jobs;
 * streams/ does the same crypto in one pass over a byte stream. run-options.ts holds what both kinds of job take.
 */
export { EngineError, type EngineErrorCode } from './errors.js';
export { encryptImage, type EncryptOptions } from './file-jobs/encrypt-image.js';
export { encryptChain, type ChainLinkResult } from './file-jobs/chain-encrypt.js';
export { verifyImage, writeManifest, manifestPath, type VerifyOptions, type VerifyReport, type LinkReport } from './file-jobs/chain-manifest.js';
export { mergeImage, mergeJournalPath, type MergeOptions, type MergeResult, type MergeStep } from './file-jobs/chain-merge.js';
export { decryptImage, type DecryptOptions } from './file-jobs/decrypt-image.js';
// The volume layer's names the engine's callers have always found here (declared in src/volume).
export { findPlainVolumeSecret, unlockImage, type UnlockImageOptions, type UnlockedImage } from '../volume/index.js';
export { luksLayout, plainLayout, type PayloadLayout, type EncryptionFormat } from '../volume/index.js';
export { readLuksInfo, readLuksRegion, writeLuksRegion, type LuksRegion } from '../volume/index.js';
export { DEFAULT_KEK } from '../volume/index.js';
export { CryptPool, defaultThreads, workerPath, type CryptJob, type SectorBatchRef } from './pool/crypt-pool.js';
export { SlotRing, type Slot } from './pool/slot-ring.js';
export { runSectorPipeline, type PipelineSpec, type SectorTweak } from './pool/sector-pipeline.js';
export { exportImageKey, type ExportImageKeyOptions, type ExportImageKeyResult } from './file-jobs/key-export.js';
export type { OutputFormat, Progress, RunOptions, RunResult } from './run-options.js';
export {
  addImageKeyslot,
  addImagePkcs11Keyslot,
  removeImageKeyslot,
  listImageKeyslots,
  backupImageHeader,
  restoreImageHeader,
  describeImage,
  type ImageDescription,
} from './file-jobs/header-ops.js';
export { createEncryptStream, EncryptStream, type EncryptStreamOptions, type StreamResult } from './streams/stream-encrypt.js';
export type { StreamInputFormat } from '../image/vhd-stream-reader.js';
export { createDecryptStream, DecryptStream, type DecryptStreamOptions } from './streams/stream-decrypt.js';
/** Where a run's temp output and journal live beside its destination (what an interrupted run keeps). */
export { outputPaths, type OutputPaths } from './file-jobs/safe-output.js';
export {
  decryptBitlockerImage,
  bitlockerToLuks,
  type BitlockerToLuksOptions,
  type BitlockerToLuksResult,
  describeBitlockerDisk,
  hasBitlocker,
  type BitlockerDescription,
  type BitlockerDecryptOptions,
  type BitlockerDecryptResult,
  type BitlockerVolumeResult,
} from './file-jobs/bitlocker-decrypt.js';
