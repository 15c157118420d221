// Ledger use cases: accounts, money movements (transfers, deposits, withdrawals, two-phase), history,
// idempotency, and the background work that expires pending transfers and old idempotency keys.
import { Histogram, type Registry } from 'prom-client';
import { sha256 } from '../../platform/digest.js';
import { authorize, can, scopeOf, type Principal } from '../access/index.js';
import type { Database, Tx } from '../../platform/db/index.js';
import { isConnectionError, sqlState } from '../../platform/db/index.js';
import { assert, DomainError, notFound, unauthenticated, validationFailed } from '../../platform/errors.js';
import { keysetPage, positionAfter } from '../../platform/cursor.js';
import { newId } from '../../platform/ids.js';
import { createLiveEvents, type LiveEvents } from '../../platform/live-events.js';
import type { Logger } from '../../platform/logger.js';
import type { Schedule } from '../../platform/jobs.js';
import { localSchedule } from '../../platform/periodic.js';
import type { EventOrigin, Outbox } from '../events/index.js';
import type { UsersService } from '../users/index.js';
import { accountNotEmpty, idempotencyInProgress, idempotencyKeyReused, outcomeError } from './ledger.errors.js';
import * as repo from './ledger.repo.js';
import { createMoveBatcher } from './move-batcher.js';

const SYSTEM_ACCOUNT_SHARDS = 32;
const MAX_ATTEMPTS = 8;
const RETRYABLE_STATES = new Set(['40001', '40P01', '55P03']);

type TransferStatus = 'posted' | 'pending' | 'voided' | 'expired';

/**
 * Minor units, exact. A user balance is at most 2^53 - 1, a number; a system account's is minus the
 * sum of its currency's user balances and may pass 2^53 (or bigint's 2^63): then a bigint, which the
 * response schema writes as the exact JSON integer.
 */
type Balance = number | bigint;

export interface Account {
  readonly id: string;
  readonly ownerId: string | null;
  readonly currency: string;
  readonly name: string | null;
  readonly balance: Balance;
  readonly availableBalance: Balance;
  readonly createdAt: string;
  readonly updatedAt: string;
}

export interface Transfer {
  readonly id: string;
  readonly fromAccountId: string;
  readonly toAccountId: string;
  readonly amount: number;
  readonly currency: string;
  readonly status: TransferStatus;
  readonly description: string | null;
  readonly createdAt: string;
  /** Two-phase only: when a pending transfer voids itself. */
  readonly expiresAt?: string;
  /** Two-phase only: the pending transfer this post/void resolved. */
  readonly pendingId?: string;
}

/** The request a money operation belongs to: its id, and its Idempotency-Key if it has one. */
export interface MoneyRequestContext {
  readonly requestId: string;
  /** The W3C traceparent of the request, kept with the transfer's event. */
  readonly traceparent?: string;
  /**
   * With a key, the outcome is kept with it (per caller) in the transaction that moves the money; the
   * same operation with the same key gets that outcome again (replayed), another operation with it
   * IDEMPOTENCY_KEY_REUSED, and one while the first runs IDEMPOTENCY_IN_PROGRESS.
   */
  readonly idempotencyKey?: string;
}

/**
 * What a money operation did: the transfer it wrote, or the ledger rule that refused it (an error
 * with its code), as first answered. A replay is the same outcome with the first request's id, so a
 * transport renders both alike. Errors outside the rules (validation, permission, the key's own
 * conflicts) are thrown instead and never kept.
 */
export type MoneyOutcome =
  | { readonly ok: true; readonly transfer: Transfer; readonly replayed: boolean; readonly requestId: string }
  | { readonly ok: false; readonly error: DomainError; readonly replayed: boolean; readonly requestId: string };

export interface MoveCommand {
  readonly kind: 'transfer' | 'deposit' | 'withdrawal';
  /** transfer: fromAccountId; deposit: the account credited; withdrawal: the account debited. */
  readonly accountId: string;
  /** transfer only: toAccountId. */
  readonly toAccountId?: string;
  readonly amount: number;
  readonly description?: string | null;
  /** Two-phase: reserve the amount now, post or void it later. */
  readonly pending?: boolean;
  /** pending only: void it by itself after this long. */
  readonly timeoutSeconds?: number;
}

export interface ResolveCommand {
  readonly kind: 'post' | 'void';
  /** post only: less than the reserved amount (the rest is released); all of it if absent. */
  readonly amount?: number;
}

interface Page<T> {
  data: T[];
  meta: { page: number; limit: number; total: number; totalPages: number };
}

