// Authentication refresh on the notification hub of `signalbox serve` (ASP.NET Core 11 protocol,
// docs: signalr-protocol.md §2.7) with the official @microsoft/signalr client and 5-second access
// tokens: negotiate's `tokenLifetimeSeconds`, a connection kept alive for 30 s by refreshing it
// (`POST /hubs/notifications/refresh?id={connectionToken}`), the close at expiry without refresh,
// the endpoint's error answers, and sign-out closing only that session's connections.
//
// The released client does not expose the connection token; ConnectionTokenHttpClient (helpers)
// reads it from the negotiate response. The tests run concurrently, each with its own user.

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import {
  CapturingLogger,
  ConnectionTokenHttpClient,
  nextInvocations,
  serviceEnv,
  signalboxCli,
  signalR,
  sleep,
  startSignalbox,
  uniq,
  within,
} from './helpers.mjs';

const PASSWORD = 'e2e password 123';
const TTL_S = 5;
const HUB = '/hubs/notifications';
const USERS = ['checker', 'keeper', 'closer', 'owner', 'other', 'leaver'];

const dir = mkdtempSync(path.join(tmpdir(), 'signalbox-e2e-refresh-'));
const env = serviceEnv(dir, {
  SIGNALBOX_ACCESS_TOKEN_TTL: `${TTL_S}s`,
  // Logins and token rotations of the concurrent tests share one address.
  SIGNALBOX_RATE_LIMIT_AUTH_BURST: '1000',
});

let server;
let url;

before(async () => {
  for (const name of USERS) signalboxCli(env, ['user', 'add', name], `${PASSWORD}\n`);
  signalboxCli(env, ['user', 'add', 'sender', '--claim', 'permission=notify'], `${PASSWORD}\n`);
  server = await startSignalbox({ env });
  url = server.url;
});

after(async () => {
  await server?.stop();
  rmSync(dir, { recursive: true, force: true });
});

// ---------------------------------------------------------------------------- helpers

async function api(method, route, { token, body, headers = {} } = {}) {
  const h = { ...headers };
  if (body !== undefined) h['content-type'] = 'application/json';
  if (token) h.authorization = `Bearer ${token}`;
  const res = await fetch(`${url}${route}`, { method, headers: h, body: body && JSON.stringify(body) });
  const text = await res.text();
  let parsed = text;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch {
    // leave as text
  }
  return { status: res.status, body: parsed };
}

/** Signs in: a new session ({access_token, refresh_token, expires_in}). */
async function login(username) {
  const res = await api('POST', '/api/auth/login', { body: { username, password: PASSWORD } });
  assert.equal(res.status, 200, JSON.stringify(res.body));
  assert.equal(res.body.expires_in, TTL_S);
  return res.body;
}

/** Rotates a session's tokens (`/api/auth/refresh`). */
async function rotate(session) {
  const res = await api('POST', '/api/auth/refresh', { body: { refresh_token: session.refresh_token } });
  assert.equal(res.status, 200, JSON.stringify(res.body));
  return res.body;
}

/** The hub's authentication refresh: POST /hubs/notifications/refresh?id=… with a bearer token. */
function hubRefresh(connectionToken, accessToken, { method = 'POST', headers } = {}) {
  const query = connectionToken === undefined ? '' : `?id=${encodeURIComponent(connectionToken)}`;
  return api(method, `${HUB}/refresh${query}`, { token: accessToken, headers });
}

function jwtExp(token) {
  return JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString()).exp;
}

/** Sends `message` to `user` as `sender` (publish API) and returns the notification id. */
async function publish(user, message) {
  const sender = await login('sender');
  const res = await api('POST', '/api/notifications', { token: sender.access_token, body: { user, message } });
  assert.equal(res.status, 201, JSON.stringify(res.body));
  return res.body.ids[0];
}

/**
 * A test with tracked hub connections: stopped afterwards; on failure their client logs and the
 * server's output are printed. `hub(getToken)` builds one (WebSockets, no automatic reconnect).
 */
