// Helpers for the Azure SignalR Service compatibility tests (azure.test.mjs): what an Azure
// SignalR back end does, rebuilt from the public contract with Node built-ins (and the client's
// MessagePack protocol for binary bodies).
//
// - signJwt / decodeJwt: HS256 tokens signed over the access key's UTF-8 bytes.
// - ManagementClient: the data-plane REST API as the .NET Management SDK calls it (token shape,
//   audience, PascalCase bodies, escaped path segments), plus docs-style and v1 variants.
// - startAppServer: an app server's negotiate endpoint redirecting the official client to the
//   service with a client access token (`{url, accessToken}`).
// - startUpstreamReceiver: the serverless webhook ("upstream") the service POSTs events to.
// - startAzureService / startCluster: `signalbox serve` with access keys and an upstream template,
//   alone or as two nodes on Redis and a shared PostgreSQL database.
// - AzureScope: per-test connections, unique hub names and failure diagnostics.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHmac, randomBytes, randomInt, randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';

import { MessagePackHubProtocol } from '@microsoft/signalr-protocol-msgpack';

import { CapturingLogger, RS, scopedTest, serviceEnv, signalR, startSignalbox } from './helpers.mjs';

/** The two access keys the service is configured with (primary first). */
export const PRIMARY_KEY = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ABCDEFGH';
export const SECONDARY_KEY = 'e2e+Secondary/Key_0123456789abcdefghijklmnop=';

/** The api-version the Management SDK sends. */
const API_VERSION = '2022-06-01';

const msgpack = new MessagePackHubProtocol();
const nowSeconds = () => Math.floor(Date.now() / 1000);

/** A short random hex suffix. */
export const hex = (bytes = 4) => randomBytes(bytes).toString('hex');

// ---------------------------------------------------------------------------------------------
// Tokens

const b64json = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');

/** What the .NET SDK puts in `kid` for key auth: `accessKey.GetHashCode().ToString()`, a random int32. */
const sdkKid = () => String(randomInt(-(2 ** 31), 2 ** 31 - 1));

/**
 * A compact JWT `{"alg","typ":"JWT","kid"}` signed with HMAC over the key's UTF-8 bytes.
 *
 * @param {Record<string, unknown>} payload
 * @param {string} key access key
 * @param {{alg?: 'HS256'|'HS512', kid?: string}} [opts]
 */
export function signJwt(payload, key, { alg = 'HS256', kid = sdkKid() } = {}) {
  const input = `${b64json({ alg, typ: 'JWT', kid })}.${b64json(payload)}`;
  const hash = { HS256: 'sha256', HS512: 'sha512' }[alg];
  return `${input}.${createHmac(hash, Buffer.from(key, 'utf8')).update(input).digest('base64url')}`;
}

/** Header and payload of a JWT (unverified). */
export function decodeJwt(token) {
  const [header, payload] = token.split('.').slice(0, 2).map((p) => JSON.parse(Buffer.from(p, 'base64url')));
  return { header, payload };
}

/**
 * `nbf`/`iat`/`exp` claims: valid from now for `lifetimeSeconds` (negative = already expired);
 * `notBeforeSeconds` shifts `nbf` (and `iat`) from now.
 */
function lifetimeClaims(lifetimeSeconds = 3600, notBeforeSeconds = 0) {
  const now = nowSeconds();
  const nbf = now + notBeforeSeconds;
  return { nbf, iat: nbf, exp: now + lifetimeSeconds };
}

/** `http://127.0.0.1:PORT` → `http://127.0.0.1` (the SDK's audiences name the host without port). */
const withoutPort = (url) => {
  const u = new URL(url);
  return `${u.protocol}//${u.hostname}`;
};

/**
 * The client access token an app server (Management SDK `NegotiateAsync`) hands out: user id in
 * `asrs.s.uid`, extra claims copied, `aud` = `{scheme}://{host}/client/?hub={hub}`.
 *
 * @param {{serviceUrl: string, hub: string, user?: string, claims?: Record<string, unknown>,
 *   key?: string, lifetimeSeconds?: number, alg?: 'HS256'|'HS512'}} opts hub: internal name
 */
export function clientToken({ serviceUrl, hub, user, claims = {}, key = PRIMARY_KEY, lifetimeSeconds = 3600, alg }) {
  const payload = { ...claims, ...lifetimeClaims(lifetimeSeconds), aud: `${withoutPort(serviceUrl)}/client/?hub=${hub}` };
  if (user !== undefined) payload['asrs.s.uid'] = user;
  return signJwt(payload, key, { alg });
}

