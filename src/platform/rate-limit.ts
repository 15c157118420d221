// Rate limiting by GCRA (the generic cell rate algorithm, as redis-cell and Stripe use): a client
// may send `max` requests at once, then one every window/max; no window-boundary bursts.
//
// Without Redis (or while it is away) each instance keeps the state in memory. With Redis the
// state is one key per client, updated by a Lua script on Redis's clock, so N instances enforce one
// limit; but asking Redis on every request would cost a round trip and a script run per request,
// which measured as most of the cost of a cached read. So each instance asks Redis only when it
// must, as quota systems with local leases do:
//   - Far from the limit, an instance admits on its own up to 1/LOCAL_SHARE of the client's budget
//     as Redis last reported it (at most LEASE_MS ago), and reports what it admitted within
//     FLUSH_MS. With up to LOCAL_SHARE instances serving one client at once, their own admissions
//     together stay within what Redis said was left.
//   - Near the limit (less than LOCAL_SHARE requests left), every decision is Redis's, and the
//     request carries this instance's not-yet-reported admissions with it, so the limit trips at
//     exactly `max` requests however they are spread over instances.
//   - Once Redis refuses a client, the instance refuses it locally until Redis said to retry:
//     a client hammering a limit costs no Redis traffic.
// The HTTP transport turns decisions into RateLimit-* / Retry-After headers and 429s.
import type { RedisConnection } from './redis.js';

/**
 * KEYS[1] the client's TAT (theoretical arrival time, ms on Redis's clock); ARGV: interval (ms per
 * request), window (ms), reported (requests an instance already admitted: counted, never refused,
 * but never more than one window ahead), take (1: decide one more request; 0: only report).
 * Returns {allowed, wait ms (refused: until the next request is allowed), ms until the budget is full}.
 */
const GCRA = `
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local interval = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
tat = math.min(tat + tonumber(ARGV[3]) * interval, now + window)
if ARGV[4] == '1' then
  if tat + interval - window > now then
    return {0, math.ceil(tat + interval - window - now), math.ceil(tat - now)}
  end
  tat = tat + interval
end
if tat > now then redis.call('SET', KEYS[1], tostring(tat), 'PX', math.ceil(tat - now)) end
return {1, 0, math.ceil(tat - now)}`;

/** An instance admits on its own at most this fraction (1/n) of what Redis said was left. */
export const LOCAL_SHARE = 16;
/** How long what Redis said is trusted for local admissions. */
export const LEASE_MS = 1_000;
/** Local admissions reach Redis within this delay. */
export const FLUSH_MS = 20;

export interface GcraDecision {
  readonly allowed: boolean;
  /** Requests still allowed right now. */
  readonly remaining: number;
  /** Rejected: ms until the next request is allowed. Allowed: ms until the budget is full again. */
  readonly waitMs: number;
}

export interface Gcra {
  /** Synchronous when decided in memory, a promise when Redis decides. */
  take(key: string, max: number, windowMs: number): GcraDecision | Promise<GcraDecision>;
}

function decide(max: number, windowMs: number, allowed: boolean, waitMs: number, untilFullMs: number): GcraDecision {
  const interval = windowMs / max;
  if (!allowed) return { allowed, remaining: 0, waitMs };
  return { allowed, remaining: Math.max(0, Math.floor((windowMs - untilFullMs) / interval)), waitMs: untilFullMs };
}

/**
 * A Map bounded to `maxKeys`: when full, entries `expired` says are dead go first, then the oldest
 * inserted, down to 90 % so that the sweep runs once per tenth of `maxKeys` new keys, not per key.
 */
function makeRoom<V>(map: Map<string, V>, maxKeys: number, expired: (value: V) => boolean): void {
  if (map.size < maxKeys) return;
  for (const [key, value] of map) if (expired(value)) map.delete(key);
  const target = Math.floor(maxKeys * 0.9);
  for (const key of map.keys()) {
    if (map.size <= target) break;
    map.delete(key);
  }
}

export function createLocalGcra(maxKeys = 100_000, now: () => number = Date.now): Gcra {
  const tats = new Map<string, number>();
  return {
    take(key, max, windowMs) {
      const at = now();
      const interval = windowMs / max;
      const tat = Math.max(tats.get(key) ?? at, at);
      const nextTat = tat + interval;
      if (nextTat - windowMs > at) return decide(max, windowMs, false, Math.ceil(nextTat - windowMs - at), 0);
      if (!tats.has(key)) makeRoom(tats, maxKeys, (value) => value <= at);
      tats.set(key, nextTat);
      return decide(max, windowMs, true, 0, Math.ceil(nextTat - at));
    },
  };
}

