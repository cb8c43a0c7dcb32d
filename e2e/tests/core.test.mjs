// End-to-end tests of the example chat server (crates/signalbox/examples/chat.rs)
// with the official @microsoft/signalr client (JSON and MessagePack) and raw
// HTTP/WebSocket requests. One server process serves the whole file.

import assert from 'node:assert/strict';
import { describe } from 'node:test';

import {
  HUB_PATH,
  JWT_SECRET,
  PROTOCOLS,
  RS,
  Recorder,
  makeJwt,
  negotiate,
  nextInvocations,
  onClose,
  serverTest,
  signalR,
  uniq,
  useServer,
  within,
  wsUrlOf,
} from './helpers.mjs';

const srv = useServer();
const it = (name, fn, options) => serverTest(srv, name, fn, options);

const UNAUTHORIZED_START = "Failed to complete negotiation with the server: Error: Unauthorized: Status code '401'";

/** Asserts that `promise` rejects with an Error whose message equals `message`. */
async function rejectsWithMessage(promise, message) {
  await assert.rejects(promise, (err) => {
    assert.equal(err?.message, message);
    return true;
  });
}

/** Asserts that `promise` rejects with an Error whose message satisfies `check`. */
async function rejectsWith(promise, check, what) {
  await assert.rejects(promise, (err) => {
    assert.ok(check(String(err?.message)), `${what}; got: ${JSON.stringify(err?.message)}`);
    return true;
  });
}

/**
 * Ordering barrier: `sender` broadcasts a unique ReceiveMessage via Send and we
 * wait until every recorder has seen it. Messages to one connection are
 * delivered in order, so anything a connection was (wrongly) sent before the
 * barrier has arrived by the time this resolves.
 */
async function barrier(sender, recorders) {
  const marker = uniq('barrier');
  const waits = recorders.map((r) => r.waitFor('ReceiveMessage', (_u, m) => m === marker));
  await sender.invoke('Send', marker);
  await Promise.all(waits);
}

/** Authenticated POST /api/broadcast. */
function postBroadcast(s, message, token = s.token(uniq('admin'))) {
  const headers = { 'Content-Type': 'application/json' };
  if (token) headers.Authorization = `Bearer ${token}`;
  return fetch(`${s.url}/api/broadcast`, { method: 'POST', headers, body: JSON.stringify({ message }) });
}

/**
 * Negotiates (Bearer header) and opens a raw WebSocket to the hub with the
 * Authorization header, then completes the handshake for `protocol`.
 */
async function rawHubSocket(s, { protocol = 'json', user = uniq('raw') } = {}) {
  const token = s.token(user);
  const neg = await negotiate(s.url, { token });
  assert.equal(neg.status, 200, `negotiate: ${neg.text}`);
  const sock = s.socket(`${wsUrlOf(s.url)}${HUB_PATH}?id=${encodeURIComponent(neg.body.connectionToken)}`, {
    headers: { Authorization: `Bearer ${token}` },
  });
  await sock.opened;
  sock.send(`${JSON.stringify({ protocol, version: 1 })}${RS}`);
  const hs = await sock.nextRecord(() => true);
  assert.deepEqual(hs, {}, 'handshake response');
  return sock;
}

// ---------------------------------------------------------------------------
// Negotiate
// ---------------------------------------------------------------------------

