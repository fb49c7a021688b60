/**
 * NBD URIs as the NBD URI specification (doc/uri.md of the nbd project) and
 * qemu/libnbd write them: nbd://HOST[:PORT]/EXPORT and
 * nbd+unix:///EXPORT?socket=PATH.
 */
import { NbdError } from './errors.js';

export const NBD_DEFAULT_PORT = 10809;

export type NbdAddress =
  | { readonly kind: 'unix'; readonly socketPath: string; readonly exportName: string }
  | { readonly kind: 'tcp'; readonly host: string; readonly port: number; readonly exportName: string };

/** The URI schemes of an NBD export we read (the TLS schemes, nbds*, are refused). */
export const NBD_URI_SCHEMES = ['nbd', 'nbd+unix', 'nbd+tcp'] as const;

/** True when `s` looks like an NBD URI rather than a file path. */
export function isNbdUri(s: string): boolean {
  const m = /^([a-z0-9+.-]+):\/\//i.exec(s);
  return m !== null && (NBD_URI_SCHEMES as readonly string[]).includes(m[1]!.toLowerCase());
}

/** Parse nbd://, nbd+tcp:// and nbd+unix:// URIs; TLS schemes (nbds) are refused. */
export function parseNbdUri(uri: string): NbdAddress {
  let u: URL;
  try {
    u = new URL(uri);
  } catch {
    throw new NbdError('NBD_BAD_URI', `not a valid NBD URI: ${uri}`);
  }
  const scheme = u.protocol.toLowerCase();
  // The export name is the path without its leading slash (doc/uri.md).
  const exportName = decodeURIComponent(u.pathname.replace(/^\//, ''));
  if (scheme === 'nbd+unix:') {
    const socketPath = u.searchParams.get('socket');
    if (socketPath === null || socketPath === '') throw new NbdError('NBD_BAD_URI', `nbd+unix URI needs ?socket=PATH: ${uri}`);
    if (u.host !== '') throw new NbdError('NBD_BAD_URI', `nbd+unix URI must not name a host: ${uri}`);
    return { kind: 'unix', socketPath, exportName };
  }
  if (scheme === 'nbd:' || scheme === 'nbd+tcp:') {
    if (u.hostname === '') throw new NbdError('NBD_BAD_URI', `NBD URI needs a host: ${uri}`);
    const port = u.port === '' ? NBD_DEFAULT_PORT : Number(u.port);
    const host = u.hostname.replace(/^\[(.*)\]$/, '$1');
    return { kind: 'tcp', host, port, exportName };
  }
  if (scheme.startsWith('nbds')) throw new NbdError('NBD_UNSUPPORTED_TLS', `NBD over TLS is not supported: ${uri}`);
  throw new NbdError('NBD_BAD_URI', `not an NBD URI scheme: ${scheme}`);
}

/** Format an address as the URI clients such as qemu-img and nbdinfo accept; `tls`: the nbds schemes (TLS required). */
export function formatNbdUri(a: NbdAddress, opts: { tls?: boolean } = {}): string {
  const name = encodeURIComponent(a.exportName);
  const scheme = opts.tls === true ? 'nbds' : 'nbd';
  if (a.kind === 'unix') return `${scheme}+unix:///${name}?socket=${encodeURIComponent(a.socketPath).replace(/%2F/g, '/')}`;
  const host = a.host.includes(':') ? `[${a.host}]` : a.host;
  return `${scheme}://${host}:${a.port}/${name}`;
}
