// End-to-end tests of the notification service (`signalbox serve`, crate signalbox-server)
// with the official @microsoft/signalr client: accounts created with the CLI, login over the
// REST API, the hub at /hubs/notifications delivering `Notification` (missed while offline,
// then live), and the OpenAPI document checked by a validator.

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import SwaggerParser from '@apidevtools/swagger-parser';

import { CapturingLogger, nextInvocations, serviceEnv, signalboxCli, signalR, startSignalbox } from './helpers.mjs';

const PASSWORD = 'e2e password 123';

const dir = mkdtempSync(path.join(tmpdir(), 'signalbox-e2e-'));
const env = serviceEnv(dir);
const cli = (args, input) => signalboxCli(env, args, input);

let server;
let url;

before(async () => {
  cli(['user', 'add', 'alice'], `${PASSWORD}\n`);
  cli(['user', 'add', 'backend', '--claim', 'permission=notify'], `${PASSWORD}\n`);
  cli(['user', 'add', 'carol'], `${PASSWORD}\n`);
  // The banner: URL, storage, backplane.
  server = await startSignalbox({ env, ready: (stdout) => /Backplane: in-memory/.test(stdout) });
  url = server.url;
  assert.match(server.output(), /Storage: sqlite/);
});

after(async () => {
  await server?.stop();
  rmSync(dir, { recursive: true, force: true });
});