describe('negotiate', () => {
  it('negotiateVersion=1 returns id, distinct token and WebSockets (Text, Binary)', async (s) => {
    const res = await negotiate(s.url, { token: s.token('neg-user') });
    assert.equal(res.status, 200, res.text);
    assert.match(res.headers.get('content-type') ?? '', /^application\/json/);
    const body = res.body;
    assert.equal(typeof body, 'object', `JSON body expected, got ${res.text}`);
    assert.equal(body.negotiateVersion, 1);
    assert.equal(typeof body.connectionId, 'string');
    assert.ok(body.connectionId.length > 0, 'connectionId is empty');
    assert.equal(typeof body.connectionToken, 'string');
    assert.ok(body.connectionToken.length > 0, 'connectionToken is empty');
    assert.notEqual(body.connectionToken, body.connectionId, 'connectionToken must differ from connectionId');
    assert.ok(Array.isArray(body.availableTransports), 'availableTransports must be an array');
    const ws = body.availableTransports.find((t) => t.transport === 'WebSockets');
    assert.ok(ws, `WebSockets missing from ${JSON.stringify(body.availableTransports)}`);
    assert.deepEqual(ws.transferFormats, ['Text', 'Binary']);
    assert.equal(body.useStatefulReconnect, undefined, 'useStatefulReconnect must not be sent unasked');
    assert.equal(body.error, undefined);

    const again = await negotiate(s.url, { token: s.token('neg-user') });
    assert.notEqual(again.body.connectionId, body.connectionId, 'connection ids must be unique');
    assert.notEqual(again.body.connectionToken, body.connectionToken, 'connection tokens must be unique');
  });

  it('without negotiateVersion answers version 0 and no connectionToken', async (s) => {
    const res = await negotiate(s.url, { query: '', token: s.token('neg-user') });
    assert.equal(res.status, 200, res.text);
    assert.equal(res.body.negotiateVersion, 0);
    assert.equal(typeof res.body.connectionId, 'string');
    assert.ok(res.body.connectionId.length > 0, 'connectionId is empty');
    assert.equal(res.body.connectionToken, undefined, 'no connectionToken for version 0');
    assert.ok(res.body.availableTransports.some((t) => t.transport === 'WebSockets'));
  });

  it('negotiateVersion=abc answers HTTP 200 with the non-integer error', async (s) => {
    const res = await negotiate(s.url, { query: 'negotiateVersion=abc', token: s.token('neg-user') });
    assert.equal(res.status, 200, res.text);
    assert.deepEqual(res.body, { error: 'The client requested a non-integer protocol version.' });
  });

  it('without a token answers 401 with an empty body', async (s) => {
    const res = await negotiate(s.url);
    assert.equal(res.status, 401);
    assert.equal(res.text, '');
  });
});

// ---------------------------------------------------------------------------
// Plain HTTP endpoints of the example
// ---------------------------------------------------------------------------

describe('http endpoints', () => {
  it('GET /token issues a JWT for the user that the hub accepts', async (s) => {
    const res = await fetch(`${s.url}/token?user=token-user`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /^text\/plain/);
    const jwt = (await res.text()).trim();
    const parts = jwt.split('.');
    assert.equal(parts.length, 3, `not a compact JWT: ${jwt}`);
    const header = JSON.parse(Buffer.from(parts[0], 'base64url').toString());
    const payload = JSON.parse(Buffer.from(parts[1], 'base64url').toString());
    assert.equal(header.alg, 'HS256');
    assert.equal(payload.sub, 'token-user');
    const ttl = payload.exp - Math.floor(Date.now() / 1000);
    assert.ok(ttl > 240 && ttl <= 301, `exp should be ~5 min ahead, is ${ttl} s`);

    const conn = s.build({ token: jwt });
    await conn.start();
    assert.equal(await conn.invoke('WhoAmI'), 'token-user');
  });

  it('GET /token?permission=moderate issues a token allowed to Moderate', async (s) => {
    const jwt = (await (await fetch(`${s.url}/token?user=mod-user&permission=moderate`)).text()).trim();
    const payload = JSON.parse(Buffer.from(jwt.split('.')[1], 'base64url').toString());
    assert.equal(payload.permission, 'moderate');
    const conn = s.build({ token: jwt });
    await conn.start();
    assert.equal(await conn.invoke('Moderate', 'hello'), 'ok');
  });

  it('GET /api/whoami accepts the Authorization header', async (s) => {
    const res = await fetch(`${s.url}/api/whoami`, { headers: { Authorization: `Bearer ${s.token('whoami-user')}` } });
    assert.equal(res.status, 200);
    assert.equal(await res.text(), 'whoami-user');
  });

  it('GET /api/whoami rejects access_token in the query (non-hub route)', async (s) => {
    const res = await fetch(`${s.url}/api/whoami?access_token=${encodeURIComponent(s.token('whoami-user'))}`);
    assert.equal(res.status, 401);
  });

  it('GET /api/whoami without a token is 401', async (s) => {
    const res = await fetch(`${s.url}/api/whoami`);
    assert.equal(res.status, 401);
  });

  it('GET /api/whoami with a wrongly signed token is 401', async (s) => {
    const bad = makeJwt({ sub: 'whoami-user' }, 'not-the-server-secret');
    const res = await fetch(`${s.url}/api/whoami`, { headers: { Authorization: `Bearer ${bad}` } });
    assert.equal(res.status, 401);
  });

  it('POST /api/broadcast without a token is 401', async (s) => {
    const res = await postBroadcast(s, 'nope', null);
    assert.equal(res.status, 401);
  });
});

