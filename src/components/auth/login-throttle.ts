// Brute-force protection for login: failures are counted per (email, client). After `maxFailures`
// within the window, that client is refused for that email (even with the right password) until the
// oldest counted failure leaves the window. Other clients and other emails are unaffected.
// This in-process store serves one instance; the Redis store (scale-out) shares it between instances.
import { LRUCache } from 'lru-cache';

export interface LoginThrottle {
  /** Seconds to wait before another attempt is allowed, or 0 when allowed now. */
  retryAfterSeconds(key: string): Promise<number>;
  recordFailure(key: string): Promise<void>;
  reset(key: string): Promise<void>;
}

export const throttleKey = (email: string, clientIp: string): string => `${email}\u0000${clientIp}`;

export function createMemoryLoginThrottle(options: {
  maxFailures: number;
  windowSeconds: number;
  maxKeys?: number;
  now?: () => number;
}): LoginThrottle {
  const windowMs = options.windowSeconds * 1000;
  const now = options.now ?? Date.now;
  const failures = new LRUCache<string, number[]>({ max: options.maxKeys ?? 100_000, ttl: windowMs });
  const recent = (key: string): number[] => {
    const cutoff = now() - windowMs;
    return (failures.get(key) ?? []).filter((at) => at > cutoff);
  };
  return {
    async retryAfterSeconds(key) {
      const times = recent(key);
      if (times.length < options.maxFailures) return 0;
      const oldestCounted = times[times.length - options.maxFailures] ?? now();
      return Math.max(1, Math.ceil((oldestCounted + windowMs - now()) / 1000));
    },
    async recordFailure(key) {
      const times = recent(key);
      times.push(now());
      failures.set(key, times.slice(-options.maxFailures));
    },
    async reset(key) {
      failures.delete(key);
    },
  };
}