function hubTest(name, fn, { timeout = 30_000 } = {}) {
  return test(name, { timeout }, async (t) => {
    const tracked = [];
    const mark = server.output().length;
    const hub = (getToken) => {
      const logger = new CapturingLogger(`client#${tracked.length + 1}`);
      const http = new ConnectionTokenHttpClient(logger);
      const connection = new signalR.HubConnectionBuilder()
        .withUrl(`${url}${HUB}`, {
          accessTokenFactory: getToken,
          transport: signalR.HttpTransportType.WebSockets,
          httpClient: http,
        })
        .configureLogging(logger)
        .build();
      const entry = { connection, http, logger, closedAt: null };
      entry.closed = new Promise((resolve) =>
        connection.onclose((error) => {
          entry.closedAt = Date.now();
          resolve(error ?? null);
        }),
      );
      tracked.push(entry);
      return entry;
    };
    try {
      await fn(hub, t);
    } catch (err) {
      for (const { logger } of tracked) for (const line of logger.lines) t.diagnostic(line);
      t.diagnostic(`--- server output ---\n${server.output().slice(mark).split('\n').slice(-100).join('\n')}`);
      throw err;
    } finally {
      await Promise.allSettled(tracked.map(({ connection }) => connection.stop()));
    }
  });
}

const negotiates = (http) => http.requests.filter((r) => new URL(r.url).pathname.endsWith('/negotiate'));

// ---------------------------------------------------------------------------- tests

