/**
 * The login session: which bearer token the page uses, where it comes from and when it ends.
 *
 * The page is opened as `/#token=<JWT>`. A URL fragment is never sent to any server; the token is moved to
 * sessionStorage (gone when the tab closes) and erased from the address bar at once.
 */

const TOKEN_KEY = 'recgate.token';

/** Takes a token from `#token=…`, then erases it from the address bar and history. */
export function takeFragmentToken() {
  const token = new URLSearchParams(location.hash.slice(1)).get('token');
  if (token === null) return null;
  history.replaceState(null, '', location.pathname + location.search);
  return token;
}

/** The token this tab logged in with earlier, if it is still open. */
export function storedToken() {
  return sessionStorage.getItem(TOKEN_KEY);
}

/**
 * The JWT's payload, decoded without verifying it: for display only (which business, when it expires).
 * The gateway checks the signature on every request; nothing here is a security decision.
 */
function decodeJwtPayload(token) {
  const part = token.split('.')[1];
  if (!part) return null;
  try {
    const base64 = part
      .replace(/-/g, '+')
      .replace(/_/g, '/')
      .padEnd(Math.ceil(part.length / 4) * 4, '=');
    const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
    const payload = JSON.parse(new TextDecoder().decode(bytes));
    return payload && typeof payload === 'object' ? payload : null;
  } catch {
    return null;
  }
}

/**
 * The current login. `login(token)` starts a session (or refuses the token and logs out) and then calls
 * `onLogin(businessId)`; `logout(message)` ends it, whatever the reason, and calls `onLogout(message)`. A
 * session also ends on its own when the token's `exp` passes.
 */
export class Session {
  /** The bearer token, null when logged out. */
  token = null;
  businessId = null;
  #logoutTimer = 0;
  #onLogin;
  #onLogout;

  constructor({ onLogin, onLogout }) {
    this.#onLogin = onLogin;
    this.#onLogout = onLogout;
  }

  login(token) {
    const payload = decodeJwtPayload(token);
    if (!payload || typeof payload.business_id !== 'string') {
      this.logout('That is not a valid access token.');
      return;
    }
    const expiresAt = typeof payload.exp === 'number' ? payload.exp * 1000 : null;
    if (expiresAt !== null && expiresAt <= Date.now()) {
      this.logout('This login link has expired. Ask for a new one.');
      return;
    }
    sessionStorage.setItem(TOKEN_KEY, token);
    this.token = token;
    this.businessId = payload.business_id;
    clearTimeout(this.#logoutTimer);
    if (expiresAt !== null) {
      const delay = Math.min(expiresAt - Date.now(), 2 ** 31 - 1);
      this.#logoutTimer = setTimeout(
        () => this.logout('Your session has expired. Open a new login link.'),
        delay,
      );
    }
    this.#onLogin(this.businessId);
  }

  logout(message = 'You are logged out.') {
    sessionStorage.removeItem(TOKEN_KEY);
    clearTimeout(this.#logoutTimer);
    this.token = null;
    this.businessId = null;
    this.#onLogout(message);
  }
}
