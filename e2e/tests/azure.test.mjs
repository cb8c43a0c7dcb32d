// Azure SignalR Service compatibility, end to end: `signalbox serve` with access keys, driven the
// way an Azure SignalR back end drives the real service — the data-plane REST API with Management
// SDK tokens, the official @microsoft/signalr client redirected by an app server's negotiate, and
// serverless upstream webhooks received by a local HTTP server, as Azure documents them (the
// data-plane REST API, access-key auth, upstream).

import assert from 'node:assert/strict';
import { after, before, describe } from 'node:test';

import { PROTOCOLS, TRANSPORTS } from './helpers.mjs';
import {
  Inbox,
  ManagementClient,
  PRIMARY_KEY,
  SECONDARY_KEY,
  azureTest,
  binaryPayload,
  clientToken,
  closed,
  completionReply,
  connectionEvent,
  decodeJwt,
  expectStatus,
  expectUpstreamRequest,
  flush,
  hex,
  nextCall,
  payload,
  route,
  startAppServer,
  startAzureService,
  startCluster,
  startUpstreamReceiver,
} from './azure_helpers.mjs';

/** One service for every single-node test; each test uses its own hubs. */
const ctx = { services: [], receiver: null, app: null, mgmt: null };

before(async () => {
  ctx.receiver = await startUpstreamReceiver([PRIMARY_KEY, SECONDARY_KEY]);
  const service = await startAzureService({ upstreamTemplate: ctx.receiver.template });
  ctx.services = [service];
  ctx.app = await startAppServer(service.url);
  ctx.mgmt = new ManagementClient(service.url);
});

after(async () => {
  await ctx.app?.close();
  await Promise.allSettled(ctx.services.map((s) => s.stop()));
  await ctx.receiver?.close();
});

const it = (name, fn, options) => azureTest(() => ctx, name, fn, options);

/** Connects `count` clients to `hub` (same options each). */
const connectMany = (s, hub, count, opts = {}) =>
  Promise.all(Array.from({ length: count }, () => s.connect(ctx.app, hub, opts)));

/** Sorts group members by connection id (pages come in any order). */
const byId = (members) =>
  [...members]
    .map(({ connectionId, userId }) => ({ connectionId, userId }))
    .sort((a, b) => a.connectionId.localeCompare(b.connectionId));

// ---------------------------------------------------------------------------------------------

describe('official client through an app server negotiate redirect', () => {
  for (const transport of TRANSPORTS) {
    // The JS client's ServerSentEvents transport is text-only: no MessagePack over it.
    for (const protocol of PROTOCOLS.filter((p) => transport !== 'ServerSentEvents' || p === 'json')) {
      it(`${transport} / ${protocol}: connects and gets user, connection and broadcast sends`, async (s) => {
        const hub = s.hub();
        const user = `user-${hex()}`;
        const c = await s.connect(ctx.app, hub, { user, transport, protocol });
        assert.ok(c.connectionId, 'the client has a connection id from the redirected negotiate');
        const value = { n: 1, text: 'héllo', list: [1, 'two', null], nested: { ok: true } };
        const sends = [
          ['user', () => ctx.mgmt.sendToUser(hub, user, payload('notify', ['user', value]))],
          ['connection', () => ctx.mgmt.sendToConnection(hub, c.connectionId, payload('notify', ['connection', value]))],
          ['broadcast', () => ctx.mgmt.broadcast(hub, payload('notify', ['broadcast', value]))],
        ];
        for (const [kind, send] of sends) {
          const got = nextCall(c, 'notify', { filter: (k) => k === kind });
          expectStatus(await send(), 202, { what: kind });
          assert.deepEqual(await got, [kind, value]);
        }
      });
    }
  }
});

// ---------------------------------------------------------------------------------------------

describe('client access tokens', () => {
  it('the user id comes from asrs.s.uid, else nameid, else sub; HS512 tokens are accepted', async (s) => {
    const hub = s.hub();
    const sessions = {
      'asrs.s.uid (HS512)': { user: `uid-${hex()}`, alg: 'HS512' },
      'nameid (docs-style token)': { claims: { nameid: `nameid-${hex()}` } },
      sub: { claims: { sub: `sub-${hex()}` } },
    };
    for (const [what, session] of Object.entries(sessions)) {
      const user = session.user ?? session.claims.nameid ?? session.claims.sub;
      const c = await s.connect(ctx.app, hub, session);
      const got = nextCall(c, 'who', { filter: (v) => v === what, timeoutMs: 5_000 });
      expectStatus(await ctx.mgmt.sendToUser(hub, user, payload('who', [what])), 202, { what });
      await got;
    }
  });

  it('refused: wrong key, expired, audience of another hub (the client cannot start)', async (s) => {
    const hub = s.hub();
    const serviceUrl = ctx.services[0].url;
    const tokens = {
      'wrong key': clientToken({ serviceUrl, hub: hub.toLowerCase(), key: 'not-the-access-key-0123456789abcdefghijklmno' }),
      expired: clientToken({ serviceUrl, hub: hub.toLowerCase(), lifetimeSeconds: -600 }),
      'audience of another hub': clientToken({ serviceUrl, hub: `other_${hex()}` }),
    };
    for (const [what, token] of Object.entries(tokens)) {
      await assert.rejects(s.connect(ctx.app, hub, { token }), /401|Unauthorized/i, what);
    }
  });
});

// ---------------------------------------------------------------------------------------------

