// The one place environment variables are read: parsed once at start, typed, frozen.
// A bad value stops the process with one line per bad variable, each starting with the variable's name.
import os from 'node:os';
import type { DeliverySettings } from './components/webhooks/delivery-worker.js';
import type { OidcSettings } from './components/oidc/oidc.service.js';
import { DEFAULT_SIGNING_ALGORITHM, isSigningAlgorithm, SIGNING_ALGORITHMS, type SigningAlgorithm } from './components/auth/signing-algorithms.js';

export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';

export interface Config {
  readonly port: number;
  readonly host: string;
  /** The gRPC (HTTP/2 cleartext) listener's port on HOST; unset: no gRPC listener. */
  readonly grpcPort: number | undefined;
  readonly databaseUrl: string | undefined;
  readonly dataDir: string;
  readonly redisUrl: string | undefined;
  readonly bootstrapAdmin: { readonly email: string; readonly password: string } | undefined;
  /** Seals private signing keys and server secrets at rest; unset: they are stored in the clear. */
  readonly keyEncryptionSecret: string | undefined;
  readonly allowedOrigins: readonly string[];
  readonly rateLimitMax: number;
  readonly rateLimitWindowMs: number;
  /** Each API key's own budget (GCRA, shared over Redis), on top of the per-client one. */
  readonly apiKeyRateLimitMax: number;
  readonly apiKeyRateLimitWindowMs: number;
  readonly accessTokenTtlSeconds: number;
  /** The JWS algorithm new access tokens are signed with (ACCESS_TOKEN_ALG); older keys keep verifying. */
  readonly accessTokenAlg: SigningAlgorithm;
  readonly refreshTokenTtlSeconds: number;
  readonly refreshReuseGraceSeconds: number;
  readonly trustProxy: boolean | string | number;
  readonly logLevel: LogLevel;
  readonly databasePoolSize: number;
  readonly passwordHashConcurrency: number;
  /** In-process (L1) cache lifetime; with Redis, invalidation messages keep it fresh. */
  readonly cacheL1TtlMs: number;
  readonly cacheL2TtlSeconds: number;
  readonly cacheEnabled: boolean;
  readonly workers: number;
  readonly shutdownTimeoutMs: number;
  readonly loginMaxFailures: number;
  readonly loginFailureWindowSeconds: number;
  readonly idempotencyKeyTtlSeconds: number;
  readonly pendingSweepIntervalMs: number;
  readonly ledgerBatchSize: number;
  readonly ledgerBatchConcurrency: number;
  /** GraphQL introspection (__schema, __type); off unless enabled: the SDL is published as schema.graphql. */
  readonly graphqlIntrospection: boolean;
  /** The GraphiQL IDE at /graphiql; off unless enabled. */
  readonly graphiql: boolean;
  /** Deepest nesting of fields a GraphQL document may select. */
  readonly graphqlMaxDepth: number;
  /** Most object fields a GraphQL document may select, list sizes multiplied in. */
  readonly graphqlMaxCost: number;
  /** Most aliased fields in one GraphQL document (alias amplification). */
  readonly graphqlMaxAliases: number;
  /** Audit events are kept this many days, then removed by a background job (never earlier). */
  readonly auditRetentionDays: number;
  readonly events: EventsConfig;
  readonly webhooks: WebhooksConfig;
  /** OpenID Connect providers users may log in with (OIDC_PROVIDERS) and where a login may return (OIDC_REDIRECT_URIS). */
  readonly oidc: OidcSettings;
  readonly mail: MailConfig;
}

/** Outgoing mail (verification, password reset). */
export interface MailConfig {
  /** SMTP_URL: smtp:// or smtps://, credentials included; unset: links are logged instead of mailed. */
  readonly smtpUrl: string | undefined;
  /** MAIL_FROM: the From of every message. */
  readonly from: string;
  /** PUBLIC_URL: where the links in mails point (no trailing slash). */
  readonly publicUrl: string;
}

