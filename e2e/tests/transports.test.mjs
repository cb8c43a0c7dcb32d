// End-to-end tests of the streaming example (crates/signalbox/examples/streaming.rs)
// with the official @microsoft/signalr client over every transport and both hub
// protocols: invocations, server→client calls, server streams and cancellation,
// upload streams, client results (from a hub method and from plain HTTP), error
// texts, automatic reconnect across a server restart, stateful reconnect across
// an ungraceful drop, transport fallback and the long-polling DELETE.
//
// Handlers are registered with braces `{ ... }` on purpose: a JS handler that
// returns a value answers a server→client invocation as a client result.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import {
  CapturingLogger,
  FEATURES_NOWS_PATH,
  FEATURES_PATH,
  Recorder,
  RecordingHttpClient,
  STREAMING_BIN,
  Scope,
  buildHubConnection,
  collectStream,
  onClose,
  scopedConnection,
  serverTest,
  signalR,
  sleep,
  spawnServer,
  startTcpProxy,
  uniq,
  useStreamingServer,
  within,
  wsUrlOf,
} from './helpers.mjs';

const srv = useStreamingServer();
const it = (name, fn, options) => serverTest(srv, name, fn, { timeout: 15_000, ...options });

/** Every (transport, protocol) pair the client supports: no MessagePack over SSE (text only). */
const MATRIX = [
  ['WebSockets', 'json'],
  ['WebSockets', 'messagepack'],
  ['ServerSentEvents', 'json'],
  ['LongPolling', 'json'],
  ['LongPolling', 'messagepack'],
];

/** Asserts that `promise` rejects with an Error whose message equals `message`. */
async function rejectsWithMessage(promise, message) {
  await assert.rejects(promise, (err) => {
    assert.equal(err?.message, message);
    return true;
  });
}

/** GET /clientresult/{id}: the text the server got back from the client's `Result` handler. */
async function httpClientResult(url, connectionId) {
  const res = await fetch(`${url}/clientresult/${encodeURIComponent(connectionId)}`, {
    signal: AbortSignal.timeout(12_000),
  });
  return { status: res.status, text: await res.text() };
}

