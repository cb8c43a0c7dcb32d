// Server-side sign-in on the notification page of `signalbox serve`, as a confidential OpenID
// Connect client (like a Google "Web application" client), in headless Chromium through
// playwright-core against a local `oidc-provider` whose client authenticates with
// `client_secret_basic` and must use PKCE. The page's "Sign in with …" button goes through
// /api/auth/oidc/start; the provider sends the browser to /api/auth/oidc/callback; the page
// collects its session from /api/auth/oidc/session and gets a toast for a notification.
//
// Checked: the client secret appears in nothing the browser received (every response's headers
// and body); the provider's token request came from the server (not the browser) with Basic
// client authentication; a tampered or replayed `state` is refused with a readable page; the
// server log does not hold the secret.

import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import Provider from 'oidc-provider';

import { freePort, serviceEnv, signalboxCli, startSignalbox, CHROMIUM, launchChromium } from './helpers.mjs';

const PASSWORD = 'e2e password 123';
const CLIENT_ID = 'signalbox-web';
const CLIENT_SECRET = 'e2e-client-secret-Zq8vT1xW4pL0mN6rB3yK9dF2';

const skip = !existsSync(CHROMIUM) && `no Chromium at ${CHROMIUM} (scripts/setup.sh installs it)`;

const dir = mkdtempSync(path.join(tmpdir(), 'signalbox-e2e-confidential-'));
let url;
let server;
let provider;
let browser;
/** Token requests the provider received: {authorization, userAgent, remote}. */
const tokenRequests = [];
/** Everything the browser received from any server: "status url\nheaders\nbody". */
const received = [];
/** Requests the browser itself sent to the provider's token endpoint (must stay empty). */
const browserTokenRequests = [];

/** A local provider with a confidential client (client_secret_basic, PKCE required). */
async function startProvider(signalboxOrigin) {
  let handler = (_req, res) => res.writeHead(503).end();
  const httpServer = http.createServer((req, res) => {
    if (req.method === 'POST' && req.url.startsWith('/token')) {
      tokenRequests.push({
        authorization: req.headers.authorization ?? null,
        userAgent: req.headers['user-agent'] ?? null,
        remote: req.socket.remoteAddress,
      });
    }
    handler(req, res);
  });
  await new Promise((resolve) => httpServer.listen(0, '127.0.0.1', resolve));
  const providerUrl = `http://127.0.0.1:${httpServer.address().port}`;
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = { ...privateKey.export({ format: 'jwk' }), kid: 'e2e-conf-1', alg: 'RS256', use: 'sig' };
  const oidc = new Provider(providerUrl, {
    clients: [
      {
        client_id: CLIENT_ID,
        client_secret: CLIENT_SECRET,
        token_endpoint_auth_method: 'client_secret_basic',
        redirect_uris: [`${signalboxOrigin}/api/auth/oidc/callback`],
        grant_types: ['authorization_code'],
        response_types: ['code'],
      },
    ],
    jwks: { keys: [jwk] },
    async findAccount(_ctx, id) {
      return {
        accountId: id,
        async claims() {
          return { sub: id, email: `${id}@example.com`, email_verified: true, name: id };
        },
      };
    },
    claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name'] },
    conformIdTokenClaims: false,
    cookies: { keys: ['signalbox-e2e-confidential-cookie-key'] },
    pkce: { required: () => true },
    ttl: { AccessToken: 600, AuthorizationCode: 60, Grant: 600, IdToken: 600, Interaction: 600, Session: 600 },
    features: { devInteractions: { enabled: true } },
  });
  handler = oidc.callback();
  return { url: providerUrl, close: () => new Promise((resolve) => httpServer.close(resolve)) };
}

