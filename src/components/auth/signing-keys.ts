// Access-token signing keys: Ed25519, generated on first start and kept in the database so every
// instance signs and verifies with the same set. The newest unretired key signs; `keys rotate`
// adds a new one and retires the others, which keep verifying until their tokens have expired.
// Instances reload the set periodically and when they meet an unknown `kid` (at most once a second,
// so made-up kids cannot flood the database, and never later than that for a real new key). With
// KEY_ENCRYPTION_SECRET, private keys are stored sealed (key-sealing.ts), and keys stored before the
// secret was set are sealed in place at start.
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { exportJWK, generateKeyPair, importJWK, type JWK, type CryptoKey as JoseKey } from 'jose';
import type { Database } from '../../platform/db/index.js';
import type { Logger } from '../../platform/logger.js';
import * as repo from './auth.repo.js';
import { isSealedJwk, openJwk, sealJwk, type KeySealer } from './key-sealing.js';

export const SIGNING_ALGORITHM = 'EdDSA';
const KEY_BOOTSTRAP_LOCK = 0x6b65_7973; // "keys"
const UNKNOWN_KID_RELOAD_INTERVAL_MS = 1_000;

interface PublicJwk {
  kty: string;
  crv: string;
  x: string;
  kid: string;
  alg: string;
  use: string;
}

interface LoadedKey {
  readonly kid: string;
  readonly publicKey: JoseKey | Uint8Array;
  readonly publicJwk: PublicJwk;
}

export interface SigningKeys {
  signingKey(): { kid: string; privateKey: JoseKey | Uint8Array };
  verificationKey(kid: string): Promise<JoseKey | Uint8Array | undefined>;
  jwks(): { keys: PublicJwk[] };
  reload(): Promise<void>;
  stop(): void;
}

async function generateKey(sealer: KeySealer | undefined) {
  const { publicKey, privateKey } = await generateKeyPair(SIGNING_ALGORITHM, { crv: 'Ed25519', extractable: true });
  const kid = randomUUID();
  const publicJwk = { ...(await exportJWK(publicKey)), kid, alg: SIGNING_ALGORITHM, use: 'sig' };
  const privateJwk = { ...(await exportJWK(privateKey)), kid, alg: SIGNING_ALGORITHM };
  const stored = sealer ? await sealJwk(sealer, privateJwk) : privateJwk;
  return { kid, algorithm: SIGNING_ALGORITHM, public_jwk: publicJwk, private_jwk: stored };
}

/** Adds a new signing key and retires the others (CLI `keys rotate`). Returns the new kid. */
export async function rotateSigningKey(database: Database, sealer?: KeySealer): Promise<string> {
  const key = await generateKey(sealer);
  await database.transaction(async (tx) => {
    await repo.insertSigningKey(tx, key);
    await repo.retireSigningKeysExcept(tx, key.kid);
  });
  return key.kid;
}