for (const [transport, protocol] of MATRIX) {
  describe(`${transport} / ${protocol}`, () => {
    /** Builds and starts a connection for this matrix cell. */
    const open = async (s, opts = {}) => {
      const conn = scopedConnection(s, { transport, protocol, ...opts });
      await conn.start();
      return conn;
    };

    it('invoke: Echo round-trips values and GetTransport reports the transport', async (s) => {
      const conn = await open(s);
      assert.equal(await conn.invoke('GetTransport'), transport);
      assert.equal(await conn.invoke('Echo', 'hello'), 'hello');
      assert.equal(await conn.invoke('Echo', 42), 42);
      assert.equal(await conn.invoke('Echo', true), true);
      assert.equal(await conn.invoke('Echo', null), null);
      const nested = { text: 'ünïcødé ✓', list: [1, 2, 3], inner: { ok: false } };
      assert.deepEqual(await conn.invoke('Echo', nested), nested);
      // Case-insensitive method lookup.
      assert.equal(await conn.invoke('echo', 'lower'), 'lower');
      assert.equal(await conn.invoke('GetConnectionId'), conn.connectionId);
    });

    it('send: a fire-and-forget invocation runs (SendToMe → Tick 0..2)', async (s) => {
      const conn = await open(s);
      const rec = new Recorder(conn, ['Tick']);
      await conn.send('SendToMe', 3, 0);
      await rec.waitFor('Tick', (i) => i === 2);
      assert.deepEqual(rec.of('Tick'), [[0], [1], [2]]);
    });

    it('server-to-client calls: Broadcast reaches two clients', async (s) => {
      const a = await open(s);
      const b = await open(s);
      const ra = new Recorder(a, ['Broadcast']);
      const rb = new Recorder(b, ['Broadcast']);
      const msg = uniq('bcast');
      assert.equal(await a.invoke('Broadcast', msg), null);
      await Promise.all([ra.waitFor('Broadcast', (m) => m === msg), rb.waitFor('Broadcast', (m) => m === msg)]);
      assert.equal(ra.of('Broadcast', (m) => m === msg).length, 1);
      assert.equal(rb.of('Broadcast', (m) => m === msg).length, 1);
      // And from the other side via send.
      const msg2 = uniq('bcast');
      await b.send('Broadcast', msg2);
      await Promise.all([ra.waitFor('Broadcast', (m) => m === msg2), rb.waitFor('Broadcast', (m) => m === msg2)]);
    });

    it('server stream: Counter yields 0..count and completes', async (s) => {
      const conn = await open(s);
      const { items, error } = await collectStream(conn.stream('Counter', 5, 10));
      assert.equal(error, null);
      assert.deepEqual(items, [0, 1, 2, 3, 4]);
      // An empty stream completes too.
      assert.deepEqual(await collectStream(conn.stream('Counter', 0, 0)), { items: [], error: null });
    });

    it('cancel: disposing an Infinite subscription cancels it on the server (StreamCanceled)', async (s) => {
      const conn = await open(s);
      const canceled = new Promise((resolve) =>
        conn.on('StreamCanceled', () => {
          resolve();
        }),
      );
      const items = [];
      const errors = [];
      const sub = conn.stream('Infinite').subscribe({
        next: (i) => {
          items.push(i);
        },
        complete: () => {},
        error: (e) => {
          errors.push(String(e?.message ?? e));
        },
      });
      // Messages from one client are processed in order: once Echo has answered,
      // the StreamInvocation has been dispatched.
      assert.equal(await conn.invoke('Echo', 'barrier'), 'barrier');
      sub.dispose();
      await within(canceled, 5_000, 'StreamCanceled after disposing the subscription');
      assert.deepEqual(items, []);
      assert.deepEqual(errors, []);
      // The connection is still usable.
      assert.equal(await conn.invoke('Echo', 'after'), 'after');
    });

    it('upload streams: Concat and ScaledSum with a Subject', async (s) => {
      const conn = await open(s);

      const parts = new signalR.Subject();
      const concat = conn.invoke('Concat', parts);
      for (const p of ['a', 'bc', '', 'déf']) {
        parts.next(p);
        await sleep(5);
      }
      parts.complete();
      assert.equal(await within(concat, 5_000, 'Concat result'), 'abcdéf');

      const numbers = new signalR.Subject();
      const sum = conn.invoke('ScaledSum', 3, numbers);
      for (const n of [1, 2, 3, 4]) numbers.next(n);
      numbers.complete();
      assert.equal(await within(sum, 5_000, 'ScaledSum result'), 30);

      // An empty upload stream.
      const none = new signalR.Subject();
      const empty = conn.invoke('ScaledSum', 7, none);
      none.complete();
      assert.equal(await within(empty, 5_000, 'ScaledSum of nothing'), 0);
    });

    it('client result from a hub method: AskClient → Ask handler', async (s) => {
      const conn = await open(s);
      conn.on('Ask', (question) => `answer to ${question}`);
      assert.equal(await conn.invoke('AskClient', 'life'), 'answer to life');
      // An async handler.
      conn.off('Ask');
      conn.on('Ask', async (question) => {
        await sleep(20);
        return { asked: question, n: 7 };
      });
      assert.deepEqual(await conn.invoke('AskClient', 'obj'), { asked: 'obj', n: 7 });
    });

    it('client result from HTTP: /clientresult/{id} → "10"; no handler → error text', async (s) => {
      const withHandler = await open(s);
      withHandler.on('Result', () => 10);
      const withoutHandler = await open(s);

      const ok = await httpClientResult(s.url, withHandler.connectionId);
      assert.deepEqual(ok, { status: 200, text: '10' });

      const missing = await httpClientResult(s.url, withoutHandler.connectionId);
      assert.deepEqual(missing, { status: 200, text: "Client didn't provide a result." });

      // Both connections are still fine afterwards.
      assert.equal(await withHandler.invoke('Echo', 1), 1);
      assert.equal(await withoutHandler.invoke('Echo', 2), 2);
    });

    it('errors: failing stream, streaming method via invoke, unknown method', async (s) => {
      const conn = await open(s);
      const failing = await collectStream(conn.stream('FailingStream'));
      assert.deepEqual(failing, {
        items: [1],
        error: 'An error occurred on the server while streaming results. HubException: stream broke',
      });
      await rejectsWithMessage(
        conn.invoke('Counter', 3, 0),
        "The client attempted to invoke the streaming 'Counter' method with a non-streaming invocation.",
      );
      await rejectsWithMessage(conn.invoke('NoSuchMethod', 1), "Unknown hub method 'NoSuchMethod'");
      // None of these closed the connection.
      assert.equal(conn.state, signalR.HubConnectionState.Connected);
      assert.equal(await conn.invoke('Echo', 'still here'), 'still here');
    });
  });
}

