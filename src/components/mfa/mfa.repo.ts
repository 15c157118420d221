// All SQL of the mfa component: TOTP enrolments, recovery codes and login challenges. Every decision
// that must hold under concurrency (a step used once, a challenge spent once, a recovery code used
// once, the per-user count of wrong codes) is made by one statement. Times come from the service's
// clock (a parameter), so that one clock decides steps, expiries and windows.
import { sql, type Generated } from 'kysely';
import type { Executor } from '../../platform/db/index.js';

interface MfaTotpTable {
  user_id: string;
  enrolment_id: string;
  secret: Uint8Array;
  created_at: Generated<Date>;
  confirmed_at: Date | null;
  last_step: number | null;
  failures: Generated<number>;
  failures_window_ends_at: Date | null;
}

interface MfaRecoveryCodesTable {
  id: string;
  user_id: string;
  code_hash: Uint8Array;
  created_at: Generated<Date>;
  used_at: Date | null;
}

interface MfaChallengesTable {
  id: string;
  user_id: string;
  token_hash: Uint8Array;
  token_version: number;
  created_at: Generated<Date>;
  expires_at: Date;
  attempts: Generated<number>;
  spent_at: Date | null;
}

declare module '../../platform/db/tables.js' {
  interface Tables {
    mfa_totp: MfaTotpTable;
    mfa_recovery_codes: MfaRecoveryCodesTable;
    mfa_challenges: MfaChallengesTable;
  }
}

// ---- enrolment ----

export interface EnrolmentRow {
  enrolment_id: string;
  secret: Uint8Array;
  confirmed: boolean;
  last_step: number | null;
}

export async function findEnrolment(executor: Executor, userId: string): Promise<EnrolmentRow | undefined> {
  const result = await sql<EnrolmentRow>`
    select enrolment_id, secret, confirmed_at is not null as confirmed, last_step
    from mfa_totp where user_id = ${userId}::uuid`.execute(executor);
  return result.rows[0];
}

/**
 * Stores a new pending secret, replacing a pending one; false (nothing written) when the user's
 * enrolment is confirmed: the conflict's update applies only to an unconfirmed row.
 */
export async function upsertPendingEnrolment(
  executor: Executor,
  enrolment: { userId: string; enrolmentId: string; secret: Uint8Array },
): Promise<boolean> {
  const result = await sql<{ user_id: string }>`
    insert into mfa_totp (user_id, enrolment_id, secret)
    values (${enrolment.userId}::uuid, ${enrolment.enrolmentId}::uuid, ${enrolment.secret})
    on conflict (user_id) do update
      set enrolment_id = excluded.enrolment_id, secret = excluded.secret, created_at = now(), last_step = null
      where mfa_totp.confirmed_at is null
    returning user_id`.execute(executor);
  return result.rows.length > 0;
}

/**
 * Confirms the pending enrolment the code was checked against (compare-and-set on its id), taking the
 * code's step as used; false when it was confirmed or replaced meanwhile.
 */
export async function confirmEnrolment(
  executor: Executor,
  input: { userId: string; enrolmentId: string; step: number; now: Date },
): Promise<boolean> {
  const result = await sql<{ user_id: string }>`
    update mfa_totp
    set confirmed_at = ${input.now}::timestamptz, last_step = ${input.step}::integer, failures = 0, failures_window_ends_at = null
    where user_id = ${input.userId}::uuid and enrolment_id = ${input.enrolmentId}::uuid and confirmed_at is null
    returning user_id`.execute(executor);
  return result.rows.length > 0;
}

/**
 * Deletes the user's enrolment (pending or confirmed); when named, only that one, and only if `step`
 * is newer than the last accepted one when given (a code proves possession once). False when it
 * changed meanwhile or the step is old.
 */
export async function deleteEnrolment(
  executor: Executor,
  input: { userId: string; enrolmentId?: string; step?: number },
): Promise<boolean> {
  const named = input.enrolmentId === undefined ? sql`true` : sql`enrolment_id = ${input.enrolmentId}::uuid`;
  const stepIsNew =
    input.step === undefined ? sql`true` : sql`(last_step is null or last_step < ${input.step}::integer)`;
  const result = await sql<{ user_id: string }>`
    delete from mfa_totp
    where user_id = ${input.userId}::uuid and ${named} and ${stepIsNew}
    returning user_id`.execute(executor);
  return result.rows.length > 0;
}

// ---- sealing at rest ----

