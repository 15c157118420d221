// Contract: "Audit log" (issue 13, item 6) — user changes leave audit events with who, to whom and
// from where, in the transaction of the change; GET /api/v1/audit (admin) filters and pages them
// newest first; the table itself refuses every change and every delete but the retention job's,
// which removes only events older than AUDIT_RETENTION_DAYS.
import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import { createAuditService, type AuditEvent } from '../../src/components/audit/index.js';
import { loginAdmin, registerAndLogin, uniqueEmail, type Session } from '../helpers/auth.js';
import type { ApiResponse } from '../helpers/client.js';
import { describeOnBackends } from '../helpers/describe-on-backends.js';
import { expectError, ISO_UTC, pathsOf, UUID } from '../helpers/errors.js';
import type { TestServer } from '../helpers/server.js';

const AUDIT = '/api/v1/audit';
const EVENT_KEYS = ['action', 'actorId', 'createdAt', 'details', 'id', 'ip', 'requestId', 'targetId', 'userAgent'];

interface AuditPage {
  data: AuditEvent[];
  meta: { nextCursor: string | null };
}

/** An event body exactly: its keys, formats, and nothing else. */
function expectEvent(value: unknown): AuditEvent {
  assert.ok(value && typeof value === 'object');
  assert.deepEqual(Object.keys(value).sort(), EVENT_KEYS);
  const event = value as AuditEvent;
  assert.match(event.id, UUID);
  assert.match(event.createdAt, ISO_UTC);
  assert.ok(event.details && typeof event.details === 'object' && !Array.isArray(event.details));
  return event;
}

/** A request id and user agent unique to one request, to find its event by. */
const originHeaders = (label: string) => ({
  'x-request-id': `${label}-${randomBytes(6).toString('hex')}`,
  'user-agent': `audit-test/${label} (${randomBytes(4).toString('hex')})`,
});