describe('REST API (api-version 2022-06-01 paths, Management SDK requests)', () => {
  it('HEAD /api/health answers 200 without Authorization', async () => {
    expectStatus(await ctx.mgmt.health(), 200);
  });

  it('broadcast (:send) reaches the hub\'s clients except the excluded ones, and no other hub', async (s) => {
    const hub = s.hub();
    const other = s.hub();
    const [a, b] = await connectMany(s, hub, 2);
    const c = await s.connect(ctx.app, hub, { protocol: 'messagepack' });
    const d = await s.connect(ctx.app, other);
    const inbox = new Inbox([a, b, c, d], 'news');

    const first = [a, c].map((x) => nextCall(x, 'news'));
    expectStatus(await ctx.mgmt.broadcast(hub, payload('news', ['one', 1]), { excluded: [b.connectionId] }), 202);
    for (const args of await Promise.all(first)) assert.deepEqual(args, ['one', 1]);

    // `excluded` repeated: excluded=a&excluded=b.
    const second = nextCall(c, 'news', { filter: (v) => v === 'two' });
    expectStatus(
      await ctx.mgmt.broadcast(hub, payload('news', ['two']), { excluded: [a.connectionId, b.connectionId] }),
      202,
    );
    await second;
    await flush(ctx.mgmt, hub, [a, b, c], 'news');
    await flush(ctx.mgmt, other, [d], 'news');
    assert.deepEqual(inbox.of(a), ['one']);
    assert.deepEqual(inbox.of(b), []);
    assert.deepEqual(inbox.of(c), ['one', 'two']);
    assert.deepEqual(inbox.of(d), []);
  });

  it('send to a user reaches each of its connections (ids escaped in the path); unknown user → 202', async (s) => {
    const hub = s.hub();
    const user = `user/${hex()} é`;
    const mine = [
      await s.connect(ctx.app, hub, { user }),
      await s.connect(ctx.app, hub, { user, protocol: 'messagepack', transport: 'LongPolling' }),
    ];
    const stranger = await s.connect(ctx.app, hub, { user: `${user}-not` });
    const inbox = new Inbox([stranger], 'dm');
    const got = mine.map((c) => nextCall(c, 'dm'));
    expectStatus(await ctx.mgmt.sendToUser(hub, user, payload('dm', ['for you'])), 202);
    for (const args of await Promise.all(got)) assert.deepEqual(args, ['for you']);
    await flush(ctx.mgmt, hub, [stranger], 'dm');
    assert.deepEqual(inbox.of(stranger), []);
    expectStatus(await ctx.mgmt.sendToUser(hub, `nobody-${hex()}`, payload('dm', ['lost'])), 202);
  });

  it('send to a connection reaches only it; unknown connection → 202', async (s) => {
    const hub = s.hub();
    const [a, b] = await connectMany(s, hub, 2);
    const inbox = new Inbox([b], 'direct');
    const got = nextCall(a, 'direct');
    expectStatus(await ctx.mgmt.sendToConnection(hub, a.connectionId, payload('direct', [42, 'x'])), 202);
    assert.deepEqual(await got, [42, 'x']);
    await flush(ctx.mgmt, hub, [b], 'direct');
    assert.deepEqual(inbox.of(b), []);
    expectStatus(await ctx.mgmt.sendToConnection(hub, `missing-${hex()}`, payload('direct', [1])), 202);
  });

  it('request bodies: camelCase JSON (swagger) and the SDK\'s binary MessagePack map (octet-stream)', async (s) => {
    const hub = s.hub();
    const json = await s.connect(ctx.app, hub);
    const packed = await s.connect(ctx.app, hub, { protocol: 'messagepack' });
    const bodies = {
      camelCase: { body: { target: 'body', arguments: ['camelCase', { k: 1 }] } },
      binary: { body: binaryPayload('body', ['binary', { k: 1 }]), contentType: 'application/octet-stream' },
    };
    for (const [kind, opts] of Object.entries(bodies)) {
      const got = [json, packed].map((c) => nextCall(c, 'body', { filter: (k) => k === kind }));
      expectStatus(await ctx.mgmt.request('POST', ctx.mgmt.hubPath(hub, '/:send'), opts), 202, { what: kind });
      for (const args of await Promise.all(got)) assert.deepEqual(args, [kind, { k: 1 }], kind);
    }
  });

  it('connection ↔ group: add, group send with excluded, existence, remove, remove from all groups', async (s) => {
    const hub = s.hub();
    const group = `group/${hex()} x`;
    const [a, b, c] = await connectMany(s, hub, 3);
    const inbox = new Inbox([a, b, c], 'g');
    expectStatus(await ctx.mgmt.groupExists(hub, group), 404, { errorCode: 'Warning.Group.NotExisted' });
    for (const x of [a, b]) expectStatus(await ctx.mgmt.addConnectionToGroup(hub, group, x.connectionId), 200);
    expectStatus(await ctx.mgmt.groupExists(hub, group), 200);

    const one = nextCall(a, 'g');
    expectStatus(await ctx.mgmt.sendToGroup(hub, group, payload('g', ['one']), { excluded: [b.connectionId] }), 202);
    await one;

    expectStatus(await ctx.mgmt.removeConnectionFromGroup(hub, group, a.connectionId), 200);
    const two = nextCall(b, 'g', { filter: (v) => v === 'two' });
    expectStatus(await ctx.mgmt.sendToGroup(hub, group, payload('g', ['two'])), 202);
    await two;

    expectStatus(await ctx.mgmt.removeConnectionFromAllGroups(hub, b.connectionId), 200);
    expectStatus(await ctx.mgmt.groupExists(hub, group), 404, { errorCode: 'Warning.Group.NotExisted' });
    expectStatus(await ctx.mgmt.sendToGroup(hub, group, payload('g', ['three'])), 202);

    await flush(ctx.mgmt, hub, [a, b, c], 'g');
    assert.deepEqual(inbox.of(a), ['one']);
    assert.deepEqual(inbox.of(b), ['two']);
    assert.deepEqual(inbox.of(c), []);

    expectStatus(await ctx.mgmt.addConnectionToGroup(hub, group, `missing-${hex()}`), 404, {
      errorCode: 'Error.Connection.NotExisted',
    });
  });

  it('user ↔ group (ttl): the user\'s current and later connections join; GET/HEAD membership', async (s) => {
    const hub = s.hub();
    const user = `u-${hex()}`;
    const group = `team-${hex()}`;
    const first = await s.connect(ctx.app, hub, { user });
    expectStatus(await ctx.mgmt.userInGroup(hub, user, group), 404, { errorCode: 'Info.User.NotInGroup' });
    expectStatus(await ctx.mgmt.addUserToGroup(hub, user, group, { ttl: 3600 }), 200);
    expectStatus(await ctx.mgmt.userInGroup(hub, user, group), 200, { what: 'GET (as the SDK sends it)' });
    expectStatus(await ctx.mgmt.userInGroup(hub, user, group, { method: 'HEAD' }), 200, { what: 'HEAD' });
    expectStatus(await ctx.mgmt.groupExists(hub, group), 200);

    const later = await s.connect(ctx.app, hub, { user, protocol: 'messagepack', transport: 'LongPolling' });
    const got = [first, later].map((c) => nextCall(c, 'team'));
    expectStatus(await ctx.mgmt.sendToGroup(hub, group, payload('team', ['hi team'])), 202);
    for (const args of await Promise.all(got)) assert.deepEqual(args, ['hi team']);
  });

  it('user ↔ group with ttl=0 adds only the user\'s current connections', async (s) => {
    const hub = s.hub();
    const user = `u-${hex()}`;
    const group = `now-${hex()}`;
    const current = await s.connect(ctx.app, hub, { user });
    expectStatus(await ctx.mgmt.addUserToGroup(hub, user, group, { ttl: 0 }), 200);
    const later = await s.connect(ctx.app, hub, { user });
    const inbox = new Inbox([later], 'now');
    const got = nextCall(current, 'now');
    expectStatus(await ctx.mgmt.sendToGroup(hub, group, payload('now', ['current only'])), 202);
    await got;
    await flush(ctx.mgmt, hub, [later], 'now');
    assert.deepEqual(inbox.of(later), []);
  });

  it('remove a user from a group (204) and from all groups (204); later connections do not rejoin', async (s) => {
    const hub = s.hub();
    const user = `u-${hex()}`;
    const [g1, g2] = [`g1-${hex()}`, `g2-${hex()}`];
    const c = await s.connect(ctx.app, hub, { user });
    for (const g of [g1, g2]) expectStatus(await ctx.mgmt.addUserToGroup(hub, user, g), 200);

    expectStatus(await ctx.mgmt.removeUserFromGroup(hub, user, g1), 204);
    expectStatus(await ctx.mgmt.userInGroup(hub, user, g1), 404, { errorCode: 'Info.User.NotInGroup' });
    expectStatus(await ctx.mgmt.userInGroup(hub, user, g2), 200);

    expectStatus(await ctx.mgmt.removeUserFromAllGroups(hub, user), 204);
    expectStatus(await ctx.mgmt.userInGroup(hub, user, g2), 404, { errorCode: 'Info.User.NotInGroup' });

    const later = await s.connect(ctx.app, hub, { user });
    const inbox = new Inbox([c, later], 'left');
    for (const g of [g1, g2]) expectStatus(await ctx.mgmt.sendToGroup(hub, g, payload('left', [g])), 202);
    await flush(ctx.mgmt, hub, [c, later], 'left');
    assert.deepEqual(inbox.of(c), []);
    assert.deepEqual(inbox.of(later), []);
  });

  it('existence (HEAD and GET): connection, user, group; 404 with x-ms-error-code; gone after disconnect', async (s) => {
    const hub = s.hub();
    const user = `u-${hex()}`;
    const group = `g-${hex()}`;
    const c = await s.connect(ctx.app, hub, { user });
    expectStatus(await ctx.mgmt.addConnectionToGroup(hub, group, c.connectionId), 200);
    // [what, check(name, opts), present name, error code of a 404]
    const checks = [
      ['connection', (name, m) => ctx.mgmt.connectionExists(hub, name, m), c.connectionId, 'Warning.Connection.NotExisted'],
      ['user', (name, m) => ctx.mgmt.userExists(hub, name, m), user, 'Warning.User.NotExisted'],
      ['group', (name, m) => ctx.mgmt.groupExists(hub, name, m), group, 'Warning.Group.NotExisted'],
    ];
    for (const method of ['HEAD', 'GET']) {
      for (const [what, check, present, errorCode] of checks) {
        expectStatus(await check(present, { method }), 200, { what: `${method} ${what}` });
        expectStatus(await check(`missing-${hex()}`, { method }), 404, { what: `${method} missing ${what}`, errorCode });
      }
    }
    expectStatus(await ctx.mgmt.connectionExists(s.hub(), c.connectionId), 404, {
      what: 'the connection in another hub',
      errorCode: 'Warning.Connection.NotExisted',
    });

    const id = c.connectionId;
    await c.stop();
    await ctx.receiver.waitFor(connectionEvent('disconnected', id), { what: 'upstream disconnected' });
    for (const [what, check, present, errorCode] of checks) {
      expectStatus(await check(present, { method: 'HEAD' }), 404, { what: `${what} after disconnect`, errorCode });
    }
  });

  it('DELETE a connection with reason → 200, the client closes with the reason; unknown → 200/404', async (s) => {
    const hub = s.hub();
    const c = await s.connect(ctx.app, hub);
    const whenClosed = closed(c);
    expectStatus(await ctx.mgmt.closeConnection(hub, c.connectionId, { reason: 'kicked by e2e' }), 200);
    const err = await whenClosed;
    assert.match(String(err?.message), /kicked by e2e/);
    expectStatus(await ctx.mgmt.closeConnection(hub, `missing-${hex()}`), [200, 404], {
      errorCode: 'Warning.Connection.NotExisted',
    });
  });

  for (const scope of ['hub', 'group', 'user']) {
    it(`${scope} :closeConnections → 204: its connections close with the reason, others stay`, async (s) => {
      const hub = s.hub();
      const user = `u-${hex()}`;
      const group = `g-${hex()}`;
      const [target, excluded] = await connectMany(s, hub, 2, { user });
      // Outside the scope: another hub for `hub`, another user (not in the group) otherwise.
      const outsiderHub = scope === 'hub' ? s.hub() : hub;
      const outsider = await s.connect(ctx.app, outsiderHub, { user: `${user}-other` });
      for (const x of [target, excluded]) expectStatus(await ctx.mgmt.addConnectionToGroup(hub, group, x.connectionId), 200);

      const reason = `closing ${scope} ${hex()}`;
      const whenClosed = closed(target);
      const scopeArgs = { hub: {}, group: { group }, user: { user } }[scope];
      expectStatus(
        await ctx.mgmt.closeConnections(hub, { ...scopeArgs, excluded: [excluded.connectionId], reason }),
        204,
      );
      assert.match(String((await whenClosed)?.message), new RegExp(reason));
      await flush(ctx.mgmt, hub, [excluded], 'still');
      await flush(ctx.mgmt, outsiderHub, [outsider], 'still');
      expectStatus(await ctx.mgmt.connectionExists(hub, excluded.connectionId), 200, { what: 'excluded connection' });
    });
  }

  it(':generateToken returns a client token the official client connects with', async (s) => {
    const hub = s.hub();
    const user = `gen-${hex()}`;
    const res = expectStatus(await ctx.mgmt.generateToken(hub, { userId: user, minutesToExpire: 5 }), 200);
    const { token } = res.json;
    assert.equal(typeof token, 'string', `${res}`);
    const { payload: claims } = decodeJwt(token);
    const lifetime = claims.exp - Math.floor(Date.now() / 1000);
    assert.ok(lifetime > 240 && lifetime <= 330, `exp about 5 minutes ahead: ${JSON.stringify(claims)}`);
    assert.match(String(claims.aud), new RegExp(`/client/\\?hub=${hub.toLowerCase()}$`), JSON.stringify(claims));

    const c = await s.connect(ctx.app, hub, { token });
    const got = nextCall(c, 'dm');
    expectStatus(await ctx.mgmt.sendToUser(hub, user, payload('dm', ['via a generated token'])), 202);
    await got;

    const anonymous = expectStatus(await ctx.mgmt.generateToken(hub), 200, { what: 'no userId, default lifetime' });
    const defaultLifetime = decodeJwt(anonymous.json.token).payload.exp - Math.floor(Date.now() / 1000);
    assert.ok(defaultLifetime > 3500 && defaultLifetime <= 3630, `default 60 minutes: ${anonymous.text}`);
  });

  for (const protocol of PROTOCOLS) {
    it(`:invoke returns the client's result (${protocol})`, async (s) => {
      const hub = s.hub();
      const c = await s.connect(ctx.app, hub, { protocol });
      c.on('getAnswer', (question, n) => ({ question, answer: n * 2 }));
      const res = expectStatus(await ctx.mgmt.invoke(hub, c.connectionId, payload('getAnswer', ['life', 21])), 200);
      assert.deepEqual(res.json.result, { question: 'life', answer: 42 }, `${res}`);
    });
  }

  it('GET group connections: value/nextLink paging with maxpagesize, continuationToken and top', async (s) => {
    const hub = s.hub();
    const group = `g-${hex()}`;
    const users = [0, 1, 2].map((i) => `member${i}-${hex()}`);
    const conns = await Promise.all(users.map((user) => s.connect(ctx.app, hub, { user })));
    for (const c of conns) expectStatus(await ctx.mgmt.addConnectionToGroup(hub, group, c.connectionId), 200);
    const expected = byId(conns.map((c, i) => ({ connectionId: c.connectionId, userId: users[i] })));

    const whole = expectStatus(await ctx.mgmt.listGroupConnections(hub, group), 200);
    assert.deepEqual(byId(whole.json.value), expected, `${whole}`);
    assert.ok(!whole.json.nextLink, `one page by default\n${whole}`);

    const paged = await ctx.mgmt.allGroupConnections(hub, group, { maxpagesize: 2 });
    assert.deepEqual(paged.pages.map((p) => p.json.value.length), [2, 1], paged.pages.join('\n'));
    assert.deepEqual(byId(paged.members), expected);

    const { nextLink } = paged.pages[0].json;
    const continuationToken = new URL(nextLink, ctx.mgmt.endpoint).searchParams.get('continuationToken');
    assert.ok(continuationToken, `nextLink carries continuationToken: ${nextLink}`);
    const rest = expectStatus(await ctx.mgmt.listGroupConnections(hub, group, { maxpagesize: 2, continuationToken }), 200);
    assert.deepEqual(rest.json.value, paged.pages[1].json.value, `${rest}`);

    const topped = await ctx.mgmt.allGroupConnections(hub, group, { top: 2, maxpagesize: 1 });
    assert.equal(topped.members.length, 2, topped.pages.join('\n'));

    const empty = expectStatus(await ctx.mgmt.listGroupConnections(hub, `empty-${hex()}`), 200);
    assert.deepEqual(empty.json.value, [], `${empty}`);
  });

  it('hub names are case-insensitive in REST paths; `application` prefixes the hub ({app}_{hub})', async (s) => {
    const hub = s.hub('MixedCase');
    const plain = await s.connect(ctx.app, hub);
    const got = nextCall(plain, 'm');
    expectStatus(await ctx.mgmt.request('POST', route`/api/hubs/${hub}/:send`, { body: payload('m', ['as written']) }), 202);
    assert.deepEqual(await got, ['as written']);

    const application = `App_${hex()}`;
    const inApp = await s.connect(ctx.app, `${application}_${hub}`);
    const app = ctx.mgmt.with({ application });
    const inbox = new Inbox([plain], 'm');
    const appGot = nextCall(inApp, 'm');
    expectStatus(await app.broadcast(hub, payload('m', ['application'])), 202);
    assert.deepEqual(await appGot, ['application']);
    await flush(ctx.mgmt, hub, [plain], 'm');
    assert.deepEqual(inbox.of(plain), []);
    expectStatus(await app.connectionExists(hub, inApp.connectionId), 200, { what: 'with application' });
    expectStatus(await ctx.mgmt.connectionExists(hub, inApp.connectionId), 404, {
      what: 'without application',
      errorCode: 'Warning.Connection.NotExisted',
    });
  });
});