before(async () => {
  if (skip) return;
  const port = await freePort();
  provider = await startProvider(`http://127.0.0.1:${port}`);
  const secretFile = path.join(dir, 'client-secret');
  writeFileSync(secretFile, `${CLIENT_SECRET}\n`, { mode: 0o600 });
  const env = serviceEnv(dir, {
    SIGNALBOX_OIDC_ISSUER: provider.url,
    SIGNALBOX_OIDC_CLIENT_ID: CLIENT_ID,
    SIGNALBOX_OIDC_AUDIENCE: CLIENT_ID,
    SIGNALBOX_OIDC_CLIENT_SECRET_FILE: secretFile,
    SIGNALBOX_OIDC_AUTO_CREATE_USERS: 'true',
    SIGNALBOX_OIDC_PROVIDER_NAME: 'Confidential provider',
    RUST_LOG: 'debug',
  });
  signalboxCli(env, ['user', 'add', 'alice', '--claim', 'permission=notify'], `${PASSWORD}\n`);
  server = await startSignalbox({ env, listen: `127.0.0.1:${port}`, timeoutMs: 30_000 });
  url = server.url;
  browser = await launchChromium();
});

after(async () => {
  if (browser) await browser.close();
  await server?.stop();
  await provider?.close();
  rmSync(dir, { recursive: true, force: true });
});

/** A fresh audited context and page: every response is kept, provider token calls noted. */
async function newPage() {
  const context = await browser.newContext({ viewport: { width: 1024, height: 768 } });
  // The provider's development login page imports a web font; there is no Internet here.
  await context.route(/^https?:\/\/(?!127\.0\.0\.1[:/])/, (route) => route.abort());
  context.on('request', (request) => {
    if (request.url().startsWith(`${provider.url}/token`)) browserTokenRequests.push(request.url());
  });
  const page = await context.newPage();
  page.on('response', async (response) => {
    const headers = await response.allHeaders().catch(() => response.headers());
    let body = '';
    try {
      body = (await response.body()).toString('utf8');
    } catch {
      // Redirects and aborted responses have no body.
    }
    received.push(`${response.status()} ${response.url()}\n${JSON.stringify(headers)}\n${body}`);
  });
  const errors = [];
  page.on('pageerror', (error) => errors.push(String(error)));
  page.errors = errors;
  return page;
}

