/**
 * Sources by kind: where a job reads a disk from. A location shaped like a URI
 * (RFC 3986 "scheme://...") belongs to the kind registered for its scheme; any
 * other location is a file path, opened by this folder's own kinds (VHD fixed,
 * dynamic, differencing; raw). Kinds that live in a folder above this one (an
 * NBD export) register here, so whoever opens a source goes through this one
 * door and never imports the folder that knows the kind.
 */
import { ImageError } from './errors.js';
import { openImage, parentSearch, type ParentSearchOptions } from './open-image.js';
import type { DiskImage } from './types.js';

/** A kind of source that is not a local file, opened by the URI schemes it claims. */
export interface SourceKind {
  /** What errors call it ("NBD export"). */
  readonly name: string;
  /** URI schemes it opens, lower case, without the colon ("nbd", "nbd+unix"). */
  readonly schemes: readonly string[];
  /** Open `location` read-only; parent search options are the file kinds' concern, so none are given. */
  open(location: string): Promise<DiskImage>;
}

/** RFC 3986 section 3.1: scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ); "//" starts the authority. */
const URI_SCHEME = /^([a-z][a-z0-9+.-]*):\/\//i;

const kinds = new Map<string, SourceKind>();

/** The lower-case scheme of a URI-shaped location, or null for a file path. */
export function locationScheme(location: string): string | null {
  const m = URI_SCHEME.exec(location);
  return m ? m[1]!.toLowerCase() : null;
}

/** True when `location` names a file of this machine (not a URI of some registered or unregistered kind). */
export function isFileLocation(location: string): boolean {
  return locationScheme(location) === null;
}

/**
 * Register a source kind for its schemes. Registering the same kind again is a
 * no-op; a scheme another kind already claims is refused (which of two openers
 * runs must not depend on import order).
 */
export function registerSourceKind(kind: SourceKind): void {
  if (typeof kind?.name !== 'string' || !Array.isArray(kind.schemes) || kind.schemes.length === 0 || typeof kind.open !== 'function') {
    throw new ImageError('IMAGE_BAD_ARGUMENT', 'registerSourceKind expected { name, schemes: [at least one], open }');
  }
  for (const s of kind.schemes) {
    if (typeof s !== 'string' || locationScheme(`${s}://`) !== s) {
      throw new ImageError('IMAGE_BAD_ARGUMENT', `source kind ${kind.name}: scheme ${String(s)} is not a lower-case URI scheme`);
    }
    const held = kinds.get(s);
    if (held !== undefined && held !== kind) {
      throw new ImageError('IMAGE_BAD_ARGUMENT', `source kind ${kind.name}: scheme ${s} is already opened by ${held.name}`);
    }
  }
  for (const s of kind.schemes) kinds.set(s, kind);
}

/** The kind registered for `location`'s scheme; undefined for a file path or a scheme nobody registered. */
export function sourceKindOf(location: string): SourceKind | undefined {
  const scheme = locationScheme(location);
  return scheme === null ? undefined : kinds.get(scheme);
}

/**
 * Open a source read-only: a file path as openImage does (`search` says where a
 * differencing image's parents may be), a URI by the kind registered for its scheme.
 */
export async function openSource(location: string, search: ParentSearchOptions = {}): Promise<DiskImage> {
  const scheme = locationScheme(location);
  if (scheme === null) return openImage(location, parentSearch(search));
  const kind = kinds.get(scheme);
  if (kind === undefined) {
    throw new ImageError(
      'IMAGE_UNKNOWN_SOURCE_KIND',
      `${location}: no source kind is registered for ${scheme}:// locations (the package entry registers the NBD export kind; a caller of inner modules registers kinds with registerSourceKind)`,
    );
  }
  return kind.open(location);
}
