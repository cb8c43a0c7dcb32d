// End-to-end tests of the conformance server (crates/conformance), which reproduces the
// official ASP.NET Core SignalR TypeScript functional-test app: the official
// @microsoft/signalr client (every transport; JSON, and MessagePack except over SSE) against
// TestHub (invocations, streams both ways, client results) and HubWithAuthorization, the raw
// /echo endpoint (HttpConnection per transport, a plain WebSocket without negotiate), plus raw
// HTTP checks of CORS, cookies, redirects, JWT issuing and the web-worker bundle.
// One server process serves the whole file.
//
// Handlers are registered with braces `{ ... }` on purpose: a JS handler that returns a value
// answers a server→client invocation as a client result.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import vm from 'node:vm';

import httpConnectionModule from '@microsoft/signalr/dist/cjs/HttpConnection.js';
import { MessagePackHubProtocol } from '@microsoft/signalr-protocol-msgpack';

import {
  CapturingLogger,
  PROTOCOLS,
  REPO_ROOT,
  WebSocketImpl,
  collectStream,
  nextInvocations,
  signalR,
  sleep,
  startServer,
  within,
  wsUrlOf,
} from './helpers.mjs';

/** The raw-connection client (not exported by the package index; the official tests import it the same way). */
const { HttpConnection } = httpConnectionModule;

/** The conformance server binary under test. */
const CONFORMANCE_BIN =
  process.env.SIGNALBOX_CONFORMANCE_BIN || path.join(REPO_ROOT, 'target', 'debug', 'signalbox-conformance');

/** The @microsoft/signalr package's dist/ directory, handed to the server as its static dir. */
const SIGNALR_DIST = path.join(REPO_ROOT, 'e2e', 'node_modules', '@microsoft', 'signalr', 'dist');

/** Every (transport, protocol) pair the client supports: no MessagePack over SSE (text only). */
const MATRIX = [
  ['WebSockets', 'json'],
  ['WebSockets', 'messagepack'],
  ['ServerSentEvents', 'json'],
  ['LongPolling', 'json'],
  ['LongPolling', 'messagepack'],
];

const TRANSPORTS = ['WebSockets', 'ServerSentEvents', 'LongPolling'];

const NAME_IDENTIFIER = 'http://schemas.xmlsoap.org/ws/2005/05/identity/claims/nameidentifier';
const UNAUTHORIZED_START = "Failed to complete negotiation with the server: Error: Unauthorized: Status code '401'";

let server;
before(async () => {
  server = await startServer(CONFORMANCE_BIN, { SIGNALBOX_CONFORMANCE_STATIC_DIR: SIGNALR_DIST });
});
after(async () => {
  await server?.stop();
});

/**
 * A test with a scope that tracks connections (stopped afterwards) and, on
 * failure, prints client logs and the server output produced during the test.
 */
function it(name, fn, options = {}) {
  return test(name, { timeout: 30_000, ...options }, async (t) => {
    if (!server) throw new Error('server is not running (see the before hook failure above)');
    const mark = server.mark();
    const connections = [];
    const loggers = [];
    const scope = {
      url: server.url,
      /** A logger whose lines are printed if the test fails. */
      logger(name = `client#${loggers.length + 1}`) {
        const logger = new CapturingLogger(name);
        loggers.push(logger);
        return logger;
      },
      /** Tracks anything with a `stop()` (stopped after the test). */
      track(conn) {
        connections.push(conn);
        return conn;
      },
      /**
       * Builds a tracked HubConnection to `url` (absolute, or a path on the server).
       * `transport` is a transport name, or null for the client's default (all of them).
       */
      build(url, { protocol = 'json', transport = 'WebSockets', statefulReconnect = false, ...options } = {}) {
        const logger = scope.logger();
        const full = url.startsWith('http') ? url : `${server.url}${url}`;
        const transportOption = transport ? { transport: signalR.HttpTransportType[transport] } : {};
        let builder = new signalR.HubConnectionBuilder()
          .withUrl(full, { ...transportOption, ...options })
          .configureLogging(logger);
        if (protocol === 'messagepack') builder = builder.withHubProtocol(new MessagePackHubProtocol());
        if (statefulReconnect) builder = builder.withStatefulReconnect();
        const conn = builder.build();
        connections.push(conn);
        return conn;
      },
      /** Builds and starts a connection. */
      async connect(url = '/testhub', opts = {}) {
        const conn = scope.build(url, opts);
        await conn.start();
        return conn;
      },
    };
    try {
      await fn(scope, t);
    } catch (err) {
      for (const l of loggers) for (const line of l.lines) t.diagnostic(line);
      const out = server.outputSince(mark).trimEnd();
      t.diagnostic('--- server output during this test ---');
      for (const line of (out || '(none)').split('\n').slice(-200)) t.diagnostic(line);
      throw err;
    } finally {
      await Promise.allSettled(connections.map((c) => c.stop()));
    }
  });
}

