// OpenID Connect login (authorization code flow with PKCE S256, state and nonce) against the
// providers of OIDC_PROVIDERS. The flow lives server-side (oidc_flows), found again by the hash of
// its state and spent by the callback; the provider's subject then names the user (user_identities),
// or a verified email links an existing user, or a new user without a password is created. Whether
// the person also passed a second factor is the provider's business: no MFA challenge follows.
import { sha256 } from '../../platform/digest.js';
import * as client from 'openid-client';
import type { AuditTrail } from '../audit/index.js';
import type { LoginResult } from '../auth/index.js';
import type { UsersService } from '../users/index.js';
import type { Database, Tx } from '../../platform/db/index.js';
import { DomainError, notFound, validationFailed } from '../../platform/errors.js';
import type { Logger } from '../../platform/logger.js';
import type { RequestOrigin } from '../../platform/request-origin.js';
import { oidcFailed, providerUnavailable } from './oidc.errors.js';
import * as repo from './oidc.repo.js';

export interface OidcProviderSettings {
  /** The path segment of the provider's routes: [a-z0-9-]. */
  readonly name: string;
  readonly issuer: string;
  readonly clientId: string;
  readonly clientSecret: string;
  readonly scopes: readonly string[];
}

export interface OidcSettings {
  readonly providers: readonly OidcProviderSettings[];
  /** Where a login may return to (exact match). */
  readonly redirectUris: readonly string[];
}

export interface CallbackParameters {
  readonly state: string;
  readonly code?: string | undefined;
  /** RFC 9207: the provider names itself in its answer; checked when its metadata says it does. */
  readonly iss?: string | undefined;
  readonly error?: string | undefined;
}

export interface OidcService {
  /** The provider's authorization URL for a new login flow that returns to `redirectUri`. */
  authorize(provider: string, redirectUri: string): Promise<URL>;
  /** Completes the flow `state` names: the code exchanged, the ID token checked, the user's session started. */
  callback(provider: string, parameters: CallbackParameters, origin?: RequestOrigin): Promise<LoginResult>;
  /** In a user deletion's transaction: the user's identities go, so their subjects can start afresh. */
  forgetUser(tx: Tx, userId: string): Promise<void>;
  /** Deletes flows that expired over an hour ago; resolves to how many. */
  purgeExpiredFlows(): Promise<number>;
}

interface OidcServiceDeps {
  readonly database: Database;
  readonly users: UsersService;
  /** Starts a session for a user the provider vouched for (auth.loginAs). */
  readonly startSession: (userId: string, provider: string, origin?: RequestOrigin) => Promise<LoginResult>;
  readonly settings: OidcSettings;
  readonly logger: Logger;
  readonly audit?: AuditTrail;
  /** Seconds a flow may take from the redirect to the callback. */
  readonly flowTtlSeconds?: number;
  /** Seconds a discovery or token request may take before the provider counts as unreachable. */
  readonly requestTimeoutSeconds?: number;
}

const FLOW_TTL_SECONDS = 600;
const REQUEST_TIMEOUT_SECONDS = 5;
/** Provider metadata is discovered again after this long (keys rotate through jwks_uri on their own). */
const DISCOVERY_MAX_AGE_MS = 24 * 3_600_000;
/** After a failed discovery, requests fail fast for this long instead of each waiting for a timeout. */
const DISCOVERY_RETRY_AFTER_MS = 2_000;
const PURGE_GRACE_SECONDS = 3_600;
const PURGE_BATCH = 10_000;
/** Resolving a subject to a user retries when a concurrent login of the same subject or email won a race. */
const MAX_RESOLVE_ATTEMPTS = 3;
const NAME_MAX_LENGTH = 100;
const EMAIL_MAX_LENGTH = 254;