// ---------------------------------------------------------------------------
// access_token in the query string (what browsers do) — hub routes only
// ---------------------------------------------------------------------------

describe('access_token query on hub routes', () => {
  it('negotiate and WebSocket connect with access_token, handshake, WhoAmI', async (s) => {
    const user = uniq('query-user');
    const jwt = s.token(user);
    const res = await fetch(
      `${s.url}${HUB_PATH}/negotiate?negotiateVersion=1&access_token=${encodeURIComponent(jwt)}`,
      { method: 'POST' },
    );
    const text = await res.text();
    assert.equal(res.status, 200, text);
    const { connectionToken } = JSON.parse(text);
    assert.equal(typeof connectionToken, 'string');

    const sock = s.socket(
      `${wsUrlOf(s.url)}${HUB_PATH}?id=${encodeURIComponent(connectionToken)}&access_token=${encodeURIComponent(jwt)}`,
    );
    await sock.opened;
    sock.send(`{"protocol":"json","version":1}${RS}`);
    assert.deepEqual(await sock.nextRecord(() => true), {}, 'handshake response');

    sock.send(`${JSON.stringify({ type: 1, invocationId: '1', target: 'WhoAmI', arguments: [] })}${RS}`);
    const completion = await sock.nextRecord((r) => r.type === 3);
    assert.deepEqual(completion, { type: 3, invocationId: '1', result: user });
  });

  it('WebSocket upgrade without any token is 401', async (s) => {
    const neg = await negotiate(s.url, { token: s.token('ws-user') });
    const sock = s.socket(`${wsUrlOf(s.url)}${HUB_PATH}?id=${encodeURIComponent(neg.body.connectionToken)}`);
    await assert.rejects(sock.opened, (err) => {
      assert.equal(err.status, 401, err.message);
      return true;
    });
  });

  it('WebSocket upgrade with a wrongly signed access_token is 401', async (s) => {
    const neg = await negotiate(s.url, { token: s.token('ws-user') });
    const bad = makeJwt({ sub: 'ws-user' }, 'not-the-server-secret');
    const sock = s.socket(
      `${wsUrlOf(s.url)}${HUB_PATH}?id=${encodeURIComponent(neg.body.connectionToken)}&access_token=${encodeURIComponent(bad)}`,
    );
    await assert.rejects(sock.opened, (err) => {
      assert.equal(err.status, 401, err.message);
      return true;
    });
  });
});

// ---------------------------------------------------------------------------
// Connection ids, handshake and keep-alive (raw WebSocket)
// ---------------------------------------------------------------------------

