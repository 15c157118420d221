// Password hashing: argon2id with OWASP's parameters (19 MiB, t=2, p=1) in PHC format. bcrypt hashes
// (the seed's format) still verify and are flagged for upgrade, as are argon2 hashes made with older
// parameters. Hashing runs in `concurrency` worker threads at a lowered OS priority (piscina with
// niceIncrement): a login flood queues there (up to `maxQueue`, then 503) and only gets the CPU the
// event loop leaves, instead of taking cores from every other request.
import { parseOptions, type Algorithm } from '@node-rs/argon2';
import { Piscina } from 'piscina';
import { DomainError } from '../../platform/errors.js';
import type { PasswordJob } from './password-worker.js';

const ARGON2ID = 2 as Algorithm; // Algorithm.Argon2id (a const enum, not importable under isolatedModules)

interface Argon2Parameters {
  readonly memoryCostKib: number;
  readonly timeCost: number;
  readonly parallelism: number;
}

const OWASP_ARGON2ID: Argon2Parameters = { memoryCostKib: 19_456, timeCost: 2, parallelism: 1 };

interface PasswordCheck {
  readonly ok: boolean;
  /** The stored hash is bcrypt or argon2 with other parameters: store a fresh hash. */
  readonly needsRehash: boolean;
}

export interface PasswordHasher {
  hash(password: string): Promise<string>;
  verify(storedHash: string, password: string): Promise<PasswordCheck>;
  /** Burns the time of one verification, so an unknown email answers as slowly as a wrong password. */
  verifyAgainstDummy(password: string): Promise<void>;
  close(): Promise<void>;
}

const WORKER_NICE_INCREMENT = 10;

export async function createPasswordHasher(options: {
  concurrency: number;
  parameters?: Argon2Parameters;
  maxQueue?: number;
}): Promise<PasswordHasher> {
  const parameters = options.parameters ?? OWASP_ARGON2ID;
  const argonOptions = {
    algorithm: ARGON2ID,
    memoryCost: parameters.memoryCostKib,
    timeCost: parameters.timeCost,
    parallelism: parameters.parallelism,
  };
  const pool = new Piscina({
    filename: new URL(
      import.meta.url.endsWith('.ts') ? './password-worker-tsx.mjs' : './password-worker.js',
      import.meta.url,
    ).href,
    minThreads: options.concurrency,
    maxThreads: options.concurrency,
    maxQueue: options.maxQueue ?? 512,
    niceIncrement: WORKER_NICE_INCREMENT,
    idleTimeout: Number.POSITIVE_INFINITY,
  });
  const run = async <T extends string | boolean>(job: PasswordJob): Promise<T> => {
    try {
      return (await pool.run(job)) as T;
    } catch (error) {
      if (error instanceof Error && /queue is full/i.test(error.message)) {
        throw new DomainError('SERVICE_BUSY', 'The service is busy, retry shortly', { retryAfterSeconds: 1 });
      }
      throw error;
    }
  };
  const hash = (password: string) => run<string>({ op: 'argon2-hash', password, options: argonOptions });
  const dummyHash = await hash('dummy password to equalise timing');

  const isCurrentArgon = (storedHash: string): boolean => {
    try {
      const parsed = parseOptions(storedHash);
      return (
        parsed.algorithm === ARGON2ID &&
        parsed.memoryCost === parameters.memoryCostKib &&
        parsed.timeCost === parameters.timeCost &&
        parsed.parallelism === parameters.parallelism
      );
    } catch {
      return false;
    }
  };

  return {
    hash,
    async verify(storedHash, password) {
      if (/^\$2[abxy]\$/.test(storedHash)) {
        const ok = await run<boolean>({ op: 'bcrypt-verify', hash: storedHash, password });
        return { ok, needsRehash: ok };
      }
      if (storedHash.startsWith('$argon2')) {
        const ok = await run<boolean>({ op: 'argon2-verify', hash: storedHash, password });
        return { ok, needsRehash: ok && !isCurrentArgon(storedHash) };
      }
      return { ok: false, needsRehash: false };
    },
    async verifyAgainstDummy(password) {
      await run<boolean>({ op: 'argon2-verify', hash: dummyHash, password });
    },
    // Graceful: hashes already queued (requests still being answered at shutdown) finish first.
    close: () => pool.close(),
  };
}
