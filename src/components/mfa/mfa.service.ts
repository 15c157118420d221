// MFA use cases: TOTP enrolment (RFC 6238: SHA-1, 6 digits, 30 s steps, one step either side
// accepted), recovery codes, disabling, and the second step of a login (the SecondFactor contract
// with the auth component).
//
// What stops guessing: a challenge takes at most five wrong codes; across challenges (logging in
// again gives a new one, and a right password resets the login throttle) a user takes at most
// MAX_WRONG_CODES_PER_USER wrong codes per window, counted before the code is checked. What stops
// replay: a TOTP code is accepted only for a time step newer than the user's last accepted one, by
// compare-and-set; a recovery code and a challenge are spent by the one statement that marks them.
//
// At rest: with KEY_ENCRYPTION_SECRET, secrets are stored sealed (the auth component's sealBytes: a
// 'bastion-sealed:' marker, then a JWE); without it, as the base32 text, which never begins with the
// marker (no lower case, no colon). Secrets stored before the secret was set are sealed at the next
// start (sealStoredSecrets), each by a compare-and-set on the clear value read.
import { randomBytes } from 'node:crypto';
import { sha256 } from '../../platform/digest.js';
import { generateSecret, generateURI, verify as verifyTotp } from 'otplib';
import QRCode from 'qrcode';
import { requireSession, type Principal } from '../access/index.js';
import type { AuditEntry, AuditTrail } from '../audit/index.js';
import {
  isSealedBytes,
  openBytes,
  sealBytes,
  SEALED_BYTES_PREFIX,
  SealedKeyError,
  type KeySealer,
  type MfaChallenge,
  type SecondFactor,
} from '../auth/index.js';
import type { UsersService } from '../users/index.js';
import type { Database, Executor, Tx } from '../../platform/db/index.js';
import { unauthenticated, type DomainError } from '../../platform/errors.js';
import type { Logger } from '../../platform/logger.js';
import { newId } from '../../platform/ids.js';
import type { RequestOrigin } from '../../platform/request-origin.js';
import { invalidMfaCode, invalidMfaToken, mfaAlreadyEnabled, noEnrolment, secretUnavailable, tooManyWrongCodes, wrongPassword } from './mfa.errors.js';
import * as repo from './mfa.repo.js';

/** The issuer authenticator apps show next to the account. */
export const TOTP_ISSUER = 'Bastion';
const TOTP_PERIOD_SECONDS = 30;
/** 160 bits, the secret length RFC 4226 recommends. */
const TOTP_SECRET_BYTES = 20;
const CHALLENGE_TTL_SECONDS = 300;
const MAX_ATTEMPTS_PER_CHALLENGE = 5;
export const MAX_WRONG_CODES_PER_USER = 10;
export const WRONG_CODE_WINDOW_SECONDS = 900;
const RECOVERY_CODE_COUNT = 10;
/** 16 characters of 32 (80 bits): high entropy, so an unsalted SHA-256 is enough to store them. */
const RECOVERY_CODE_LENGTH = 16;
/** Crockford's base32 (no i, l, o, u): 32 symbols, so `byte & 31` is uniform. */
const RECOVERY_SYMBOLS = '0123456789abcdefghjkmnpqrstvwxyz';
/** Secrets read per query when sealing those stored in the clear. */
const SEAL_PAGE_SIZE = 500;

export interface TotpEnrolment {
  /** Base32, for typing into an authenticator app. */
  readonly secret: string;
  readonly otpauthUrl: string;
  /** The otpauth URL as a QR code (SVG). */
  readonly qrSvg: string;
}

export type DisableProof = { readonly code: string } | { readonly password: string };

export interface MfaService extends SecondFactor {
  /** A new secret for the caller, pending until confirmed; replaces a pending one. MFA_ALREADY_ENABLED when active. */
  enrolTotp(principal: Principal, origin?: RequestOrigin): Promise<TotpEnrolment>;
  /** Activates the pending secret with a current code; the recovery codes are returned here only. */
  confirmTotp(principal: Principal, code: string, origin?: RequestOrigin): Promise<{ recoveryCodes: string[] }>;
  /** Removes the caller's TOTP (active or pending) and recovery codes, proven by a current code or the password. */
  disableTotp(principal: Principal, proof: DisableProof, origin?: RequestOrigin): Promise<void>;
  /** In a user's deletion: their secret, recovery codes and challenges go with them. */
  forgetUser(tx: Tx, userId: string): Promise<void>;
  /**
   * At start. First opens one sealed secret, so that a wrong KEY_ENCRYPTION_SECRET (SealedKeyError:
   * does not open) or a missing one (SealedKeyError: set it) stops the start before anything is
   * written, as the signing keys do. Then, with the secret set, seals every secret stored in the
   * clear (from before it was set), each by a compare-and-set on the clear value read, so that
   * instances starting together seal each once and a request's write meanwhile is never undone.
   * Returns how many this call sealed.
   */
  sealStoredSecrets(logger: Logger): Promise<number>;
}

