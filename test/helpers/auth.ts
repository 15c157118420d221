// Shortcuts for suites that need logged-in users.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import type { Client } from './client.js';
import { ADMIN_EMAIL, ADMIN_PASSWORD } from './server.js';

export interface Session {
  readonly accessToken: string;
  readonly refreshToken: string;
  readonly user: { id: string; email: string; name: string; role: 'user' | 'admin'; createdAt: string; updatedAt: string };
}

interface LoginBody {
  data: Session;
}

export const uniqueEmail = (prefix = 'user'): string => `${prefix}-${randomBytes(5).toString('hex')}@example.com`;

export async function login(client: Client, email: string, password: string): Promise<Session> {
  const response = await client.post<LoginBody>('/api/v1/auth/login', { email, password });
  assert.equal(response.status, 200, `login failed: ${response.text}`);
  return response.body.data;
}

export const loginAdmin = (client: Client): Promise<Session> => login(client, ADMIN_EMAIL, ADMIN_PASSWORD);

/** Registers a fresh user and logs in. */
export async function registerAndLogin(
  client: Client,
  input: { email?: string; name?: string; password?: string } = {},
): Promise<Session & { password: string }> {
  const email = input.email ?? uniqueEmail();
  const password = input.password ?? `pw-${randomBytes(6).toString('hex')}`;
  const registered = await client.post('/api/v1/auth/register', { email, name: input.name ?? 'Test User', password });
  assert.equal(registered.status, 201, `register failed: ${registered.text}`);
  return { ...(await login(client, email, password)), password };
}
