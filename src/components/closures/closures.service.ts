// Closing a user, as a saga: steps that each commit on their own, recorded one by one (sagas,
// saga_steps), so that a crash resumes the closure where it stopped and a refusal undoes what was
// done. The steps, in order:
//
//   freeze   the user's accounts stop taking money moves (ledger), under the user's row lock
//   settle   pending transfers from or to them are voided; balances are withdrawn (paid out) if the
//            closure was asked to, else money left refuses the closure: compensate
//   revoke   every session and access token of the user ends
//   delete   the user is deleted; the ledger closes the accounts; user.deleted and account.closed
//            leave through the outbox in that transaction
//
// Compensation (after a refusal at settle or delete): `unfreeze`, and the closure ends
// 'compensated' with the reason. Tokens revoked before a refusal stay revoked (a new login works).
//
// Every step can run twice: a runner that crashed after a step committed and before recording it
// is replaced (the lease lapses; the resume job picks the saga up on any instance) and redoes it:
// freezing a frozen account, voiding a voided transfer, withdrawing from an emptied account or
// deleting a deleted user changes nothing.
import { hostname } from 'node:os';
import { authorize, type Principal } from '../access/index.js';
import { revokeSessionsOfUser } from '../auth/index.js';
import type { EventOrigin } from '../events/index.js';
import type { LedgerService } from '../ledger/index.js';
import type { UsersService } from '../users/index.js';
import type { Database } from '../../platform/db/index.js';
import { DomainError, notFound } from '../../platform/errors.js';
import { newId } from '../../platform/ids.js';
import type { Schedule } from '../../platform/jobs.js';
import type { Logger } from '../../platform/logger.js';
import * as repo from './closures.repo.js';

export type ClosureStatus = repo.SagaStatus;

export interface Closure {
  readonly id: string;
  readonly userId: string;
  readonly status: ClosureStatus;
  /** The step to run next (running), to undo next (compensating), or the last one (ended). */
  readonly step: string;
  readonly withdrawBalances: boolean;
  /** Why it was compensated (an error code), else null. */
  readonly error: string | null;
  readonly steps: Array<{ step: string; outcome: string; at: string }>;
  readonly createdAt: string;
  readonly updatedAt: string;
}

export interface ClosuresService {
  /** Starts the user's closure (or returns the one in progress); it runs on in the background. */
  start(principal: Principal, userId: string, options: { withdrawBalances?: boolean }, origin?: EventOrigin): Promise<Closure>;
  /** The user's latest closure. */
  get(principal: Principal, userId: string): Promise<Closure>;
  /** Runs one closure as far as it goes now (tests and the background runner). */
  run(closureId: string): Promise<void>;
  startBackgroundWork(): void;
  stopBackgroundWork(): Promise<void>;
}

/** Test seam: where a runner waits after recording a step (undefined in production). */
export interface ClosurePauses {
  afterStep?(closureId: string, step: string): Promise<void>;
}

interface ClosuresDeps {
  readonly database: Database;
  readonly users: UsersService;
  readonly ledger: LedgerService;
  readonly logger: Logger;
  readonly schedule: Schedule;
  readonly leaseSeconds?: number;
  readonly resumeIntervalMs?: number;
  readonly pauses?: ClosurePauses;
}

/** Who runs the steps of a closure: the service itself, with the rights an admin has. */
const CLOSURE_ACTOR: Principal = { userId: '00000000-0000-0000-0000-000000000000', role: 'admin' };

type Next = { step: string; status: ClosureStatus; error?: string };

