// Access-token signing keys of the configured algorithm (ACCESS_TOKEN_ALG: Ed25519, P-256 or RSA
// 2048), kept in the database so every instance signs and verifies with the same set. The newest
// unretired key of that algorithm signs; `keys rotate` adds a new one and retires the others, which
// keep verifying until their tokens have expired. A start with another algorithm than the stored keys
// do the same, once, whichever instance gets there first. Instances reload the set periodically and
// when they meet an unknown `kid` (at most once a second, so made-up kids cannot flood the database,
// and never later than that for a real new key). With KEY_ENCRYPTION_SECRET, private keys are stored
// sealed (key-sealing.ts), and keys stored before the secret was set are sealed in place at start.
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { exportJWK, generateKeyPair, importJWK, type JWK, type CryptoKey as JoseKey } from 'jose';
import type { Database } from '../../platform/db/index.js';
import type { Logger } from '../../platform/logger.js';
import * as repo from './auth.repo.js';
import { isSealedJwk, openJwk, sealJwk, type KeySealer } from './key-sealing.js';
import { DEFAULT_SIGNING_ALGORITHM, isSigningAlgorithm, type SigningAlgorithm } from './signing-algorithms.js';

export { SIGNING_ALGORITHMS, isSigningAlgorithm, type SigningAlgorithm } from './signing-algorithms.js';

const KEY_BOOTSTRAP_LOCK = 0x6b65_7973; // "keys"
const UNKNOWN_KID_RELOAD_INTERVAL_MS = 1_000;

/** The JWK key type of each algorithm, and the members of that type that are public. */
const KEY_TYPES: Record<SigningAlgorithm, { kty: string; crv?: string; members: readonly ('crv' | 'x' | 'y' | 'n' | 'e')[] }> = {
  EdDSA: { kty: 'OKP', crv: 'Ed25519', members: ['crv', 'x'] },
  ES256: { kty: 'EC', crv: 'P-256', members: ['crv', 'x', 'y'] },
  RS256: { kty: 'RSA', members: ['n', 'e'] },
};

export interface PublicJwk {
  kty: string;
  kid: string;
  alg: SigningAlgorithm;
  use: 'sig';
  crv?: string;
  x?: string;
  y?: string;
  n?: string;
  e?: string;
}

/** A key that verifies tokens, and the one algorithm it verifies them with. */
export interface VerificationKey {
  readonly kid: string;
  readonly algorithm: SigningAlgorithm;
  readonly publicKey: JoseKey | Uint8Array;
  readonly publicJwk: PublicJwk;
}

export interface SigningKey {
  readonly kid: string;
  readonly algorithm: SigningAlgorithm;
  readonly privateKey: JoseKey | Uint8Array;
}

export interface SigningKeys {
  signingKey(): SigningKey;
  verificationKey(kid: string): Promise<VerificationKey | undefined>;
  jwks(): { keys: PublicJwk[] };
  reload(): Promise<void>;
  stop(): void;
}

const GENERATE_OPTIONS: Record<SigningAlgorithm, { crv?: string; modulusLength?: number }> = {
  EdDSA: { crv: 'Ed25519' },
  ES256: {},
  RS256: { modulusLength: 2048 },
};

async function generateKey(algorithm: SigningAlgorithm, sealer: KeySealer | undefined) {
  const { publicKey, privateKey } = await generateKeyPair(algorithm, { ...GENERATE_OPTIONS[algorithm], extractable: true });
  const kid = randomUUID();
  const publicJwk = toPublicJwk(kid, algorithm, await exportJWK(publicKey));
  const privateJwk = { ...(await exportJWK(privateKey)), kid, alg: algorithm };
  const stored = sealer ? await sealJwk(sealer, privateJwk) : privateJwk;
  return { kid, algorithm, public_jwk: { ...publicJwk }, private_jwk: stored };
}

/**
 * Adds a new signing key of `algorithm` (default EdDSA) and retires every other key (CLI `keys
 * rotate`, and a start with another ACCESS_TOKEN_ALG). Returns the new kid.
 */
export async function rotateSigningKey(
  database: Database,
  options: { algorithm?: SigningAlgorithm; sealer?: KeySealer | undefined } = {},
): Promise<string> {
  const key = await generateKey(options.algorithm ?? DEFAULT_SIGNING_ALGORITHM, options.sealer);
  await database.transaction(async (tx) => {
    await repo.insertSigningKey(tx, key);
    await repo.retireSigningKeysExcept(tx, key.kid);
  });
  return key.kid;
}

