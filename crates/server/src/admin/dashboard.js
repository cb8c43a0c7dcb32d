// The signalbox admin dashboard: signs in through /api/auth/login (or arrives signed in from the
// first-run setup page), then polls /api/admin/stats every 5 seconds and draws the rates as an
// inline SVG; adds users, opens or closes registration and sends test notifications.
// The access token is kept in this tab's sessionStorage; the refresh token under the same key as
// the notification page's, so that moving between the two in one tab keeps the session.
'use strict';

const POLL_MS = 5000;
const TOKEN_KEY = 'signalbox-admin-token';
const REFRESH_KEY = 'signalbox.refresh_token';
const $ = (id) => document.getElementById(id);
let token = sessionStorage.getItem(TOKEN_KEY);
let timer = null;
let refreshing = null;

function setTokens(tokens) {
  token = tokens.access_token;
  sessionStorage.setItem(TOKEN_KEY, token);
  if (tokens.refresh_token) sessionStorage.setItem(REFRESH_KEY, tokens.refresh_token);
}

/** The signed-in user (the token's `sub`; not verified, for display only). */
function me() {
  try {
    return JSON.parse(atob(token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/'))).sub || '';
  } catch {
    return '';
  }
}

/** Trades the refresh token for new tokens (one request at a time); false when it cannot. */
function refreshSession() {
  if (refreshing) return refreshing;
  refreshing = (async () => {
    const refreshToken = sessionStorage.getItem(REFRESH_KEY);
    if (!refreshToken) return false;
    try {
      const response = await fetch('/api/auth/refresh', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ refresh_token: refreshToken }),
      });
      if (!response.ok) return false;
      setTokens(await response.json());
      return true;
    } catch {
      return false;
    }
  })().finally(() => { refreshing = null; });
  return refreshing;
}

function text(tag, value, className) {
  const el = document.createElement(tag);
  el.textContent = value;
  if (className) el.className = className;
  return el;
}

function row(cells) {
  const tr = document.createElement('tr');
  for (const cell of cells) {
    const td = document.createElement('td');
    if (cell instanceof Node) td.appendChild(cell); else td.textContent = cell;
    tr.appendChild(td);
  }
  return tr;
}

