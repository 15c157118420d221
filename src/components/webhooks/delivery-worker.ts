// The delivery worker: sends due webhook deliveries, at least once each, from every instance.
//
// Claims: one UPDATE claims a batch of due rows (FOR UPDATE SKIP LOCKED) by moving them a lease into
// the future under a fresh claim token, so two workers never hold one row and a crashed worker's
// rows fall due again when the lease ends. Only the claim's token may record the outcome (a
// redelivery in between takes the row back). A worker starts no send that its lease might not cover.
//
// Per endpoint, one instance sends its claimed deliveries one after another, oldest event first, and
// claims nothing more for that endpoint meanwhile; different endpoints go concurrently. Retries
// (exponential backoff, full jitter) and several instances can still reorder: the order is not
// guaranteed, the `sequence` attribute of each CloudEvent says the outbox order.
//
// A circuit breaker per endpoint (opossum): when enough of the recent attempts failed it opens, and
// the endpoint's deliveries wait without any request (not even claimed) until it half-opens; one
// delivery then probes, and success closes it so the backlog flows. Being postponed by an open
// breaker is not an attempt.
import http from 'node:http';
import https from 'node:https';
import { hostname } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import CircuitBreaker from 'opossum';
import { Counter, type Registry } from 'prom-client';
import { Webhook } from 'standardwebhooks';
import type { Database } from '../../platform/db/index.js';
import { newId } from '../../platform/ids.js';
import type { Logger } from '../../platform/logger.js';
import * as repo from './webhooks.repo.js';
import type { SecretStore } from './secrets.js';
import { guardedLookup, RefusedTargetError, targetProblem } from './ssrf-guard.js';

export interface DeliverySettings {
  readonly allowHttp: boolean;
  readonly allowPrivate: boolean;
  /** Attempts before a delivery is dead-lettered. */
  readonly maxAttempts: number;
  /** A 2xx must arrive (with its body) within this. */
  readonly timeoutMs: number;
  readonly retryBaseMs: number;
  readonly retryMaxMs: number;
  /** How often an idle worker looks for deliveries that fell due (retries, other instances' events). */
  readonly pollIntervalMs: number;
  readonly breaker: {
    /** Attempts within the window before the breaker may open at all. */
    readonly volumeThreshold: number;
    /** It opens when more than this percentage of the window's attempts failed. */
    readonly errorThresholdPercentage: number;
    /** How long it stays open before one probe is let through. */
    readonly resetMs: number;
    /** The rolling window the percentages are over. */
    readonly windowMs: number;
  };
}

export interface DeliveryWorkerOptions {
  readonly database: Database;
  readonly logger: Logger;
  readonly secrets: SecretStore;
  readonly settings: DeliverySettings;
  readonly registry?: Registry;
  /** Tests only: [0, 1) for the jitter. */
  readonly random?: () => number;
}

export interface DeliveryWorker {
  start(): void;
  /** Deliveries are due now (created, redelivered, an endpoint re-enabled). */
  wake(): void;
  /** Stops claiming, aborts sends in flight (their deliveries are retried later), waits for them. */
  stop(): Promise<void>;
}

/** Deliveries claimed per statement. */
const CLAIM_BATCH = 32;
/** Endpoints sent to at once by one instance. */
const MAX_CONCURRENT_ENDPOINTS = 16;
const MIN_LEASE_MS = 60_000;
/** Room a send must have inside its lease beyond its timeout (recording the outcome). */
const LEASE_MARGIN_MS = 5_000;
const ERROR_TEXT_MAX = 500;
const FAILURE_BACKOFF_MAX_MS = 5_000;

/** Full jitter: uniform in [0, min(max, base * 2^(attempt - 1))]. */
export function retryDelayMs(attempt: number, baseMs: number, maxMs: number, random: () => number): number {
  const ceiling = Math.min(maxMs, baseMs * 2 ** Math.min(attempt - 1, 40));
  return Math.floor(random() * ceiling);
}

/** A send that did not end in a 2xx. */
class AttemptFailed extends Error {
  constructor(
    readonly reason: string,
    readonly statusCode: number | null,
  ) {
    super(reason);
    this.name = 'AttemptFailed';
  }
}

