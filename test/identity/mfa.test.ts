// Multi-factor authentication (TOTP): enrolment and confirmation, the login's second step (replay,
// wrong codes, expiry, recovery codes, the per-user budget, racing redeems of one code), disabling,
// and what an API key may not do. The service's MFA clock is a test seam, so that codes of later time
// steps and expired challenges need no waiting; codes are computed here with otplib from the secret.
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { sql } from 'kysely';
import { generate } from 'otplib';
import { loginAdmin, registerAndLogin, type Session } from '../helpers/auth.js';
import type { ApiResponse } from '../helpers/client.js';
import { describeOnBackends } from '../helpers/describe-on-backends.js';
import { expectError } from '../helpers/errors.js';
import type { TestServer } from '../helpers/server.js';

const ENROL = '/api/v1/auth/mfa/totp';
const CONFIRM = '/api/v1/auth/mfa/totp/confirm';
const VERIFY = '/api/v1/auth/mfa/verify';
const LOGIN = '/api/v1/auth/login';
const ME = '/api/v1/users/me';

interface Enrolment {
  secret: string;
  otpauthUrl: string;
  qrSvg: string;
}
interface Challenge {
  mfaRequired: true;
  mfaToken: string;
  expiresIn: number;
}
interface EnrolledUser {
  session: Session;
  email: string;
  password: string;
  secret: string;
  /** The code the enrolment was confirmed with (its time step is used). */
  confirmedWith: string;
  recoveryCodes: string[];
}

// The service's MFA clock: real time plus an offset the tests move forward.
let offsetMs = 0;
const clock = (): number => Date.now() + offsetMs;
const advance = (ms: number): void => {
  offsetMs += ms;
};

/** The code of the MFA clock's current time step. */
const codeNow = (secret: string): Promise<string> => generate({ secret, epoch: Math.floor(clock() / 1000) });
/** A code of a time step newer than any accepted so far: the clock moves on one step first. */
const freshCode = (secret: string): Promise<string> => {
  advance(30_000);
  return codeNow(secret);
};
const wrongCodeFor = (code: string): string => (code === '000000' ? '111111' : '000000');

/**
 * Where the service waits after a code was found right and before it is spent. A barrier holds the
 * first `parties` arrivals until all have arrived (or 5 s passed, so that a wrong implementation
 * fails an assertion instead of hanging).
 */
let pause: ((userId: string) => Promise<void>) | undefined;
function barrier(parties: number): { wait: () => Promise<void>; arrived: () => number } {
  let count = 0;
  let release!: () => void;
  const all = new Promise<void>((resolve) => (release = resolve));
  return {
    wait: async () => {
      count += 1;
      if (count >= parties) release();
      await Promise.race([all, sleep(5_000)]);
    },
    arrived: () => count,
  };
}

