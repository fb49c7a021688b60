/**
 * Failed client authentications, counted per client id and per address over a fixed window: past the limit,
 * the token endpoint answers 429 with Retry-After until the window ends, so a secret cannot be guessed at speed.
 * The tables are bounded: a peer that sends many client ids fills the address table first.
 */
const MAX_KEYS = 10_000;

export interface AuthLimits {
  /** Failures allowed per client id per window. */
  readonly perClient: number;
  /** Failures allowed per address per window. */
  readonly perAddress: number;
  readonly windowMs: number;
}

export const DEFAULT_AUTH_LIMITS: AuthLimits = { perClient: 5, perAddress: 20, windowMs: 60_000 };

class FailureCounter {
  readonly #limit: number;
  readonly #windowMs: number;
  readonly #entries = new Map<string, { count: number; resetAt: number }>();

  constructor(limit: number, windowMs: number) {
    this.#limit = limit;
    this.#windowMs = windowMs;
  }

  /** Milliseconds until `key` may try again, or 0. */
  blockedFor(key: string, now: number): number {
    const e = this.#entries.get(key);
    if (e === undefined) return 0;
    if (now >= e.resetAt) {
      this.#entries.delete(key);
      return 0;
    }
    return e.count >= this.#limit ? e.resetAt - now : 0;
  }

  fail(key: string, now: number): void {
    const e = this.#entries.get(key);
    if (e !== undefined && now < e.resetAt) {
      e.count++;
      return;
    }
    if (this.#entries.size >= MAX_KEYS) {
      for (const [k, v] of this.#entries) if (now >= v.resetAt) this.#entries.delete(k);
      // Still full: forget the oldest half rather than grow (a peer filling it loses only its own history).
      if (this.#entries.size >= MAX_KEYS) {
        let n = 0;
        for (const k of this.#entries.keys()) {
          if (n++ >= MAX_KEYS / 2) break;
          this.#entries.delete(k);
        }
      }
    }
    this.#entries.set(key, { count: 1, resetAt: now + this.#windowMs });
  }
}

export class AuthLimiter {
  readonly #clients: FailureCounter;
  readonly #addresses: FailureCounter;

  constructor(limits: AuthLimits = DEFAULT_AUTH_LIMITS) {
    this.#clients = new FailureCounter(limits.perClient, limits.windowMs);
    this.#addresses = new FailureCounter(limits.perAddress, limits.windowMs);
  }

  /** Seconds to wait (Retry-After) when this client id or address is over its limit, else 0. */
  retryAfter(clientId: string, address: string): number {
    const now = Date.now();
    const ms = Math.max(this.#clients.blockedFor(clientId.toLowerCase(), now), this.#addresses.blockedFor(address, now));
    return ms > 0 ? Math.ceil(ms / 1000) : 0;
  }

  fail(clientId: string, address: string): void {
    const now = Date.now();
    if (clientId !== '') this.#clients.fail(clientId.toLowerCase(), now);
    this.#addresses.fail(address, now);
  }
}