async function api(method, route, { token, body } = {}) {
  const headers = { 'content-type': 'application/json' };
  if (token) headers.authorization = `Bearer ${token}`;
  const res = await fetch(`${url}${route}`, { method, headers, body: body && JSON.stringify(body) });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

async function login(username) {
  const res = await api('POST', '/api/auth/login', { body: { username, password: PASSWORD } });
  assert.equal(res.status, 200, JSON.stringify(res.body));
  assert.equal(res.body.token_type, 'Bearer');
  return res.body;
}

describe('signalbox serve', () => {
  test('a user receives Notification: missed ones on connect, then live', { timeout: 30_000 }, async () => {
    const alice = await login('alice');
    const backend = await login('backend');

    const missed = await api('POST', '/api/notifications', {
      token: backend.access_token,
      body: { user: 'alice', message: 'sent while offline' },
    });
    assert.equal(missed.status, 201, JSON.stringify(missed.body));

    const logger = new CapturingLogger('alice');
    const connection = new signalR.HubConnectionBuilder()
      .withUrl(`${url}/hubs/notifications`, {
        accessTokenFactory: () => alice.access_token,
        transport: signalR.HttpTransportType.WebSockets,
      })
      .configureLogging(logger)
      .build();
    const first = nextInvocations(connection, 'Notification', 1, { timeoutMs: 10_000 });
    try {
      await connection.start();
      const [[notification]] = await first;
      assert.equal(notification.id, missed.body.ids[0]);
      assert.equal(notification.from, 'backend');
      assert.equal(notification.message, 'sent while offline');
      assert.match(notification.created_at, /Z$/);

      // A token from `signalbox token issue` works for the publish API too.
      const scripted = cli(['token', 'issue', '--sub', 'backend', '--claim', 'permission=notify', '--ttl', '5m']).trim();
      const live = nextInvocations(connection, 'Notification', 1, { timeoutMs: 10_000 });
      const sent = await api('POST', '/api/notifications', {
        token: scripted,
        body: { users: ['alice'], message: 'live' },
      });
      assert.equal(sent.status, 201, JSON.stringify(sent.body));
      const [[liveNotification]] = await live;
      assert.equal(liveNotification.id, sent.body.ids[0]);
      assert.equal(liveNotification.message, 'live');

      assert.deepEqual(await connection.invoke('GetOnlineUsers'), ['alice']);
      assert.equal(await connection.invoke('MarkRead', liveNotification.id), true);
      const unread = await api('GET', '/api/notifications?unread=true', { token: alice.access_token });
      assert.deepEqual(unread.body.map((n) => n.id), [notification.id]);

      // Alice lacks the notify permission: the hub refuses her SendNotification.
      await assert.rejects(connection.invoke('SendNotification', 'backend', 'hi'), /unauthorized/);
    } catch (err) {
      for (const line of logger.lines) console.error(line);
      console.error(server.output());
      throw err;
    } finally {
      await connection.stop();
    }
  });

  test('PresenceChanged reaches the connections that watch', { timeout: 30_000 }, async () => {
    const alice = await login('alice');
    const backend = await login('backend');
    const connect = (token) =>
      new signalR.HubConnectionBuilder()
        .withUrl(`${url}/hubs/notifications`, {
          accessTokenFactory: () => token,
          transport: signalR.HttpTransportType.WebSockets,
        })
        .configureLogging(signalR.LogLevel.Warning)
        .build();
    const watcher = connect(alice.access_token);
    const bystander = connect(alice.access_token);
    const seenByBystander = [];
    bystander.on('PresenceChanged', (event) => seenByBystander.push(event));
    await watcher.start();
    await bystander.start();
    const other = connect(backend.access_token);
    try {
      // Watching everyone answers who is online now.
      assert.deepEqual(await watcher.invoke('WatchPresence', null), ['alice']);
      const online = nextInvocations(watcher, 'PresenceChanged', 1, { timeoutMs: 10_000 });
      await other.start();
      const [[edge]] = await online;
      assert.equal(edge.user, 'backend');
      assert.equal(edge.online, true);
      // A marker sent to the bystander after the edge went out: nothing came before it.
      const marker = nextInvocations(bystander, 'Notification', 1, { timeoutMs: 10_000 });
      const sent = await api('POST', '/api/notifications', {
        token: backend.access_token,
        body: { user: 'alice', message: 'marker' },
      });
      assert.equal(sent.status, 201, JSON.stringify(sent.body));
      await marker;
      assert.deepEqual(seenByBystander, []);
      // Watching by name.
      assert.deepEqual(await bystander.invoke('WatchPresence', ['backend', 'nobody']), ['backend']);
      const offline = nextInvocations(bystander, 'PresenceChanged', 1, { timeoutMs: 10_000 });
      await other.stop();
      const [[gone]] = await offline;
      assert.equal(gone.user, 'backend');
      assert.equal(gone.online, false);
    } finally {
      await other.stop();
      await bystander.stop();
      await watcher.stop();
    }
  });

  test('the publish API refuses callers without the permission', async () => {
    const alice = await login('alice');
    const res = await api('POST', '/api/notifications', {
      token: alice.access_token,
      body: { user: 'backend', message: 'no' },
    });
    assert.equal(res.status, 403);
    assert.equal(res.body.error, 'forbidden');
    const anonymous = await api('POST', '/api/notifications', { body: { user: 'backend', message: 'no' } });
    assert.equal(anonymous.status, 401);
  });

  test('refresh tokens rotate and a reused one revokes the session', async () => {
    const session = await login('alice');
    const next = await api('POST', '/api/auth/refresh', { body: { refresh_token: session.refresh_token } });
    assert.equal(next.status, 200);
    const reuse = await api('POST', '/api/auth/refresh', { body: { refresh_token: session.refresh_token } });
    assert.equal(reuse.status, 401);
    const revoked = await api('POST', '/api/auth/refresh', { body: { refresh_token: next.body.refresh_token } });
    assert.equal(revoked.status, 401);
  });

  test('a notification to everyone: stored once, live on every transport, replayed once, read per account', { timeout: 30_000 }, async () => {
    const alice = await login('alice');
    const backend = await login('backend');
    const carol = await login('carol');
    const connect = (token, transport) =>
      new signalR.HubConnectionBuilder()
        .withUrl(`${url}/hubs/notifications`, { accessTokenFactory: () => token, transport })
        .configureLogging(signalR.LogLevel.Warning)
        .build();
    const aliceLp = connect(alice.access_token, signalR.HttpTransportType.LongPolling);
    const backendWs = connect(backend.access_token, signalR.HttpTransportType.WebSockets);
    const carolSse = connect(carol.access_token, signalR.HttpTransportType.ServerSentEvents);
    try {
      await aliceLp.start();
      await backendWs.start();
      const live = [aliceLp, backendWs].map((c) => nextInvocations(c, 'Notification', 1, { timeoutMs: 10_000 }));
      const sent = await api('POST', '/api/notifications', {
        token: backend.access_token,
        body: { everyone: true, message: 'to everyone' },
      });
      assert.equal(sent.status, 201, JSON.stringify(sent.body));
      assert.equal(sent.body.ids.length, 1);
      assert.deepEqual(sent.body.notifications, []);
      const [id] = sent.body.ids;
      for (const [[notification]] of await Promise.all(live)) {
        assert.equal(notification.id, id);
        assert.equal(notification.from, 'backend');
        assert.equal(notification.message, 'to everyone');
      }
      // carol was offline: she gets it when her connection comes up.
      const replayed = nextInvocations(carolSse, 'Notification', 1, { timeoutMs: 10_000 });
      await carolSse.start();
      const [[missed]] = await replayed;
      assert.equal(missed.id, id);
      // Read marks are per account.
      assert.equal(await carolSse.invoke('MarkRead', id), true);
      const carolUnread = await api('GET', '/api/notifications?unread=true', { token: carol.access_token });
      assert.deepEqual(carolUnread.body.map((n) => n.id), []);
      const aliceUnread = await api('GET', '/api/notifications?unread=true', { token: alice.access_token });
      assert.ok(aliceUnread.body.some((n) => n.id === id), JSON.stringify(aliceUnread.body));
    } finally {
      await carolSse.stop();
      await backendWs.stop();
      await aliceLp.stop();
    }
  });

  test('the OpenAPI document is valid and declares the Bearer scheme', async () => {
    const res = await fetch(`${url}/openapi.json`);
    assert.equal(res.status, 200);
    const doc = await res.json();
    const validated = await SwaggerParser.validate(structuredClone(doc));
    assert.ok(validated.paths['/api/notifications']);
    assert.equal(doc.components.securitySchemes.bearer.scheme, 'bearer');
    const ui = await fetch(`${url}/swagger/`);
    assert.equal(ui.status, 200);
    assert.match(await ui.text(), /swagger-ui/);
  });
});