async function api(method, path, body) {
  const send = () => fetch(path, {
    method,
    headers: {
      Authorization: `Bearer ${token}`,
      ...(body === undefined ? {} : { 'Content-Type': 'application/json' }),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let response = await send();
  if (response.status === 401 && await refreshSession()) response = await send();
  if (response.status === 401) { signOut('Your session expired; sign in again.'); throw new Error('unauthorized'); }
  if (response.status === 403) { signOut('This account does not have the admin role.'); throw new Error('forbidden'); }
  if (!response.ok) {
    let message = `${response.status}`;
    try { message = (await response.json()).message || message; } catch { /* not JSON */ }
    throw new Error(message);
  }
  return response.status === 204 ? null : response.json();
}

function signOut(message) {
  token = null;
  sessionStorage.removeItem(TOKEN_KEY);
  clearInterval(timer);
  $('dashboard').hidden = true;
  $('account').hidden = true;
  $('login').hidden = false;
  $('who').textContent = '';
  $('login-error').textContent = message || '';
}

function rate(value) {
  return value >= 100 ? value.toFixed(0) : value.toFixed(1);
}

function chart(samples) {
  const W = 800, H = 190, PAD = 28;
  const series = [
    ['received_per_second', 'var(--in)'],
    ['sent_per_second', 'var(--out)'],
    ['errors_per_second', 'var(--err)'],
  ];
  const max = Math.max(1, ...samples.flatMap((s) => series.map(([k]) => s[k])));
  const x = (i) => PAD + (samples.length <= 1 ? 0 : (i * (W - 2 * PAD)) / (samples.length - 1));
  const y = (v) => H - 18 - (v / max) * (H - 18 - 10);
  let svg = `<svg viewBox="0 0 ${W} ${H}" preserveAspectRatio="none" role="img" aria-label="message rates" data-samples="${samples.length}">`;
  for (let i = 0; i <= 4; i++) {
    const v = (max * i) / 4;
    svg += `<line x1="${PAD}" x2="${W - 8}" y1="${y(v)}" y2="${y(v)}" stroke="#e3e7ef"/>`;
    svg += `<text x="2" y="${y(v) + 4}" font-size="10" fill="#6b7385">${rate(v)}</text>`;
  }
  if (samples.length === 0) {
    svg += `<text x="${W / 2}" y="${H / 2}" text-anchor="middle" fill="#6b7385" font-size="13">collecting samples…</text>`;
  }
  const time = (ms) => new Date(ms).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });
  if (samples.length > 0) {
    svg += `<text x="${PAD}" y="${H - 2}" font-size="10" fill="#6b7385">${time(samples[0].at)}</text>`;
    svg += `<text x="${W - 8}" y="${H - 2}" font-size="10" fill="#6b7385" text-anchor="end">${time(samples[samples.length - 1].at)}</text>`;
  }
  for (const [key, color] of series) {
    if (samples.length === 0) continue;
    // One sample: a flat line across, so the first rate is visible at once.
    const shown = samples.length === 1 ? [samples[0], samples[0]] : samples;
    const xs = (i) => (samples.length === 1 ? PAD + i * (W - 2 * PAD) : x(i));
    const points = shown.map((s, i) => `${xs(i).toFixed(1)},${y(s[key]).toFixed(1)}`).join(' ');
    svg += `<polyline fill="none" stroke="${color}" stroke-width="2" stroke-linejoin="round" points="${points}"/>`;
    const last = shown.length - 1;
    svg += `<circle cx="${xs(last).toFixed(1)}" cy="${y(shown[last][key]).toFixed(1)}" r="3" fill="${color}"/>`;
  }
  svg += '</svg>';
  $('chart').innerHTML = svg;
}

function render(stats) {
  const last = stats.samples[stats.samples.length - 1];
  $('who').textContent = `node ${stats.node} · ${stats.database} · up ${Math.floor(stats.uptime_seconds / 60)} min`;
  $('t-connections').textContent = stats.connections_here;
  $('t-connections-total').textContent = stats.connections_total;
  $('t-online').textContent = stats.online_count;
  $('t-groups').textContent = stats.groups.length;
  $('t-rate-in').textContent = last ? rate(last.received_per_second) : '0';
  $('t-rate-out').textContent = last ? rate(last.sent_per_second) : '0';
  chart(stats.samples);

  const online = $('online');
  online.replaceChildren(...stats.online_users.map((u) => {
    const li = text('li', u);
    li.title = 'show connections';
    li.style.cursor = 'pointer';
    li.onclick = () => { $('user-name').value = u; showConnections(u); };
    return li;
  }));
  if (stats.online_users.length === 0) online.replaceChildren(text('li', 'nobody', 'muted'));

  $('groups').replaceChildren(...stats.groups.map((g) => row([g.name, String(g.members)])));
  $('errors').replaceChildren(...stats.recent_errors.slice().reverse().map((e) =>
    row([e.at.replace('T', ' ').replace(/\.\d+Z$/, 'Z'), text('span', e.level, `level-${e.level}`), e.target, e.message])));
  if (stats.recent_errors.length === 0) $('errors').replaceChildren(row(['', '', '', 'none']));

  const t = stats.totals;
  $('totals').textContent = `Since start: ${t.messages_received} messages received, ${t.messages_sent} sent, ` +
    `${t.invocations} invocations (${t.invocation_errors} failed), ${t.notifications_published} notifications stored, ` +
    `${t.auth_failures} refused tokens, ${t.queue_drops} frames dropped for slow clients.`;
}

async function refresh() {
  try {
    render(await api('GET', '/api/admin/stats'));
  } catch (error) {
    if (token) $('who').textContent = `refresh failed: ${error.message}`;
  }
}

async function showConnections(user) {
  const body = $('connections');
  try {
    const connections = await api('GET', `/api/admin/users/${encodeURIComponent(user)}/connections`);
    body.replaceChildren(...connections.map((c) => {
      const button = text('button', 'Disconnect', 'danger');
      button.onclick = async () => {
        await api('DELETE', `/api/admin/connections/${encodeURIComponent(c.connection_id)}`);
        setTimeout(() => { showConnections(user); refresh(); }, 300);
      };
      return row([c.connection_id, c.node, c.connected_at, c.user_agent || '', button]);
    }));
    if (connections.length === 0) body.replaceChildren(row(['', '', '', `${user} has no live connection`, '']));
  } catch (error) {
    body.replaceChildren(row(['', '', '', error.message, '']));
  }
}

function status(id, message, ok) {
  $(id).textContent = message;
  $(id).className = ok ? 'ok' : 'error';
}

async function loadUsers() {
  try {
    const users = await api('GET', '/api/admin/users');
    $('users').replaceChildren(...users.map((u) => {
      const tr = row([u.name, u.roles.join(', '), u.can_notify ? 'yes' : '', u.disabled ? 'disabled' : 'active',
        u.created_at.replace('T', ' ').replace(/\.\d+Z$/, 'Z')]);
      tr.dataset.user = u.name;
      return tr;
    }));
    $('user-names').replaceChildren(...users.map((u) => Object.assign(document.createElement('option'), { value: u.name })));
  } catch (error) {
    if (token) $('users').replaceChildren(row(['', '', '', '', error.message]));
  }
}

function showRegistration(reg) {
  const from = reg.source === 'dashboard' ? 'set on this dashboard' : 'set by the configuration, auth.registration';
  $('registration-state').textContent = `Registration is ${reg.enabled ? 'open' : 'closed'} (${from}).`;
  $('registration-state').dataset.enabled = String(reg.enabled);
  const button = $('registration-toggle');
  button.textContent = reg.enabled ? 'Close registration' : 'Open registration';
  button.dataset.next = String(!reg.enabled);
  button.disabled = false;
}

async function loadRegistration() {
  try {
    showRegistration(await api('GET', '/api/admin/registration'));
  } catch (error) {
    if (token) $('registration-state').textContent = error.message;
  }
}

function shortTime(iso) {
  return iso ? iso.replace('T', ' ').replace(/\.\d+Z$/, 'Z') : '';
}

async function loadWebhooks() {
  const body = $('webhooks');
  const status = $('webhooks-status').value;
  try {
    const log = await api('GET', `/api/admin/webhooks?limit=50${status ? `&status=${status}` : ''}`);
    $('webhooks-state').textContent = log.enabled
      ? `to ${log.url} · ${log.pending} pending`
      : `off (set webhooks.url) · ${log.pending} pending`;
    body.replaceChildren(...log.deliveries.map((d) => {
      let action = '';
      if (d.status === 'failed') {
        action = text('button', 'Retry', 'secondary');
        action.onclick = async () => {
          action.disabled = true;
          try { await api('POST', `/api/admin/webhooks/${encodeURIComponent(d.id)}/retry`); } catch (error) { action.title = error.message; }
          setTimeout(loadWebhooks, 500);
        };
      }
      const error = d.last_error || (d.last_status ? `status ${d.last_status}` : '');
      const tr = row([shortTime(d.created_at), d.event, d.user, text('span', d.status, `status-${d.status}`),
        String(d.attempts), error, action]);
      tr.title = `id ${d.id}${d.connection_id ? ` · connection ${d.connection_id}` : ''} · node ${d.node}` +
        (d.next_attempt_at ? ` · next attempt ${shortTime(d.next_attempt_at)}` : '');
      return tr;
    }));
    if (log.deliveries.length === 0) body.replaceChildren(row(['', '', '', '', '', 'none', '']));
  } catch (error) {
    if (token) body.replaceChildren(row(['', '', '', '', '', error.message, '']));
  }
}

function start() {
  $('login').hidden = true;
  $('dashboard').hidden = false;
  $('account').hidden = false;
  $('me').textContent = me();
  $('notify-user').placeholder = `${me() || 'you'} (yourself)`;
  refresh();
  loadUsers();
  loadRegistration();
  loadWebhooks();
  clearInterval(timer);
  timer = setInterval(() => { refresh(); loadWebhooks(); }, POLL_MS);
}

$('login-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  $('login-error').textContent = '';
  const response = await fetch('/api/auth/login', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ username: $('username').value, password: $('password').value }),
  });
  if (!response.ok) {
    let detail = `Sign-in failed (${response.status}).`;
    if (response.status === 401) detail = 'Wrong user name or password.';
    if (response.status === 429) {
      // Rate limited: the server says for how long.
      detail = await response.json().then((body) => body.message || detail, () => detail);
    }
    $('login-error').textContent = detail;
    return;
  }
  setTokens(await response.json());
  $('password').value = '';
  start();
});