export async function loadSigningKeys(options: {
  database: Database;
  logger: Logger;
  /** What new keys are and which key signs (ACCESS_TOKEN_ALG); default EdDSA. */
  algorithm?: SigningAlgorithm;
  /** How long a retired key keeps verifying: the access-token lifetime plus the reload interval. */
  retiredKeyGraceSeconds: number;
  reloadIntervalMs?: number;
  /** Seals private keys at rest (KEY_ENCRYPTION_SECRET); without it they are stored as JWKs. */
  sealer?: KeySealer;
}): Promise<SigningKeys> {
  const { database, logger, sealer } = options;
  const algorithm = options.algorithm ?? DEFAULT_SIGNING_ALGORITHM;
  let signing: SigningKey | undefined;
  let verifying = new Map<string, VerificationKey>();
  /** The kid this instance last warned about signing with after another instance switched algorithm. */
  let warnedSwitchedFrom: string | undefined;
  let lastReloadStartMs = Number.NEGATIVE_INFINITY;
  /** The reload in flight; callers arriving meanwhile join it. */
  let running: Promise<void> | undefined;
  /** The next reload, not started yet: it starts after every caller that joined it had arrived. */
  let queued: Promise<void> | undefined;

  const listKeys = () => repo.listVerifyingKeys(database.db, options.retiredKeyGraceSeconds);
  const newestSigner = (rows: readonly repo.SigningKeyRow[]) =>
    rows.find((row) => row.retired_at === null && row.algorithm === algorithm);

  const reload = async (): Promise<void> => {
    let rows = await listKeys();
    if (signing === undefined && !newestSigner(rows)) {
      // First start, or a start with another algorithm: one key of this algorithm, once, even with
      // several instances starting together; the others retire and verify until their tokens expire.
      await database.withAdvisoryLock(KEY_BOOTSTRAP_LOCK, async () => {
        if (newestSigner(await listKeys())) return;
        const kid = await rotateSigningKey(database, { algorithm, sealer });
        logger.info({ kid, algorithm }, 'auth: generated an access-token signing key of ACCESS_TOKEN_ALG; older keys verify until their tokens expire');
      });
      rows = await listKeys();
    }
    const next = new Map<string, VerificationKey>();
    for (const row of rows) {
      if (!isSigningAlgorithm(row.algorithm)) {
        logger.warn({ kid: row.kid, algorithm: row.algorithm }, 'auth: ignoring a signing key of an unsupported algorithm');
        continue;
      }
      // Only the public members are imported: whatever else a stored row holds is never used.
      const publicJwk = toPublicJwk(row.kid, row.algorithm, row.public_jwk);
      next.set(row.kid, { kid: row.kid, algorithm: row.algorithm, publicKey: await importJWK({ ...publicJwk }, row.algorithm), publicJwk });
    }
    const newest = newestSigner(rows);
    if (newest) {
      if (signing?.kid !== newest.kid) {
        const privateJwk = (await openJwk(sealer, newest.private_jwk)) as JWK;
        signing = { kid: newest.kid, algorithm, privateKey: await importJWK(privateJwk, algorithm) };
      }
    } else if (signing) {
      // Another instance started with another ACCESS_TOKEN_ALG and retired this algorithm's keys.
      // Making a key of ours again would retire theirs in turn; so this instance keeps signing with
      // the key it has (and keeps verifying it) until it restarts with the new setting.
      const kept = verifying.get(signing.kid);
      if (kept && !next.has(kept.kid)) next.set(kept.kid, kept);
      if (warnedSwitchedFrom !== signing.kid) {
        warnedSwitchedFrom = signing.kid;
        logger.warn(
          { kid: signing.kid, algorithm },
          'auth: another instance switched ACCESS_TOKEN_ALG and retired the keys of this one; signing with the current key until restarted with the new setting',
        );
      }
    } else {
      throw new Error('no active signing key after bootstrap');
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
      if (known) return known;
      // Perhaps a key rotated in on another instance: the reload in flight may already bring it.
      if (running) {
        await running;
        const loaded = verifying.get(kid);
        if (loaded) return loaded;
      }
      // Its key was committed before the token was signed, so a reload starting now finds it. Made-up
      // kids wait for the same shared reload (at most one a second), then find nothing.
      await reloadStartingFromNow();
      return verifying.get(kid);
    },
    jwks: () => ({ keys: [...verifying.values()].map((key) => key.publicJwk) }),
    reload,
    stop: () => clearInterval(timer),
  };
}

/** Seals every private key still stored in the clear (kept from before KEY_ENCRYPTION_SECRET was set). */
async function sealStoredKeys(database: Database, sealer: KeySealer, logger: Logger): Promise<void> {
  const stored = await repo.listPrivateKeys(database.db);
  // A wrong secret must stop the start before it seals anything: keys sealed under it would open
  // under neither secret.
  const sealedOne = stored.find((row) => isSealedJwk(row.private_jwk));
  if (sealedOne) await openJwk(sealer, sealedOne.private_jwk);
  const inTheClear = stored.filter((row) => !isSealedJwk(row.private_jwk));
  for (const row of inTheClear) await repo.replacePrivateKey(database.db, row.kid, await sealJwk(sealer, row.private_jwk));
  if (inTheClear.length > 0) logger.info({ keys: inTheClear.length }, 'auth: sealed private signing keys stored in the clear');
}

/**
 * Only the public members of a stored JWK, those of the key type its algorithm uses, so a private
 * component can never be published (nor a key of another type slip in under this algorithm).
 */
function toPublicJwk(kid: string, algorithm: SigningAlgorithm, jwk: Record<string, unknown>): PublicJwk {
  const { kty, crv, members } = KEY_TYPES[algorithm];
  if (jwk['kty'] !== kty || (crv !== undefined && jwk['crv'] !== crv)) {
    throw new Error(`signing key ${kid}: an ${algorithm} key must be ${crv === undefined ? kty : `${kty} ${crv}`}`);
  }
  const publicJwk: PublicJwk = { kty, kid, alg: algorithm, use: 'sig' };
  for (const member of members) {
    const value = jwk[member];
    if (typeof value !== 'string' || value === '') throw new Error(`signing key ${kid}: its public JWK lacks "${member}"`);
    publicJwk[member] = value;
  }
  return publicJwk;
}
