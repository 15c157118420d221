// Encryption at rest of the auth component's private material (access-token signing keys, the
// refresh-successor secret) under KEY_ENCRYPTION_SECRET, as a compact JWE (jose: alg "dir",
// enc "A256GCM"). The content-encryption key is derived from the secret with HKDF-SHA256, so any
// secret of 32+ characters works and the JWE's authentication tag detects a wrong secret or a
// tampered value. Without the secret, values are stored as they are and the service says so once.
import { hkdfSync } from 'node:crypto';
import { compactDecrypt, CompactEncrypt } from 'jose';

export interface KeySealer {
  seal(plaintext: Uint8Array): Promise<string>;
  /** Throws SealedKeyError when the secret does not open the value. */
  open(sealed: string): Promise<Uint8Array>;
}

export class SealedKeyError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SealedKeyError';
  }
}

const HKDF_SALT = 'bastion';
const HKDF_INFO = 'bastion auth private material v1';

export function createKeySealer(secret: string): KeySealer {
  const key = new Uint8Array(hkdfSync('sha256', secret, HKDF_SALT, HKDF_INFO, 32));
  return {
    seal: (plaintext) => new CompactEncrypt(plaintext).setProtectedHeader({ alg: 'dir', enc: 'A256GCM' }).encrypt(key),
    async open(sealed) {
      try {
        return (await compactDecrypt(sealed, key, { keyManagementAlgorithms: ['dir'], contentEncryptionAlgorithms: ['A256GCM'] }))
          .plaintext;
      } catch {
        throw new SealedKeyError('KEY_ENCRYPTION_SECRET does not open the stored private keys (wrong secret, or a damaged value)');
      }
    },
  };
}

/** The sealer for KEY_ENCRYPTION_SECRET, or none when it is unset (values stay in the clear). */
export const keySealerFor = (secret: string | undefined): KeySealer | undefined =>
  secret === undefined ? undefined : createKeySealer(secret);

/** A stored value is sealed: only a sealer opens it. */
function sealerToOpen(sealer: KeySealer | undefined): KeySealer {
  if (!sealer) throw new SealedKeyError('the stored private keys are encrypted: set KEY_ENCRYPTION_SECRET');
  return sealer;
}

/** A sealed value as stored in a bytea column: a marker that 32 random bytes never begin with. */
export const SEALED_BYTES_PREFIX = 'bastion-sealed:';

export const isSealedBytes = (stored: Uint8Array): boolean =>
  Buffer.from(stored).subarray(0, SEALED_BYTES_PREFIX.length).toString('latin1') === SEALED_BYTES_PREFIX;

export async function sealBytes(sealer: KeySealer, plaintext: Uint8Array): Promise<Buffer> {
  return Buffer.from(SEALED_BYTES_PREFIX + (await sealer.seal(plaintext)), 'latin1');
}

export async function openBytes(sealer: KeySealer | undefined, stored: Uint8Array): Promise<Buffer> {
  if (!isSealedBytes(stored)) return Buffer.from(stored);
  return Buffer.from(await sealerToOpen(sealer).open(Buffer.from(stored).subarray(SEALED_BYTES_PREFIX.length).toString('latin1')));
}

/** A sealed private JWK as stored in a jsonb column. */
type SealedJwk = { readonly sealed: string };

export const isSealedJwk = (stored: Record<string, unknown>): stored is Record<string, unknown> & SealedJwk =>
  typeof stored['sealed'] === 'string';

export async function sealJwk(sealer: KeySealer, jwk: Record<string, unknown>): Promise<SealedJwk> {
  return { sealed: await sealer.seal(Buffer.from(JSON.stringify(jwk), 'utf8')) };
}

export async function openJwk(sealer: KeySealer | undefined, stored: Record<string, unknown>): Promise<Record<string, unknown>> {
  if (!isSealedJwk(stored)) return stored;
  return JSON.parse(Buffer.from(await sealerToOpen(sealer).open(stored.sealed)).toString('utf8')) as Record<string, unknown>;
}