describe('transport details', () => {
  it('v1: the public connectionId is not accepted as ?id= (only the token is)', async (s) => {
    const token = s.token('id-user');
    const neg = await negotiate(s.url, { token });
    const sock = s.socket(`${wsUrlOf(s.url)}${HUB_PATH}?id=${encodeURIComponent(neg.body.connectionId)}`, {
      headers: { Authorization: `Bearer ${token}` },
    });
    await assert.rejects(sock.opened, (err) => {
      assert.ok(err.status >= 400 && err.status < 500, `expected a 4xx upgrade rejection, got ${err.message}`);
      return true;
    });
  });

  it('v0: the connectionId is the ?id= value', async (s) => {
    const user = uniq('v0-user');
    const token = s.token(user);
    const neg = await negotiate(s.url, { query: '', token });
    assert.equal(neg.status, 200, neg.text);
    const sock = s.socket(`${wsUrlOf(s.url)}${HUB_PATH}?id=${encodeURIComponent(neg.body.connectionId)}`, {
      headers: { Authorization: `Bearer ${token}` },
    });
    await sock.opened;
    sock.send(`{"protocol":"json","version":1}${RS}`);
    assert.deepEqual(await sock.nextRecord(() => true), {});
    sock.send(`{"type":1,"invocationId":"7","target":"WhoAmI","arguments":[]}${RS}`);
    assert.deepEqual(await sock.nextRecord((r) => r.type === 3), { type: 3, invocationId: '7', result: user });
  });

  it('handshake with an unsupported protocol gets the error and is closed', async (s) => {
    const token = s.token('hs-user');
    const neg = await negotiate(s.url, { token });
    const sock = s.socket(`${wsUrlOf(s.url)}${HUB_PATH}?id=${encodeURIComponent(neg.body.connectionToken)}`, {
      headers: { Authorization: `Bearer ${token}` },
    });
    await sock.opened;
    sock.send(`{"protocol":"carrier-pigeon","version":1}${RS}`);
    assert.deepEqual(await sock.nextRecord(() => true), { error: "The protocol 'carrier-pigeon' is not supported." });
    await sock.waitClosed({ timeoutMs: 10_000 });
  });

  it('the server pings an idle connection within the 15 s keep-alive interval', async (s) => {
    const sock = await rawHubSocket(s, { protocol: 'json' });
    const ping = await sock.nextRecord((r) => r.type === 6, { timeoutMs: 20_000 });
    assert.deepEqual(ping, { type: 6 });
  });
});

// ---------------------------------------------------------------------------
// Hub tests, once per hub protocol
// ---------------------------------------------------------------------------

