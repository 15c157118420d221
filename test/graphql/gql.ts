// A GraphQL-over-HTTP client for the tests: a real POST /graphql, the answer parsed, and a helper
// to read the one error of a refused operation.
import assert from 'node:assert/strict';
import type { ApiResponse, Client } from '../helpers/client.js';

export interface GraphqlError {
  readonly message: string;
  readonly path?: readonly (string | number)[];
  readonly extensions: {
    readonly code: string;
    readonly status: number;
    readonly requestId: string;
    readonly errors?: ReadonlyArray<{ path: string; message: string }>;
    readonly retryAfterSeconds?: number;
  };
}

export interface GraphqlBody<T> {
  readonly data: T | null;
  readonly errors?: readonly GraphqlError[];
}

export async function gql<T = Record<string, unknown>>(
  client: Client,
  query: string,
  variables: Record<string, unknown> = {},
  options: { token?: string; headers?: Record<string, string> } = {},
): Promise<ApiResponse<GraphqlBody<T>>> {
  return client.post<GraphqlBody<T>>('/graphql', { query, variables }, options);
}

/** The data of an answer that must have no error. */
export function dataOf<T>(response: ApiResponse<GraphqlBody<T>>): T {
  assert.equal(response.body.errors, undefined, `unexpected errors: ${response.text}`);
  assert.equal(response.status, 200, response.text);
  assert.ok(response.body.data, response.text);
  return response.body.data;
}

/** The single error of an answer, checked for the code, the REST status of that code and no leak. */
export function errorOf(response: ApiResponse<GraphqlBody<unknown>>, code: string, status: number): GraphqlError {
  const errors = response.body.errors ?? [];
  assert.equal(errors.length, 1, `expected one error: ${response.text}`);
  const [error] = errors;
  assert.ok(error);
  assert.equal(error.extensions.code, code, response.text);
  assert.equal(error.extensions.status, status, response.text);
  assert.equal(typeof error.extensions.requestId, 'string');
  assert.doesNotMatch(response.text, /\bat .+\.(ts|js):\d+|stack|node_modules|SELECT |postgres/i);
  return error;
}

export const USER_FIELDS = 'id email name role emailVerified createdAt updatedAt';
export const ACCOUNT_FIELDS = 'id ownerId currency name balance availableBalance createdAt updatedAt';
export const TRANSFER_FIELDS = 'id fromAccountId toAccountId amount currency status description createdAt';
