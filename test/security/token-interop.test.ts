// Access tokens any team's stack can verify (ACCESS_TOKEN_ALG = EdDSA, ES256 or RS256): for each
// algorithm the real service is started, a user logs in, and the access token is verified by other
// stacks against the served JWKS alone: jose (createRemoteJWKSet), jsonwebtoken + jwks-rsa (ES256 and
// RS256: jsonwebtoken has no EdDSA), and PyJWT's PyJWKClient in a python3 child process (Debian's
// python3-jwt). Then the algorithm changes across restarts on one database: tokens signed before keep
// working and verifying until they expire, new logins get the new algorithm. And a header naming an
// algorithm other than its key's own (none, HS256 keyed with the public key, ES256 over an RSA kid) is
// refused with 401.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHmac, createPublicKey } from 'node:crypto';
import { describe } from 'node:test';
import { promisify } from 'node:util';
import { createRemoteJWKSet, decodeJwt, decodeProtectedHeader, importJWK, jwtVerify, SignJWT, type JWK } from 'jose';
import jsonwebtoken from 'jsonwebtoken';
import jwksClient from 'jwks-rsa';
import { login, registerAndLogin, type Session } from '../helpers/auth.js';
import { servicesRequired, type TestDatabase } from '../helpers/backends.js';
import type { ApiResponse } from '../helpers/client.js';
import { describeOnBackends } from '../helpers/describe-on-backends.js';
import type { TestServer } from '../helpers/server.js';

type Algorithm = 'EdDSA' | 'ES256' | 'RS256';
const ALGORITHMS: readonly Algorithm[] = ['EdDSA', 'ES256', 'RS256'];
/** Exactly what the JWKS may say of a key of each type: its public members, kid, alg and use. */
const PUBLISHED_MEMBERS: Record<Algorithm, readonly string[]> = {
  EdDSA: ['alg', 'crv', 'kid', 'kty', 'use', 'x'],
  ES256: ['alg', 'crv', 'kid', 'kty', 'use', 'x', 'y'],
  RS256: ['alg', 'e', 'kid', 'kty', 'n', 'use'],
};
const JWKS_PATH = '/.well-known/jwks.json';

const run = promisify(execFile);
const segment = (value: unknown): string => Buffer.from(JSON.stringify(value)).toString('base64url');

// ---- PyJWT (python3-jwt) -----------------------------------------------------------------------------

/** Verifies argv[2] (a token) with the key PyJWKClient finds for its kid at argv[1]; prints header and claims. */
const PYJWT_SCRIPT = `
import json, sys, jwt
url, token, alg = sys.argv[1], sys.argv[2], sys.argv[3]
key = jwt.PyJWKClient(url).get_signing_key_from_jwt(token)
claims = jwt.decode(token, key.key, algorithms=[alg], issuer="bastion")
print(json.dumps({"alg": jwt.get_unverified_header(token)["alg"], "sub": claims["sub"], "pyjwt": jwt.__version__}))
`;

/** The first python3 that imports PyJWT with its crypto backend (Debian's is not the one a pyenv shim runs). */
async function findPyJwt(): Promise<string | undefined> {
  for (const interpreter of ['python3', '/usr/bin/python3']) {
    try {
      await run(interpreter, ['-c', 'import jwt, cryptography'], { timeout: 20_000 });
      return interpreter;
    } catch {
      // not this one
    }
  }
  return undefined;
}

const python = await findPyJwt();
const PYJWT_MISSING =
  'python3-jwt (PyJWT) with python3-cryptography is not installed (apt-get install python3-jwt python3-cryptography)';
/** Skip the PyJWT tests on a laptop without it; in CI (BASTION_REQUIRE_SERVICES=1) they run and fail. */
const pythonSkip = python === undefined && !servicesRequired() ? PYJWT_MISSING : undefined;
if (pythonSkip) process.stdout.write(`# SKIP PyJWT tests: ${pythonSkip}. Set BASTION_REQUIRE_SERVICES=1 to fail instead.\n`);