// ---------------------------------------------------------------------------------------------

describe('REST authentication', () => {
  it('accepted: primary or secondary key, SDK audience (no port, with query), docs audience, another host', async (s) => {
    const hub = s.hub();
    const c = await s.connect(ctx.app, hub);
    const variants = {
      'primary key, SDK audience': ctx.mgmt,
      'secondary key': ctx.mgmt.with({ key: SECONDARY_KEY }),
      'docs audience (request URL without query)': ctx.mgmt.with({ audience: 'docs' }),
      'audience naming another host': ctx.mgmt.with({
        audience: (url, query) => `https://signalbox.example.com${url.pathname}?${query}`,
      }),
      'another api-version (2024-12-01)': ctx.mgmt.with({ apiVersion: '2024-12-01' }),
    };
    for (const [what, client] of Object.entries(variants)) {
      const got = nextCall(c, 'auth', { filter: (v) => v === what });
      expectStatus(await client.sendToConnection(hub, c.connectionId, payload('auth', [what])), 202, { what });
      await got;
    }
  });

  it('401: wrong key, expired, not yet valid, audience of another path, no token', async (s) => {
    const hub = s.hub();
    const c = await s.connect(ctx.app, hub);
    const inbox = new Inbox([c], 'auth');
    const path = ctx.mgmt.hubPath(hub, route`/connections/${c.connectionId}/:send`);
    const variants = {
      'wrong key': ctx.mgmt.with({ key: 'not-the-access-key-0123456789abcdefghijklmno' }),
      'expired token': ctx.mgmt.with({ notBeforeSeconds: -3600, lifetimeSeconds: -600 }),
      'nbf in the future': ctx.mgmt.with({ notBeforeSeconds: 600, lifetimeSeconds: 1200 }),
      'audience of another hub': ctx.mgmt.with({
        audience: (url, query) => `http://127.0.0.1/api/hubs/another${hex()}/connections/x/:send?${query}`,
      }),
    };
    for (const [what, client] of Object.entries(variants)) {
      expectStatus(await client.request('POST', path, { body: payload('auth', [what]) }), 401, { what });
    }
    expectStatus(await ctx.mgmt.request('POST', path, { body: payload('auth', ['none']), auth: false }), 401, {
      what: 'no Authorization header',
    });
    await flush(ctx.mgmt, hub, [c], 'auth');
    assert.deepEqual(inbox.of(c), []);
  });
});