/** What one instance knows of one client, between exchanges with Redis. */
interface Lease {
  /** Requests Redis said were left at `syncedAt`, and ms until the budget was full then. */
  remaining: number;
  untilFullMs: number;
  syncedAt: number;
  /** Admitted here since then, without asking Redis (reported or not). */
  admitted: number;
  /** Of those, not yet sent to Redis, and sent but not yet acknowledged. */
  unreported: number;
  inFlight: number;
  /** Redis refused the client: refuse it here until then (local ms). */
  blockedUntil: number;
  max: number;
  windowMs: number;
}

/** Redis when it is there (with local leases, see the top of this file), memory while it is not. */
export function createSharedGcra(
  redis: RedisConnection,
  fallback: Gcra = createLocalGcra(),
  options: { maxKeys?: number; now?: () => number } = {},
): Gcra {
  const maxKeys = options.maxKeys ?? 100_000;
  const now = options.now ?? Date.now;
  const gcra = redis.script<[number, number, number]>('bastionGcra', GCRA);
  const leases = new Map<string, Lease>();
  /** Leases with admissions not yet sent: the flush visits these, not every client's lease. */
  const unreported = new Map<string, Lease>();
  let flushTimer: NodeJS.Timeout | undefined;

  // Redis may have lost every key, and unreported admissions cannot be told to the Redis that
  // comes back as anything but noise: start over from what Redis says.
  redis.onAvailabilityChange(() => {
    leases.clear();
    unreported.clear();
  });

  /** Adopts what Redis answered for a call that carried `carried` earlier admissions. */
  const adopt = (lease: Lease, carried: number, allowed: boolean, waitMs: number, untilFullMs: number) => {
    const at = now();
    lease.inFlight -= carried;
    lease.admitted = lease.unreported + lease.inFlight;
    lease.syncedAt = at;
    lease.untilFullMs = untilFullMs;
    lease.remaining = allowed ? decide(lease.max, lease.windowMs, true, 0, untilFullMs).remaining : 0;
    lease.blockedUntil = allowed ? 0 : at + waitMs;
  };

  /** Moves the lease's unreported admissions onto a call about to be sent; how many it carries. */
  const carry = (lease: Lease): number => {
    const carried = lease.unreported;
    lease.unreported = 0;
    lease.inFlight += carried;
    return carried;
  };

  /** One GCRA call for the client: report `carried` earlier admissions, and decide one more if `take`. */
  const callRedis = (key: string, lease: Lease, carried: number, take: 0 | 1) =>
    gcra(1, `bastion:v1:rate:${key}`, lease.windowMs / lease.max, lease.windowMs, carried, take);

  const flush = () => {
    flushTimer = undefined;
    const due = [...unreported];
    unreported.clear();
    for (const [key, lease] of due) {
      if (lease.unreported === 0) continue; // an ask carried them already
      const carried = carry(lease);
      callRedis(key, lease, carried, 0).then(
        ([, , untilFullMs]) => adopt(lease, carried, true, 0, untilFullMs),
        () => void (lease.inFlight -= carried), // lost with Redis; the availability change resets all
      );
    }
  };

  const ask = (key: string, lease: Lease): Promise<GcraDecision> => {
    const carried = carry(lease);
    const { max, windowMs } = lease;
    return callRedis(key, lease, carried, 1).then(
      ([allowed, waitMs, untilFullMs]) => {
        adopt(lease, carried, allowed === 1, waitMs, untilFullMs);
        return decide(max, windowMs, allowed === 1, waitMs, untilFullMs);
      },
      () => {
        lease.inFlight -= carried;
        return fallback.take(key, max, windowMs);
      },
    );
  };

  return {
    take(key, max, windowMs) {
      if (!redis.isAvailable()) return fallback.take(key, max, windowMs);
      const at = now();
      let lease = leases.get(key);
      if (lease && (lease.max !== max || lease.windowMs !== windowMs)) lease = undefined;
      if (!lease) {
        makeRoom(leases, maxKeys, (old) => old.unreported === 0 && old.inFlight === 0 && at - old.syncedAt > LEASE_MS && old.blockedUntil <= at);
        lease = { remaining: 0, untilFullMs: 0, syncedAt: -Infinity, admitted: 0, unreported: 0, inFlight: 0, blockedUntil: 0, max, windowMs };
        leases.set(key, lease);
      }
      if (lease.blockedUntil > at) return decide(max, windowMs, false, Math.ceil(lease.blockedUntil - at), 0);
      const fresh = at - lease.syncedAt <= LEASE_MS;
      if (fresh && lease.admitted < Math.floor(lease.remaining / LOCAL_SHARE)) {
        lease.admitted++;
        lease.unreported++;
        unreported.set(key, lease);
        if (!flushTimer) {
          flushTimer = setTimeout(flush, FLUSH_MS);
          flushTimer.unref();
        }
        const interval = windowMs / max;
        const untilFullMs = Math.max(0, lease.untilFullMs + lease.admitted * interval - (at - lease.syncedAt));
        return { allowed: true, remaining: Math.max(0, lease.remaining - lease.admitted), waitMs: Math.ceil(untilFullMs) };
      }
      return ask(key, lease);
    },
  };
}