// ---------------------------------------------------------------------------------------------
// REST API (the Management SDK)

/** Builds a path, percent-encoding every interpolated value (`Uri.EscapeDataString`). */
export const route = (strings, ...values) =>
  strings.reduce((acc, s, i) => acc + s + (i < values.length ? encodeURIComponent(values[i]) : ''), '');

/** A REST body as the .NET SDK serializes it (PascalCase). */
export const payload = (target, args = []) => ({ Target: target, Arguments: args });

/** One REST exchange, printable in assertion messages. */
export class RestResult {
  constructor(request, response, text) {
    this.request = request;
    this.status = response.status;
    this.headers = response.headers;
    this.text = text;
  }

  /** The parsed JSON body (throws with the exchange if it is not JSON). */
  get json() {
    try {
      return JSON.parse(this.text);
    } catch {
      throw new Error(`response body is not JSON:\n${this}`);
    }
  }

  get errorCode() {
    return this.headers.get('x-ms-error-code');
  }

  toString() {
    const { method, url, body, contentType } = this.request;
    const shownHeaders = ['content-type', 'x-ms-error-code', 'www-authenticate']
      .filter((h) => this.headers.has(h))
      .map((h) => `\n  ${h}: ${this.headers.get(h)}`)
      .join('');
    return (
      `request:  ${method} ${url}${contentType ? `\n  content-type: ${contentType}` : ''}` +
      `${body ? `\n  ${typeof body === 'string' ? body : `<${body.length} bytes>`}` : ''}\n` +
      `response: ${this.status}${shownHeaders}${this.text ? `\n  ${this.text.slice(0, 2000)}` : ''}`
    );
  }
}

/**
 * Asserts the status (one code or a list) and, for a 404 with `errorCode`, the `x-ms-error-code`
 * header the SDK relies on. Returns the result.
 *
 * @param {RestResult} res
 * @param {number|number[]} status
 * @param {{errorCode?: string, what?: string}} [opts]
 */
export function expectStatus(res, status, { errorCode, what = '' } = {}) {
  const allowed = [status].flat();
  assert.ok(allowed.includes(res.status), `${what ? `${what}: ` : ''}expected ${allowed.join(' or ')}\n${res}`);
  if (errorCode && res.status === 404) {
    assert.equal(res.errorCode, errorCode, `${what ? `${what}: ` : ''}x-ms-error-code\n${res}`);
  }
  return res;
}

/**
 * The data-plane REST API as a back end calls it. Tokens are made per request:
 * - audience 'sdk' (default): the .NET Management SDK: `nameid` = `{machine}_{guid}`, aud =
 *   `{scheme}://{host without port}{path}?[application=…&]api-version=…` (op parameters
 *   included; `excluded`/`reason`/`ttl` not);
 * - audience 'docs': aud = the request URL without its query (the REST docs' rule);
 * - audience (url, audQuery) => string: anything else.
 */
export class ManagementClient {
  /**
   * @param {string} endpoint the service's base URL
   * @param {{key?: string, audience?: 'sdk'|'docs'|((url: URL, audQuery: string) => string),
   *   apiVersion?: string|null, application?: string, lifetimeSeconds?: number,
   *   notBeforeSeconds?: number}} [options] apiVersion null: none (v1 paths)
   */
  constructor(endpoint, options = {}) {
    this.endpoint = endpoint.replace(/\/+$/, '');
    this.options = { key: PRIMARY_KEY, audience: 'sdk', apiVersion: API_VERSION, lifetimeSeconds: 3600, ...options };
  }

  /** A client with some options changed. */
  with(options) {
    return new ManagementClient(this.endpoint, { ...this.options, ...options });
  }

  /** The bearer token for a request to `url` whose audience query is `audQuery`. */
  token(url, audQuery) {
    const { audience, key, lifetimeSeconds, notBeforeSeconds } = this.options;
    let aud;
    if (audience === 'sdk') aud = `${withoutPort(url)}${url.pathname}${audQuery ? `?${audQuery}` : ''}`;
    else if (audience === 'docs') aud = `${url.origin}${url.pathname}`;
    else aud = audience(url, audQuery);
    const nameid = `${os.hostname()}_${randomUUID().replaceAll('-', '')}`;
    return signJwt({ nameid, aud, ...lifetimeClaims(lifetimeSeconds, notBeforeSeconds) }, key);
  }

