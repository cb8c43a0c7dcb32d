// End-to-end tests of the conformance server (crates/conformance), which reproduces the
// official ASP.NET Core SignalR TypeScript functional-test app: the official
// @microsoft/signalr client (JSON and MessagePack over WebSockets) against TestHub and
// HubWithAuthorization, plus raw HTTP checks of CORS, cookies, redirects and JWT issuing.
// One server process serves the whole file.

import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { MessagePackHubProtocol } from '@microsoft/signalr-protocol-msgpack';

import { CapturingLogger, PROTOCOLS, REPO_ROOT, nextInvocations, signalR, sleep, startServer } from './helpers.mjs';

/** The conformance server binary under test. */
const CONFORMANCE_BIN =
  process.env.SIGNALBOX_CONFORMANCE_BIN || path.join(REPO_ROOT, 'target', 'debug', 'signalbox-conformance');

const NAME_IDENTIFIER = 'http://schemas.xmlsoap.org/ws/2005/05/identity/claims/nameidentifier';
const UNAUTHORIZED_START = "Failed to complete negotiation with the server: Error: Unauthorized: Status code '401'";

let server;
before(async () => {
  server = await startServer(CONFORMANCE_BIN);
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
      /** Builds a tracked HubConnection to `url` (absolute, or a path on the server). */
      build(url, { protocol = 'json', ...options } = {}) {
        const logger = new CapturingLogger(`client#${connections.length + 1}`);
        loggers.push(logger);
        const full = url.startsWith('http') ? url : `${server.url}${url}`;
        let builder = new signalR.HubConnectionBuilder()
          .withUrl(full, { transport: signalR.HttpTransportType.WebSockets, ...options })
          .configureLogging(logger);
        if (protocol === 'messagepack') builder = builder.withHubProtocol(new MessagePackHubProtocol());
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

for (const protocol of PROTOCOLS) {
  describe(`TestHub over WebSockets with ${protocol}`, () => {
    it('Echo returns its argument', async (s) => {
      const conn = await s.connect('/testhub', { protocol });
      assert.equal(await conn.invoke('Echo', '你好，世界！'), '你好，世界！');
      assert.equal(await conn.invoke('echo', ''), '');
      await conn.send('Echo', 'fire and forget');
    });

    it('GetCallerConnectionId is the negotiated connection id', async (s) => {
      const conn = await s.connect('/testhub', { protocol });
      assert.ok(conn.connectionId);
      assert.equal(await conn.invoke('GetCallerConnectionId'), conn.connectionId);
    });

    it('GetNumRedirects is 0 without a redirect', async (s) => {
      const conn = await s.connect('/testhub', { protocol });
      assert.equal(await conn.invoke('GetNumRedirects'), 0);
    });

    it('ThrowException reports the detailed InvalidOperationException', async (s) => {
      const conn = await s.connect('/testhub', { protocol });
      await rejectsWithMessage(
        conn.invoke('ThrowException', 'An error occurred.'),
        "An unexpected error occurred invoking 'ThrowException' on the server. InvalidOperationException: An error occurred.",
      );
      // The connection survives the error.
      assert.equal(await conn.invoke('Echo', 'still here'), 'still here');
    });

    it('InvokeWithString calls the client method Message on the caller', async (s) => {
      const conn = s.build('/testhub', { protocol });
      const received = nextInvocations(conn, randomCasing('message'));
      await conn.start();
      assert.equal(await conn.invoke('InvokeWithString', '你好 SignalR！'), null);
      assert.deepEqual(await received, [['你好 SignalR！']]);
    });

    it('SendCustomObject sends CustomObject back with PascalCase keys', async (s) => {
      const conn = s.build('/testhub', { protocol });
      const received = nextInvocations(conn, 'CustomObject');
      await conn.start();
      await conn.send('SendCustomObject', { Name: 'test', Value: 42 });
      const [[obj]] = await received;
      assert.deepEqual({ ...obj }, { Name: 'test', Value: 42 });
    });

    it('GetActiveTransportName is WebSockets', async (s) => {
      const conn = await s.connect('/testhub', { protocol });
      assert.equal(await conn.invoke('GetActiveTransportName'), 'WebSockets');
    });

    it('EchoComplexObject round-trips every field type', async (s) => {
      const conn = await s.connect('/testhub', { protocol });
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
      const conn = await s.connect('/testhub', { protocol });
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

    it('GetContentTypeHeader and GetHeader read the WebSocket request', async (s) => {
      const conn = await s.connect('/testhub', { protocol, headers: { 'X-HEADER': 'VALUE' } });
      // The upgrade request carries no Content-Type.
      assert.equal(await conn.invoke('GetContentTypeHeader'), null);
      assert.equal(await conn.invoke('GetHeader', 'X-HEADER'), 'VALUE');
      assert.equal(await conn.invoke('GetHeader', 'x-header'), 'VALUE');
      assert.equal(await conn.invoke('GetHeader', 'X-Not-Sent'), null);
      const userAgent = await conn.invoke('GetHeader', 'User-Agent');
      assert.match(String(userAgent), /^Microsoft SignalR\//);
    });

    it('GetCookie sees the negotiate cookies but not the expired one', async (s) => {
      const conn = await s.connect('/testhub', { protocol });
      assert.equal(await conn.invoke('GetCookie', 'testCookie'), 'testValue');
      assert.equal(await conn.invoke('GetCookie', 'testCookie2'), 'testValue2');
      assert.equal(await conn.invoke('GetCookie', 'expiredCookie'), null);
    });
  });
}

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
    assert.equal(res.headers.get('location'), '/echo/negotiate?a=1');
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
