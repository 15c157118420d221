// Password hashing: argon2id with OWASP's parameters (19 MiB, t=2, p=1) in PHC format. bcrypt hashes
// (the seed's format) still verify and are flagged for upgrade, as are argon2 hashes made with older
// parameters. Hashing runs on libuv's pool, at most `concurrency` at a time, so a login flood
// queues here instead of taking every core from the event loop.
import { hash as argon2Hash, parseOptions, verify as argon2Verify, type Algorithm } from '@node-rs/argon2';
import { verify as bcryptVerify } from '@node-rs/bcrypt';
import { Semaphore } from '../../platform/semaphore.js';

const ARGON2ID = 2 as Algorithm; // Algorithm.Argon2id (a const enum, not importable under isolatedModules)

export interface Argon2Parameters {
  readonly memoryCostKib: number;
  readonly timeCost: number;
  readonly parallelism: number;
}

export const OWASP_ARGON2ID: Argon2Parameters = { memoryCostKib: 19_456, timeCost: 2, parallelism: 1 };

export interface PasswordCheck {
  readonly ok: boolean;
  /** The stored hash is bcrypt or argon2 with other parameters: store a fresh hash. */
  readonly needsRehash: boolean;
}

export interface PasswordHasher {
  hash(password: string): Promise<string>;
  verify(storedHash: string, password: string): Promise<PasswordCheck>;
  /** Burns the time of one verification, so an unknown email answers as slowly as a wrong password. */
  verifyAgainstDummy(password: string): Promise<void>;
}

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
  const gate = new Semaphore(options.concurrency, options.maxQueue ?? 512);
  const hash = (password: string) => gate.run(() => argon2Hash(password, argonOptions));
  const dummyHash = await argon2Hash('dummy password to equalise timing', argonOptions);

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
        const ok = await gate.run(() => bcryptVerify(password, storedHash));
        return { ok, needsRehash: ok };
      }
      if (storedHash.startsWith('$argon2')) {
        const ok = await gate.run(() => argon2Verify(storedHash, password));
        return { ok, needsRehash: ok && !isCurrentArgon(storedHash) };
      }
      return { ok: false, needsRehash: false };
    },
    async verifyAgainstDummy(password) {
      await gate.run(() => argon2Verify(dummyHash, password));
    },
  };
}
