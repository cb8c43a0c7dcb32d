// The signalbox notification page: sign-in (password, or the external OpenID Connect provider:
// through the server when it holds a client secret, else authorization code + PKCE in the
// browser), the hub connection with token refresh, automatic reconnect and
// resynchronisation, toasts, the inbox, presence and the notify form. Vanilla JS, no build step;
// `signalR` comes from the bundled official client (/assets/signalr.min.js).
'use strict';

(() => {
  const HUB_URL = '/hubs/notifications';
  const REFRESH_KEY = 'signalbox.refresh_token';
  const PKCE_KEY = 'signalbox.oidc_pending';
  const USER_KEY = 'signalbox.user';
  /** Refresh on demand when the token expires within this (or a fifth of its lifetime). */
  const REFRESH_MARGIN_MS = 30_000;
  /** The scheduled refresh runs at this fraction of the token's lifetime. */
  const REFRESH_AT = 0.8;
  /** Automatic reconnect delays, then every 10 s; gives up (state "offline") after 2 minutes. */
  const RETRY_DELAYS = [0, 1_000, 2_000, 5_000];
  const RETRY_GIVE_UP_MS = 120_000;
  const TOAST_MS = 8_000;

  const $ = (id) => document.getElementById(id);

  const state = {
    config: null,
    /** {access, expiresAt, lifetime, claims} in memory; the refresh token in sessionStorage. */
    session: null,
    refreshTimer: 0,
    refreshing: null,
    connection: null,
    /** The live connection's token from its last negotiate (what the hub's refresh endpoint takes). */
    connectionToken: null,
    restartTimer: 0,
    inbox: new Map(),
    seen: new Set(),
    online: new Set(),
    presenceBuffer: null,
    stats: { refreshes: 0, hubRefreshes: 0, hubRefreshFailures: 0, resyncs: 0, reconnects: 0, toasts: 0 },
  };

  // A read-only view for tests and debugging (never the tokens).
  window.signalbox = {
    get state() { return $('conn-state').dataset.state; },
    get stats() { return { ...state.stats }; },
    get tokenExpiresAt() { return state.session?.expiresAt ?? null; },
    get accessTokenExp() { return state.session?.claims?.exp ?? null; },
    get inboxIds() { return [...state.inbox.keys()]; },
  };

  // ---------------------------------------------------------------- helpers

  function base64url(bytes) {
    let text = '';
    for (const b of new Uint8Array(bytes)) text += String.fromCharCode(b);
    return btoa(text).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
  }

  function randomString(bytes = 32) {
    return base64url(crypto.getRandomValues(new Uint8Array(bytes)));
  }

  /** The payload of a JWT (not verified: only for display and the permission check). */
  function jwtClaims(token) {
    try {
      const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
      const json = decodeURIComponent(
        Array.from(atob(part), (c) => `%${c.charCodeAt(0).toString(16).padStart(2, '0')}`).join(''),
      );
      return JSON.parse(json);
    } catch {
      return {};
    }
  }

  function claimValues(claims, name) {
    const value = claims[name];
    if (value === undefined || value === null) return [];
    return (Array.isArray(value) ? value : [value]).map(String);
  }

  async function readError(response) {
    try {
      const body = await response.json();
      return body.message || body.error_description || body.error || `HTTP ${response.status}`;
    } catch {
      return `HTTP ${response.status}`;
    }
  }

  function formatTime(iso) {
    const date = new Date(iso);
    if (Number.isNaN(date.getTime())) return iso;
    return date.toLocaleString(undefined, { dateStyle: 'short', timeStyle: 'short' });
  }

  // ---------------------------------------------------------------- tokens

  class SignedOut extends Error {}

  function setSession(tokens) {
    const lifetime = Math.max(1, Number(tokens.expires_in) || 60) * 1000;
    state.session = {
      access: tokens.access_token,
      lifetime,
      expiresAt: Date.now() + lifetime,
      claims: jwtClaims(tokens.access_token),
    };
    sessionStorage.setItem(REFRESH_KEY, tokens.refresh_token);
    scheduleRefresh(lifetime * REFRESH_AT);
  }

  function scheduleRefresh(delay) {
    clearTimeout(state.refreshTimer);
    state.refreshTimer = setTimeout(() => {
      refreshSession().catch(() => {});
    }, Math.max(0, delay));
  }

  /**
   * Trades the refresh token for new tokens. Single-flight: concurrent callers share one
   * request (the server revokes the whole session if a refresh token is presented twice).
   */
  function refreshSession() {
    if (state.refreshing) return state.refreshing;
    state.refreshing = (async () => {
      const refreshToken = sessionStorage.getItem(REFRESH_KEY);
      if (!refreshToken) throw new SignedOut('not signed in');
      let response;
      try {
        response = await fetch('/api/auth/refresh', {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ refresh_token: refreshToken }),
        });
      } catch (error) {
        // Server unreachable: keep the session, try again soon.
        scheduleRefresh(5_000);
        throw error;
      }
      if (response.status === 401 || response.status === 400) {
        const reason = await readError(response);
        signOut({ remote: false, message: `Your session ended (${reason}). Please sign in again.` });
        throw new SignedOut(reason);
      }
      if (!response.ok) {
        scheduleRefresh(5_000);
        throw new Error(await readError(response));
      }
      setSession(await response.json());
      state.stats.refreshes += 1;
      refreshHubAuthentication(state.session.access);
      return state.session.access;
    })().finally(() => {
      state.refreshing = null;
    });
    return state.refreshing;
  }

  /** A valid access token: refreshed first when it expires soon (the hub's accessTokenFactory). */
  async function accessToken() {
    const session = state.session;
    if (!session) throw new SignedOut('not signed in');
    const margin = Math.min(REFRESH_MARGIN_MS, session.lifetime / 5);
    if (Date.now() >= session.expiresAt - margin) return refreshSession();
    return session.access;
  }

  /** fetch with the access token; one refresh-and-retry on 401. */
  async function api(path, { method = 'GET', body } = {}) {
    const send = async (token) =>
      fetch(path, {
        method,
        headers: {
          authorization: `Bearer ${token}`,
          ...(body === undefined ? {} : { 'content-type': 'application/json' }),
        },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    let response = await send(await accessToken());
    if (response.status === 401) response = await send(await refreshSession());
    if (!response.ok) throw new Error(await readError(response));
    return response.status === 204 ? null : response.json();
  }

  // ---------------------------------------------------------------- sign-in

  function showSignIn(message = '') {
    $('app').hidden = true;
    $('account').hidden = true;
    $('signin').hidden = false;
    $('signin-error').textContent = message;
    setConnState('signed-out');
    $('username').focus();
  }

  async function passwordSignIn(event) {
    event.preventDefault();
    const username = $('username').value.trim();
    const password = $('password').value;
    $('signin-error').textContent = '';
    if (!username || !password) {
      $('signin-error').textContent = 'Enter your user name and password.';
      return;
    }
    $('login-submit').disabled = true;
    try {
      const response = await fetch('/api/auth/login', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ username, password }),
      });
      if (!response.ok) {
        $('signin-error').textContent =
          response.status === 401 ? 'Wrong user name or password.' : await readError(response);
        return;
      }
      $('password').value = '';
      await startSession(await response.json());
    } catch (error) {
      $('signin-error').textContent = `Cannot sign in: ${error.message}`;
    } finally {
      $('login-submit').disabled = false;
    }
  }

  /** What the server's `?signin_error=CODE` means (the server-side flow sends only a code). */
  const SIGNIN_ERRORS = {
    access_denied: 'Sign-in was cancelled at the provider.',
    provider_unavailable: 'The sign-in provider cannot be reached right now. Try again later.',
    provider_error: 'The sign-in provider refused the sign-in.',
    token_rejected: 'The sign-in provider did not accept the sign-in. Try again.',
    invalid_id_token: 'The sign-in could not be verified. Try again.',
    email_unverified: 'Your provider has not verified your e-mail address.',
    no_account: 'There is no account here for this identity. Ask an administrator.',
    internal: 'Something went wrong on the server. Try again later.',
  };

  /** Authorization code + PKCE (S256), step 1: off to the provider. */
  async function externalSignIn() {
    const provider = state.config?.oidc;
    if (!provider) return;
    if (provider.flow === 'server') {
      // The server holds the client secret and runs the flow; it sends the browser back to
      // `/?signin=oidc` (session ready) or `/?signin_error=CODE`.
      location.assign(provider.start_url);
      return;
    }
    const verifier = randomString(48);
    const challenge = base64url(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(verifier)));
    const pending = {
      verifier,
      state: randomString(),
      nonce: randomString(),
      redirectUri: `${location.origin}/`,
      issuer: provider.issuer,
    };
    sessionStorage.setItem(PKCE_KEY, JSON.stringify(pending));
    const url = new URL(provider.authorization_endpoint);
    url.search = new URLSearchParams({
      response_type: 'code',
      client_id: provider.client_id,
      redirect_uri: pending.redirectUri,
      scope: provider.scopes,
      state: pending.state,
      nonce: pending.nonce,
      code_challenge: challenge,
      code_challenge_method: 'S256',
    }).toString();
    location.assign(url.toString());
  }

  /** Step 2, back from the provider with ?code&state: exchange, check, trade for a session. */
  async function completeExternalSignIn(params) {
    // The code must not stay in the address bar or the history.
    history.replaceState(null, '', '/');
    const pending = JSON.parse(sessionStorage.getItem(PKCE_KEY) || 'null');
    sessionStorage.removeItem(PKCE_KEY);
    const provider = state.config?.oidc;
    if (params.get('error')) {
      throw new Error(params.get('error_description') || params.get('error'));
    }
    if (!pending || !provider || params.get('state') !== pending.state) {
      throw new Error('the sign-in response does not match a sign-in started here');
    }
    if (params.get('iss') && params.get('iss').replace(/\/$/, '') !== provider.issuer.replace(/\/$/, '')) {
      throw new Error('the sign-in response came from another issuer');
    }
    const response = await fetch(provider.token_endpoint, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({
        grant_type: 'authorization_code',
        code: params.get('code'),
        redirect_uri: pending.redirectUri,
        client_id: provider.client_id,
        code_verifier: pending.verifier,
      }),
    });
    if (!response.ok) throw new Error(`the provider refused the code: ${await readError(response)}`);
    const tokens = await response.json();
    if (!tokens.id_token) throw new Error('the provider returned no ID token');
    if (jwtClaims(tokens.id_token).nonce !== pending.nonce) throw new Error('the ID token does not match this sign-in');
    const session = await fetch('/api/auth/external', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ id_token: tokens.id_token }),
    });
    if (!session.ok) throw new Error(await readError(session));
    await startSession(await session.json());
  }

  /** Back from the server-side flow: collect the session its HttpOnly ticket cookie stands for. */
  async function completeServerSignIn() {
    history.replaceState(null, '', '/');
    const response = await fetch('/api/auth/oidc/session', { method: 'POST', credentials: 'same-origin' });
    if (!response.ok) throw new Error(await readError(response));
    await startSession(await response.json());
  }

  async function signOut({ remote = true, message = '' } = {}) {
    const refreshToken = sessionStorage.getItem(REFRESH_KEY);
    sessionStorage.removeItem(REFRESH_KEY);
    sessionStorage.removeItem(USER_KEY);
    clearTimeout(state.refreshTimer);
    clearTimeout(state.restartTimer);
    state.session = null;
    const connection = state.connection;
    state.connection = null;
    if (connection) await connection.stop().catch(() => {});
    if (remote && refreshToken) {
      await fetch('/api/auth/logout', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ refresh_token: refreshToken }),
      }).catch(() => {});
    }
    state.inbox.clear();
    state.seen.clear();
    state.online.clear();
    renderInbox();
    renderOnline();
    $('toasts').replaceChildren();
    showSignIn(message);
  }

  // ---------------------------------------------------------------- the signed-in page

  async function startSession(tokens) {
    setSession(tokens);
    await enterApp();
  }

  async function enterApp() {
    const claims = state.session.claims;
    const user = claims.sub || '';
    sessionStorage.setItem(USER_KEY, user);
    $('me').textContent = user;
    const config = state.config;
    const canNotify = claimValues(claims, config.permission_claim).includes(config.notify_permission);
    $('notify-section').hidden = !canNotify;
    $('signin').hidden = true;
    $('account').hidden = false;
    $('app').hidden = false;
    $('main').focus();
    await loadInbox();
    await connect();
  }

  function setConnState(value) {
    const labels = {
      'signed-out': 'Signed out',
      connecting: 'Connecting…',
      connected: 'Connected',
      reconnecting: 'Reconnecting…',
      offline: 'Offline',
    };
    $('conn-state').dataset.state = value;
    $('conn-label').textContent = labels[value] || value;
    $('reconnect').hidden = value !== 'offline';
  }

  /**
   * The bundled client's HTTP client, noting the connection token of every negotiate (the client
   * does not expose it; the hub's authentication refresh needs it). A reconnect negotiates again,
   * so the token follows the connection.
   */
  class NegotiateObserver extends signalR.DefaultHttpClient {
    constructor(onConnectionToken) {
      super(signalR.NullLogger.instance);
      this.onConnectionToken = onConnectionToken;
    }

    async send(request) {
      const response = await super.send(request);
      if (new URL(request.url, location.href).pathname.endsWith('/negotiate')) {
        let token = null;
        try {
          token = JSON.parse(response.content).connectionToken ?? null;
        } catch {
          // Not JSON: no token to refresh with.
        }
        this.onConnectionToken(token);
      }
      return response;
    }
  }

  /**
   * Hands a renewed access token to the live hub connection (`POST /hubs/notifications/refresh`,
   * the ASP.NET Core 11 authentication refresh), so that the server does not close it when the
   * previous token expires. Never throws: if the server refuses (`connection_not_found`,
   * `invalid_token`, `permission_change_rejected`), it closes the connection when the old token
   * expires and the automatic reconnect negotiates again with the new token.
   */
  async function refreshHubAuthentication(access) {
    const connection = state.connection;
    const id = state.connectionToken;
    if (!connection || !id || connection.state !== signalR.HubConnectionState.Connected) return;
    try {
      const response = await fetch(`${HUB_URL}/refresh?id=${encodeURIComponent(id)}`, {
        method: 'POST',
        headers: { authorization: `Bearer ${access}` },
      });
      if (response.ok) {
        state.stats.hubRefreshes += 1;
        return;
      }
      state.stats.hubRefreshFailures += 1;
      console.warn(`signalbox: hub authentication refresh refused (${await readError(response)}); reconnecting at expiry`);
    } catch (error) {
      state.stats.hubRefreshFailures += 1;
      console.warn(`signalbox: hub authentication refresh failed (${error.message}); reconnecting at expiry`);
    }
  }

  function buildConnection() {
    const httpClient = new NegotiateObserver((token) => {
      if (state.connection === connection) state.connectionToken = token;
    });
    const connection = new signalR.HubConnectionBuilder()
      .withUrl(HUB_URL, { accessTokenFactory: accessToken, httpClient })
      .withAutomaticReconnect({
        nextRetryDelayInMilliseconds: (context) => {
          if (context.elapsedMilliseconds > RETRY_GIVE_UP_MS) return null;
          return RETRY_DELAYS[context.previousRetryCount] ?? 10_000;
        },
      })
      .configureLogging(signalR.LogLevel.Warning)
      .build();
    connection.on('Notification', (notification) => receive(notification, { live: true }));
    connection.on('PresenceChanged', presenceChanged);
    connection.onreconnecting(() => {
      if (state.connection === connection) setConnState('reconnecting');
    });
    connection.onreconnected(() => {
      if (state.connection !== connection) return;
      state.stats.reconnects += 1;
      setConnState('connected');
      resync(connection);
    });
    connection.onclose(() => {
      if (state.connection !== connection) return;
      setConnState('offline');
      scheduleRestart(15_000);
    });
    return connection;
  }

  async function connect() {
    clearTimeout(state.restartTimer);
    if (!state.session) return;
    if (!state.connection) state.connection = buildConnection();
    const connection = state.connection;
    if (connection.state !== signalR.HubConnectionState.Disconnected) return;
    setConnState('connecting');
    try {
      await connection.start();
    } catch (error) {
      if (state.connection !== connection) return;
      setConnState('offline');
      if (!(error instanceof SignedOut)) scheduleRestart(5_000);
      return;
    }
    if (state.connection !== connection) return;
    setConnState('connected');
    await resync(connection);
  }

  function scheduleRestart(delay) {
    clearTimeout(state.restartTimer);
    if (!state.session) return;
    state.restartTimer = setTimeout(connect, delay);
  }

  /** After (re)connecting: what was missed, and who is online now. */
  async function resync(connection) {
    state.stats.resyncs += 1;
    await Promise.all([
      api('/api/notifications?unread=true&limit=100')
        .then((items) => {
          for (const item of items.slice().reverse()) receive(item, { live: false });
        })
        .catch(() => {}),
      refreshOnline(connection),
    ]);
  }

  async function loadInbox() {
    try {
      const items = await api('/api/notifications?limit=100');
      for (const item of items.slice().reverse()) receive(item, { live: false });
    } catch {
      // The hub's replay and the resync after connecting fill it in.
    }
  }

  // ---------------------------------------------------------------- inbox and toasts

  function receive(item, { live }) {
    if (!item || typeof item.id !== 'string') return;
    if (state.seen.has(item.id)) {
      // Already listed: a later listing may know it was read meanwhile.
      const known = state.inbox.get(item.id);
      if (known && item.read_at && !known.read_at) {
        known.read_at = item.read_at;
        renderInbox();
      }
      return;
    }
    state.seen.add(item.id);
    state.inbox.set(item.id, {
      id: item.id,
      from: item.from ?? null,
      message: String(item.message ?? ''),
      created_at: item.created_at,
      read_at: item.read_at ?? null,
    });
    renderInbox();
    if (!item.read_at && (live || !document.hidden)) toast(state.inbox.get(item.id));
  }

  function renderInbox() {
    const list = $('inbox');
    const items = [...state.inbox.values()].sort((a, b) =>
      a.created_at < b.created_at ? 1 : a.created_at > b.created_at ? -1 : 0,
    );
    list.replaceChildren(
      ...items.map((item) => {
        const li = document.createElement('li');
        li.dataset.id = item.id;
        li.className = item.read_at ? 'read' : 'unread';
        const body = document.createElement('div');
        body.className = 'body';
        const meta = document.createElement('div');
        meta.className = 'meta';
        const from = item.from ? `From ${item.from}` : 'System';
        meta.textContent = `${from} · ${formatTime(item.created_at)}${item.read_at ? '' : ' · unread'}`;
        const message = document.createElement('p');
        message.className = 'message';
        message.textContent = item.message;
        body.append(meta, message);
        li.append(body);
        if (!item.read_at) {
          const button = document.createElement('button');
          button.type = 'button';
          button.className = 'secondary small mark-read';
          button.textContent = 'Mark read';
          button.setAttribute('aria-label', `Mark read: ${item.message.slice(0, 60)}`);
          button.addEventListener('click', () => markRead(item.id, button));
          li.append(button);
        }
        return li;
      }),
    );
    const unread = items.filter((i) => !i.read_at).length;
    const badge = $('unread-count');
    badge.dataset.count = String(unread);
    badge.textContent = `${unread} unread`;
    $('inbox-empty').hidden = items.length > 0;
    document.title = unread ? `(${unread}) signalbox notifications` : 'signalbox notifications';
  }

  async function markRead(id, button) {
    button.disabled = true;
    try {
      await api(`/api/notifications/${encodeURIComponent(id)}/read`, { method: 'POST' });
      const item = state.inbox.get(id);
      if (item) item.read_at = new Date().toISOString();
      renderInbox();
      // Keep keyboard focus in the list.
      (document.querySelector('#inbox .mark-read') || $('inbox-title')).focus?.();
    } catch (error) {
      button.disabled = false;
      toastText(`Could not mark it read: ${error.message}`);
    }
  }

  function toast(item) {
    state.stats.toasts += 1;
    toastText(item.message, item.from ? `From ${item.from}` : 'Notification', item.id);
  }

  function toastText(text, title = '', id = '') {
    const box = document.createElement('div');
    box.className = 'toast';
    box.setAttribute('role', 'status');
    if (id) box.dataset.id = id;
    const body = document.createElement('div');
    if (title) {
      const strong = document.createElement('strong');
      strong.textContent = title;
      body.append(strong);
    }
    const p = document.createElement('p');
    p.textContent = text;
    body.append(p);
    const close = document.createElement('button');
    close.type = 'button';
    close.className = 'close';
    close.setAttribute('aria-label', 'Dismiss');
    close.textContent = '×';
    close.addEventListener('click', () => box.remove());
    box.append(body, close);
    const toasts = $('toasts');
    toasts.append(box);
    while (toasts.children.length > 4) toasts.firstElementChild.remove();
    setTimeout(() => box.remove(), TOAST_MS);
  }

  // ---------------------------------------------------------------- presence

  async function refreshOnline(connection) {
    // Events that arrive while the snapshot is on its way are applied after it.
    state.presenceBuffer = [];
    try {
      // Watching everyone's presence answers who is online now; changes follow as
      // PresenceChanged. A new connection (also after a reconnect) watches again.
      const users = await connection.invoke('WatchPresence', null);
      state.online = new Set(users);
    } catch {
      // The server does not push presence (presence.broadcast = off): a snapshot only.
      try {
        const users = await connection.invoke('GetOnlineUsers');
        state.online = new Set(users);
      } catch {
        // Keep what we had.
      }
    }
    const buffered = state.presenceBuffer || [];
    state.presenceBuffer = null;
    for (const event of buffered) presenceChanged(event);
    renderOnline();
  }

  function presenceChanged(event) {
    if (!event || typeof event.user !== 'string') return;
    if (state.presenceBuffer) {
      state.presenceBuffer.push(event);
      return;
    }
    if (event.online) state.online.add(event.user);
    else state.online.delete(event.user);
    renderOnline();
  }

  function renderOnline() {
    const users = [...state.online].sort();
    $('online-users').replaceChildren(
      ...users.map((user) => {
        const li = document.createElement('li');
        li.dataset.user = user;
        li.textContent = user;
        return li;
      }),
    );
    $('online-count').textContent = String(users.length);
    $('known-users').replaceChildren(
      ...users.map((user) => Object.assign(document.createElement('option'), { value: user })),
    );
  }

  // ---------------------------------------------------------------- notify

  async function sendNotification(event) {
    event.preventDefault();
    const user = $('notify-user').value.trim();
    const message = $('notify-message').value;
    const status = $('notify-status');
    if (!user || !message.trim()) {
      status.textContent = 'Enter a recipient and a message.';
      return;
    }
    const connection = state.connection;
    if (!connection || connection.state !== signalR.HubConnectionState.Connected) {
      status.textContent = 'Not connected; try again when the connection is back.';
      return;
    }
    $('notify-submit').disabled = true;
    try {
      await connection.invoke('SendNotification', user, message);
      status.textContent = `Sent to ${user}.`;
      $('notify-message').value = '';
    } catch (error) {
      status.textContent = `Not sent: ${String(error.message || error).replace(/^.*HubException: /, '')}`;
    } finally {
      $('notify-submit').disabled = false;
    }
  }

  // ---------------------------------------------------------------- start

  async function main() {
    $('login-form').addEventListener('submit', passwordSignIn);
    $('oidc-signin').addEventListener('click', () => {
      externalSignIn().catch((error) => {
        $('signin-error').textContent = `Cannot start the sign-in: ${error.message}`;
      });
    });
    $('signout').addEventListener('click', () => signOut());
    $('reconnect').addEventListener('click', connect);
    $('notify-form').addEventListener('submit', sendNotification);
    window.addEventListener('online', () => {
      if (!state.session) return;
      const current = state.connection?.state;
      if (current === signalR.HubConnectionState.Connected) setConnState('connected');
      else if (current === signalR.HubConnectionState.Reconnecting) setConnState('reconnecting');
      else if (!current || current === signalR.HubConnectionState.Disconnected) connect();
    });
    window.addEventListener('offline', () => {
      if (state.session) setConnState('offline');
    });
    document.addEventListener('visibilitychange', () => {
      // Timers sleep in background tabs: refresh as soon as the tab is back if it is due.
      if (!document.hidden && state.session) accessToken().catch(() => {});
    });

    try {
      const response = await fetch('/api/auth/config');
      state.config = await response.json();
    } catch {
      state.config = { oidc: null, permission_claim: 'permission', notify_permission: 'notify' };
    }
    if (state.config.oidc) {
      $('oidc-signin').textContent = `Sign in with ${state.config.oidc.name}`;
      $('external').hidden = false;
    }

    const params = new URLSearchParams(location.search);
    if (params.has('signin_error')) {
      history.replaceState(null, '', '/');
      const code = params.get('signin_error');
      showSignIn(`External sign-in failed: ${SIGNIN_ERRORS[code] || `error ${code}`}`);
      return;
    }
    if (params.get('signin') === 'oidc') {
      try {
        await completeServerSignIn();
      } catch (error) {
        showSignIn(`External sign-in failed: ${error.message}`);
      }
      return;
    }
    if (params.has('code') || params.has('error')) {
      try {
        await completeExternalSignIn(params);
      } catch (error) {
        showSignIn(`External sign-in failed: ${error.message}`);
      }
      return;
    }
    if (sessionStorage.getItem(REFRESH_KEY)) {
      try {
        await refreshSession();
        await enterApp();
        return;
      } catch (error) {
        if (!(error instanceof SignedOut)) {
          showSignIn(`Cannot reach the server: ${error.message}`);
          return;
        }
      }
    }
    showSignIn();
  }

  main();
})();