export interface LedgerService {
  createAccount(principal: Principal, input: { currency: string; name?: string; ownerId?: string }, origin?: EventOrigin): Promise<Account>;
  listAccounts(
    principal: Principal,
    query: { page: number; limit: number; ownerId?: string; system?: boolean },
  ): Promise<Page<Account>>;
  getAccount(principal: Principal, id: string): Promise<Account>;
  move(principal: Principal, command: MoveCommand, context: MoneyRequestContext): Promise<MoneyOutcome>;
  resolvePending(
    principal: Principal,
    pendingId: string,
    command: ResolveCommand,
    context: MoneyRequestContext,
  ): Promise<MoneyOutcome>;
  getTransfer(principal: Principal, id: string): Promise<Transfer>;
  /**
   * Every transfer posted to or from the account from now on (a move, or a pending transfer's
   * post), as it commits on any instance, to `sink.next`. The caller must be able to read the
   * account (else NOT_FOUND, as getAccount), and is asked again before each delivery: a revoked
   * token or a lost right ends the watch with that error instead. Live and best effort (at most once,
   * see platform/live-events.ts): for a complete history, read listAccountTransfers. Returns the stop.
   */
  watchPostedTransfers(
    principal: () => Principal | Promise<Principal>,
    accountId: string,
    sink: { next(transfer: Transfer): void; end(error: DomainError): void },
  ): Promise<() => void>;
  listAccountTransfers(
    principal: Principal,
    accountId: string,
    query: { limit: number; cursor?: string },
  ): Promise<{ data: Transfer[]; meta: { nextCursor: string | null } }>;
  /**
   * Users-deletion hook: vetoes with ACCOUNT_NOT_EMPTY, else closes the user's accounts. The deletion
   * holds the user's row lock, as createAccount does, so an account opened meanwhile is either seen
   * and closed here or refused there.
   */
  closeAccountsOfDeletedUser(tx: Tx, userId: string, origin?: EventOrigin): Promise<void>;
  /** A user's closure starts (the closures saga): in `tx`, their open accounts stop taking money moves. */
  freezeAccountsOf(tx: Tx, userId: string): Promise<void>;
  /** Undoes freezeAccountsOf: the closure was compensated. */
  unfreezeAccountsOf(userId: string): Promise<void>;
  /**
   * Settles a frozen user's accounts: voids every open pending transfer from or to them, then, with
   * `withdrawBalances`, withdraws every balance (the money leaves the ledger, as a payout); without
   * it, money left makes it 'not_empty'. Acts on what is left, so running it again after a crash
   * neither voids nor withdraws twice (only the closure moves money on frozen accounts).
   */
  settleAccountsOf(userId: string, options: { withdrawBalances: boolean; origin?: EventOrigin }): Promise<'settled' | 'not_empty'>;
  /** Voids pending transfers whose timeout passed; returns how many. */
  expirePendingTransfers(): Promise<number>;
  purgeIdempotencyKeys(): Promise<number>;
  startBackgroundWork(): void;
  stopBackgroundWork(): void;
}

interface LedgerServiceDeps {
  readonly database: Database;
  readonly users: UsersService;
  readonly logger: Logger;
  readonly idempotencyKeyTtlSeconds: number;
  readonly pendingSweepIntervalMs: number;
  /** Most movements committed together; 1 disables batching. */
  readonly batchSize?: number;
  readonly batchConcurrency?: number;
  readonly now?: () => Date;
  /** Where posted transfers are told as they commit; in-process only when absent. */
  readonly live?: LiveEvents;
  /** Where accounts and transfers leave their events, in their transactions; none: no events. */
  readonly outbox?: Outbox;
  /** Runs the background work once per tick across instances; absent: on this instance's timer. */
  readonly schedule?: Schedule;
  /** Where the batch-size histogram is registered; absent: not measured. */
  readonly registry?: Registry;
}

/** Idempotency keys per purge statement: keeps each purge transaction short on a large table. */
const PURGE_BATCH_KEYS = 5_000;

const postedTopic = (accountId: string) => `ledger.transfer-posted:${accountId}`;

// User balances are capped at 2^53 - 1 (a CHECK and the BALANCE_LIMIT_EXCEEDED rule), so they are
// exact JSON numbers; only a system account's (negative) total can pass that, after ~90 trillion
// units of deposits, and it stays exact as a bigint.
const toBalance = (value: bigint): Balance =>
  value >= BigInt(Number.MIN_SAFE_INTEGER) && value <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(value) : value;

