// API keys: long-lived bearer secrets (`bsk_…`) a user creates for scripts and integrations, each
// limited to scopes. Use cases (create, list, revoke: only with a login, never with a key) and the
// resolution of a presented secret to a Principal, the hot path of every request made with a key.
//
// - Only the secret's SHA-256 is stored. The secret has 256 random bits, so looking it up by its hash
//   reveals nothing a timing could exploit (an attacker controls the hash's input, not where it lands).
// - A key's state goes through a ReadThroughCache (shared over Redis when configured) bounded to the
//   users' staleness: a revocation drops it everywhere after commit, and no copy outlives the bound,
//   so a revoked key stops working on every instance within a second. The owner's state comes from
//   the users' cache on every request: a deleted owner, or a demoted one, takes effect the same way.
// - lastUsedAt is not written per request: uses are kept in memory and written in one statement at
//   most every USAGE_FLUSH_INTERVAL_MS per instance, and on stop.
import { randomBytes } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import { sha256 } from '../../platform/digest.js';
import type { MaybePromise, ReadThroughCache } from '../../platform/cache.js';
import { keysetPage, positionAfter } from '../../platform/cursor.js';
import type { Database, Executor, Tx } from '../../platform/db/index.js';
import { DomainError, forbidden, notFound, unauthenticated, validationFailed } from '../../platform/errors.js';
import type { Gcra, GcraDecision } from '../../platform/rate-limit.js';
import { isUuid, newId } from '../../platform/ids.js';
import type { Logger } from '../../platform/logger.js';
import type { RequestOrigin } from '../../platform/request-origin.js';
import {
  API_KEY_SCOPES,
  apiKeyScopesAllowedFor,
  authorize,
  requireSession,
  scopeOf,
  type ApiKeyScope,
  type Principal,
} from '../access/index.js';
import type { AuditEntry, AuditTrail } from '../audit/index.js';
import type { UserState, UsersService } from '../users/index.js';
import * as repo from './api-keys.repo.js';

export interface ApiKey {
  readonly id: string;
  readonly name: string;
  readonly prefix: string;
  readonly scopes: ApiKeyScope[];
  readonly createdAt: string;
  readonly expiresAt: string | null;
  readonly lastUsedAt: string | null;
}

export interface ApiKeyWithSecret extends ApiKey {
  readonly secret: string;
}

/** What authentication keeps of a live key (cached, shared as JSON over Redis). */
export interface ApiKeyState {
  readonly id: string;
  readonly ownerId: string;
  readonly scopes: ApiKeyScope[];
  /** Epoch ms after which the key no longer authenticates; null: never expires. */
  readonly expiresAtMs: number | null;
}

export interface CreateApiKeyInput {
  readonly name: string;
  readonly scopes: readonly ApiKeyScope[];
  readonly expiresAt?: string;
  readonly ownerId?: string;
}

export interface ApiKeysService {
  /** A new key for the caller (an admin: for `ownerId`); the answer is the only place its secret appears. */
  create(principal: Principal, input: CreateApiKeyInput, origin?: RequestOrigin): Promise<ApiKeyWithSecret>;
  /** The caller's live keys (an admin: `ownerId`'s), newest first. */
  list(principal: Principal, query: { limit: number; cursor?: string; ownerId?: string }): Promise<{ data: ApiKey[]; meta: { nextCursor: string | null } }>;
  /** Revokes one of the caller's keys (an admin: anyone's); someone else's is NOT_FOUND. */
  revoke(principal: Principal, id: string, origin?: RequestOrigin): Promise<void>;
  /**
   * The caller behind a `bsk_` secret, as its owner now is, narrowed to the key's scopes; or
   * UNAUTHENTICATED (unknown, revoked, expired, owner deleted). Synchronous when the key's and the
   * owner's state are both in this instance's memory.
   */
  authenticate(secret: string): MaybePromise<Principal>;
  /** The users' deletion hook: revokes the owner's keys in the deletion's transaction. */
  revokeKeysOfDeletedUser(tx: Tx, userId: string, origin?: RequestOrigin): Promise<void>;
  /** Writes the uses recorded since the last flush (one statement); resolves to the keys updated. */
  flushUsage(): Promise<number>;
  /** Starts the periodic usage flush. */
  start(): void;
  /** Stops it, after a last flush. */
  stop(): Promise<void>;
}