// ---------------------------------------------------------------------------
// Automatic reconnect across a server restart on the same port
// ---------------------------------------------------------------------------

describe('automatic reconnect (server killed and restarted on the same port)', () => {
  for (const transport of ['WebSockets', 'ServerSentEvents', 'LongPolling']) {
    test(`${transport}: onreconnecting/onreconnected fire, Echo works with a new connectionId`, { timeout: 20_000 }, async (t) => {
      let first = await spawnServer(STREAMING_BIN);
      let second = null;
      const scope = new Scope(first, t);
      try {
        const conn = scopedConnection(scope, {
          transport,
          automaticReconnect: Array(30).fill(200),
        });
        const reconnecting = [];
        const reconnected = [];
        const reconnectedOnce = new Promise((resolve) =>
          conn.onreconnected((id) => {
            reconnected.push(id);
            resolve(id);
          }),
        );
        conn.onreconnecting((err) => {
          reconnecting.push(String(err?.message ?? err));
        });
        const closed = [];
        conn.onclose((err) => {
          closed.push(String(err?.message ?? err));
        });
        await conn.start();
        const oldId = conn.connectionId;
        assert.equal(await conn.invoke('GetConnectionId'), oldId);

        await first.stop('SIGKILL');
        second = await spawnServer(STREAMING_BIN, { listen: `127.0.0.1:${first.port}` });
        scope.server = second;
        scope.mark = second.mark();

        const newId = await within(reconnectedOnce, 12_000, 'onreconnected');
        assert.ok(reconnecting.length >= 1, 'onreconnecting fired');
        assert.equal(reconnected.length, 1);
        assert.notEqual(newId, oldId);
        assert.equal(conn.connectionId, newId);
        assert.equal(conn.state, signalR.HubConnectionState.Connected);
        assert.equal(await conn.invoke('Echo', 'back'), 'back');
        assert.equal(await conn.invoke('GetConnectionId'), newId);
        assert.equal(await conn.invoke('GetTransport'), transport);
        assert.deepEqual(closed, []);
      } catch (err) {
        for (const line of scope.diagnostics().split('\n')) t.diagnostic(line);
        throw err;
      } finally {
        await scope.dispose();
        await second?.stop();
        await first.stop();
      }
    });
  }
});

// ---------------------------------------------------------------------------
// Stateful reconnect through a TCP proxy that drops every socket mid-stream
// ---------------------------------------------------------------------------

