// First run with zero configuration, in headless Chromium through playwright-core: in a fresh
// directory and an empty environment (no SIGNALBOX_* variable at all), `signalbox serve` prints a
// one-time setup link; the browser opens it, creates the administrator and lands signed in on the
// admin dashboard; the admin adds a user, who signs in on the notification page (another browser
// context) and gets a toast for a notification sent from the dashboard. The server restarts in the
// same directory: both sessions' access tokens still work (the signing secret was kept in
// ./signalbox-data), and so does a token from `signalbox token issue` run there with no
// environment. The setup link is refused the second time.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';


import { REPO_ROOT, SERVER_BIN, CHROMIUM, launchChromium, startSignalbox } from './helpers.mjs';

const ARTIFACTS = path.join(REPO_ROOT, 'e2e', 'artifacts');
const ADMIN_PASSWORD = 'first admin password';
const BOB_PASSWORD = 'bob password 123';
const LISTEN_RE = /Now listening on: (http:\/\/\S+)/;
const LINK_RE = /(http:\/\/\S+\/setup#token=[A-Za-z0-9_-]+)/;

const skip = !existsSync(CHROMIUM) && `no Chromium at ${CHROMIUM} (scripts/setup.sh installs it)`;

const dir = mkdtempSync(path.join(tmpdir(), 'signalbox-e2e-first-run-'));
/** Only what a process needs to run: no SIGNALBOX_* variable, no RUST_LOG. */
const env = { PATH: process.env.PATH || '/usr/bin:/bin', HOME: dir };

let browser;
let server;
const contexts = [];

/** `signalbox serve --listen 127.0.0.1:0` in `dir` with nothing but `env`; resolves once stdout
 * has the whole banner (it ends with the backplane line; the setup link, if any, comes before). */
async function serve() {
  const started = await startSignalbox({
    env,
    cwd: dir,
    inheritEnv: false,
    ready: (stdout) => /^Backplane: /m.test(stdout),
  });
  const stdout = started.stdout();
  return { ...started, stdout, link: LINK_RE.exec(stdout)?.[1] ?? null };
}

async function get(url, token) {
  const res = await fetch(url, { headers: { authorization: `Bearer ${token}` } });
  return { status: res.status, body: await res.json().catch(() => null) };
}

before(async () => {
  if (skip) return;
  if (!existsSync(SERVER_BIN)) {
    throw new Error(`signalbox binary not found at ${SERVER_BIN}; run \`cargo build -p signalbox-server\``);
  }
  browser = await launchChromium();
});

after(async () => {
  for (const context of contexts) await context.close().catch(() => {});
  if (browser) await browser.close();
  await server?.stop();
  rmSync(dir, { recursive: true, force: true });
});

async function newContext() {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  contexts.push(context);
  // Only this machine: a first run needs nothing from the Internet.
  await context.route(/^https?:\/\/(?!127\.0\.0\.1[:/])/, (route) => route.abort());
  return context;
}

describe('first run with zero configuration', { skip }, () => {
  test('setup link → admin → a user → a notification → restart → CLI token', { timeout: 120_000 }, async () => {
    server = await serve();
    const { url, link } = server;
    assert.ok(link, `no setup link printed:\n${server.stdout}`);
    assert.ok(link.startsWith(`${url}/setup#token=`), link);
    // The link comes right after the listening line, which stays first.
    const lines = server.stdout.split('\n');
    assert.match(lines[0], LISTEN_RE);
    assert.match(lines[1], /No administrator yet/);
    assert.ok(lines[2].includes(link));
    // The signing secret was generated into ./signalbox-data, private to this user.
    const secretFile = path.join(dir, 'signalbox-data', 'jwt-secret');
    assert.equal(statSync(secretFile).mode & 0o777, 0o600);
    assert.equal(statSync(path.join(dir, 'signalbox-data')).mode & 0o777, 0o700);
    assert.ok(existsSync(path.join(dir, 'signalbox-data', 'signalbox.db')));

    // The administrator: the link, a name and a password, then the dashboard, signed in.
    const adminContext = await newContext();
    const admin = await adminContext.newPage();
    await admin.goto(link);
    await admin.locator('#setup-form').waitFor();
    await admin.fill('#username', 'chief');
    await admin.fill('#password', ADMIN_PASSWORD);
    await admin.fill('#password2', ADMIN_PASSWORD);
    await admin.click('#setup-submit');
    await admin.waitForURL(`${url}/admin`);
    await admin.locator('#dashboard:not([hidden])').waitFor();
    assert.equal(await admin.textContent('#me'), 'chief');
    assert.equal(await admin.isVisible('#login'), false);
    // Its tokens came in the response body, not in any URL.
    assert.ok(!admin.url().includes('token'), admin.url());

    // The admin adds bob.
    await admin.fill('#new-user-name', 'bob');
    await admin.fill('#new-user-password', BOB_PASSWORD);
    await admin.click('#new-user-submit');
    await admin.locator('#new-user-result', { hasText: 'Created bob' }).waitFor();
    await admin.locator('#users tr[data-user="bob"]').waitFor();
    await admin.locator('#registration-state', { hasText: 'closed' }).waitFor();

    // Bob signs in on the notification page, in another browser context.
    const bobContext = await newContext();
    const bobTokens = [];
    bobContext.on('request', (request) => {
      const auth = request.headers().authorization;
      if (request.url().startsWith(url) && auth?.startsWith('Bearer ')) bobTokens.push(auth.slice(7));
    });
    const bob = await bobContext.newPage();
    await bob.goto(`${url}/`);
    await bob.fill('#username', 'bob');
    await bob.fill('#password', BOB_PASSWORD);
    await bob.press('#password', 'Enter');
    await bob.locator('#conn-state[data-state="connected"]').waitFor({ timeout: 15_000 });
    assert.equal(await bob.textContent('#me'), 'bob');

    // A notification from the dashboard reaches bob as a toast.
    await admin.fill('#notify-user', 'bob');
    await admin.fill('#notify-message', 'Hello bob, from the dashboard');
    await admin.click('#notify-submit');
    await admin.locator('#notify-result', { hasText: 'Sent to bob' }).waitFor();
    await bob.locator('.toast', { hasText: 'Hello bob, from the dashboard' }).waitFor({ timeout: 10_000 });
    // And one to the admin themselves (no recipient given).
    await admin.fill('#notify-user', '');
    await admin.fill('#notify-message', 'A note to myself');
    await admin.click('#notify-submit');
    await admin.locator('#notify-result', { hasText: 'Sent to chief' }).waitFor();
    mkdirSync(ARTIFACTS, { recursive: true });
    await admin.screenshot({ path: path.join(ARTIFACTS, 'first-run-dashboard.png'), fullPage: true });

    // The setup link is refused the second time.
    const again = await adminContext.newPage();
    await again.goto(link);
    await again.locator('#closed[data-status="complete"]').waitFor();
    assert.equal(await again.isVisible('#setup-form'), false);
    await again.close();
    const token = new URL(link).hash.slice('#token='.length);
    const reuse = await fetch(`${url}/api/setup`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ token, username: 'intruder', password: 'intruder password' }),
    });
    assert.equal(reuse.status, 409);
    assert.equal((await reuse.json()).error, 'setup_complete');

    // The logs never show the setup token (only the banner on stdout does).
    assert.ok(!server.stderr().includes(token), 'the setup token was logged');

    const adminAccess = await admin.evaluate(() => sessionStorage.getItem('signalbox-admin-token'));
    assert.ok(adminAccess);
    assert.ok(bobTokens.length > 0);
    const bobAccess = bobTokens[bobTokens.length - 1];

    // Restart in the same directory: no new link, and both sessions' tokens still work.
    await server.stop();
    server = await serve();
    assert.equal(server.link, null, server.stdout);
    const restarted = server.url;
    const adminInbox = await get(`${restarted}/api/notifications`, adminAccess);
    assert.equal(adminInbox.status, 200, JSON.stringify(adminInbox.body));
    assert.ok(adminInbox.body.some((n) => n.message === 'A note to myself'));
    const bobInbox = await get(`${restarted}/api/notifications`, bobAccess);
    assert.equal(bobInbox.status, 200, JSON.stringify(bobInbox.body));
    assert.ok(bobInbox.body.some((n) => n.message === 'Hello bob, from the dashboard' && n.from === 'chief'));

    // `signalbox token issue` in the same directory, with no environment, signs for the server.
    const issued = spawnSync(SERVER_BIN, ['token', 'issue', '--sub', 'bob'], { cwd: dir, env, encoding: 'utf8', timeout: 60_000 });
    assert.equal(issued.status, 0, issued.stderr);
    const cliToken = issued.stdout.trim();
    assert.equal((await get(`${restarted}/api/notifications`, cliToken)).status, 200);

    // And the link stays refused after the restart.
    const after = await fetch(`${restarted}/api/setup`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ token, username: 'intruder', password: 'intruder password' }),
    });
    assert.equal(after.status, 409);
    assert.ok(!server.stderr().includes(token), 'the setup token was logged');
  });
});
