/**
 * `--redis URL`: where the queue lives. redis://[user:password@]host[:port][/db], rediss:// (TLS; the server's
 * name is checked against its certificate), unix:///path/redis.sock[?db=N]. The connection options are ioredis's,
 * with `maxRetriesPerRequest: null` as BullMQ requires of a worker's connection (a command waits out a Redis
 * restart instead of failing the job).
 */
import type { RedisOptions } from 'ioredis';
import { FleetError } from './errors.js';

/** The URL with its password replaced, for messages and status output. */
export function redactedUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return '(unparseable URL)';
  }
}

function dbOf(text: string | null, url: string): number | undefined {
  if (text === null || text === '') return undefined;
  if (!/^\d{1,5}$/.test(text)) throw new FleetError('FLEET_BAD_REDIS_URL', `${redactedUrl(url)}: the database expected a number, got ${JSON.stringify(text.slice(0, 20))}`);
  return Number(text);
}

/** ioredis options for a Redis URL; FLEET_BAD_REDIS_URL names what is wrong (never the password). */
export function redisOptions(url: string): RedisOptions {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new FleetError('FLEET_BAD_REDIS_URL', 'expected redis://host:port/db, rediss://host:port/db or unix:///path/redis.sock');
  }
  const base: RedisOptions = { maxRetriesPerRequest: null, lazyConnect: true };
  const auth = {
    ...(u.username ? { username: decodeURIComponent(u.username) } : {}),
    ...(u.password ? { password: decodeURIComponent(u.password) } : {}),
  };
  if (u.protocol === 'unix:') {
    if (u.host !== '' || !u.pathname.startsWith('/') || u.pathname === '/') {
      throw new FleetError('FLEET_BAD_REDIS_URL', `${redactedUrl(url)}: a socket URL is unix:///absolute/path/redis.sock (three slashes)`);
    }
    const db = dbOf(u.searchParams.get('db'), url);
    return { ...base, ...auth, path: decodeURIComponent(u.pathname), ...(db !== undefined ? { db } : {}) };
  }
  if (u.protocol !== 'redis:' && u.protocol !== 'rediss:') {
    throw new FleetError('FLEET_BAD_REDIS_URL', `${redactedUrl(url)}: the scheme expected redis:, rediss: or unix:, got ${u.protocol}`);
  }
  if (u.hostname === '') throw new FleetError('FLEET_BAD_REDIS_URL', `${redactedUrl(url)}: no host`);
  const host = u.hostname.startsWith('[') ? u.hostname.slice(1, -1) : u.hostname;
  const port = u.port === '' ? 6379 : Number(u.port);
  const db = dbOf(u.pathname.replace(/^\//, ''), url);
  return {
    ...base,
    ...auth,
    host,
    port,
    ...(db !== undefined ? { db } : {}),
    ...(u.protocol === 'rediss:' ? { tls: { servername: host } } : {}),
  };
}