  /**
   * Sends one request.
   *
   * @param {string} method
   * @param {string} target path (may carry a query, e.g. a nextLink's) or absolute URL (its path
   *   and query are sent to this endpoint)
   * @param {{query?: Record<string, unknown>, extra?: Record<string, unknown>, body?: unknown,
   *   contentType?: string, auth?: boolean}} [opts] query: in the audience too; extra: request
   *   only (arrays repeat the parameter; undefined values are skipped); body: object → JSON
   */
  async request(method, target, { query = {}, extra = {}, body, contentType, auth = true } = {}) {
    const given = new URL(target, this.endpoint);
    const url = new URL(given.pathname, this.endpoint);
    // Encoded as the SDK does (spaces as %20, not +); a given query (a nextLink's) is kept as is.
    const params = given.search ? [given.search.slice(1)] : [];
    const add = (values) => {
      for (const [name, value] of Object.entries(values)) {
        for (const v of [value].flat()) {
          if (v !== undefined && v !== null) params.push(`${encodeURIComponent(name)}=${encodeURIComponent(String(v))}`);
        }
      }
    };
    if (this.options.application) add({ application: this.options.application.toLowerCase() });
    add(query);
    if (this.options.apiVersion && !given.searchParams.has('api-version') && !('api-version' in query)) {
      add({ 'api-version': this.options.apiVersion });
    }
    const audQuery = params.join('&');
    add(extra);
    url.search = params.join('&');

    const headers = {};
    let sent = body;
    if (body !== undefined && !(body instanceof Uint8Array) && typeof body !== 'string') {
      sent = JSON.stringify(body);
      contentType ??= 'application/json; charset=utf-8';
    }
    if (contentType) headers['content-type'] = contentType;
    if (auth) headers.authorization = `Bearer ${this.token(url, audQuery)}`;
    const request = { method, url: url.href, body: sent, contentType };
    const response = await fetch(url, { method, headers, body: sent });
    return new RestResult(request, response, await response.text());
  }

  /** `/api/hubs/{hub lower}` + rest (the SDK lowercases hub names). */
  hubPath(hub, rest = '') {
    return `${route`/api/hubs/${hub.toLowerCase()}`}${rest}`;
  }

  health() {
    return this.request('HEAD', '/api/health', { auth: false });
  }

  broadcast(hub, message, { excluded } = {}) {
    return this.request('POST', this.hubPath(hub, '/:send'), { body: message, extra: { excluded } });
  }

  sendToUser(hub, user, message) {
    return this.request('POST', this.hubPath(hub, route`/users/${user}/:send`), { body: message });
  }

  sendToConnection(hub, connectionId, message) {
    return this.request('POST', this.hubPath(hub, route`/connections/${connectionId}/:send`), { body: message });
  }

  sendToGroup(hub, group, message, { excluded } = {}) {
    return this.request('POST', this.hubPath(hub, route`/groups/${group}/:send`), { body: message, extra: { excluded } });
  }

  invoke(hub, connectionId, message) {
    return this.request('POST', this.hubPath(hub, route`/connections/${connectionId}/:invoke`), { body: message });
  }

  generateToken(hub, { userId, minutesToExpire } = {}) {
    return this.request('POST', this.hubPath(hub, '/:generateToken'), { query: { userId, minutesToExpire } });
  }

  closeConnection(hub, connectionId, { reason } = {}) {
    return this.request('DELETE', this.hubPath(hub, route`/connections/${connectionId}`), { extra: { reason } });
  }

  /** Closes every connection of the hub, or of `group`, or of `user`. */
  closeConnections(hub, { group, user, excluded, reason } = {}) {
    let rest = '/:closeConnections';
    if (group !== undefined) rest = route`/groups/${group}/:closeConnections`;
    if (user !== undefined) rest = route`/users/${user}/:closeConnections`;
    return this.request('POST', this.hubPath(hub, rest), { extra: { excluded, reason } });
  }

  connectionExists(hub, connectionId, { method = 'HEAD' } = {}) {
    return this.request(method, this.hubPath(hub, route`/connections/${connectionId}`));
  }

  userExists(hub, user, { method = 'HEAD' } = {}) {
    return this.request(method, this.hubPath(hub, route`/users/${user}`));
  }