/** True for failures to reach the provider at all (refused, reset, DNS, timeout), as opposed to its answers. */
function isUnreachable(error: unknown): boolean {
  for (let current: unknown = error, depth = 0; current instanceof Error && depth < 5; current = current.cause, depth++) {
    if (current.name === 'TimeoutError' || current.name === 'AbortError') return true;
    if (current instanceof TypeError && current.message === 'fetch failed') return true;
    const code = (current as { code?: unknown }).code;
    if (typeof code === 'string' && /^(ECONNREFUSED|ECONNRESET|ENOTFOUND|EAI_AGAIN|ETIMEDOUT|EHOSTUNREACH|UND_ERR_)/.test(code)) return true;
  }
  return false;
}

/**
 * What openid-client said went wrong, for the log: its code and the messages of the error and its
 * causes (which name the failed check, e.g. the nonce claim), never the values compared or a token.
 */
function failureOf(error: unknown): { code?: string; message: string } {
  if (!(error instanceof Error)) return { message: String(error) };
  const messages: string[] = [];
  for (let current: unknown = error, depth = 0; current instanceof Error && depth < 5; current = current.cause, depth++) {
    messages.push(current.message);
  }
  const code: unknown = (error as { code?: unknown }).code;
  const message = messages.join(': ');
  return typeof code === 'string' ? { code, message } : { message };
}

/** A claim that is text the users table can store: no NUL, no lone surrogate, trimmed; else undefined. */
function storableText(value: unknown, maxLength: number): string | undefined {
  if (typeof value !== 'string') return undefined;
  const cleaned = Array.from(value.replace(/\u0000/g, ''))
    .filter((char) => !/^[\uD800-\uDFFF]$/.test(char))
    .join('')
    .trim();
  if (cleaned === '') return undefined;
  return Array.from(cleaned).slice(0, maxLength).join('').trim();
}

interface ProviderIdentity {
  readonly subject: string;
  readonly email: string | undefined;
  readonly emailVerified: boolean;
  readonly name: string | undefined;
}

function identityOf(claims: Record<string, unknown>, subject: string): ProviderIdentity {
  const rawEmail = typeof claims['email'] === 'string' ? claims['email'].trim().toLowerCase() : undefined;
  const email = rawEmail && rawEmail.length <= EMAIL_MAX_LENGTH && /^[^\s@]+@[^\s@]+\.[^\s@]+$/.test(rawEmail) ? rawEmail : undefined;
  // Some providers send the boolean as a string.
  const verified = claims['email_verified'] === true || claims['email_verified'] === 'true';
  const givenAndFamily = [claims['given_name'], claims['family_name']].filter((part) => typeof part === 'string').join(' ');
  const name =
    storableText(claims['name'], NAME_MAX_LENGTH) ??
    storableText(givenAndFamily, NAME_MAX_LENGTH) ??
    storableText(claims['preferred_username'], NAME_MAX_LENGTH);
  return { subject, email, emailVerified: email !== undefined && verified, name };
}

interface DiscoveredProvider {
  readonly settings: OidcProviderSettings;
  configuration?: client.Configuration;
  discoveredAt: number;
  pending?: Promise<client.Configuration>;
  failedAt?: number;
}

/** Thrown inside a registration's transaction when another login tied the subject first: look again. */
class IdentityTaken extends Error {}

