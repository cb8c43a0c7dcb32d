// The admin dashboard of `signalbox serve` (/admin) in headless Chromium through playwright-core:
// an admin signs in, sees the live counts, the online users, a group and the rate chart after
// some traffic, and the page is saved as a screenshot (e2e/artifacts/dashboard.png). A user
// without the admin role is turned away. The webhook delivery log shows failed lifecycle events,
// and its Retry button delivers one once the receiver accepts.

import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';


import {
  REPO_ROOT,
  serviceEnv,
  signalboxCli,
  signalR,
  startSignalbox,
  CHROMIUM,
  launchChromium,
} from './helpers.mjs';

const ARTIFACTS = path.join(REPO_ROOT, 'e2e', 'artifacts');
const PASSWORD = 'e2e password 123';

const WEBHOOK_SECRET = 'e2e-webhook-secret-0123456789abcdef0123';

// Lifecycle webhooks go to this receiver; it refuses (404) until `accept` is set, and records the
// requests whose signature checks out.
const receiver = { accept: false, delivered: [], server: null, url: null };

const dir = mkdtempSync(path.join(tmpdir(), 'signalbox-e2e-dashboard-'));
const env = serviceEnv(dir, { SIGNALBOX_LOG_FORMAT: 'json' });
const cli = (args, input) => signalboxCli(env, args, input);

const skip = !existsSync(CHROMIUM) && `no Chromium at ${CHROMIUM} (scripts/setup.sh installs it)`;
let server;
let url;
let browser;
const connections = [];

before(async () => {
  if (skip) return;
  cli(['user', 'add', 'root', '--role', 'admin'], `${PASSWORD}\n`);
  cli(['user', 'add', 'alice'], `${PASSWORD}\n`);
  cli(['user', 'add', 'bob'], `${PASSWORD}\n`);
  cli(['user', 'add', 'backend', '--claim', 'permission=notify'], `${PASSWORD}\n`);
  receiver.server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (chunk) => { body += chunk; });
    req.on('end', () => {
      const signed = `${req.headers['x-signalbox-timestamp']}.${body}`;
      const expected = `sha256=${createHmac('sha256', WEBHOOK_SECRET).update(signed).digest('hex')}`;
      if (req.headers['x-signalbox-signature'] !== expected) {
        res.writeHead(401).end();
        return;
      }
      if (!receiver.accept) {
        res.writeHead(404).end();
        return;
      }
      receiver.delivered.push({ id: req.headers['x-signalbox-delivery'], event: JSON.parse(body) });
      res.writeHead(204).end();
    });
  });
  await new Promise((resolve) => receiver.server.listen(0, '127.0.0.1', resolve));
  receiver.url = `http://127.0.0.1:${receiver.server.address().port}/hook`;
  server = await startSignalbox({
    env: { ...env, SIGNALBOX_WEBHOOKS_URL: receiver.url, SIGNALBOX_WEBHOOKS_SECRET: WEBHOOK_SECRET },
  });
  url = server.url;
  browser = await launchChromium();
});

after(async () => {
  for (const c of connections) await c.stop().catch(() => {});
  if (browser) await browser.close();
  await server?.stop();
  receiver.server?.close();
  rmSync(dir, { recursive: true, force: true });
});

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

async function connect(username) {
  const accessToken = await token(username);
  const connection = new signalR.HubConnectionBuilder()
    .withUrl(`${url}/hubs/notifications`, {
      accessTokenFactory: () => accessToken,
      transport: signalR.HttpTransportType.WebSockets,
    })
    .configureLogging(signalR.LogLevel.None)
    .build();
  connection.on('Notification', () => {});
  connection.on('PresenceChanged', () => {});
  await connection.start();
  connections.push(connection);
  return connection;
}

async function signIn(page, username) {
  await page.goto(`${url}/admin`);
  await page.fill('#username', username);
  await page.fill('#password', PASSWORD);
  await page.click('button[type=submit]');
}

