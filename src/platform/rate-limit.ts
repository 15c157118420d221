// Rate limiting by GCRA (the generic cell rate algorithm, as redis-cell and Stripe use): a client
// may send `max` requests at once, then one every window/max; no window-boundary bursts.
//
// Without Redis (or while it is away) each instance keeps the state in memory. With Redis the
// state is one key per client, updated by a Lua script on Redis's clock, so N instances enforce one
// limit; but asking Redis on every request would cost a round trip and a script run per request,
// which measured as most of the cost of a cached read. So each instance asks Redis only when it
// must, as quota systems with local leases do:
//   - Far from the limit, Redis grants the asking instance a lease: a number of requests it may
//     admit on its own during LEASE_MS, 1/max(LOCAL_SHARE, SHARE_PER_INSTANCE x live instances) of
//     the budget no other live lease holds ("live": instances that exchanged with Redis about this
//     client in the last LEASE_MS + REPORT_GRACE_MS). Redis records the lease as promised and counts
//     it against every later grant and decision until the instance reports those admissions
//     (within FLUSH_MS) or the promise lapses.
//   - Near the limit (nothing left to grant) every decision is Redis's, and the request carries the
//     instance's unreported admissions with it.
//   - Once Redis refuses a client, the instance refuses it locally until Redis said to retry:
//     a client hammering a limit costs no Redis traffic.
//
// Why this admits at most `max` (plus what the window refills) at any instance count: at every
// moment, admissions Redis has been told of sit in the TAT, and every admission it has not been
// told of, made or still to come, is covered by that instance's promise; a grant or a Redis
// decision only hands out budget that neither the TAT nor any live promise holds. Each call states
// how much of the instance's current lease it may still use before the answer arrives (`unused`),
// and Redis keeps max(unused, new grant) as its promise; only the answer to the instance's newest
// call for a client installs a lease, so no older lease outlives the promise that covers it.
// The lease runs from when its call was sent, before Redis made the promise; Redis keeps the
// promise REPORT_GRACE_MS longer than that, so reports sent within FLUSH_MS arrive in time.
// Slack: 0 requests. The bound assumes reports reach Redis within REPORT_GRACE_MS (1 s) of the
// lease's end, and a Redis that does not evict these keys; an instance stalled longer than that
// (event loop, network) can overshoot by at most the lease it held, 1/LOCAL_SHARE of the budget.
// The price is under-admission in time, not in count: budget promised to an instance that then
// gets no requests stays held until the promise lapses (at most LEASE_MS + REPORT_GRACE_MS); a
// client refused only for such budget is told to retry by then.
// The HTTP transport turns decisions into RateLimit-* / Retry-After headers and 429s.
import { randomUUID } from 'node:crypto';
import type { RedisConnection } from './redis.js';

/** A lease is at most this fraction (1/n) of the budget no other lease holds... */
export const LOCAL_SHARE = 16;
/** ...or 1/(this x live instances), when that is smaller: the more instances, the smaller each lease. */
export const SHARE_PER_INSTANCE = 2;
/** How long a lease may be used, from when the call that got it was sent. */
export const LEASE_MS = 1_000;
/** Local admissions reach Redis within this delay. */
export const FLUSH_MS = 20;
/** Redis holds a promise this much longer than the lease, for the last reports to arrive. */
export const REPORT_GRACE_MS = 1_000;
const PROMISE_HOLD_MS = LEASE_MS + REPORT_GRACE_MS;

/**
 * KEYS[1] the client's TAT (theoretical arrival time, ms on Redis's clock); KEYS[2] the live
 * leases, instance id -> 'promised:expiresAtMs'. ARGV: interval (ms per request), window (ms),
 * reported (requests the instance already admitted: counted, never refused, but never more than one
 * window ahead), take (1: decide one more request; 0: only report), instance id, unused (local
 * admissions the instance may still make before this answer reaches it).
 * Returns {allowed, wait ms (refused: until the next request is allowed), ms until the budget is
 * full (reported admissions only), requests granted to the instance as its new lease}.
 */
