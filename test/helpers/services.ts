// Shortcuts for suites that call the services directly (no HTTP): principals of real users, fresh
// registrations, and the one way a use case fails, a DomainError with a code.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import type { Application } from '../../src/app.js';
import type { Principal } from '../../src/components/access/index.js';
import type { User } from '../../src/components/users/index.js';
import { DomainError, type ErrorCode } from '../../src/platform/errors.js';
import { uniqueEmail } from './auth.js';
import { ADMIN_EMAIL } from './server.js';

export const asPrincipal = (user: Pick<User, 'id' | 'role'>): Principal => ({ userId: user.id, role: user.role });

/** The bootstrap admin (created at start-up) as a principal. */
export async function adminPrincipal(app: Application): Promise<Principal> {
  const row = await app.database.db.selectFrom('users').select(['id', 'role']).where('email', '=', ADMIN_EMAIL).executeTakeFirstOrThrow();
  return asPrincipal(row);
}

/** Registers a fresh user through the users service. */
export async function registerUser(app: Application, prefix = 'svc'): Promise<{ user: User; password: string; principal: Principal }> {
  const password = `pw-${randomBytes(6).toString('hex')}`;
  const user = await app.users.register({ email: uniqueEmail(prefix), name: 'Service User', password });
  return { user, password, principal: asPrincipal(user) };
}

/** Awaits `operation` and asserts it fails with a DomainError of `code`; returns that error. */
export async function expectDomainError(operation: Promise<unknown>, code: ErrorCode, context = ''): Promise<DomainError> {
  try {
    await operation;
  } catch (error) {
    assert.ok(error instanceof DomainError, `${context} expected DomainError ${code}, got ${String(error)}`);
    assert.equal(error.code, code, `${context} ${error.message}`);
    return error;
  }
  return assert.fail(`${context} expected DomainError ${code}, but it succeeded`);
}
