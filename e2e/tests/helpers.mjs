// Shared helpers for the signalbox end-to-end tests.
//
// The tests drive the example chat server (crates/signalbox/examples/chat.rs)
// with the official @microsoft/signalr client, plus raw HTTP/WebSocket requests
// where the client can't express what we want to check.

import { spawn } from 'node:child_process';
import { createHmac, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { test, before, after } from 'node:test';

import * as signalR from '@microsoft/signalr';
import { MessagePackHubProtocol } from '@microsoft/signalr-protocol-msgpack';
import WsPackage from 'ws';

export { signalR };

const HERE = path.dirname(fileURLToPath(import.meta.url));

/** Repository root (e2e/tests/ → ../..). */
export const REPO_ROOT = path.resolve(HERE, '..', '..');

/** The example binary under test. */
export const CHAT_BIN =
  process.env.SIGNALBOX_CHAT_BIN || path.join(REPO_ROOT, 'target', 'debug', 'examples', 'chat');

/** JWT secret handed to the server (CHAT_JWT_SECRET) and used to sign test tokens. */
export const JWT_SECRET = 'signalbox-e2e-test-secret-0123456789abcdef';

/** Hub path of the example server. */
export const HUB_PATH = '/hubs/chat';

/** Record separator terminating every JSON hub/handshake message. */
export const RS = '\x1e';

/** Both hub protocols; hub tests are generated once per entry. */
export const PROTOCOLS = ['json', 'messagepack'];

/**
 * WebSocket constructor for raw-socket tests. Node 20 has no global WebSocket
 * (only behind --experimental-websocket), and some checks need request headers
 * and the HTTP status of a rejected upgrade, which the WHATWG API can't give,
 * so this is always the `ws` package.
 */
export const WebSocketImpl = WsPackage;

const LISTEN_RE = /Now listening on: (http:\/\/\S+)/;
const ANSI_RE = /\x1b\[[0-9;]*m/g;
const LOG_LIMIT = 256 * 1024;

// ---------------------------------------------------------------------------
// Server process
// ---------------------------------------------------------------------------

/**
 * Spawns the example chat server on an ephemeral port and waits for its
 * `Now listening on: http://ADDR` line.
 *
 * @param {string} [binPath] path of the example binary
 * @param {Record<string,string>} [env] extra environment variables
 * @param {{timeoutMs?: number}} [opts]
 * @returns {Promise<{url: string, proc: import('node:child_process').ChildProcess,
 *   stop: () => Promise<void>, output: () => string, outputSince: (mark: number) => string,
 *   mark: () => number}>}
 */
export async function startServer(binPath = CHAT_BIN, env = {}, { timeoutMs = 60_000 } = {}) {
  if (!existsSync(binPath)) {
    throw new Error(
      `example server binary not found at ${binPath}; build it with ` +
        '`cargo build --example chat -p signalbox` or set SIGNALBOX_CHAT_BIN',
    );
  }
  const proc = spawn(binPath, ['--listen', '127.0.0.1:0'], {
    env: { ...process.env, CHAT_JWT_SECRET: JWT_SECRET, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });

  // Combined stdout+stderr, bounded; `dropped` counts characters cut off the front.
  let log = '';
  let dropped = 0;
  const append = (prefix, chunk) => {
    const text = chunk
      .toString('utf8')
      .replace(ANSI_RE, '')
      .split('\n')
      .map((l, i, a) => (i === a.length - 1 && l === '' ? '' : `${prefix}${l}`))
      .join('\n');
    log += text;
    if (log.length > LOG_LIMIT) {
      const cut = log.length - LOG_LIMIT;
      log = log.slice(cut);
      dropped += cut;
    }
  };

  let exited = null;
  const exitPromise = new Promise((resolve) => {
    proc.on('exit', (code, signal) => {
      exited = { code, signal };
      resolve(exited);
    });
  });

  const url = await new Promise((resolve, reject) => {
    let stdoutBuf = '';
    let done = false;
    const finish = (err, value) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      if (err) reject(err);
      else resolve(value);
    };
    const timer = setTimeout(() => {
      proc.kill('SIGKILL');
      finish(new Error(`server did not print "Now listening on:" within ${timeoutMs} ms\n${log}`));
    }, timeoutMs);
    proc.stdout.on('data', (chunk) => {
      append('[stdout] ', chunk);
      stdoutBuf += chunk.toString('utf8').replace(ANSI_RE, '');
      const m = LISTEN_RE.exec(stdoutBuf);
      if (m) finish(null, m[1].replace(/\/+$/, ''));
    });
    proc.stderr.on('data', (chunk) => append('[stderr] ', chunk));
    proc.on('error', (err) => finish(new Error(`failed to spawn ${binPath}: ${err.message}`)));
    exitPromise.then(({ code, signal }) =>
      finish(new Error(`server exited early (code ${code}, signal ${signal})\n${log}`)),
    );
  });

  const stop = async () => {
    if (exited) return;
    proc.kill('SIGTERM');
    const timer = setTimeout(() => proc.kill('SIGKILL'), 5_000);
    await exitPromise;
    clearTimeout(timer);
  };

  return {
    url,
    proc,
    stop,
    output: () => log,
    mark: () => dropped + log.length,
    outputSince: (mark) => log.slice(Math.max(0, mark - dropped)),
  };
}

// ---------------------------------------------------------------------------
// JWT
// ---------------------------------------------------------------------------

const b64url = (buf) => Buffer.from(buf).toString('base64url');

/**
 * Creates a compact JWT.
 *
 * @param {{sub?: string} & Record<string, unknown>} claims payload claims
 * @param {string} [secret] HMAC secret (defaults to the one the test server uses)
 * @param {{expiresIn?: number|null, nbf?: number, iat?: number|null, alg?: string}} [opts]
 *   expiresIn: seconds from now for `exp` (negative = already expired, null = no exp);
 *   nbf: absolute `nbf` (seconds since epoch); alg: HS256 (default), HS384, HS512 or none.
 */
export function makeJwt(claims, secret = JWT_SECRET, { expiresIn = 300, nbf, iat, alg = 'HS256' } = {}) {
  const now = Math.floor(Date.now() / 1000);
  const header = { alg, typ: 'JWT' };
  const payload = { ...claims };
  if (iat !== null) payload.iat = iat ?? now;
  if (expiresIn !== null && expiresIn !== undefined) payload.exp = now + expiresIn;
  if (nbf !== undefined) payload.nbf = nbf;
  const signingInput = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(payload))}`;
  if (alg === 'none') return `${signingInput}.`;
  const hash = { HS256: 'sha256', HS384: 'sha384', HS512: 'sha512' }[alg];
  if (!hash) throw new Error(`makeJwt: unsupported alg ${alg}`);
  const sig = createHmac(hash, secret).update(signingInput).digest();
  return `${signingInput}.${b64url(sig)}`;
}

/** A short random suffix for user, group and message names. */
export const uniq = (prefix = 'x') => `${prefix}-${randomBytes(4).toString('hex')}`;

// ---------------------------------------------------------------------------
// Hub connections
// ---------------------------------------------------------------------------

/**
 * A SignalR ILogger that keeps everything in memory (printed only when a test
 * fails), so expected errors don't clutter the output.
 */
export class CapturingLogger {
  constructor(name, minLevel = signalR.LogLevel.Information) {
    this.name = name;
    this.minLevel = minLevel;
    this.lines = [];
  }

  log(level, message) {
    if (level < this.minLevel) return;
    this.lines.push(`[${new Date().toISOString()}] ${this.name} ${signalR.LogLevel[level]}: ${message}`);
  }
}

/**
 * Builds (does not start) a HubConnection to the chat hub over WebSockets.
 *
 * @param {string} url server base url (http://127.0.0.1:PORT)
 * @param {{protocol?: 'json'|'messagepack', token?: string|null,
 *   accessTokenFactory?: () => string|Promise<string>,
 *   logger?: signalR.ILogger|signalR.LogLevel, hubPath?: string}} [opts]
 */
export function buildConnection(
  url,
  { protocol = 'json', token, accessTokenFactory, logger = signalR.LogLevel.Warning, hubPath = HUB_PATH } = {},
) {
  const options = {
    transport: signalR.HttpTransportType.WebSockets,
  };
  const factory = accessTokenFactory ?? (token ? () => token : undefined);
  if (factory) options.accessTokenFactory = factory;

  let builder = new signalR.HubConnectionBuilder().withUrl(`${url}${hubPath}`, options).configureLogging(logger);
  if (protocol === 'messagepack') builder = builder.withHubProtocol(new MessagePackHubProtocol());
  else if (protocol !== 'json') throw new Error(`unknown protocol ${protocol}`);
  return builder.build();
}

/**
 * Resolves with the arguments of the next `count` invocations of client method
 * `method` on `connection` (an array of argument arrays). Register it *before*
 * triggering the calls. Rejects after `timeoutMs`.
 *
 * @param {signalR.HubConnection} connection
 * @param {string} method
 * @param {number} [count]
 * @param {{timeoutMs?: number, filter?: (...args: unknown[]) => boolean}} [opts]
 *   filter: only invocations whose arguments satisfy it are counted
 */
export function nextInvocations(connection, method, count = 1, { timeoutMs = 5_000, filter } = {}) {
  return new Promise((resolve, reject) => {
    const seen = [];
    const handler = (...args) => {
      if (filter && !filter(...args)) return;
      seen.push(args);
      if (seen.length === count) {
        clearTimeout(timer);
        connection.off(method, handler);
        resolve(seen);
      }
    };
    const timer = setTimeout(() => {
      connection.off(method, handler);
      reject(
        new Error(
          `timed out after ${timeoutMs} ms waiting for ${count} '${method}' invocation(s); ` +
            `got ${seen.length}: ${JSON.stringify(seen)}`,
        ),
      );
    }, timeoutMs);
    connection.on(method, handler);
  });
}

/**
 * Records every invocation of the given client methods on a connection, in
 * arrival order, so a test can check both what arrived and what did not.
 */
export class Recorder {
  /**
   * @param {signalR.HubConnection} connection
   * @param {string[]} methods
   */
  constructor(connection, methods) {
    this.calls = [];
    this.waiters = [];
    for (const method of methods) {
      connection.on(method, (...args) => {
        this.calls.push({ method, args });
        this.waiters = this.waiters.filter((w) => !w.check());
      });
    }
  }

  /** Calls of `method` (optionally only those matching `filter`). */
  of(method, filter = () => true) {
    return this.calls.filter((c) => c.method === method && filter(...c.args)).map((c) => c.args);
  }

  /**
   * Waits until a call of `method` matching `filter` has been recorded and
   * returns the index of the first such call in `calls`.
   */
  waitFor(method, filter = () => true, { timeoutMs = 5_000 } = {}) {
    const find = () => this.calls.findIndex((c) => c.method === method && filter(...c.args));
    return new Promise((resolve, reject) => {
      const waiter = {
        check: () => {
          const i = find();
          if (i < 0) return false;
          clearTimeout(waiter.timer);
          resolve(i);
          return true;
        },
      };
      if (waiter.check()) return;
      waiter.timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        reject(
          new Error(
            `timed out after ${timeoutMs} ms waiting for '${method}'; recorded: ${JSON.stringify(this.calls)}`,
          ),
        );
      }, timeoutMs);
      this.waiters.push(waiter);
    });
  }
}

// ---------------------------------------------------------------------------
// Raw WebSocket hub client (JSON protocol)
// ---------------------------------------------------------------------------

/**
 * A minimal raw WebSocket client for checks the official client can't express
 * (query-string tokens, garbage frames). Collects every frame and every parsed
 * JSON record.
 */
export class RawSocket {
  /**
   * @param {string} wsUrl
   * @param {{headers?: Record<string,string>}} [opts]
   */
  constructor(wsUrl, { headers } = {}) {
    this.url = wsUrl;
    this.ws = new WebSocketImpl(wsUrl, { headers });
    this.text = '';
    this.records = [];
    this.closed = null;
    this.waiters = [];
    // Resolves on open; rejects with the ws error, whose `status` is the HTTP
    // status of a rejected upgrade ("Unexpected server response: 401").
    this.opened = new Promise((resolve, reject) => {
      this.ws.once('open', resolve);
      this.ws.once('error', (err) => {
        const m = /Unexpected server response: (\d+)/.exec(err.message);
        reject(Object.assign(err, { status: m ? Number(m[1]) : undefined }));
      });
    });
    this.opened.catch(() => {});
    this.ws.on('error', () => {});
    this.ws.on('message', (data) => {
      this.text += Buffer.isBuffer(data) ? data.toString('utf8') : Buffer.concat(data).toString('utf8');
      let i;
      while ((i = this.text.indexOf(RS)) >= 0) {
        const rec = this.text.slice(0, i);
        this.text = this.text.slice(i + 1);
        let parsed;
        try {
          parsed = JSON.parse(rec);
        } catch {
          parsed = { unparsable: rec };
        }
        this.records.push(parsed);
      }
      this._poke();
    });
    this.closedPromise = new Promise((resolve) => {
      this.ws.on('close', (code, reason) => {
        this.closed = { code, reason: reason.toString() };
        this._poke();
        resolve(this.closed);
      });
    });
  }

  _poke() {
    this.waiters = this.waiters.filter((w) => !w());
  }

  send(data) {
    this.ws.send(data);
  }

  /** Waits for (and consumes) the first record matching `pred`. */
  nextRecord(pred, { timeoutMs = 5_000 } = {}) {
    return new Promise((resolve, reject) => {
      const check = () => {
        const i = this.records.findIndex(pred);
        if (i >= 0) {
          clearTimeout(timer);
          resolve(this.records.splice(i, 1)[0]);
          return true;
        }
        if (this.closed) {
          clearTimeout(timer);
          reject(new Error(`socket closed (${JSON.stringify(this.closed)}); records: ${JSON.stringify(this.records)}`));
          return true;
        }
        return false;
      };
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== check);
        reject(new Error(`timed out after ${timeoutMs} ms; records: ${JSON.stringify(this.records)}`));
      }, timeoutMs);
      if (!check()) this.waiters.push(check);
    });
  }

  /** Resolves with {code, reason} once closed, or rejects after the timeout. */
  waitClosed({ timeoutMs = 5_000 } = {}) {
    let timer;
    return Promise.race([
      this.closedPromise.finally(() => clearTimeout(timer)),
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`socket still open after ${timeoutMs} ms`)), timeoutMs);
      }),
    ]);
  }

  close() {
    if (!this.closed) this.ws.terminate();
  }
}

/** POSTs a negotiate request and returns {status, body (parsed JSON or text), headers}. */
export async function negotiate(url, { query = 'negotiateVersion=1', token, headers = {} } = {}) {
  const h = { ...headers };
  if (token) h.Authorization = `Bearer ${token}`;
  const res = await fetch(`${url}${HUB_PATH}/negotiate${query ? `?${query}` : ''}`, { method: 'POST', headers: h });
  const text = await res.text();
  let body = text;
  try {
    body = JSON.parse(text);
  } catch {
    // leave as text
  }
  return { status: res.status, body, text, headers: res.headers };
}

/** ws://… form of an http://… server url. */
export const wsUrlOf = (url) => url.replace(/^http/, 'ws');

// ---------------------------------------------------------------------------
// Test scaffolding
// ---------------------------------------------------------------------------

/**
 * Registers before/after hooks that start one example server for the current
 * file (or describe block) and returns a handle whose `.server` is set once
 * the server is up.
 */
export function useServer(env = {}) {
  const handle = { server: null };
  before(async () => {
    handle.server = await startServer(CHAT_BIN, env);
  });
  after(async () => {
    await handle.server?.stop();
  });
  return handle;
}

/**
 * Per-test scope: creates connections/sockets, closes them afterwards, and on
 * failure prints the client logs and the server output produced during the test.
 */
export class Scope {
  constructor(server, t) {
    this.server = server;
    this.url = server.url;
    this.t = t;
    this.mark = server.mark();
    this.connections = [];
    this.sockets = [];
    this.loggers = [];
  }

  /** A token for `user` (plus extra claims) signed with the server's secret. */
  token(user, claims = {}, opts = {}) {
    return makeJwt({ sub: user, ...claims }, JWT_SECRET, opts);
  }

  /** Builds a tracked (not yet started) connection; see buildConnection. */
  build(opts = {}) {
    const logger = new CapturingLogger(`client#${this.connections.length + 1}`);
    this.loggers.push(logger);
    const conn = buildConnection(this.url, { logger, ...opts });
    this.connections.push(conn);
    return conn;
  }

  /**
   * Builds and starts a connection for `user` (a fresh token per call of the
   * accessTokenFactory) and returns it.
   */
  async connect({ user = uniq('user'), claims = {}, protocol = 'json', ...rest } = {}) {
    const conn = this.build({ protocol, accessTokenFactory: () => this.token(user, claims), ...rest });
    await conn.start();
    return conn;
  }

  /** Opens a tracked raw socket. */
  socket(wsUrl, opts) {
    const s = new RawSocket(wsUrl, opts);
    this.sockets.push(s);
    return s;
  }

  async dispose() {
    await Promise.allSettled(this.connections.map((c) => c.stop()));
    for (const s of this.sockets) s.close();
  }

  diagnostics() {
    const lines = [];
    for (const l of this.loggers) lines.push(...l.lines);
    const out = this.server.outputSince(this.mark).trimEnd();
    return [
      '--- client logs ---',
      ...(lines.length ? lines : ['(none)']),
      '--- server output during this test ---',
      out ? out.split('\n').slice(-200).join('\n') : '(none)',
    ].join('\n');
  }
}