describeOnBackends('audit log', ({ it, before, startServer }) => {
  let server: TestServer;
  let admin: Session;

  before(async () => {
    server = await startServer();
    admin = await loginAdmin(server.client);
  });

  const list = (query: string, token = admin.accessToken): Promise<ApiResponse<AuditPage>> =>
    server.client.get<AuditPage>(`${AUDIT}${query}`, { token });

  /** The events a query returns on its first page (limit 100), each checked for shape. */
  const eventsOf = async (query: string): Promise<AuditEvent[]> => {
    const response = await list(`?limit=100&${query}`);
    assert.equal(response.status, 200, response.text);
    assert.deepEqual(Object.keys(response.body).sort(), ['data', 'meta']);
    return response.body.data.map(expectEvent);
  };

  /** Asserts the event came from the request that sent `headers`, from this machine. */
  const expectOrigin = (event: AuditEvent, headers: Record<string, string>, response: ApiResponse<unknown>) => {
    assert.equal(event.requestId, headers['x-request-id']);
    assert.equal(response.headers.get('x-request-id'), headers['x-request-id']);
    assert.equal(event.userAgent, headers['user-agent']);
    assert.equal(event.ip, '127.0.0.1');
  };

  const db = () => server.app.database.db;

  it('when someone registers, then user.created names them as actor and target, with the request\'s address, agent and id', async () => {
    const headers = originHeaders('register');
    const response = await server.client.post<{ data: { id: string } }>(
      '/api/v1/auth/register',
      { email: uniqueEmail('audit'), name: 'Audited', password: `pw-${randomBytes(6).toString('hex')}` },
      { headers },
    );
    assert.equal(response.status, 201, response.text);
    const userId = response.body.data.id;
    const events = await eventsOf(`targetId=${userId}`);
    assert.equal(events.length, 1);
    const [event] = events;
    assert.ok(event);
    assert.equal(event.action, 'user.created');
    assert.equal(event.actorId, userId);
    assert.equal(event.targetId, userId);
    assert.deepEqual(event.details, { role: 'user' });
    expectOrigin(event, headers, response);
  });

  it('when an admin creates, updates, promotes and deletes a user, then each leaves its event with the admin as actor, newest first', async () => {
    const createHeaders = originHeaders('create');
    const created = await server.client.post<{ data: { id: string } }>(
      '/api/v1/users',
      { email: uniqueEmail('managed'), name: 'Managed', password: `pw-${randomBytes(6).toString('hex')}` },
      { token: admin.accessToken, headers: createHeaders },
    );
    assert.equal(created.status, 201, created.text);
    const userId = created.body.data.id;

    const renameHeaders = originHeaders('rename');
    const renamed = await server.client.patch(`/api/v1/users/${userId}`, { name: 'Renamed', email: uniqueEmail('moved') }, {
      token: admin.accessToken,
      headers: renameHeaders,
    });
    assert.equal(renamed.status, 200, renamed.text);

    const promoteHeaders = originHeaders('promote');
    const promoted = await server.client.patch(`/api/v1/users/${userId}`, { role: 'admin' }, { token: admin.accessToken, headers: promoteHeaders });
    assert.equal(promoted.status, 200, promoted.text);
    const demoted = await server.client.patch(`/api/v1/users/${userId}`, { role: 'user' }, { token: admin.accessToken });
    assert.equal(demoted.status, 200, demoted.text);

    const deleteHeaders = originHeaders('delete');
    const deleted = await server.client.delete(`/api/v1/users/${userId}`, { token: admin.accessToken, headers: deleteHeaders });
    assert.equal(deleted.status, 204, deleted.text);

    const events = await eventsOf(`targetId=${userId}`);
    assert.deepEqual(
      events.map((event) => [event.action, event.details]),
      [
        ['user.deleted', {}],
        ['user.role_changed', { from: 'admin', to: 'user' }],
        ['user.updated', { fields: 'role' }],
        ['user.role_changed', { from: 'user', to: 'admin' }],
        ['user.updated', { fields: 'role' }],
        ['user.updated', { fields: 'email,name' }],
        ['user.created', { role: 'user' }],
      ],
    );
    for (const event of events) {
      assert.equal(event.actorId, admin.user.id, event.action);
      assert.equal(event.targetId, userId, event.action);
    }
    const byRequest = (headers: Record<string, string>) => events.filter((event) => event.requestId === headers['x-request-id']);
    expectOrigin(byRequest(createHeaders)[0] ?? assert.fail('no event of the create'), createHeaders, created);
    expectOrigin(byRequest(renameHeaders)[0] ?? assert.fail('no event of the rename'), renameHeaders, renamed);
    // One request, two events (updated and role_changed), one origin.
    const promotion = byRequest(promoteHeaders);
    assert.deepEqual(promotion.map((event) => event.action).sort(), ['user.role_changed', 'user.updated']);
    for (const event of promotion) expectOrigin(event, promoteHeaders, promoted);
    expectOrigin(byRequest(deleteHeaders)[0] ?? assert.fail('no event of the delete'), deleteHeaders, deleted);
    // Newest first: the times never go up down the page.
    for (let index = 1; index < events.length; index++) {
      assert.ok((events[index - 1]?.createdAt ?? '') >= (events[index]?.createdAt ?? ''), 'not newest first');
    }
  });

  it('when a user updates themselves, then they are the actor and only the fields that changed are named', async () => {
    const user = await registerAndLogin(server.client);
    const headers = originHeaders('self');
    const response = await server.client.patch(`/api/v1/users/${user.user.id}`, { name: 'New Name', email: user.user.email }, {
      token: user.accessToken,
      headers,
    });
    assert.equal(response.status, 200, response.text);
    const events = await eventsOf(`action=user.updated&targetId=${user.user.id}`);
    assert.equal(events.length, 1);
    assert.equal(events[0]?.actorId, user.user.id);
    assert.deepEqual(events[0]?.details, { fields: 'name' });
    expectOrigin(events[0] ?? assert.fail(), headers, response);
  });

  it('when two role changes of one user race, then the recorded from/to chain ends at the role the user has', async () => {
    for (let round = 0; round < 4; round++) {
      const user = await registerAndLogin(server.client);
      const [first, second] = await Promise.all([
        server.client.patch(`/api/v1/users/${user.user.id}`, { role: 'admin' }, { token: admin.accessToken }),
        server.client.patch(`/api/v1/users/${user.user.id}`, { role: 'user' }, { token: admin.accessToken }),
      ]);
      assert.equal(first.status, 200, first.text);
      assert.equal(second.status, 200, second.text);
      const final = await server.client.get<{ data: { role: string } }>(`/api/v1/users/${user.user.id}`, { token: admin.accessToken });
      const changes = (await eventsOf(`action=user.role_changed&targetId=${user.user.id}`)).reverse();
      // Each change starts where the previous one ended: from the registered role to the final one.
      let role = 'user';
      for (const change of changes) {
        assert.equal(change.details['from'], role, JSON.stringify(changes));
        assert.notEqual(change.details['to'], role);
        role = String(change.details['to']);
      }
      assert.equal(role, final.body.data.role, JSON.stringify(changes));
    }
  });

  it('when a password is changed with an origin, then user.password_changed carries it, and no event ever holds a password or hash', async () => {
    const password = `Known-${randomBytes(8).toString('hex')}-Secret`;
    const newPassword = `Other-${randomBytes(8).toString('hex')}-Secret`;
    const user = await registerAndLogin(server.client, { password });
    const origin = { ip: '203.0.113.7', userAgent: 'audit-test/password', requestId: `pw-${randomBytes(6).toString('hex')}` };
    await server.app.users.changePassword(user.user.id, password, newPassword, undefined, origin);
    const events = await eventsOf(`action=user.password_changed&actorId=${user.user.id}`);
    assert.equal(events.length, 1);
    assert.equal(events[0]?.targetId, user.user.id);
    assert.equal(events[0]?.ip, origin.ip);
    assert.equal(events[0]?.userAgent, origin.userAgent);
    assert.equal(events[0]?.requestId, origin.requestId);
    assert.deepEqual(events[0]?.details, {});

    const { password_hash: hash } = await db()
      .selectFrom('users')
      .select('password_hash')
      .where('id', '=', user.user.id)
      .executeTakeFirstOrThrow();
    const table = await sql<{ text: string }>`select coalesce(string_agg(a::text, E'\n'), '') as text from audit_events a`.execute(db());
    const text = table.rows[0]?.text ?? '';
    assert.ok(text.includes(user.user.id), 'the search must see this user\'s events');
    for (const secret of [password, newPassword, hash, '$argon2', '$2b$']) {
      assert.ok(!text.includes(secret), `the audit table holds ${secret.slice(0, 8)}…`);
    }
  });

  it('when a use case records a detail named like a secret, then it is refused and nothing is written', async () => {
    const targetId = randomUUID();
    await assert.rejects(
      server.app.audit.record(db(), { action: 'user.updated', actorId: null, targetId, details: { newPassword: 'x' } }),
      /newPassword/,
    );
    assert.deepEqual(await eventsOf(`targetId=${targetId}`), []);
  });

  it('when filtering by action, actor and target, then only matching events come, newest first, and pages neither repeat nor skip', async () => {
    const actorId = randomUUID();
    const otherActor = randomUUID();
    const targets = [randomUUID(), randomUUID()];
    // 23 events of one actor, several in the same millisecond (the id breaks the tie), plus noise
    // from another actor: inserts are what the table allows anyone.
    const base = Date.now() - 60_000;
    const expected: Array<{ id: string; createdAt: Date; action: string; targetId: string }> = [];
    for (let index = 0; index < 23; index++) {
      const row = {
        id: randomUUID(),
        createdAt: new Date(base + Math.floor(index / 3)), // three per millisecond
        action: index % 2 === 0 ? 'user.updated' : 'user.deleted',
        targetId: targets[index % 2 === 0 ? 0 : 1] ?? '',
      };
      expected.push(row);
      await sql`insert into audit_events (id, action, actor_id, target_id, created_at)
                values (${row.id}, ${row.action}, ${actorId}, ${row.targetId}, ${row.createdAt})`.execute(db());
      await sql`insert into audit_events (id, action, actor_id, target_id, created_at)
                values (${randomUUID()}, ${row.action}, ${otherActor}, ${row.targetId}, ${row.createdAt})`.execute(db());
    }
    const newestFirst = [...expected].sort((a, b) => b.createdAt.getTime() - a.createdAt.getTime() || (a.id < b.id ? 1 : -1));

    const walk = async (query: string, limit: number): Promise<{ ids: string[]; pages: number }> => {
      const ids: string[] = [];
      let cursor: string | null = null;
      let pages = 0;
      do {
        const response: ApiResponse<AuditPage> = await list(`?limit=${limit}&${query}${cursor ? `&cursor=${cursor}` : ''}`);
        assert.equal(response.status, 200, response.text);
        response.body.data.forEach(expectEvent);
        assert.ok(response.body.data.length <= limit);
        ids.push(...response.body.data.map((event) => event.id));
        cursor = response.body.meta.nextCursor;
        pages++;
      } while (cursor !== null && pages < 50);
      return { ids, pages };
    };

    const all = await walk(`actorId=${actorId}`, 5);
    assert.deepEqual(all.ids, newestFirst.map((row) => row.id));
    assert.equal(all.pages, 5);

    const updated = await walk(`actorId=${actorId}&action=user.updated`, 4);
    assert.deepEqual(updated.ids, newestFirst.filter((row) => row.action === 'user.updated').map((row) => row.id));

    const ofTarget = await walk(`actorId=${actorId}&targetId=${targets[1]}`, 3);
    assert.deepEqual(ofTarget.ids, newestFirst.filter((row) => row.targetId === targets[1]).map((row) => row.id));

    // Upper-case ids filter the same; an exact page boundary has no next cursor.
    const upper = await walk(`actorId=${actorId.toUpperCase()}`, 23);
    assert.deepEqual(upper.ids, all.ids);
    assert.equal(upper.pages, 1);

    // Without filters, the newest events of everyone: the page's times never go up.
    const unfiltered = await list('?limit=50');
    assert.equal(unfiltered.status, 200);
    const times = unfiltered.body.data.map((event) => event.createdAt);
    assert.deepEqual(times, [...times].sort().reverse());
  });

  it('when the caller is not an admin, then 403; without a token, 401; with an admin token, the default page is 10', async () => {
    const user = await registerAndLogin(server.client);
    expectError(await list('', user.accessToken), 403, 'FORBIDDEN');
    expectError(await list(`?actorId=${user.user.id}`, user.accessToken), 403, 'FORBIDDEN');
    expectError(await server.client.get(AUDIT), 401, 'UNAUTHENTICATED');
    const page = await list('');
    assert.equal(page.status, 200);
    assert.equal(page.body.data.length, 10);
    assert.equal(typeof page.body.meta.nextCursor, 'string');
  });

  it('when an API key of an admin asks for the audit log, then FORBIDDEN: no scope covers it', async () => {
    const viaKey = { userId: admin.user.id, role: 'admin' as const, apiKey: { id: randomUUID(), scopes: ['users:read' as const] } };
    await assert.rejects(server.app.audit.list(viaKey, { limit: 10 }), (error: unknown) => (error as { code?: string }).code === 'FORBIDDEN');
    const viaLogin = await server.app.audit.list({ userId: admin.user.id, role: 'admin' }, { limit: 1 });
    assert.equal(viaLogin.data.length, 1);
  });

  it('when the service starts with a bootstrap admin, then user.created records it with no actor', async () => {
    const events = await eventsOf(`action=user.created&targetId=${admin.user.id}`);
    assert.equal(events.length, 1);
    assert.equal(events[0]?.actorId, null);
    assert.deepEqual(events[0]?.details, { role: 'admin' });
    assert.equal(events[0]?.requestId, null);
  });

  it('when a query parameter is malformed or the action unknown, then 400 naming it', async () => {
    const cases: Array<[string, string]> = [
      ['?limit=0', 'limit'],
      ['?limit=101', 'limit'],
      ['?limit=ten', 'limit'],
      ['?cursor=not*a*cursor', 'cursor'],
      [`?cursor=${Buffer.from('2026-01-01T00:00:00.000Z|nope').toString('base64url')}`, 'cursor'],
      [`?cursor=${Buffer.from(`yesterday|${randomUUID()}`).toString('base64url')}`, 'cursor'],
      ['?actorId=12345', 'actorId'],
      ['?targetId=not-a-uuid', 'targetId'],
      ['?action=user.exploded', 'action'],
    ];
    for (const [query, path] of cases) {
      const error = expectError(await list(query), 400, 'VALIDATION_FAILED');
      assert.ok(pathsOf(error).some((named) => named.includes(path)), `${query}: ${JSON.stringify(error.errors)}`);
    }
  });

  it('when anyone tries to change or delete an event over HTTP, then there is no such route', async () => {
    const [event] = (await list('?limit=1')).body.data;
    assert.ok(event);
    for (const method of ['DELETE', 'PATCH', 'PUT']) {
      const response = await server.client.request(method, `${AUDIT}/${event.id}`, method === 'DELETE' ? undefined : { action: 'user.created' }, {
        token: admin.accessToken,
      });
      expectError(response, 404, 'ROUTE_NOT_FOUND');
    }
    expectError(await server.client.request('DELETE', AUDIT, undefined, { token: admin.accessToken }), 404, 'ROUTE_NOT_FOUND');
  });

  it('when SQL updates, deletes or truncates audit events, then the database refuses and the events stay as they were', async () => {
    const [event] = (await list('?limit=1')).body.data;
    assert.ok(event);
    const rowOf = async () =>
      (await sql<{ action: string; actor_id: string | null }>`select action, actor_id from audit_events where id = ${event.id}`.execute(db())).rows;
    const before = await rowOf();
    assert.equal(before.length, 1);
    await assert.rejects(sql`update audit_events set action = 'user.deleted', actor_id = null where id = ${event.id}`.execute(db()), /append-only/);
    await assert.rejects(sql`delete from audit_events where id = ${event.id}`.execute(db()), /append-only/);
    await assert.rejects(sql`truncate audit_events`.execute(db()), /append-only/);
    // The retention switch alone (no retention declared) deletes nothing either.
    await assert.rejects(
      server.app.database.transaction(async (tx) => {
        await sql`set local bastion.audit_retention = 'on'`.execute(tx);
        await sql`delete from audit_events where id = ${event.id}`.execute(tx);
      }),
      /younger than the retention/,
    );
    assert.deepEqual(await rowOf(), before);
  });

  it('when the retention job runs, then only events older than AUDIT_RETENTION_DAYS go, in batches; even with its settings a newer one cannot be deleted', async () => {
    const marker = randomUUID(); // the actor of this test's rows
    const insertAged = async (days: number): Promise<string> => {
      const id = randomUUID();
      await sql`insert into audit_events (id, action, actor_id, created_at)
                values (${id}, 'user.updated', ${marker}, now() - make_interval(days => ${days}))`.execute(db());
      return id;
    };
    const expired = [await insertAged(401), await insertAged(500), await insertAged(3_000)];
    const kept = [await insertAged(399), await insertAged(0)];
    const remaining = async () =>
      (await sql<{ id: string }>`select id from audit_events where actor_id = ${marker} order by id`.execute(db())).rows.map((row) => row.id);

    // The job's own work, as the scheduler runs it (default retention: 400 days).
    assert.equal(server.app.config.auditRetentionDays, 400);
    assert.equal(await server.app.audit.purgeExpired(), expired.length);
    assert.deepEqual(await remaining(), [...kept].sort());
    assert.equal(await server.app.audit.purgeExpired(), 0);

    // More than one batch: five expired events with batches of two.
    const more = [];
    for (let index = 0; index < 5; index++) more.push(await insertAged(400 + index + 1));
    const batched = createAuditService({ database: server.app.database, retentionDays: 400, purgeBatchSize: 2 });
    assert.equal(await batched.purgeExpired(), 5);
    assert.deepEqual(await remaining(), [...kept].sort());

    // The retention job's settings do not let it delete a newer event, whatever it selects.
    const young = kept[0] ?? assert.fail();
    await assert.rejects(
      server.app.database.transaction(async (tx) => {
        await sql`select set_config('bastion.audit_retention', 'on', true), set_config('bastion.audit_retention_days', '400', true)`.execute(tx);
        await sql`delete from audit_events where id = ${young}`.execute(tx);
      }),
      /younger than the retention/,
    );
    // Nor a retention under a day.
    await assert.rejects(
      server.app.database.transaction(async (tx) => {
        await sql`select set_config('bastion.audit_retention', 'on', true), set_config('bastion.audit_retention_days', '0', true)`.execute(tx);
        await sql`delete from audit_events where id = ${kept[1] ?? ''}`.execute(tx);
      }),
      /younger than the retention/,
    );
    assert.deepEqual(await remaining(), [...kept].sort());
  });
});