/** An account in its events: what every reader of it may know; no balance (transfers carry the moves). */
const accountEventData = (account: Account) => ({
  id: account.id,
  ownerId: account.ownerId,
  currency: account.currency,
  name: account.name,
  createdAt: account.createdAt,
});

function toAccount(row: repo.AccountRow): Account {
  const balance = BigInt(row.system_balance ?? row.balance);
  return {
    id: row.id,
    ownerId: row.owner_id,
    currency: row.currency,
    name: row.name,
    balance: toBalance(balance),
    availableBalance: toBalance(balance - BigInt(row.pending_debits)),
    createdAt: row.created_at.toISOString(),
    updatedAt: row.updated_at.toISOString(),
  };
}

function statusOf(row: Pick<repo.TransferRow, 'kind' | 'pending'> & { resolution: repo.TransferRow['resolution'] }): TransferStatus {
  if (row.kind === 'void') return 'voided';
  if (row.kind === 'expire') return 'expired';
  if (!row.pending || row.kind === 'post') return 'posted';
  if (row.resolution === 'post') return 'posted';
  if (row.resolution === 'void') return 'voided';
  if (row.resolution === 'expire') return 'expired';
  return 'pending';
}

/** A transfer as it is now (with what became of a pending one), or, without `resolution`, as written. */
function toTransfer(row: repo.TransferFacts & { resolution?: repo.TransferRow['resolution'] }): Transfer {
  return {
    id: row.id,
    fromAccountId: row.from_account_id,
    toAccountId: row.to_account_id,
    amount: Number(row.amount),
    currency: row.currency,
    status: statusOf({ kind: row.kind, pending: row.pending, resolution: row.resolution ?? null }),
    description: row.description,
    createdAt: row.created_at.toISOString(),
    ...(row.expires_at ? { expiresAt: row.expires_at.toISOString() } : {}),
    ...(row.pending_id ? { pendingId: row.pending_id } : {}),
  };
}