/**
 * Defines a test that gets a Scope for `handle.server`.
 *
 * @param {{server: any}} handle from useServer()
 * @param {string} name
 * @param {(s: Scope, t: import('node:test').TestContext) => Promise<void>} fn
 * @param {object} [options] node:test options (timeout defaults to 30 s)
 */
export function serverTest(handle, name, fn, options = {}) {
  return scopedTest(name, (t) => {
    if (!handle.server) throw new Error('server is not running (see the before hook failure above)');
    return new Scope(handle.server, t);
  }, fn, options);
}

/**
 * A test run with a scope: `makeScope(t)` builds it (or throws when the server is missing), the
 * scope's diagnostics are printed when the test fails, and it is disposed of afterwards.
 *
 * @template S
 * @param {string} name
 * @param {(t: import('node:test').TestContext) => S & {diagnostics(): string, dispose(): Promise<void>}} makeScope
 * @param {(s: S, t: import('node:test').TestContext) => Promise<void>} fn
 * @param {object} [options] node:test options (timeout defaults to 30 s)
 */
export function scopedTest(name, makeScope, fn, options = {}) {
  return test(name, { timeout: 30_000, ...options }, async (t) => {
    const scope = makeScope(t);
    try {
      await fn(scope, t);
    } catch (err) {
      for (const line of scope.diagnostics().split('\n')) t.diagnostic(line);
      throw err;
    } finally {
      await scope.dispose();
    }
  });
}

