// The notification page of `signalbox serve` (GET /) in headless Chromium through playwright-core:
// two users in two browser contexts (one sends, the other gets a toast and an unread count),
// presence across two tabs, an access token expiring while the page stays connected, a server
// restart (the page reconnects and shows what was sent meanwhile, once), and the external sign-in
// (authorization code + PKCE) against a local OpenID Connect provider (npm `oidc-provider`).
// Screenshots go to e2e/artifacts/page-*.png.
//
// Every request the pages send to signalbox with a bearer token (REST and the hub's negotiate and
// WebSocket) is checked to carry an unexpired access token.

import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import Provider from 'oidc-provider';

import {
  REPO_ROOT,
  freePort,
  serviceEnv,
  signalboxCli,
  startSignalbox,
  CHROMIUM,
  launchChromium,
} from './helpers.mjs';

const ARTIFACTS = path.join(REPO_ROOT, 'e2e', 'artifacts');
const PASSWORD = 'e2e password 123';
const CLIENT_ID = 'signalbox-page';
/** Short-lived access tokens, so that they expire (and are refreshed) during the tests. */
const TOKEN_TTL_S = 8;

const skip = !existsSync(CHROMIUM) && `no Chromium at ${CHROMIUM} (scripts/setup.sh installs it)`;

const dir = mkdtempSync(path.join(tmpdir(), 'signalbox-e2e-page-'));
let env;
let port;
let url;
let server;
let oidcServer;
let issuer;
let browser;
const contexts = [];
/** Bearer tokens the pages sent: {url, exp, at} (seconds). */
const sentTokens = [];
/** Requests from the pages to anything but signalbox and the provider. */
const foreign = [];

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const nowS = () => Date.now() / 1000;

function jwtExp(token) {
  try {
    return JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString()).exp;
  } catch {
    return null;
  }
}

const cli = (args, input) => signalboxCli(env, args, input);

/** Starts `signalbox serve` on the fixed port (so that a restart keeps the URL). */
const startServer = () => startSignalbox({ env, listen: `127.0.0.1:${port}`, timeoutMs: 30_000 });

