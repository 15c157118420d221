// The JWS algorithms access tokens may be signed with (ACCESS_TOKEN_ALG), and the JWK key type each
// uses. Kept free of imports so the configuration can validate the name without loading the crypto.
export const SIGNING_ALGORITHMS = ['EdDSA', 'ES256', 'RS256'] as const;

export type SigningAlgorithm = (typeof SIGNING_ALGORITHMS)[number];

export const DEFAULT_SIGNING_ALGORITHM: SigningAlgorithm = 'EdDSA';

export const isSigningAlgorithm = (value: unknown): value is SigningAlgorithm =>
  typeof value === 'string' && (SIGNING_ALGORITHMS as readonly string[]).includes(value);