export function createClosuresService(deps: ClosuresDeps): ClosuresService {
  const { database, users, ledger, logger } = deps;
  const db = database.db;
  const instance = `${hostname()}:${process.pid}`;
  const leaseSeconds = deps.leaseSeconds ?? 10;
  const running = new Set<Promise<void>>();
  let stopResume: (() => void) | undefined;

  const toClosure = async (row: repo.SagaRow): Promise<Closure> => ({
    id: row.id,
    userId: row.subject,
    status: row.status,
    step: row.step,
    withdrawBalances: row.data.withdrawBalances === true,
    error: row.error,
    steps: (await repo.stepsOf(db, row.id)).map((step) => ({ step: step.step, outcome: step.outcome, at: step.at.toISOString() })),
    createdAt: row.created_at.toISOString(),
    updatedAt: row.updated_at.toISOString(),
  });

  /** One step of the saga: what it does and where the saga goes next. */
  const perform = async (saga: repo.SagaRow): Promise<{ outcome: string; next: Next }> => {
    const userId = saga.subject;
    const origin = saga.data.traceparent ? { traceparent: saga.data.traceparent } : undefined;
    const compensate = (error: string): { outcome: string; next: Next } => ({ outcome: 'refused', next: { step: 'unfreeze', status: 'compensating', error } });
    if (saga.status === 'compensating') {
      await ledger.unfreezeAccountsOf(userId);
      return { outcome: 'done', next: { step: 'unfreeze', status: 'compensated' } };
    }
    switch (saga.step) {
      case 'freeze': {
        const live = await database.transaction(async (tx) => {
          if (!(await users.lockLiveUser(tx, userId))) return false;
          await ledger.freezeAccountsOf(tx, userId);
          return true;
        });
        // Deleted meanwhile (another closure, DELETE /users/:id): there is nothing left to close.
        return live ? { outcome: 'done', next: { step: 'settle', status: 'running' } } : { outcome: 'gone', next: { step: 'delete', status: 'completed' } };
      }
      case 'settle': {
        const settled = await ledger.settleAccountsOf(userId, { withdrawBalances: saga.data.withdrawBalances === true, ...(origin ? { origin } : {}) });
        return settled === 'settled' ? { outcome: 'done', next: { step: 'revoke', status: 'running' } } : compensate('ACCOUNT_NOT_EMPTY');
      }
      case 'revoke':
        try {
          await users.revokeAccessTokens(userId, (tx, id) => revokeSessionsOfUser(tx, id));
        } catch (error) {
          if (!(error instanceof DomainError && error.code === 'NOT_FOUND')) throw error;
        }
        return { outcome: 'done', next: { step: 'delete', status: 'running' } };
      case 'delete':
        try {
          await users.delete(CLOSURE_ACTOR, userId, origin);
        } catch (error) {
          if (error instanceof DomainError && error.code === 'NOT_FOUND') return { outcome: 'gone', next: { step: 'delete', status: 'completed' } };
          // Money arrived after the settle step (an account opened meanwhile): undo.
          if (error instanceof DomainError && error.code === 'ACCOUNT_NOT_EMPTY') return compensate('ACCOUNT_NOT_EMPTY');
          throw error;
        }
        return { outcome: 'done', next: { step: 'delete', status: 'completed' } };
      default:
        throw new Error(`closures: unknown step ${saga.step}`);
    }
  };

  const run = async (closureId: string): Promise<void> => {
    // Each run holds the lease under its own name: two runs of one closure, even on one instance
    // (two starts that joined, the resume job), never both take it.
    const owner = `${instance}:${newId()}`;
    for (;;) {
      const saga = await repo.claim(db, closureId, owner, leaseSeconds);
      if (!saga) return; // ended, or another runner holds it
      let result: { outcome: string; next: Next };
      try {
        result = await perform(saga);
      } catch (error) {
        // A failure that is not a refusal (the database away, say): the saga stays where it is and the
        // resume job tries again once the lease lapses.
        logger.warn({ err: error, closureId, step: saga.step }, 'closures: a step failed; it will be retried');
        return;
      }
      const recorded = await repo.advance(db, closureId, owner, { step: saga.step, outcome: result.outcome, next: result.next });
      if (!recorded) return;
      logger.info({ closureId, userId: saga.subject, step: saga.step, outcome: result.outcome, next: result.next }, 'closures: step recorded');
      await deps.pauses?.afterStep?.(closureId, saga.step);
      if (result.next.status === 'completed' || result.next.status === 'compensated') {
        await repo.release(db, closureId, owner);
        return;
      }
    }
  };

  const runInBackground = (closureId: string) => {
    const task = run(closureId)
      .catch((error: unknown) => logger.warn({ err: error, closureId }, 'closures: runner failed; the resume job will continue'))
      .finally(() => running.delete(task));
    running.add(task);
  };

  return {
    async start(principal, rawUserId, options, origin) {
      const userId = rawUserId.toLowerCase();
      authorize(principal, 'users:delete', [userId], 'User');
      if (!(await users.getState(userId))) throw notFound('User');
      const { row } = await repo.insertOrJoin(db, {
        id: newId(),
        subject: userId,
        step: 'freeze',
        data: { withdrawBalances: options.withdrawBalances === true, ...(origin?.traceparent ? { traceparent: origin.traceparent } : {}) },
        now: new Date(),
      });
      runInBackground(row.id);
      return toClosure(row);
    },

    async get(principal, rawUserId) {
      const userId = rawUserId.toLowerCase();
      authorize(principal, 'users:delete', [userId], 'User');
      const row = await repo.latestOf(db, userId);
      if (!row) throw notFound('Closure');
      return toClosure(row);
    },

    run,

    startBackgroundWork() {
      stopResume = deps.schedule('closures: resumed', deps.resumeIntervalMs ?? 1_000, async () => {
        const ids = await repo.findUnclaimed(db, 10);
        for (const id of ids) runInBackground(id);
        return ids.length;
      });
    },

    async stopBackgroundWork() {
      stopResume?.();
      await Promise.all([...running]);
    },
  };
}