export interface StoredSecretRow {
  user_id: string;
  secret: Uint8Array;
}

/**
 * Up to `limit` secrets (pending or confirmed) that do not begin with `sealedPrefix`, i.e. are stored
 * in the clear, in user order after `afterUserId` (a page of a walk over the table).
 */
export async function listClearSecrets(
  executor: Executor,
  input: { sealedPrefix: Uint8Array; afterUserId: string | undefined; limit: number },
): Promise<StoredSecretRow[]> {
  const after = input.afterUserId === undefined ? sql`true` : sql`user_id > ${input.afterUserId}::uuid`;
  const result = await sql<StoredSecretRow>`
    select user_id, secret from mfa_totp
    where ${after} and substring(secret from 1 for ${input.sealedPrefix.length}::integer) <> ${input.sealedPrefix}
    order by user_id
    limit ${input.limit}::integer`.execute(executor);
  return result.rows;
}

/** One secret that begins with `sealedPrefix` (stored sealed), if any. */
export async function findSealedSecret(executor: Executor, sealedPrefix: Uint8Array): Promise<Uint8Array | undefined> {
  const result = await sql<{ secret: Uint8Array }>`
    select secret from mfa_totp
    where substring(secret from 1 for ${sealedPrefix.length}::integer) = ${sealedPrefix}
    limit 1`.execute(executor);
  return result.rows[0]?.secret;
}

/**
 * Replaces the user's secret by its sealed form if it still is exactly the clear value read
 * (compare-and-set): false when it changed meanwhile (sealed by another instance starting at the
 * same time, or replaced by a new enrolment). Only the secret is written, so the step, the failures
 * and the confirmation that requests write meanwhile are kept.
 */
export async function replaceClearSecret(executor: Executor, input: { userId: string; clear: Uint8Array; sealed: Uint8Array }): Promise<boolean> {
  const result = await sql<{ user_id: string }>`
    update mfa_totp set secret = ${input.sealed}
    where user_id = ${input.userId}::uuid and secret = ${input.clear}
    returning user_id`.execute(executor);
  return result.rows.length > 0;
}

// ---- recovery codes ----

export async function replaceRecoveryCodes(executor: Executor, userId: string, codes: readonly { id: string; hash: Uint8Array }[]): Promise<void> {
  await executor.deleteFrom('mfa_recovery_codes').where('user_id', '=', userId).execute();
  await executor
    .insertInto('mfa_recovery_codes')
    .values(codes.map((code) => ({ id: code.id, user_id: userId, code_hash: code.hash })))
    .execute();
}

/** Spends an unused recovery code of the user: true for the one statement that marked it used. */
export async function spendRecoveryCode(executor: Executor, userId: string, codeHash: Uint8Array, now: Date): Promise<boolean> {
  const result = await sql<{ id: string }>`
    update mfa_recovery_codes set used_at = ${now}::timestamptz
    where user_id = ${userId}::uuid and code_hash = ${codeHash} and used_at is null
    returning id`.execute(executor);
  return result.rows.length > 0;
}

export async function deleteRecoveryCodes(executor: Executor, userId: string): Promise<void> {
  await executor.deleteFrom('mfa_recovery_codes').where('user_id', '=', userId).execute();
}

// ---- wrong-code budget (per user) ----

export interface Reservation {
  secret: Uint8Array;
  /** The window the reservation was counted in: only a refund in the same window gives it back. */
  window_ends_at: Date;
}

/**
 * Counts one attempt against the user's budget of wrong codes before the code is checked, so that
 * racing attempts cannot all pass a count none has raised yet (a right code gives it back). Starts a
 * new window when the last one ended. Undefined when the budget is used up (or MFA is not active).
 */
export async function reserveAttempt(
  executor: Executor,
  input: { userId: string; now: Date; windowEndsAt: Date; maxFailures: number },
): Promise<Reservation | undefined> {
  const windowOver = sql`(failures_window_ends_at is null or failures_window_ends_at <= ${input.now}::timestamptz)`;
  const result = await sql<Reservation>`
    update mfa_totp
    set failures = case when ${windowOver} then 1 else failures + 1 end,
        failures_window_ends_at = case when ${windowOver} then ${input.windowEndsAt}::timestamptz else failures_window_ends_at end
    where user_id = ${input.userId}::uuid and confirmed_at is not null
      and (${windowOver} or failures < ${input.maxFailures}::integer)
    returning secret, failures_window_ends_at as window_ends_at`.execute(executor);
  return result.rows[0];
}

