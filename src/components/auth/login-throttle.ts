// Brute-force protection for login, per (email, client): an attempt is reserved BEFORE its password
// is checked, in one atomic step (a counter increment in memory or in Redis), so however many
// logins race, at most `maxFailures` passwords are checked per window; the others are refused
// without hashing. A wrong password keeps its reservation (that is the failure); a success resets
// the count; an attempt that checked no password (service busy, database away) is refunded.
// The window is fixed: it opens at the first counted attempt and the client waits until it closes.
// The counting is rate-limiter-flexible's (its login-protection pattern): in memory for one
// instance; in Redis to share it between instances, with memory as the insurance while Redis is away.
import { sha256 } from '../../platform/digest.js';
import { RateLimiterMemory, RateLimiterRedis, RateLimiterRes, type RateLimiterAbstract } from 'rate-limiter-flexible';
import type { RedisConnection } from '../../platform/redis.js';

export type Reservation =
  /** `last`: this attempt takes the window's last one; if it fails, the client is locked out until the window ends. */
  | { readonly granted: true; readonly last: boolean; readonly lockSeconds: number }
  | { readonly granted: false; readonly retryAfterSeconds: number };

export interface LoginThrottle {
  /** Counts one attempt if fewer than `maxFailures` are counted in the window; else how long to wait. */
  reserve(key: string): Promise<Reservation>;
  /** A successful login: the count starts over. */
  reset(key: string): Promise<void>;
  /** The reserved attempt checked no password: it is given back. */
  refund(key: string): Promise<void>;
}

interface LoginThrottleOptions {
  readonly maxFailures: number;
  readonly windowSeconds: number;
}

export const throttleKey = (email: string, clientIp: string): string => `${email}\u0000${clientIp}`;

const KEY_PREFIX = 'bastion:v1:login-attempts';

// Hashed: keys of one bounded length, and no email address stored in Redis.
const digest = (key: string): string => sha256(key).toString('base64url');

const memoryLimiter = (options: LoginThrottleOptions): RateLimiterMemory =>
  new RateLimiterMemory({ keyPrefix: KEY_PREFIX, points: options.maxFailures, duration: options.windowSeconds });

/** `limiters[0]` counts; reset clears them all (counts an insurance store kept while Redis was away). */
function throttleOver(limiters: readonly [RateLimiterAbstract, ...RateLimiterAbstract[]]): LoginThrottle {
  const [counting] = limiters;
  return {
    async reserve(key) {
      try {
        const counted = await counting.consume(digest(key));
        return {
          granted: true,
          last: counted.remainingPoints === 0,
          lockSeconds: Math.max(1, Math.ceil(counted.msBeforeNext / 1000)),
        };
      } catch (refusal) {
        // The library rejects with its result when the limit is reached, with an Error when it failed.
        if (!(refusal instanceof RateLimiterRes)) throw refusal;
        return { granted: false, retryAfterSeconds: Math.max(1, Math.ceil(refusal.msBeforeNext / 1000)) };
      }
    },
    async reset(key) {
      const hashed = digest(key);
      await Promise.all(limiters.map((limiter) => limiter.delete(hashed)));
    },
    async refund(key) {
      await counting.reward(digest(key));
    },
  };
}

/** One instance's count, in memory. */
export function createMemoryLoginThrottle(options: LoginThrottleOptions): LoginThrottle {
  return throttleOver([memoryLimiter(options)]);
}

/**
 * The count kept in Redis, so that every instance counts one client's attempts together; while
 * Redis is away (commands fail fast) each instance counts in memory.
 */
export function createSharedLoginThrottle(redis: RedisConnection, options: LoginThrottleOptions): LoginThrottle {
  const insurance = memoryLimiter(options);
  const shared = new RateLimiterRedis({
    storeClient: redis.client,
    keyPrefix: KEY_PREFIX,
    points: options.maxFailures,
    duration: options.windowSeconds,
    rejectIfRedisNotReady: true,
    insuranceLimiter: insurance,
  });
  return throttleOver([shared, insurance]);
}
