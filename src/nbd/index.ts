/** NBD: serve images (plaintext or decrypted LUKS/plain) over NBD, and read source disks from NBD exports. */
// openExportBacking (open-export.ts), which unlocks an image for serving, is imported from its own module by the CLI.
export * as nbdProtocol from './protocol.js';
export type { NbdBacking, BlockStatusExtent, ReadSegment, BlockSizeConstraints } from './backing.js';
export type { ContainerImage } from './container.js';
export { NbdError, NbdRequestError, NbdProtocolError, NbdDisconnectedError, NbdServerError } from './errors.js';
export { ExtentMap } from './extent-map.js';
export { ImageBacking, type ImageBackingOptions } from './image-backing.js';
export { NbdServer, type NbdServerOptions, type NbdEndpoint } from './server.js';
export { parseNbdUri, formatNbdUri, isNbdUri, NBD_DEFAULT_PORT, type NbdAddress } from './uri.js';
export { EncryptedBacking, type CryptoLayout, type EncryptedBackingOptions } from './encrypted-backing.js';
export { RangeLock } from './range-lock.js';
export { NbdClient, type NbdClientOptions } from './client.js';
export { openNbdImage, type NbdImage } from './nbd-image.js';
export { registerNbdSource, NBD_SOURCE_KIND } from './source-kind.js';
