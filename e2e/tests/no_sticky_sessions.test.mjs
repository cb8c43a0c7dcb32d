// No sticky sessions: two `signalbox serve` nodes (one PostgreSQL database, Redis backplane, one
// connection token secret) behind a round-robin HTTP proxy that sends each request to the next
// node on a new connection. The official @microsoft/signalr client connects over Server-Sent
// Events and over long polling, receives a notification, invokes hub methods and stops; the node
// that did not negotiate forwards the requests it gets to the one holding the connection.
//
// Needs PostgreSQL (SIGNALBOX_TEST_POSTGRES, default postgres://postgres@127.0.0.1:5432/test) and
// Redis (SIGNALBOX_TEST_REDIS, default redis://127.0.0.1:6379).

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import {
  CapturingLogger,
  nextInvocations,
  serviceEnv,
  signalboxCli,
  signalR,
  startSignalbox,
} from './helpers.mjs';

const PASSWORD = 'e2e password 123';
const HUB = '/hubs/notifications';
const hex = (n = 4) => randomBytes(n).toString('hex');

const POSTGRES_ADMIN = process.env.SIGNALBOX_TEST_POSTGRES || 'postgres://postgres@127.0.0.1:5432/test';

function psql(sql) {
  const r = spawnSync('psql', [POSTGRES_ADMIN, '-v', 'ON_ERROR_STOP=1', '-qc', sql], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`psql ${sql} failed (${r.error?.message ?? r.status}): ${r.stderr}`);
}

const dbName = `signalbox_sticky_e2e_${hex(6)}`;
const dbUrl = `${POSTGRES_ADMIN.slice(0, POSTGRES_ADMIN.lastIndexOf('/'))}/${dbName}`;
const dir = mkdtempSync(path.join(tmpdir(), 'signalbox-e2e-sticky-'));
const shared = {
  SIGNALBOX_DATABASE: dbUrl,
  SIGNALBOX_BACKPLANE: process.env.SIGNALBOX_TEST_REDIS || 'redis://127.0.0.1:6379',
  SIGNALBOX_CONNECTION_TOKEN_SECRET: `sticky-e2e-connection-token-secret-${hex(16)}`,
  SIGNALBOX_CHANNEL_PREFIX: `sticky-e2e-${hex()}`,
  // Logins of both tests come from one address.
  SIGNALBOX_RATE_LIMIT_AUTH_BURST: '1000',
};
const envOf = (node) => serviceEnv(dir, { ...shared, SIGNALBOX_NODE_ID: node });

const nodes = [];
let proxy;

// ---------------------------------------------------------------------------- the proxy

const HOP_BY_HOP = ['connection', 'keep-alive', 'transfer-encoding', 'te', 'trailer', 'upgrade', 'proxy-connection'];

function withoutHopByHop(headers) {
  const out = { ...headers };
  for (const name of HOP_BY_HOP) delete out[name];
  return out;
}

/**
 * A round-robin reverse proxy: each request goes to the next of `targets` on a connection of its
 * own (no keep-alive, so nothing pins a client to a node); bodies are streamed both ways.
 * `hits[i]` counts the requests sent to target i, `transport[i]` those of the hub's transports
 * (not negotiate).
 */
async function startRoundRobinProxy(targets) {
  const state = { next: 0, hits: targets.map(() => 0), transport: targets.map(() => 0) };
  const server = http.createServer((req, res) => {
    const i = state.next++ % targets.length;
    state.hits[i] += 1;
    const pathname = req.url.split('?')[0];
    if (pathname === HUB) state.transport[i] += 1;
    const target = new URL(targets[i]);
    const upstream = http.request(
      {
        host: target.hostname,
        port: target.port,
        method: req.method,
        path: req.url,
        headers: { ...withoutHopByHop(req.headers), host: target.host },
        agent: false,
      },
      (upstreamRes) => {
        res.writeHead(upstreamRes.statusCode, withoutHopByHop(upstreamRes.headers));
        res.flushHeaders();
        upstreamRes.pipe(res);
      },
    );
    upstream.on('error', (err) => {
      if (!res.headersSent) res.writeHead(502, { 'content-type': 'text/plain' });
      res.end(`proxy: ${err.message}`);
    });
    // The client leaving (an event stream closed, a poll aborted) ends the hop to the node too.
    res.on('close', () => upstream.destroy());
    req.pipe(upstream);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address();
  return {
    url: `http://127.0.0.1:${port}`,
    state,
    reset() {
      state.hits.fill(0);
      state.transport.fill(0);
    },
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(resolve);
      }),
  };
}