/**
 * Points where a use case waits, so a test can hold one request between checking a code and spending
 * it while another checks the same code. Undefined in production; not reachable from any transport.
 */
export interface MfaPauses {
  /** After a TOTP code was found right (confirm, disable, verify), before anything is written on its strength. */
  afterCodeCheck?(userId: string): Promise<void>;
  /** At start, after a secret stored in the clear was read and sealed, before the sealed one is written. */
  beforeSealWrite?(userId: string): Promise<void>;
}

export interface MfaDeps {
  readonly database: Database;
  readonly users: UsersService;
  /** Seals TOTP secrets at rest (KEY_ENCRYPTION_SECRET); none: stored as they are. */
  readonly sealer?: KeySealer | undefined;
  readonly audit?: AuditTrail | undefined;
  /** Where a secret this instance cannot open is reported; none: not reported. */
  readonly logger?: Logger | undefined;
  /** Milliseconds since the epoch: the one clock for time steps, challenge expiry and the wrong-code window. */
  readonly now?: () => number;
  readonly pauses?: MfaPauses | undefined;
}


function newRecoveryCode(): string {
  const bytes = randomBytes(RECOVERY_CODE_LENGTH);
  const symbols = Array.from(bytes, (byte) => RECOVERY_SYMBOLS[byte & 31]).join('');
  return symbols.match(/.{4}/g)?.join('-') ?? symbols;
}

/** A recovery code as typed: case, spaces and dashes do not matter, and o, i, l read as 0, 1, 1 (Crockford). */
const normalizedRecoveryCode = (code: string): string =>
  code.replace(/[\s-]/g, '').toLowerCase().replace(/o/g, '0').replace(/[il]/g, '1');
const isRecoveryCodeShape = (normalized: string): boolean =>
  normalized.length === RECOVERY_CODE_LENGTH && [...normalized].every((symbol) => RECOVERY_SYMBOLS.includes(symbol));

/** The time step a code is right for (the current one or one either side), or undefined. */
async function stepOfCode(secret: string, code: string, nowMs: number): Promise<number | undefined> {
  if (!/^\d{6}$/.test(code)) return undefined;
  const result = await verifyTotp({
    secret,
    token: code,
    epoch: Math.floor(nowMs / 1000),
    period: TOTP_PERIOD_SECONDS,
    // In seconds, either side: exactly the previous and the next step.
    epochTolerance: TOTP_PERIOD_SECONDS,
  });
  return result.valid && 'timeStep' in result ? result.timeStep : undefined;
}

/** Thrown inside a transaction to roll it back: the code turned out not to be usable. */
class CodeRejected extends Error {}