export interface ApiKeysServiceDeps {
  readonly database: Database;
  readonly users: UsersService;
  /** Keys' states by the secret's SHA-256 (hex); bounded staleness, shared across instances. */
  readonly keyStates: ReadThroughCache<ApiKeyState>;
  readonly logger: Logger;
  /** Where creations and revocations are recorded; none: not recorded. */
  readonly audit?: AuditTrail;
  /**
   * Each key's own budget (API_KEY_RATE_LIMIT_*), on top of the per-client one: taken where a key is
   * resolved, so every transport (REST, GraphQL, gRPC) spends the same budget. None: unlimited.
   */
  readonly rateLimit?: { readonly limiter: Gcra; readonly max: number; readonly windowMs: number };
  /** Test seam: how often uses are written; USAGE_FLUSH_INTERVAL_MS by default. */
  readonly usageFlushIntervalMs?: number;
  readonly now?: () => number;
}

export const API_KEY_SECRET_PREFIX = 'bsk_';
/** Characters of the secret shown in lists: the marker and 8 of its random characters. */
const SHOWN_PREFIX_LENGTH = API_KEY_SECRET_PREFIX.length + 8;
/** bsk_ and 32 random bytes in base64url (43 characters). */
const SECRET_PATTERN = /^bsk_[A-Za-z0-9_-]{43}$/;
export const USAGE_FLUSH_INTERVAL_MS = 30_000;
const MAX_LIFETIME_MS = 366 * 86_400_000;
/** Secrets whose digest is remembered (hashOf). */
const DIGESTS_REMEMBERED = 10_000;
const PAGE_LIMIT_DEFAULT = 10;

const invalidKey = () => unauthenticated('The API key is unknown, revoked or expired');

const isScope = (value: string): value is ApiKeyScope => (API_KEY_SCOPES as readonly string[]).includes(value);

function toApiKey(row: repo.ApiKeyRow): ApiKey {
  return {
    id: row.id,
    name: row.name,
    prefix: row.prefix,
    scopes: row.scopes.filter(isScope),
    createdAt: row.created_at.toISOString(),
    expiresAt: row.expires_at?.toISOString() ?? null,
    lastUsedAt: row.last_used_at?.toISOString() ?? null,
  };
}