  groupExists(hub, group, { method = 'HEAD' } = {}) {
    return this.request(method, this.hubPath(hub, route`/groups/${group}`));
  }

  addConnectionToGroup(hub, group, connectionId) {
    return this.request('PUT', this.hubPath(hub, route`/groups/${group}/connections/${connectionId}`));
  }

  removeConnectionFromGroup(hub, group, connectionId) {
    return this.request('DELETE', this.hubPath(hub, route`/groups/${group}/connections/${connectionId}`));
  }

  removeConnectionFromAllGroups(hub, connectionId) {
    return this.request('DELETE', this.hubPath(hub, route`/connections/${connectionId}/groups`));
  }

  addUserToGroup(hub, user, group, { ttl } = {}) {
    return this.request('PUT', this.hubPath(hub, route`/users/${user}/groups/${group}`), { extra: { ttl } });
  }

  removeUserFromGroup(hub, user, group) {
    return this.request('DELETE', this.hubPath(hub, route`/users/${user}/groups/${group}`));
  }

  removeUserFromAllGroups(hub, user) {
    return this.request('DELETE', this.hubPath(hub, route`/users/${user}/groups`));
  }

  /** The SDK's `IsUserInGroup` sends GET (the spec says HEAD). */
  userInGroup(hub, user, group, { method = 'GET' } = {}) {
    return this.request(method, this.hubPath(hub, route`/users/${user}/groups/${group}`));
  }

  listGroupConnections(hub, group, { maxpagesize, top, continuationToken } = {}) {
    return this.request('GET', this.hubPath(hub, route`/groups/${group}/connections`), {
      query: { maxpagesize, top, continuationToken },
    });
  }

  /**
   * Every page of a group's connections, following `nextLink`; returns the members and the
   * responses. Fails after `maxPages`.
   */
  async allGroupConnections(hub, group, params = {}, { maxPages = 20 } = {}) {
    const pages = [expectStatus(await this.listGroupConnections(hub, group, params), 200)];
    while (pages.at(-1).json.nextLink) {
      assert.ok(pages.length < maxPages, `more than ${maxPages} pages:\n${pages.at(-1)}`);
      pages.push(expectStatus(await this.request('GET', pages.at(-1).json.nextLink), 200));
    }
    return { members: pages.flatMap((p) => p.json.value), pages };
  }
}

/**
 * The SDK's binary REST body (`application/octet-stream`): a MessagePack map
 * `{"json": bin, "messagepack": bin}` of the framed InvocationMessage in each protocol.
 */
export function binaryPayload(target, args) {
  const json = Buffer.from(`${JSON.stringify({ type: 1, target, arguments: args })}${RS}`);
  const packed = Buffer.from(msgpack.writeMessage({ type: 1, target, arguments: args, headers: {} }));
  const str = (s) => Buffer.concat([Buffer.from([0xa0 | s.length]), Buffer.from(s)]);
  const bin = (b) => {
    const head = Buffer.alloc(5);
    head[0] = 0xc6; // bin 32
    head.writeUInt32BE(b.length, 1);
    return Buffer.concat([head, b]);
  };
  return Buffer.concat([Buffer.from([0x82]), str('json'), bin(json), str('messagepack'), bin(packed)]);
}

// ---------------------------------------------------------------------------------------------
// HTTP servers (app server, upstream receiver)

async function listen(server) {
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  return `http://127.0.0.1:${server.address().port}`;
}

function closeServer(server) {
  server.closeAllConnections?.();
  return new Promise((resolve) => server.close(() => resolve()));
}

async function readBody(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return Buffer.concat(chunks);
}

/**
 * An app server: `POST {session url}/negotiate` answers `{url, accessToken}` redirecting the
 * official client to the service's `/client/?hub=…` with a client token (or a given token).
 *
 * @param {string} serviceUrl the service's base URL (with port)
 */
