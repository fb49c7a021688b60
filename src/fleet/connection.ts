/** One Redis connection for the fleet's short-lived callers (submit, status, the dashboard), checked before use. */
import { Redis, type RedisOptions } from 'ioredis';
import { FleetError } from './errors.js';
import { redactedUrl, redisOptions } from './redis-url.js';

/** A Redis URL (`--redis`) or ioredis options (a library caller's). */
export type FleetConnection = string | RedisOptions;

export const DEFAULT_QUEUE = 'vhdcrypt';
/** BullMQ's key prefix for vhdcrypt's queues: keys `vhdcrypt:<queue>:...`, apart from other BullMQ users'. */
export const KEY_PREFIX = 'vhdcrypt';

export function connectionOptions(c: FleetConnection): RedisOptions {
  return typeof c === 'string' ? redisOptions(c) : { ...c, maxRetriesPerRequest: null };
}

export function describeConnection(c: FleetConnection): string {
  if (typeof c === 'string') return redactedUrl(c);
  return c.path !== undefined ? `unix://${c.path}` : `${c.host ?? 'localhost'}:${c.port ?? 6379}`;
}

/** A queue name: one Redis key component. */
export function checkQueueName(name: string): string {
  if (!/^[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}$/.test(name)) throw new FleetError('FLEET_BAD_ARGUMENT', `queue name expected 1-100 of A-Z a-z 0-9 . _ -, got ${JSON.stringify(name.slice(0, 120))}`);
  return name;
}

/**
 * Connect, or FLEET_REDIS_FAILED after `timeoutMs`: a command line that cannot reach Redis says so instead of
 * waiting forever (maxRetriesPerRequest: null would queue its commands until Redis comes).
 */
export async function openRedis(c: FleetConnection, timeoutMs = 10_000): Promise<Redis> {
  const redis = new Redis({ ...connectionOptions(c), lazyConnect: true });
  // ioredis reports each failed attempt as an 'error' event (the cause: ENOENT, ECONNREFUSED, a TLS failure); the
  // connect below reports only that the connection closed.
  let lastError: Error | null = null;
  redis.on('error', (e: Error) => (lastError = e));
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      redis.connect().then(() => redis.ping()),
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
      }),
    ]);
    return redis;
  } catch (e) {
    redis.disconnect();
    const why = (lastError as Error | null)?.message ?? (e as Error).message;
    throw new FleetError('FLEET_REDIS_FAILED', `cannot reach Redis at ${describeConnection(c)}: ${why}`, { cause: e });
  } finally {
    clearTimeout(timer);
  }
}

/** The set a `fleet cancel` of a running job writes and the worker running it watches. */
export function cancelKey(queue: string): string {
  return `${KEY_PREFIX}:${queue}:vhdcrypt-cancel`;
}