/** Webhook delivery: targets allowed, retries, the breaker (the webhooks component's settings). */
export type WebhooksConfig = DeliverySettings;

export type EventPublisherName = 'nats' | 'rabbitmq' | 'redis';

export interface EventsConfig {
  /** Write events to the outbox at all (EVENTS_OUTBOX; off only to measure what it costs). */
  readonly outbox: boolean;
  /** Brokers the outbox's events are published to (EVENTS_PUBLISHERS); none: they stay in the outbox. */
  readonly publishers: readonly EventPublisherName[];
  /** Run the relay inside the server (else only `bastion relay` processes publish). */
  readonly embeddedRelay: boolean;
  /** The CloudEvents `source` attribute of every event. */
  readonly source: string;
  readonly natsUrl: string | undefined;
  readonly amqpUrl: string | undefined;
  readonly natsStream: string;
  readonly natsSubjectPrefix: string;
  readonly rabbitmqExchange: string;
  readonly redisStream: string;
  readonly redisStreamMaxLength: number;
  readonly relayBatchSize: number;
  readonly relayPollIntervalMs: number;
  readonly relayLeaseMs: number;
  readonly publishTimeoutMs: number;
  /** Published events are deleted after this long. */
  readonly retentionHours: number;
  /** `bastion relay` serves /metrics here (unset: no listener; servers expose /metrics on PORT). */
  readonly relayMetricsPort: number | undefined;
}

export class ConfigError extends Error {
  constructor(readonly problems: readonly string[]) {
    super(problems.join('\n'));
    this.name = 'ConfigError';
  }
}

type Env = Readonly<Record<string, string | undefined>>;

const LOG_LEVELS: readonly LogLevel[] = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

