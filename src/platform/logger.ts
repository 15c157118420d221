// Structured JSON logs (pino). Secrets are redacted by path so that no password, hash or token
// reaches a log line even when an error object or a request is logged whole.
import { pino, type DestinationStream, type Logger } from 'pino';
import type { LogLevel } from '../config.js';

export type { Logger };

const REDACTED_PATHS = [
  'req.headers.authorization',
  'req.headers.cookie',
  'req.headers["idempotency-key"]',
  'headers.authorization',
  'headers.cookie',
  'res.headers["set-cookie"]',
  'password',
  'passwordHash',
  'password_hash',
  'refreshToken',
  'accessToken',
  'token',
  '*.password',
  '*.newPassword',
  '*.currentPassword',
  '*.passwordHash',
  '*.password_hash',
  '*.refreshToken',
  '*.accessToken',
  '*.token',
  '*.privateJwk',
  '*.private_jwk',
];

const baseOptions = (level: LogLevel) => ({
  level,
  base: { service: 'bastion' },
  timestamp: pino.stdTimeFunctions.isoTime,
  formatters: { level: (label: string) => ({ level: label }) },
});

export function createLogger(level: LogLevel, destination?: DestinationStream): Logger {
  return pino(
    { ...baseOptions(level), redact: { paths: REDACTED_PATHS, censor: '[REDACTED]' } },
    destination ?? pino.destination({ fd: 1, sync: false }),
  );
}

const LOG_FLUSH_INTERVAL_MS = 250;

interface Loggers {
  readonly logger: Logger;
  /**
   * One line per request, written with fields the service chooses (method, url, status, duration,
   * ids): nothing there to redact, so it skips redaction, which measured as a third of the cost of
   * logging a request.
   */
  readonly accessLogger: Logger;
}

export function createLoggers(level: LogLevel, destination?: DestinationStream): Loggers {
  // Lines are written in batches of up to 4 KiB (one write per batch instead of one per request),
  // and at the latest every 250 ms, so a quiet service's lines are not held back; the service
  // flushes at shutdown.
  if (destination) return { logger: createLogger(level, destination), accessLogger: pino(baseOptions(level), destination) };
  const stream = pino.destination({ fd: 1, sync: false, minLength: 4096 });
  setInterval(() => stream.flush(), LOG_FLUSH_INTERVAL_MS).unref();
  return { logger: createLogger(level, stream), accessLogger: pino(baseOptions(level), stream) };
}
