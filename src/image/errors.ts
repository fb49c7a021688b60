import { VhdcryptError } from '../errors.js';

/** Stable codes of every error the image layer raises (CLI maps VHD_/IMAGE_ to status 3). */
export type ImageErrorCode =
  | 'VHD_BAD_COOKIE'
  | 'VHD_BAD_CHECKSUM'
  | 'VHD_BAD_DYNAMIC_HEADER'
  | 'VHD_UNSUPPORTED_VERSION'
  | 'VHD_UNKNOWN_DISK_TYPE'
  | 'VHD_BAD_BLOCK_SIZE'
  | 'VHD_BAD_TABLE'
  | 'VHD_BAT_OUT_OF_RANGE'
  | 'VHD_BAT_OVERLAP'
  | 'VHD_TRUNCATED'
  | 'VHD_BAD_LOCATOR'
  | 'VHD_PARENT_MISSING'
  | 'VHD_PARENT_MISMATCH'
  | 'VHD_PARENT_LOOP'
  | 'VHD_PARENT_NOT_ALLOWED'
  | 'VHD_UNSUPPORTED_SIZE'
  | 'IMAGE_BAD_SIZE'
  | 'IMAGE_BAD_ARGUMENT'
  | 'IMAGE_READ_ONLY'
  | 'IMAGE_OUT_OF_RANGE'
  | 'IMAGE_CLOSED'
  | 'IMAGE_DEST_EXISTS'
  | 'IMAGE_TRUNCATED';

/** Any failure reading, validating or writing a disk image. */
export class ImageError extends VhdcryptError {
  declare readonly code: ImageErrorCode;
  constructor(code: ImageErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}