/** Parses and validates the environment; throws ConfigError listing every bad variable at once. */
export function loadConfig(env: Env = process.env): Config {
  const problems: string[] = [];
  const read = (name: string): string | undefined => {
    const value = env[name];
    return value === undefined || value.trim() === '' ? undefined : value.trim();
  };
  const integer = (name: string, fallback: number, min: number, max: number): number => {
    const raw = read(name);
    if (raw === undefined) return fallback;
    if (!/^-?\d+$/.test(raw)) {
      problems.push(`${name}: must be an integer, got "${raw}"`);
      return fallback;
    }
    const value = Number(raw);
    if (value < min || value > max) {
      problems.push(`${name}: must be between ${min} and ${max}, got ${value}`);
      return fallback;
    }
    return value;
  };

  const boolean = (name: string, fallback: boolean): boolean => {
    const raw = read(name);
    if (raw === undefined) return fallback;
    if (raw === 'true' || raw === '1') return true;
    if (raw === 'false' || raw === '0') return false;
    problems.push(`${name}: must be true or false, got "${raw}"`);
    return fallback;
  };

  const databaseUrl = read('DATABASE_URL');
  if (databaseUrl !== undefined && !/^postgres(ql)?:\/\//.test(databaseUrl)) {
    problems.push('DATABASE_URL: must be a postgres:// or postgresql:// URL');
  }
  const redisUrl = read('REDIS_URL');
  if (redisUrl !== undefined && !/^rediss?:\/\//.test(redisUrl)) {
    problems.push('REDIS_URL: must be a redis:// or rediss:// URL');
  }

  const adminEmail = read('BOOTSTRAP_ADMIN_EMAIL');
  const adminPassword = env['BOOTSTRAP_ADMIN_PASSWORD'];
  let bootstrapAdmin: Config['bootstrapAdmin'];
  if (adminEmail !== undefined || adminPassword !== undefined) {
    if (adminEmail === undefined || !/^[^\s@]+@[^\s@]+\.[^\s@]+$/.test(adminEmail)) {
      problems.push('BOOTSTRAP_ADMIN_EMAIL: must be an email address when BOOTSTRAP_ADMIN_PASSWORD is set');
    }
    if (adminPassword === undefined || adminPassword.length < 8 || adminPassword.length > 128) {
      problems.push('BOOTSTRAP_ADMIN_PASSWORD: must be 8-128 characters when BOOTSTRAP_ADMIN_EMAIL is set');
    }
    if (adminEmail !== undefined && adminPassword !== undefined) {
      bootstrapAdmin = { email: adminEmail.toLowerCase(), password: adminPassword };
    }
  }

  const keyEncryptionSecret = read('KEY_ENCRYPTION_SECRET');
  if (keyEncryptionSecret !== undefined && keyEncryptionSecret.length < 32) {
    problems.push('KEY_ENCRYPTION_SECRET: must be at least 32 characters (e.g. openssl rand -base64 32)');
  }
  const allowedOrigins = (read('ALLOWED_ORIGINS') ?? '')
    .split(',')
    .map((origin) => origin.trim())
    .filter((origin) => origin !== '');
  for (const origin of allowedOrigins) {
    if (origin !== '*' && !/^https?:\/\/[^/\s]+$/.test(origin)) {
      problems.push(`ALLOWED_ORIGINS: "${origin}" is not an origin like https://app.example.com`);
    }
  }

  const publisherNames: readonly EventPublisherName[] = ['nats', 'rabbitmq', 'redis'];
  const eventPublishers: EventPublisherName[] = [];
  for (const name of (read('EVENTS_PUBLISHERS') ?? '').split(',').map((part) => part.trim()).filter((part) => part !== '')) {
    if (!publisherNames.includes(name as EventPublisherName)) {
      problems.push(`EVENTS_PUBLISHERS: "${name}" is not one of ${publisherNames.join(', ')}`);
    } else if (!eventPublishers.includes(name as EventPublisherName)) {
      eventPublishers.push(name as EventPublisherName);
    }
  }
  const natsUrl = read('NATS_URL');
  if (natsUrl !== undefined && !/^(nats|tls|wss?):\/\//.test(natsUrl) && !/^[^/\s]+:\d+$/.test(natsUrl)) {
    problems.push('NATS_URL: must be a nats:// URL or host:port');
  }
  const amqpUrl = read('AMQP_URL');
  if (amqpUrl !== undefined && !/^amqps?:\/\//.test(amqpUrl)) problems.push('AMQP_URL: must be an amqp:// or amqps:// URL');
  if (eventPublishers.includes('nats') && natsUrl === undefined) problems.push('NATS_URL: required when EVENTS_PUBLISHERS lists nats');
  if (eventPublishers.includes('rabbitmq') && amqpUrl === undefined) problems.push('AMQP_URL: required when EVENTS_PUBLISHERS lists rabbitmq');
  if (eventPublishers.includes('redis') && redisUrl === undefined) problems.push('REDIS_URL: required when EVENTS_PUBLISHERS lists redis');
  const events: EventsConfig = {
    outbox: boolean('EVENTS_OUTBOX', true),
    publishers: eventPublishers,
    embeddedRelay: boolean('EVENTS_RELAY_EMBEDDED', true),
    source: read('EVENTS_SOURCE') ?? '/bastion',
    natsUrl,
    amqpUrl,
    natsStream: read('EVENTS_NATS_STREAM') ?? 'BASTION_EVENTS',
    natsSubjectPrefix: read('EVENTS_NATS_SUBJECT_PREFIX') ?? 'bastion.events',
    rabbitmqExchange: read('EVENTS_RABBITMQ_EXCHANGE') ?? 'bastion.events',
    redisStream: read('EVENTS_REDIS_STREAM') ?? 'bastion:events',
    redisStreamMaxLength: integer('EVENTS_REDIS_MAXLEN', 1_000_000, 1_000, 1_000_000_000),
    relayBatchSize: integer('EVENTS_RELAY_BATCH_SIZE', 500, 1, 10_000),
    relayPollIntervalMs: integer('EVENTS_RELAY_POLL_INTERVAL_MS', 100, 5, 60_000),
    relayLeaseMs: integer('EVENTS_RELAY_LEASE_MS', 10_000, 1_000, 600_000),
    publishTimeoutMs: integer('EVENTS_PUBLISH_TIMEOUT_MS', 5_000, 100, 120_000),
    retentionHours: integer('EVENTS_RETENTION_HOURS', 168, 1, 24 * 365),
    relayMetricsPort: read('RELAY_METRICS_PORT') === undefined ? undefined : integer('RELAY_METRICS_PORT', 0, 0, 65_535),
  };

  const webhooks: WebhooksConfig = {
    allowHttp: boolean('WEBHOOK_ALLOW_HTTP', false),
    allowPrivate: boolean('WEBHOOK_ALLOW_PRIVATE', false),
    maxAttempts: integer('WEBHOOK_MAX_ATTEMPTS', 8, 1, 100),
    timeoutMs: integer('WEBHOOK_TIMEOUT_MS', 10_000, 100, 120_000),
    retryBaseMs: integer('WEBHOOK_RETRY_BASE_MS', 5_000, 1, 3_600_000),
    retryMaxMs: integer('WEBHOOK_RETRY_MAX_MS', 3_600_000, 1, 86_400_000),
    pollIntervalMs: integer('WEBHOOK_POLL_INTERVAL_MS', 1_000, 10, 60_000),
    breaker: {
      volumeThreshold: integer('WEBHOOK_BREAKER_VOLUME_THRESHOLD', 5, 1, 10_000),
      errorThresholdPercentage: integer('WEBHOOK_BREAKER_ERROR_PERCENTAGE', 50, 1, 99),
      resetMs: integer('WEBHOOK_BREAKER_RESET_MS', 30_000, 10, 3_600_000),
      windowMs: integer('WEBHOOK_BREAKER_WINDOW_MS', 60_000, 100, 3_600_000),
    },
  };
  if (webhooks.retryMaxMs < webhooks.retryBaseMs) {
    problems.push(`WEBHOOK_RETRY_MAX_MS: must be at least WEBHOOK_RETRY_BASE_MS (${webhooks.retryBaseMs})`);
  }

  if (events.publishTimeoutMs * 2 > events.relayLeaseMs) {
    // A publish that outlasts half the lease may lose it mid-way, and the batch is then published twice.
    problems.push(`EVENTS_PUBLISH_TIMEOUT_MS: must be at most half of EVENTS_RELAY_LEASE_MS (${events.relayLeaseMs}), got ${events.publishTimeoutMs}`);
  }

  const accessTokenAlgRaw = read('ACCESS_TOKEN_ALG') ?? DEFAULT_SIGNING_ALGORITHM;
  if (!isSigningAlgorithm(accessTokenAlgRaw)) {
    problems.push(`ACCESS_TOKEN_ALG: must be one of ${SIGNING_ALGORITHMS.join(', ')}, got "${accessTokenAlgRaw}"`);
  }

  const oidc = parseOidc(read('OIDC_PROVIDERS'), read('OIDC_REDIRECT_URIS'), problems);

  const logLevelRaw = read('LOG_LEVEL') ?? 'info';
  if (!LOG_LEVELS.includes(logLevelRaw as LogLevel)) {
    problems.push(`LOG_LEVEL: must be one of ${LOG_LEVELS.join(', ')}, got "${logLevelRaw}"`);
  }

  const config: Config = {
    port: integer('PORT', 3000, 0, 65535),
    host: read('HOST') ?? '0.0.0.0',
    grpcPort: read('GRPC_PORT') === undefined ? undefined : integer('GRPC_PORT', 0, 0, 65535),
    databaseUrl,
    dataDir: read('DATA_DIR') ?? './data',
    redisUrl,
    bootstrapAdmin,
    keyEncryptionSecret,
    allowedOrigins,
    rateLimitMax: integer('RATE_LIMIT_MAX', 100, 1, 1_000_000_000),
    rateLimitWindowMs: integer('RATE_LIMIT_WINDOW_MS', 900_000, 1, 86_400_000 * 7),
    apiKeyRateLimitMax: integer('API_KEY_RATE_LIMIT_MAX', 600, 1, 1_000_000_000),
    apiKeyRateLimitWindowMs: integer('API_KEY_RATE_LIMIT_WINDOW_MS', 60_000, 1, 86_400_000 * 7),
    accessTokenTtlSeconds: integer('ACCESS_TOKEN_TTL', 900, 1, 86_400),
    accessTokenAlg: isSigningAlgorithm(accessTokenAlgRaw) ? accessTokenAlgRaw : DEFAULT_SIGNING_ALGORITHM,
    refreshTokenTtlSeconds: integer('REFRESH_TOKEN_TTL', 2_592_000, 60, 31_536_000),
    refreshReuseGraceSeconds: integer('REFRESH_REUSE_GRACE_SECONDS', 10, 0, 3_600),
    trustProxy: parseTrustProxy(read('TRUST_PROXY')),
    logLevel: LOG_LEVELS.includes(logLevelRaw as LogLevel) ? (logLevelRaw as LogLevel) : 'info',
    databasePoolSize: integer('DATABASE_POOL_SIZE', 10, 1, 1_000),
    passwordHashConcurrency: integer('PASSWORD_HASH_CONCURRENCY', Math.max(1, os.availableParallelism() - 1), 1, 256),
    // Without Redis nothing tells other instances about a write, so an instance may serve a user's
    // cached state for at most 1 s (the contract's revocation bound); with Redis, pub/sub does.
    cacheL1TtlMs: redisUrl ? integer('CACHE_L1_TTL_MS', 30_000, 0, 3_600_000) : integer('CACHE_L1_TTL_MS', 1_000, 0, 1_000),
    cacheL2TtlSeconds: integer('CACHE_L2_TTL_SECONDS', 300, 1, 86_400),
    cacheEnabled: boolean('CACHE_ENABLED', true),
    workers: integer('WORKERS', 1, 1, 64),
    shutdownTimeoutMs: integer('SHUTDOWN_TIMEOUT_MS', 10_000, 0, 600_000),
    loginMaxFailures: integer('LOGIN_MAX_FAILURES', 5, 1, 1_000),
    loginFailureWindowSeconds: integer('LOGIN_FAILURE_WINDOW_SECONDS', 900, 1, 86_400),
    idempotencyKeyTtlSeconds: integer('IDEMPOTENCY_KEY_TTL_SECONDS', 86_400, 86_400, 31_536_000),
    pendingSweepIntervalMs: integer('PENDING_SWEEP_INTERVAL_MS', 1_000, 50, 3_600_000),
    ledgerBatchSize: integer('LEDGER_BATCH_SIZE', 64, 1, 1_000),
    ledgerBatchConcurrency: integer('LEDGER_BATCH_CONCURRENCY', 1, 1, 64),
    graphqlIntrospection: boolean('GRAPHQL_INTROSPECTION', false),
    graphiql: boolean('GRAPHIQL', false),
    graphqlMaxDepth: integer('GRAPHQL_MAX_DEPTH', 8, 1, 100),
    graphqlMaxCost: integer('GRAPHQL_MAX_COST', 1_000, 1, 1_000_000),
    graphqlMaxAliases: integer('GRAPHQL_MAX_ALIASES', 10, 0, 1_000),
    auditRetentionDays: integer('AUDIT_RETENTION_DAYS', 400, 1, 36_500),
    events,
    webhooks,
    oidc,
    mail: parseMail(read, problems),
  };
  if (config.graphiql && !config.graphqlIntrospection) {
    problems.push('GRAPHIQL: the GraphiQL IDE reads the schema by introspection: set GRAPHQL_INTROSPECTION=true as well');
  }
  if (config.workers > 1 && (databaseUrl === undefined || redisUrl === undefined)) {
    // PGlite belongs to one process; and without Redis each worker would keep its own rate limits,
    // login-failure counts and cache, so the workers would not behave as one service.
    problems.push('WORKERS: several worker processes need DATABASE_URL and REDIS_URL');
  }
  if (config.grpcPort !== undefined && config.grpcPort !== 0 && config.grpcPort === config.port) {
    problems.push(`GRPC_PORT: must differ from PORT (${config.port}): gRPC has its own HTTP/2 listener`);
  }
  if (problems.length > 0) throw new ConfigError(problems);
  return Object.freeze(config);
}

/** SMTP_URL, MAIL_FROM, PUBLIC_URL. A real mail needs a real From and links that reach the service. */
function parseMail(read: (name: string) => string | undefined, problems: string[]): MailConfig {
  const smtpUrl = read('SMTP_URL');
  if (smtpUrl !== undefined) {
    let valid = false;
    try {
      const url = new URL(smtpUrl);
      valid = (url.protocol === 'smtp:' || url.protocol === 'smtps:') && url.hostname !== '';
    } catch {
      valid = false;
    }
    // Never echoed: it may hold the SMTP password.
    if (!valid) problems.push('SMTP_URL: must be an smtp:// or smtps:// URL like smtp://user:pass@mail.example.com:587');
  }
  const from = read('MAIL_FROM');
  if (from !== undefined && !/^(?:[^<>\r\n]*<[^\s@<>]+@[^\s@<>]+\.[^\s@<>]+>|[^\s@<>]+@[^\s@<>]+\.[^\s@<>]+)$/.test(from)) {
    problems.push(`MAIL_FROM: must be an address or "Name <address>", got "${from}"`);
  } else if (from === undefined && smtpUrl !== undefined) {
    problems.push('MAIL_FROM: required when SMTP_URL is set');
  }
  const rawPublicUrl = read('PUBLIC_URL');
  let publicUrl = `http://localhost:${read('PORT') ?? '3000'}`;
  if (rawPublicUrl !== undefined) {
    let url: URL | undefined;
    try {
      url = new URL(rawPublicUrl);
    } catch {
      url = undefined;
    }
    if (!url || (url.protocol !== 'http:' && url.protocol !== 'https:') || url.search !== '' || url.hash !== '' || url.username !== '' || url.password !== '') {
      problems.push(`PUBLIC_URL: must be an http(s) URL without query or fragment like https://bastion.example.com, got "${rawPublicUrl}"`);
    } else {
      publicUrl = url.href.replace(/\/+$/, '');
    }
  } else if (smtpUrl !== undefined) {
    problems.push('PUBLIC_URL: required when SMTP_URL is set (the links in mails are built from it)');
  }
  return { smtpUrl, from: from ?? 'Bastion <no-reply@localhost>', publicUrl };
}

const OIDC_PROVIDER_NAME = /^[a-z0-9-]{1,64}$/;
const OIDC_DEFAULT_SCOPES: readonly string[] = ['openid', 'email', 'profile'];
const OIDC_PROVIDER_KEYS = ['name', 'issuer', 'clientId', 'clientSecret', 'scopes'];

/** Loopback hosts may be reached over plain HTTP (a local IdP in tests and development); nothing else may. */
function isLoopbackHost(hostname: string): boolean {
  return hostname === 'localhost' || hostname === '[::1]' || /^127(\.\d{1,3}){3}$/.test(hostname);
}

function httpsOrLoopbackUrl(raw: string): URL | undefined {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    return undefined;
  }
  if (url.protocol === 'https:' || (url.protocol === 'http:' && isLoopbackHost(url.hostname))) return url;
  return undefined;
}