const GCRA = `
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local interval = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local me = ARGV[5]
local unused = tonumber(ARGV[6])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
tat = math.min(tat + tonumber(ARGV[3]) * interval, now + window)
local promised = unused
local live = 1
local leases = redis.call('HGETALL', KEYS[2])
for i = 1, #leases, 2 do
  if leases[i] ~= me then
    local count, expiresAt = string.match(leases[i + 1], '^(%d+):(%d+)$')
    if tonumber(expiresAt) <= now then
      redis.call('HDEL', KEYS[2], leases[i])
    else
      promised = promised + tonumber(count)
      live = live + 1
    end
  end
end
local allowed = 1
local wait = 0
if ARGV[4] == '1' then
  local held = tat + promised * interval
  if held + interval - window > now then
    allowed = 0
    wait = held + interval - window - now
    -- Refused only for budget that leases hold: it is reported or lapses by then.
    if tat + interval - window <= now then wait = math.min(wait, ${PROMISE_HOLD_MS}) end
  else
    tat = tat + interval
  end
end
local grant = 0
if allowed == 1 then
  local free = math.floor((window - (tat - now)) / interval) - promised
  grant = math.max(0, math.floor(free / math.max(${LOCAL_SHARE}, ${SHARE_PER_INSTANCE} * live)))
end
redis.call('HSET', KEYS[2], me, math.max(unused, grant) .. ':' .. (now + ${PROMISE_HOLD_MS}))
redis.call('PEXPIRE', KEYS[2], ${PROMISE_HOLD_MS})
if tat > now then redis.call('SET', KEYS[1], tostring(tat), 'PX', math.ceil(tat - now)) end
return {allowed, math.ceil(wait), math.ceil(tat - now), grant}`;

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
  // Each client's theoretical arrival time is a record updated in place, not a number put into the
  // Map per request: that is a fresh heap number held by a long-lived object, the pattern that led V8
  // to allocate a request's objects in the old generation on the API-key path (api-keys.service.ts).
  const tats = new Map<string, { tat: number }>();
  return {
    take(key, max, windowMs) {
      const at = now();
      const interval = windowMs / max;
      const entry = tats.get(key);
      const tat = Math.max(entry?.tat ?? at, at);
      const nextTat = tat + interval;
      if (nextTat - windowMs > at) return decide(max, windowMs, false, Math.ceil(nextTat - windowMs - at), 0);
      if (entry) entry.tat = nextTat;
      else {
        makeRoom(tats, maxKeys, (value) => value.tat <= at);
        tats.set(key, { tat: nextTat });
      }
      return decide(max, windowMs, true, 0, Math.ceil(nextTat - at));
    },
  };
}

/** What one instance knows of one client, between exchanges with Redis. */
interface Lease {
  /** Requests Redis said were left at its last answer, and ms until the budget was full then. */
  remaining: number;
  untilFullMs: number;
  /** When the call that brought the lease was sent: it runs LEASE_MS from then. */
  leasedAt: number;
  /** Requests Redis granted this instance to admit on its own during the lease. */
  granted: number;
  /** Admitted here since `leasedAt` without asking Redis (reported or not). */
  admitted: number;
  /** Of those, not yet sent to Redis, and sent but not yet acknowledged. */
  unreported: number;
  inFlight: number;
  /** Calls about this client sent and not yet answered. */
  pending: number;
  /** Redis refused the client: refuse it here until then (local ms). */
  blockedUntil: number;
  max: number;
  windowMs: number;
}

/** What the GCRA script answers: {allowed (1/0), wait ms, ms until the budget is full, granted}. */
type Answer = [number, number, number, number];