/** Resolves after `ms` milliseconds. */
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Waits for `promise` to settle within `timeoutMs`; rejects with `what` in the
 * message otherwise.
 */
export function within(promise, timeoutMs, what) {
  let timer;
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMs} ms: ${what}`)), timeoutMs);
    }),
  ]);
}

/** A promise that resolves with the error passed to the connection's onclose. */
export function onClose(connection) {
  return new Promise((resolve) => connection.onclose((err) => resolve(err)));
}

// ---------------------------------------------------------------------------
// Streaming example (crates/signalbox/examples/streaming.rs): every transport,
// streams, upload streams, client results, stateful reconnect
// ---------------------------------------------------------------------------

// (Import declarations are hoisted; kept here so earlier sections stay untouched.)
import net from 'node:net';

/** The streaming example binary under test. */
export const STREAMING_BIN =
  process.env.SIGNALBOX_STREAMING_BIN || path.join(REPO_ROOT, 'target', 'debug', 'examples', 'streaming');

/** Hub with every transport and stateful reconnect allowed. */
export const FEATURES_PATH = '/hubs/features';

/** The same hub without the WebSockets transport. */
export const FEATURES_NOWS_PATH = '/hubs/features-nows';

/** Transport names as GetTransport reports them (and as signalR.HttpTransportType keys). */
export const TRANSPORTS = ['WebSockets', 'ServerSentEvents', 'LongPolling'];

/**
 * Spawns an example server with `--listen <listen>` (default: an ephemeral
 * port) and waits for its `Now listening on:` line. Same handle as
 * startServer (which always listens on port 0), plus `port`.
 *
 * @param {string} binPath
 * @param {{listen?: string, env?: Record<string,string>, timeoutMs?: number}} [opts]
 */
export async function spawnServer(binPath, { listen = '127.0.0.1:0', env = {}, timeoutMs = 60_000 } = {}) {
  if (!existsSync(binPath)) {
    throw new Error(`example server binary not found at ${binPath}; build it with \`cargo build -p signalbox --examples\``);
  }
  const proc = spawn(binPath, ['--listen', listen], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let log = '';
  let dropped = 0;
  const append = (prefix, chunk) => {
    const lines = chunk.toString('utf8').replace(ANSI_RE, '').split('\n');
    log += lines.map((l, i, a) => (i === a.length - 1 && l === '' ? '' : `${prefix}${l}`)).join('\n');
    if (log.length > LOG_LIMIT) {
      dropped += log.length - LOG_LIMIT;
      log = log.slice(log.length - LOG_LIMIT);
    }
  };
  let exited = null;
  const exitPromise = new Promise((resolve) =>
    proc.on('exit', (code, signal) => {
      exited = { code, signal };
      resolve(exited);
    }),
  );
  const url = await new Promise((resolve, reject) => {
    let buf = '';
    let done = false;
    const finish = (err, value) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      if (err) reject(err);
      else resolve(value);
    };
    const timer = setTimeout(() => {
      proc.kill('SIGKILL');
      finish(new Error(`server did not print "Now listening on:" within ${timeoutMs} ms\n${log}`));
    }, timeoutMs);
    proc.stdout.on('data', (chunk) => {
      append('[stdout] ', chunk);
      buf += chunk.toString('utf8').replace(ANSI_RE, '');
      const m = LISTEN_RE.exec(buf);
      if (m) finish(null, m[1].replace(/\/+$/, ''));
    });
    proc.stderr.on('data', (chunk) => append('[stderr] ', chunk));
    proc.on('error', (err) => finish(new Error(`failed to spawn ${binPath}: ${err.message}`)));
    exitPromise.then(({ code, signal }) =>
      finish(new Error(`server exited early (code ${code}, signal ${signal})\n${log}`)),
    );
  });
  /** Stops the process (SIGTERM, SIGKILL after 5 s; `signal` to kill at once). */
  const stop = async (signal = 'SIGTERM') => {
    if (exited) return;
    proc.kill(signal);
    const timer = setTimeout(() => proc.kill('SIGKILL'), 5_000);
    await exitPromise;
    clearTimeout(timer);
  };
  return {
    url,
    port: Number(new URL(url).port),
    proc,
    stop,
    output: () => log,
    mark: () => dropped + log.length,
    outputSince: (mark) => log.slice(Math.max(0, mark - dropped)),
  };
}