async function verifyWithPyJwt(baseUrl: string, token: string, alg: Algorithm): Promise<{ alg: string; sub: string }> {
  assert.ok(python, `${PYJWT_MISSING}; CI requires it`);
  try {
    const { stdout } = await run(python, ['-c', PYJWT_SCRIPT, `${baseUrl}${JWKS_PATH}`, token, alg], { timeout: 30_000 });
    return JSON.parse(stdout) as { alg: string; sub: string };
  } catch (error) {
    const { stderr } = error as { stderr?: string };
    throw new Error(`PyJWT did not verify the ${alg} token: ${stderr ?? String(error)}`);
  }
}

// ---- jose, jsonwebtoken + jwks-rsa -----------------------------------------------------------------

async function verifyWithJose(baseUrl: string, token: string, alg: Algorithm) {
  const jwks = createRemoteJWKSet(new URL(`${baseUrl}${JWKS_PATH}`));
  return jwtVerify(token, jwks, { algorithms: [alg], issuer: 'bastion' });
}

function verifyWithJsonwebtoken(baseUrl: string, token: string, alg: 'ES256' | 'RS256'): Promise<jsonwebtoken.JwtPayload> {
  const client = jwksClient({ jwksUri: `${baseUrl}${JWKS_PATH}`, cache: false });
  const getKey: jsonwebtoken.GetPublicKeyOrSecret = (header, callback) => {
    client.getSigningKey(header.kid).then(
      (key) => callback(null, key.getPublicKey()),
      (error: Error) => callback(error),
    );
  };
  return new Promise((resolve, reject) => {
    jsonwebtoken.verify(token, getKey, { algorithms: [alg], issuer: 'bastion', complete: false }, (error, decoded) => {
      if (error) reject(error);
      else if (decoded === undefined || typeof decoded === 'string') reject(new Error(`unexpected payload ${String(decoded)}`));
      else resolve(decoded);
    });
  });
}

interface Jwks {
  keys: Array<Record<string, unknown> & { kid: string; alg: string; kty: string }>;
}

const me = (server: TestServer, token: string): Promise<ApiResponse<{ data: { id: string } }>> =>
  server.client.get('/api/v1/users/me', { token });

function assertUnauthenticated(response: ApiResponse, what: string): void {
  assert.equal(response.status, 401, `${what}: expected 401, got ${response.status} ${response.text}`);
  assert.equal((response.body as { error: { code: string } }).error.code, 'UNAUTHENTICATED', `${what}: ${response.text}`);
}