// ---------------------------------------------------------------------------------------------

describe('v1 REST paths (/api/v1/…, docs-style tokens, no api-version)', () => {
  const v1 = () => ctx.mgmt.with({ audience: 'docs', apiVersion: null });
  const hubV1 = (hub, rest = '') => `${route`/api/v1/hubs/${hub.toLowerCase()}`}${rest}`;

  it('HEAD /api/v1/health → 200', async () => {
    expectStatus(await v1().request('HEAD', '/api/v1/health'), 200);
  });

  it('sends → 202: broadcast and group with excluded, user, connection', async (s) => {
    const hub = s.hub();
    const user = `v1-${hex()}`;
    const group = `g-${hex()}`;
    const a = await s.connect(ctx.app, hub, { user });
    const b = await s.connect(ctx.app, hub);
    const inbox = new Inbox([a, b], 'v1');
    for (const x of [a, b]) {
      expectStatus(await v1().request('PUT', hubV1(hub, route`/groups/${group}/connections/${x.connectionId}`)), 200);
    }
    const sends = [
      ['broadcast', hubV1(hub), { excluded: [b.connectionId] }, a],
      ['user', hubV1(hub, route`/users/${user}`), {}, a],
      ['connection', hubV1(hub, route`/connections/${b.connectionId}`), {}, b],
      ['group', hubV1(hub, route`/groups/${group}`), { excluded: [a.connectionId] }, b],
    ];
    for (const [kind, target, extra, receiver] of sends) {
      const got = nextCall(receiver, 'v1', { filter: (k) => k === kind });
      expectStatus(await v1().request('POST', target, { body: payload('v1', [kind]), extra }), 202, { what: kind });
      await got;
    }
    await flush(ctx.mgmt, hub, [a, b], 'v1');
    assert.deepEqual(inbox.of(a), ['broadcast', 'user']);
    assert.deepEqual(inbox.of(b), ['connection', 'group']);
  });

  it('existence (GET and HEAD) → 200/404: connection, group, user, user in group', async (s) => {
    const hub = s.hub();
    const user = `v1-${hex()}`;
    const group = `g-${hex()}`;
    const c = await s.connect(ctx.app, hub, { user });
    expectStatus(await v1().request('PUT', hubV1(hub, route`/groups/${group}/users/${user}`)), 202);
    const paths = {
      connection: [route`/connections/${c.connectionId}`, route`/connections/missing-${hex()}`],
      group: [route`/groups/${group}`, route`/groups/missing-${hex()}`],
      user: [route`/users/${user}`, route`/users/missing-${hex()}`],
      'user in group': [route`/groups/${group}/users/${user}`, route`/groups/${group}/users/missing-${hex()}`],
    };
    for (const method of ['GET', 'HEAD']) {
      for (const [what, [present, absent]] of Object.entries(paths)) {
        expectStatus(await v1().request(method, hubV1(hub, present)), 200, { what: `${method} ${what}` });
        expectStatus(await v1().request(method, hubV1(hub, absent)), 404, { what: `${method} missing ${what}` });
      }
    }
  });

  it('groups: connection PUT/DELETE → 200, user PUT (ttl)/DELETE → 202, user groups DELETE → 200/202', async (s) => {
    const hub = s.hub();
    const user = `v1-${hex()}`;
    const [g1, g2] = [`g1-${hex()}`, `g2-${hex()}`];
    const c = await s.connect(ctx.app, hub, { user });
    const inbox = new Inbox([c], 'grp');
    const member = route`/groups/${g1}/connections/${c.connectionId}`;
    expectStatus(await v1().request('PUT', hubV1(hub, member)), 200);
    expectStatus(await v1().request('DELETE', hubV1(hub, member)), 200);
    expectStatus(await v1().request('PUT', hubV1(hub, route`/groups/${g2}/users/${user}`), { extra: { ttl: 600 } }), 202);
    const got = nextCall(c, 'grp');
    expectStatus(await v1().request('POST', hubV1(hub, route`/groups/${g2}`), { body: payload('grp', [g2]) }), 202);
    await got;
    expectStatus(await v1().request('DELETE', hubV1(hub, route`/groups/${g2}/users/${user}`)), 202);
    expectStatus(await v1().request('PUT', hubV1(hub, route`/groups/${g1}/users/${user}`)), 202);
    expectStatus(await v1().request('DELETE', hubV1(hub, route`/users/${user}/groups`)), [200, 202]);
    for (const g of [g1, g2]) {
      expectStatus(await v1().request('POST', hubV1(hub, route`/groups/${g}`), { body: payload('grp', [g]) }), 202);
    }
    await flush(ctx.mgmt, hub, [c], 'grp');
    assert.deepEqual(inbox.of(c), [g2]);
  });

  it('DELETE a connection with reason → 202, the client closes with the reason', async (s) => {
    const hub = s.hub();
    const c = await s.connect(ctx.app, hub);
    const whenClosed = closed(c);
    expectStatus(
      await v1().request('DELETE', hubV1(hub, route`/connections/${c.connectionId}`), { extra: { reason: 'v1 says bye' } }),
      202,
    );
    assert.match(String((await whenClosed)?.message), /v1 says bye/);
  });
});