describe('stateful reconnect (WebSockets, ungraceful drop through a TCP proxy)', () => {
  for (const protocol of ['json', 'messagepack']) {
    it(`${protocol}: 60 Ticks arrive exactly once, in order, same connectionId, no onreconnecting`, async (s) => {
      const proxy = await startTcpProxy(srv.server.port);
      try {
        const conn = scopedConnection(s, {
          url: proxy.url,
          transport: 'WebSockets',
          protocol,
          statefulReconnect: true,
          // If the stateful resume failed, the client would fall back to a full
          // reconnect (new connection, onreconnecting) — which must not happen.
          automaticReconnect: [0, 200, 500],
        });
        const reconnecting = [];
        conn.onreconnecting((err) => {
          reconnecting.push(String(err?.message ?? err));
        });
        const closed = [];
        conn.onclose((err) => {
          closed.push(String(err?.message ?? err));
        });
        const ticks = [];
        const drops = [];
        conn.on('Tick', (i) => {
          ticks.push(i);
          // Drop every proxied socket twice while the method is still sending.
          if (i === 10 || i === 40) drops.push({ at: i, sockets: proxy.dropAll() });
        });
        await conn.start();
        const id = conn.connectionId;
        assert.equal(await conn.invoke('GetConnectionId'), id);
        const acceptedBefore = proxy.accepted();

        const result = await within(conn.invoke('SendToMe', 60, 10), 10_000, 'SendToMe(60, 10) completion');
        assert.equal(result, 60);
        // Every drop really cut a live socket and the client came back through the proxy.
        assert.deepEqual(drops.map((d) => d.at), [10, 40]);
        assert.ok(drops.every((d) => d.sockets >= 1), `drops: ${JSON.stringify(drops)}`);
        assert.ok(proxy.accepted() >= acceptedBefore + 2, `proxy accepted ${proxy.accepted()} connections`);

        assert.deepEqual(ticks, Array.from({ length: 60 }, (_, i) => i));
        assert.equal(conn.connectionId, id);
        assert.equal(await conn.invoke('GetConnectionId'), id);
        assert.deepEqual(reconnecting, []);
        assert.deepEqual(closed, []);
        assert.equal(conn.state, signalR.HubConnectionState.Connected);
      } finally {
        await s.dispose();
        await proxy.close();
      }
    });
  }
});

describe('stateful reconnect handshake (raw WebSocket, JSON)', () => {
  it('the handshake response is the first message on a fresh connection (no Sequence before it)', async (s) => {
    // The official client fails start() with "Error parsing handshake response:
    // Error: Expected a handshake response from the server." when anything else
    // comes first. Race-prone, so try many fresh connections.
    // Batches of parallel connections make the race show up reliably.
    const BATCHES = 40;
    const PARALLEL = 10;
    const ATTEMPTS = BATCHES * PARALLEL;
    const bad = [];
    const attempt = async (i) => {
      const res = await fetch(`${s.url}${FEATURES_PATH}/negotiate?negotiateVersion=1&useStatefulReconnect=true`, {
        method: 'POST',
        signal: AbortSignal.timeout(5_000),
      });
      const neg = await res.json();
      assert.equal(neg.useStatefulReconnect, true);
      const sock = s.socket(`${wsUrlOf(s.url)}${FEATURES_PATH}?id=${encodeURIComponent(neg.connectionToken)}`);
      await sock.opened;
      sock.send(`{"protocol":"json","version":2}\x1e`);
      const first = await sock.nextRecord(() => true);
      if (JSON.stringify(first) !== '{}') {
        const second = await sock.nextRecord(() => true).catch((e) => `(${e.message})`);
        bad.push({ attempt: i, first, second });
      }
      await sleep(20);
      sock.close();
    };
    for (let b = 0; b < BATCHES; b++) {
      await Promise.all(Array.from({ length: PARALLEL }, (_, k) => attempt(b * PARALLEL + k)));
    }
    assert.deepEqual(
      bad,
      [],
      `${bad.length}/${ATTEMPTS} fresh stateful-reconnect connections got another message before the handshake response`,
    );
  }, { timeout: 20_000 });
});

// ---------------------------------------------------------------------------
// Transport fallback on the hub without WebSockets
// ---------------------------------------------------------------------------

