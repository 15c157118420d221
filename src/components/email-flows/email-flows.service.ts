// Email verification and password reset: single-use tokens mailed as links. A token is 32 random
// bytes; only its SHA-256 is stored, and it is spent by the statement that checks it (see the repo).
// Mail goes out in the background, after the work that produces the response: a slow or failing mail
// server never delays or fails a request, and close() waits for what is still being sent.
import { randomBytes } from 'node:crypto';
import { sha256 } from '../../platform/digest.js';
import { requireSession, type Principal } from '../access/index.js';
import type { AlsoInTransaction, User, UsersService } from '../users/index.js';
import type { Database, Executor } from '../../platform/db/index.js';
import { canonicalEmail } from '../../platform/email.js';
import { unauthenticated } from '../../platform/errors.js';
import { newId } from '../../platform/ids.js';
import type { Logger } from '../../platform/logger.js';
import type { Mailer, MailMessage } from '../../platform/mailer.js';
import type { RequestOrigin } from '../../platform/request-origin.js';
import { invalidToken } from './email-flows.errors.js';
import * as repo from './email-flows.repo.js';

export const VERIFICATION_TTL_SECONDS = 24 * 3_600;
export const RESET_TTL_SECONDS = 3_600;
/** Reset mails one user can be sent an hour: enough for a lost mail or two, not a flood from a stranger. */
export const RESET_MAILS_PER_HOUR = 5;
/** Expired tokens are kept this long (a late click still reads as expired, not as unknown, in the logs), then deleted. */
const EXPIRED_TOKEN_GRACE_SECONDS = 86_400;
const PURGE_BATCH = 10_000;

export interface EmailFlowsService {
  /** Mails a verification link to a user just registered; in the background, never throws. */
  sendVerification(user: Pick<User, 'id' | 'email' | 'name'>): void;
  /** Spends a verification token: the user, now verified; INVALID_TOKEN if unknown, spent or expired. */
  verifyEmail(token: string, origin?: RequestOrigin): Promise<User>;
  /** Mails the caller a new verification link, unless already verified. API keys are refused. */
  resendVerification(principal: Principal): Promise<void>;
  /** Mails a reset link if the email belongs to a live user; the same work and answer either way. */
  requestPasswordReset(email: string): Promise<void>;
  /**
   * Spends a reset token: the password replaced, every refresh and access token of the user revoked,
   * and every other reset link of theirs spent, in one transaction. INVALID_TOKEN otherwise.
   */
  confirmPasswordReset(token: string, newPassword: string, origin?: RequestOrigin): Promise<void>;
  /** Deletes tokens long expired; resolves to how many. */
  purgeExpiredTokens(): Promise<number>;
  /** Resolves when the background work started so far (token writes, mails) has finished. */
  idle(): Promise<void>;
}

interface EmailFlowsDeps {
  readonly database: Database;
  readonly users: UsersService;
  readonly mailer: Mailer;
  /** PUBLIC_URL: the links point here. */
  readonly publicUrl: string;
  readonly logger: Logger;
  /** Ends every session (refresh-token family) of the user, in the reset's transaction. */
  readonly revokeSessionsOfUser: (executor: Executor, userId: string) => Promise<void>;
}

const newToken = (): { token: string; hash: Buffer } => {
  const token = randomBytes(32).toString('base64url');
  return { token, hash: sha256(token) };
};

export function createEmailFlowsService(deps: EmailFlowsDeps): EmailFlowsService {
  const { database, users, mailer, logger } = deps;
  const db = database.db;
  const pending = new Set<Promise<void>>();

  const inBackground = (label: string, work: () => Promise<void>) => {
    const running = new Promise<void>((resolve) => setImmediate(resolve))
      .then(work)
      .catch((error: unknown) => logger.warn({ err: error }, `email-flows: ${label} failed`));
    pending.add(running);
    void running.finally(() => pending.delete(running));
  };

  const link = (path: string, token: string) => `${deps.publicUrl}${path}?token=${encodeURIComponent(token)}`;

  const verificationMail = (to: string, name: string, token: string): MailMessage => {
    const url = link('/verify-email', token);
    return {
      to,
      subject: 'Confirm your email address',
      link: url,
      text: `Hello ${name},\n\nConfirm that ${to} is your email address by opening this link within 24 hours:\n\n${url}\n\nIf you did not create an account, ignore this message.\n`,
    };
  };

  const resetMail = (to: string, token: string): MailMessage => {
    const url = link('/reset-password', token);
    return {
      to,
      subject: 'Reset your password',
      link: url,
      text: `Someone asked to reset the password of the account with this email address.\n\nTo choose a new password, open this link within 1 hour:\n\n${url}\n\nIf it was not you, ignore this message: your password stays as it is.\n`,
    };
  };

  /** Stores a verification token for the user (if still live) and mails it. */
  const issueVerification = async (userId: string, name: string): Promise<void> => {
    const { token, hash } = newToken();
    const issued = await repo.insertTokenForUser(db, {
      id: newId(),
      userId,
      purpose: 'verify',
      tokenHash: hash,
      ttlSeconds: VERIFICATION_TTL_SECONDS,
    });
    if (issued) mailer.send(verificationMail(issued.email, name, token));
  };

  return {
    sendVerification(user) {
      inBackground('verification mail', () => issueVerification(user.id, user.name));
    },

    async verifyEmail(token, origin) {
      const user = await users.confirmEmail((tx) => repo.consumeToken(tx, sha256(token), 'verify'), undefined, origin);
      if (!user) throw invalidToken();
      return user;
    },

    async resendVerification(principal) {
      requireSession(principal);
      const read = users.getState(principal.userId);
      const state = read instanceof Promise ? await read : read;
      if (!state) throw unauthenticated('The user behind this token no longer exists');
      if (state.emailVerified) return; // nothing to verify: accepted, nothing sent
      await issueVerification(state.id, state.name);
    },

    async requestPasswordReset(rawEmail) {
      // Known or not, the same steps: a token made, one insert-select run, the answer given; only a
      // known user's mail goes out, after the answer.
      const { token, hash } = newToken();
      const issued = await repo.insertTokenForEmail(db, {
        id: newId(),
        email: canonicalEmail(rawEmail),
        purpose: 'reset',
        tokenHash: hash,
        ttlSeconds: RESET_TTL_SECONDS,
        maxPerHour: RESET_MAILS_PER_HOUR,
      });
      if (issued) mailer.send(resetMail(issued.email, token));
    },

    async confirmPasswordReset(token, newPassword, origin) {
      const endEverything: AlsoInTransaction = async (tx, userId) => {
        await deps.revokeSessionsOfUser(tx, userId);
        await repo.spendTokensOfUser(tx, userId, 'reset');
      };
      const state = await users.resetPassword((tx) => repo.consumeToken(tx, sha256(token), 'reset'), newPassword, endEverything, origin);
      if (!state) throw invalidToken();
    },

    async purgeExpiredTokens() {
      let total = 0;
      for (;;) {
        const deleted = await repo.deleteExpiredTokens(db, EXPIRED_TOKEN_GRACE_SECONDS, PURGE_BATCH);
        total += deleted;
        if (deleted < PURGE_BATCH) return total;
      }
    },

    async idle() {
      while (pending.size > 0) await Promise.allSettled([...pending]);
      await mailer.idle();
    },
  };
}