// ---------------------------------------------------------------------------------------------

describe('Entra ID key fetch, :execute and the stream operations', () => {
  it('GET /api/auth/accessKey (Entra ID only) → 501 with an error body', async () => {
    for (const path of ['/api/auth/accessKey', '/api/v1/auth/accessKey']) {
      const res = await ctx.mgmt.request('GET', path, { query: { 'api-version': '2023-07-01' } });
      expectStatus(res, [501]);
      assert.match(res.text ?? '', /not supported/i, `${path}: ${res}`);
    }
  });

  it('POST /:execute with filter → 202 and the commands apply to matching connections only', async (s) => {
    const hub = s.hub();
    const group = `g-${hex()}`;
    const listener = await s.connect(ctx.app, hub, { user: `listener-${hex()}` });
    const other = await s.connect(ctx.app, hub, { user: `other-${hex()}` });
    const inbox = new Inbox([listener, other], 'exec');
    const got = nextCall(listener, 'exec');
    expectStatus(
      await ctx.mgmt.with({ apiVersion: '2024-12-01' }).request('POST', ctx.mgmt.hubPath(hub, '/:execute'), {
        query: { filter: "startswith(userId, 'listener-')" },
        body: [
          { type: 'SendMessage', message: { target: 'exec', arguments: ['executed'] } },
          { type: 'JoinGroup', group },
        ],
      }),
      [202],
    );
    await got;
    const grouped = nextCall(listener, 'exec', { filter: (v) => v === 'group' });
    expectStatus(await ctx.mgmt.sendToGroup(hub, group, payload('exec', ['group'])), 202);
    await grouped;
    await flush(ctx.mgmt, hub, [other], 'exec');
    assert.deepEqual(inbox.of(other), []);
  });

  it('POST streams/{streamId}/:send and :complete → 501 (their body is not specified)', async (s, t) => {
    const hub = s.hub();
    const c = await s.connect(ctx.app, hub);
    const api = ctx.mgmt.with({ apiVersion: '2024-12-01' });
    const stream = ctx.mgmt.hubPath(hub, route`/connections/${c.connectionId}/streams/${`s-${hex()}`}`);
    const requests = {
      ':send': () => api.request('POST', `${stream}/:send`, { body: { item: 1 }, query: { completed: false } }),
      ':complete': () => api.request('POST', `${stream}/:complete`, { extra: { reason: 'done' } }),
    };
    for (const [what, send] of Object.entries(requests)) {
      const res = await send();
      t.diagnostic(`stream ${what} answered ${res.status}`);
      expectStatus(res, [501], { what: `stream ${what}` });
    }
  });
});

