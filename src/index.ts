/** vhdcrypt's public library API. */
export { VhdcryptError, isVhdcryptError } from './errors.js';