async function api(method, route, { token, body } = {}) {
  const headers = { 'content-type': 'application/json' };
  if (token) headers.authorization = `Bearer ${token}`;
  const res = await fetch(`${url}${route}`, { method, headers, body: body && JSON.stringify(body) });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

/** Logs in at the provider's development pages (and consents the first time). */
async function providerLogin(page, login) {
  await page.waitForURL(`${provider.url}/**`);
  await page.fill('input[name="login"]', login);
  await page.fill('input[name="password"]', 'anything');
  await page.click('button[type="submit"]');
  const consent = page.locator('button', { hasText: 'Continue' });
  await consent.click({ timeout: 5_000 }).catch(() => {});
}

describe('server-side sign-in (confidential client)', { skip }, () => {
  let callbackUrl;

  test('sign in through the server, land signed in, get a toast', { timeout: 60_000 }, async () => {
    const config = await api('GET', '/api/auth/config');
    assert.equal(config.body.oidc.flow, 'server');
    assert.equal(config.body.oidc.start_url, '/api/auth/oidc/start');

    const page = await newPage();
    let authorizeUrl;
    page.on('request', (request) => {
      if (request.url().startsWith(`${url}/api/auth/oidc/callback`)) callbackUrl = request.url();
      if (request.url().startsWith(`${provider.url}/auth?`)) authorizeUrl = request.url();
    });
    await page.goto(`${url}/`);
    const button = page.locator('#oidc-signin');
    await button.waitFor();
    assert.equal(await button.textContent(), 'Sign in with Confidential provider');
    await button.click();
    await page.waitForURL(`${provider.url}/**`);
    const authorize = new URL(authorizeUrl);
    assert.equal(authorize.searchParams.get('code_challenge_method'), 'S256');
    assert.equal(authorize.searchParams.get('redirect_uri'), `${url}/api/auth/oidc/callback`);
    await providerLogin(page, 'olivia');

    await page.locator('#conn-state[data-state="connected"]').waitFor({ timeout: 20_000 });
    assert.equal(page.url(), `${url}/`, 'nothing left in the address bar');
    assert.equal(await page.textContent('#me'), 'olivia@example.com');
    assert.ok(callbackUrl, 'the provider sent the browser to the callback');

    const admin = await api('POST', '/api/auth/login', { body: { username: 'alice', password: PASSWORD } });
    assert.equal(admin.status, 200, JSON.stringify(admin.body));
    const sent = await api('POST', '/api/notifications', {
      token: admin.body.access_token,
      body: { user: 'olivia@example.com', message: 'welcome through the server' },
    });
    assert.equal(sent.status, 201, JSON.stringify(sent.body));
    await page.locator('.toast', { hasText: 'welcome through the server' }).waitFor({ timeout: 10_000 });

    // The code was exchanged by the server, with Basic client authentication.
    assert.equal(tokenRequests.length, 1, JSON.stringify(tokenRequests));
    const [request] = tokenRequests;
    assert.ok(request.authorization?.startsWith('Basic '), JSON.stringify(request));
    const [id, secret] = Buffer.from(request.authorization.slice(6), 'base64').toString().split(':');
    assert.equal(decodeURIComponent(id), CLIENT_ID);
    assert.equal(decodeURIComponent(secret), CLIENT_SECRET);
    assert.ok(!/Chrome|Mozilla/.test(request.userAgent ?? ''), `not the browser: ${request.userAgent}`);
    assert.deepEqual(browserTokenRequests, [], 'the browser never called the token endpoint');
    assert.deepEqual(page.errors, []);
    await page.context().close();
  });

  test('a replayed or tampered state is refused with a readable page', { timeout: 60_000 }, async () => {
    assert.ok(callbackUrl, 'needs the first test');
    const page = await newPage();

    // Replay of the callback that already signed someone in.
    const replay = await page.goto(callbackUrl);
    assert.equal(replay.status(), 400);
    assert.match(await page.textContent('h1'), /Sign-in failed/);
    assert.match(await page.textContent('#signin-error'), /not valid|not started in this browser/);

    // A fresh sign-in whose state is altered on the way back.
    let authorizeUrl;
    page.on('request', (request) => {
      if (request.url().startsWith(`${provider.url}/auth?`)) authorizeUrl = request.url();
    });
    await page.goto(`${url}/api/auth/oidc/start`);
    await page.waitForURL(`${provider.url}/**`);
    const state = new URL(authorizeUrl).searchParams.get('state');
    assert.ok(state);
    const tampered = await page.goto(`${url}/api/auth/oidc/callback?code=forged&state=${state}x`);
    assert.equal(tampered.status(), 400);
    assert.match(await page.textContent('#signin-error'), /not valid/);
    assert.equal(await page.getAttribute('#signin-error', 'data-code'), 'invalid_state');
    // "Back to sign-in" leads to the page.
    await page.click('a[href="/"]');
    await page.locator('#oidc-signin').waitFor();

    // A provider error reaches the page as a code and a readable message.
    await page.goto(`${url}/?signin_error=access_denied`);
    await page.locator('#signin-error', { hasText: 'cancelled' }).waitFor();
    assert.equal(page.url(), `${url}/`);
    assert.deepEqual(page.errors, []);
    await page.context().close();
  });

  test('the secret never reached the browser nor the server log', () => {
    assert.ok(received.length > 5, `saw ${received.length} responses`);
    const basic = Buffer.from(`${CLIENT_ID}:${CLIENT_SECRET}`).toString('base64');
    for (const entry of received) {
      assert.ok(!entry.includes(CLIENT_SECRET), entry.slice(0, 500));
      assert.ok(!entry.includes(basic), entry.slice(0, 500));
    }
    const log = server.output();
    assert.ok(!log.includes(CLIENT_SECRET), 'secret in the server log');
    assert.match(log, /olivia@example\.com/, 'the sign-in is logged with the local user name');
  });

  // The request span (crates/server/src/logging.rs) redacts the callback's `code` and `state`.
  test('the server log has no authorization code or state', () => {
    const log = server.output();
    const params = new URL(callbackUrl).searchParams;
    for (const name of ['code', 'state']) {
      const value = params.get(name);
      assert.ok(value && !log.includes(value), `${name} in the server log`);
    }
  });
});