/** Like useServer, for the streaming example (one process per file/describe block). */
export function useStreamingServer(env = {}) {
  const handle = { server: null };
  before(async () => {
    handle.server = await spawnServer(STREAMING_BIN, { env });
  });
  after(async () => {
    await handle.server?.stop();
  });
  return handle;
}

/**
 * An HttpClient that records every request the SignalR client makes (method,
 * url, status) — e.g. to see the long-polling DELETE.
 */
export class RecordingHttpClient extends signalR.DefaultHttpClient {
  constructor(logger) {
    super(logger);
    this.requests = [];
  }

  async send(request) {
    const entry = {
      seq: this.requests.length,
      method: request.method,
      url: request.url,
      body: typeof request.content === 'string' ? request.content : request.content ? '<binary>' : undefined,
      status: undefined,
      error: undefined,
      startedMs: performance.now(),
      endedMs: undefined,
    };
    this.requests.push(entry);
    try {
      const response = await super.send(request);
      entry.status = response.statusCode;
      return response;
    } catch (err) {
      entry.error = String(err?.message ?? err);
      entry.status = err?.statusCode;
      throw err;
    } finally {
      entry.endedMs = performance.now();
    }
  }
}

/**
 * Builds (does not start) a HubConnection with any transport and options.
 *
 * @param {string} url server base url
 * @param {{hubPath?: string, protocol?: 'json'|'messagepack',
 *   transport?: 'WebSockets'|'ServerSentEvents'|'LongPolling'|null,
 *   skipNegotiation?: boolean, statefulReconnect?: boolean|object,
 *   automaticReconnect?: boolean|number[], httpClient?: signalR.HttpClient,
 *   logger?: signalR.ILogger|signalR.LogLevel}} [opts] transport null = client default (all)
 */
