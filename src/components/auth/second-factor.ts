// The contract between login and a second factor (the mfa component implements it): a user with a
// confirmed second factor gets a challenge instead of tokens, and the login completes only when the
// challenge is redeemed with a right code.
import type { RequestOrigin } from '../../platform/request-origin.js';

export interface MfaChallenge {
  readonly mfaRequired: true;
  /** Opaque, single use, valid for `expiresIn` seconds. */
  readonly mfaToken: string;
  readonly expiresIn: number;
}

export interface SecondFactor {
  /**
   * After the password was checked: a challenge when the user has a confirmed second factor, else
   * undefined (the login goes on). `tokenVersion` is the version the password was checked under.
   */
  challenge(user: { readonly id: string; readonly tokenVersion: number }, origin?: RequestOrigin): Promise<MfaChallenge | undefined>;
  /**
   * Spends a right code on the challenge: the user and the token version it was issued under. A wrong
   * code, a replayed TOTP code, a used or expired challenge: a DomainError (401 INVALID_MFA_CODE or
   * UNAUTHENTICATED), and the fifth wrong code spends the challenge.
   */
  redeem(mfaToken: string, code: string, origin?: RequestOrigin): Promise<{ readonly userId: string; readonly tokenVersion: number }>;
}