export async function loadSigningKeys(options: {
  database: Database;
  logger: Logger;
  /** How long a retired key keeps verifying: the access-token lifetime plus the reload interval. */
  retiredKeyGraceSeconds: number;
  reloadIntervalMs?: number;
  /** Seals private keys at rest (KEY_ENCRYPTION_SECRET); without it they are stored as JWKs. */
  sealer?: KeySealer;
}): Promise<SigningKeys> {
  const { database, logger, sealer } = options;
  let signing: { kid: string; privateKey: JoseKey | Uint8Array } | undefined;
  let verifying = new Map<string, LoadedKey>();
  let lastReloadStartMs = Number.NEGATIVE_INFINITY;
  /** The reload in flight; callers arriving meanwhile join it. */
  let running: Promise<void> | undefined;
  /** The next reload, not started yet: it starts after every caller that joined it had arrived. */
  let queued: Promise<void> | undefined;

  const reload = async (): Promise<void> => {
    let rows = await repo.listVerifyingKeys(database.db, options.retiredKeyGraceSeconds);
    if (!rows.some((row) => row.retired_at === null)) {
      // First start (or every key retired by hand): create one, once, even with several instances.
      await database.withAdvisoryLock(KEY_BOOTSTRAP_LOCK, async () => {
        const again = await repo.listVerifyingKeys(database.db, options.retiredKeyGraceSeconds);
        if (!again.some((row) => row.retired_at === null)) {
          const key = await generateKey(sealer);
          await repo.insertSigningKey(database.db, key);
          logger.info({ kid: key.kid }, 'auth: generated the first access-token signing key');
        }
      });
      rows = await repo.listVerifyingKeys(database.db, options.retiredKeyGraceSeconds);
    }
    const next = new Map<string, LoadedKey>();
    for (const row of rows) {
      next.set(row.kid, {
        kid: row.kid,
        publicKey: await importJWK(row.public_jwk as JWK, SIGNING_ALGORITHM),
        publicJwk: toPublicJwk(row.kid, row.public_jwk),
      });
    }
    const newest = rows.find((row) => row.retired_at === null);
    if (!newest) throw new Error('no active signing key after bootstrap');
    if (signing?.kid !== newest.kid) {
      signing = { kid: newest.kid, privateKey: await importJWK((await openJwk(sealer, newest.private_jwk)) as JWK, SIGNING_ALGORITHM) };
    }
    verifying = next;
  };

  const reloadNow = (): Promise<void> => {
    running ??= (async () => {
      lastReloadStartMs = Date.now();
      try {
        await reload();
      } finally {
        running = undefined;
      }
    })();
    return running;
  };

  /**
   * Resolves once a reload that started after this call has finished: it sees every key committed
   * before the call, so a token signed by such a key verifies after it. Reloads start at most once
   * per UNKNOWN_KID_RELOAD_INTERVAL_MS and one at a time; every caller waiting meanwhile shares one.
   */
  const reloadStartingFromNow = (): Promise<void> => {
    if (!running && Date.now() - lastReloadStartMs >= UNKNOWN_KID_RELOAD_INTERVAL_MS) return reloadNow();
    queued ??= (async () => {
      // Always waits at least once here, so `queued` is set before it is cleared below.
      do {
        if (running) await running.catch(() => undefined);
        else await sleep(lastReloadStartMs + UNKNOWN_KID_RELOAD_INTERVAL_MS - Date.now());
      } while (running || Date.now() - lastReloadStartMs < UNKNOWN_KID_RELOAD_INTERVAL_MS);
      queued = undefined;
      await reloadNow();
    })();
    return queued;
  };

  if (sealer) await sealStoredKeys(database, sealer, logger);
  await reload();
  const timer = setInterval(() => {
    reloadNow().catch((error: unknown) => logger.warn({ err: error }, 'auth: reloading signing keys failed'));
  }, options.reloadIntervalMs ?? 60_000);
  timer.unref();

  return {
    signingKey() {
      if (!signing) throw new Error('signing keys not loaded');
      return signing;
    },
    async verificationKey(kid) {
      const known = verifying.get(kid);
      if (known) return known.publicKey;
      // Perhaps a key rotated in on another instance: the reload in flight may already bring it.
      if (running) {
        await running;
        const loaded = verifying.get(kid);
        if (loaded) return loaded.publicKey;
      }
      // Its key was committed before the token was signed, so a reload starting now finds it. Made-up
      // kids wait for the same shared reload (at most one a second), then find nothing.
      await reloadStartingFromNow();
      return verifying.get(kid)?.publicKey;
    },
    jwks: () => ({ keys: [...verifying.values()].map((key) => key.publicJwk) }),
    reload,
    stop: () => clearInterval(timer),
  };
}

/** Seals every private key still stored in the clear (kept from before KEY_ENCRYPTION_SECRET was set). */
async function sealStoredKeys(database: Database, sealer: KeySealer, logger: Logger): Promise<void> {
  const inTheClear = (await repo.listPrivateKeys(database.db)).filter((row) => !isSealedJwk(row.private_jwk));
  for (const row of inTheClear) await repo.replacePrivateKey(database.db, row.kid, await sealJwk(sealer, row.private_jwk));
  if (inTheClear.length > 0) logger.info({ keys: inTheClear.length }, 'auth: sealed private signing keys stored in the clear');
}

/** Only the public members of a stored JWK, so a private component can never be published. */
function toPublicJwk(kid: string, jwk: Record<string, unknown>): PublicJwk {
  const text = (name: string) => (typeof jwk[name] === 'string' ? (jwk[name] as string) : '');
  return { kty: text('kty'), crv: text('crv'), x: text('x'), kid, alg: SIGNING_ALGORITHM, use: 'sig' };
}