export async function startAppServer(serviceUrl) {
  const sessions = new Map();
  const server = http.createServer(async (req, res) => {
    await readBody(req);
    const m = /^\/s\/([^/]+)\/negotiate$/.exec(new URL(req.url, 'http://app').pathname);
    const session = m && sessions.get(m[1]);
    if (req.method !== 'POST' || !session) {
      res.writeHead(404).end();
      return;
    }
    const accessToken = session.token ?? clientToken({ serviceUrl, ...session });
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ url: `${serviceUrl}/client/?hub=${encodeURIComponent(session.hub)}`, accessToken }));
  });
  const url = await listen(server);
  return {
    url,
    /**
     * The URL to give `withUrl()` for one connection to `hub` (internal name, lowercased).
     *
     * @param {{hub: string, user?: string, claims?: Record<string, unknown>, token?: string,
     *   lifetimeSeconds?: number, alg?: 'HS256'|'HS512'}} session
     */
    clientUrl(session) {
      const id = hex(8);
      sessions.set(id, session);
      return `${url}/s/${id}`;
    },
    close: () => closeServer(server),
  };
}

/** The `X-ASRS-Signature` value for `connectionId`: `sha256=<HEX>` per key, comma-joined. */
export const upstreamSignature = (connectionId, keys) =>
  keys
    .map((k) => createHmac('sha256', Buffer.from(k, 'utf8')).update(connectionId).digest('hex').toUpperCase())
    .map((hash) => `sha256=${hash}`)
    .join(',');

/** Parses an upstream body: JSON, or an unframed MessagePack hub message. */
function parseUpstreamBody(contentType, body) {
  if (/msgpack/.test(contentType ?? '')) {
    // Frame it (varint length prefix) so the client's protocol can parse it.
    const prefix = [];
    let n = body.length;
    do {
      prefix.push((n & 0x7f) | (n > 0x7f ? 0x80 : 0));
      n >>>= 7;
    } while (n > 0);
    const framed = Buffer.concat([Buffer.from(prefix), body]);
    const [message] = msgpack.parseMessages(framed.buffer.slice(framed.byteOffset, framed.byteOffset + framed.length));
    return message;
  }
  return body.length ? JSON.parse(body.toString('utf8')) : null;
}

/**
 * The upstream webhook: records every request (`/upstream/{hub}/{category}/{event}`) with its
 * headers, parsed body and signature check, answers through per-hub handlers (default 200
 * empty), and resolves waiters as requests arrive.
 *
 * Each recorded request: `{hub, category, event, headers, body (Buffer), message (parsed),
 * connectionId, signatureValid, protocol ('json'|'messagepack')}`.
 *
 * @param {string[]} keys access keys the signature must cover
 */
export async function startUpstreamReceiver(keys) {
  const requests = [];
  const handlers = new Map();
  let waiters = [];
  const server = http.createServer(async (req, res) => {
    const body = await readBody(req);
    const [, , hub, category, event] = new URL(req.url, 'http://up').pathname.split('/').map(decodeURIComponent);
    const connectionId = req.headers['x-asrs-connection-id'];
    const signature = req.headers['x-asrs-signature'] ?? '';
    const expected = upstreamSignature(connectionId ?? '', keys).toLowerCase().split(',').sort();
    const record = {
      method: req.method,
      url: req.url,
      hub,
      category,
      event,
      headers: req.headers,
      body,
      connectionId,
      protocol: /msgpack/.test(req.headers['content-type'] ?? '') ? 'messagepack' : 'json',
      signatureValid: JSON.stringify(signature.toLowerCase().split(',').sort()) === JSON.stringify(expected),
    };
    try {
      record.message = parseUpstreamBody(req.headers['content-type'], body);
    } catch (err) {
      record.message = { unparsable: String(err) };
    }
    requests.push(record);
    waiters = waiters.filter((w) => !w());
    let reply;
    try {
      reply = (await handlers.get(hub?.toLowerCase())?.(record)) ?? { status: 200 };
    } catch (err) {
      reply = { status: 500, body: String(err) };
    }
    record.reply = reply;
    res.writeHead(reply.status, reply.headers ?? {});
    res.end(reply.body);
  });
  const url = await listen(server);

  return {
    url,
    /** The template for SIGNALBOX_AZURE_UPSTREAM_URL_TEMPLATE. */
    template: `${url}/upstream/{hub}/{category}/{event}`,
    requests,
    /** Answers requests for `hub` (case-insensitive) with `handler(record) → {status, body?, headers?}`. */
    on(hub, handler) {
      handlers.set(hub.toLowerCase(), handler);
    },
    /** Recorded requests matching `filter`. */
    matching(filter) {
      return requests.filter(filter);
    },
    /**
     * Resolves with the first `count` recorded requests matching `filter` (already received or
     * future); rejects after `timeoutMs`.
     */
    waitFor(filter, { count = 1, timeoutMs = 10_000, what = 'upstream request' } = {}) {
      return handled(new Promise((resolve, reject) => {
        const check = () => {
          const found = requests.filter(filter);
          if (found.length < count) return false;
          clearTimeout(timer);
          resolve(count === 1 ? found[0] : found.slice(0, count));
          return true;
        };
        const timer = setTimeout(() => {
          waiters = waiters.filter((w) => w !== check);
          const received = describeUpstream(requests);
          reject(new Error(`timed out after ${timeoutMs} ms waiting for ${count} × ${what}; received:\n${received}`));
        }, timeoutMs);
        if (!check()) waiters.push(check);
      }));
    },
    close: () => closeServer(server),
  };
}