/** Why a reservation was refused: the end of the window that is full, or undefined if MFA is not active. */
export async function findBudgetWindowEnd(executor: Executor, userId: string): Promise<Date | undefined> {
  const row = await executor
    .selectFrom('mfa_totp')
    .select('failures_window_ends_at')
    .where('user_id', '=', userId)
    .where('confirmed_at', 'is not', null)
    .executeTakeFirst();
  return row?.failures_window_ends_at ?? undefined;
}

/** Gives back a reservation made in the window that is still current. */
export async function refundAttempt(executor: Executor, userId: string, windowEndsAt: Date): Promise<void> {
  await sql`
    update mfa_totp set failures = greatest(failures - 1, 0)
    where user_id = ${userId}::uuid and failures_window_ends_at = ${windowEndsAt}::timestamptz`.execute(executor);
}

/**
 * Takes `step` as the user's newest accepted step if it is newer than the last one (compare-and-set:
 * of two requests with the same code, one succeeds), and gives back the attempt's reservation.
 */
export async function acceptStep(executor: Executor, input: { userId: string; step: number; windowEndsAt: Date }): Promise<boolean> {
  const result = await sql<{ user_id: string }>`
    update mfa_totp
    set last_step = ${input.step}::integer,
        failures = case when failures_window_ends_at = ${input.windowEndsAt}::timestamptz then greatest(failures - 1, 0) else failures end
    where user_id = ${input.userId}::uuid and confirmed_at is not null
      and (last_step is null or last_step < ${input.step}::integer)
    returning user_id`.execute(executor);
  return result.rows.length > 0;
}

// ---- challenges ----

/**
 * A challenge for a user whose TOTP is confirmed, in one statement (undefined: no confirmed second
 * factor, nothing written). The user's expired challenges go in the same statement, so that the
 * table holds at most the challenges of the last few minutes.
 */
export async function insertChallenge(
  executor: Executor,
  challenge: { id: string; userId: string; tokenHash: Uint8Array; tokenVersion: number; now: Date; expiresAt: Date },
): Promise<boolean> {
  const result = await sql<{ id: string }>`
    with expired as (
      delete from mfa_challenges where user_id = ${challenge.userId}::uuid and expires_at <= ${challenge.now}::timestamptz
    )
    insert into mfa_challenges (id, user_id, token_hash, token_version, expires_at)
    select ${challenge.id}::uuid, user_id, ${challenge.tokenHash}, ${challenge.tokenVersion}::integer, ${challenge.expiresAt}::timestamptz
    from mfa_totp where user_id = ${challenge.userId}::uuid and confirmed_at is not null
    returning id`.execute(executor);
  return result.rows.length > 0;
}

export interface ChallengeRow {
  id: string;
  user_id: string;
  token_version: number;
}

/** The challenge of a token while it can still be redeemed: not spent, not expired, attempts left. */
export async function findLiveChallenge(executor: Executor, tokenHash: Uint8Array, now: Date, maxAttempts: number): Promise<ChallengeRow | undefined> {
  const result = await sql<ChallengeRow>`
    select id, user_id, token_version from mfa_challenges
    where token_hash = ${tokenHash} and spent_at is null and expires_at > ${now}::timestamptz
      and attempts < ${maxAttempts}::integer`.execute(executor);
  return result.rows[0];
}

/** Spends a live challenge on a right code: true for the one statement that spent it. */
export async function spendChallenge(executor: Executor, id: string, now: Date, maxAttempts: number): Promise<boolean> {
  const result = await sql<{ id: string }>`
    update mfa_challenges set spent_at = ${now}::timestamptz
    where id = ${id}::uuid and spent_at is null and expires_at > ${now}::timestamptz and attempts < ${maxAttempts}::integer
    returning id`.execute(executor);
  return result.rows.length > 0;
}

/** Counts a wrong code on the challenge; the one that reaches `maxAttempts` spends it, in the same statement. */
export async function countWrongCode(executor: Executor, id: string, now: Date, maxAttempts: number): Promise<void> {
  await sql`
    update mfa_challenges
    set attempts = attempts + 1,
        spent_at = case when attempts + 1 >= ${maxAttempts}::integer then ${now}::timestamptz else spent_at end
    where id = ${id}::uuid and spent_at is null`.execute(executor);
}

export async function deleteChallengesOfUser(executor: Executor, userId: string): Promise<void> {
  await executor.deleteFrom('mfa_challenges').where('user_id', '=', userId).execute();
}