describe('hub authentication refresh', { concurrency: true }, () => {
  hubTest('negotiate answers with tokenLifetimeSeconds (the access token lifetime)', async (hub) => {
    const session = await login('checker');
    const res = await api('POST', `${HUB}/negotiate?negotiateVersion=1`, { token: session.access_token });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.equal(typeof res.body.connectionToken, 'string');
    const lifetime = res.body.tokenLifetimeSeconds;
    assert.ok(Number.isInteger(lifetime) && lifetime >= TTL_S - 2 && lifetime <= TTL_S, `lifetime ${lifetime}`);
    const left = jwtExp(session.access_token) - Date.now() / 1000;
    assert.ok(Math.abs(left - lifetime) <= 1.5, `lifetime ${lifetime}, token expires in ${left} s`);

    // The official client negotiates the same way; its connection token is what `id=` takes.
    const { connection, http } = hub(() => session.access_token);
    await connection.start();
    assert.equal(negotiates(http).length, 1);
    assert.equal(typeof http.connectionToken, 'string');
    assert.notEqual(http.connectionToken, connection.connectionId);
  });

  hubTest(
    'a connection with 5-second tokens stays connected for 30 s while refreshed every ~3 s',
    async (hub) => {
      let session = await login('keeper');
      const { connection, http, closed } = hub(() => session.access_token);
      let closedEarly = null;
      closed.then((error) => (closedEarly = { error: String(error), at: new Date().toISOString() }));
      await connection.start();
      const connectionId = connection.connectionId;
      const connectionToken = http.connectionToken;
      const firstExp = jwtExp(session.access_token);

      const started = Date.now();
      let refreshes = 0;
      while (Date.now() - started < 30_000) {
        await Promise.race([sleep(3_000), closed]);
        assert.equal(closedEarly, null, `the connection closed after ${refreshes} refreshes`);
        session = await rotate(session);
        const res = await hubRefresh(connectionToken, session.access_token);
        assert.equal(res.status, 200, JSON.stringify(res.body));
        const lifetime = res.body.tokenLifetimeSeconds;
        assert.ok(Number.isInteger(lifetime) && lifetime >= TTL_S - 2 && lifetime <= TTL_S, JSON.stringify(res.body));
        refreshes += 1;
        assert.equal(connection.state, signalR.HubConnectionState.Connected);
        // The hub still serves invocations past the first token's expiry.
        assert.ok((await connection.invoke('GetOnlineUsers')).includes('keeper'));
      }
      assert.ok(Date.now() / 1000 > firstExp + 20, 'well past the first token');
      assert.ok(refreshes >= 9, `${refreshes} refreshes`);

      const message = uniq('still-here');
      const arrived = nextInvocations(connection, 'Notification', 1, {
        timeoutMs: 10_000,
        filter: (n) => n.message === message,
      });
      const id = await publish('keeper', message);
      const [[notification]] = await arrived;
      assert.equal(notification.id, id);

      assert.equal(closedEarly, null, 'onclose never fired');
      assert.equal(connection.state, signalR.HubConnectionState.Connected);
      assert.equal(connection.connectionId, connectionId, 'the same connection throughout');
      assert.equal(negotiates(http).length, 1, 'no reconnect (one negotiate)');
    },
    { timeout: 60_000 },
  );

  hubTest('without refresh the server closes the connection when its token expires', async (hub) => {
    const session = await login('closer');
    const exp = jwtExp(session.access_token);
    const started = Date.now();
    const { connection, closed } = hub(() => session.access_token);
    await connection.start();
    await within(closed, TTL_S * 1_000 + 5_000, 'the connection outlived its token');
    const closedAt = Date.now();
    assert.ok(closedAt >= exp * 1000 - 1_000, `closed ${exp * 1000 - closedAt} ms before the token expired`);
    assert.ok(closedAt - started <= TTL_S * 1_000 + 3_000, `closed ${closedAt - started} ms after the start`);
    assert.equal(connection.state, signalR.HubConnectionState.Disconnected);
  });

  hubTest("a refresh with another user's token is rejected; the connection stays the owner's", async (hub) => {
    let owner = await login('owner');
    const other = await login('other');
    const { connection, http, closed } = hub(() => owner.access_token);
    let closedEarly = false;
    closed.then(() => (closedEarly = true));
    await connection.start();

    const rejected = await hubRefresh(http.connectionToken, other.access_token);
    assert.equal(rejected.status, 403);
    assert.deepEqual(rejected.body, { error: 'permission_change_rejected' });

    // Still the owner's: the owner's next token is accepted, the owner's notifications arrive on
    // it, and marking one read there acts for the owner.
    owner = await rotate(owner);
    const accepted = await hubRefresh(http.connectionToken, owner.access_token);
    assert.equal(accepted.status, 200, JSON.stringify(accepted.body));
    const message = uniq('for-owner');
    const arrived = nextInvocations(connection, 'Notification', 1, { filter: (n) => n.message === message });
    const id = await publish('owner', message);
    assert.equal((await arrived)[0][0].id, id);
    assert.equal(await connection.invoke('MarkRead', id), true);
    const unread = await api('GET', '/api/notifications?unread=true', { token: owner.access_token });
    assert.equal(unread.status, 200);
    assert.ok(!unread.body.some((n) => n.id === id), 'read for the owner');
    assert.equal(closedEarly, false);
    assert.equal(connection.state, signalR.HubConnectionState.Connected);
  });

  hubTest('the refresh endpoint: 405, missing id, unknown id, invalid token', async (hub) => {
    const session = await login('checker');
    const { connection, http } = hub(() => session.access_token);
    await connection.start();
    const id = http.connectionToken;

    assert.equal((await hubRefresh(id, session.access_token, { method: 'GET' })).status, 405);
    assert.equal((await hubRefresh(id, session.access_token, { method: 'PUT' })).status, 405);

    const missing = await hubRefresh(undefined, session.access_token);
    assert.equal(missing.status, 400);
    assert.deepEqual(missing.body, { error: 'missing_connection_token' });

    const unknown = await hubRefresh('no-such-connection-token', session.access_token);
    assert.equal(unknown.status, 404);
    assert.deepEqual(unknown.body, { error: 'connection_not_found' });
    // The public connection id is not the token.
    assert.equal((await hubRefresh(connection.connectionId, session.access_token)).status, 404);

    const garbage = await hubRefresh(id, 'not.a.jwt');
    assert.equal(garbage.status, 401);
    assert.deepEqual(garbage.body, { error: 'invalid_token' });
    const none = await hubRefresh(id, undefined);
    assert.equal(none.status, 401);
    assert.deepEqual(none.body, { error: 'invalid_token' });

    assert.equal(connection.state, signalR.HubConnectionState.Connected);
    assert.equal((await hubRefresh(id, (await rotate(session)).access_token)).status, 200);
  });

  hubTest("sign-out closes that session's connection at once, not the user's other sessions", async (hub) => {
    const first = await login('leaver');
    let second = await login('leaver');
    const a = hub(() => first.access_token);
    const b = hub(() => second.access_token);
    let bClosed = false;
    b.closed.then(() => (bClosed = true));
    await Promise.all([a.connection.start(), b.connection.start()]);

    const loggedOut = Date.now();
    const res = await api('POST', '/api/auth/logout', { body: { refresh_token: first.refresh_token } });
    assert.ok(res.status >= 200 && res.status < 300, `${res.status} ${JSON.stringify(res.body)}`);
    await within(a.closed, 2_000, "the signed-out session's connection is still open");
    assert.ok(a.closedAt - loggedOut < 2_000);

    // A round trip on the other session's connection: a close would have come first.
    assert.ok((await b.connection.invoke('GetOnlineUsers')).includes('leaver'));
    assert.equal(b.connection.state, signalR.HubConnectionState.Connected);
    assert.equal(bClosed, false);

    // The ended session's access token is refused, also for refreshing another connection.
    const refused = await hubRefresh(b.http.connectionToken, first.access_token);
    assert.equal(refused.status, 401);
    assert.deepEqual(refused.body, { error: 'invalid_token' });
    second = await rotate(second);
    assert.equal((await hubRefresh(b.http.connectionToken, second.access_token)).status, 200);
    assert.equal(b.connection.state, signalR.HubConnectionState.Connected);
  });
});
