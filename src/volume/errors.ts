/**
 * Typed errors of the volume layer. They keep the ENGINE_* codes they had before the layer had a folder of its own
 * (the codes, the CLI's exit statuses and the README's table are the contract, and their meaning did not change);
 * the codes and their exit statuses are declared in src/error-codes.ts.
 */
import type { CodesOf } from '../error-codes.js';
import { VhdcryptError } from '../errors.js';

export type VolumeErrorCode = CodesOf<'ENGINE'>;

export class VolumeError extends VhdcryptError {
  declare readonly code: VolumeErrorCode;
  constructor(code: VolumeErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}
