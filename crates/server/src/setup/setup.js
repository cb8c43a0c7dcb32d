// The first-run setup page: reads the one-time token from the link's fragment (#token=…, never
// sent to the server in the URL), asks whether it is still good, and creates the first
// administrator. The answer is a session like a password login's; its tokens are kept in this
// tab's sessionStorage, where the admin dashboard (and the notification page) pick them up, and
// the tab moves on to the dashboard, signed in.
'use strict';

(() => {
  const ADMIN_TOKEN_KEY = 'signalbox-admin-token';
  const REFRESH_KEY = 'signalbox.refresh_token';
  const $ = (id) => document.getElementById(id);
  const token = new URLSearchParams(location.hash.slice(1)).get('token') || '';
  let minLength = 8;

  const CLOSED = {
    complete: ['Setup is complete', 'An administrator exists already, so this link no longer works. Sign in with your account.'],
    expired: ['This link has expired', 'Setup links are valid for one hour. Restart signalbox serve: it prints a new link while no administrator exists.'],
    invalid: ['This link is not valid', 'It may have been used already, or was copied incompletely. Restart signalbox serve for a new link, or sign in if setup is done.'],
  };

  function showClosed(status, extra) {
    const [title, text] = CLOSED[status] || CLOSED.invalid;
    $('checking').hidden = true;
    $('setup').hidden = true;
    $('closed').hidden = false;
    $('closed').dataset.status = status;
    $('closed-title').textContent = title;
    $('closed-text').textContent = extra ? `${text} (${extra})` : text;
  }

  async function readError(response) {
    try {
      const body = await response.json();
      return { code: body.error || '', message: body.message || `HTTP ${response.status}` };
    } catch {
      return { code: '', message: `HTTP ${response.status}` };
    }
  }

  const CODES = { setup_complete: 'complete', link_expired: 'expired', invalid_link: 'invalid' };

  async function check() {
    if (!token) {
      showClosed('invalid', 'the address has no token');
      return;
    }
    let response;
    try {
      response = await fetch('/api/setup/status', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ token }),
      });
    } catch (error) {
      $('checking').textContent = `Cannot reach the server: ${error.message}`;
      return;
    }
    if (!response.ok) {
      $('checking').textContent = `Cannot check the link: ${(await readError(response)).message}`;
      return;
    }
    const body = await response.json();
    minLength = body.min_password_length || minLength;
    if (body.status !== 'ready') {
      showClosed(body.status);
      return;
    }
    $('password-hint').textContent = `At least ${minLength} characters.`;
    $('checking').hidden = true;
    $('setup').hidden = false;
    $('username').focus();
  }

  async function submit(event) {
    event.preventDefault();
    const username = $('username').value.trim();
    const password = $('password').value;
    const error = $('setup-error');
    error.textContent = '';
    if (!username) {
      error.textContent = 'Choose a user name.';
      return;
    }
    if (password.length < minLength) {
      error.textContent = `The password must be at least ${minLength} characters long.`;
      return;
    }
    if (password !== $('password2').value) {
      error.textContent = 'The passwords differ.';
      return;
    }
    $('setup-submit').disabled = true;
    try {
      const response = await fetch('/api/setup', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ token, username, password }),
      });
      if (!response.ok) {
        const { code, message } = await readError(response);
        if (CODES[code]) showClosed(CODES[code]);
        else error.textContent = message;
        return;
      }
      const tokens = await response.json();
      sessionStorage.setItem(ADMIN_TOKEN_KEY, tokens.access_token);
      sessionStorage.setItem(REFRESH_KEY, tokens.refresh_token);
      $('password').value = '';
      $('password2').value = '';
      // Replace: the setup link must not stay in this tab's history.
      location.replace('/admin');
    } catch (failure) {
      error.textContent = `Cannot reach the server: ${failure.message}`;
    } finally {
      $('setup-submit').disabled = false;
    }
  }

  $('setup-form').addEventListener('submit', submit);
  check();
})();