// ---------------------------------------------------------------------------- set-up

before(async () => {
  psql(`CREATE DATABASE ${dbName}`);
  // One after the other: the first one migrates the database.
  nodes.push(await startSignalbox({ env: envOf('sticky-a') }));
  nodes.push(await startSignalbox({ env: envOf('sticky-b') }));
  signalboxCli(envOf('sticky-cli'), ['user', 'add', 'alice'], `${PASSWORD}\n`);
  signalboxCli(envOf('sticky-cli'), ['user', 'add', 'backend', '--claim', 'permission=notify'], `${PASSWORD}\n`);
  proxy = await startRoundRobinProxy(nodes.map((n) => n.url));
});

after(async () => {
  await proxy?.close();
  await Promise.allSettled(nodes.map((n) => n.stop()));
  try {
    psql(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

async function login(username) {
  const res = await fetch(`${proxy.url}/api/auth/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ username, password: PASSWORD }),
  });
  assert.equal(res.status, 200, await res.clone().text());
  return (await res.json()).access_token;
}

async function publish(token, body) {
  const res = await fetch(`${proxy.url}/api/notifications`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
    body: JSON.stringify(body),
  });
  const text = await res.text();
  assert.equal(res.status, 201, text);
  return JSON.parse(text);
}

function diagnostics(logger) {
  return [
    `proxy: ${JSON.stringify(proxy.state)}`,
    '--- client log ---',
    ...logger.lines.slice(-100),
    ...nodes.map((n, i) => `--- node ${i} ---\n${n.output().split('\n').slice(-60).join('\n')}`),
  ].join('\n');
}

// ---------------------------------------------------------------------------- tests

describe('no sticky sessions', { concurrency: false }, () => {
  for (const transport of ['ServerSentEvents', 'LongPolling']) {
    test(`${transport}: connect, receive, invoke and stop through a round-robin proxy`, { timeout: 60_000 }, async () => {
      const alice = await login('alice');
      const backend = await login('backend');
      proxy.reset();
      const logger = new CapturingLogger(`alice/${transport}`);
      const connection = new signalR.HubConnectionBuilder()
        .withUrl(`${proxy.url}${HUB}`, {
          accessTokenFactory: () => alice,
          transport: signalR.HttpTransportType[transport],
          skipNegotiation: false,
        })
        .configureLogging(logger)
        .build();
      try {
        await connection.start();
        assert.equal(connection.state, signalR.HubConnectionState.Connected);

        const received = nextInvocations(connection, 'Notification', 1, { timeoutMs: 15_000 });
        const sent = await publish(backend, { user: 'alice', message: `over ${transport}` });
        const [[notification]] = await received;
        assert.equal(notification.id, sent.ids[0]);
        assert.equal(notification.message, `over ${transport}`);

        // Invocations: each a POST through the proxy, answered down the stream or a poll.
        for (let i = 0; i < 3; i += 1) {
          assert.ok((await connection.invoke('GetOnlineUsers')).includes('alice'));
        }
        assert.equal(await connection.invoke('MarkRead', notification.id), true);

        await connection.stop();
        assert.equal(connection.state, signalR.HubConnectionState.Disconnected);
        // The transport's requests (event stream or polls, sends, DELETE) reached both nodes.
        const [toA, toB] = proxy.state.transport;
        assert.ok(toA > 0 && toB > 0, `transport requests per node: ${toA}, ${toB}`);
        assert.ok(toA + toB >= 5, `transport requests: ${toA + toB}`);
        assert.ok(
          !logger.lines.some((l) => / (Error|Critical): /.test(l)),
          `the client logged errors:\n${logger.lines.join('\n')}`,
        );
      } catch (err) {
        err.message += `\n${diagnostics(logger)}`;
        throw err;
      } finally {
        await connection.stop().catch(() => {});
      }
    });
  }
});