/** Upstream requests as text (for failure messages). */
export function describeUpstream(records) {
  if (!records.length) return '  (none)';
  return records
    .map((r) => {
      const headers = Object.entries(r.headers)
        .filter(([h]) => h.startsWith('x-asrs-') || h === 'content-type')
        .map(([h, v]) => `${h}=${v}`)
        .join(' ');
      return `  ${r.method} ${r.url} [${headers}] body=${JSON.stringify(r.message)} → ${r.reply?.status ?? '(pending)'}`;
    })
    .join('\n');
}

/**
 * Asserts an upstream request's method, path, `X-ASRS-*` headers and signature (both keys).
 *
 * @param {object} record from startUpstreamReceiver
 * @param {{hub: string, category: string, event: string, user?: string, keys?: string[]}} expected
 *   user: undefined = no `X-ASRS-User-Id` header
 */
export function expectUpstreamRequest(record, { hub, category, event, user, keys = [PRIMARY_KEY, SECONDARY_KEY] }) {
  const shown = describeUpstream([record]);
  assert.equal(record.method, 'POST', shown);
  assert.deepEqual([record.hub, record.category, record.event], [hub.toLowerCase(), category, event], `URL\n${shown}`);
  assert.equal(record.headers['x-asrs-hub'], hub.toLowerCase(), `X-ASRS-Hub\n${shown}`);
  assert.equal(record.headers['x-asrs-category'], category, `X-ASRS-Category\n${shown}`);
  assert.equal(record.headers['x-asrs-event'], event, `X-ASRS-Event\n${shown}`);
  assert.ok(record.connectionId, `X-ASRS-Connection-Id\n${shown}`);
  assert.equal(record.headers['x-asrs-user-id'], user, `X-ASRS-User-Id\n${shown}`);
  assert.ok(
    record.signatureValid,
    `X-ASRS-Signature should be ${upstreamSignature(record.connectionId ?? '', keys)} (any hex case)\n${shown}`,
  );
}

/** Upstream connection events for one connection: `(record) => boolean`. */
export const connectionEvent = (event, connectionId) => (r) =>
  r.category === 'connections' && r.event === event && r.connectionId === connectionId;

/**
 * An upstream reply carrying a CompletionMessage framed in the record's protocol (what an Azure
 * Functions app returns): `result`, or `error` if given.
 */
export function completionReply(record, { result, error } = {}) {
  const invocationId = record.message.invocationId;
  const message = { type: 3, invocationId, ...(error !== undefined ? { error } : { result }) };
  if (record.protocol === 'messagepack') {
    return {
      status: 200,
      headers: { 'content-type': 'application/x-msgpack' },
      body: Buffer.from(msgpack.writeMessage({ ...message, headers: {} })),
    };
  }
  return { status: 200, headers: { 'content-type': 'application/json' }, body: `${JSON.stringify(message)}${RS}` };
}

// ---------------------------------------------------------------------------------------------
// The service

/** Environment of an Azure-compatible service: both keys and the upstream template. */
function azureEnv(dir, upstreamTemplate, extra = {}) {
  return serviceEnv(dir, {
    SIGNALBOX_AZURE_ACCESS_KEYS: `${PRIMARY_KEY},${SECONDARY_KEY}`,
    ...(upstreamTemplate ? { SIGNALBOX_AZURE_UPSTREAM_URL_TEMPLATE: upstreamTemplate } : {}),
    NO_COLOR: '1',
    ...extra,
  });
}

/**
 * Starts `signalbox serve` with the access keys and the upstream template, in a fresh temp dir
 * (SQLite). `stop()` also removes the dir.
 */
