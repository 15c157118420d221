// Forged, tampered and expired access tokens: every one of them must be refused with 401
// UNAUTHENTICATED on an authenticated route. Tokens are crafted with jose (and by hand where jose
// refuses to build something malicious), signed where needed with the server's own private key read
// from the database, so that the negative cases differ from a valid token in exactly one respect.
import assert from 'node:assert/strict';
import { createHmac, createPublicKey, randomUUID } from 'node:crypto';
import {
  decodeJwt,
  decodeProtectedHeader,
  exportJWK,
  generateKeyPair,
  importJWK,
  SignJWT,
  type CryptoKey,
  type JWK,
  type JWTPayload,
} from 'jose';
import { registerAndLogin, loginAdmin, type Session } from '../helpers/auth.js';
import type { ApiResponse } from '../helpers/client.js';
import { describeOnBackends } from '../helpers/describe-on-backends.js';
import type { TestServer } from '../helpers/server.js';

interface ErrorBody {
  error: { code: string; message: string; requestId: string };
}

interface AccessClaims extends JWTPayload {
  sub: string;
  ver: number;
  sid: string;
  role: string;
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
const segment = (value: unknown): string => Buffer.from(JSON.stringify(value)).toString('base64url');
const nowSeconds = (): number => Math.floor(Date.now() / 1000);

function assertUnauthenticated(response: ApiResponse, what: string): void {
  assert.equal(response.status, 401, `${what}: expected 401, got ${response.status} ${response.text}`);
  const body = response.body as ErrorBody;
  assert.equal(body.error.code, 'UNAUTHENTICATED', `${what}: ${response.text}`);
  assert.equal(body.error.requestId, response.headers.get('x-request-id'));
}

function hmacToken(header: Record<string, unknown>, payload: unknown, secret: Buffer | string): string {
  const signingInput = `${segment(header)}.${segment(payload)}`;
  return `${signingInput}.${createHmac('sha256', secret).update(signingInput).digest('base64url')}`;
}

describeOnBackends('access-token attacks', ({ it, before, startServer }) => {
  let server: TestServer;
  let user: Session;
  let admin: Session;
  let kid: string;
  let publicJwk: JWK;
  let serverPrivateKey: CryptoKey | Uint8Array;

  const me = (authorization: string | undefined) =>
    server.client.get('/api/v1/users/me', authorization === undefined ? {} : { headers: { authorization } });
  const meWith = (token: string) => me(`Bearer ${token}`);
  const claimsOf = (session: Session): AccessClaims => decodeJwt(session.accessToken) as AccessClaims;

  /** A token signed with the server's real signing key; `claims` override the user's real ones. */
  const signWithServerKey = (
    claims: Record<string, unknown>,
    options: { header?: Record<string, unknown>; issuer?: string | null; exp?: number } = {},
  ) => {
    const base = claimsOf(user);
    const jwt = new SignJWT({ ver: base.ver, sid: base.sid, role: base.role, ...claims })
      .setProtectedHeader({ alg: 'EdDSA', kid, typ: 'JWT', ...options.header })
      .setSubject(typeof claims['sub'] === 'string' ? claims['sub'] : base.sub)
      .setIssuedAt()
      .setExpirationTime(options.exp ?? nowSeconds() + 300);
    if (options.issuer !== null) jwt.setIssuer(options.issuer ?? 'bastion');
    return jwt.sign(serverPrivateKey);
  };

  before(async () => {
    server = await startServer();
    user = await registerAndLogin(server.client);
    admin = await loginAdmin(server.client);
    const jwks = await server.client.get<{ keys: JWK[] }>('/.well-known/jwks.json');
    assert.equal(jwks.status, 200);
    const row = await server.app.database.db
      .selectFrom('signing_keys')
      .select(['kid', 'private_jwk'])
      .where('retired_at', 'is', null)
      .orderBy('created_at', 'desc')
      .executeTakeFirstOrThrow();
    kid = row.kid;
    const published = jwks.body.keys.find((key) => key.kid === kid);
    assert.ok(published, 'the active signing key is published in the JWKS');
    publicJwk = published;
    assert.equal(decodeProtectedHeader(user.accessToken).kid, kid, 'issued tokens carry the active kid');
    const privateJwk = (typeof row.private_jwk === 'string' ? JSON.parse(row.private_jwk) : row.private_jwk) as JWK;
    serverPrivateKey = await importJWK(privateJwk, 'EdDSA');
  });

  it('when a real token or one signed with the server key is sent, then /users/me answers 200 (control)', async () => {
    assert.equal((await meWith(user.accessToken)).status, 200);
    const crafted = await meWith(await signWithServerKey({}));
    assert.equal(crafted.status, 200, `a correctly crafted token must pass, else the attacks below prove nothing: ${crafted.text}`);
    assert.equal((crafted.body as { data: { id: string } }).data.id, user.user.id);
  });

  it('when the Authorization header is missing or not a bearer token, then 401 UNAUTHENTICATED', async () => {
    assertUnauthenticated(await me(undefined), 'missing header');
    assertUnauthenticated(await me('Basic x'), 'Basic x');
    assertUnauthenticated(await me(`Basic ${Buffer.from(`${user.user.email}:pw`).toString('base64')}`), 'Basic credentials');
    assertUnauthenticated(await me('Bearer'), 'Bearer with nothing');
    assertUnauthenticated(await me('Bearer '), 'Bearer and a space');
    assertUnauthenticated(await me(''), 'empty header');
    assertUnauthenticated(await me(user.accessToken), 'token without the Bearer scheme');
    assertUnauthenticated(await me(`Token ${user.accessToken}`), 'another scheme with a valid token');
    assertUnauthenticated(await me(`Bearer ${user.accessToken} ${user.accessToken}`), 'two tokens');
    assertUnauthenticated(await me('Bearer not-a-jwt'), 'garbage token');
    assertUnauthenticated(await me('Bearer a.b.c'), 'three garbage segments');
  });

  it('when a token with alg "none" is sent, then 401 UNAUTHENTICATED', async () => {
    const [, payload] = user.accessToken.split('.');
    const claims = claimsOf(user);
    for (const alg of ['none', 'None', 'NONE', 'nOnE']) {
      assertUnauthenticated(await meWith(`${segment({ alg, kid, typ: 'JWT' })}.${payload}.`), `alg ${alg}, empty signature`);
      assertUnauthenticated(await meWith(`${segment({ alg, typ: 'JWT' })}.${segment(claims)}.`), `alg ${alg}, no kid`);
    }
    // alg none with the real signature left in place
    const [, , signature] = user.accessToken.split('.');
    assertUnauthenticated(await meWith(`${segment({ alg: 'none', kid, typ: 'JWT' })}.${payload}.${signature}`), 'alg none, real signature');
  });

  it('when an HS256 token is keyed with the server public key, then 401 UNAUTHENTICATED', async () => {
    const claims = { ...claimsOf(user), exp: nowSeconds() + 300 };
    const x = publicJwk.x;
    assert.ok(x, 'the JWKS carries the Ed25519 public key (x)');
    const spkiPem = createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x }, format: 'jwk' }).export({ type: 'spki', format: 'pem' });
    const secrets: Array<[string, Buffer | string]> = [
      ['raw public key bytes', Buffer.from(x, 'base64url')],
      ['x as text', x],
      ['JWKS entry as JSON', JSON.stringify(publicJwk)],
      ['SPKI PEM', String(spkiPem)],
      ['kid', kid],
    ];
    for (const [what, secret] of secrets) {
      for (const alg of ['HS256', 'HS384', 'HS512']) {
        const digest = alg === 'HS256' ? 'sha256' : alg === 'HS384' ? 'sha384' : 'sha512';
        const signingInput = `${segment({ alg, kid, typ: 'JWT' })}.${segment(claims)}`;
        const token = `${signingInput}.${createHmac(digest, secret).update(signingInput).digest('base64url')}`;
        assertUnauthenticated(await meWith(token), `${alg} keyed with ${what}`);
      }
    }
    // and through jose, as an attacker's library would build it
    const viaJose = await new SignJWT(claims).setProtectedHeader({ alg: 'HS256', kid }).sign(Buffer.from(x, 'base64url'));
    assertUnauthenticated(await meWith(viaJose), 'HS256 via jose');
    assertUnauthenticated(await meWith(hmacToken({ alg: 'HS256', typ: 'JWT' }, claims, Buffer.from(x, 'base64url'))), 'HS256 without kid');
  });

  it('when the payload is changed and the signature kept, then 401 UNAUTHENTICATED', async () => {
    const [header, payload, signature] = user.accessToken.split('.');
    assert.ok(header && payload && signature);
    const claims = claimsOf(user);
    const tampered: Array<[string, string]> = [
      ['sub = admin id', segment({ ...claims, sub: admin.user.id })],
      ['role = admin', segment({ ...claims, role: 'admin' })],
      ['sub and role of the admin', segment({ ...claims, sub: admin.user.id, role: 'admin', ver: claimsOf(admin).ver })],
      ['exp pushed out', segment({ ...claims, exp: nowSeconds() + 86_400 * 365 })],
      ['same claims with a trailing space', Buffer.from(`${JSON.stringify(claims)} `).toString('base64url')],
    ];
    for (const [what, changedPayload] of tampered) {
      const token = `${header}.${changedPayload}.${signature}`;
      assert.notEqual(token, user.accessToken);
      assertUnauthenticated(await meWith(token), what);
      const list = await server.client.get('/api/v1/users', { token });
      assertUnauthenticated(list, `${what} on an admin route`);
    }
    // a flipped bit in the signature, and a signature taken from another token
    const flipped = Buffer.from(signature, 'base64url');
    flipped[0] = (flipped[0] ?? 0) ^ 1;
    assertUnauthenticated(await meWith(`${header}.${payload}.${flipped.toString('base64url')}`), 'flipped signature bit');
    const adminSignature = admin.accessToken.split('.')[2];
    assertUnauthenticated(await meWith(`${header}.${payload}.${adminSignature}`), 'signature of another token');
    assertUnauthenticated(await meWith(`${header}.${payload}.`), 'signature stripped');
    assertUnauthenticated(await meWith(`${header}.${payload}`), 'two segments');
  });

  it('when a token signed with the server key has expired, then 401 UNAUTHENTICATED', async () => {
    const now = nowSeconds();
    assertUnauthenticated(await meWith(await signWithServerKey({}, { exp: now - 5 })), 'expired 5 s ago');
    assertUnauthenticated(await meWith(await signWithServerKey({}, { exp: now - 86_400 })), 'expired a day ago');
    assertUnauthenticated(await meWith(await signWithServerKey({ nbf: now + 3_600 })), 'not valid before an hour from now');
    const noExp = await new SignJWT({ ...claimsOf(user), exp: undefined })
      .setProtectedHeader({ alg: 'EdDSA', kid, typ: 'JWT' })
      .sign(serverPrivateKey);
    assert.equal(decodeJwt(noExp).exp, undefined);
    assertUnauthenticated(await meWith(noExp), 'no exp at all');
  });

  it('when the access-token TTL is 1 s and the token is 2 s old, then 401 UNAUTHENTICATED', async () => {
    const shortLived = await startServer({ ACCESS_TOKEN_TTL: '1' });
    try {
      const used = await registerAndLogin(shortLived.client);
      const unused = await registerAndLogin(shortLived.client);
      const claims = decodeJwt(used.accessToken);
      assert.equal((claims.exp ?? 0) - (claims.iat ?? 0), 1, 'tokens live ACCESS_TOKEN_TTL seconds');
      // Used while fresh (so it sits in the verified-token cache), when there is time left to do so.
      if (Date.now() < (claims.exp ?? 0) * 1000 - 300) {
        assert.equal((await shortLived.client.get('/api/v1/users/me', { token: used.accessToken })).status, 200);
      }
      const expiresAtMs = Math.max(claims.exp ?? 0, decodeJwt(unused.accessToken).exp ?? 0) * 1000;
      await sleep(Math.max(0, expiresAtMs - Date.now()) + 1_100);
      assertUnauthenticated(await shortLived.client.get('/api/v1/users/me', { token: used.accessToken }), 'expired, verified before');
      assertUnauthenticated(await shortLived.client.get('/api/v1/users/me', { token: unused.accessToken }), 'expired, never seen');
    } finally {
      await shortLived.stop();
    }
  });

  it('when the kid is unknown or missing, then 401 UNAUTHENTICATED', async () => {
    assertUnauthenticated(await meWith(await signWithServerKey({}, { header: { kid: randomUUID() } })), 'random kid');
    assertUnauthenticated(await meWith(await signWithServerKey({}, { header: { kid: `${kid}x` } })), 'near-miss kid');
    assertUnauthenticated(await meWith(await signWithServerKey({}, { header: { kid: '' } })), 'empty kid');
    assertUnauthenticated(await meWith(await signWithServerKey({}, { header: { kid: '../../etc/passwd' } })), 'path kid');
    const claims = { ...claimsOf(user), exp: nowSeconds() + 300 };
    const noKid = await new SignJWT(claims).setProtectedHeader({ alg: 'EdDSA', typ: 'JWT' }).sign(serverPrivateKey);
    assertUnauthenticated(await meWith(noKid), 'no kid');
  });

  it('when a fresh Ed25519 key signs under the known kid, then 401 UNAUTHENTICATED', async () => {
    const claims = { ...claimsOf(user), exp: nowSeconds() + 300 };
    const attacker = await generateKeyPair('EdDSA', { crv: 'Ed25519', extractable: true });
    const forged = await new SignJWT(claims).setProtectedHeader({ alg: 'EdDSA', kid, typ: 'JWT' }).sign(attacker.privateKey);
    assertUnauthenticated(await meWith(forged), 'foreign Ed25519 key, known kid');
    // the attacker's public key embedded in the header (jwk / jku injection)
    const attackerJwk = await exportJWK(attacker.publicKey);
    const embedded = await new SignJWT(claims)
      .setProtectedHeader({ alg: 'EdDSA', kid, jwk: attackerJwk, jku: 'https://attacker.example/jwks.json', typ: 'JWT' })
      .sign(attacker.privateKey);
    assertUnauthenticated(await meWith(embedded), 'embedded jwk and jku');
    // RS/ES confusion: other asymmetric algorithms under the known kid
    const rsa = await generateKeyPair('RS256');
    assertUnauthenticated(
      await meWith(await new SignJWT(claims).setProtectedHeader({ alg: 'RS256', kid }).sign(rsa.privateKey)),
      'RS256 under the known kid',
    );
    const ec = await generateKeyPair('ES256');
    assertUnauthenticated(
      await meWith(await new SignJWT(claims).setProtectedHeader({ alg: 'ES256', kid }).sign(ec.privateKey)),
      'ES256 under the known kid',
    );
  });

  it('when the issuer is wrong or missing, then 401 UNAUTHENTICATED', async () => {
    assertUnauthenticated(await meWith(await signWithServerKey({}, { issuer: 'evil' })), 'issuer evil');
    assertUnauthenticated(await meWith(await signWithServerKey({}, { issuer: 'Bastion' })), 'issuer in another case');
    assertUnauthenticated(await meWith(await signWithServerKey({}, { issuer: 'bastion ' })), 'issuer with a trailing space');
    assertUnauthenticated(await meWith(await signWithServerKey({}, { issuer: null })), 'no issuer');
  });

  it('when a correctly signed token lacks a claim or carries a stale version, then 401 UNAUTHENTICATED', async () => {
    const claims = claimsOf(user);
    assertUnauthenticated(await meWith(await signWithServerKey({ ver: claims.ver + 1 })), 'token version ahead');
    assertUnauthenticated(await meWith(await signWithServerKey({ ver: String(claims.ver) })), 'token version as a string');
    assertUnauthenticated(await meWith(await signWithServerKey({ ver: undefined })), 'no token version');
    assertUnauthenticated(await meWith(await signWithServerKey({ sid: undefined })), 'no session id');
    assertUnauthenticated(await meWith(await signWithServerKey({ sub: randomUUID() })), 'subject that does not exist');
  });
});