export function buildHubConnection(
  url,
  {
    hubPath = FEATURES_PATH,
    protocol = 'json',
    transport = 'WebSockets',
    skipNegotiation = false,
    statefulReconnect = false,
    automaticReconnect = false,
    httpClient,
    logger = signalR.LogLevel.Warning,
  } = {},
) {
  const options = {};
  if (transport) options.transport = signalR.HttpTransportType[transport];
  if (skipNegotiation) options.skipNegotiation = true;
  if (httpClient) options.httpClient = httpClient;
  let builder = new signalR.HubConnectionBuilder().withUrl(`${url}${hubPath}`, options).configureLogging(logger);
  if (protocol === 'messagepack') builder = builder.withHubProtocol(new MessagePackHubProtocol());
  else if (protocol !== 'json') throw new Error(`unknown protocol ${protocol}`);
  if (statefulReconnect) builder = builder.withStatefulReconnect(statefulReconnect === true ? undefined : statefulReconnect);
  if (automaticReconnect) {
    builder = Array.isArray(automaticReconnect)
      ? builder.withAutomaticReconnect(automaticReconnect)
      : builder.withAutomaticReconnect();
  }
  return builder.build();
}

/** Builds a connection tracked by `scope` (stopped and its logs printed on failure). */
export function scopedConnection(scope, opts = {}) {
  const logger = new CapturingLogger(`client#${scope.connections.length + 1}`);
  scope.loggers.push(logger);
  const conn = buildHubConnection(opts.url ?? scope.url, { logger, ...opts });
  scope.connections.push(conn);
  return conn;
}