describe('transport fallback (/hubs/features-nows)', () => {
  it('default transports: JSON falls back to ServerSentEvents', async (s) => {
    const conn = scopedConnection(s, { hubPath: FEATURES_NOWS_PATH, transport: null, protocol: 'json' });
    await conn.start();
    assert.equal(await conn.invoke('GetTransport'), 'ServerSentEvents');
    assert.equal(await conn.invoke('Echo', 'x'), 'x');
  });

  it('default transports: MessagePack falls back to LongPolling', async (s) => {
    const conn = scopedConnection(s, { hubPath: FEATURES_NOWS_PATH, transport: null, protocol: 'messagepack' });
    await conn.start();
    assert.equal(await conn.invoke('GetTransport'), 'LongPolling');
    assert.equal(await conn.invoke('Echo', 'x'), 'x');
  });

  it('negotiate does not offer WebSockets there', async (s) => {
    const res = await fetch(`${s.url}${FEATURES_NOWS_PATH}/negotiate?negotiateVersion=1`, { method: 'POST' });
    assert.equal(res.status, 200);
    const body = await res.json();
    assert.deepEqual(
      body.availableTransports.map((t) => t.transport).sort(),
      ['LongPolling', 'ServerSentEvents'],
    );
  });

  it('skipNegotiation (WebSockets only) cannot connect; a raw upgrade gets 404', async (s) => {
    const conn = scopedConnection(s, {
      hubPath: FEATURES_NOWS_PATH,
      transport: 'WebSockets',
      skipNegotiation: true,
    });
    await assert.rejects(within(conn.start(), 10_000, 'start() with skipNegotiation'));
    assert.equal(conn.state, signalR.HubConnectionState.Disconnected);

    const raw = s.socket(`${wsUrlOf(s.url)}${FEATURES_NOWS_PATH}`);
    await assert.rejects(raw.opened, (err) => {
      assert.equal(err.status, 404, err.message);
      return true;
    });

    // While on /hubs/features skipNegotiation works.
    const ok = scopedConnection(s, { hubPath: FEATURES_PATH, transport: 'WebSockets', skipNegotiation: true });
    await ok.start();
    assert.equal(await ok.invoke('GetTransport'), 'WebSockets');
  });
});

// ---------------------------------------------------------------------------
// Long polling stop
// ---------------------------------------------------------------------------