for (const protocol of PROTOCOLS) {
  describe(`hub over ${protocol}`, () => {
    const connect = (s, opts = {}) => s.connect({ protocol, ...opts });

    // --- connection & authentication -------------------------------------

    it('connects with an accessTokenFactory (sync and async)', async (s) => {
      let calls = 0;
      const user = uniq('factory');
      const conn = s.build({
        protocol,
        accessTokenFactory: () => {
          calls += 1;
          return s.token(user);
        },
      });
      await conn.start();
      assert.equal(conn.state, signalR.HubConnectionState.Connected);
      assert.ok(calls >= 1, 'accessTokenFactory was not called');
      assert.equal(typeof conn.connectionId, 'string');
      assert.equal(await conn.invoke('WhoAmI'), user);

      const asyncUser = uniq('async-factory');
      const conn2 = s.build({ protocol, accessTokenFactory: async () => s.token(asyncUser) });
      await conn2.start();
      assert.equal(await conn2.invoke('WhoAmI'), asyncUser);
    });

    it('GetConnectionId returns the negotiated connection id', async (s) => {
      const a = await connect(s);
      const b = await connect(s);
      assert.equal(await a.invoke('GetConnectionId'), a.connectionId);
      assert.equal(await b.invoke('GetConnectionId'), b.connectionId);
      assert.notEqual(a.connectionId, b.connectionId);
    });

    it('WhoAmI returns the sub claim', async (s) => {
      const user = uniq('who');
      const conn = await connect(s, { user });
      assert.equal(await conn.invoke('WhoAmI'), user);
    });

    it('start() without a token rejects with 401', async (s) => {
      const conn = s.build({ protocol });
      await rejectsWithMessage(conn.start(), UNAUTHORIZED_START);
      assert.equal(conn.state, signalR.HubConnectionState.Disconnected);
    });

    it('start() with an expired token rejects with 401', async (s) => {
      // 10 minutes in the past: beyond any reasonable clock-skew leeway.
      const conn = s.build({ protocol, token: s.token(uniq('expired'), {}, { expiresIn: -600 }) });
      await rejectsWithMessage(conn.start(), UNAUTHORIZED_START);
    });

    it('start() with a token signed with the wrong secret rejects with 401', async (s) => {
      const conn = s.build({ protocol, token: makeJwt({ sub: uniq('forger') }, `${JWT_SECRET}-wrong`) });
      await rejectsWithMessage(conn.start(), UNAUTHORIZED_START);
    });

    it('start() with an alg "none" token rejects with 401', async (s) => {
      const conn = s.build({ protocol, token: makeJwt({ sub: uniq('none') }, JWT_SECRET, { alg: 'none' }) });
      await rejectsWithMessage(conn.start(), UNAUTHORIZED_START);
    });

    // --- invocation results ------------------------------------------------

    it('Echo returns strings, numbers, nested objects and null', async (s) => {
      const conn = await connect(s);
      const values = [
        'hello',
        '',
        'héllo wörld ✓ 👋',
        42,
        -7,
        3.5,
        0,
        true,
        false,
        [1, 'two', null, [3]],
        { name: 'x', n: 1, f: 2.25, ok: true, nothing: null, list: [1, 2, { deep: ['a', { deeper: 'b' }] }], obj: {} },
        null,
      ];
      for (const value of values) {
        assert.deepEqual(await conn.invoke('Echo', value), value, `Echo(${JSON.stringify(value)})`);
      }
    });

    it('Echo of a 30,000-character string (under the 32 KB limit) works', async (s) => {
      const conn = await connect(s);
      const big = 'y'.repeat(30_000);
      assert.equal(await conn.invoke('Echo', big), big);
    });

    it('hub method names are case-insensitive', async (s) => {
      const user = uniq('case');
      const conn = await connect(s, { user });
      assert.equal(await conn.invoke('echo', 'lower'), 'lower');
      assert.equal(await conn.invoke('ECHO', 'upper'), 'upper');
      assert.equal(await conn.invoke('whoami'), user);
    });

    it('methods without a result resolve to null/undefined', async (s) => {
      const user = uniq('void');
      const conn = await connect(s, { user });
      const group = uniq('g');
      for (const [method, ...args] of [
        ['Send', uniq('m')],
        ['SendToOthers', uniq('m')],
        ['JoinGroup', group],
        ['SendToGroup', group, uniq('m')],
        ['LeaveGroup', group],
        ['SendToUser', user, uniq('m')],
      ]) {
        const result = await conn.invoke(method, ...args);
        assert.ok(result === null || result === undefined, `${method} resolved to ${JSON.stringify(result)}`);
      }
    });

    // --- server → client ---------------------------------------------------

    it('send() (fire-and-forget) reaches other clients', async (s) => {
      const userA = uniq('alice');
      const a = await connect(s, { user: userA });
      const b = await connect(s);
      const msg = uniq('fire');
      const gotB = nextInvocations(b, 'ReceiveMessage', 1, { filter: (_u, m) => m === msg });
      const gotA = nextInvocations(a, 'ReceiveMessage', 1, { filter: (_u, m) => m === msg });
      await a.send('Send', msg);
      assert.deepEqual(await gotB, [[userA, msg]]);
      assert.deepEqual(await gotA, [[userA, msg]]);
    });

    it('failing fire-and-forget calls get no answer and leave the connection usable', async (s) => {
      const a = await connect(s);
      await a.send('Crash');
      await a.send('NoSuchMethod', 1);
      await a.send('Fail', 'quiet');
      await a.send('Moderate', 'no claim');
      await a.send('Echo');
      assert.equal(await a.invoke('Echo', 'still here'), 'still here');
      assert.equal(a.state, signalR.HubConnectionState.Connected);
    });

    it('Send broadcasts ReceiveMessage to all, SendToOthers to all but the caller', async (s) => {
      const userA = uniq('alice');
      const a = await connect(s, { user: userA });
      const b = await connect(s);
      const c = await connect(s);
      const [ra, rb, rc] = [a, b, c].map((x) => new Recorder(x, ['ReceiveMessage']));

      const all = uniq('all');
      await a.invoke('Send', all);
      for (const r of [ra, rb, rc]) await r.waitFor('ReceiveMessage', (_u, m) => m === all);
      for (const r of [ra, rb, rc]) assert.deepEqual(r.of('ReceiveMessage', (_u, m) => m === all), [[userA, all]]);

      const others = uniq('others');
      await a.invoke('SendToOthers', others);
      await rb.waitFor('ReceiveMessage', (_u, m) => m === others);
      await rc.waitFor('ReceiveMessage', (_u, m) => m === others);
      await barrier(a, [ra, rb, rc]);
      assert.deepEqual(ra.of('ReceiveMessage', (_u, m) => m === others), [], 'caller must not get SendToOthers');
      assert.deepEqual(rb.of('ReceiveMessage', (_u, m) => m === others), [[userA, others]]);
      assert.deepEqual(rc.of('ReceiveMessage', (_u, m) => m === others), [[userA, others]]);
    });

    it('groups: only members receive GroupMessage; leaving stops delivery', async (s) => {
      const userA = uniq('alice');
      const a = await connect(s, { user: userA });
      const b = await connect(s);
      const c = await connect(s);
      const methods = ['GroupMessage', 'ReceiveMessage'];
      const [ra, rb, rc] = [a, b, c].map((x) => new Recorder(x, methods));
      const group = uniq('room');

      await a.invoke('JoinGroup', group);
      await b.invoke('JoinGroup', group);
      const m1 = uniq('m1');
      await a.invoke('SendToGroup', group, m1);
      await ra.waitFor('GroupMessage', (_g, _u, m) => m === m1);
      await rb.waitFor('GroupMessage', (_g, _u, m) => m === m1);
      await barrier(a, [ra, rb, rc]);
      assert.deepEqual(ra.of('GroupMessage'), [[group, userA, m1]]);
      assert.deepEqual(rb.of('GroupMessage'), [[group, userA, m1]]);
      assert.deepEqual(rc.of('GroupMessage'), [], 'non-member received a group message');

      await b.invoke('LeaveGroup', group);
      const m2 = uniq('m2');
      await a.invoke('SendToGroup', group, m2);
      await ra.waitFor('GroupMessage', (_g, _u, m) => m === m2);
      await barrier(a, [ra, rb, rc]);
      assert.deepEqual(rb.of('GroupMessage', (_g, _u, m) => m === m2), [], 'member that left still receives');
      assert.deepEqual(rc.of('GroupMessage'), []);

      // A non-member may send to the group too.
      const m3 = uniq('m3');
      await c.invoke('SendToGroup', group, m3);
      await ra.waitFor('GroupMessage', (_g, _u, m) => m === m3);
      await barrier(a, [ra, rb, rc]);
      assert.deepEqual(rc.of('GroupMessage'), [], 'sender outside the group received its group message');
    });

    it('users: every connection of the user gets DirectMessage, other users do not', async (s) => {
      const alice = uniq('alice');
      const carol = uniq('carol');
      const a1 = await connect(s, { user: alice });
      const a2 = await connect(s, { user: alice });
      const bob = await connect(s, { user: uniq('bob') });
      const sender = await connect(s, { user: carol });
      const methods = ['DirectMessage', 'ReceiveMessage'];
      const [r1, r2, rb, rs] = [a1, a2, bob, sender].map((x) => new Recorder(x, methods));

      const dm = uniq('dm');
      await sender.invoke('SendToUser', alice, dm);
      await r1.waitFor('DirectMessage', (_f, m) => m === dm);
      await r2.waitFor('DirectMessage', (_f, m) => m === dm);
      await barrier(sender, [r1, r2, rb, rs]);
      assert.deepEqual(r1.of('DirectMessage'), [[carol, dm]]);
      assert.deepEqual(r2.of('DirectMessage'), [[carol, dm]]);
      assert.deepEqual(rb.of('DirectMessage'), [], 'another user received the direct message');
      assert.deepEqual(rs.of('DirectMessage'), [], 'the sender received its own direct message');
    });

    it('POST /api/broadcast sends ReceiveMessage("server", message) to every connection', async (s) => {
      const a = await connect(s);
      const b = await connect(s);
      const msg = uniq('announce');
      const gotA = nextInvocations(a, 'ReceiveMessage', 1, { filter: (_u, m) => m === msg });
      const gotB = nextInvocations(b, 'ReceiveMessage', 1, { filter: (_u, m) => m === msg });
      const res = await postBroadcast(s, msg);
      assert.equal(res.status, 202, await res.text());
      assert.deepEqual(await gotA, [['server', msg]]);
      assert.deepEqual(await gotB, [['server', msg]]);
    });

    // --- authorization & errors --------------------------------------------

    it('Moderate without the claim is unauthorized; the connection stays usable', async (s) => {
      const conn = await connect(s);
      await rejectsWithMessage(conn.invoke('Moderate', 'hi'), "Failed to invoke 'Moderate' because user is unauthorized");
      assert.equal(conn.state, signalR.HubConnectionState.Connected);
      assert.equal(await conn.invoke('Echo', 'after'), 'after');

      const other = await connect(s, { claims: { permission: 'read' } });
      await rejectsWithMessage(other.invoke('Moderate', 'hi'), "Failed to invoke 'Moderate' because user is unauthorized");
    });

    it('Moderate with permission=moderate returns "ok"', async (s) => {
      const conn = await connect(s, { claims: { permission: 'moderate' } });
      assert.equal(await conn.invoke('Moderate', 'hi'), 'ok');
    });

    it('Fail("boom") rejects with the HubException message', async (s) => {
      const conn = await connect(s);
      await rejectsWith(
        conn.invoke('Fail', 'boom'),
        (m) => m.includes('HubException: boom'),
        'expected the message to contain "HubException: boom"',
      );
      assert.equal(await conn.invoke('Echo', 'after'), 'after');
    });

    it('Crash() rejects with the generic error', async (s) => {
      const conn = await connect(s);
      await rejectsWithMessage(conn.invoke('Crash'), "An unexpected error occurred invoking 'Crash' on the server.");
      assert.equal(await conn.invoke('Echo', 'after'), 'after');
    });

    it('an unknown method rejects with "Unknown hub method"', async (s) => {
      const conn = await connect(s);
      await rejectsWithMessage(conn.invoke('NoSuchMethod'), "Unknown hub method 'NoSuchMethod'");
      assert.equal(await conn.invoke('Echo', 'after'), 'after');
    });

    it('a wrong argument count rejects with the binding error', async (s) => {
      const conn = await connect(s);
      const prefix = "Failed to invoke 'Echo' due to an error on the server.";
      await rejectsWith(conn.invoke('Echo'), (m) => m.startsWith(prefix), `expected a message starting "${prefix}"`);
      await rejectsWith(
        conn.invoke('Echo', 'a', 'b'),
        (m) => m.startsWith(prefix),
        `expected a message starting "${prefix}"`,
      );
      assert.equal(await conn.invoke('Echo', 'after'), 'after');
    });

    // --- robustness --------------------------------------------------------

    it('an oversized message closes that connection; others keep working', async (s) => {
      const healthy = await connect(s);
      const victim = await connect(s);
      const closed = onClose(victim);

      const huge = 'x'.repeat(40_000);
      const outcome = victim.invoke('Echo', huge).then(
        (result) => ({ result }),
        (error) => ({ error }),
      );
      const err = await within(closed, 10_000, 'onclose after the oversized message (server should close the connection)');
      assert.ok(err instanceof Error, `onclose should get an error, got ${err}`);
      assert.match(err.message, /clos/i);
      assert.equal(victim.state, signalR.HubConnectionState.Disconnected);
      const settled = await within(outcome, 5_000, 'the oversized invocation to settle');
      assert.ok(settled.error, 'the oversized invocation must not succeed');

      assert.equal(healthy.state, signalR.HubConnectionState.Connected);
      assert.equal(await healthy.invoke('Echo', 'fine'), 'fine');
      const msg = uniq('after-oversize');
      const got = nextInvocations(healthy, 'ReceiveMessage', 1, { filter: (_u, m) => m === msg });
      const res = await postBroadcast(s, msg);
      assert.equal(res.status, 202);
      assert.deepEqual(await got, [['server', msg]]);
    });

    it('garbage after the handshake closes the raw socket; others keep working', async (s) => {
      const healthy = await connect(s);
      const sock = await rawHubSocket(s, { protocol });
      if (protocol === 'json') sock.send(`this is {not json at all${RS}`);
      else sock.send(Buffer.from([0x05, 0xc1, 0xc1, 0xc1, 0xc1, 0xc1]));
      await sock.waitClosed({ timeoutMs: 10_000 });

      assert.equal(healthy.state, signalR.HubConnectionState.Connected);
      assert.equal(await healthy.invoke('Echo', 'fine'), 'fine');
      const msg = uniq('after-garbage');
      const got = nextInvocations(healthy, 'ReceiveMessage', 1, { filter: (_u, m) => m === msg });
      await healthy.invoke('Send', msg);
      assert.equal((await got)[0][1], msg);
    });
  });
}