describeOnBackends('multi-factor authentication (TOTP)', ({ it, before, startServer }) => {
  let server: TestServer;
  before(async () => {
    server = await startServer(
      { KEY_ENCRYPTION_SECRET: 'mfa-test-key-encryption-secret-0123456789' },
      { application: { mfa: { now: clock, pauses: { afterCodeCheck: (userId) => pause?.(userId) ?? Promise.resolve() } } } },
    );
  });

  const enrol = async (token: string): Promise<Enrolment> => {
    const response = await server.client.post<{ data: Enrolment }>(ENROL, undefined, { token });
    assert.equal(response.status, 201, response.text);
    return response.body.data;
  };

  const enrolledUser = async (): Promise<EnrolledUser> => {
    const session = await registerAndLogin(server.client);
    const { secret } = await enrol(session.accessToken);
    const confirmedWith = await codeNow(secret);
    const confirmed = await server.client.post<{ data: { recoveryCodes: string[] } }>(CONFIRM, { code: confirmedWith }, { token: session.accessToken });
    assert.equal(confirmed.status, 200, confirmed.text);
    return {
      session,
      email: session.user.email,
      password: session.password,
      secret,
      confirmedWith,
      recoveryCodes: confirmed.body.data.recoveryCodes,
    };
  };

  const challenge = async (user: { email: string; password: string }): Promise<string> => {
    const response = await server.client.post<{ data: Challenge }>(LOGIN, { email: user.email, password: user.password });
    assert.equal(response.status, 200, response.text);
    assert.deepEqual(Object.keys(response.body.data).sort(), ['expiresIn', 'mfaRequired', 'mfaToken']);
    return response.body.data.mfaToken;
  };

  const verify = (mfaToken: string, code: string): Promise<ApiResponse<{ data: Session }>> =>
    server.client.post<{ data: Session }>(VERIFY, { mfaToken, code });

  const expectLoggedIn = async (response: ApiResponse<{ data: Session }>, userId: string): Promise<void> => {
    assert.equal(response.status, 200, response.text);
    assert.deepEqual(Object.keys(response.body.data).sort(), ['accessToken', 'expiresIn', 'refreshToken', 'tokenType', 'user']);
    assert.equal(response.body.data.user.id, userId);
    const me = await server.client.get<{ data: { id: string } }>(ME, { token: response.body.data.accessToken });
    assert.equal(me.status, 200, me.text);
    assert.equal(me.body.data.id, userId);
  };

  it('when a user enrols, then the secret, an otpauth URL (issuer Bastion, account the email) and an SVG QR code come back uncached, and the secret is stored sealed', async () => {
    const session = await registerAndLogin(server.client);
    const response = await server.client.post<{ data: Enrolment }>(ENROL, undefined, { token: session.accessToken });
    assert.equal(response.status, 201, response.text);
    assert.equal(response.headers.get('cache-control'), 'no-store');
    const enrolment = response.body.data;
    assert.deepEqual(Object.keys(enrolment).sort(), ['otpauthUrl', 'qrSvg', 'secret']);
    assert.match(enrolment.secret, /^[A-Z2-7]{32}$/);

    const url = new URL(enrolment.otpauthUrl);
    assert.equal(url.protocol, 'otpauth:');
    assert.equal(url.host, 'totp');
    assert.equal(decodeURIComponent(url.pathname), `/Bastion:${session.user.email}`);
    assert.equal(url.searchParams.get('secret'), enrolment.secret);
    assert.equal(url.searchParams.get('issuer'), 'Bastion');
    assert.ok(enrolment.qrSvg.startsWith('<svg'), enrolment.qrSvg.slice(0, 40));

    // KEY_ENCRYPTION_SECRET is set: the database never holds the secret in the clear.
    const stored = await sql<{ secret: Uint8Array }>`select secret from mfa_totp where user_id = ${session.user.id}::uuid`.execute(
      server.app.database.db,
    );
    const bytes = Buffer.from(stored.rows[0]?.secret ?? new Uint8Array());
    assert.ok(bytes.toString('latin1').startsWith('bastion-sealed:'));
    assert.ok(!bytes.toString('latin1').includes(enrolment.secret));

    // Not active until confirmed: the password alone still logs in.
    const login = await server.client.post<{ data: Session }>(LOGIN, { email: session.user.email, password: session.password });
    assert.equal(login.status, 200, login.text);
    assert.ok(typeof login.body.data.accessToken === 'string');
  });

  it('when a user enrols twice, then only the newer secret confirms; confirming returns ten distinct recovery codes once, and enrolling or confirming again is 409', async () => {
    const session = await registerAndLogin(server.client);
    const token = session.accessToken;
    const first = await enrol(token);
    const second = await enrol(token);
    assert.notEqual(first.secret, second.secret);

    expectError(await server.client.post(CONFIRM, { code: await codeNow(first.secret) }, { token }), 400, 'INVALID_MFA_CODE');
    expectError(await server.client.post(CONFIRM, { code: 'abc' }, { token }), 400, 'INVALID_MFA_CODE');
    const confirmed = await server.client.post<{ data: { recoveryCodes: string[] } }>(CONFIRM, { code: await codeNow(second.secret) }, { token });
    assert.equal(confirmed.status, 200, confirmed.text);
    assert.equal(confirmed.headers.get('cache-control'), 'no-store');
    assert.deepEqual(Object.keys(confirmed.body.data), ['recoveryCodes']);
    const codes = confirmed.body.data.recoveryCodes;
    assert.equal(codes.length, 10);
    assert.equal(new Set(codes).size, 10);
    for (const code of codes) assert.match(code, /^[0-9a-z]{4}(-[0-9a-z]{4}){3}$/);

    // Stored hashed: no code appears in the database.
    const stored = await sql<{ code_hash: Uint8Array }>`select code_hash from mfa_recovery_codes where user_id = ${session.user.id}::uuid`.execute(
      server.app.database.db,
    );
    assert.equal(stored.rows.length, 10);
    for (const row of stored.rows) assert.equal(Buffer.from(row.code_hash).length, 32);

    expectError(await server.client.post(ENROL, undefined, { token }), 409, 'MFA_ALREADY_ENABLED');
    expectError(await server.client.post(CONFIRM, { code: await freshCode(second.secret) }, { token }), 409, 'MFA_ALREADY_ENABLED');
  });

  it('when a user with MFA logs in, then there is a challenge and no token; a right code completes the login, and the same code again (a new login) is refused as a replay', async () => {
    const user = await enrolledUser();
    const login = await server.client.post<{ data: Challenge & { accessToken?: string } }>(LOGIN, { email: user.email, password: user.password });
    assert.equal(login.status, 200, login.text);
    assert.equal(login.body.data.mfaRequired, true);
    assert.equal(login.body.data.expiresIn, 300);
    assert.match(login.body.data.mfaToken, /^[A-Za-z0-9_-]{43}$/);
    assert.equal(login.body.data.accessToken, undefined);
    assert.doesNotMatch(login.text, /accessToken|refreshToken/);

    const code = await freshCode(user.secret);
    await expectLoggedIn(await verify(login.body.data.mfaToken, code), user.session.user.id);

    // The code's time step is used: within its window it does not log in again.
    expectError(await verify(await challenge(user), code), 401, 'INVALID_MFA_CODE');
    // The confirmation's code was used too.
    expectError(await verify(await challenge(user), user.confirmedWith), 401, 'INVALID_MFA_CODE');
    // The spent token does not take another code.
    expectError(await verify(login.body.data.mfaToken, await freshCode(user.secret)), 401, 'UNAUTHENTICATED');
    // A code one step either side is accepted.
    const token = await challenge(user);
    advance(30_000);
    const nextStep = await generate({ secret: user.secret, epoch: Math.floor((clock() + 30_000) / 1000) });
    await expectLoggedIn(await verify(token, nextStep), user.session.user.id);
  });

  it('when wrong codes are sent, then each is 401 INVALID_MFA_CODE, and the fifth spends the token (a right code after it is refused)', async () => {
    const user = await enrolledUser();
    const fourWrong = await challenge(user);
    const code = await freshCode(user.secret);
    for (let attempt = 0; attempt < 4; attempt += 1) expectError(await verify(fourWrong, wrongCodeFor(code)), 401, 'INVALID_MFA_CODE');
    // Four wrong codes leave the token usable.
    await expectLoggedIn(await verify(fourWrong, code), user.session.user.id);

    const fiveWrong = await challenge(user);
    for (let attempt = 0; attempt < 5; attempt += 1) {
      expectError(await verify(fiveWrong, attempt % 2 === 0 ? '123456' : 'not-a-code'), 401, 'INVALID_MFA_CODE');
    }
    expectError(await verify(fiveWrong, await freshCode(user.secret)), 401, 'UNAUTHENTICATED');
    expectError(await verify('no-such-token', await codeNow(user.secret)), 401, 'UNAUTHENTICATED');
  });

  it('when an mfaToken is older than five minutes, then it is refused (401), and one just younger still works', async () => {
    const user = await enrolledUser();
    const young = await challenge(user);
    advance(299_000);
    await expectLoggedIn(await verify(young, await codeNow(user.secret)), user.session.user.id);

    const old = await challenge(user);
    advance(301_000);
    expectError(await verify(old, await codeNow(user.secret)), 401, 'UNAUTHENTICATED');
  });

  it('when a recovery code is used, then it logs in once (as typed or in capitals without dashes) and is audited; used again it is refused', async () => {
    const user = await enrolledUser();
    const [firstCode, secondCode] = user.recoveryCodes;
    assert.ok(firstCode && secondCode);
    await expectLoggedIn(await verify(await challenge(user), firstCode), user.session.user.id);
    expectError(await verify(await challenge(user), firstCode), 401, 'INVALID_MFA_CODE');
    await expectLoggedIn(await verify(await challenge(user), secondCode.replaceAll('-', '').toUpperCase()), user.session.user.id);

    const admin = await loginAdmin(server.client);
    const audited = await server.client.get<{ data: Array<{ action: string; actorId: string; targetId: string; details: Record<string, unknown> }> }>(
      `/api/v1/audit?targetId=${user.session.user.id}&limit=100`,
      { token: admin.accessToken },
    );
    assert.equal(audited.status, 200, audited.text);
    const actions = audited.body.data.map((event) => event.action);
    assert.equal(actions.filter((action) => action === 'mfa.recovery_code_used').length, 2);
    assert.equal(actions.filter((action) => action === 'mfa.enabled').length, 1);
    assert.doesNotMatch(audited.text, new RegExp(`${firstCode}|${user.secret}`));
  });

  it('when a user sends ten wrong codes within 15 minutes across new logins, then even a right code is 429 RATE_LIMITED with Retry-After, until the window ends', async () => {
    const user = await enrolledUser();
    for (let round = 0; round < 2; round += 1) {
      const token = await challenge(user);
      for (let attempt = 0; attempt < 5; attempt += 1) expectError(await verify(token, '000001'), 401, 'INVALID_MFA_CODE');
    }
    const limited = await verify(await challenge(user), await freshCode(user.secret));
    expectError(limited, 429, 'RATE_LIMITED');
    const retryAfter = Number(limited.headers.get('retry-after'));
    assert.ok(retryAfter > 800 && retryAfter <= 900, `retry-after ${retryAfter}`);

    advance(900_000);
    await expectLoggedIn(await verify(await challenge(user), await codeNow(user.secret)), user.session.user.id);
  });

  it('when two logins redeem the same right code at the same moment, then exactly one succeeds (the time step is taken by compare-and-set)', async () => {
    const user = await enrolledUser();
    const [first, second] = [await challenge(user), await challenge(user)];
    const code = await freshCode(user.secret);
    const gate = barrier(2);
    pause = () => gate.wait();
    try {
      const answers = await Promise.all([verify(first, code), verify(second, code)]);
      assert.equal(gate.arrived(), 2, 'both requests found the code right before either spent it');
      const statuses = answers.map((answer) => answer.status).sort();
      assert.deepEqual(statuses, [200, 401], answers.map((answer) => answer.text).join('\n'));
      const loser = answers.find((answer) => answer.status === 401);
      assert.ok(loser);
      expectError(loser, 401, 'INVALID_MFA_CODE');
    } finally {
      pause = undefined;
    }

    // One token, two requests with the same right code: one session.
    const token = await challenge(user);
    const next = await freshCode(user.secret);
    const sameTokenGate = barrier(2);
    pause = () => sameTokenGate.wait();
    try {
      const answers = await Promise.all([verify(token, next), verify(token, next)]);
      assert.equal(sameTokenGate.arrived(), 2);
      assert.deepEqual(answers.map((answer) => answer.status).sort(), [200, 401]);
    } finally {
      pause = undefined;
    }
  });

  it('when two requests confirm the same enrolment with a right code at the same moment, then one gets the recovery codes (the ones stored) and the other 409', async () => {
    const session = await registerAndLogin(server.client);
    const token = session.accessToken;
    const { secret } = await enrol(token);
    const code = await codeNow(secret);
    const gate = barrier(2);
    pause = () => gate.wait();
    let answers: Array<ApiResponse<{ data: { recoveryCodes: string[] } }>>;
    try {
      answers = await Promise.all([
        server.client.post<{ data: { recoveryCodes: string[] } }>(CONFIRM, { code }, { token }),
        server.client.post<{ data: { recoveryCodes: string[] } }>(CONFIRM, { code }, { token }),
      ]);
    } finally {
      pause = undefined;
    }
    assert.equal(gate.arrived(), 2, 'both requests found the code right before either wrote');
    assert.deepEqual(answers.map((answer) => answer.status).sort(), [200, 409], answers.map((answer) => answer.text).join('\n'));
    const winner = answers.find((answer) => answer.status === 200);
    const loser = answers.find((answer) => answer.status === 409);
    assert.ok(winner && loser);
    expectError(loser, 409, 'MFA_ALREADY_ENABLED');
    // The codes shown are the codes that work: one of them logs in.
    const [recoveryCode] = winner.body.data.recoveryCodes;
    assert.ok(recoveryCode);
    await expectLoggedIn(await verify(await challenge({ email: session.user.email, password: session.password }), recoveryCode), session.user.id);
    const stored = await sql<{ count: number }>`select count(*)::int as count from mfa_recovery_codes where user_id = ${session.user.id}::uuid`.execute(
      server.app.database.db,
    );
    assert.equal(stored.rows[0]?.count, 10);
  });

  it('when two requests disable MFA with the same current code at the same moment, then one is 204 and the other 400, and it is audited once', async () => {
    const user = await enrolledUser();
    const token = user.session.accessToken;
    const code = await freshCode(user.secret);
    const gate = barrier(2);
    pause = () => gate.wait();
    let answers: ApiResponse[];
    try {
      answers = await Promise.all([
        server.client.request('DELETE', ENROL, { code }, { token }),
        server.client.request('DELETE', ENROL, { code }, { token }),
      ]);
    } finally {
      pause = undefined;
    }
    assert.equal(gate.arrived(), 2);
    assert.deepEqual(answers.map((answer) => answer.status).sort(), [204, 400], answers.map((answer) => answer.text).join('\n'));
    const admin = await loginAdmin(server.client);
    const audited = await server.client.get<{ data: unknown[] }>(`/api/v1/audit?action=mfa.disabled&targetId=${user.session.user.id}`, {
      token: admin.accessToken,
    });
    assert.equal(audited.status, 200, audited.text);
    assert.equal(audited.body.data.length, 1);
  });

  it('when a user with MFA is deleted, then their secret, recovery codes and challenges are deleted with them', async () => {
    const user = await enrolledUser();
    await challenge(user);
    const admin = await loginAdmin(server.client);
    const deleted = await server.client.delete(`/api/v1/users/${user.session.user.id}`, { token: admin.accessToken });
    assert.equal(deleted.status, 204, deleted.text);
    const left = await sql<{ count: number }>`
      select (select count(*) from mfa_totp where user_id = ${user.session.user.id}::uuid)
           + (select count(*) from mfa_recovery_codes where user_id = ${user.session.user.id}::uuid)
           + (select count(*) from mfa_challenges where user_id = ${user.session.user.id}::uuid) as count`.execute(server.app.database.db);
    assert.equal(Number(left.rows[0]?.count), 0);
  });

  it('when a user disables MFA with a current code, then a wrong or used code is 400, both proofs at once are 400, and afterwards the password alone logs in', async () => {
    const user = await enrolledUser();
    const token = user.session.accessToken;
    expectError(await server.client.request('DELETE', ENROL, { code: user.confirmedWith }, { token }), 400, 'INVALID_MFA_CODE');
    expectError(await server.client.request('DELETE', ENROL, { code: wrongCodeFor(await freshCode(user.secret)) }, { token }), 400, 'INVALID_MFA_CODE');
    expectError(
      await server.client.request('DELETE', ENROL, { code: await codeNow(user.secret), password: user.password }, { token }),
      400,
      'VALIDATION_FAILED',
    );
    expectError(await server.client.request('DELETE', ENROL, {}, { token }), 400, 'VALIDATION_FAILED');

    const disabled = await server.client.request('DELETE', ENROL, { code: await codeNow(user.secret) }, { token });
    assert.equal(disabled.status, 204, disabled.text);
    const login = await server.client.post<{ data: Session }>(LOGIN, { email: user.email, password: user.password });
    assert.equal(login.status, 200, login.text);
    assert.ok(typeof login.body.data.accessToken === 'string');
    // The recovery codes went with it; there is nothing left to disable.
    const count = await sql<{ count: number }>`select count(*)::int as count from mfa_recovery_codes where user_id = ${user.session.user.id}::uuid`.execute(
      server.app.database.db,
    );
    assert.equal(count.rows[0]?.count, 0);
    expectError(await server.client.request('DELETE', ENROL, { code: await freshCode(user.secret) }, { token }), 404, 'NOT_FOUND');
  });

  it('when a user disables MFA with the password, then a wrong password is 403 INVALID_CURRENT_PASSWORD, the right one 204 (audited), and open challenges die with it', async () => {
    const user = await enrolledUser();
    const token = user.session.accessToken;
    const open = await challenge(user);
    expectError(await server.client.request('DELETE', ENROL, { password: 'not-the-password' }, { token }), 403, 'INVALID_CURRENT_PASSWORD');
    const disabled = await server.client.request('DELETE', ENROL, { password: user.password }, { token });
    assert.equal(disabled.status, 204, disabled.text);
    expectError(await verify(open, await freshCode(user.secret)), 401, 'UNAUTHENTICATED');

    const admin = await loginAdmin(server.client);
    const audited = await server.client.get<{ data: Array<{ action: string; actorId: string; details: Record<string, unknown> }> }>(
      `/api/v1/audit?action=mfa.disabled&targetId=${user.session.user.id}`,
      { token: admin.accessToken },
    );
    assert.equal(audited.status, 200, audited.text);
    assert.equal(audited.body.data.length, 1);
    assert.equal(audited.body.data[0]?.actorId, user.session.user.id);
    assert.equal(audited.body.data[0]?.details['method'], 'password');
    assert.doesNotMatch(audited.text, new RegExp(user.password));

    // A pending enrolment can be cancelled the same way.
    await enrol(token);
    const cancelled = await server.client.request('DELETE', ENROL, { password: user.password }, { token });
    assert.equal(cancelled.status, 204, cancelled.text);
    expectError(await server.client.post(CONFIRM, { code: '123456' }, { token }), 404, 'NOT_FOUND');
  });

  it('when the caller is an API key or nobody, then the MFA routes refuse it (403 / 401)', async () => {
    const session = await registerAndLogin(server.client);
    const created = await server.client.post<{ data: { secret: string } }>(
      '/api/v1/api-keys',
      { name: 'mfa test', scopes: ['users:read'] },
      { token: session.accessToken },
    );
    assert.equal(created.status, 201, created.text);
    const apiKey = created.body.data.secret;
    expectError(await server.client.post(ENROL, undefined, { token: apiKey }), 403, 'FORBIDDEN');
    expectError(await server.client.post(CONFIRM, { code: '123456' }, { token: apiKey }), 403, 'FORBIDDEN');
    expectError(await server.client.request('DELETE', ENROL, { password: session.password }, { token: apiKey }), 403, 'FORBIDDEN');
    expectError(await server.client.post(ENROL), 401, 'UNAUTHENTICATED');
    expectError(await server.client.post(VERIFY, { mfaToken: 'x', code: '123456', extra: true }), 400, 'VALIDATION_FAILED');
  });
});