export function createOidcService(deps: OidcServiceDeps): OidcService {
  const { database, users, logger, settings } = deps;
  const db = database.db;
  const flowTtlSeconds = deps.flowTtlSeconds ?? FLOW_TTL_SECONDS;
  const timeout = deps.requestTimeoutSeconds ?? REQUEST_TIMEOUT_SECONDS;
  const providers = new Map<string, DiscoveredProvider>(
    settings.providers.map((provider) => [provider.name, { settings: provider, discoveredAt: 0 }]),
  );
  const redirectUris = new Set(settings.redirectUris);

  const providerNamed = (name: string): DiscoveredProvider => {
    const provider = providers.get(name);
    if (!provider) throw notFound('Provider');
    return provider;
  };

  const discover = async (provider: DiscoveredProvider): Promise<client.Configuration> => {
    const { issuer, clientId, clientSecret } = provider.settings;
    const insecure = new URL(issuer).protocol === 'http:'; // config allows it for loopback issuers only
    return client.discovery(new URL(issuer), clientId, undefined, client.ClientSecretBasic(clientSecret), {
      timeout,
      // ID tokens are verified against the provider's keys too, not only trusted for the channel they
      // came over (which, for a loopback issuer in development, is not TLS).
      execute: [...(insecure ? [client.allowInsecureRequests] : []), client.enableNonRepudiationChecks],
    });
  };

  /**
   * The provider's configuration, discovered on first use and kept (the service starts whatever the
   * providers' state); concurrent first uses share one discovery. An unreachable provider is 503;
   * metadata that has aged out but cannot be refreshed is still used.
   */
  const configurationOf = async (provider: DiscoveredProvider): Promise<client.Configuration> => {
    const now = Date.now();
    if (provider.configuration && now - provider.discoveredAt < DISCOVERY_MAX_AGE_MS) return provider.configuration;
    if (!provider.pending && provider.failedAt !== undefined && now - provider.failedAt < DISCOVERY_RETRY_AFTER_MS) {
      if (provider.configuration) return provider.configuration;
      throw providerUnavailable();
    }
    provider.pending ??= discover(provider)
      .then((configuration) => {
        provider.configuration = configuration;
        provider.discoveredAt = Date.now();
        provider.failedAt = undefined;
        return configuration;
      })
      .finally(() => {
        provider.pending = undefined;
      });
    try {
      return await provider.pending;
    } catch (error) {
      provider.failedAt = Date.now();
      logger.warn({ provider: provider.settings.name, ...failureOf(error) }, 'oidc: provider discovery failed');
      if (provider.configuration) return provider.configuration;
      throw providerUnavailable();
    }
  };

  /** The ID token's claims, with the UserInfo endpoint's when the ID token carries no email. */
  const claimsOf = async (
    configuration: client.Configuration,
    tokens: Awaited<ReturnType<typeof client.authorizationCodeGrant>>,
  ): Promise<ProviderIdentity> => {
    const idClaims = tokens.claims();
    if (!idClaims) throw oidcFailed();
    const subject = idClaims.sub;
    let claims: Record<string, unknown> = { ...idClaims };
    if (claims['email'] === undefined && configuration.serverMetadata().userinfo_endpoint) {
      // The UserInfo response must be about the ID token's subject (openid-client checks `sub`).
      const userInfo = await client.fetchUserInfo(configuration, tokens.access_token, subject);
      claims = { ...userInfo, ...claims };
    }
    return identityOf(claims, subject);
  };

  /** The user a verified email names, tied to the subject in one transaction; 'raced' if another tie won. */
  const linkByEmail = (provider: string, identity: ProviderIdentity & { email: string }, origin: RequestOrigin | undefined) =>
    database.transaction(async (tx): Promise<string | 'raced' | undefined> => {
      const userId = await users.lockLiveUserByEmail(tx, identity.email);
      if (!userId) return undefined;
      if (!(await repo.insertIdentity(tx, { provider, subject: identity.subject, userId, email: identity.email }))) return 'raced';
      await deps.audit?.record(
        tx,
        { action: 'auth.oidc_linked', actorId: userId, targetId: userId, details: { provider, subject: identity.subject } },
        origin,
      );
      return userId;
    });

  /**
   * The user `identity` logs in as: the one its subject is tied to; else the live user with its
   * email, only when the provider says the email is verified (tied from then on); else a new user.
   * Every write is one statement or transaction that either wins or sees who won, and a lost race
   * looks again: two first logins of one subject end as one user.
   */
  const resolveUser = async (provider: string, identity: ProviderIdentity, origin: RequestOrigin | undefined): Promise<string> => {
    for (let attempt = 1; attempt <= MAX_RESOLVE_ATTEMPTS; attempt++) {
      const known = await repo.findIdentity(db, provider, identity.subject);
      if (known?.live) return known.userId;
      if (known) await repo.deleteIdentityOfDeletedUser(db, provider, identity.subject);

      const { email } = identity;
      if (email === undefined) throw oidcFailed('The identity provider did not give a usable email address');
      if (identity.emailVerified) {
        const linked = await linkByEmail(provider, { ...identity, email }, origin);
        if (linked === 'raced') continue;
        if (linked !== undefined) return linked;
      }
      try {
        const user = await users.registerExternal(
          { email, name: identity.name ?? storableText(email.split('@')[0], NAME_MAX_LENGTH) ?? 'User', emailVerified: identity.emailVerified },
          async (tx, userId) => {
            if (!(await repo.insertIdentity(tx, { provider, subject: identity.subject, userId, email }))) throw new IdentityTaken();
          },
          origin,
        );
        return user.id;
      } catch (error) {
        if (error instanceof IdentityTaken) continue;
        if (!(error instanceof DomainError && error.code === 'EMAIL_TAKEN')) throw error;
        // Someone has the address. A concurrent first login of this very subject (it created the
        // user, whose email this is): its user. Else, verified: they registered since we looked, so
        // link on the next pass; unverified: the address is not this person's to claim (EMAIL_TAKEN,
        // as registering with it would be).
        const raced = await repo.findIdentity(db, provider, identity.subject);
        if (raced?.live) return raced.userId;
        if (identity.emailVerified) continue;
        throw error;
      }
    }
    throw oidcFailed();
  };

  return {
    async authorize(name, redirectUri) {
      if (!redirectUris.has(redirectUri)) {
        throw validationFailed([{ path: 'redirect_uri', message: 'is not one of the allowed redirect URIs' }]);
      }
      const provider = providerNamed(name);
      const configuration = await configurationOf(provider);
      const state = client.randomState();
      const nonce = client.randomNonce();
      const codeVerifier = client.randomPKCECodeVerifier();
      await repo.insertFlow(db, {
        stateHash: sha256(state),
        provider: name,
        codeVerifier,
        nonce,
        redirectUri,
        ttlSeconds: flowTtlSeconds,
      });
      return client.buildAuthorizationUrl(configuration, {
        redirect_uri: redirectUri,
        scope: provider.settings.scopes.join(' '),
        response_type: 'code',
        code_challenge: await client.calculatePKCECodeChallenge(codeVerifier),
        code_challenge_method: 'S256',
        state,
        nonce,
      });
    },

    async callback(name, parameters, origin) {
      const provider = providerNamed(name);
      // Before the flow is spent: a provider that is down leaves the flow for a retry.
      const configuration = await configurationOf(provider);
      const flow = await repo.spendFlow(db, sha256(parameters.state), name);
      if (!flow) throw oidcFailed();
      if (parameters.error !== undefined || parameters.code === undefined) {
        logger.info({ provider: name, error: parameters.error ?? 'no code' }, 'oidc: the provider answered without a code');
        throw oidcFailed();
      }
      const callbackUrl = new URL(flow.redirectUri);
      callbackUrl.searchParams.set('code', parameters.code);
      callbackUrl.searchParams.set('state', parameters.state);
      if (parameters.iss !== undefined) callbackUrl.searchParams.set('iss', parameters.iss);

      let identity: ProviderIdentity;
      try {
        const tokens = await client.authorizationCodeGrant(configuration, callbackUrl, {
          pkceCodeVerifier: flow.codeVerifier,
          expectedState: parameters.state,
          expectedNonce: flow.nonce,
          idTokenExpected: true,
        });
        identity = await claimsOf(configuration, tokens);
      } catch (error) {
        if (error instanceof DomainError) throw error;
        if (isUnreachable(error)) {
          logger.warn({ provider: name, ...failureOf(error) }, 'oidc: provider unreachable during the code exchange');
          throw providerUnavailable();
        }
        logger.info({ provider: name, ...failureOf(error) }, 'oidc: code exchange or ID token refused');
        throw oidcFailed();
      }
      const userId = await resolveUser(name, identity, origin);
      return deps.startSession(userId, name, origin);
    },

    forgetUser: (tx, userId) => repo.deleteIdentitiesOfUser(tx, userId),

    async purgeExpiredFlows() {
      let total = 0;
      for (;;) {
        const deleted = await repo.deleteExpiredFlows(db, PURGE_GRACE_SECONDS, PURGE_BATCH);
        total += deleted;
        if (deleted < PURGE_BATCH) return total;
      }
    },
  };
}