// ---------------------------------------------------------------------------
// Mixed protocols
// ---------------------------------------------------------------------------

describe('mixed protocols', () => {
  it('JSON and MessagePack clients receive each other’s messages and broadcasts', async (s) => {
    const userJ = uniq('json-user');
    const userM = uniq('msgpack-user');
    const j = await s.connect({ user: userJ, protocol: 'json' });
    const m = await s.connect({ user: userM, protocol: 'messagepack' });

    const fromJ = uniq('from-json');
    let got = nextInvocations(m, 'ReceiveMessage', 1, { filter: (_u, x) => x === fromJ });
    await j.invoke('Send', fromJ);
    assert.deepEqual(await got, [[userJ, fromJ]]);

    const fromM = uniq('from-msgpack');
    got = nextInvocations(j, 'ReceiveMessage', 1, { filter: (_u, x) => x === fromM });
    await m.invoke('Send', fromM);
    assert.deepEqual(await got, [[userM, fromM]]);

    const group = uniq('mixed');
    await j.invoke('JoinGroup', group);
    await m.invoke('JoinGroup', group);
    const gm = uniq('gm');
    const gj = nextInvocations(j, 'GroupMessage', 1);
    const gmm = nextInvocations(m, 'GroupMessage', 1);
    await m.invoke('SendToGroup', group, gm);
    assert.deepEqual(await gj, [[group, userM, gm]]);
    assert.deepEqual(await gmm, [[group, userM, gm]]);

    const dm = uniq('dm');
    const dj = nextInvocations(j, 'DirectMessage', 1);
    await m.invoke('SendToUser', userJ, dm);
    assert.deepEqual(await dj, [[userM, dm]]);

    const announce = uniq('announce');
    const aj = nextInvocations(j, 'ReceiveMessage', 1, { filter: (_u, x) => x === announce });
    const am = nextInvocations(m, 'ReceiveMessage', 1, { filter: (_u, x) => x === announce });
    const res = await postBroadcast(s, announce);
    assert.equal(res.status, 202);
    assert.deepEqual(await aj, [['server', announce]]);
    assert.deepEqual(await am, [['server', announce]]);
  });
});
