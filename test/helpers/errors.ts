// The contract's one error shape, asserted exactly, and the formats every body's ids and times share.
import assert from 'node:assert/strict';
import type { ApiResponse } from './client.js';

export const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
export const ISO_UTC = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$/;

export interface FieldError {
  path: string;
  message: string;
}
export interface ErrorDetails {
  code: string;
  message: string;
  requestId: string;
  errors?: FieldError[];
}

/** What no error body may show: file paths, stack frames, SQL. */
const LEAK = /node_modules|\/work\/|\.ts:\d+|\n\s+at |\bSELECT\b|\bINSERT INTO\b|syntax error/;

/**
 * Asserts the contract's error body exactly: a JSON {error: {code, message, requestId[, errors]}},
 * `errors` only (and always, non-empty, each exactly {path, message}) for VALIDATION_FAILED,
 * requestId equal to the X-Request-Id header, no leaks. `replayed`: the response is an idempotent
 * replay of a stored body, whose requestId is the original request's, not this one's.
 */
export function expectError(response: ApiResponse<unknown>, status: number, code: string, options: { replayed?: boolean } = {}): ErrorDetails {
  assert.equal(response.status, status, `expected ${status} ${code}, got ${response.status}: ${response.text}`);
  assert.match(response.headers.get('content-type') ?? '', /^application\/json/);
  const body = response.body as { error?: ErrorDetails } | undefined;
  assert.ok(body && typeof body === 'object', `error body is not JSON: ${response.text}`);
  assert.deepEqual(Object.keys(body), ['error']);
  const error = body.error;
  assert.ok(error && typeof error === 'object');
  const keys = code === 'VALIDATION_FAILED' ? ['code', 'errors', 'message', 'requestId'] : ['code', 'message', 'requestId'];
  assert.deepEqual(Object.keys(error).sort(), keys, `error keys: ${JSON.stringify(error)}`);
  assert.equal(error.code, code);
  assert.equal(typeof error.message, 'string');
  assert.ok(error.message.length > 0);
  assert.equal(typeof error.requestId, 'string');
  assert.ok(error.requestId.length > 0);
  if (!options.replayed) assert.equal(error.requestId, response.headers.get('x-request-id'));
  if (code === 'VALIDATION_FAILED') {
    assert.ok(Array.isArray(error.errors) && error.errors.length > 0, `validation errors must list the fields: ${response.text}`);
    for (const fieldError of error.errors) {
      assert.deepEqual(Object.keys(fieldError).sort(), ['message', 'path']);
      assert.equal(typeof fieldError.path, 'string');
      assert.equal(typeof fieldError.message, 'string');
      assert.ok(fieldError.message.length > 0);
    }
  } else {
    assert.equal(error.errors, undefined);
  }
  assert.doesNotMatch(response.text, LEAK);
  return error;
}

/** The field paths a VALIDATION_FAILED error names. */
export const pathsOf = (error: ErrorDetails): string[] => (error.errors ?? []).map((fieldError) => fieldError.path);