/** JSON with object keys sorted, so that the same operation always fingerprints the same. */
function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, item]) => item !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([key, item]) => `${JSON.stringify(key)}:${canonicalJson(item)}`).join(',')}}`;
  }
  return JSON.stringify(value);
}

/**
 * What an Idempotency-Key is bound to: the operation and its parameters as given (whatever the
 * transport), so the same key with another operation or other parameters is IDEMPOTENCY_KEY_REUSED.
 */
const fingerprintOf = (operation: object): Uint8Array => sha256(canonicalJson(operation));

const isRetryable = (error: unknown): boolean => RETRYABLE_STATES.has(sqlState(error) ?? '');
const backoff = (attempt: number) =>
  new Promise((resolve) => setTimeout(resolve, Math.min(50, 2 ** attempt) * (0.5 + Math.random())));

export function createLedgerService(deps: LedgerServiceDeps): LedgerService {
  const { database, users, logger } = deps;
  const db = database.db;
  const live = deps.live ?? createLiveEvents({ logger });
  const outbox = deps.outbox;
  const schedule: Schedule = deps.schedule ?? localSchedule(logger);
  /** The id of a transfer's event (ledger_apply writes it), when the outbox is on. */
  const eventId = (): { eventId?: string } => (outbox ? { eventId: newId() } : {});
  const now = deps.now ?? (() => new Date());
  /** Keys being executed by this instance; other instances are covered by the advisory lock. */
  const inFlight = new Set<string>();
  const stops: Array<() => void> = [];
  /**
   * Keys past their TTL, in statements of at most PURGE_BATCH_KEYS rows: an hour's keys under load
   * are millions, and one DELETE of them all would be one long transaction and one burst of WAL.
   * The cutoff is fixed first, so keys written meanwhile cannot keep the loop going.
   */
  const purgeIdempotencyKeys = async (): Promise<number> => {
    const cutoff = new Date(now().getTime() - deps.idempotencyKeyTtlSeconds * 1000);
    let total = 0;
    for (;;) {
      const deleted = await repo.deleteIdempotencyKeysOlderThan(db, cutoff, PURGE_BATCH_KEYS);
      total += deleted;
      if (deleted < PURGE_BATCH_KEYS) return total;
    }
  };

  const readVisibleAccount = async (principal: Principal, id: string): Promise<repo.AccountRow> => {
    const row = await repo.findAccount(db, id);
    if (!row) throw notFound('Account');
    authorize(principal, 'accounts:read', [row.owner_id], 'Account');
    return row;
  };

  // How well concurrent money requests share a commit: a batch of 1 under load pays a WAL flush alone.
  const batchSizes = deps.registry
    ? new Histogram({
        name: 'bastion_ledger_batch_size',
        help: 'Money requests (moves, posts, voids, expiries) committed together in one ledger batch',
        buckets: [1, 2, 4, 8, 16, 32, 64, 128],
        registers: [deps.registry],
      })
    : undefined;
  const batcher = createMoveBatcher({
    database,
    maxBatchSize: deps.batchSize ?? 64,
    concurrency: deps.batchConcurrency ?? 1,
    shards: SYSTEM_ACCOUNT_SHARDS,
    ...(batchSizes ? { onBatch: (size: number) => batchSizes.observe(size) } : {}),
  });

  /**
   * Runs a caller's request through the batch, with the part of idempotency the database cannot
   * see: a key being executed by this instance is IN_PROGRESS (other instances are covered by the
   * key's advisory lock). Retries on contention (always) and on a lost connection (only with a key: a
   * COMMIT in flight may have landed, and the retry then finds the stored outcome and replays it).
   */
  const execute = async (request: repo.LedgerRequest): Promise<repo.LedgerResult> => {
    const idempotency = request.idempotency;
    const flightKey = idempotency ? `${request.principalId}:${idempotency.key}` : undefined;
    if (flightKey !== undefined) {
      if (inFlight.has(flightKey)) throw idempotencyInProgress();
      inFlight.add(flightKey);
    }
    try {
      for (let attempt = 1; ; attempt++) {
        try {
          return await batcher.submit(request);
        } catch (error) {
          if (attempt < MAX_ATTEMPTS && (isRetryable(error) || (idempotency && isConnectionError(error)))) {
            await backoff(attempt);
            continue;
          }
          throw error;
        }
      }
    } finally {
      if (flightKey !== undefined) inFlight.delete(flightKey);
    }
  };

  /** A caller's money request, executed, as its outcome (kept and replayed ones alike). */
  const submit = async (request: repo.LedgerRequest & { readonly requestId: string }): Promise<MoneyOutcome> => {
    const result = await execute(request);
    if (result.result === 'executed' && result.outcome === 'OK') outbox?.committed();
    if (result.result === 'in_progress') throw idempotencyInProgress();
    if (result.result === 'key_reused') throw idempotencyKeyReused();
    const replayed = result.result === 'replayed';
    const requestId = result.requestId ?? request.requestId;
    if (result.outcome !== 'OK') return { ok: false, error: outcomeError(result.outcome, requestId), replayed, requestId };
    assert(result.transfer, `ledger: outcome OK without a transfer (request ${requestId})`);
    const transfer = toTransfer(result.transfer);
    // Told once, by the request that wrote it (a replay wrote nothing), after it committed.
    if (!replayed && transfer.status === 'posted') live.publish([postedTopic(transfer.fromAccountId), postedTopic(transfer.toAccountId)], transfer);
    return { ok: true, transfer, replayed, requestId };
  };

  const idempotencyOf = (context: MoneyRequestContext, operation: object) =>
    context.idempotencyKey !== undefined ? { key: context.idempotencyKey, fingerprint: fingerprintOf(operation) } : undefined;

  /** Expires pending transfers whose timeout passed, a batch of them at a time. */
  const sweep = async (): Promise<number> => {
    const results = await Promise.allSettled(
      (await repo.findExpiredPending(db, now(), 100)).map((pendingId) =>
        batcher.submit({
          principalId: null,
          requestId: null,
          id: newId(),
          kind: 'expire',
          pendingId,
          amount: null,
          actorSeesAll: true,
          now: now(),
          ...eventId(),
        }),
      ),
    );
    let expired = 0;
    for (const settled of results) {
      if (settled.status === 'fulfilled') {
        if (settled.value.result === 'executed' && settled.value.outcome === 'OK') expired++;
      } else {
        // Another instance resolved it at the same moment, or a transient failure: next sweep.
        logger.debug({ err: settled.reason }, 'ledger: expiring a pending transfer failed');
      }
    }
    if (expired > 0) outbox?.committed();
    return expired;
  };

  return {
    async createAccount(principal, input, origin) {
      authorize(principal, 'accounts:create');
      let ownerId = principal.userId;
      if (input.ownerId !== undefined) {
        // The contract: a non-admin sending ownerId at all is 403, even with their own id.
        if (!can(principal, 'accounts:create-for-others')) throw new DomainError('FORBIDDEN', 'Only admins may set ownerId');
        ownerId = input.ownerId.toLowerCase();
      }
      const at = now();
      const row = await database.transaction(async (tx) => {
        // Held to commit: a deletion of the owner waits for this account and then closes it, or this
        // waits for the deletion and finds the owner gone. A cached "live" would miss the latter.
        if (!(await users.lockLiveUser(tx, ownerId))) {
          throw input.ownerId !== undefined ? notFound('Owner') : unauthenticated('The caller no longer exists');
        }
        await repo.ensureSystemAccount(tx, { id: newId(), currency: input.currency, shards: SYSTEM_ACCOUNT_SHARDS, now: at });
        const inserted = await repo.insertAccount(tx, { id: newId(), ownerId, currency: input.currency, name: input.name ?? null, now: at });
        await outbox?.append(
          tx,
          [{ type: 'account.created', subject: `accounts/${inserted.id}`, data: accountEventData(toAccount(inserted)) }],
          origin,
        );
        return inserted;
      });
      outbox?.committed();
      return toAccount(row);
    },

    async listAccounts(principal, query) {
      authorize(principal, 'accounts:list');
      const seesAll = scopeOf(principal, 'accounts:list') === 'any';
      if (query.ownerId !== undefined && !seesAll) throw new DomainError('FORBIDDEN', 'Only admins may filter by ownerId');
      if (query.system === true && !can(principal, 'accounts:list-system')) {
        throw new DomainError('FORBIDDEN', 'Only admins may list system accounts');
      }
      const ownerId = seesAll ? query.ownerId?.toLowerCase() : principal.userId;
      const { rows, total } = await repo.listAccounts(
        db,
        { ...(ownerId !== undefined ? { ownerId } : {}), system: query.system === true },
        { limit: query.limit, offset: (query.page - 1) * query.limit },
      );
      return {
        data: rows.map(toAccount),
        meta: { page: query.page, limit: query.limit, total, totalPages: Math.ceil(total / query.limit) },
      };
    },

    async getAccount(principal, id) {
      return toAccount(await readVisibleAccount(principal, id.toLowerCase()));
    },

    async move(principal, rawCommand, context) {
      // UUIDs are accepted in either case; the database and every cache key use lower case.
      const command: MoveCommand = {
        ...rawCommand,
        accountId: rawCommand.accountId.toLowerCase(),
        ...(rawCommand.toAccountId !== undefined ? { toAccountId: rawCommand.toAccountId.toLowerCase() } : {}),
      };
      const permission =
        command.kind === 'deposit' ? 'accounts:deposit' : command.kind === 'withdrawal' ? 'accounts:withdraw' : 'transfers:create';
      authorize(principal, permission);
      if (command.kind === 'transfer' && command.toAccountId === command.accountId) {
        throw validationFailed([{ path: 'toAccountId', message: 'must differ from fromAccountId' }]);
      }
      if (command.timeoutSeconds !== undefined && command.pending !== true) {
        throw validationFailed([{ path: 'timeoutSeconds', message: 'requires pending: true' }]);
      }
      const pending = command.pending === true;
      const at = now();
      return submit({
        principalId: principal.userId,
        // What the request means, not how a transport spelt it: `pending: false` and no description
        // are the defaults (a gRPC request cannot tell them from absent fields).
        idempotency: idempotencyOf(context, {
          operation: 'move',
          ...command,
          pending: pending || undefined,
          description: command.description ?? undefined,
        }),
        requestId: context.requestId,
        id: newId(),
        ...eventId(),
        traceparent: context.traceparent ?? null,
        kind: command.kind,
        accountId: command.accountId,
        ...(command.toAccountId !== undefined ? { counterpartyId: command.toAccountId } : {}),
        amount: command.amount,
        description: command.description ?? null,
        pending,
        expiresAt: pending && command.timeoutSeconds ? new Date(at.getTime() + command.timeoutSeconds * 1000) : null,
        actorSeesAll: can(principal, permission, [null]),
        now: at,
      });
    },

    async resolvePending(principal, rawPendingId, command, context) {
      const pendingId = rawPendingId.toLowerCase();
      authorize(principal, 'transfers:create');
      return submit({
        principalId: principal.userId,
        idempotency: idempotencyOf(context, { operation: 'resolve', pendingId, ...command }),
        requestId: context.requestId,
        id: newId(),
        ...eventId(),
        traceparent: context.traceparent ?? null,
        kind: command.kind,
        pendingId,
        amount: command.kind === 'post' ? (command.amount ?? null) : null,
        actorSeesAll: can(principal, 'transfers:create', [null]),
        now: now(),
      });
    },

    async getTransfer(principal, id) {
      const row = await repo.findTransfer(db, id.toLowerCase());
      if (!row) throw notFound('Transfer');
      authorize(principal, 'transfers:read', [row.from_owner_id, row.to_owner_id], 'Transfer');
      return toTransfer(row);
    },

    async watchPostedTransfers(principal, rawAccountId, sink) {
      const accountId = rawAccountId.toLowerCase();
      const account = await readVisibleAccount(await principal(), accountId);
      let ended = false;
      // Deliveries wait for the re-check, one after another, so they keep their order.
      let previous: Promise<void> = Promise.resolve();
      const stop = () => {
        ended = true;
        unsubscribe();
      };
      const unsubscribe = live.subscribe(postedTopic(accountId), (payload) => {
        previous = previous.then(async () => {
          if (ended) return;
          try {
            authorize(await principal(), 'accounts:read', [account.owner_id], 'Account');
          } catch (error) {
            stop();
            sink.end(error instanceof DomainError ? error : unauthenticated('The caller could not be authenticated again'));
            return;
          }
          if (!ended) sink.next(payload as Transfer);
        });
      });
      return stop;
    },

    async listAccountTransfers(principal, rawAccountId, query) {
      const accountId = rawAccountId.toLowerCase();
      const before = positionAfter(query.cursor);
      await readVisibleAccount(principal, accountId);
      const rows = await repo.listAccountTransfers(db, accountId, { limit: query.limit + 1, before });
      return keysetPage(rows, query.limit, toTransfer);
    },

    async freezeAccountsOf(tx, userId) {
      await repo.freezeAccountsOf(tx, userId, now());
    },

    async unfreezeAccountsOf(userId) {
      await repo.unfreezeAccountsOf(db, userId, now());
    },

    async settleAccountsOf(userId, options) {
      const closure = { principalId: null, requestId: null, actorSeesAll: true, traceparent: options.origin?.traceparent ?? null };
      const expectOk = (result: repo.LedgerResult, what: string, allowed: readonly string[] = []) => {
        if (result.result !== 'executed' || (result.outcome !== 'OK' && !allowed.includes(result.outcome))) {
          throw new Error(`ledger: settling the accounts of ${userId}: ${what} answered ${JSON.stringify(result)}`);
        }
      };
      for (const pendingId of await repo.findOpenPendingOf(db, userId)) {
        const voided = await execute({ ...closure, id: newId(), ...eventId(), kind: 'void', pendingId, amount: null, now: now() });
        // Expired or resolved meanwhile by its sender: released all the same.
        expectOk(voided, `voiding ${pendingId}`, ['PENDING_ALREADY_VOIDED', 'PENDING_ALREADY_POSTED', 'PENDING_EXPIRED']);
      }
      const balances = await repo.findBalancesOf(db, userId);
      if (balances.length > 0 && !options.withdrawBalances) return 'not_empty';
      for (const account of balances) {
        if (account.available <= 0) continue;
        const withdrawn = await execute({
          ...closure,
          id: newId(),
          ...eventId(),
          kind: 'withdrawal',
          accountId: account.id,
          amount: account.available,
          description: 'closure payout',
          frozenOk: true,
          now: now(),
        });
        expectOk(withdrawn, `withdrawing from ${account.id}`);
      }
      if (balances.length > 0) outbox?.committed();
      return 'settled';
    },

    async closeAccountsOfDeletedUser(tx, userId, origin) {
      if (await repo.userHasMoney(tx, userId)) throw accountNotEmpty();
      const at = now();
      const closed = await repo.closeAccountsOf(tx, userId, at);
      await outbox?.append(
        tx,
        closed.map((account) => ({
          type: 'account.closed' as const,
          subject: `accounts/${account.id}`,
          data: { id: account.id, ownerId: userId, currency: account.currency, name: account.name, closedAt: at.toISOString() },
        })),
        origin,
      );
    },

    expirePendingTransfers: sweep,

    purgeIdempotencyKeys,

    startBackgroundWork() {
      stops.push(
        schedule('ledger: expired pending transfers', deps.pendingSweepIntervalMs, sweep),
        schedule('ledger: purged idempotency keys', 3_600_000, purgeIdempotencyKeys),
      );
    },

    stopBackgroundWork() {
      for (const stop of stops.splice(0)) stop();
    },
  };
}