export function createApiKeysService(deps: ApiKeysServiceDeps): ApiKeysService {
  const { database, users, keyStates, audit, logger } = deps;
  const db = database.db;
  const now = deps.now ?? Date.now;
  const flushIntervalMs = deps.usageFlushIntervalMs ?? USAGE_FLUSH_INTERVAL_MS;

  const record = async (executor: Executor, entry: AuditEntry, origin: RequestOrigin | undefined) => {
    if (audit) await audit.record(executor, entry, origin);
  };

  const loadState = async (hashHex: string): Promise<ApiKeyState | null> => {
    const row = await repo.findLiveKeyByHash(db, Buffer.from(hashHex, 'hex'));
    if (!row) return null;
    return { id: row.id, ownerId: row.owner_id, scopes: row.scopes.filter(isScope), expiresAtMs: row.expires_at?.getTime() ?? null };
  };

  // ---- last use, in memory until flushed ----
  /**
   * Key id -> latest use (epoch ms) not yet written. The record is updated in place: a Map value
   * replaced per request is a fresh heap number, and on this path that was enough for V8 to start
   * allocating the request's objects in the old generation (measured under --cpu-prof: GC took 4 s of
   * a 25 s load against 0.6 s with a token, and key-authenticated reads ran at half the speed).
   */
  let uses = new Map<string, { at: number }>();
  /**
   * Secret -> its SHA-256 (hex), for the secrets presented lately. Hashing was the largest part of
   * what a key-authenticated request costs over a token's (--cpu-prof under wrk -c 32: ~2.5 µs of
   * ~3.5 µs per request). A pure function of the secret, so revocation is unaffected (the key's
   * state is still read through keyStates); the process already keeps access tokens the same way
   * (the verified-token cache).
   */
  const digests = new LRUCache<string, string>({ max: DIGESTS_REMEMBERED });
  const hashOf = (secret: string): string => {
    let digest = digests.get(secret);
    if (digest === undefined) {
      digest = sha256(secret).toString('hex');
      digests.set(secret, digest);
    }
    return digest;
  };
  let flushTimer: NodeJS.Timeout | undefined;
  let flushing: Promise<number> | undefined;

  const flushUsage = (): Promise<number> => {
    // One flush at a time: a flush requested meanwhile waits for it, then writes what came since.
    const previous = flushing?.catch(() => 0) ?? Promise.resolve(0);
    const run = previous.then(async () => {
      if (uses.size === 0) return 0;
      const batch = uses;
      uses = new Map();
      try {
        return await repo.recordLastUses(db, [...batch].map(([id, use]) => ({ id, usedAt: new Date(use.at) })));
      } catch (error) {
        // Kept for the next flush (the newest use of each key wins).
        for (const [id, use] of batch) {
          const newer = uses.get(id);
          if (newer) newer.at = Math.max(newer.at, use.at);
          else uses.set(id, use);
        }
        throw error;
      }
    });
    const settled = run.finally(() => {
      if (flushing === settled) flushing = undefined;
    });
    flushing = settled;
    return settled;
  };

  // ---- authentication ----
  const principalFor = (key: ApiKeyState, owner: UserState | null): Principal => {
    if (!owner || owner.id !== key.ownerId) throw invalidKey();
    const use = uses.get(key.id);
    if (use) use.at = now();
    else uses.set(key.id, { at: now() });
    return { userId: owner.id, role: owner.role, apiKey: { id: key.id, scopes: key.scopes } };
  };

  /** The principal, once the key's budget allows one more request (a limiter failure lets it through). */
  const withinBudget = (principal: Principal, keyId: string): MaybePromise<Principal> => {
    if (!deps.rateLimit) return principal;
    const { limiter, max, windowMs } = deps.rateLimit;
    const admit = (decision: GcraDecision): Principal => {
      if (decision.allowed) return principal;
      const retryAfterSeconds = Math.max(1, Math.ceil(decision.waitMs / 1000));
      throw new DomainError('RATE_LIMITED', 'Too many requests with this API key; retry later', {
        retryAfterSeconds,
        rateLimit: { limit: max, remaining: 0, resetSeconds: retryAfterSeconds },
      });
    };
    const decision = limiter.take(`api-key:${keyId}`, max, windowMs);
    return decision instanceof Promise ? decision.then(admit, () => principal) : admit(decision);
  };

  const ownerOf = (key: ApiKeyState | null): MaybePromise<Principal> => {
    if (!key || (key.expiresAtMs !== null && now() >= key.expiresAtMs)) throw invalidKey();
    const owner = users.getState(key.ownerId);
    return owner instanceof Promise
      ? owner.then((loaded) => withinBudget(principalFor(key, loaded), key.id))
      : withinBudget(principalFor(key, owner), key.id);
  };

  // ---- use cases ----
  /** Only a login manages keys; `ownerId`, and others' keys, only for a role that manages any. */
  const managedOwner = (principal: Principal, ownerId: string | undefined): string => {
    requireSession(principal);
    authorize(principal, 'api-keys:manage');
    if (ownerId === undefined) return principal.userId;
    if (scopeOf(principal, 'api-keys:manage') !== 'any') throw forbidden('Only admins may pass ownerId');
    return ownerId.toLowerCase();
  };

  const expiryOf = (expiresAt: string | undefined): Date | null => {
    if (expiresAt === undefined) return null;
    const at = new Date(expiresAt);
    const invalid = (message: string) => validationFailed([{ path: 'expiresAt', message }]);
    if (Number.isNaN(at.getTime())) throw invalid('must be an ISO 8601 date and time');
    const fromNow = at.getTime() - now();
    if (fromNow <= 0) throw invalid('must be in the future');
    if (fromNow > MAX_LIFETIME_MS) throw invalid('must be at most 366 days ahead');
    return at;
  };

  return {
    async create(principal, input, origin) {
      const ownerId = managedOwner(principal, input.ownerId);
      const ownOwner = ownerId === principal.userId;
      const ownerGone = () => (ownOwner ? unauthenticated('The caller no longer exists') : notFound('Owner'));
      const expiresAt = expiryOf(input.expiresAt);
      const scopes = [...new Set(input.scopes)];
      if (scopes.length === 0) throw validationFailed([{ path: 'scopes', message: 'must name at least one scope' }]);
      const owner = isUuid(ownerId) ? await users.getState(ownerId) : null;
      if (!owner) throw ownerGone();
      const allowed = apiKeyScopesAllowedFor(owner.role);
      const refused = scopes.filter((scope) => !allowed.includes(scope));
      if (refused.length > 0) throw forbidden(`The owner's role does not allow the scope(s) ${refused.join(', ')}`);

      const secret = `${API_KEY_SECRET_PREFIX}${randomBytes(32).toString('base64url')}`;
      const row = await database.transaction(async (tx) => {
        // Held to commit: the owner's deletion (which revokes their keys) waits for this key, or this
        // waits for the deletion and finds the owner gone.
        if (!(await users.lockLiveUser(tx, ownerId))) throw ownerGone();
        const inserted = await repo.insertKey(tx, {
          id: newId(),
          ownerId,
          name: input.name,
          prefix: secret.slice(0, SHOWN_PREFIX_LENGTH),
          secretHash: sha256(secret),
          scopes,
          expiresAt,
        });
        await record(
          tx,
          { action: 'api_key.created', actorId: principal.userId, targetId: inserted.id, details: { ownerId, name: input.name, scopes: scopes.join(' ') } },
          origin,
        );
        return inserted;
      });
      return { ...toApiKey(row), secret };
    },

    async list(principal, query) {
      const ownerId = managedOwner(principal, query.ownerId);
      const limit = query.limit ?? PAGE_LIMIT_DEFAULT;
      const before = positionAfter(query.cursor);
      const rows = isUuid(ownerId) ? await repo.listLiveKeys(db, ownerId, { limit: limit + 1, before }) : [];
      return keysetPage(rows, limit, toApiKey);
    },

    async revoke(principal, rawId, origin) {
      managedOwner(principal, undefined);
      const id = rawId.toLowerCase();
      if (!isUuid(id)) throw notFound('API key');
      const seesAll = scopeOf(principal, 'api-keys:manage') === 'any';
      const revoked = await database.transaction(async (tx) => {
        // One statement decides and writes: someone else's key is not touched, and not told apart from none.
        const row = await repo.revokeKey(tx, id, seesAll ? undefined : principal.userId);
        if (!row) return undefined;
        await record(tx, { action: 'api_key.revoked', actorId: principal.userId, targetId: row.id, details: { ownerId: row.owner_id } }, origin);
        return row;
      });
      if (!revoked) throw notFound('API key');
      // After commit, so that no instance reloads the key as it was before.
      keyStates.delete(revoked.hash_hex);
    },

    authenticate(secret) {
      // Malformed secrets cost no lookup, and are not cached as misses.
      if (!SECRET_PATTERN.test(secret)) throw invalidKey();
      const state = keyStates.get(hashOf(secret), loadState);
      return state instanceof Promise ? state.then(ownerOf) : ownerOf(state);
    },

    async revokeKeysOfDeletedUser(tx, userId, origin) {
      // The cached states may outlive this commit by the staleness bound; the owner's state (deleted)
      // refuses the key meanwhile.
      const revoked = await repo.revokeKeysOfOwner(tx, userId);
      for (const key of revoked) {
        await record(tx, { action: 'api_key.revoked', actorId: null, targetId: key.id, details: { ownerId: userId, reason: 'owner_deleted' } }, origin);
      }
    },

    flushUsage,

    start() {
      if (flushTimer) return;
      flushTimer = setInterval(() => {
        flushUsage().catch((error: unknown) => logger.warn({ err: error }, 'api-keys: recording last uses failed; retried at the next flush'));
      }, flushIntervalMs);
      flushTimer.unref();
    },

    async stop() {
      if (flushTimer) clearInterval(flushTimer);
      flushTimer = undefined;
      await flushUsage().catch((error: unknown) => logger.warn({ err: error }, 'api-keys: recording last uses at stop failed'));
    },
  };
}