/** OIDC_PROVIDERS (a JSON array of {name, issuer, clientId, clientSecret, scopes?}) and OIDC_REDIRECT_URIS. */
function parseOidc(rawProviders: string | undefined, rawRedirectUris: string | undefined, problems: string[]): OidcSettings {
  const providers: OidcSettings['providers'][number][] = [];
  if (rawProviders !== undefined) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(rawProviders);
    } catch {
      parsed = undefined;
    }
    if (!Array.isArray(parsed)) {
      problems.push('OIDC_PROVIDERS: must be a JSON array of {name, issuer, clientId, clientSecret, scopes?}');
    } else {
      parsed.forEach((entry: unknown, index) => {
        // Never echoes the entry: it holds a client secret.
        const at = `OIDC_PROVIDERS: entry ${index}`;
        if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) {
          problems.push(`${at} is not an object`);
          return;
        }
        const record = entry as Record<string, unknown>;
        const { name, issuer, clientId, clientSecret, scopes } = record;
        const scopeList: unknown = scopes === undefined ? OIDC_DEFAULT_SCOPES : typeof scopes === 'string' ? scopes.split(/\s+/).filter(Boolean) : scopes;
        const bad: string[] = [];
        const unknownKeys = Object.keys(record).filter((key) => !OIDC_PROVIDER_KEYS.includes(key));
        if (unknownKeys.length > 0) bad.push(`unknown keys ${unknownKeys.join(', ')}`);
        const goodName = typeof name === 'string' && OIDC_PROVIDER_NAME.test(name) ? name : undefined;
        if (goodName === undefined) bad.push('name must be 1-64 characters of [a-z0-9-]');
        else if (providers.some((provider) => provider.name === goodName)) bad.push(`name "${goodName}" is used twice`);
        if (typeof issuer !== 'string' || !httpsOrLoopbackUrl(issuer)) bad.push('issuer must be an https URL (http only for a loopback host)');
        if (typeof clientId !== 'string' || clientId === '') bad.push('clientId must be a non-empty string');
        if (typeof clientSecret !== 'string' || clientSecret === '') bad.push('clientSecret must be a non-empty string');
        const scopeNames =
          Array.isArray(scopeList) && scopeList.every((scope): scope is string => typeof scope === 'string' && /^[\x21\x23-\x5b\x5d-\x7e]+$/.test(scope))
            ? scopeList
            : undefined;
        if (!scopeNames?.includes('openid')) bad.push('scopes must be a list (or a space-separated string) of scope names including openid');
        if (bad.length > 0 || goodName === undefined || typeof issuer !== 'string' || typeof clientId !== 'string' || typeof clientSecret !== 'string' || !scopeNames) {
          problems.push(`${at}${goodName === undefined ? '' : ` (${goodName})`}: ${bad.join('; ')}`);
          return;
        }
        providers.push({ name: goodName, issuer, clientId, clientSecret, scopes: [...new Set(scopeNames)] });
      });
    }
  }
  const redirectUris: string[] = [];
  for (const uri of (rawRedirectUris ?? '').split(',').map((part) => part.trim()).filter((part) => part !== '')) {
    const url = httpsOrLoopbackUrl(uri);
    // The token request repeats the redirect URI without its query (openid-client strips it): one
    // with a query or fragment could never match what the provider saw in the authorization request.
    if (!url || uri.includes('?') || uri.includes('#')) {
      problems.push(`OIDC_REDIRECT_URIS: "${uri}" must be an https URL (http only for a loopback host) without query or fragment`);
    } else redirectUris.push(uri);
  }
  if (providers.length > 0 && redirectUris.length === 0) {
    problems.push('OIDC_REDIRECT_URIS: required when OIDC_PROVIDERS is set (the URIs a login may return to)');
  }
  return { providers, redirectUris };
}

/** fastify `trustProxy` syntax: true/false, a hop count, or a comma-separated list of addresses/CIDRs. */
function parseTrustProxy(raw: string | undefined): boolean | string | number {
  if (raw === undefined || raw === 'false') return false;
  if (raw === 'true') return true;
  if (/^\d+$/.test(raw)) return Number(raw);
  return raw;
}