// ---------------------------------------------------------------------------------------------

describe('upstream (serverless webhooks)', () => {
  it('connected / disconnected: signed POSTs with hub, category, event, user and claims headers', async (s) => {
    const hub = s.hub();
    const user = `up-${hex()}`;
    const c = await s.connect(ctx.app, hub, { user, claims: { role: 'admin', department: 'e2e' } });
    const id = c.connectionId;
    const connected = await ctx.receiver.waitFor(connectionEvent('connected', id), { what: 'connected' });
    expectUpstreamRequest(connected, { hub, category: 'connections', event: 'connected', user });
    assert.match(connected.headers['content-type'] ?? '', /^application\/json/);
    assert.equal(connected.message?.type ?? connected.message?.Type, 10, `body ${connected.body}`);
    assert.match(connected.headers['x-asrs-user-claims'] ?? '', /role: admin/, 'X-ASRS-User-Claims');
    const query = connected.headers['x-asrs-client-query'] ?? '';
    assert.match(query, new RegExp(`hub=${hub.toLowerCase()}`), 'X-ASRS-Client-Query');

    await c.stop();
    const disconnected = await ctx.receiver.waitFor(connectionEvent('disconnected', id), { what: 'disconnected' });
    expectUpstreamRequest(disconnected, { hub, category: 'connections', event: 'disconnected', user });
    assert.equal(disconnected.message?.type ?? disconnected.message?.Type, 11, `body ${disconnected.body}`);
    assert.ok(!(disconnected.message?.error ?? disconnected.message?.Error), `clean close, no error: ${disconnected.body}`);
  });

  it('an anonymous connection: no X-ASRS-User-Id', async (s) => {
    const hub = s.hub();
    const c = await s.connect(ctx.app, hub);
    const connected = await ctx.receiver.waitFor(connectionEvent('connected', c.connectionId), { what: 'connected' });
    expectUpstreamRequest(connected, { hub, category: 'connections', event: 'connected', user: undefined });
  });

  for (const protocol of PROTOCOLS) {
    it(`hub invocations go upstream (${protocol}): result, 204/empty 200 → null, 404 → error, send`, async (s) => {
      const hub = s.hub();
      const user = `up-${hex()}`;
      ctx.receiver.on(hub, (r) => {
        if (r.category !== 'messages') return undefined;
        return {
          echo: () => completionReply(r, { result: { echoed: r.message.arguments } }),
          refuse: () => completionReply(r, { error: 'refused by the function' }),
          nothing: () => ({ status: 204 }),
          empty: () => ({ status: 200 }),
          missing: () => ({ status: 404 }),
        }[r.event]?.();
      });
      const c = await s.connect(ctx.app, hub, { user, protocol });
      const mine = (event) => (r) => r.connectionId === c.connectionId && r.category === 'messages' && r.event === event;

      assert.deepEqual(await c.invoke('echo', 'a', 2), { echoed: ['a', 2] });
      const [echo] = ctx.receiver.matching(mine('echo'));
      expectUpstreamRequest(echo, { hub, category: 'messages', event: 'echo', user });
      const contentType = protocol === 'json' ? /^application\/json/ : /^application\/x-msgpack/;
      assert.match(echo.headers['content-type'] ?? '', contentType);
      assert.equal(echo.message?.type, 1, `unframed InvocationMessage: ${JSON.stringify(echo.message)}`);
      assert.equal(echo.message.target, 'echo');
      assert.deepEqual(echo.message.arguments, ['a', 2]);
      assert.ok(echo.message.invocationId !== undefined && echo.message.invocationId !== null, 'invocationId');

      await assert.rejects(c.invoke('refuse'), /refused by the function/);
      assert.equal((await c.invoke('nothing')) ?? null, null, '204 → empty completion');
      assert.equal((await c.invoke('empty')) ?? null, null, 'empty 200 → empty completion');
      await assert.rejects(c.invoke('missing'), /Invocation failed, status code 404/);

      const sent = ctx.receiver.waitFor(mine('notify'), { what: 'send notify' });
      await c.send('notify', { text: 'fire and forget' });
      const notify = await sent;
      expectUpstreamRequest(notify, { hub, category: 'messages', event: 'notify', user });
      assert.equal(notify.message?.invocationId ?? null, null, 'no invocationId for send');
      assert.deepEqual(notify.message.arguments, [{ text: 'fire and forget' }]);
    });
  }

  it('connection events are retried after the webhook fails', async (s) => {
    const hub = s.hub();
    const failuresLeft = { connected: 1, disconnected: 1 };
    ctx.receiver.on(hub, (r) => (r.category === 'connections' && failuresLeft[r.event]-- > 0 ? { status: 500 } : undefined));
    const c = await s.connect(ctx.app, hub);
    const id = c.connectionId;
    const connected = await ctx.receiver.waitFor(connectionEvent('connected', id), {
      count: 2,
      timeoutMs: 20_000,
      what: 'connected (500, then a retry)',
    });
    for (const r of connected) {
      expectUpstreamRequest(r, { hub, category: 'connections', event: 'connected', user: undefined });
    }
    await c.stop();
    await ctx.receiver.waitFor(connectionEvent('disconnected', id), {
      count: 2,
      timeoutMs: 20_000,
      what: 'disconnected (500, then a retry)',
    });
  }, { timeout: 60_000 });
});