interface SendResult {
  readonly statusCode: number;
}

interface EndpointCircuit {
  readonly url: string;
  readonly breaker: CircuitBreaker<[repo.ClaimedDelivery, string], SendResult>;
  /** Until when the breaker stays open (Date.now() ms), as of its last opening. */
  openUntil: number;
}

export function createDeliveryWorker(options: DeliveryWorkerOptions): DeliveryWorker {
  const { database, logger, settings } = options;
  const random = options.random ?? Math.random;
  const leaseMs = Math.max(MIN_LEASE_MS, settings.timeoutMs * 3 + LEASE_MARGIN_MS);
  const owner = `${hostname()}:${process.pid}`;
  const lookup = guardedLookup(settings.allowPrivate);
  const agents = { http: new http.Agent({ keepAlive: true, maxSockets: 4 }), https: new https.Agent({ keepAlive: true, maxSockets: 4 }) };
  const stopping = new AbortController();
  const circuits = new Map<string, EndpointCircuit>();
  /** Requests in flight, aborted by stop(). */
  const inFlight = new Set<AbortController>();
  /** Endpoints this instance is sending to now (their claimed deliveries, one after another). */
  const busy = new Map<string, Promise<void>>();
  let loop: Promise<void> | undefined;
  let wakeUp: (() => void) | undefined;
  let woken = false;

  const registers = options.registry ? [options.registry] : [];
  const attemptsMetric = new Counter({
    name: 'bastion_webhook_attempts_total',
    help: 'Webhook delivery attempts by outcome (delivered, failed: retried later, dead: dead-lettered)',
    labelNames: ['outcome'] as const,
    registers,
  });
  const postponedMetric = new Counter({
    name: 'bastion_webhook_postponed_total',
    help: 'Webhook deliveries postponed without a request because their endpoint circuit breaker was open',
    registers,
  });

  function wake(): void {
    woken = true;
    wakeUp?.();
  }

  async function idle(ms: number): Promise<void> {
    if (woken) {
      woken = false;
      return;
    }
    await new Promise<void>((resolve) => {
      wakeUp = resolve;
      sleep(ms, undefined, { signal: stopping.signal, ref: false }).then(resolve, resolve);
    });
    wakeUp = undefined;
    woken = false;
  }

  function circuitFor(delivery: repo.ClaimedDelivery): EndpointCircuit {
    let circuit = circuits.get(delivery.endpointId);
    // A changed URL starts with a closed breaker.
    if (circuit && circuit.url !== delivery.url) {
      circuit.breaker.shutdown();
      circuit = undefined;
    }
    if (!circuit) {
      const breaker = new CircuitBreaker(send, {
        name: delivery.endpointId,
        timeout: false, // the request has its own deadline, which also aborts it
        errorThresholdPercentage: settings.breaker.errorThresholdPercentage,
        volumeThreshold: settings.breaker.volumeThreshold,
        resetTimeout: settings.breaker.resetMs,
        rollingCountTimeout: settings.breaker.windowMs,
        rollingCountBuckets: 10,
      });
      const created: EndpointCircuit = { url: delivery.url, breaker, openUntil: 0 };
      breaker.on('open', () => {
        created.openUntil = Date.now() + settings.breaker.resetMs;
        logger.warn({ endpointId: delivery.endpointId, resetMs: settings.breaker.resetMs }, 'webhooks: endpoint circuit opened; its deliveries wait');
      });
      breaker.on('close', () => logger.info({ endpointId: delivery.endpointId }, 'webhooks: endpoint circuit closed; its deliveries flow'));
      circuits.set(delivery.endpointId, created);
      circuit = created;
    }
    return circuit;
  }

  /** Endpoints not to claim for: those being sent to, and those whose breaker is open (not half-open). */
  function excludedEndpoints(): string[] {
    const excluded = new Set(busy.keys());
    for (const [endpointId, { breaker }] of circuits) {
      if (breaker.opened && !breaker.halfOpen) excluded.add(endpointId);
    }
    return [...excluded];
  }

  /** One POST of the CloudEvent, signed; resolves on a 2xx whose body arrived within the timeout. */
  function send(delivery: repo.ClaimedDelivery, secret: string): Promise<SendResult> {
    const problem = targetProblem(delivery.url, settings);
    if (problem !== undefined) return Promise.reject(new AttemptFailed(new RefusedTargetError(`the URL ${problem}`).message, null));
    const url = new URL(delivery.url);
    const body = JSON.stringify(delivery.payload);
    const timestamp = new Date();
    const headers = {
      'content-type': 'application/json',
      'content-length': String(Buffer.byteLength(body)),
      'user-agent': 'Bastion-Webhooks/1',
      'webhook-id': delivery.eventId,
      'webhook-timestamp': String(Math.floor(timestamp.getTime() / 1000)),
      'webhook-signature': new Webhook(secret).sign(delivery.eventId, timestamp, body),
    };
    // One controller per request, aborted by its deadline or by stop().
    const abort = new AbortController();
    const deadline = setTimeout(() => abort.abort(), settings.timeoutMs);
    inFlight.add(abort);
    const request = url.protocol === 'https:' ? https.request : http.request;
    const sent = new Promise<SendResult>((resolve, reject) => {
      const fail = (error: unknown) => reject(attemptFailure(error));
      const outgoing = request(
        url,
        { method: 'POST', headers, lookup, signal: abort.signal, agent: url.protocol === 'https:' ? agents.https : agents.http },
        (response) => {
          const statusCode = response.statusCode ?? 0;
          response.on('error', fail);
          // The body is read (and dropped) so the connection can be reused; the deadline bounds it.
          response.resume();
          response.on('end', () => {
            if (statusCode >= 200 && statusCode < 300) resolve({ statusCode });
            else reject(new AttemptFailed(`the endpoint answered HTTP ${statusCode}`, statusCode));
          });
        },
      );
      outgoing.on('error', fail);
      outgoing.end(body);
    });
    return sent.finally(() => {
      clearTimeout(deadline);
      inFlight.delete(abort);
    });
  }

  function attemptFailure(error: unknown): AttemptFailed {
    if (error instanceof AttemptFailed) return error;
    if (error instanceof RefusedTargetError) return new AttemptFailed(error.message, null);
    const failure = error as { name?: string; code?: string; message?: string };
    if (failure.name === 'AbortError' || failure.code === 'ABORT_ERR') {
      return new AttemptFailed(
        stopping.signal.aborted ? 'aborted: the service was shutting down' : `no answer within ${settings.timeoutMs} ms`,
        null,
      );
    }
    const text = [failure.code, failure.message].filter(Boolean).join(': ') || 'the request failed';
    return new AttemptFailed(text.slice(0, ERROR_TEXT_MAX), null);
  }

  /** Sends one endpoint's claimed deliveries, one after another. */
  async function sendAll(deliveries: readonly repo.ClaimedDelivery[], claimToken: string, claimedAt: number): Promise<void> {
    for (const [index, delivery] of deliveries.entries()) {
      const claim = { id: delivery.id, claimToken };
      const rest = deliveries.slice(index).map((each) => ({ id: each.id, claimToken }));
      if (stopping.signal.aborted || Date.now() + settings.timeoutMs + LEASE_MARGIN_MS > claimedAt + leaseMs) {
        // Not begun: due again at once (another worker, or this one after a restart, takes them).
        await repo.release(database.db, rest, new Date());
        return;
      }
      const circuit = circuitFor(delivery);
      if (circuit.breaker.opened && !circuit.breaker.halfOpen) {
        await postpone(rest, circuit);
        return;
      }
      let secret: string;
      try {
        secret = await options.secrets.open(delivery.secret);
      } catch (error) {
        logger.error({ err: error, endpointId: delivery.endpointId }, 'webhooks: the endpoint secret cannot be opened');
        await record(claim, delivery, { at: new Date(), statusCode: null, error: 'the signing secret cannot be opened', durationMs: 0 }, false);
        continue;
      }
      const at = new Date();
      const started = performance.now();
      try {
        const result = await circuit.breaker.fire(delivery, secret);
        await record(claim, delivery, { at, statusCode: result.statusCode, error: null, durationMs: Math.round(performance.now() - started) }, true);
      } catch (error) {
        if ((error as { code?: string }).code === 'EOPENBREAKER') {
          await postpone(rest, circuit);
          return;
        }
        const failure = attemptFailure(error);
        if (stopping.signal.aborted) {
          // Cut short by the shutdown, not the endpoint's fault: no attempt counted.
          await repo.release(database.db, rest, new Date());
          return;
        }
        await record(claim, delivery, { at, statusCode: failure.statusCode, error: failure.reason, durationMs: Math.round(performance.now() - started) }, false);
      }
    }
  }

  async function postpone(claims: readonly { id: string; claimToken: string }[], circuit: EndpointCircuit): Promise<void> {
    // A little after the breaker half-opens, spread so the probe goes first.
    const dueAt = Math.max(circuit.openUntil, Date.now()) + Math.floor(random() * Math.min(1_000, settings.breaker.resetMs / 10 + 1));
    await repo.release(database.db, claims, new Date(dueAt));
    postponedMetric.inc(claims.length);
  }

  async function record(claim: { id: string; claimToken: string }, delivery: repo.ClaimedDelivery, attempt: repo.AttemptRecord, ok: boolean): Promise<void> {
    const attempts = delivery.attempts + 1;
    const next = ok
      ? ({ status: 'delivered', attempts } as const)
      : attempts >= settings.maxAttempts
        ? ({ status: 'dead', attempts } as const)
        : ({
            status: 'failed',
            attempts,
            retryAt: new Date(Date.now() + retryDelayMs(attempts, settings.retryBaseMs, settings.retryMaxMs, random)),
          } as const);
    const recorded = await repo.recordAttempt(database.db, claim, attempt, next);
    if (recorded) attemptsMetric.inc({ outcome: next.status });
    if (recorded && next.status === 'dead') {
      logger.warn({ deliveryId: delivery.id, endpointId: delivery.endpointId, attempts, lastError: attempt.error }, 'webhooks: delivery dead-lettered');
    }
  }

  async function run(): Promise<void> {
    let failureBackoffMs = 100;
    while (!stopping.signal.aborted) {
      try {
        if (busy.size < MAX_CONCURRENT_ENDPOINTS) {
          const claimToken = newId();
          const claimedAt = Date.now();
          const claimed = await repo.claimDue(database.db, CLAIM_BATCH, leaseMs, claimToken, excludedEndpoints());
          const byEndpoint = new Map<string, repo.ClaimedDelivery[]>();
          for (const delivery of claimed) {
            const list = byEndpoint.get(delivery.endpointId) ?? [];
            list.push(delivery);
            byEndpoint.set(delivery.endpointId, list);
          }
          for (const [endpointId, deliveries] of byEndpoint) {
            const work = sendAll(deliveries, claimToken, claimedAt)
              .catch((error: unknown) => logger.warn({ err: error, endpointId, owner }, 'webhooks: sending failed; the deliveries are retried after their lease'))
              .finally(() => {
                busy.delete(endpointId);
                wake();
              });
            busy.set(endpointId, work);
          }
          failureBackoffMs = 100;
          if (claimed.length === CLAIM_BATCH) continue;
        }
        await idle(settings.pollIntervalMs);
      } catch (error) {
        logger.warn({ err: error }, 'webhooks: claiming deliveries failed; retrying');
        await sleep(failureBackoffMs, undefined, { signal: stopping.signal, ref: false }).catch(() => undefined);
        failureBackoffMs = Math.min(failureBackoffMs * 2, FAILURE_BACKOFF_MAX_MS);
      }
    }
  }

  return {
    start() {
      loop ??= run();
    },
    wake,
    async stop() {
      stopping.abort();
      for (const request of inFlight) request.abort();
      await loop;
      await Promise.allSettled(busy.values());
      for (const { breaker } of circuits.values()) breaker.shutdown();
      agents.http.destroy();
      agents.https.destroy();
    },
  };
}
