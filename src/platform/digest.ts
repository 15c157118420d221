// SHA-256 of a string, in one call: Node's one-shot `crypto.hash` (20.12+) builds no Hash object (a
// native handle per call) on the paths that hash per request (API keys, idempotency fingerprints).
import * as crypto from 'node:crypto';

/** The SHA-256 digest of `value` (UTF-8). Node before 20.12 has no one-shot hash: a Hash object then. */
export const sha256: (value: string) => Buffer =
  typeof crypto.hash === 'function'
    ? (value) => crypto.hash('sha256', value, 'buffer')
    : (value) => crypto.createHash('sha256').update(value).digest();