/** A local OpenID Connect provider with a public client for the page (PKCE required). */
async function startProvider() {
  let handler = (_req, res) => res.writeHead(503).end();
  const httpServer = http.createServer((req, res) => handler(req, res));
  await new Promise((resolve) => httpServer.listen(0, '127.0.0.1', resolve));
  const providerUrl = `http://127.0.0.1:${httpServer.address().port}`;
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = { ...privateKey.export({ format: 'jwk' }), kid: 'e2e-1', alg: 'RS256', use: 'sig' };
  const signalboxOrigin = `http://127.0.0.1:${port}`;
  const provider = new Provider(providerUrl, {
    clients: [
      {
        client_id: CLIENT_ID,
        token_endpoint_auth_method: 'none',
        redirect_uris: [`${signalboxOrigin}/`],
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
    // Put the e-mail claims in the ID token (as Google does), not only in userinfo.
    conformIdTokenClaims: false,
    clientBasedCORS: (_ctx, origin) => origin === signalboxOrigin,
    cookies: { keys: ['signalbox-e2e-provider-cookie-key'] },
    pkce: { required: () => true },
    ttl: { AccessToken: 600, AuthorizationCode: 60, Grant: 600, IdToken: 600, Interaction: 600, Session: 600 },
    features: { devInteractions: { enabled: true } },
  });
  handler = provider.callback();
  return {
    url: providerUrl,
    close: () => new Promise((resolve) => httpServer.close(resolve)),
  };
}

before(async () => {
  if (skip) return;
  mkdirSync(ARTIFACTS, { recursive: true });
  port = await freePort();
  issuer = await startProvider();
  oidcServer = issuer;
  env = serviceEnv(dir, {
    SIGNALBOX_ACCESS_TOKEN_TTL: `${TOKEN_TTL_S}s`,
    SIGNALBOX_OIDC_ISSUER: issuer.url,
    SIGNALBOX_OIDC_AUDIENCE: CLIENT_ID,
    SIGNALBOX_OIDC_AUTO_CREATE_USERS: 'true',
    SIGNALBOX_OIDC_PROVIDER_NAME: 'Test provider',
    SIGNALBOX_LOG_FORMAT: 'json',
  });
  cli(['user', 'add', 'alice', '--claim', 'permission=notify'], `${PASSWORD}\n`);
  for (const name of ['bob', 'carol', 'dave']) cli(['user', 'add', name], `${PASSWORD}\n`);
  server = await startServer();
  url = server.url;
  browser = await launchChromium();
});

after(async () => {
  for (const context of contexts) await context.close().catch(() => {});
  if (browser) await browser.close();
  await server?.stop();
  await oidcServer?.close();
  rmSync(dir, { recursive: true, force: true });
});

/** A fresh browser context (its own storage: one "person"), audited. */
async function newContext({ width = 1280, height = 800 } = {}) {
  const context = await browser.newContext({ viewport: { width, height }, deviceScaleFactor: 1 });
  contexts.push(context);
  // The provider's development login page imports a web font; there is no Internet here.
  await context.route(/^https?:\/\/(?!127\.0\.0\.1[:/])/, (route) => {
    if (!route.request().url().startsWith('https://fonts.googleapis.com/')) foreign.push(route.request().url());
    return route.abort();
  });
  context.on('request', (request) => {
    if (!request.url().startsWith(url)) return;
    const auth = request.headers().authorization;
    if (auth?.startsWith('Bearer ')) {
      sentTokens.push({ url: request.url(), exp: jwtExp(auth.slice(7)), at: nowS() });
    }
  });
  return context;
}

async function newPage(context) {
  const page = await context.newPage();
  page.on('websocket', (ws) => {
    const token = new URL(ws.url()).searchParams.get('access_token');
    if (token) sentTokens.push({ url: ws.url().replace(/access_token=[^&]+/, 'access_token=…'), exp: jwtExp(token), at: nowS() });
  });
  const errors = [];
  page.on('pageerror', (error) => errors.push(String(error)));
  page.errors = errors;
  return page;
}

async function connState(page, state, timeout = 15_000) {
  await page.locator(`#conn-state[data-state="${state}"]`).waitFor({ timeout });
}

async function signIn(page, username) {
  const response = await page.goto(`${url}/`);
  assert.equal(response.status(), 200);
  await page.fill('#username', username);
  await page.fill('#password', PASSWORD);
  await page.press('#password', 'Enter');
  await connState(page, 'connected');
  assert.equal(await page.textContent('#me'), username);
  return response;
}

async function api(method, route, { token, body } = {}) {
  const headers = { 'content-type': 'application/json' };
  if (token) headers.authorization = `Bearer ${token}`;
  const res = await fetch(`${url}${route}`, { method, headers, body: body && JSON.stringify(body) });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

async function token(username) {
  const res = await api('POST', '/api/auth/login', { body: { username, password: PASSWORD } });
  assert.equal(res.status, 200, JSON.stringify(res.body));
  return res.body.access_token;
}

const shot = (page, name) => page.screenshot({ path: path.join(ARTIFACTS, `page-${name}.png`), fullPage: true });

describe('notification page', { skip }, () => {
  test('one user notifies another: toast, unread count, mark as read', { timeout: 60_000 }, async () => {
    const alice = await newPage(await newContext({ width: 1280, height: 800 }));
    const bob = await newPage(await newContext({ width: 375, height: 740 }));
    const response = await signIn(alice, 'alice');
    const headers = response.headers();
    assert.match(headers['content-security-policy'], /^default-src 'self';/);
    assert.match(headers['content-security-policy'], new RegExp(`connect-src 'self' ${issuer.url};`));
    assert.equal(headers['x-content-type-options'], 'nosniff');
    assert.equal(headers['referrer-policy'], 'no-referrer');
    await signIn(bob, 'bob');

    // The notify form needs the permission; presence lists both.
    assert.equal(await alice.isVisible('#notify-section'), true);
    assert.equal(await bob.isVisible('#notify-section'), false);
    await alice.locator('#online-users li[data-user="bob"]').waitFor();
    await bob.locator('#online-users li[data-user="alice"]').waitFor();

    await alice.fill('#notify-user', 'bob');
    await alice.fill('#notify-message', 'Lunch at noon? 🍜');
    await alice.click('#notify-submit');
    await alice.locator('#notify-status', { hasText: 'Sent to bob.' }).waitFor();

    await bob.locator('.toast', { hasText: 'Lunch at noon?' }).waitFor({ timeout: 10_000 });
    await sleep(300); // the toast's slide-in, for the screenshot
    await bob.locator('#unread-count[data-count="1"]').waitFor();
    assert.equal(await bob.textContent('#unread-count'), '1 unread');
    assert.equal(await bob.locator('#inbox li.unread').count(), 1);
    assert.match(await bob.textContent('#inbox li'), /From alice/);
    await shot(bob, 'narrow-toast');

    // An unknown recipient is reported, not thrown.
    await alice.fill('#notify-user', 'nobody');
    await alice.fill('#notify-message', 'hello?');
    await alice.click('#notify-submit');
    await alice.locator('#notify-status', { hasText: "unknown user 'nobody'" }).waitFor();
    await shot(alice, 'wide-sender');

    // Mark as read with the keyboard.
    await bob.focus('#inbox .mark-read');
    await bob.keyboard.press('Enter');
    await bob.locator('#unread-count[data-count="0"]').waitFor();
    const unread = await api('GET', '/api/notifications?unread=true', { token: await token('bob') });
    assert.deepEqual(unread.body, []);
    await shot(bob, 'narrow-read');
    assert.deepEqual([...alice.errors, ...bob.errors], []);
  });

  test('a user with two tabs stays online when one closes, offline when both do', { timeout: 60_000 }, async () => {
    const dave = await newPage(await newContext());
    await signIn(dave, 'dave');
    const carolContext = await newContext();
    const tab1 = await newPage(carolContext);
    const tab2 = await newPage(carolContext);
    await signIn(tab1, 'carol');
    await signIn(tab2, 'carol');
    const carol = dave.locator('#online-users li[data-user="carol"]');
    await carol.waitFor();
    const daveToken = await token('dave');
    assert.equal((await api('GET', '/api/users/carol/presence', { token: daveToken })).body.connections.length, 2);

    await tab1.close();
    const deadline = Date.now() + 10_000;
    while ((await api('GET', '/api/users/carol/presence', { token: daveToken })).body.connections.length !== 1) {
      assert.ok(Date.now() < deadline, 'the closed tab was never removed');
      await sleep(100);
    }
    await sleep(500);
    assert.equal(await carol.count(), 1, 'carol is still online with one tab');
    assert.equal((await api('GET', '/api/users/carol/presence', { token: daveToken })).body.online, true);

    await tab2.close();
    await carol.waitFor({ state: 'detached', timeout: 10_000 });
    assert.equal((await api('GET', '/api/users/carol/presence', { token: daveToken })).body.online, false);
    assert.deepEqual(dave.errors, []);
  });

  test('the access token expires and the page stays connected through refresh', { timeout: 60_000 }, async () => {
    const bob = await newPage(await newContext({ width: 375, height: 740 }));
    let sockets = 0;
    bob.on('websocket', () => (sockets += 1));
    await signIn(bob, 'bob');
    const firstExp = await bob.evaluate(() => window.signalbox.accessTokenExp);
    assert.ok(firstExp - nowS() <= TOKEN_TTL_S + 1);

    // Past the first token's expiry (no leeway trick: wait until it is really expired).
    while (nowS() < firstExp + 1) await sleep(250);
    const stats = await bob.evaluate(() => window.signalbox.stats);
    assert.ok(stats.refreshes >= 1, `refreshed: ${JSON.stringify(stats)}`);
    assert.equal(stats.reconnects, 0);
    assert.ok((await bob.evaluate(() => window.signalbox.accessTokenExp)) > nowS(), 'the page holds a live token');
    assert.equal(await bob.getAttribute('#conn-state', 'data-state'), 'connected');
    assert.equal(sockets, 1, 'the WebSocket was never replaced');

    // Still live: a notification arrives, and marking it read uses the fresh token.
    const sent = await api('POST', '/api/notifications', {
      token: await token('alice'),
      body: { user: 'bob', message: 'still there after the refresh?' },
    });
    assert.equal(sent.status, 201, JSON.stringify(sent.body));
    await bob.locator('.toast', { hasText: 'still there after the refresh?' }).waitFor({ timeout: 10_000 });
    const before = sentTokens.length;
    await bob.click(`#inbox li[data-id="${sent.body.ids[0]}"] .mark-read`);
    await bob.locator(`#inbox li[data-id="${sent.body.ids[0]}"].read`).waitFor();
    assert.ok(sentTokens.length > before, 'mark-as-read sent a bearer token');
    assert.deepEqual(bob.errors, []);
  });

  test('the server restarts: the page reconnects and shows what was sent meanwhile, once', { timeout: 60_000 }, async () => {
    const bob = await newPage(await newContext({ width: 1280, height: 800 }));
    await signIn(bob, 'bob');
    const aliceToken = await token('alice');

    await server.stop();
    await connState(bob, 'reconnecting', 10_000);
    await shot(bob, 'wide-reconnecting');
    await sleep(1_000);
    server = await startServer();
    assert.equal(server.url, url);
    // Published before the page is back: delivered by the hub's replay and listed by the resync.
    const sent = await api('POST', '/api/notifications', {
      token: aliceToken,
      body: { user: 'bob', message: 'sent while you were away' },
    });
    assert.equal(sent.status, 201, JSON.stringify(sent.body));
    const id = sent.body.ids[0];

    await connState(bob, 'connected', 30_000);
    await bob.locator(`#inbox li[data-id="${id}"]`).waitFor({ timeout: 10_000 });
    await sleep(1_000); // let the replay and the resync both land
    assert.equal(await bob.locator(`#inbox li[data-id="${id}"]`).count(), 1, 'listed once');
    const ids = await bob.evaluate(() => window.signalbox.inboxIds);
    assert.equal(new Set(ids).size, ids.length, 'no duplicates');
    const stats = await bob.evaluate(() => window.signalbox.stats);
    assert.ok(stats.reconnects >= 1 && stats.resyncs >= 2, JSON.stringify(stats));
    await bob.locator('#online-users li[data-user="bob"]').waitFor();
    await shot(bob, 'wide-after-restart');

    // The browser going offline shows; coming back online shows the live connection again.
    await bob.context().setOffline(true);
    await connState(bob, 'offline', 5_000);
    assert.equal(await bob.isVisible('#reconnect'), true);
    await bob.context().setOffline(false);
    await connState(bob, 'connected', 20_000);
    assert.deepEqual(bob.errors, []);
  });

  test('external sign-in: authorization code + PKCE with the OpenID Connect provider', { timeout: 60_000 }, async () => {
    const page = await newPage(await newContext({ width: 375, height: 740 }));
    await page.goto(`${url}/`);
    const button = page.locator('#oidc-signin');
    await button.waitFor();
    assert.equal(await button.textContent(), 'Sign in with Test provider');
    await shot(page, 'narrow-signin');

    await button.click();
    await page.waitForURL(`${issuer.url}/**`);
    const authorize = new URL(page.url());
    await page.fill('input[name="login"]', 'olivia');
    await page.fill('input[name="password"]', 'anything');
    await page.click('button[type="submit"]');
    // The development provider asks for consent once.
    await page.locator('button', { hasText: 'Continue' }).click();

    await connState(page, 'connected', 20_000);
    assert.equal(page.url(), `${url}/`, 'the code is gone from the address bar');
    assert.equal(await page.textContent('#me'), 'olivia@example.com');
    assert.equal(await page.isVisible('#notify-section'), false);
    assert.ok(authorize.pathname.length > 0);

    // The session is a signalbox session: notifications reach the new account.
    const sent = await api('POST', '/api/notifications', {
      token: await token('alice'),
      body: { user: 'olivia@example.com', message: 'welcome, olivia' },
    });
    assert.equal(sent.status, 201, JSON.stringify(sent.body));
    await page.locator('.toast', { hasText: 'welcome, olivia' }).waitFor({ timeout: 10_000 });
    await shot(page, 'narrow-external');

    // Sign out ends the session.
    await page.click('#signout');
    await page.locator('#signin').waitFor();
    assert.equal(await page.getAttribute('#conn-state', 'data-state'), 'signed-out');
    assert.deepEqual(page.errors, []);
  });

  test('every bearer token the pages sent was unexpired; nothing was loaded from elsewhere', () => {
    assert.ok(sentTokens.length > 10, `saw ${sentTokens.length} tokens`);
    const expired = sentTokens.filter((t) => !(t.exp > t.at));
    assert.deepEqual(expired, []);
    assert.deepEqual(foreign, []);
  });

  test('the page refreshes its hub connection with each new token and stays on one connection', { timeout: 60_000 }, async () => {
    cli(['user', 'add', 'erin'], `${PASSWORD}\n`);
    const erin = await newPage(await newContext());
    /** The hub refresh calls: {status, exp (of the bearer sent), at}. */
    const hubRefreshes = [];
    erin.on('response', (response) => {
      const request = response.request();
      if (request.method() !== 'POST' || new URL(request.url()).pathname !== '/hubs/notifications/refresh') return;
      const exp = jwtExp(request.headers().authorization?.slice(7) ?? '');
      hubRefreshes.push({ status: response.status(), exp, at: nowS() });
    });
    let sockets = 0;
    erin.on('websocket', () => (sockets += 1));
    await signIn(erin, 'erin');
    const firstExp = await erin.evaluate(() => window.signalbox.accessTokenExp);
    // Every state the indicator takes from now on.
    await erin.evaluate(() => {
      const indicator = document.getElementById('conn-state');
      window.connStates = [];
      new MutationObserver(() => window.connStates.push(indicator.dataset.state)).observe(indicator, {
        attributes: true,
        attributeFilter: ['data-state'],
      });
    });
    const aliceToken = await token('alice');
    const presence = async () => (await api('GET', '/api/users/erin/presence', { token: aliceToken })).body;
    const [connection] = (await presence()).connections;
    assert.ok(connection?.connection_id, 'erin is connected');

    // Three token lifetimes (about 25 s): the server closes a connection whose token expires.
    while (nowS() < firstExp + 2 * TOKEN_TTL_S + 1) await sleep(500);
    assert.deepEqual(await erin.evaluate(() => window.connStates), [], 'never reconnecting or offline');
    assert.equal(await erin.getAttribute('#conn-state', 'data-state'), 'connected');
    const stats = await erin.evaluate(() => window.signalbox.stats);
    assert.ok(stats.hubRefreshes >= 3 && stats.hubRefreshFailures === 0 && stats.reconnects === 0, JSON.stringify(stats));
    assert.ok(hubRefreshes.length >= 3, JSON.stringify(hubRefreshes));
    assert.deepEqual(hubRefreshes.filter((r) => r.status !== 200 || !(r.exp > r.at)), []);
    assert.equal(sockets, 1, 'the WebSocket was never replaced');
    const now = await presence();
    assert.deepEqual(now.connections.map((c) => c.connection_id), [connection.connection_id], 'the same connection');

    const sent = await api('POST', '/api/notifications', {
      token: await token('alice'),
      body: { user: 'erin', message: 'refreshed, not reconnected' },
    });
    assert.equal(sent.status, 201, JSON.stringify(sent.body));
    await erin.locator('.toast', { hasText: 'refreshed, not reconnected' }).waitFor({ timeout: 10_000 });
    assert.deepEqual(erin.errors, []);
  });
});