/** Asserts that `promise` rejects with an Error whose message equals `message`. */
async function rejectsWithMessage(promise, message) {
  await assert.rejects(promise, (err) => {
    assert.equal(err?.message, message);
    return true;
  });
}

/** GET /clientresult/{id}: the text the server got back from the client's `Result` handler. */
async function clientResult(url, connectionId) {
  const res = await fetch(`${url}/clientresult/${encodeURIComponent(connectionId)}`, {
    signal: AbortSignal.timeout(10_000),
  });
  return { status: res.status, text: await res.text() };
}

/** GET /generateJwtToken. */
async function fetchToken(url) {
  const res = await fetch(`${url}/generateJwtToken`);
  assert.equal(res.status, 200);
  return res.text();
}

/** The claims of a compact JWT (not verified). */
const jwtClaims = (token) => JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString('utf8'));

/** "message" with one letter upper-cased at random (client handler names are case-insensitive). */
function randomCasing(name) {
  const i = Math.floor(Math.random() * name.length);
  return name.slice(0, i) + name[i].toUpperCase() + name.slice(i + 1);
}

// ---------------------------------------------------------------------------
// TestHub, per protocol
// ---------------------------------------------------------------------------

for (const [transport, protocol] of MATRIX) {
  describe(`TestHub over ${transport} with ${protocol}`, () => {
    it('Echo returns its argument', async (s) => {
      const conn = await s.connect('/testhub', { protocol, transport });
      assert.equal(await conn.invoke('Echo', '你好，世界！'), '你好，世界！');
      assert.equal(await conn.invoke('echo', ''), '');
      await conn.send('Echo', 'fire and forget');
    });

    it('GetCallerConnectionId is the negotiated connection id', async (s) => {
      const conn = await s.connect('/testhub', { protocol, transport });
      assert.ok(conn.connectionId);
      assert.equal(await conn.invoke('GetCallerConnectionId'), conn.connectionId);
    });

    it('GetNumRedirects is 0 without a redirect', async (s) => {
      const conn = await s.connect('/testhub', { protocol, transport });
      assert.equal(await conn.invoke('GetNumRedirects'), 0);
    });

    it('ThrowException reports the detailed InvalidOperationException', async (s) => {
      const conn = await s.connect('/testhub', { protocol, transport });
      await rejectsWithMessage(
        conn.invoke('ThrowException', 'An error occurred.'),
        "An unexpected error occurred invoking 'ThrowException' on the server. InvalidOperationException: An error occurred.",
      );
      // The connection survives the error.
      assert.equal(await conn.invoke('Echo', 'still here'), 'still here');
    });

    it('InvokeWithString calls the client method Message on the caller', async (s) => {
      const conn = s.build('/testhub', { protocol, transport });
      const received = nextInvocations(conn, randomCasing('message'));
      await conn.start();
      assert.equal(await conn.invoke('InvokeWithString', '你好 SignalR！'), null);
      assert.deepEqual(await received, [['你好 SignalR！']]);
    });

    it('SendCustomObject sends CustomObject back with PascalCase keys', async (s) => {
      const conn = s.build('/testhub', { protocol, transport });
      const received = nextInvocations(conn, 'CustomObject');
      await conn.start();
      await conn.send('SendCustomObject', { Name: 'test', Value: 42 });
      const [[obj]] = await received;
      assert.deepEqual({ ...obj }, { Name: 'test', Value: 42 });
    });

    it(`GetActiveTransportName is ${transport}`, async (s) => {
      const conn = await s.connect('/testhub', { protocol, transport });
      assert.equal(await conn.invoke('GetActiveTransportName'), transport);
    });

    it('EchoComplexObject round-trips every field type', async (s) => {
      const conn = await s.connect('/testhub', { protocol, transport });
      const complexObject = {
        ByteArray: protocol === 'json' ? 'aGVsbG8=' : new Uint8Array([0x68, 0x65, 0x6c, 0x6c, 0x6f]),
        DateTime: protocol === 'json' ? '2002-04-01T10:20:15Z' : new Date(Date.UTC(2002, 3, 1, 10, 20, 15)),
        Guid: '00010203-0405-0607-0706-050403020100',
        IntArray: [0x01, 0x02, 0x03, 0xff],
        String: 'Hello, World!',
      };
      const value = await conn.invoke('EchoComplexObject', complexObject);
      assert.deepEqual(Object.keys(value).sort(), Object.keys(complexObject).sort());
      if (protocol === 'messagepack') {
        assert.ok(value.ByteArray instanceof Uint8Array, 'ByteArray arrives as bytes');
        assert.ok(value.DateTime instanceof Date, 'DateTime arrives as a Date');
        assert.deepEqual([...value.ByteArray], [...complexObject.ByteArray]);
        assert.equal(value.DateTime.getTime(), complexObject.DateTime.getTime());
        assert.deepEqual(
          { ...value, ByteArray: null, DateTime: null },
          { ...complexObject, ByteArray: null, DateTime: null },
        );
      } else {
        assert.deepEqual(value, complexObject);
      }
    });

    it('SendComplexObject returns the official sample with exactly its keys', async (s) => {
      const conn = await s.connect('/testhub', { protocol, transport });
      const value = await conn.invoke('SendComplexObject');
      assert.deepEqual(Object.keys(value).sort(), ['ByteArray', 'DateTime', 'Guid', 'IntArray', 'String']);
      assert.equal(value.Guid, '00010203-0405-0607-0706-050403020100');
      assert.deepEqual(value.IntArray, [1, 2, 3]);
      assert.equal(value.String, 'hello world');
      if (protocol === 'messagepack') {
        assert.ok(value.ByteArray instanceof Uint8Array, 'ByteArray arrives as bytes');
        assert.deepEqual([...value.ByteArray], [1, 2, 3]);
        assert.ok(value.DateTime instanceof Date, 'DateTime arrives as a Date');
        assert.equal(value.DateTime.getTime(), Date.UTC(2000, 0, 1));
      } else {
        assert.equal(value.ByteArray, 'AQID');
        assert.equal(value.DateTime, '2000-01-01T00:00:00Z');
      }
    });

    it('GetContentTypeHeader and GetHeader read the transport request', async (s) => {
      const conn = await s.connect('/testhub', { protocol, transport, headers: { 'X-HEADER': 'VALUE' } });
      // The upgrade request, the SSE stream and the (bodiless) first poll carry no Content-Type.
      assert.equal(await conn.invoke('GetContentTypeHeader'), null);
      assert.equal(await conn.invoke('GetHeader', 'X-HEADER'), 'VALUE');
      assert.equal(await conn.invoke('GetHeader', 'x-header'), 'VALUE');
      assert.equal(await conn.invoke('GetHeader', 'X-Not-Sent'), null);
      const userAgent = await conn.invoke('GetHeader', 'User-Agent');
      assert.match(String(userAgent), /^Microsoft SignalR\//);
    });

    it('GetCookie sees the negotiate cookies but not the expired one', async (s) => {
      const conn = await s.connect('/testhub', { protocol, transport });
      assert.equal(await conn.invoke('GetCookie', 'testCookie'), 'testValue');
      assert.equal(await conn.invoke('GetCookie', 'testCookie2'), 'testValue2');
      assert.equal(await conn.invoke('GetCookie', 'expiredCookie'), null);
    });

    it('Stream yields a, b, c then completes', async (s) => {
      const conn = await s.connect('/testhub', { protocol, transport });
      assert.deepEqual(await collectStream(conn.stream('Stream')), { items: ['a', 'b', 'c'], error: null });
      // And again on the same connection (stream ids share the invocation counter).
      assert.deepEqual(await collectStream(conn.stream('stream')), { items: ['a', 'b', 'c'], error: null });
    });

    it('invoke of a streaming method and stream of a plain one fail with the official errors', async (s) => {
      const conn = await s.connect('/testhub', { protocol, transport });
      await rejectsWithMessage(
        conn.invoke('Stream'),
        "The client attempted to invoke the streaming 'Stream' method with a non-streaming invocation.",
      );
      await rejectsWithMessage(
        conn.invoke('EmptyStream'),
        "The client attempted to invoke the streaming 'EmptyStream' method with a non-streaming invocation.",
      );
      assert.deepEqual(await collectStream(conn.stream('Echo', 'x')), {
        items: [],
        error: "The client attempted to invoke the non-streaming 'Echo' method with a streaming invocation.",
      });
      assert.equal(await conn.invoke('Echo', 'still here'), 'still here');
    });

    it('InfiniteStream: cancelling the subscription makes the server call StreamCanceled', async (s) => {
      const conn = s.build('/testhub', { protocol, transport });
      const canceled = nextInvocations(conn, 'StreamCanceled');
      await conn.start();
      const items = [];
      const subscription = conn.stream('InfiniteStream').subscribe({
        next: (item) => {
          items.push(item);
        },
        complete: () => {},
        error: () => {},
      });
      // Invocations are handled in order: once Echo answers, the stream is running.
      assert.equal(await conn.invoke('Echo', 'started'), 'started');
      subscription.dispose();
      assert.deepEqual(await canceled, [[]]);
      assert.deepEqual(items, []);
      assert.equal(await conn.invoke('Echo', 'after cancel'), 'after cancel');
    });

    it('StreamingConcat concatenates an upload stream', async (s) => {
      const conn = await s.connect('/testhub', { protocol, transport });
      const subject = new signalR.Subject();
      const result = conn.invoke('StreamingConcat', subject);
      subject.next('Hello ');
      subject.next('world');
      subject.next('!');
      subject.complete();
      assert.equal(await result, 'Hello world!');
    });

    it('StreamingConcat reports a client stream error as a HubException', async (s) => {
      const conn = await s.connect('/testhub', { protocol, transport });
      const subject = new signalR.Subject();
      const result = conn.invoke('StreamingConcat', subject);
      subject.next('Hello ');
      subject.error(new Error('Something bad'));
      await rejectsWithMessage(
        result,
        "An unexpected error occurred invoking 'StreamingConcat' on the server. HubException: Something bad",
      );
      assert.equal(await conn.invoke('Echo', 'still here'), 'still here');
    });

    it('EmptyStream completes without items', async (s) => {
      const conn = await s.connect('/testhub', { protocol, transport });
      assert.deepEqual(await collectStream(conn.stream('EmptyStream')), { items: [], error: null });
    });

    it('StreamThrowException fails the stream with the detailed InvalidOperationException', async (s) => {
      const conn = await s.connect('/testhub', { protocol, transport });
      assert.deepEqual(await collectStream(conn.stream('StreamThrowException', 'An error occurred.')), {
        items: [],
        error:
          "An unexpected error occurred invoking 'StreamThrowException' on the server. InvalidOperationException: An error occurred.",
      });
      assert.equal(await conn.invoke('Echo', 'still here'), 'still here');
    });

    it('/clientresult/{id} returns what the Result handler returns', async (s) => {
      const conn = s.build('/testhub', { protocol, transport });
      conn.on('Result', () => {
        return 10;
      });
      await conn.start();
      assert.deepEqual(await clientResult(s.url, conn.connectionId), { status: 200, text: '10' });
    });

    it('/clientresult/{id} returns the error a throwing Result handler reports', async (s) => {
      const conn = s.build('/testhub', { protocol, transport });
      conn.on('Result', () => {
        throw new Error('from callback');
      });
      await conn.start();
      assert.deepEqual(await clientResult(s.url, conn.connectionId), { status: 200, text: 'Error: from callback' });
    });

    it('/clientresult/{id} reports a client without a Result handler', async (s) => {
      const conn = await s.connect('/testhub', { protocol, transport });
      assert.deepEqual(await clientResult(s.url, conn.connectionId), {
        status: 200,
        text: "Client didn't provide a result.",
      });
    });
  });
}

// ---------------------------------------------------------------------------
// /testhub-nowebsockets
// ---------------------------------------------------------------------------

describe('/testhub-nowebsockets', () => {
  it('JSON picks ServerSentEvents and MessagePack picks LongPolling', async (s) => {
    const json = await s.connect('/testhub-nowebsockets', { protocol: 'json', transport: null });
    assert.equal(await json.invoke('GetActiveTransportName'), 'ServerSentEvents');
    const msgpack = await s.connect('/testhub-nowebsockets', { protocol: 'messagepack', transport: null });
    assert.equal(await msgpack.invoke('GetActiveTransportName'), 'LongPolling');
  });

  it('negotiate offers no WebSockets and a WebSocket-only client cannot start', async (s) => {
    const res = await fetch(`${s.url}/testhub-nowebsockets/negotiate?negotiateVersion=1`, { method: 'POST' });
    assert.equal(res.status, 200);
    const body = await res.json();
    assert.deepEqual(body.availableTransports.map((t) => t.transport).sort(), ['LongPolling', 'ServerSentEvents']);
    const conn = s.build('/testhub-nowebsockets', { transport: 'WebSockets' });
    // No transport left: the server offers none the client allows.
    await rejectsWithMessage(
      conn.start(),
      'Unable to connect to the server with any of the available transports. ' +
        "ServerSentEvents failed: Error: 'ServerSentEvents' is disabled by the client. " +
        "LongPolling failed: Error: 'LongPolling' is disabled by the client.",
    );
  });

  it('only /testhub allows stateful reconnect', async (s) => {
    for (const [hub, expected] of [
      ['/testhub', true],
      ['/testhub-nowebsockets', false],
    ]) {
      const res = await fetch(`${s.url}${hub}/negotiate?negotiateVersion=1&useStatefulReconnect=true`, {
        method: 'POST',
      });
      assert.equal(res.status, 200);
      // Like ASP.NET Core, the field is left out when false.
      assert.equal((await res.json()).useStatefulReconnect ?? false, expected, hub);
    }
    for (const protocol of PROTOCOLS) {
      const conn = await s.connect('/testhub', { protocol, statefulReconnect: true });
      assert.equal(await conn.invoke('Echo', 'stateful'), 'stateful');
      assert.deepEqual(await collectStream(conn.stream('Stream')), { items: ['a', 'b', 'c'], error: null });
    }
  });

  it('serves the whole TestHub, including streams and client results', async (s) => {
    const conn = s.build('/testhub-nowebsockets', { transport: 'LongPolling', protocol: 'messagepack' });
    conn.on('Result', () => {
      return 10;
    });
    await conn.start();
    assert.deepEqual(await collectStream(conn.stream('Stream')), { items: ['a', 'b', 'c'], error: null });
    // /clientresult reaches TestHub connections on every path (one IHubContext<TestHub>).
    assert.deepEqual(await clientResult(s.url, conn.connectionId), { status: 200, text: '10' });
  });
});

// ---------------------------------------------------------------------------
// /echo: raw connections (no hub protocol)
// ---------------------------------------------------------------------------

/** Starts a tracked raw HttpConnection to `url` and returns it with a queue of received data. */
async function startEcho(s, url, transport) {
  const connection = s.track(
    new HttpConnection(url, { transport: signalR.HttpTransportType[transport], logger: s.logger() }),
  );
  const received = [];
  const waiters = [];
  connection.onreceive = (data) => {
    received.push(data);
    for (const w of waiters.splice(0)) w();
  };
  const closed = new Promise((resolve) => {
    connection.onclose = (err) => resolve(err ?? null);
  });
  /** Waits until the received text equals `text` (echoes may come back in several chunks). */
  const receive = (text) =>
    within(
      new Promise((resolve) => {
        const check = () => {
          if (received.join('') === text) resolve(received.splice(0).join(''));
          else waiters.push(check);
        };
        check();
      }),
      5_000,
      `echo of ${JSON.stringify(text)}; received ${JSON.stringify(received)}`,
    );
  await connection.start(signalR.TransferFormat.Text);
  return { connection, receive, closed };
}

describe('/echo', () => {
  for (const transport of TRANSPORTS) {
    it(`HttpConnection over ${transport} gets back what it sends`, async (s) => {
      const { connection, receive, closed } = await startEcho(s, `${s.url}/echo`, transport);
      assert.ok(connection.connectionId, 'negotiated a connection id');
      await connection.send('message');
      assert.equal(await receive('message'), 'message');
      await connection.send('你好，世界！');
      assert.equal(await receive('你好，世界！'), '你好，世界！');
      await connection.stop();
      assert.equal(await within(closed, 5_000, 'onclose'), null);
    });
  }

  // Server-Sent Events go through Node's eventsource package, which follows only an absolute
  // Location.
  for (const transport of ['LongPolling', 'ServerSentEvents']) {
    it(`HttpConnection through /echoredirect reaches /echo (${transport})`, async (s) => {
      const { connection, receive } = await startEcho(s, `${s.url}/echoredirect`, transport);
      await connection.send('message');
      assert.equal(await receive('message'), 'message');
    });
  }

  it('a plain WebSocket without negotiate echoes a text frame, then closes cleanly with 1000', async (s) => {
    const ws = new WebSocketImpl(`${wsUrlOf(s.url)}/echo`);
    s.track({ stop: async () => ws.terminate() });
    const closed = new Promise((resolve) => ws.on('close', (code, reason) => resolve({ code, reason: `${reason}` })));
    await within(
      new Promise((resolve, reject) => {
        ws.once('open', resolve);
        ws.once('error', reject);
      }),
      5_000,
      'WebSocket open',
    );
    const message = new Promise((resolve) => ws.once('message', (data, isBinary) => resolve({ data: `${data}`, isBinary })));
    ws.send('message');
    assert.deepEqual(await within(message, 5_000, 'echo'), { data: 'message', isBinary: false });
    ws.close(1000);
    assert.deepEqual(await within(closed, 5_000, 'close'), { code: 1000, reason: '' });
  });

  it('a WebSocket with an unknown id is refused with 404', async (s) => {
    const ws = new WebSocketImpl(`${wsUrlOf(s.url)}/echo?id=not-a-connection`);
    s.track({ stop: async () => ws.terminate() });
    const error = await within(
      new Promise((resolve) => ws.once('error', resolve)),
      5_000,
      'upgrade refused',
    );
    assert.match(error.message, /Unexpected server response: 404/);
  });
});

// ---------------------------------------------------------------------------
// Static files
// ---------------------------------------------------------------------------

describe('static files', () => {
  it('/lib/signalr-webworker/signalr.js is the client\'s web-worker bundle, and it works', async (s) => {
    const res = await fetch(`${s.url}/lib/signalr-webworker/signalr.js`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /javascript/);
    const code = await res.text();
    assert.equal(code, readFileSync(path.join(SIGNALR_DIST, 'webworker', 'signalr.js'), 'utf8'));

    // Load it the way a worker does (`self.signalR`), in a context that has no `process` (so
    // the bundle takes its browser code paths) and uses Node's fetch, then run the official
    // web-worker test's call over long polling.
    const context = vm.createContext({
      fetch,
      AbortController,
      Headers,
      Request,
      Response,
      TextEncoder,
      TextDecoder,
      URL,
      URLSearchParams,
      setTimeout,
      clearTimeout,
      setInterval,
      clearInterval,
      console,
    });
    context.self = context;
    vm.runInContext(code, context, { filename: 'signalr.js' });
    const bundle = context.signalR;
    assert.equal(typeof bundle?.HubConnectionBuilder, 'function');
    const conn = s.track(
      new bundle.HubConnectionBuilder()
        .withUrl(`${s.url}/testhub`, { transport: bundle.HttpTransportType.LongPolling })
        .configureLogging(s.logger('webworker'))
        .build(),
    );
    const received = new Promise((resolve) => conn.on('message', (message) => resolve(message)));
    await conn.start();
    await conn.invoke('invokeWithString', 'Hello World');
    assert.equal(await within(received, 5_000, 'message'), 'Hello World');
  });

  it('without --static-dir the bundle path is a 404 that says how to configure it', async () => {
    // undefined: spawn leaves the variable out even if the test runner has it set.
    const bare = await startServer(CONFORMANCE_BIN, { SIGNALBOX_CONFORMANCE_STATIC_DIR: undefined });
    try {
      const res = await fetch(`${bare.url}/lib/signalr-webworker/signalr.js`);
      assert.equal(res.status, 404);
      assert.match(await res.text(), /--static-dir/);
    } finally {
      await bare.stop();
    }
  });

  it('other bundle files are served, unknown ones are 404', async (s) => {
    const min = await fetch(`${s.url}/lib/signalr-webworker/signalr.min.js`);
    assert.equal(min.status, 200);
    await min.arrayBuffer();
    for (const name of ['nope.js', '..%2F..%2Fpackage.json', 'signalr.js%00']) {
      const res = await fetch(`${s.url}/lib/signalr-webworker/${name}`);
      assert.equal(res.status, 404, name);
      await res.arrayBuffer();
    }
  });
});

// ---------------------------------------------------------------------------
// Routing, redirects
// ---------------------------------------------------------------------------

describe('routing', () => {
  it('routes are case-insensitive: /testHub reaches TestHub', async (s) => {
    const conn = await s.connect('/testHub');
    assert.equal(await conn.invoke('Echo', 'mixed case'), 'mixed case');
    assert.equal(await conn.invoke('GetCallerConnectionId'), conn.connectionId);
  });

  it('the client follows a negotiate redirect and GetNumRedirects reflects it', async (s) => {
    const redirectUrl = `${s.url}/redirect?numRedirects=0&baseUrl=${s.url}`;
    const first = await s.connect(redirectUrl);
    const firstCount = await first.invoke('GetNumRedirects');
    assert.ok(firstCount >= 1, `GetNumRedirects after a redirect: ${firstCount}`);
    assert.equal(await first.invoke('GetCallerConnectionId'), first.connectionId);

    const second = await s.connect(redirectUrl, { protocol: 'messagepack' });
    const secondCount = await second.invoke('GetNumRedirects');
    assert.ok(secondCount > firstCount, `the redirect counter grows: ${firstCount} then ${secondCount}`);
  });

  it('/redirect answers a negotiate with a url on the base url', async (s) => {
    const res = await fetch(`${s.url}/redirect/negotiate?numRedirects=0&baseUrl=${encodeURIComponent(s.url)}`, {
      method: 'POST',
    });
    assert.equal(res.status, 200);
    const body = JSON.parse(await res.text());
    assert.match(body.url, new RegExp(`^${s.url.replace(/[.]/g, '\\.')}/testHub\\?numRedirects=\\d+$`));
  });

  it('/bad-negotiate answers 400 and the client reports it', async (s) => {
    const res = await fetch(`${s.url}/bad-negotiate/negotiate?negotiateVersion=1`, { method: 'POST' });
    assert.equal(res.status, 400);
    assert.equal(await res.text(), 'Some response from server');
    const conn = s.build('/bad-negotiate');
    await rejectsWithMessage(
      conn.start(),
      "Failed to complete negotiation with the server: Error: Some response from server: Status code '400'",
    );
  });

  it('/echoredirect redirects to /echo keeping the query', async (s) => {
    const res = await fetch(`${s.url}/echoredirect/negotiate?a=1`, { method: 'POST', redirect: 'manual' });
    assert.equal(res.status, 307);
    // Absolute, on the request's host: Node's eventsource (SSE) cannot follow a relative one.
    assert.equal(res.headers.get('location'), `${s.url}/echo/negotiate?a=1`);
  });
});

// ---------------------------------------------------------------------------
// HTTP: CORS, cookies
// ---------------------------------------------------------------------------

describe('HTTP behaviour of the official app', () => {
  it('answers CORS preflights with 204 and echoes origin, method and headers', async (s) => {
    const res = await fetch(`${s.url}/testHub/negotiate?negotiateVersion=1`, {
      method: 'OPTIONS',
      headers: {
        Origin: 'http://example.test:9876',
        'Access-Control-Request-Method': 'POST',
        'Access-Control-Request-Headers': 'x-requested-with,x-signalr-user-agent',
      },
    });
    assert.equal(res.status, 204);
    assert.equal(res.headers.get('access-control-allow-origin'), 'http://example.test:9876');
    assert.equal(res.headers.get('access-control-allow-credentials'), 'true');
    assert.equal(res.headers.get('access-control-allow-methods'), 'POST');
    assert.equal(res.headers.get('access-control-allow-headers'), 'x-requested-with,x-signalr-user-agent');
  });

  it('echoes the origin on ordinary requests, and adds nothing without one', async (s) => {
    const withOrigin = await fetch(`${s.url}/testhub/negotiate?negotiateVersion=1`, {
      method: 'POST',
      headers: { Origin: 'http://localhost:9999' },
    });
    assert.equal(withOrigin.status, 200);
    assert.equal(withOrigin.headers.get('access-control-allow-origin'), 'http://localhost:9999');
    assert.equal(withOrigin.headers.get('access-control-allow-credentials'), 'true');
    const without = await fetch(`${s.url}/testhub/negotiate?negotiateVersion=1`, { method: 'POST' });
    assert.equal(without.headers.get('access-control-allow-origin'), null);
  });

  it('every negotiate response sets the test cookies and an expired cookie', async (s) => {
    for (const hub of ['/testhub', '/authorizedhub']) {
      const res = await fetch(`${s.url}${hub}/negotiate?negotiateVersion=1`, { method: 'POST' });
      const cookies = res.headers.getSetCookie();
      assert.ok(cookies.some((c) => c.startsWith('testCookie=testValue')), `${hub}: ${cookies}`);
      assert.ok(cookies.some((c) => c.startsWith('testCookie2=testValue2')), `${hub}: ${cookies}`);
      const expired = cookies.find((c) => c.startsWith('expiredCookie='));
      assert.ok(expired, `${hub}: ${cookies}`);
      const expires = /expires=([^;]+)/i.exec(expired)?.[1];
      assert.ok(expires && Date.parse(expires) < Date.now(), `expiredCookie has expired: ${expired}`);
    }
    const other = await fetch(`${s.url}/generateJwtToken`);
    assert.deepEqual(other.headers.getSetCookie(), []);
  });
});

// ---------------------------------------------------------------------------
// JWT and the authorized hub
// ---------------------------------------------------------------------------

describe('authorized hub', () => {
  it('/generateJwtToken issues a 5 s HS256 token for testuser', async (s) => {
    const res = await fetch(`${s.url}/generateJwtToken`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /^text\/plain/);
    const token = await res.text();
    const header = JSON.parse(Buffer.from(token.split('.')[0], 'base64url').toString('utf8'));
    assert.equal(header.alg, 'HS256');
    const claims = jwtClaims(token);
    assert.equal(claims.iss, 'SignalRTestServer');
    assert.equal(claims.aud, 'SignalRTests');
    assert.equal(claims.nameid, 'testuser');
    assert.equal(claims[NAME_IDENTIFIER], 'testuser');
    const lifetime = claims.exp - Math.floor(Date.now() / 1000);
    assert.ok(lifetime > 0 && lifetime <= 5, `expires in ${lifetime} s`);
  });

  for (const protocol of PROTOCOLS) {
    it(`connects with a token from /generateJwtToken (${protocol})`, async (s) => {
      const token = await fetchToken(s.url);
      const conn = await s.connect('/authorizedhub', { protocol, accessTokenFactory: () => token });
      assert.equal(await conn.invoke('Echo', '你好，世界！'), '你好，世界！');
      assert.equal(await conn.invoke('GetUserNameIdentifier'), 'testuser');
      assert.equal(await conn.invoke('GetUserClaim', NAME_IDENTIFIER), 'testuser');
      assert.equal(await conn.invoke('GetUserClaim', 'iss'), 'SignalRTestServer');
      // Like the official hub: a missing claim gives the empty string.
      assert.equal(await conn.invoke('GetUserClaim', 'no-such-claim'), '');
    });
  }

  it('connects with an async token factory, on a mixed-case path', async (s) => {
    const conn = await s.connect('/authorizedHub', { accessTokenFactory: () => fetchToken(s.url) });
    assert.equal(await conn.invoke('Echo', 'async'), 'async');
  });

  it('refuses to start without a token', async (s) => {
    const conn = s.build('/authorizedhub');
    await rejectsWithMessage(conn.start(), UNAUTHORIZED_START);
  });

  it('refuses a forged token', async (s) => {
    const token = await fetchToken(s.url);
    const [h, p] = token.split('.');
    const conn = s.build('/authorizedhub', { accessTokenFactory: () => `${h}.${p}.AAAA` });
    await rejectsWithMessage(conn.start(), UNAUTHORIZED_START);
  });

  it('refuses a token once its 5 s have passed (no clock leeway)', async (s) => {
    const token = await fetchToken(s.url);
    const waitMs = jwtClaims(token).exp * 1000 - Date.now() + 1_100;
    await sleep(Math.max(0, waitMs));
    const res = await fetch(`${s.url}/authorizedhub/negotiate?negotiateVersion=1`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${token}` },
    });
    assert.equal(res.status, 401);
  });
});