describe('admin dashboard', { skip }, () => {
  test('an admin sees live counts, users, groups and the rate chart', { timeout: 90_000 }, async () => {
    await connect('alice');
    await connect('bob');
    const backend = await token('backend');
    const root = await token('root');
    assert.equal((await api('PUT', '/api/admin/groups/ops/members/alice', { token: root })).status, 204);
    assert.equal((await api('PUT', '/api/admin/groups/ops/members/bob', { token: root })).status, 204);

    // Traffic while the dashboard collects samples (one every 5 s).
    let sent = 0;
    const traffic = setInterval(() => {
      sent += 1;
      api('POST', '/api/notifications', {
        token: backend,
        body: { users: ['alice', 'bob'], message: `tick ${sent}` },
      }).catch(() => {});
    }, 200);

    const page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
    try {
      await signIn(page, 'root');
      await page.waitForSelector('#dashboard:not([hidden])');
      await page.waitForFunction(() => document.getElementById('t-connections').textContent === '2');
      assert.equal(await page.textContent('#t-online'), '2');
      assert.equal(await page.textContent('#t-groups'), '1');
      assert.deepEqual(await page.$$eval('#online li', (lis) => lis.map((li) => li.textContent)), ['alice', 'bob']);
      assert.match(await page.textContent('#groups'), /ops\s*2/);
      // Two samples are needed for a rate: wait for the chart's lines and a non-zero rate.
      await page.waitForFunction(
        () => Number(document.querySelector('#chart svg')?.dataset.samples) >= 3
          && document.querySelectorAll('#chart polyline').length === 3
          && Number(document.getElementById('t-rate-out').textContent) > 0,
        null,
        { timeout: 40_000, polling: 500 },
      );
      clearInterval(traffic);

      // A user's connections, from the list of online users.
      await page.click('#online li:has-text("alice")');
      await page.waitForSelector('#connections button.danger');
      assert.equal(await page.$$eval('#connections tr', (rows) => rows.length), 1);

      mkdirSync(ARTIFACTS, { recursive: true });
      const file = path.join(ARTIFACTS, 'dashboard.png');
      await page.screenshot({ path: file, fullPage: true });
      assert.ok(existsSync(file));

      // Disconnect alice's connection from the dashboard.
      await page.click('#connections button.danger');
      await page.waitForFunction(() => document.getElementById('t-connections').textContent === '1', null, { timeout: 15_000 });
    } finally {
      clearInterval(traffic);
      await page.close();
    }
  });

  test('the webhook delivery log shows failed events and retries one', { timeout: 60_000 }, async () => {
    // Before this test, alice's and bob's connections went online: the receiver refused those
    // events (404 is final), so the log holds failed ones.
    const page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
    try {
      await signIn(page, 'root');
      await page.waitForSelector('#dashboard:not([hidden])');
      await page.waitForFunction(
        (receiverUrl) => document.getElementById('webhooks-state').textContent.includes(receiverUrl),
        receiver.url,
      );
      await page.selectOption('#webhooks-status', 'failed');
      const failed = '#webhooks tr:has(span.status-failed):has-text("user.online")';
      await page.waitForSelector(failed, { timeout: 20_000 });
      const user = await page.textContent(`${failed} >> td:nth-child(3)`);
      assert.match(user, /^(alice|bob)$/);

      receiver.accept = true;
      await page.click(`${failed} >> button:has-text("Retry")`);
      await page.selectOption('#webhooks-status', 'delivered');
      await page.waitForSelector(`#webhooks tr:has(span.status-delivered):has-text("${user}")`, { timeout: 20_000 });
      const delivered = receiver.delivered.find((d) => d.event.type === 'user.online' && d.event.user === user);
      assert.ok(delivered, `the receiver got user.online for ${user}: ${JSON.stringify(receiver.delivered)}`);
    } finally {
      await page.close();
    }
  });

  test('a user without the admin role is turned away', { timeout: 30_000 }, async () => {
    const page = await browser.newPage();
    try {
      await signIn(page, 'bob');
      await page.waitForFunction(() => document.getElementById('login-error').textContent.includes('admin role'));
      assert.equal(await page.isVisible('#dashboard'), false);
      await page.fill('#username', 'root');
      await page.fill('#password', 'wrong password');
      await page.click('button[type=submit]');
      await page.waitForFunction(() => document.getElementById('login-error').textContent.includes('Wrong'));
    } finally {
      await page.close();
    }
  });
});
