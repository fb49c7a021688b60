/**
 * An NBD export as a source kind of the image layer's registry: a job reads
 * nbd://HOST[:PORT]/EXPORT or nbd+unix:///EXPORT?socket=PATH through our NBD
 * client. Registered by whoever assembles the parts (the package entry, the
 * CLI), not as a side effect of importing this file.
 */
import { registerSourceKind, type SourceKind } from '../image/source-registry.js';
import { NBD_URI_SCHEMES } from './uri.js';

export const NBD_SOURCE_KIND: SourceKind = Object.freeze({
  name: 'NBD export',
  schemes: NBD_URI_SCHEMES,
  // The client is loaded only when an export is opened (it is a fifth of the modules a file job would load).
  open: async (uri: string) => (await import('./nbd-image.js')).openNbdImage(uri),
});

/** Let openSource open NBD exports (registering twice is harmless). */
export function registerNbdSource(): void {
  registerSourceKind(NBD_SOURCE_KIND);
}
