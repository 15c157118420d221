// The audit log's use cases: appending an event in the caller's transaction (AuditTrail), the admin's
// filtered, newest-first read, and retention. Nothing here changes or deletes a recorded event; the
// table refuses it too (migrations/0016_audit.sql), except the retention delete of expired ones.
import { authorize, type Principal } from '../access/index.js';
import type { Database, Executor } from '../../platform/db/index.js';
import { keysetPage, positionAfter } from '../../platform/cursor.js';
import { newId } from '../../platform/ids.js';
import { MAX_USER_AGENT_LENGTH, type RequestOrigin } from '../../platform/request-origin.js';
import type { AuditAction, AuditEntry, AuditTrail } from './audit.js';
import * as repo from './audit.repo.js';

export interface AuditEvent {
  readonly id: string;
  readonly action: string;
  readonly actorId: string | null;
  readonly targetId: string | null;
  readonly ip: string | null;
  readonly userAgent: string | null;
  readonly requestId: string | null;
  readonly details: Readonly<Record<string, string | number | boolean | null>>;
  readonly createdAt: string;
}

export interface AuditFilters {
  readonly action?: AuditAction;
  readonly actorId?: string;
  readonly targetId?: string;
  readonly limit: number;
  readonly cursor?: string;
}

export interface AuditService extends AuditTrail {
  /** Events matching every filter given, newest first (admin; never through an API key). */
  list(principal: Principal, filters: AuditFilters): Promise<{ data: AuditEvent[]; meta: { nextCursor: string | null } }>;
  /** Deletes the events older than the retention, in batches; resolves to how many went. */
  purgeExpired(): Promise<number>;
}

interface AuditServiceDeps {
  readonly database: Database;
  /** AUDIT_RETENTION_DAYS: events are kept at least this long, then removed by purgeExpired. */
  readonly retentionDays: number;
  /** Events deleted per retention transaction. */
  readonly purgeBatchSize?: number;
}

const DEFAULT_PURGE_BATCH_SIZE = 1_000;
/** The contract's request ids are at most 128 characters; a transport that passes more is cut, not refused. */
const MAX_REQUEST_ID_LENGTH = 128;
/**
 * A detail named like a credential is refused, loudly, rather than stored: the table is append-only
 * for the whole retention, so a leaked secret could not be taken back.
 */
const SECRET_LIKE_KEY = /password|secret|hash|token/i;

function toAuditEvent(row: repo.AuditEventRow): AuditEvent {
  return {
    id: row.id,
    action: row.action,
    actorId: row.actor_id,
    targetId: row.target_id,
    ip: row.ip,
    userAgent: row.user_agent,
    requestId: row.request_id,
    details: row.details,
    createdAt: row.created_at.toISOString(),
  };
}

export function createAuditService(deps: AuditServiceDeps): AuditService {
  const { database, retentionDays } = deps;
  const batchSize = deps.purgeBatchSize ?? DEFAULT_PURGE_BATCH_SIZE;

  return {
    async record(executor: Executor, entry: AuditEntry, origin?: RequestOrigin) {
      const details = entry.details ?? {};
      const secretLike = Object.keys(details).filter((key) => SECRET_LIKE_KEY.test(key));
      if (secretLike.length > 0) {
        throw new TypeError(`audit: ${entry.action} details may not hold ${secretLike.join(', ')} (secrets are never recorded)`);
      }
      await repo.insertEvent(executor, {
        id: newId(),
        action: entry.action,
        actor_id: entry.actorId?.toLowerCase() ?? null,
        target_id: entry.targetId?.toLowerCase() ?? null,
        ip: origin?.ip ?? null,
        user_agent: origin?.userAgent?.slice(0, MAX_USER_AGENT_LENGTH) ?? null,
        request_id: origin?.requestId?.slice(0, MAX_REQUEST_ID_LENGTH) ?? null,
        details,
      });
    },

    async list(principal, filters) {
      authorize(principal, 'audit:read');
      const before = positionAfter(filters.cursor);
      const rows = await repo.listEvents(
        database.db,
        {
          ...(filters.action !== undefined ? { action: filters.action } : {}),
          ...(filters.actorId !== undefined ? { actorId: filters.actorId.toLowerCase() } : {}),
          ...(filters.targetId !== undefined ? { targetId: filters.targetId.toLowerCase() } : {}),
        },
        { limit: filters.limit + 1, before },
      );
      return keysetPage(rows, filters.limit, toAuditEvent);
    },

    async purgeExpired() {
      let total = 0;
      for (;;) {
        const deleted = await repo.deleteExpiredBatch(database, retentionDays, batchSize);
        total += deleted;
        if (deleted < batchSize) return total;
      }
    },
  };
}
