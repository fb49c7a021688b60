import type { CodesOf } from '../error-codes.js';
import { VhdcryptError } from '../errors.js';

/** Stable codes of every error the image layer raises (declared with their exit statuses in src/error-codes.ts). */
export type ImageErrorCode = CodesOf<'VHD' | 'IMAGE'>;

/** Any failure reading, validating or writing a disk image. */
export class ImageError extends VhdcryptError {
  declare readonly code: ImageErrorCode;
  constructor(code: ImageErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}