describeOnBackends('access tokens verified elsewhere', ({ it, before, startServer, createDatabase }) => {
  for (const alg of ALGORITHMS) {
    describe(`ACCESS_TOKEN_ALG=${alg}`, () => {
      let server: TestServer;
      let session: Session;

      before(async () => {
        server = await startServer({ ACCESS_TOKEN_ALG: alg });
        session = await registerAndLogin(server.client);
      });

      it(`when a user logs in, then the access token is ${alg} and the JWKS publishes its key with kid, alg, use and only its public members`, async () => {
        const header = decodeProtectedHeader(session.accessToken);
        assert.equal(header.alg, alg);
        const jwks = await server.client.get<Jwks>(JWKS_PATH);
        assert.equal(jwks.status, 200);
        assert.equal(jwks.body.keys.length, 1, jwks.text);
        const [key] = jwks.body.keys;
        assert.ok(key);
        assert.deepEqual(Object.keys(key).sort(), PUBLISHED_MEMBERS[alg], jwks.text);
        assert.deepEqual([key.kid, key.alg, key['use']], [header.kid, alg, 'sig']);
        assert.equal((await me(server, session.accessToken)).status, 200);
      });

      it(`when jose verifies the ${alg} token with createRemoteJWKSet, then it passes with the user's claims`, async () => {
        const { payload, protectedHeader } = await verifyWithJose(server.baseUrl, session.accessToken, alg);
        assert.equal(protectedHeader.alg, alg);
        assert.equal(payload.sub, session.user.id);
      });

      if (alg !== 'EdDSA') {
        it(`when jsonwebtoken verifies the ${alg} token with jwks-rsa's key, then it passes with the user's claims`, async () => {
          const payload = await verifyWithJsonwebtoken(server.baseUrl, session.accessToken, alg);
          assert.equal(payload.sub, session.user.id);
          assert.equal(payload.iss, 'bastion');
          // and it is the signature that is checked: a flipped bit fails
          const [header, body, signature] = session.accessToken.split('.');
          const flipped = Buffer.from(signature ?? '', 'base64url');
          flipped[5] = (flipped[5] ?? 0) ^ 1;
          await assert.rejects(verifyWithJsonwebtoken(server.baseUrl, `${header}.${body}.${flipped.toString('base64url')}`, alg));
        });
      }

      it(`when PyJWT (PyJWKClient) verifies the ${alg} token, then it passes with the user's claims`, { skip: pythonSkip, timeout: 60_000 }, async () => {
        const verified = await verifyWithPyJwt(server.baseUrl, session.accessToken, alg);
        assert.deepEqual({ alg: verified.alg, sub: verified.sub }, { alg, sub: session.user.id });
      });
    });
  }

  describe('ACCESS_TOKEN_ALG changed across restarts on one database (EdDSA, then ES256, then RS256)', () => {
    let database: TestDatabase;
    const issued: Partial<Record<Algorithm, Session>> = {};
    let final: TestServer;
    let email: string;
    let password: string;

    /** Starts the service with `alg` on the shared database; a previous one is stopped first. */
    const restartWith = async (alg: Algorithm, previous?: TestServer): Promise<TestServer> => {
      await previous?.stop();
      return startServer({ ACCESS_TOKEN_ALG: alg }, { database });
    };

    before(async () => {
      database = await createDatabase({ pgliteTemplate: true });
      let server = await restartWith('EdDSA');
      const first = await registerAndLogin(server.client);
      ({ email, password } = { email: first.user.email, password: first.password });
      issued.EdDSA = first;
      server = await restartWith('ES256', server);
      issued.ES256 = await login(server.client, email, password);
      final = await restartWith('RS256', server);
      issued.RS256 = await login(final.client, email, password);
    });

    it('when tokens were signed before a restart with another algorithm, then they still work against the API, and new logins get the new algorithm', async () => {
      for (const alg of ALGORITHMS) {
        const session = issued[alg];
        assert.ok(session);
        assert.equal(decodeProtectedHeader(session.accessToken).alg, alg, `a login under ACCESS_TOKEN_ALG=${alg}`);
        const response = await me(final, session.accessToken);
        assert.equal(response.status, 200, `the ${alg} token after the restarts: ${response.text}`);
        assert.equal(response.body.data.id, issued.EdDSA?.user.id);
      }
      const fresh = await login(final.client, email, password);
      assert.equal(decodeProtectedHeader(fresh.accessToken).alg, 'RS256');
    });

    it('when the JWKS is read after the restarts, then it lists every key still verifying, each with its own alg, and jose verifies every token with it', async () => {
      const jwks = await final.client.get<Jwks>(JWKS_PATH);
      const listed = jwks.body.keys.map((key) => [key.kid, key.alg]).sort();
      const expected = ALGORITHMS.map((alg) => [decodeProtectedHeader(issued[alg]?.accessToken ?? '').kid, alg]).sort();
      assert.deepEqual(listed, expected, jwks.text);
      for (const key of jwks.body.keys) assert.deepEqual(Object.keys(key).sort(), PUBLISHED_MEMBERS[key.alg as Algorithm]);
      for (const alg of ALGORITHMS) {
        const { protectedHeader } = await verifyWithJose(final.baseUrl, issued[alg]?.accessToken ?? '', alg);
        assert.equal(protectedHeader.alg, alg);
      }
    });

    it('when jsonwebtoken and PyJWT verify the tokens signed before the restarts against the new JWKS, then they pass', { skip: pythonSkip, timeout: 60_000 }, async () => {
      for (const alg of ['ES256', 'RS256'] as const) {
        assert.equal((await verifyWithJsonwebtoken(final.baseUrl, issued[alg]?.accessToken ?? '', alg)).sub, issued.EdDSA?.user.id);
      }
      for (const alg of ALGORITHMS) {
        assert.equal((await verifyWithPyJwt(final.baseUrl, issued[alg]?.accessToken ?? '', alg)).alg, alg);
      }
    });

    it('when a header names another algorithm than its kid\'s key (none, HS256 keyed with the public key, ES256 over the RS256 kid), then 401', async () => {
      const rsa = issued.RS256;
      const ec = issued.ES256;
      assert.ok(rsa && ec);
      const rsaKid = decodeProtectedHeader(rsa.accessToken).kid;
      const ecKid = decodeProtectedHeader(ec.accessToken).kid;
      assert.ok(rsaKid && ecKid);
      const claims = decodeJwt(rsa.accessToken);
      const rows = await final.app.database.db.selectFrom('signing_keys').select(['kid', 'private_jwk']).execute();
      const privateJwkOf = (kid: string): JWK => {
        const stored = rows.find((row) => row.kid === kid)?.private_jwk;
        assert.ok(stored, `the key ${kid} is stored`);
        return (typeof stored === 'string' ? JSON.parse(stored) : stored) as JWK;
      };
      const ecPrivate = await importJWK(privateJwkOf(ecKid), 'ES256');

      // Control: the same claims signed by the ES256 key under its own kid are accepted, so each refusal
      // below is for the algorithm alone.
      const genuine = await new SignJWT(claims).setProtectedHeader({ alg: 'ES256', kid: ecKid, typ: 'JWT' }).sign(ecPrivate);
      assert.equal((await me(final, genuine)).status, 200, 'control: ES256 claims under the ES256 kid');

      const [, payload, signature] = rsa.accessToken.split('.');
      assertUnauthenticated(await me(final, `${segment({ alg: 'none', kid: rsaKid, typ: 'JWT' })}.${payload}.`), 'alg none');
      assertUnauthenticated(await me(final, `${segment({ alg: 'none', kid: rsaKid, typ: 'JWT' })}.${payload}.${signature}`), 'alg none, signature kept');

      const jwks = await final.client.get<Jwks>(JWKS_PATH);
      const rsaJwk = jwks.body.keys.find((key) => key.kid === rsaKid);
      assert.ok(rsaJwk);
      const rsaPublic = createPublicKey({ key: { kty: 'RSA', n: String(rsaJwk['n']), e: String(rsaJwk['e']) }, format: 'jwk' });
      const secrets: Array<[string, Buffer | string]> = [
        ['SPKI PEM', String(rsaPublic.export({ type: 'spki', format: 'pem' }))],
        ['SPKI DER bytes', rsaPublic.export({ type: 'spki', format: 'der' })],
        ['PKCS#1 PEM', String(rsaPublic.export({ type: 'pkcs1', format: 'pem' }))],
        ['modulus bytes', Buffer.from(String(rsaJwk['n']), 'base64url')],
        ['JWKS entry as JSON', JSON.stringify(rsaJwk)],
      ];
      for (const [what, secret] of secrets) {
        const input = `${segment({ alg: 'HS256', kid: rsaKid, typ: 'JWT' })}.${payload}`;
        assertUnauthenticated(await me(final, `${input}.${createHmac('sha256', secret).update(input).digest('base64url')}`), `HS256 keyed with the ${what}`);
      }

      const esOverRsa = await new SignJWT(claims).setProtectedHeader({ alg: 'ES256', kid: rsaKid, typ: 'JWT' }).sign(ecPrivate);
      assertUnauthenticated(await me(final, esOverRsa), 'ES256 header over the RS256 kid');
      const rsOverEc = await new SignJWT(claims)
        .setProtectedHeader({ alg: 'RS256', kid: ecKid, typ: 'JWT' })
        .sign(await importJWK(privateJwkOf(rsaKid), 'RS256'));
      assertUnauthenticated(await me(final, rsOverEc), 'RS256 header over the ES256 kid');
    });
  });
});