// ---------------------------------------------------------------------------------------------

describe('two nodes (Redis backplane, shared PostgreSQL)', () => {
  const cl = { services: [], receiver: null, appB: null, mgmtA: null, mgmtB: null, cluster: null };

  before(async () => {
    cl.cluster = await startCluster({ upstreamTemplate: ctx.receiver.template });
    cl.services = cl.cluster.nodes;
    cl.receiver = ctx.receiver;
    cl.appB = await startAppServer(cl.services[1].url);
    cl.mgmtA = new ManagementClient(cl.services[0].url);
    cl.mgmtB = new ManagementClient(cl.services[1].url);
  });

  after(async () => {
    await cl.appB?.close();
    await cl.cluster?.stop();
  });

  const itc = (name, fn, options) => azureTest(() => cl, name, fn, options);

  itc('existence on node A sees a connection, user and group on node B', async (s) => {
    const hub = s.hub();
    const user = `b-${hex()}`;
    const group = `g-${hex()}`;
    const c = await s.connect(cl.appB, hub, { user });
    expectStatus(await cl.mgmtB.addConnectionToGroup(hub, group, c.connectionId), 200, { what: 'group add on B' });
    expectStatus(await cl.mgmtA.connectionExists(hub, c.connectionId), 200, { what: 'connection' });
    expectStatus(await cl.mgmtA.userExists(hub, user), 200, { what: 'user' });
    expectStatus(await cl.mgmtA.groupExists(hub, group), 200, { what: 'group' });
  });

  itc('sends on node A reach a client on node B: connection, user, broadcast', async (s) => {
    const hub = s.hub();
    const user = `b-${hex()}`;
    const c = await s.connect(cl.appB, hub, { user });
    const sends = {
      connection: () => cl.mgmtA.sendToConnection(hub, c.connectionId, payload('x', ['connection'])),
      user: () => cl.mgmtA.sendToUser(hub, user, payload('x', ['user'])),
      broadcast: () => cl.mgmtA.broadcast(hub, payload('x', ['broadcast'])),
    };
    const missing = [];
    for (const [kind, send] of Object.entries(sends)) {
      const got = nextCall(c, 'x', { filter: (k) => k === kind, timeoutMs: 5_000 });
      expectStatus(await send(), 202, { what: kind });
      await got.catch(() => missing.push(kind));
    }
    assert.deepEqual(missing, [], 'sends that did not arrive on node B');
  });

  itc('groups on node A include a client on node B: connection and user add, group send, list', async (s) => {
    const hub = s.hub();
    const user = `b-${hex()}`;
    const [group, userGroup] = [`g-${hex()}`, `ug-${hex()}`];
    const c = await s.connect(cl.appB, hub, { user });
    expectStatus(await cl.mgmtA.addConnectionToGroup(hub, group, c.connectionId), 200, { what: 'add connection on A' });
    expectStatus(await cl.mgmtA.addUserToGroup(hub, user, userGroup), 200, { what: 'add user on A' });
    expectStatus(await cl.mgmtA.userInGroup(hub, user, userGroup), 200, { what: 'user in group on A' });
    for (const g of [group, userGroup]) {
      const got = nextCall(c, 'x', { filter: (k) => k === g });
      expectStatus(await cl.mgmtA.sendToGroup(hub, g, payload('x', [g])), 202, { what: g });
      await got;
    }
    const listed = expectStatus(await cl.mgmtA.listGroupConnections(hub, group), 200);
    assert.deepEqual(byId(listed.json.value), [{ connectionId: c.connectionId, userId: user }], `${listed}`);
  });

  itc(':invoke on node A returns the result of a client on node B', async (s) => {
    const hub = s.hub();
    const c = await s.connect(cl.appB, hub);
    c.on('whereAmI', () => 'node B');
    const invoked = expectStatus(await cl.mgmtA.invoke(hub, c.connectionId, payload('whereAmI')), 200);
    assert.equal(invoked.json.result, 'node B', `${invoked}`);
  });

  itc('closing on node A closes a client on node B with the reason (connection, user)', async (s) => {
    const hub = s.hub();
    const user = `b-${hex()}`;
    const [byConnection, byUser] = await Promise.all([s.connect(cl.appB, hub), s.connect(cl.appB, hub, { user })]);
    const closes = [
      [byConnection, (reason) => cl.mgmtA.closeConnection(hub, byConnection.connectionId, { reason }), 200],
      [byUser, (reason) => cl.mgmtA.closeConnections(hub, { user, reason }), 204],
    ];
    const notClosed = [];
    for (const [c, close, status] of closes) {
      const reason = `closed from node A ${hex()}`;
      const whenClosed = closed(c, { timeoutMs: 5_000 });
      expectStatus(await close(reason), status, { what: reason });
      const outcome = await whenClosed.then((err) => ({ err }), () => null);
      if (outcome) assert.match(String(outcome.err?.message), new RegExp(reason));
      else notClosed.push(c.connectionId);
    }
    assert.deepEqual(notClosed, [], 'connections on node B that did not close');
  });

  itc('a user\'s group (ttl) set on node A applies to its later connection on node B', async (s) => {
    const hub = s.hub();
    const user = `u-${hex()}`;
    const group = `g-${hex()}`;
    expectStatus(await cl.mgmtA.addUserToGroup(hub, user, group, { ttl: 3600 }), 200);
    const c = await s.connect(cl.appB, hub, { user });
    const got = nextCall(c, 'later');
    expectStatus(await cl.mgmtA.sendToGroup(hub, group, payload('later', ['joined on B'])), 202);
    await got;
  });

  itc('upstream connected / disconnected fire once for a connection on node B', async (s) => {
    const hub = s.hub();
    const c = await s.connect(cl.appB, hub);
    const id = c.connectionId;
    await cl.receiver.waitFor(connectionEvent('connected', id), { what: 'connected' });
    await c.stop();
    await cl.receiver.waitFor(connectionEvent('disconnected', id), { what: 'disconnected' });
    assert.equal(cl.receiver.matching(connectionEvent('connected', id)).length, 1, 'connected once');
    assert.equal(cl.receiver.matching(connectionEvent('disconnected', id)).length, 1, 'disconnected once');
  });
});
