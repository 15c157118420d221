// The user resource as the contract shows it.
import assert from 'node:assert/strict';
import { ISO_UTC, UUID } from './errors.js';

export interface User {
  id: string;
  email: string;
  name: string;
  role: 'user' | 'admin';
  emailVerified: boolean;
  createdAt: string;
  updatedAt: string;
}

const USER_KEYS = ['createdAt', 'email', 'emailVerified', 'id', 'name', 'role', 'updatedAt'];

/** A user body exactly: its keys, a UUID id, a known role, ISO UTC times. */
export function expectUser(value: unknown): User {
  assert.ok(value && typeof value === 'object');
  assert.deepEqual(Object.keys(value).sort(), USER_KEYS);
  const user = value as User;
  assert.match(user.id, UUID);
  assert.ok(user.role === 'user' || user.role === 'admin');
  assert.equal(typeof user.emailVerified, 'boolean');
  assert.match(user.createdAt, ISO_UTC);
  assert.match(user.updatedAt, ISO_UTC);
  return user;
}
