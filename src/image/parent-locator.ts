/**
 * Parent locator payloads (spec "Parent Locator Entry" and "Implementing a
 * Differencing Hard Disk"): W2ru is a UTF-16LE path relative to the child
 * (".\dir\parent.vhd"), W2ku an absolute UTF-16LE path, MacX a UTF-8 file URL.
 */
import path from 'node:path';
import { PlatformCode } from './vhd-dynamic-header.js';

/** Largest locator payload we read: a path, never more than a few KiB. */
export const MAX_LOCATOR_BYTES = 64 * 1024;

function utf16le(s: string): Uint8Array {
  return new Uint8Array(Buffer.from(s, 'utf16le'));
}

/** W2ru payload: the parent relative to the child's directory, Windows separators. */
export function encodeRelativeLocator(childPath: string, parentPath: string): Uint8Array {
  const rel = path.relative(path.dirname(path.resolve(childPath)), path.resolve(parentPath));
  return utf16le('.\\' + rel.split(path.sep).join('\\'));
}

/** W2ku payload: the parent's absolute path. */
export function encodeAbsoluteLocator(parentPath: string): Uint8Array {
  return utf16le(path.resolve(parentPath));
}

/** The local path a locator names, or null when this platform cannot use it (Mac alias blobs, bad URLs). */
export function decodeLocatorPath(platformCode: number, payload: Uint8Array, childPath: string): string | null {
  const childDir = path.dirname(path.resolve(childPath));
  const buf = Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength);
  switch (platformCode) {
    case PlatformCode.W2ru:
    case PlatformCode.Wi2r: {
      const p = trimNul(buf.toString('utf16le')).replace(/\\/g, '/');
      return p ? path.resolve(childDir, p) : null;
    }
    case PlatformCode.W2ku:
    case PlatformCode.Wi2k: {
      const p = trimNul(buf.toString('utf16le'));
      if (!p || /^[A-Za-z]:[\\/]/.test(p)) return null; // a Windows drive path means nothing here
      return path.resolve(childDir, p.replace(/\\/g, '/'));
    }
    case PlatformCode.MacX: {
      const url = trimNul(buf.toString('utf8'));
      const m = /^file:\/\/(?:localhost)?(\/.*)$/.exec(url);
      if (!m) return null;
      try {
        return decodeURIComponent(m[1]!);
      } catch {
        return null; // malformed percent-escape: unusable, the caller tries the next locator
      }
    }
    default:
      return null;
  }
}

function trimNul(s: string): string {
  const i = s.indexOf('\0');
  return i < 0 ? s : s.slice(0, i);
}