/**
 * A user-space TCP proxy on 127.0.0.1 (ephemeral port) piping every accepted
 * socket to `targetPort`. `dropAll()` destroys every proxied socket pair at
 * once (no WebSocket close frame, no FIN handshake: an ungraceful drop), while
 * the proxy keeps accepting new connections.
 */
export async function startTcpProxy(targetPort, targetHost = '127.0.0.1') {
  const pairs = new Set();
  let accepted = 0;
  const server = net.createServer((client) => {
    accepted += 1;
    const upstream = net.connect(targetPort, targetHost);
    const pair = { client, upstream };
    pairs.add(pair);
    const kill = () => {
      client.destroy();
      upstream.destroy();
      pairs.delete(pair);
    };
    client.on('error', kill);
    upstream.on('error', kill);
    client.on('close', kill);
    upstream.on('close', kill);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const port = server.address().port;
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    /** Number of client connections accepted so far. */
    accepted: () => accepted,
    /** Number of live proxied pairs. */
    live: () => pairs.size,
    dropAll() {
      const n = pairs.size;
      for (const { client, upstream } of [...pairs]) {
        client.resetAndDestroy?.() ?? client.destroy();
        upstream.resetAndDestroy?.() ?? upstream.destroy();
      }
      pairs.clear();
      return n;
    },
    async close() {
      this.dropAll();
      await new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

/** Collects a server stream into {items, error} (error = message text), bounded by a timeout. */
export function collectStream(streamResult, { timeoutMs = 5_000 } = {}) {
  const items = [];
  let subscription;
  const done = new Promise((resolve) => {
    subscription = streamResult.subscribe({
      next: (item) => {
        items.push(item);
      },
      complete: () => {
        resolve({ items, error: null });
      },
      error: (err) => {
        resolve({ items, error: String(err?.message ?? err) });
      },
    });
  });
  return within(done, timeoutMs, `stream did not finish; items so far: ${JSON.stringify(items)}`).catch((err) => {
    subscription?.dispose();
    throw err;
  });
}

/**
 * A RecordingHttpClient that also keeps the `connectionToken` of every negotiate response (the
 * released client does not expose it; the authentication refresh endpoint takes it as `id`).
 * `connectionToken` is the latest one.
 */
export class ConnectionTokenHttpClient extends RecordingHttpClient {
  constructor(logger) {
    super(logger);
    this.connectionTokens = [];
  }

  get connectionToken() {
    return this.connectionTokens.at(-1) ?? null;
  }

  async send(request) {
    const response = await super.send(request);
    if (new URL(request.url).pathname.endsWith('/negotiate')) {
      this.connectionTokens.push(JSON.parse(response.content).connectionToken);
    }
    return response;
  }
}

// ---------------------------------------------------------------------------
// The notification service (`signalbox`, crate signalbox-server): CLI and `serve`
// ---------------------------------------------------------------------------

// (Import declarations are hoisted; kept here so earlier sections stay untouched.)
import { spawnSync } from 'node:child_process';

/** The notification service binary under test (`cargo build -p signalbox-server`). */
export const SERVER_BIN = process.env.SIGNALBOX_SERVER_BIN || path.join(REPO_ROOT, 'target', 'debug', 'signalbox');

/** JWT secret serviceEnv() gives the service unless the caller passes its own. */
export const SERVICE_JWT_SECRET = 'signalbox-e2e-service-secret-0123456789abcdef';

function requireServerBin() {
  if (!existsSync(SERVER_BIN)) {
    throw new Error(
      `signalbox binary not found at ${SERVER_BIN}; run \`cargo build -p signalbox-server\` or set SIGNALBOX_SERVER_BIN`,
    );
  }
}

/**
 * The environment the e2e tests run the service with: everything in `dir` (a temp dir the
 * caller creates and removes): SQLite database `dir/db.sqlite`, data directory `dir`; a fixed
 * JWT secret; `RUST_LOG=warn`. `extra` adds or overrides variables (a file's own settings).
 * Includes process.env.
 *
 * @param {string} dir
 * @param {Record<string,string>} [extra]
 * @returns {Record<string,string>}
 */
export function serviceEnv(dir, extra = {}) {
  return {
    ...process.env,
    SIGNALBOX_JWT_SECRET: SERVICE_JWT_SECRET,
    SIGNALBOX_DATABASE: `sqlite://${path.join(dir, 'db.sqlite')}`,
    SIGNALBOX_DATA_DIR: dir,
    RUST_LOG: 'warn',
    ...extra,
  };
}

/**
 * Runs `signalbox ARGS…` to completion (e.g. `['user', 'add', 'alice']` with the password as
 * `input`) and returns its stdout; throws with its stderr if it fails or does not finish in 60 s.
 *
 * @param {Record<string,string>} env environment (merged over process.env), e.g. serviceEnv()
 * @param {string[]} args
 * @param {string} [input] stdin
 * @returns {string}
 */
export function signalboxCli(env, args, input) {
  requireServerBin();
  const result = spawnSync(SERVER_BIN, args, {
    env: { ...process.env, ...env },
    input,
    encoding: 'utf8',
    timeout: 60_000,
  });
  if (result.status !== 0) {
    const why = result.error ? result.error.message : `status ${result.status}, signal ${result.signal}`;
    throw new Error(`signalbox ${args.join(' ')} failed (${why}): ${result.stderr}`);
  }
  return result.stdout;
}

/**
 * Starts `signalbox serve --listen LISTEN` and waits until its stdout has the
 * `Now listening on: http://…` line (and, if given, until `ready(stdout)` is true).
 * Rejects (and kills the process) if it exits first, fails to spawn, `ready` throws, or
 * `timeoutMs` passes; the error holds the output so far.
 *
 * A fixed `listen` (e.g. `new URL(server.url).host`) restarts a server on the same URL.
 *
 * @param {{env: Record<string,string>, listen?: string, cwd?: string, timeoutMs?: number,
 *   ready?: (stdout: string) => boolean, graceMs?: number, inheritEnv?: boolean}} opts
 *   env: merged over process.env (e.g. serviceEnv()), or the whole environment with
 *   `inheritEnv: false`; ready: an extra condition on all stdout so far (e.g. the rest of the
 *   banner); graceMs: how long stop() waits after SIGTERM before SIGKILL.
 * @returns {Promise<{url: string, output: () => string, stdout: () => string,
 *   stderr: () => string, stop: () => Promise<void>,
 *   process: import('node:child_process').ChildProcess}>}
 *   url: http://HOST:PORT from the listening line; output(): all stdout and stderr so far (as
 *   written, interleaved in arrival order); stdout() / stderr(): each stream alone; stop():
 *   SIGTERM, SIGKILL after graceMs, resolves once the process has exited (idempotent).
 */
export async function startSignalbox({
  env,
  listen = '127.0.0.1:0',
  cwd,
  timeoutMs = 60_000,
  ready,
  graceMs = 15_000,
  inheritEnv = true,
}) {
  requireServerBin();
  const proc = spawn(SERVER_BIN, ['serve', '--listen', listen], {
    env: inheritEnv ? { ...process.env, ...env } : env,
    cwd,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  let stdout = '';
  let stderr = '';
  const exited = new Promise((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })));
  proc.stderr.on('data', (d) => {
    output += d.toString();
    stderr += d.toString();
  });

  const url = await new Promise((resolve, reject) => {
    let done = false;
    const finish = (err, value) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      if (err) {
        proc.kill('SIGKILL');
        reject(err);
      } else resolve(value);
    };
    const timer = setTimeout(
      () => finish(new Error(`signalbox serve: no "Now listening on:" line within ${timeoutMs} ms\n${output}`)),
      timeoutMs,
    );
    proc.stdout.on('data', (d) => {
      output += d.toString();
      stdout += d.toString();
      const m = LISTEN_RE.exec(stdout.replace(ANSI_RE, ''));
      if (!m) return;
      try {
        if (!ready || ready(stdout)) finish(null, m[1]);
      } catch (err) {
        finish(new Error(`signalbox serve: ${err.message}\n${output}`));
      }
    });
    proc.on('error', (err) => finish(new Error(`failed to spawn ${SERVER_BIN}: ${err.message}`)));
    exited.then(({ code, signal }) =>
      finish(new Error(`signalbox serve exited early (code ${code}, signal ${signal})\n${output}`)),
    );
  });

  let stopping;
  const stop = () => {
    stopping ??= (async () => {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      proc.kill('SIGTERM');
      const timer = setTimeout(() => proc.kill('SIGKILL'), graceMs);
      await exited;
      clearTimeout(timer);
    })();
    return stopping;
  };

  return { url, output: () => output, stdout: () => stdout, stderr: () => stderr, stop, process: proc };
}

/** A TCP port that was free a moment ago on 127.0.0.1 (for a server whose URL must be known first). */
export async function freePort() {
  const probe = net.createServer();
  await new Promise((resolve) => probe.listen(0, '127.0.0.1', resolve));
  const { port } = probe.address();
  await new Promise((resolve) => probe.close(resolve));
  return port;
}

// ---------------------------------------------------------------------------------------------
// Chromium (the browser tests: Debian's chromium, driven by playwright-core)

import { chromium } from 'playwright-core';

/** The Chromium binary (`CHROMIUM_BIN`, else Debian's; scripts/setup.sh installs it). */
export const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';

/** Headless Chromium with no background traffic (this machine has no network beyond loopback). */
export function launchChromium() {
  return chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
  });
}
