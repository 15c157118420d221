// GraphQL subscriptions over WebSocket (graphql-transport-ws, and the legacy graphql-ws
// subprotocol), served by Mercurius on GET /graphql. A connection is authenticated once, at
// connection_init (payload `{ authorization: "Bearer <token>" }`); each subscription then asks the
// domain core for a live source (ledger.watchPostedTransfers), which re-authenticates the token
// before every event. Mercurius executes a subscription without GraphQL validation, so the same
// rules as for HTTP (the spec's, depth, cost, aliases, introspection) run here before it starts.
import { EventEmitter } from 'node:events';
import type { Readable } from 'node:stream';
import type { FastifyInstance } from 'fastify';
import { specifiedRules, validate, type DocumentNode, type GraphQLSchema, type ValidationRule } from 'graphql';
import { bearerTokenOf, type AuthService } from '../../components/auth/index.js';
import type { Principal } from '../../components/access/index.js';
import type { DomainError } from '../../platform/errors.js';
import type { Logger } from '../../platform/logger.js';
import { socketError } from './errors.js';

/** Subscriptions one connection may hold at once. */
export const MAX_SUBSCRIPTIONS_PER_CONNECTION = 100;
/** Events queued for a subscriber that does not read; past this, its subscription ends. */
const MAX_QUEUED_EVENTS = 1_000;

/** What a live source delivers to: values, then possibly an end with the domain error that ended it. */
export interface LiveSink<T> {
  next(value: T): void;
  end(error: DomainError): void;
}
/** Starts a live source (it may refuse, throwing); resolves with its stop. */
export type LiveSource<T> = (sink: LiveSink<T>) => Promise<() => void>;

/** An event of a subscription's queue: a value, or the error that ended it. */
export type LiveEvent<T> = { readonly value: T } | { readonly error: DomainError };

type Queue = Readable & { close?: Array<() => void> };

/**
 * Mercurius' pubsub, fed by the domain core's live sources instead of topics published through
 * GraphQL (nothing is published through it: the events come from the services, on any instance).
 * A resolver calls `context.pubsub.subscribe(name, source)`, and Mercurius passes the source here.
 */
export function livePubSub(logger: Logger) {
  return {
    /** Mercurius' CustomPubSub type asks for an emitter; nothing reads it. */
    emitter: new EventEmitter(),
    // Mercurius' type says `close` is a function; at run time it is the array of closers (lib/subscriber.js).
    async subscribe<T>(topic: string | string[], stream: Readable, source: LiveSource<T>): Promise<void> {
      const queue = stream as Queue;
      let open = true;
      let stop: (() => void) | undefined;
      const finish = () => {
        open = false;
        stop?.();
        queue.push(null);
      };
      stop = await source({
        next(value) {
          if (!open || queue.destroyed) return;
          if (queue.readableLength >= MAX_QUEUED_EVENTS) {
            logger.warn({ topic }, 'graphql: a subscriber fell too far behind; its subscription ends');
            finish();
            return;
          }
          queue.push({ value } satisfies LiveEvent<T>);
        },
        end(error) {
          if (!open || queue.destroyed) return;
          queue.push({ error } satisfies LiveEvent<T>);
          finish();
        },
      });
      if (!open) stop();
      (queue.close ??= []).push(() => {
        open = false;
        stop?.();
      });
    },
    publish(_event: unknown, callback: () => void): void {
      callback();
    },
  };
}

/** The connection's caller: the token of connection_init, authenticated again on every call. */
export interface LiveConnection {
  readonly token: string;
  readonly subscriptions: { count: number };
}

function tokenOf(payload: unknown): string | undefined {
  if (typeof payload !== 'object' || payload === null) return undefined;
  const fields = payload as Record<string, unknown>;
  const headers = typeof fields['headers'] === 'object' && fields['headers'] !== null ? (fields['headers'] as Record<string, unknown>) : fields;
  return bearerTokenOf(headers['authorization'] ?? headers['Authorization']);
}

/** connection_init: a valid bearer token is required (otherwise Mercurius answers connection_error and closes). */
export function onConnect(auth: AuthService) {
  return async (message: { payload?: unknown }): Promise<LiveConnection | false> => {
    const token = tokenOf(message.payload);
    if (!token) return false;
    try {
      await auth.authenticate(token);
    } catch {
      return false;
    }
    return { token, subscriptions: { count: 0 } };
  };
}

/** The caller of a subscription, authenticated afresh each time (a revoked token stops working at once). */
export const connectionPrincipal = (auth: AuthService, connection: LiveConnection) => async (): Promise<Principal> => auth.authenticate(connection.token);

/**
 * Runs the HTTP transport's validation on every subscription document before it executes, and
 * refuses it with the same rendered error (Mercurius' subscribe runs no validation of its own).
 */
export function validateSubscriptions(app: FastifyInstance, rules: readonly ValidationRule[], logger: Logger): void {
  app.graphql.addHook('preSubscriptionExecution', async (schema: GraphQLSchema, document: DocumentNode, context: { request?: { id?: string } }) => {
    const errors = validate(schema, document, [...specifiedRules, ...rules]);
    const [first] = errors;
    if (first) throw socketError(first, context.request?.id ?? 'unknown', logger);
  });
}

/** A resolver's view of the queue's events: the value, or the domain error that ended the subscription. */
export function eventValue<T>(event: LiveEvent<T>): T {
  if ('error' in event) throw event.error;
  return event.value;
}