export function createMfa(deps: MfaDeps): MfaService {
  const { database, users, sealer, audit, pauses } = deps;
  const db = database.db;
  const now = deps.now ?? Date.now;

  const record = async (executor: Executor, entry: AuditEntry, origin: RequestOrigin | undefined) => {
    if (audit) await audit.record(executor, entry, origin);
  };
  const storedSecret = async (secret: string): Promise<Buffer> => {
    const plain = Buffer.from(secret, 'utf8');
    return sealer ? sealBytes(sealer, plain) : plain;
  };
  const secretOf = async (stored: Uint8Array): Promise<string> => {
    try {
      return (await openBytes(sealer, stored)).toString('utf8');
    } catch (error) {
      if (!(error instanceof SealedKeyError)) throw error;
      deps.logger?.error(
        { err: error },
        'mfa: a TOTP secret is sealed under a KEY_ENCRYPTION_SECRET this instance does not have; restart it with the one the other instances use',
      );
      throw secretUnavailable();
    }
  };
  /** The secret, for a check of a reserved attempt: if this instance cannot open it, nothing was tried, so the attempt goes back. */
  const secretFor = async (stored: Uint8Array, userId: string, reservation: { readonly window_ends_at: Date } | undefined): Promise<string> => {
    try {
      return await secretOf(stored);
    } catch (error) {
      if (reservation) await repo.refundAttempt(db, userId, reservation.window_ends_at);
      throw error;
    }
  };

  /**
   * Counts an attempt against the user's wrong-code budget, or fails RATE_LIMITED; `inactive` when
   * the user has no active TOTP any more (disabled meanwhile).
   */
  const reserve = async (userId: string, at: number, inactive: () => DomainError): Promise<repo.Reservation> => {
    const reservation = await repo.reserveAttempt(db, {
      userId,
      now: new Date(at),
      windowEndsAt: new Date(at + WRONG_CODE_WINDOW_SECONDS * 1000),
      maxFailures: MAX_WRONG_CODES_PER_USER,
    });
    if (reservation) return reservation;
    const windowEnd = await repo.findBudgetWindowEnd(db, userId);
    if (!windowEnd) throw inactive();
    throw tooManyWrongCodes(Math.max(1, Math.ceil((windowEnd.getTime() - at) / 1000)));
  };

  return {
    async enrolTotp(principal) {
      requireSession(principal);
      const state = await users.getState(principal.userId);
      if (!state) throw unauthenticated();
      const secret = generateSecret({ length: TOTP_SECRET_BYTES });
      const pending = await repo.upsertPendingEnrolment(db, {
        userId: state.id,
        enrolmentId: newId(),
        secret: await storedSecret(secret),
      });
      if (!pending) throw mfaAlreadyEnabled();
      const otpauthUrl = generateURI({ issuer: TOTP_ISSUER, label: state.email, secret, period: TOTP_PERIOD_SECONDS });
      return { secret, otpauthUrl, qrSvg: await QRCode.toString(otpauthUrl, { type: 'svg', errorCorrectionLevel: 'M' }) };
    },

    async confirmTotp(principal, code, origin) {
      requireSession(principal);
      const userId = principal.userId;
      const enrolment = await repo.findEnrolment(db, userId);
      if (!enrolment) throw noEnrolment();
      if (enrolment.confirmed) throw mfaAlreadyEnabled();
      const at = now();
      const step = await stepOfCode(await secretOf(enrolment.secret), code, at);
      if (step === undefined) throw invalidMfaCode();
      await pauses?.afterCodeCheck?.(userId);
      const recoveryCodes = Array.from({ length: RECOVERY_CODE_COUNT }, newRecoveryCode);
      const confirmed = await database.transaction(async (tx) => {
        if (!(await repo.confirmEnrolment(tx, { userId, enrolmentId: enrolment.enrolment_id, step, now: new Date(at) }))) return false;
        await repo.replaceRecoveryCodes(
          tx,
          userId,
          recoveryCodes.map((recoveryCode) => ({ id: newId(), hash: sha256(normalizedRecoveryCode(recoveryCode)) })),
        );
        await record(tx, { action: 'mfa.enabled', actorId: userId, targetId: userId, details: { method: 'totp' } }, origin);
        return true;
      });
      if (!confirmed) {
        // Confirmed by a racing request, or replaced by a new enrolment the code was not for.
        if ((await repo.findEnrolment(db, userId))?.confirmed) throw mfaAlreadyEnabled();
        throw invalidMfaCode();
      }
      return { recoveryCodes };
    },

    async disableTotp(principal, proof, origin) {
      requireSession(principal);
      const userId = principal.userId;
      const enrolment = await repo.findEnrolment(db, userId);
      if (!enrolment) throw noEnrolment();
      const at = now();
      // An active second factor is worth guessing for: wrong proofs count against the same budget.
      const reservation = enrolment.confirmed ? await reserve(userId, at, noEnrolment) : undefined;
      let step: number | undefined;
      if ('code' in proof) {
        step = await stepOfCode(await secretFor(enrolment.secret, userId, reservation), proof.code, at);
        if (step === undefined || (enrolment.last_step !== null && step <= enrolment.last_step)) throw invalidMfaCode();
        await pauses?.afterCodeCheck?.(userId);
      } else {
        const state = await users.getState(userId);
        if (!state) throw unauthenticated();
        const checked = await users.verifyCredentials(state.email, proof.password).catch(async (error: unknown) => {
          // Busy or failed: no wrong password to count.
          if (reservation) await repo.refundAttempt(db, userId, reservation.window_ends_at);
          throw error;
        });
        if (!checked || checked.id !== userId) throw wrongPassword();
      }
      const deleted = await database.transaction(async (tx) => {
        const removed = await repo.deleteEnrolment(tx, { userId, enrolmentId: enrolment.enrolment_id, ...(step === undefined ? {} : { step }) });
        if (!removed) return false;
        await repo.deleteRecoveryCodes(tx, userId);
        await repo.deleteChallengesOfUser(tx, userId);
        if (enrolment.confirmed) {
          await record(tx, { action: 'mfa.disabled', actorId: userId, targetId: userId, details: { method: step === undefined ? 'password' : 'code' } }, origin);
        }
        return true;
      });
      // Changed meanwhile: the same code used by a racing request, or a new enrolment.
      if (!deleted) throw step === undefined ? noEnrolment() : invalidMfaCode();
    },

    async forgetUser(tx, userId) {
      await repo.deleteEnrolment(tx, { userId });
      await repo.deleteRecoveryCodes(tx, userId);
      await repo.deleteChallengesOfUser(tx, userId);
    },

    async sealStoredSecrets(logger) {
      const sealedPrefix = Buffer.from(SEALED_BYTES_PREFIX, 'latin1');
      // Sealing clear secrets under a wrong secret would leave some that open under neither.
      const sample = await repo.findSealedSecret(db, sealedPrefix);
      if (sample) await openBytes(sealer, sample);
      if (!sealer) return 0;
      let sealed = 0;
      let afterUserId: string | undefined;
      for (;;) {
        const page = await repo.listClearSecrets(db, { sealedPrefix, afterUserId, limit: SEAL_PAGE_SIZE });
        for (const row of page) {
          const clear = Buffer.from(row.secret);
          if (isSealedBytes(clear)) continue;
          const sealedSecret = await sealBytes(sealer, clear);
          await pauses?.beforeSealWrite?.(row.user_id);
          if (await repo.replaceClearSecret(db, { userId: row.user_id, clear, sealed: sealedSecret })) sealed += 1;
        }
        if (page.length < SEAL_PAGE_SIZE) break;
        afterUserId = page[page.length - 1]?.user_id;
      }
      if (sealed > 0) logger.info({ secrets: sealed }, 'mfa: sealed TOTP secrets stored in the clear');
      return sealed;
    },

    async challenge(user): Promise<MfaChallenge | undefined> {
      const mfaToken = randomBytes(32).toString('base64url');
      const at = now();
      const created = await repo.insertChallenge(db, {
        id: newId(),
        userId: user.id,
        tokenHash: sha256(mfaToken),
        tokenVersion: user.tokenVersion,
        now: new Date(at),
        expiresAt: new Date(at + CHALLENGE_TTL_SECONDS * 1000),
      });
      return created ? { mfaRequired: true, mfaToken, expiresIn: CHALLENGE_TTL_SECONDS } : undefined;
    },

    async redeem(mfaToken, code, origin) {
      const at = now();
      const atDate = new Date(at);
      const challenge = await repo.findLiveChallenge(db, sha256(mfaToken), atDate, MAX_ATTEMPTS_PER_CHALLENGE);
      if (!challenge) throw invalidMfaToken();
      const userId = challenge.user_id;
      // MFA was disabled since the challenge: the challenge is void.
      const reservation = await reserve(userId, at, invalidMfaToken);

      const recoveryCode = normalizedRecoveryCode(code);
      const step = await stepOfCode(await secretFor(reservation.secret, userId, reservation), code, at);
      const usable = step !== undefined || isRecoveryCodeShape(recoveryCode);
      if (usable) {
        if (step !== undefined) await pauses?.afterCodeCheck?.(userId);
        try {
          await database.transaction(async (tx) => {
            // The user's row first, then codes, then challenges: the order disabling takes them in.
            if (step !== undefined) {
              if (!(await repo.acceptStep(tx, { userId, step, windowEndsAt: reservation.window_ends_at }))) throw new CodeRejected();
            } else {
              await repo.refundAttempt(tx, userId, reservation.window_ends_at);
              if (!(await repo.spendRecoveryCode(tx, userId, sha256(recoveryCode), atDate))) throw new CodeRejected();
            }
            if (!(await repo.spendChallenge(tx, challenge.id, atDate, MAX_ATTEMPTS_PER_CHALLENGE))) throw invalidMfaToken();
            if (step === undefined) {
              await record(tx, { action: 'mfa.recovery_code_used', actorId: userId, targetId: userId }, origin);
            }
          });
          return { userId, tokenVersion: challenge.token_version };
        } catch (error) {
          if (!(error instanceof CodeRejected)) throw error;
        }
      }
      // Wrong, replayed or used: the reservation stays counted, and the challenge loses an attempt.
      await repo.countWrongCode(db, challenge.id, atDate, MAX_ATTEMPTS_PER_CHALLENGE);
      throw invalidMfaCode();
    },
  };
}
