// Endpoint signing secrets: made in the Standard Webhooks format (whsec_ + base64 of random bytes),
// stored sealed under KEY_ENCRYPTION_SECRET when it is set (the auth component's sealer), else as
// they are; the delivery worker must recover them to sign, so they are encrypted, not hashed.
import { randomBytes } from 'node:crypto';
import type { KeySealer } from '../auth/index.js';

const SECRET_PREFIX = 'whsec_';
/** 32 bytes: the spec asks for 24 to 64. */
const SECRET_BYTES = 32;
/** A stored value that is sealed; a clear one starts with whsec_. */
const SEALED_PREFIX = 'sealed:';

export const newWebhookSecret = (): string => SECRET_PREFIX + randomBytes(SECRET_BYTES).toString('base64');

export interface SecretStore {
  /** The value to store for `secret`. */
  seal(secret: string): Promise<string>;
  /** The secret a stored value holds; throws when it is sealed and the sealer cannot open it. */
  open(stored: string): Promise<string>;
}

export function createSecretStore(sealer: KeySealer | undefined): SecretStore {
  return {
    async seal(secret) {
      return sealer ? SEALED_PREFIX + (await sealer.seal(Buffer.from(secret, 'utf8'))) : secret;
    },
    async open(stored) {
      if (!stored.startsWith(SEALED_PREFIX)) return stored;
      if (!sealer) throw new Error('webhooks: the endpoint secret is sealed: set KEY_ENCRYPTION_SECRET');
      return Buffer.from(await sealer.open(stored.slice(SEALED_PREFIX.length))).toString('utf8');
    },
  };
}