export async function startAzureService({ upstreamTemplate, env = {} } = {}) {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'signalbox-azure-e2e-'));
  const service = await startSignalbox({ env: azureEnv(dir, upstreamTemplate, env) });
  const stop = service.stop;
  service.stop = async () => {
    await stop();
    rmSync(dir, { recursive: true, force: true });
  };
  return service;
}

/** PostgreSQL admin URL (the `test` database) as the Rust tests use it. */
const POSTGRES_ADMIN = process.env.SIGNALBOX_TEST_POSTGRES || 'postgres://postgres@127.0.0.1:5432/test';

function psql(sql) {
  const r = spawnSync('psql', [POSTGRES_ADMIN, '-v', 'ON_ERROR_STOP=1', '-qc', sql], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`psql ${sql} failed (${r.error?.message ?? r.status}): ${r.stderr}`);
}

/** A fresh PostgreSQL database; `drop()` removes it. */
function createPostgresDatabase() {
  const name = `signalbox_azure_e2e_${hex(6)}`;
  psql(`CREATE DATABASE ${name}`);
  const i = POSTGRES_ADMIN.lastIndexOf('/');
  return { url: `${POSTGRES_ADMIN.slice(0, i)}/${name}`, drop: () => psql(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`) };
}

/**
 * `count` nodes sharing a PostgreSQL database, joined by Redis (127.0.0.1:6379) under a private
 * channel prefix, with one connection token secret. `stop()` stops every node and drops the
 * database.
 */
export async function startCluster({ upstreamTemplate, count = 2 } = {}) {
  const db = createPostgresDatabase();
  const shared = {
    SIGNALBOX_DATABASE: db.url,
    SIGNALBOX_BACKPLANE: process.env.SIGNALBOX_TEST_REDIS || 'redis://127.0.0.1:6379',
    SIGNALBOX_CONNECTION_TOKEN_SECRET: `azure-e2e-connection-token-secret-${hex(16)}`,
    SIGNALBOX_CHANNEL_PREFIX: `azure-e2e-${hex()}`,
  };
  const nodes = [];
  try {
    // One after the other: the first one migrates the database.
    for (let i = 0; i < count; i += 1) {
      nodes.push(await startAzureService({ upstreamTemplate, env: { ...shared, SIGNALBOX_NODE_ID: `node-${i}` } }));
    }
  } catch (err) {
    await Promise.allSettled(nodes.map((n) => n.stop()));
    db.drop();
    throw err;
  }
  return {
    nodes,
    async stop() {
      await Promise.allSettled(nodes.map((n) => n.stop()));
      db.drop();
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Clients and per-test scope

/**
 * Per-test scope: unique hub names, official clients connected through an app server, cleanup,
 * and diagnostics (client logs, service output, upstream requests) when the test fails.
 */
export class AzureScope {
  /**
   * @param {{services: {output: () => string}[], receiver?: object}} env
   */
  constructor({ services, receiver }) {
    this.services = services;
    this.receiver = receiver;
    this.marks = services.map((s) => s.output().length);
    this.hubs = [];
    this.connections = [];
    this.loggers = [];
  }

  /** A unique hub name, mixed case (the SDKs lowercase it; the service must not care). */
  hub(prefix = 'Hub') {
    const name = `${prefix}_${hex()}`;
    this.hubs.push(name.toLowerCase());
    return name;
  }

  /**
   * Builds and starts an official client for `hub` through `app`'s negotiate redirect.
   *
   * @param {{clientUrl: (session: object) => string}} app from startAppServer()
   * @param {string} hub internal hub name (lowercased here, as the SDKs do)
   * @param {{user?: string, claims?: Record<string, unknown>, token?: string,
   *   transport?: 'WebSockets'|'ServerSentEvents'|'LongPolling', protocol?: 'json'|'messagepack',
   *   lifetimeSeconds?: number, alg?: 'HS256'|'HS512', start?: boolean}} [opts]
   * @returns {Promise<signalR.HubConnection>}
   */
  async connect(app, hub, { transport = 'WebSockets', protocol = 'json', start = true, ...session } = {}) {
    const logger = new CapturingLogger(`client#${this.connections.length + 1}(${session.user ?? 'anonymous'})`);
    this.loggers.push(logger);
    let builder = new signalR.HubConnectionBuilder()
      .withUrl(app.clientUrl({ hub: hub.toLowerCase(), ...session }), { transport: signalR.HttpTransportType[transport] })
      .configureLogging(logger);
    if (protocol === 'messagepack') builder = builder.withHubProtocol(new MessagePackHubProtocol());
    const connection = builder.build();
    this.connections.push(connection);
    if (start) await connection.start();
    return connection;
  }

  async dispose() {
    await Promise.allSettled(this.connections.map((c) => c.stop()));
  }

  diagnostics() {
    const lines = ['--- client logs ---', ...this.loggers.flatMap((l) => l.lines).slice(-200)];
    this.services.forEach((s, i) => {
      const out = s.output().slice(this.marks[i]).replace(/\x1b\[[0-9;]*m/g, '').trimEnd();
      lines.push(`--- service ${i} output during this test ---`, out ? out.split('\n').slice(-150).join('\n') : '(none)');
    });
    if (this.receiver) {
      lines.push('--- upstream requests of this test ---');
      lines.push(describeUpstream(this.receiver.requests.filter((r) => this.hubs.includes(r.hub?.toLowerCase()))));
    }
    return lines.join('\n');
  }
}

/**
 * Defines a test with an AzureScope over `env()` (evaluated when the test runs: the services are
 * started in `before`).
 *
 * @param {() => {services: object[], receiver?: object}} env
 * @param {string} name
 * @param {(scope: AzureScope, t: import('node:test').TestContext) => Promise<void>} fn
 */
export function azureTest(env, name, fn, options = {}) {
  return scopedTest(name, () => {
    const context = env();
    if (!context?.services?.length) throw new Error('service is not running (see the before hook failure)');
    return new AzureScope(context);
  }, fn, options);
}

/**
 * A promise that does not count as unhandled if the test ends (or fails elsewhere) before anyone
 * awaits it; awaiting it still throws.
 */
function handled(promise) {
  promise.catch(() => {});
  return promise;
}

/**
 * Waits for the next invocation of client method `method` on `connection` (register before
 * triggering); resolves with its arguments. Rejects on timeout or if the connection closes first.
 */
export function nextCall(connection, method, { timeoutMs = 10_000, filter = () => true } = {}) {
  const id = connection.connectionId;
  return handled(
    new Promise((resolve, reject) => {
      let done = false;
      const finish = (err, args) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        connection.off(method, handler);
        if (err) reject(err);
        else resolve(args);
      };
      const handler = (...args) => {
        if (filter(...args)) finish(null, args);
      };
      const timer = setTimeout(
        () => finish(new Error(`timed out after ${timeoutMs} ms waiting for '${method}' on ${id}`)),
        timeoutMs,
      );
      connection.on(method, handler);
      connection.onclose((err) => {
        finish(new Error(`${id} closed (${err?.message ?? 'no error'}) before '${method}' arrived`));
      });
    }),
  );
}

/**
 * Sends a marker (`method`, argument `marker-…`) to each connection with `mgmt` and waits until
 * every one got it: anything sent to them before has arrived by then.
 */
export async function flush(mgmt, hub, connections, method) {
  const marker = `marker-${hex()}`;
  const arrived = connections.map((c) => nextCall(c, method, { filter: (a) => a === marker }));
  for (const c of connections) {
    expectStatus(await mgmt.sendToConnection(hub, c.connectionId, payload(method, [marker])), 202);
  }
  await Promise.all(arrived);
}

/**
 * Records every call of `method` on each connection (in arrival order), so a test can assert what
 * did *not* arrive once a later marker has arrived (messages to one connection stay in order).
 */
export class Inbox {
  constructor(connections, method) {
    this.method = method;
    this.calls = new Map(connections.map((c) => [c, []]));
    for (const c of connections) c.on(method, (...args) => this.calls.get(c).push(args));
  }

  /** First arguments of every call `connection` got (flush markers left out). */
  of(connection) {
    return this.calls
      .get(connection)
      .map((args) => args[0])
      .filter((a) => !(typeof a === 'string' && a.startsWith('marker-')));
  }
}

/** A promise resolving with the error passed to `onclose` (undefined for a clean close). */
export function closed(connection, { timeoutMs = 10_000 } = {}) {
  return handled(new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`timed out after ${timeoutMs} ms waiting for ${connection.connectionId} to close`)),
      timeoutMs,
    );
    connection.onclose((err) => {
      clearTimeout(timer);
      resolve(err);
    });
  }));
}
