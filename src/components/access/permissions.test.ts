import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { DomainError } from '../../platform/errors.js';
import { authorize, can, type Principal } from './permissions.js';

const user: Principal = { userId: 'u1', role: 'user' };
const admin: Principal = { userId: 'a1', role: 'admin' };

const codeOf = (run: () => void): string | undefined => {
  try {
    run();
    return undefined;
  } catch (error) {
    assert.ok(error instanceof DomainError);
    return error.code;
  }
};

describe('access', () => {
  it('when a user acts on their own resource, then it is allowed', () => {
    assert.equal(codeOf(() => authorize(user, 'users:read', ['u1'])), undefined);
    assert.equal(codeOf(() => authorize(user, 'users:update', ['u1'])), undefined);
  });

  it("when a user acts on someone else's resource, then it is NOT_FOUND (existence hidden)", () => {
    assert.equal(codeOf(() => authorize(user, 'users:read', ['u2'])), 'NOT_FOUND');
  });

  it('when the role never allows the operation, then it is FORBIDDEN whatever the resource', () => {
    for (const permission of ['users:list', 'users:create', 'users:delete', 'users:assign-role', 'accounts:deposit'] as const) {
      assert.equal(codeOf(() => authorize(user, permission, ['u1'])), 'FORBIDDEN', permission);
    }
  });

  it('when an admin acts on any resource, then it is allowed', () => {
    assert.ok(can(admin, 'users:delete', ['u2']));
    assert.ok(can(admin, 'users:read', ['anyone']));
    assert.equal(codeOf(() => authorize(admin, 'users:assign-role')), undefined);
  });

  it('when either party owns a resource with several owners, then the owner may see it', () => {
    assert.ok(can(user, 'transfers:read', ['u9', 'u1']));
    assert.ok(!can(user, 'transfers:read', ['u9', null]));
  });
});