$('signout').addEventListener('click', async () => {
  const refreshToken = sessionStorage.getItem(REFRESH_KEY);
  sessionStorage.removeItem(REFRESH_KEY);
  if (refreshToken) {
    await fetch('/api/auth/logout', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ refresh_token: refreshToken }),
    }).catch(() => {});
  }
  signOut('Signed out.');
});

$('new-user-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const username = $('new-user-name').value.trim();
  const notify = $('new-user-notify').checked;
  if (!username) return;
  $('new-user-submit').disabled = true;
  try {
    await api('POST', '/api/admin/users', { username, password: $('new-user-password').value, notify });
    status('new-user-result', `Created ${username}${notify ? ' (may send notifications)' : ''}.`, true);
    $('new-user-name').value = '';
    $('new-user-password').value = '';
    $('new-user-notify').checked = false;
    loadUsers();
  } catch (error) {
    status('new-user-result', `Not created: ${error.message}`, false);
  } finally {
    $('new-user-submit').disabled = false;
  }
});

$('registration-toggle').addEventListener('click', async () => {
  const button = $('registration-toggle');
  button.disabled = true;
  try {
    showRegistration(await api('PUT', '/api/admin/registration', { enabled: button.dataset.next === 'true' }));
  } catch (error) {
    $('registration-state').textContent = error.message;
    button.disabled = false;
  }
});