describe('long polling stop', () => {
  for (const protocol of ['json', 'messagepack']) {
    it(`${protocol}: stop() sends DELETE and the connection closes cleanly`, async (s) => {
      const logger = new CapturingLogger('lp-client', signalR.LogLevel.Trace);
      s.loggers.push(logger);
      const httpClient = new RecordingHttpClient(logger);
      const conn = buildHubConnection(s.url, { transport: 'LongPolling', protocol, httpClient, logger });
      s.connections.push(conn);
      const closed = onClose(conn);
      await conn.start();
      assert.equal(await conn.invoke('GetTransport'), 'LongPolling');

      const stopAt = httpClient.requests.length;
      await within(conn.stop(), 5_000, 'stop()');
      const closeError = await within(closed, 5_000, 'onclose');
      assert.equal(closeError, undefined, `onclose error: ${closeError}`);
      assert.equal(conn.state, signalR.HubConnectionState.Disconnected);

      const dump = JSON.stringify(httpClient.requests);
      const before = httpClient.requests.slice(0, stopAt);
      const during = httpClient.requests.slice(stopAt);
      // Nothing failed before stop() (the poll aborted by stop() has no status).
      assert.deepEqual(before.filter((r) => r.status !== undefined && r.status >= 300), [], dump);

      // stop(): the client POSTs a Close message (fire-and-forget) and, after
      // aborting its poll, sends exactly one DELETE for its connection token.
      const deletes = during.filter((r) => r.method === 'DELETE');
      assert.equal(deletes.length, 1, dump);
      const del = deletes[0];
      const delUrl = new URL(del.url);
      assert.equal(delUrl.pathname, FEATURES_PATH);
      const token = delUrl.searchParams.get('id');
      assert.ok(token, 'DELETE carries ?id=');
      const closePosts = during.filter((r) => r.method === 'POST');
      assert.equal(closePosts.length, 1, dump);
      const closePost = closePosts[0];
      // The Close message and the DELETE race (the client doesn't await the
      // first). Either the DELETE ends the connection (202; the Close POST may
      // then find it gone: 404), or the server has already ended the connection
      // because of the Close message (POST 200 answered before the DELETE
      // completed), in which case the DELETE finds no connection (404, which the
      // official client and ASP.NET Core treat the same way).
      if (del.status === 404) {
        assert.equal(closePost.status, 200, `DELETE 404 but the Close POST was not processed: ${dump}`);
        assert.ok(closePost.endedMs <= del.endedMs, dump);
      } else {
        assert.equal(del.status, 202, dump);
        assert.ok([200, 404, undefined].includes(closePost.status), dump);
      }

      // The connection is gone on the server: a poll or a send for it now answers 404.
      const poll = await fetch(`${s.url}${FEATURES_PATH}?id=${encodeURIComponent(token)}`, {
        signal: AbortSignal.timeout(5_000),
      });
      assert.equal(poll.status, 404, await poll.text());
      const post = await fetch(`${s.url}${FEATURES_PATH}?id=${encodeURIComponent(token)}`, {
        method: 'POST',
        body: '{"type":6}\x1e',
        signal: AbortSignal.timeout(5_000),
      });
      assert.equal(post.status, 404, await post.text());
    });
  }

  it('raw: a POST before the first poll is accepted and delivered (as ASP.NET Core does)', async (s) => {
    // ASP.NET Core's ProcessSend only needs the negotiated connection to exist
    // (404 only when unknown or disposed); clients such as Python's signalrcore
    // POST the handshake before their first poll.
    for (const query of ['', '?negotiateVersion=1']) {
      const hub = `${s.url}${FEATURES_PATH}`;
      const req = (method, q, body) => fetch(`${hub}${q}`, { method, body, signal: AbortSignal.timeout(5_000) });
      const neg = await (await req('POST', `/negotiate${query}`)).json();
      const id = `?id=${encodeURIComponent(neg.connectionToken ?? neg.connectionId)}`;
      const post = await req('POST', id, '{"protocol":"json","version":1}\x1e');
      assert.equal(post.status, 200, `negotiate${query || ' (v0)'}: POST before the first poll: ${post.status} ${await post.text()}`);
      const first = await req('GET', id);
      assert.equal(first.status, 200);
      await first.text();
      const next = await req('GET', id);
      assert.equal(next.status, 200);
      assert.equal(await next.text(), '{}\x1e');
      assert.equal((await req('DELETE', id)).status, 202);
    }
  });

  it('raw: DELETE answers 202, ends the pending poll with 204, later polls 404', async (s) => {
    const hub = `${s.url}${FEATURES_PATH}`;
    const req = (method, query, body) =>
      fetch(`${hub}${query}`, { method, body, signal: AbortSignal.timeout(5_000) });
    const neg = await (await req('POST', '/negotiate?negotiateVersion=1')).json();
    const id = `?id=${encodeURIComponent(neg.connectionToken)}`;

    const first = await req('GET', id);
    assert.equal(first.status, 200);
    assert.equal(await first.text(), '');
    const hs = await req('POST', id, '{"protocol":"json","version":1}\x1e');
    assert.equal(hs.status, 200, await hs.text());
    const hsPoll = await req('GET', id);
    assert.equal(hsPoll.status, 200);
    assert.equal(await hsPoll.text(), '{}\x1e');

    const pending = req('GET', id);
    await sleep(100); // let the poll park on the server
    const del = await req('DELETE', id);
    assert.equal(del.status, 202, await del.text());
    const ended = await pending;
    assert.equal(ended.status, 204, await ended.text());

    const after = await req('GET', id);
    assert.equal(after.status, 404);
    assert.equal(await after.text(), 'No Connection with that ID');
  });
});
