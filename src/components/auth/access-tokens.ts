// Access tokens: short-lived JWTs signed with ACCESS_TOKEN_ALG (EdDSA, ES256 or RS256), verifiable
// by anyone through the JWKS. Verifying a signature costs more than a whole bare HTTP request, so a
// token is verified once and the verified claims are remembered (keyed by the whole token, bounded,
// until it expires), whatever its algorithm. Revocation does not depend on this cache: every request
// still compares the claims with the user's current state.
import { errors as joseErrors, jwtVerify, SignJWT, type JWTHeaderParameters } from 'jose';
import { LRUCache } from 'lru-cache';
import { invalidAccessToken } from './auth.errors.js';
import { SIGNING_ALGORITHMS, type SigningKeys } from './signing-keys.js';

const ISSUER = 'bastion';

export interface AccessClaims {
  readonly userId: string;
  /** The user's token version when the token was issued. */
  readonly tokenVersion: number;
  /** The login (refresh-token family) this token belongs to. */
  readonly sessionId: string;
  readonly expiresAtMs: number;
}

export interface AccessTokens {
  issue(subject: { userId: string; tokenVersion: number; role: string; sessionId: string }): Promise<string>;
  /**
   * The verified claims, or UNAUTHENTICATED. A token verified before is answered from memory,
   * synchronously (claims returned, or thrown if it has expired since); any other is checked against
   * its signing key, and the answer is a promise.
   */
  verify(token: string): AccessClaims | Promise<AccessClaims>;
  readonly ttlSeconds: number;
}

export function createAccessTokens(options: {
  keys: SigningKeys;
  ttlSeconds: number;
  cacheEntries?: number;
}): AccessTokens {
  const { keys, ttlSeconds } = options;
  const verified = new LRUCache<string, AccessClaims>({ max: options.cacheEntries ?? 50_000 });

  /**
   * A token verifies only with its kid's key and that key's own algorithm: a header naming another
   * algorithm (alg confusion: HS256 keyed with the public key, ES256 over an RSA kid, none) is refused.
   */
  const resolveKey = async (header: JWTHeaderParameters) => {
    const key = header.kid === undefined ? undefined : await keys.verificationKey(header.kid);
    if (!key || header.alg !== key.algorithm) throw new joseErrors.JWKSNoMatchingKey();
    return key.publicKey;
  };

  /** The first sight of a token: its signature and claims checked, and remembered until it expires. */
  const verifySignature = async (token: string): Promise<AccessClaims> => {
    const now = Date.now();
    let claims: AccessClaims;
    try {
      const { payload } = await jwtVerify(token, resolveKey, { algorithms: [...SIGNING_ALGORITHMS], issuer: ISSUER });
      if (
        typeof payload.sub !== 'string' ||
        typeof payload.ver !== 'number' ||
        typeof payload.sid !== 'string' ||
        typeof payload.exp !== 'number'
      ) {
        throw invalidAccessToken();
      }
      claims = { userId: payload.sub, tokenVersion: payload.ver, sessionId: payload.sid, expiresAtMs: payload.exp * 1000 };
    } catch {
      throw invalidAccessToken();
    }
    verified.set(token, claims, { ttl: Math.max(1, claims.expiresAtMs - now) });
    return claims;
  };

  return {
    ttlSeconds,
    async issue(subject) {
      const { kid, algorithm, privateKey } = keys.signingKey();
      return new SignJWT({ ver: subject.tokenVersion, sid: subject.sessionId, role: subject.role })
        .setProtectedHeader({ alg: algorithm, kid, typ: 'JWT' })
        .setSubject(subject.userId)
        .setIssuer(ISSUER)
        .setIssuedAt()
        .setExpirationTime(`${ttlSeconds}s`)
        .sign(privateKey);
    },
    verify(token) {
      const cached = verified.get(token);
      if (cached === undefined) return verifySignature(token);
      if (cached.expiresAtMs <= Date.now()) {
        verified.delete(token);
        throw invalidAccessToken();
      }
      return cached;
    },
  };
}