$('notify-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const user = $('notify-user').value.trim() || me();
  $('notify-submit').disabled = true;
  try {
    const sent = await api('POST', '/api/admin/notifications', { user, message: $('notify-message').value });
    status('notify-result', `Sent to ${sent.user}.`, true);
  } catch (error) {
    status('notify-result', `Not sent: ${error.message}`, false);
  } finally {
    $('notify-submit').disabled = false;
  }
});

$('webhooks-status').addEventListener('change', loadWebhooks);

$('user-form').addEventListener('submit', (event) => {
  event.preventDefault();
  showConnections($('user-name').value.trim());
});

async function groupChange(method) {
  const group = $('group-name').value.trim();
  const user = $('group-user').value.trim();
  if (!group || !user) return;
  try {
    await api(method, `/api/admin/groups/${encodeURIComponent(group)}/members/${encodeURIComponent(user)}`);
    $('group-result').textContent = method === 'PUT' ? `${user} added to ${group}` : `${user} removed from ${group}`;
    refresh();
  } catch (error) {
    $('group-result').textContent = error.message;
  }
}
$('group-form').addEventListener('submit', (event) => { event.preventDefault(); groupChange('PUT'); });
$('group-remove').addEventListener('click', () => groupChange('DELETE'));

if (token) start();