/** Redis when it is there (with local leases, see the top of this file), memory while it is not. */
export function createSharedGcra(
  redis: RedisConnection,
  fallback: Gcra = createLocalGcra(),
  options: { maxKeys?: number; now?: () => number } = {},
): Gcra {
  const maxKeys = options.maxKeys ?? 100_000;
  const now = options.now ?? Date.now;
  const gcra = redis.script<Answer>('bastionGcraLeases', GCRA);
  /** Names this limiter's promises in Redis; a restarted process starts with none. */
  const instanceId = randomUUID();
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

  /** Adopts Redis's answer to a call sent at `sentAt` that carried `carried` earlier admissions. */
  const settle = (lease: Lease, carried: number, sentAt: number, [allowed, waitMs, untilFullMs, granted]: Answer) => {
    const at = now();
    lease.inFlight -= carried;
    lease.pending--;
    if (allowed !== 1) lease.blockedUntil = at + waitMs;
    // Overtaken by a newer call: the current lease stays, since that call's `unused` (what Redis
    // keeps promised) was measured on it; the newer answer installs the next one.
    if (lease.pending > 0) return;
    if (allowed === 1) lease.blockedUntil = 0;
    lease.leasedAt = sentAt;
    lease.granted = granted;
    lease.admitted = lease.unreported + lease.inFlight;
    lease.untilFullMs = untilFullMs;
    lease.remaining = allowed === 1 ? decide(lease.max, lease.windowMs, true, 0, untilFullMs).remaining : 0;
  };

  /**
   * One GCRA call for the client: reports the lease's unreported admissions and, if `take`, asks
   * for one more request; `answered` or, when Redis fails, `failed` decides what it resolves to.
   */
  const exchange = <T>(
    key: string,
    lease: Lease,
    take: 0 | 1,
    answered: (answer: Answer) => T | PromiseLike<T>,
    failed: () => T | PromiseLike<T>,
  ): Promise<T> => {
    const sentAt = now();
    const unused = sentAt - lease.leasedAt <= LEASE_MS ? Math.max(0, lease.granted - lease.admitted) : 0;
    const carried = lease.unreported;
    lease.unreported = 0;
    lease.inFlight += carried;
    lease.pending++;
    const rateKey = `bastion:v1:rate:${key}`;
    return gcra(2, rateKey, `${rateKey}:leases`, lease.windowMs / lease.max, lease.windowMs, carried, take, instanceId, unused).then(
      (answer) => {
        settle(lease, carried, sentAt, answer);
        return answered(answer);
      },
      () => {
        // Lost with Redis; the availability change resets every lease.
        lease.inFlight -= carried;
        lease.pending--;
        return failed();
      },
    );
  };

  const flush = () => {
    flushTimer = undefined;
    const due = [...unreported];
    unreported.clear();
    for (const [key, lease] of due) {
      if (lease.unreported === 0) continue; // an ask carried them already
      void exchange(key, lease, 0, () => undefined, () => undefined);
    }
  };

  const ask = (key: string, lease: Lease): Promise<GcraDecision> => {
    const { max, windowMs } = lease;
    return exchange(
      key,
      lease,
      1,
      ([allowed, waitMs, untilFullMs]) => decide(max, windowMs, allowed === 1, waitMs, untilFullMs),
      () => fallback.take(key, max, windowMs),
    );
  };

  return {
    take(key, max, windowMs) {
      if (!redis.isAvailable()) return fallback.take(key, max, windowMs);
      const at = now();
      let lease = leases.get(key);
      if (lease && (lease.max !== max || lease.windowMs !== windowMs)) lease = undefined;
      if (!lease) {
        makeRoom(leases, maxKeys, (old) => old.pending === 0 && old.unreported === 0 && at - old.leasedAt > LEASE_MS && old.blockedUntil <= at);
        lease = { remaining: 0, untilFullMs: 0, leasedAt: -Infinity, granted: 0, admitted: 0, unreported: 0, inFlight: 0, pending: 0, blockedUntil: 0, max, windowMs };
        leases.set(key, lease);
      }
      if (lease.blockedUntil > at) return decide(max, windowMs, false, Math.ceil(lease.blockedUntil - at), 0);
      if (lease.admitted < lease.granted && at - lease.leasedAt <= LEASE_MS) {
        lease.admitted++;
        lease.unreported++;
        unreported.set(key, lease);
        if (!flushTimer) {
          flushTimer = setTimeout(flush, FLUSH_MS);
          flushTimer.unref();
        }
        const interval = windowMs / max;
        const untilFullMs = Math.max(0, lease.untilFullMs + lease.admitted * interval - (at - lease.leasedAt));
        return { allowed: true, remaining: Math.max(0, lease.remaining - lease.admitted), waitMs: Math.ceil(untilFullMs) };
      }
      return ask(key, lease);
    },
  };
}
