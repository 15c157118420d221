// A real OpenID Connect provider (oidc-provider) on a loopback port, for driving the service's OIDC
// login end to end with plain HTTP: the interaction (login and consent) is finished by code as the
// account the test chose, so following the redirects with a cookie jar ends at the client's
// redirect_uri with a real code, state and iss.
import { once } from 'node:events';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { exportJWK, generateKeyPair } from 'jose';
import Provider, { type Configuration } from 'oidc-provider';

export interface IdpAccount {
  readonly sub: string;
  readonly email?: string;
  readonly email_verified?: boolean;
  readonly name?: string;
}

export interface LocalIdp {
  readonly issuer: string;
  readonly clientId: string;
  readonly clientSecret: string;
  /** The accounts the provider knows, by subject; set one before a login as it. */
  readonly accounts: Map<string, IdpAccount>;
  /** The next token response's ID token gets this payload change, its signature kept (a tampered token). */
  tamperNextIdToken(change: (payload: Record<string, unknown>) => void): void;
  /**
   * Follows an authorization URL through the provider as `sub` (a fresh browser: new cookies) and
   * returns the URL the provider redirects to at the end (the client's redirect_uri with the answer).
   */
  loginAs(authorizationUrl: string, sub: string): Promise<URL>;
  close(): Promise<void>;
}

/** A cookie jar for one browser, enough for the provider's cookies (names are unique across its paths). */
function cookieJar() {
  const cookies = new Map<string, string>();
  return {
    store(response: Response) {
      for (const line of response.headers.getSetCookie()) {
        const pair = line.split(';', 1)[0] ?? '';
        const eq = pair.indexOf('=');
        if (eq > 0) cookies.set(pair.slice(0, eq).trim(), pair.slice(eq + 1).trim());
      }
    },
    header: () => [...cookies].map(([name, value]) => `${name}=${value}`).join('; '),
  };
}

export async function startLocalIdp(options: { redirectUris: readonly string[] }): Promise<LocalIdp> {
  let provider: Provider | undefined;
  let tamper: ((payload: Record<string, unknown>) => void) | undefined;
  const accounts = new Map<string, IdpAccount>();
  let loginSubject: string | undefined;

  const server = http.createServer((req, res) => {
    if (!provider) {
      res.statusCode = 503;
      res.end();
      return;
    }
    const current = provider;
    if (req.url?.startsWith('/interaction/')) {
      void (async () => {
        try {
          const details = await current.interactionDetails(req, res);
          const accountId = loginSubject;
          if (accountId === undefined || typeof details.params['client_id'] !== 'string') throw new Error('no login chosen');
          const grant = new current.Grant({ accountId, clientId: details.params['client_id'] });
          grant.addOIDCScope(typeof details.params['scope'] === 'string' ? details.params['scope'] : 'openid');
          const grantId = await grant.save();
          await current.interactionFinished(req, res, { login: { accountId }, consent: { grantId } }, { mergeWithLastSubmission: false });
        } catch (error) {
          res.statusCode = 500;
          res.end(String(error));
        }
      })();
      return;
    }
    if (req.url?.startsWith('/token') && tamper) {
      const change = tamper;
      tamper = undefined;
      // Rewrites the JSON the provider is about to send: the ID token's payload, not its signature.
      const end = res.end.bind(res) as (chunk?: unknown) => http.ServerResponse;
      res.end = ((chunk?: unknown) => {
        if (typeof chunk === 'string' || Buffer.isBuffer(chunk)) {
          const body = JSON.parse(chunk.toString()) as { id_token?: string };
          if (body.id_token) {
            const [header, payload, signature] = body.id_token.split('.');
            const claims = JSON.parse(Buffer.from(payload ?? '', 'base64url').toString()) as Record<string, unknown>;
            change(claims);
            body.id_token = [header, Buffer.from(JSON.stringify(claims)).toString('base64url'), signature].join('.');
          }
          const text = JSON.stringify(body);
          res.setHeader('content-length', Buffer.byteLength(text));
          return end(text);
        }
        return end(chunk);
      }) as typeof res.end;
    }
    current.callback()(req, res);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const issuer = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const clientId = 'bastion-test';
  const clientSecret = 'bastion-test-client-secret-0123456789';

  const { privateKey } = await generateKeyPair('RS256', { extractable: true });
  const jwk = { ...(await exportJWK(privateKey)), kid: 'idp-key-1', alg: 'RS256', use: 'sig' };
  const configuration: Configuration = {
    clients: [
      {
        client_id: clientId,
        client_secret: clientSecret,
        redirect_uris: [...options.redirectUris],
        grant_types: ['authorization_code'],
        response_types: ['code'],
        token_endpoint_auth_method: 'client_secret_basic',
      },
    ],
    jwks: { keys: [jwk] },
    cookies: { keys: ['idp-cookie-key-for-tests-only'] },
    claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name'] },
    features: { devInteractions: { enabled: false } },
    interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
    async findAccount(_ctx, sub) {
      const account = accounts.get(sub);
      if (!account) return undefined;
      return { accountId: sub, claims: () => ({ ...account }) };
    },
  };
  provider = new Provider(issuer, configuration);

  return {
    issuer,
    clientId,
    clientSecret,
    accounts,
    tamperNextIdToken(change) {
      tamper = change;
    },
    async loginAs(authorizationUrl, sub) {
      loginSubject = sub;
      const jar = cookieJar();
      let url = new URL(authorizationUrl);
      for (let hops = 0; hops < 10; hops++) {
        if (url.origin !== issuer) return url;
        const response = await fetch(url, { redirect: 'manual', headers: { cookie: jar.header() } });
        jar.store(response);
        const location = response.headers.get('location');
        if (response.status < 300 || response.status >= 400 || !location) {
          throw new Error(`the provider answered ${response.status} at ${url.pathname}: ${await response.text()}`);
        }
        await response.arrayBuffer().catch(() => undefined);
        url = new URL(location, url);
      }
      throw new Error('too many redirects at the provider');
    },
    async close() {
      server.closeAllConnections();
      server.close();
      await once(server, 'close');
    },
  };
}
