// Contract: "OpenID Connect login", end to end against a real provider (oidc-provider on a loopback
// port): the service redirects to it, the test logs in there as an account of its choosing, follows
// the provider's redirect to the service's callback, and gets the normal login body.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { sql } from 'kysely';
import pg from 'pg';
import { login, loginAdmin, uniqueEmail } from '../helpers/auth.js';
import { createClient, type ApiResponse, type Client } from '../helpers/client.js';
import { describeOnBackends } from '../helpers/describe-on-backends.js';
import { expectError, pathsOf } from '../helpers/errors.js';
import { untilLockWaiters } from '../helpers/poll.js';
import { freePort } from '../helpers/ports.js';
import type { TestApplication } from '../helpers/server.js';
import { startLocalIdp, type IdpAccount, type LocalIdp } from './oidc-idp.js';

interface LoginBody {
  data: {
    accessToken: string;
    refreshToken: string;
    tokenType: string;
    expiresIn: number;
    user: { id: string; email: string; name: string; role: string };
  };
}

const AUTHORIZE = (provider: string) => `/api/v1/auth/oidc/${provider}/authorize`;
const ME = '/api/v1/users/me';
const sha256 = (value: string): Buffer => createHash('sha256').update(value).digest();

describeOnBackends('oidc login', ({ backend, it, before, startApplication, defer }) => {
  let idp: LocalIdp;
  let started: TestApplication;
  let client: Client;
  let baseUrl: string;
  let callbackUrl: string;
  let counter = 0;

  before(async () => {
    const port = await freePort();
    baseUrl = `http://127.0.0.1:${port}`;
    callbackUrl = `${baseUrl}/api/v1/auth/oidc/test/callback`;
    idp = await startLocalIdp({ redirectUris: [callbackUrl] });
    defer(() => idp.close());
    // A second provider nobody listens for: the service starts all the same (discovery is lazy).
    const nobody = await freePort();
    started = await startApplication({
      OIDC_PROVIDERS: JSON.stringify([
        { name: 'test', issuer: idp.issuer, clientId: idp.clientId, clientSecret: idp.clientSecret },
        { name: 'down', issuer: `http://127.0.0.1:${nobody}`, clientId: 'x', clientSecret: 'y' },
      ]),
      OIDC_REDIRECT_URIS: `${callbackUrl},http://127.0.0.1:1/elsewhere`,
    });
    await started.app.http.listen({ port, host: '127.0.0.1' });
    client = createClient(baseUrl);
  });

  const db = () => started.app.database.db;

  /** A fresh account at the provider. */
  const account = (overrides: Partial<IdpAccount> = {}): IdpAccount => {
    counter += 1;
    const created: IdpAccount = {
      sub: `subject-${counter}-${Math.random().toString(36).slice(2)}`,
      email: uniqueEmail('oidc'),
      email_verified: true,
      name: `OIDC User ${counter}`,
      ...overrides,
    };
    idp.accounts.set(created.sub, created);
    return created;
  };

  /** GET authorize with manual redirects: the response and its Location. */
  const authorize = async (provider = 'test', redirectUri = callbackUrl) => {
    const response = await fetch(`${baseUrl}${AUTHORIZE(provider)}?redirect_uri=${encodeURIComponent(redirectUri)}`, { redirect: 'manual' });
    return { response, location: response.headers.get('location') };
  };

  /** Starts a flow and logs in at the provider as `sub`: the provider's redirect to the callback. */
  const answerFor = async (sub: string): Promise<URL> => {
    const { response, location } = await authorize();
    assert.equal(response.status, 302, await response.text());
    assert.ok(location);
    const answer = await idp.loginAs(location, sub);
    assert.equal(`${answer.origin}${answer.pathname}`, callbackUrl, 'the provider returns to the service callback');
    return answer;
  };

  const callback = (answer: URL): Promise<ApiResponse<LoginBody>> => client.get<LoginBody>(`${answer.pathname}${answer.search}`);

  const loggedIn = (response: ApiResponse<LoginBody>) => {
    assert.equal(response.status, 200, response.text);
    assert.equal(response.headers.get('cache-control'), 'no-store');
    const data = response.body.data;
    assert.deepEqual(Object.keys(data).sort(), ['accessToken', 'expiresIn', 'refreshToken', 'tokenType', 'user']);
    assert.equal(data.tokenType, 'Bearer');
    return data;
  };

  const identitiesOf = (sub: string) =>
    db().selectFrom('user_identities').select(['user_id', 'provider']).where('subject', '=', sub).execute();

  it('when a new subject logs in, then a user without a password is created and its tokens work', async () => {
    const person = account({ name: 'Ada Lovelace' });
    const data = loggedIn(await callback(await answerFor(person.sub)));
    assert.equal(data.user.email, person.email);
    assert.equal(data.user.name, 'Ada Lovelace');
    assert.equal(data.user.role, 'user');

    const me = await client.get<{ data: { id: string } }>(ME, { token: data.accessToken });
    assert.equal(me.status, 200, me.text);
    assert.equal(me.body.data.id, data.user.id);
    const refreshed = await client.post('/api/v1/auth/refresh', { refreshToken: data.refreshToken });
    assert.equal(refreshed.status, 200, refreshed.text);

    assert.deepEqual(await identitiesOf(person.sub), [{ user_id: data.user.id, provider: 'test' }]);
    const row = await db().selectFrom('users').select(['password_hash', 'email_verified']).where('id', '=', data.user.id).executeTakeFirstOrThrow();
    assert.equal(row.password_hash, '!no-password');
    assert.equal(row.email_verified, true, 'the provider verified the address');
    // No password logs in as this user: the answer of a wrong password, not an error.
    for (const password of ['!no-password', 'anything at all']) {
      expectError(await client.post('/api/v1/auth/login', { email: person.email, password }), 401, 'INVALID_CREDENTIALS');
    }
  });

  it('when a user without a password is tried with one, then the answer takes about as long as a wrong password', async () => {
    const person = account();
    loggedIn(await callback(await answerFor(person.sub)));
    const withPassword = uniqueEmail('timing');
    assert.equal((await client.post('/api/v1/auth/register', { email: withPassword, name: 'Timing', password: 'timing-password-1' })).status, 201);
    // Interleaved, so that load from elsewhere on the machine falls on both alike; four each stays
    // under the login throttle's five failures per email.
    const times: Record<'wrong' | 'none', number[]> = { wrong: [], none: [] };
    for (let i = 0; i < 4; i++) {
      for (const [kind, email] of [['wrong', withPassword], ['none', person.email ?? '']] as const) {
        const began = performance.now();
        expectError(await client.post('/api/v1/auth/login', { email, password: `wrong-${i}` }), 401, 'INVALID_CREDENTIALS');
        times[kind].push(performance.now() - began);
      }
    }
    const median = (values: number[]) => {
      const sorted = [...values].sort((a, b) => a - b);
      return ((sorted[1] ?? 0) + (sorted[2] ?? 0)) / 2;
    };
    const [wrongPassword, noPassword] = [median(times.wrong), median(times.none)];
    // Without the dummy verification the answer would take one indexed read: a small fraction of this.
    assert.ok(noPassword > wrongPassword * 0.4, `no password ${noPassword.toFixed(1)} ms, wrong password ${wrongPassword.toFixed(1)} ms`);
  });

  it('when the same subject logs in again, then it is the same user (one user, one identity)', async () => {
    const person = account();
    const first = loggedIn(await callback(await answerFor(person.sub)));
    const second = loggedIn(await callback(await answerFor(person.sub)));
    assert.equal(second.user.id, first.user.id);
    assert.notEqual(second.refreshToken, first.refreshToken);
    const users = await db().selectFrom('users').select('id').where('email', '=', person.email ?? '').execute();
    assert.equal(users.length, 1);
    assert.equal((await identitiesOf(person.sub)).length, 1);
  });

  it('when the provider says the email is verified and a password user has it, then that user is linked (audited)', async () => {
    const email = uniqueEmail('linked');
    const registered = await client.post<{ data: { id: string } }>('/api/v1/auth/register', { email, name: 'Has Password', password: 'a-long-password-1' });
    assert.equal(registered.status, 201, registered.text);
    const person = account({ email: email.toUpperCase(), email_verified: true });

    const data = loggedIn(await callback(await answerFor(person.sub)));
    assert.equal(data.user.id, registered.body.data.id);
    assert.deepEqual(await identitiesOf(person.sub), [{ user_id: registered.body.data.id, provider: 'test' }]);
    // The password still works, and the next OIDC login finds the user by subject.
    await login(client, email, 'a-long-password-1');
    assert.equal(loggedIn(await callback(await answerFor(person.sub))).user.id, registered.body.data.id);

    const audited = await db()
      .selectFrom('audit_events')
      .select(['action', 'actor_id', 'details'])
      .where('target_id', '=', registered.body.data.id)
      .where('action', '=', 'auth.oidc_linked')
      .execute();
    assert.equal(audited.length, 1);
    assert.equal((audited[0]?.details as { provider?: string }).provider, 'test');
    // Each OIDC sign-in is audited once, naming the method and the provider.
    const signIns = await db()
      .selectFrom('audit_events')
      .select('details')
      .where('target_id', '=', registered.body.data.id)
      .where('action', '=', 'auth.login')
      .execute();
    const viaOidc = signIns.map((row) => row.details as { method?: string; provider?: string }).filter((details) => details.method === 'oidc');
    assert.equal(viaOidc.length, 2);
    for (const details of viaOidc) assert.equal(details.provider, 'test');
  });

  it('when the email is not verified by the provider, then an existing account is not linked and none is created (409 EMAIL_TAKEN)', async () => {
    const email = uniqueEmail('victim');
    const registered = await client.post<{ data: { id: string } }>('/api/v1/auth/register', { email, name: 'Victim', password: 'victims-password-1' });
    assert.equal(registered.status, 201, registered.text);
    const attacker = account({ email, email_verified: false });

    expectError(await callback(await answerFor(attacker.sub)), 409, 'EMAIL_TAKEN');
    assert.deepEqual(await identitiesOf(attacker.sub), []);
    const users = await db().selectFrom('users').select('id').where('email', '=', email).execute();
    assert.deepEqual(users.map((user) => user.id), [registered.body.data.id]);
    await login(client, email, 'victims-password-1');
  });

  it('when the email is not verified and nobody has it, then a new user is created with it', async () => {
    const person = account({ email_verified: false });
    const data = loggedIn(await callback(await answerFor(person.sub)));
    assert.equal(data.user.email, person.email);
    const row = await db().selectFrom('users').select('email_verified').where('id', '=', data.user.id).executeTakeFirstOrThrow();
    assert.equal(row.email_verified, false);
  });

  it('when the state is tampered with, then 401 OIDC_FAILED, and the real answer still completes', async () => {
    const person = account();
    const answer = await answerFor(person.sub);
    const tampered = new URL(answer);
    const state = tampered.searchParams.get('state') ?? '';
    tampered.searchParams.set('state', `${state.slice(0, -1)}${state.endsWith('A') ? 'B' : 'A'}`);
    expectError(await callback(tampered), 401, 'OIDC_FAILED');
    const unknown = new URL(answer);
    unknown.searchParams.set('state', 'never-issued');
    expectError(await callback(unknown), 401, 'OIDC_FAILED');
    loggedIn(await callback(answer));
  });

  it('when a callback is replayed, then the second is 401 OIDC_FAILED', async () => {
    const answer = await answerFor(account().sub);
    loggedIn(await callback(answer));
    expectError(await callback(answer), 401, 'OIDC_FAILED');
  });

  it('when two callbacks race with one state, then exactly one logs in', async () => {
    const answer = await answerFor(account().sub);
    const results = await Promise.all([callback(answer), callback(answer), callback(answer)]);
    assert.deepEqual(results.map((result) => result.status).sort(), [200, 401, 401]);
  });

  it('when the ID token nonce is not the flow nonce, then 401 OIDC_FAILED and no session', async () => {
    const person = account();
    const answer = await answerFor(person.sub);
    const state = answer.searchParams.get('state') ?? '';
    const updated = await db().updateTable('oidc_flows').set({ nonce: 'not-the-nonce-that-was-sent' }).where('state_hash', '=', sha256(state)).executeTakeFirst();
    assert.equal(updated.numUpdatedRows, 1n);
    expectError(await callback(answer), 401, 'OIDC_FAILED');
    assert.deepEqual(await identitiesOf(person.sub), []);
    assert.ok(started.logs.some((line) => line.includes('ID token refused') && line.includes('nonce')), `refused for its nonce: ${started.logs.filter((line) => line.includes('oidc')).join('\n')}`);
  });

  it('when the ID token is altered on its way (signature no longer matches), then 401 OIDC_FAILED', async () => {
    const victimEmail = uniqueEmail('victim');
    const registered = await client.post<{ data: { id: string } }>('/api/v1/auth/register', { email: victimEmail, name: 'Victim', password: 'victims-password-1' });
    assert.equal(registered.status, 201, registered.text);
    const attacker = account({ email_verified: false });
    const answer = await answerFor(attacker.sub);
    // Accepted, this token would link the attacker's subject to the victim's account.
    idp.tamperNextIdToken((claims) => {
      claims['email'] = victimEmail;
      claims['email_verified'] = true;
    });
    const response = await callback(answer);
    expectError(response, 401, 'OIDC_FAILED');
    assert.deepEqual(await identitiesOf(attacker.sub), []);
    assert.ok(started.logs.some((line) => line.includes('ID token refused') && /signature/i.test(line)), 'refused for its signature');
  });

  it('when the flow has expired, then 401 OIDC_FAILED', async () => {
    const answer = await answerFor(account().sub);
    const state = answer.searchParams.get('state') ?? '';
    await db().updateTable('oidc_flows').set({ expires_at: sql<Date>`now() - interval '1 second'` }).where('state_hash', '=', sha256(state)).execute();
    expectError(await callback(answer), 401, 'OIDC_FAILED');
  });

  it('when the provider answers with an error instead of a code, then 401 OIDC_FAILED and the flow is spent', async () => {
    const { location } = await authorize();
    const state = new URL(location ?? '').searchParams.get('state') ?? '';
    const denied = await client.get(`/api/v1/auth/oidc/test/callback?error=access_denied&state=${encodeURIComponent(state)}`);
    expectError(denied, 401, 'OIDC_FAILED');
    const flow = await db().selectFrom('oidc_flows').select('used_at').where('state_hash', '=', sha256(state)).executeTakeFirstOrThrow();
    assert.ok(flow.used_at instanceof Date);
  });

  it('when authorize is called, then it redirects to the provider with code flow, PKCE S256, state, nonce and the default scopes; the state is stored only hashed', async () => {
    const { response, location } = await authorize();
    assert.equal(response.status, 302);
    assert.equal(response.headers.get('cache-control'), 'no-store');
    assert.ok(location);
    const url = new URL(location);
    assert.equal(url.origin, idp.issuer);
    const params = url.searchParams;
    assert.equal(params.get('response_type'), 'code');
    assert.equal(params.get('client_id'), idp.clientId);
    assert.equal(params.get('redirect_uri'), callbackUrl);
    assert.equal(params.get('scope'), 'openid email profile');
    assert.equal(params.get('code_challenge_method'), 'S256');
    assert.match(params.get('code_challenge') ?? '', /^[A-Za-z0-9_-]{43}$/);
    const state = params.get('state') ?? '';
    const nonce = params.get('nonce') ?? '';
    assert.ok(state.length >= 32 && nonce.length >= 32);
    const flows = await db().selectFrom('oidc_flows').selectAll().where('state_hash', '=', sha256(state)).execute();
    assert.equal(flows.length, 1);
    assert.equal(flows[0]?.provider, 'test');
    assert.equal(flows[0]?.nonce, nonce);
    assert.ok(!JSON.stringify(flows).includes(state), 'the state itself is not stored');
    const ttl = (flows[0]!.expires_at.getTime() - flows[0]!.created_at.getTime()) / 1000;
    assert.ok(ttl > 500 && ttl <= 600, `flow lifetime ${ttl} s`);
  });

  it('when redirect_uri is not an allowed one, then 400 VALIDATION_FAILED naming it; an unknown provider is 404', async () => {
    for (const uri of ['https://evil.example.com/callback', `${callbackUrl}/extra`, `${callbackUrl}?x=1`]) {
      const { response } = await authorize('test', uri);
      const answer = { status: response.status, headers: response.headers, text: await response.text(), body: undefined as unknown };
      answer.body = JSON.parse(answer.text);
      assert.deepEqual(pathsOf(expectError(answer, 400, 'VALIDATION_FAILED')), ['redirect_uri']);
    }
    expectError(await client.get(AUTHORIZE('test')), 400, 'VALIDATION_FAILED');
    expectError(await client.get(`${AUTHORIZE('nope')}?redirect_uri=${encodeURIComponent(callbackUrl)}`), 404, 'NOT_FOUND');
    expectError(await client.get(`/api/v1/auth/oidc/nope/callback?code=x&state=y`), 404, 'NOT_FOUND');
  });

  it('when the provider cannot be reached, then 503 (the service itself started without it)', async () => {
    expectError(await client.get(`${AUTHORIZE('down')}?redirect_uri=${encodeURIComponent(callbackUrl)}`), 503, 'SERVICE_UNAVAILABLE');
    expectError(await client.get(`/api/v1/auth/oidc/down/callback?code=x&state=y`), 503, 'SERVICE_UNAVAILABLE');
  });

  it('when flows expired over an hour ago, then the purge deletes them and keeps the others', async () => {
    const { location: old } = await authorize();
    const { location: fresh } = await authorize();
    const stateOf = (location: string | null) => sha256(new URL(location ?? '').searchParams.get('state') ?? '');
    await db().updateTable('oidc_flows').set({ expires_at: sql<Date>`now() - interval '2 hours'` }).where('state_hash', '=', stateOf(old)).execute();
    assert.ok((await started.app.oidc.purgeExpiredFlows()) >= 1);
    const left = await db().selectFrom('oidc_flows').select('state_hash').where('state_hash', 'in', [stateOf(old), stateOf(fresh)]).execute();
    assert.deepEqual(left.map((row) => Buffer.from(row.state_hash).toString('hex')), [stateOf(fresh).toString('hex')]);
  });

  it('when the API description is read, then both routes are in it', async () => {
    const response = await client.get<{ paths: Record<string, Record<string, unknown>> }>('/openapi.json');
    assert.equal(response.status, 200, response.text);
    assert.ok(response.body.paths['/api/v1/auth/oidc/{provider}/authorize']?.['get']);
    assert.ok(response.body.paths['/api/v1/auth/oidc/{provider}/callback']?.['get']);
  });

  it('when two first logins of one subject race, then both end as the same single user', async () => {
    const person = account();
    const answers = [await answerFor(person.sub), await answerFor(person.sub), await answerFor(person.sub)];
    const results = await Promise.all(answers.map(callback));
    const ids = new Set(results.map((result) => loggedIn(result).user.id));
    assert.equal(ids.size, 1);
    assert.equal((await identitiesOf(person.sub)).length, 1);
    assert.equal((await db().selectFrom('users').select('id').where('email', '=', person.email ?? '').execute()).length, 1);
  });

  // Forced on PostgreSQL: a transaction of the test holds user_identities so that every login has
  // looked and found nothing, and waits at its write; then they all go at once.
  const forced = backend.name === 'postgres' ? undefined : 'needs a second connection to hold a lock (PGlite has one)';
  const raceHeld = async (answers: readonly URL[], waiters: number) => {
    const holder = new pg.Client({ connectionString: started.database.databaseUrl });
    const observer = new pg.Client({ connectionString: started.database.databaseUrl });
    await Promise.all([holder.connect(), observer.connect()]);
    try {
      await holder.query('begin');
      await holder.query('lock table user_identities in share row exclusive mode');
      const pending = answers.map(callback);
      await untilLockWaiters(observer, waiters, 'user_identities and the users they wait behind');
      await holder.query('commit');
      return await Promise.all(pending);
    } finally {
      await Promise.all([holder.end(), observer.end()]);
    }
  };

  for (const verified of [true, false]) {
    it(`when first logins of one subject race at their writes (email ${verified ? '' : 'not '}verified), then they end as one user`, { skip: forced }, async () => {
      const person = account({ email_verified: verified });
      const answers = [await answerFor(person.sub), await answerFor(person.sub), await answerFor(person.sub)];
      const results = await raceHeld(answers, 3);
      const ids = new Set(results.map((result) => loggedIn(result).user.id));
      assert.equal(ids.size, 1);
      assert.equal((await identitiesOf(person.sub)).length, 1);
      assert.equal((await db().selectFrom('users').select('id').where('email', '=', person.email ?? '').execute()).length, 1);
    });
  }

  it('when links of one subject to a password user race at their writes, then one links and all log in as that user', { skip: forced }, async () => {
    const email = uniqueEmail('race-link');
    const registered = await client.post<{ data: { id: string } }>('/api/v1/auth/register', { email, name: 'Racer', password: 'a-long-password-2' });
    assert.equal(registered.status, 201, registered.text);
    const person = account({ email, email_verified: true });
    const answers = [await answerFor(person.sub), await answerFor(person.sub)];
    const results = await raceHeld(answers, 2);
    for (const result of results) assert.equal(loggedIn(result).user.id, registered.body.data.id);
    assert.equal((await identitiesOf(person.sub)).length, 1);
    const linked = await db().selectFrom('audit_events').select('id').where('target_id', '=', registered.body.data.id).where('action', '=', 'auth.oidc_linked').execute();
    assert.equal(linked.length, 1);
  });

  it('when an OIDC user is deleted, then the subject starts afresh as a new user', async () => {
    const person = account();
    const first = loggedIn(await callback(await answerFor(person.sub)));
    const admin = await loginAdmin(client);
    const deleted = await client.delete(`/api/v1/users/${first.user.id}`, { token: admin.accessToken });
    assert.equal(deleted.status, 204, deleted.text);
    const again = loggedIn(await callback(await answerFor(person.sub)));
    assert.notEqual(again.user.id, first.user.id);
    assert.deepEqual(await identitiesOf(person.sub), [{ user_id: again.user.id, provider: 'test' }]);
  });
});
