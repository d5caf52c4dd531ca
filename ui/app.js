/**
 * recgate web UI: the calls of one business, each with a player for its recording. This is the entry module
 * index.html loads: it finds the page's elements, builds the parts below and wires them to each other and to
 * the page's controls, then logs in with the link's token or asks for one.
 *
 * Front-end stack, on purpose: one HTML page (index.html), one stylesheet (app.css) and a few ES modules
 * of vanilla JavaScript, loaded by the browser as they are. No framework, no build step, no
 * dependencies, nothing loaded from a CDN. Copy the files into your own app and adapt them; every browser
 * API used here has been standard for years.
 *
 *   app.js      this entry: wiring and start-up
 *   session.js  the login: token from the `#token=` link or sessionStorage, expiry
 *   api.js      the gateway's API: bearer-token requests, playback URLs, error → message
 *   list.js     the calls list: paging, rows, parent/child links
 *   player.js   one call's player: <audio>, playback URL renewal, cache-state badge, messages
 *   format.js   times, durations, sizes and call names as text
 *
 * Each module imports what it builds on and is handed, as constructor arguments, what it shares with the
 * others (the API client, the live region, callbacks); there are no shared globals. The DOM is built with
 * createElement/textContent only, never innerHTML, so no call data can inject markup.
 */
import { ApiClient } from './api.js';
import { CallList } from './list.js';
import { Session, storedToken, takeFragmentToken } from './session.js';

const byId = (id) => document.getElementById(id);
const ui = {
  status: byId('status'),
  session: byId('session'),
  business: byId('business'),
  logout: byId('logout'),
  login: byId('login'),
  loginForm: byId('login-form'),
  tokenInput: byId('token-input'),
  calls: byId('calls'),
  rows: byId('call-rows'),
  empty: byId('empty'),
  loadMore: byId('load-more'),
};

/** Puts a message in the page's live region, which screen readers announce. */
function announce(text) {
  ui.status.textContent = text;
}

const session = new Session({
  onLogin(businessId) {
    ui.business.textContent = businessId;
    ui.session.hidden = false;
    ui.login.hidden = true;
    ui.calls.hidden = false;
    list.clear();
    list.load();
  },
  onLogout(message) {
    list.clear();
    ui.session.hidden = true;
    ui.calls.hidden = true;
    ui.login.hidden = false;
    announce(message);
  },
});

const api = new ApiClient({
  token: () => session.token,
  onRejected: () => session.logout('Your session has expired or is no longer valid. Open a new login link.'),
});

const list = new CallList({ rows: ui.rows, empty: ui.empty, loadMore: ui.loadMore }, { api, announce });

ui.logout.addEventListener('click', () => session.logout());
ui.loginForm.addEventListener('submit', (event) => {
  event.preventDefault();
  const token = ui.tokenInput.value.trim();
  ui.tokenInput.value = '';
  session.login(token);
});
// A login link opened in a tab that already shows the UI changes only the fragment.
window.addEventListener('hashchange', () => {
  const token = takeFragmentToken();
  if (token) session.login(token);
});

{
  const token = takeFragmentToken() ?? storedToken();
  if (token) session.login(token);
  else session.logout('Open your login link to see your calls.');
}
