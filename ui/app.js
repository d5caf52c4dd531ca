/**
 * recgate web UI: the calls of one business, each with a player for its recording.
 *
 * Front-end stack, on purpose: one HTML page (index.html), one stylesheet (app.css) and this one ES module
 * of vanilla JavaScript. No framework, no build step, no dependencies, nothing loaded from a CDN. Copy the
 * three files into your own app and adapt them; every browser API used here has been standard for years.
 *
 * What it asks the gateway (all JSON; errors are {"error": {"code": "RECGATE_…", "message": "…"}}):
 *   GET  /api/calls?limit=50&cursor=…      the business's calls, newest first, paged
 *   GET  /api/calls/{sid}                   one call; polled while its recording downloads
 *   POST /api/calls/{sid}/playback-url      {url, expires_at}: a short-lived signed URL for <audio src>
 *   GET  {signed url}                       the audio (audio/mpeg), with Range support for seeking
 *
 * Login: the page is opened as `/#token=<JWT>`. A URL fragment is never sent to any server; the token is
 * moved to sessionStorage (gone when the tab closes) and erased from the address bar at once.
 *
 * The DOM is built with createElement/textContent only, never innerHTML, so no call data can inject markup.
 */

const PAGE_SIZE = 50;
const TOKEN_KEY = 'recgate.token';
/** A playback URL this close to expiry (or a quarter of its lifetime, if less) is replaced before use. */
const URL_MARGIN_MS = 30_000;
const POLL_INTERVAL_MS = 1000;
/** Polls that may see no download start before polling gives up (the player may simply not have asked yet). */
const MAX_IDLE_POLLS = 10;
/** Automatic retries while Twilio is still processing a recording (about two minutes at 5 s apart). */
const MAX_NOT_READY_RETRIES = 24;
/** Consecutive media errors recovered (expired URL, dropped connection) before giving up. */
const MAX_RECOVERIES = 3;

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

const session = {
  token: null,
  businessId: null,
  logoutTimer: 0,
};

const list = {
  /** call_sid → call JSON, in the order shown. */
  calls: new Map(),
  /** call_sid → Player. */
  players: new Map(),
  nextCursor: null,
  loading: false,
};

/* ----------------------------------------------------------------------------------------------------------
 * Formatting
 * -------------------------------------------------------------------------------------------------------- */

const dateTimeFormat = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });

function formatTime(iso) {
  const date = iso ? new Date(iso) : null;
  return date && !Number.isNaN(date.getTime()) ? dateTimeFormat.format(date) : 'unknown time';
}

function formatDuration(seconds) {
  if (typeof seconds !== 'number' || !Number.isFinite(seconds) || seconds < 0) return '—';
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, '0');
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${ss}` : `${m}:${ss}`;
}

function formatBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(0)} kB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

const DIRECTIONS = {
  inbound: 'Inbound',
  'outbound-api': 'Outbound',
  'outbound-dial': 'Outbound (dialed leg)',
};

function formatDirection(direction) {
  return direction ? (DIRECTIONS[direction] ?? direction) : '—';
}

/** How a call is named to screen readers and in messages: "call from A to B, 3 Mar 2025, 10:04". */
function callLabel(call) {
  return `call from ${call.from ?? 'unknown'} to ${call.to ?? 'unknown'}, ${formatTime(call.started_at)}`;
}

/** [css class, text] of a call's recording badge. */
function badgeFor(call) {
  const recording = call.recording ?? { state: 'unknown' };
  switch (recording.state) {
    case 'deleted':
      return ['deleted', 'deleted upstream'];
    case 'absent':
      return ['absent', 'no recording'];
    case 'processing':
      return ['processing', 'processing'];
  }
  const cache = recording.cache ?? { state: 'absent' };
  if (cache.state === 'cached') return ['cached', 'cached'];
  if (cache.state === 'downloading') {
    let text = 'downloading';
    if (cache.size) text = `downloading ${Math.min(100, Math.floor((100 * cache.received) / cache.size))}%`;
    else if (cache.received > 0) text = `downloading ${formatBytes(cache.received)}`;
    return ['downloading', text];
  }
  return ['idle', 'not yet fetched'];
}

/** Puts a message in the page's live region, which screen readers announce. */
function announce(text) {
  ui.status.textContent = text;
}

/* ----------------------------------------------------------------------------------------------------------
 * Session
 * -------------------------------------------------------------------------------------------------------- */

/** Takes a token from `#token=…`, then erases it from the address bar and history. */
function takeFragmentToken() {
  const token = new URLSearchParams(location.hash.slice(1)).get('token');
  if (token === null) return null;
  history.replaceState(null, '', location.pathname + location.search);
  return token;
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

function login(token) {
  const payload = decodeJwtPayload(token);
  if (!payload || typeof payload.business_id !== 'string') {
    logout('That is not a valid access token.');
    return;
  }
  const expiresAt = typeof payload.exp === 'number' ? payload.exp * 1000 : null;
  if (expiresAt !== null && expiresAt <= Date.now()) {
    logout('This login link has expired. Ask for a new one.');
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  session.token = token;
  session.businessId = payload.business_id;
  clearTimeout(session.logoutTimer);
  if (expiresAt !== null) {
    const delay = Math.min(expiresAt - Date.now(), 2 ** 31 - 1);
    session.logoutTimer = setTimeout(() => logout('Your session has expired. Open a new login link.'), delay);
  }
  ui.business.textContent = session.businessId;
  ui.session.hidden = false;
  ui.login.hidden = true;
  ui.calls.hidden = false;
  clearList();
  loadCalls();
}

function logout(message = 'You are logged out.') {
  sessionStorage.removeItem(TOKEN_KEY);
  clearTimeout(session.logoutTimer);
  session.token = null;
  session.businessId = null;
  clearList();
  ui.session.hidden = true;
  ui.calls.hidden = true;
  ui.login.hidden = false;
  announce(message);
}

/* ----------------------------------------------------------------------------------------------------------
 * API
 * -------------------------------------------------------------------------------------------------------- */

class ApiError extends Error {
  constructor(status, code, message, retryAfterS) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.retryAfterS = retryAfterS;
  }
}

async function apiErrorFrom(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    // Not our JSON (a proxy's error page, say); the status still tells enough.
  }
  const retryAfter = Number(response.headers.get('retry-after'));
  return new ApiError(
    response.status,
    body?.error?.code ?? `HTTP_${response.status}`,
    body?.error?.message ?? (response.statusText || `HTTP ${response.status}`),
    Number.isFinite(retryAfter) && retryAfter > 0 ? retryAfter : null,
  );
}

/** A JSON request with the session's bearer token. A 401 ends the session. */
async function api(path, init = {}) {
  const token = session.token;
  if (!token) throw new ApiError(401, 'RECGATE_UNAUTHENTICATED', 'Not logged in', null);
  const response = await fetch(path, {
    ...init,
    headers: { Accept: 'application/json', Authorization: `Bearer ${token}` },
  });
  if (!response.ok) {
    const error = await apiErrorFrom(response);
    // Only if it is still the same session: a late answer to a previous login must not log the new one out.
    if (response.status === 401 && token === session.token) {
      logout('Your session has expired or is no longer valid. Open a new login link.');
    }
    throw error;
  }
  return response.json();
}

/**
 * Why a playback URL fails, or null if it works. `<audio>` cannot read error bodies, so this asks for one
 * byte with fetch: a success costs one byte, a failure returns the gateway's JSON error.
 */
async function probe(url) {
  const response = await fetch(url, { headers: { Range: 'bytes=0-0' }, cache: 'no-store' });
  if (response.ok) {
    await response.body?.cancel();
    return null;
  }
  return apiErrorFrom(response);
}

/* ----------------------------------------------------------------------------------------------------------
 * Calls list
 * -------------------------------------------------------------------------------------------------------- */

function clearList() {
  for (const player of list.players.values()) player.destroy();
  list.players.clear();
  list.calls.clear();
  list.nextCursor = null;
  ui.rows.replaceChildren();
  ui.empty.hidden = true;
  ui.loadMore.hidden = true;
}

async function loadCalls() {
  if (list.loading) return;
  list.loading = true;
  ui.loadMore.disabled = true;
  const token = session.token;
  const more = list.nextCursor !== null;
  announce(more ? 'Loading more calls…' : 'Loading calls…');
  try {
    const query = new URLSearchParams({ limit: String(PAGE_SIZE) });
    if (more) query.set('cursor', list.nextCursor);
    const page = await api(`/api/calls?${query}`);
    if (token !== session.token) return;
    for (const call of page.calls) {
      if (list.calls.has(call.call_sid)) continue;
      list.calls.set(call.call_sid, call);
      ui.rows.append(renderRow(call));
    }
    list.nextCursor = page.next_cursor ?? null;
    renderAllLegs();
    ui.empty.hidden = list.calls.size > 0;
    ui.loadMore.hidden = list.nextCursor === null;
    const count = list.calls.size;
    announce(
      `${count} ${count === 1 ? 'call' : 'calls'} shown${list.nextCursor ? '; more can be loaded' : ''}.`,
    );
  } catch (error) {
    if (token === session.token && error.status !== 401) announce(`Could not load calls: ${error.message}`);
  } finally {
    list.loading = false;
    ui.loadMore.disabled = false;
  }
}

const rowId = (callSid) => `call-${callSid}`;

function cell(label, content, className) {
  const td = document.createElement('td');
  // Shown as the line's label when rows become cards on narrow screens.
  td.dataset.label = label;
  if (className) td.className = className;
  td.append(content);
  return td;
}

function renderRow(call) {
  const tr = document.createElement('tr');
  tr.id = rowId(call.call_sid);
  tr.dataset.callSid = call.call_sid;
  // Focusable from script only, so "leg of" links can move focus to the row they point at.
  tr.tabIndex = -1;

  const time = document.createElement('time');
  if (call.started_at) time.dateTime = call.started_at;
  time.textContent = formatTime(call.started_at);

  const duration = document.createElement('span');
  duration.className = 'num';
  duration.textContent = formatDuration(call.duration_s);

  const legs = document.createElement('ul');
  legs.className = 'legs';

  const player = new Player(call);
  list.players.set(call.call_sid, player);

  tr.append(
    cell('Time', time, 'time'),
    cell('From', call.from ?? '—', 'from'),
    cell('To', call.to ?? '—', 'to'),
    cell('Direction', formatDirection(call.direction), 'direction'),
    cell('Duration', duration, 'duration'),
    cell('Legs', legs, 'legs-cell'),
    cell('Recording', player.element, 'recording'),
  );
  return tr;
}

/** A link that moves to another call's row, or says why it cannot (not loaded yet). */
function callLink(targetSid, text) {
  const a = document.createElement('a');
  a.href = `#${rowId(targetSid)}`;
  a.textContent = text;
  a.addEventListener('click', (event) => {
    event.preventDefault();
    const row = document.getElementById(rowId(targetSid));
    if (!row) {
      announce('That call is not in the list yet. Load more calls to see it.');
      return;
    }
    row.scrollIntoView({ block: 'center' });
    row.focus({ preventScroll: true });
    row.classList.add('highlight');
    setTimeout(() => row.classList.remove('highlight'), 2000);
  });
  return a;
}

/** Fills every row's "Legs" cell: a child links to its parent, a parent lists its loaded child legs. */
function renderAllLegs() {
  const children = new Map();
  for (const call of list.calls.values()) {
    if (!call.parent_call_sid) continue;
    if (!children.has(call.parent_call_sid)) children.set(call.parent_call_sid, []);
    children.get(call.parent_call_sid).push(call);
  }
  for (const call of list.calls.values()) {
    const ul = document.querySelector(`#${rowId(call.call_sid)} .legs`);
    const items = [];
    if (call.parent_call_sid) {
      const parent = list.calls.get(call.parent_call_sid);
      const li = document.createElement('li');
      li.append(
        'leg of ',
        callLink(call.parent_call_sid, parent ? `call from ${parent.from ?? 'unknown'}` : 'a parent call'),
      );
      items.push(li);
    }
    for (const child of children.get(call.call_sid) ?? []) {
      const li = document.createElement('li');
      li.append('leg: ', callLink(child.call_sid, `to ${child.to ?? 'unknown'}`));
      items.push(li);
    }
    if (items.length === 0) {
      const li = document.createElement('li');
      li.className = 'none';
      li.textContent = '—';
      items.push(li);
    }
    ul.replaceChildren(...items);
    // Lets the phone layout drop the empty line.
    ul.parentElement.classList.toggle('empty', ul.querySelector('a') === null);
  }
}

/** Applies a fresh copy of a call from the API, and its cache state to every call playing the same recording. */
function updateCall(fresh) {
  list.calls.set(fresh.call_sid, fresh);
  list.players.get(fresh.call_sid)?.update(fresh);
  const sid = fresh.recording?.recording_sid;
  if (!sid) return;
  for (const [callSid, player] of list.players) {
    if (callSid !== fresh.call_sid && player.call.recording?.recording_sid === sid) {
      player.update({
        ...player.call,
        recording: { ...player.call.recording, cache: fresh.recording.cache },
      });
    }
  }
}

/* ----------------------------------------------------------------------------------------------------------
 * Player
 * -------------------------------------------------------------------------------------------------------- */

/**
 * One call's player: a badge with the cache state, a Play button that turns into a native
 * `<audio controls>` on first press (so a list of 50 calls fetches nothing until asked), a Download button
 * and a message line for what went wrong.
 */
class Player {
  constructor(call) {
    this.call = call;
    this.label = callLabel(call);
    /** The current signed URL and when it expires (ms). */
    this.url = null;
    this.urlExpiresAt = 0;
    this.urlMarginMs = URL_MARGIN_MS;
    this.urlRequest = null;
    this.audio = null;
    this.busy = false;
    this.gone = false;
    this.notReadyRetries = 0;
    this.recoveries = 0;
    this.timers = { refresh: 0, poll: 0, retry: 0 };
    this.idlePolls = 0;

    this.element = document.createElement('div');
    this.element.className = 'player';

    this.badge = document.createElement('span');
    this.badge.className = 'badge';

    this.playButton = document.createElement('button');
    this.playButton.type = 'button';
    this.playButton.className = 'button play';
    this.playButton.textContent = 'Play';
    this.playButton.setAttribute('aria-label', `Play recording of ${this.label}`);
    this.playButton.addEventListener('click', () => this.start());

    this.downloadButton = document.createElement('button');
    this.downloadButton.type = 'button';
    this.downloadButton.className = 'button secondary download';
    this.downloadButton.textContent = 'Download';
    this.downloadButton.setAttribute('aria-label', `Download recording of ${this.label}`);
    this.downloadButton.addEventListener('click', () => this.download());

    this.message = document.createElement('p');
    this.message.className = 'message';

    this.element.append(this.playButton, this.downloadButton, this.badge, this.message);
    this.update(call);
  }

  update(call) {
    this.call = call;
    const [kind, text] = badgeFor(call);
    this.badge.className = `badge ${kind}`;
    this.badge.textContent = text;
    if (call.recording?.state === 'deleted') this.#showGone();
  }

  /**
   * Play pressed: get a URL, check it with one byte, then put an <audio> in place of the button and start it.
   * The check comes first because an <audio> cannot say why it failed; it costs no extra upstream request
   * (the gateway downloads each recording once, whoever asks). Repeated presses are ignored.
   */
  async start() {
    if (this.busy || this.gone) return;
    this.busy = true;
    this.playButton.disabled = true;
    this.playButton.setAttribute('aria-busy', 'true');
    clearTimeout(this.timers.retry);
    this.#say('Loading…', 'busy', false);
    this.#startPolling();
    try {
      let url = await this.#playbackUrl();
      let problem = await probe(url);
      if (problem?.status === 401) {
        url = await this.#playbackUrl({ fresh: true });
        problem = await probe(url);
      }
      if (problem) {
        this.#fail(problem);
        return;
      }
      this.#attachAudio(url);
      this.#play();
    } catch (error) {
      this.#fail(error);
    } finally {
      this.busy = false;
      this.playButton.removeAttribute('aria-busy');
    }
  }

  async download() {
    if (this.gone) return;
    this.downloadButton.disabled = true;
    try {
      const url = await this.#playbackUrl();
      // Checked first: following a failing link would save the error as an .mp3 or leave the page.
      const problem = await probe(url);
      if (problem) {
        this.#fail(problem);
        return;
      }
      const a = document.createElement('a');
      a.href = `${url}&download=1`;
      a.download = `${this.call.call_sid}.mp3`;
      a.click();
      this.#startPolling();
    } catch (error) {
      this.#fail(error);
    } finally {
      this.downloadButton.disabled = this.gone;
    }
  }

  destroy() {
    clearTimeout(this.timers.refresh);
    clearTimeout(this.timers.retry);
    this.#stopPolling();
    this.#detachAudio();
    this.gone = true;
  }

  /** A signed URL not about to expire; concurrent callers share one request. */
  async #playbackUrl({ fresh = false } = {}) {
    if (!fresh && this.url && this.urlExpiresAt - Date.now() > this.urlMarginMs) return this.url;
    if (!this.urlRequest) {
      this.urlRequest = api(`/api/calls/${encodeURIComponent(this.call.call_sid)}/playback-url`, {
        method: 'POST',
      })
        .then((body) => {
          this.url = body.url;
          this.urlExpiresAt = Date.parse(body.expires_at);
          this.urlMarginMs = Math.min(URL_MARGIN_MS, (this.urlExpiresAt - Date.now()) / 4);
          this.#scheduleRefresh();
          return this.url;
        })
        .finally(() => {
          this.urlRequest = null;
        });
    }
    return this.urlRequest;
  }

  /**
   * Replaces the URL shortly before it expires. A paused player gets the new URL at once (keeping its
   * position); a playing one keeps streaming its open response, and if a later seek meets the expired URL,
   * the media error handler recovers with a fresh one.
   */
  #scheduleRefresh() {
    clearTimeout(this.timers.refresh);
    const delay = this.urlExpiresAt - Date.now() - this.urlMarginMs;
    if (!Number.isFinite(delay)) return;
    this.timers.refresh = setTimeout(
      async () => {
        if (!this.audio || this.gone) return;
        try {
          const url = await this.#playbackUrl({ fresh: true });
          if (this.audio?.paused) this.#swapSource(url, this.audio.currentTime, false);
        } catch {
          // The next play or seek asks again and reports the problem.
        }
      },
      Math.max(delay, 500),
    );
  }

  #attachAudio(url) {
    const audio = document.createElement('audio');
    audio.controls = true;
    audio.preload = 'none';
    audio.setAttribute('aria-label', `Recording of ${this.label}`);
    // Events of an <audio> already replaced (after an error or a URL refresh) are ignored.
    audio.addEventListener('playing', () => {
      if (audio !== this.audio) return;
      this.recoveries = 0;
      this.#say('', '', false);
    });
    audio.addEventListener('error', () => {
      if (audio === this.audio) this.#onMediaError();
    });
    audio.src = url;
    this.audio = audio;
    this.playButton.hidden = true;
    this.element.prepend(audio);
    // Keyboard users continue on the native controls (Space pauses, arrow keys seek).
    if (this.element.contains(document.activeElement) || document.activeElement === document.body)
      audio.focus();
  }

  #detachAudio() {
    if (!this.audio) return;
    this.audio.pause();
    this.audio.removeAttribute('src');
    this.audio.load();
    this.audio.remove();
    this.audio = null;
  }

  #play() {
    this.audio?.play().catch((error) => {
      // AbortError: the source changed under a pending play(); the new source's play() takes over.
      if (error.name === 'NotAllowedError') this.#say('Press play on the player to start.', '', true);
    });
  }

  #swapSource(url, position, resume) {
    const audio = this.audio;
    if (!audio) return;
    if (position > 0) {
      audio.addEventListener(
        'loadedmetadata',
        () => {
          audio.currentTime = position;
        },
        { once: true },
      );
      // Without metadata the position cannot be restored, so a paused player loads just that.
      if (!resume) audio.preload = 'metadata';
    }
    audio.src = url;
    if (resume) this.#play();
  }

  /** The <audio> failed: find out why, recover from an expired URL or a dropped connection, else explain. */
  async #onMediaError() {
    const audio = this.audio;
    if (!audio || this.busy) return;
    this.busy = true;
    const position = audio.currentTime;
    try {
      let problem = await probe(this.url);
      if (problem?.status === 401) {
        const url = await this.#playbackUrl({ fresh: true });
        problem = await probe(url);
      }
      if (problem) {
        this.#fail(problem);
      } else if (this.recoveries < MAX_RECOVERIES) {
        this.recoveries += 1;
        this.#swapSource(this.url, position, true);
      } else {
        this.#fail(new ApiError(0, 'MEDIA', 'The browser could not play this recording.', null));
      }
    } catch (error) {
      this.#fail(error);
    } finally {
      this.busy = false;
    }
  }

  /** Shows the message a failure deserves, and retries on its own while the recording is processing. */
  #fail(error) {
    this.#detachAudio();
    this.playButton.hidden = false;
    this.playButton.disabled = false;
    this.#stopPolling();
    this.#refreshSoon();
    const code = error instanceof ApiError ? error.code : 'NETWORK';
    switch (code) {
      case 'RECGATE_RECORDING_NOT_READY': {
        this.update({ ...this.call, recording: { ...this.call.recording, state: 'processing' } });
        if (this.notReadyRetries >= MAX_NOT_READY_RETRIES) {
          this.#say('Still processing at Twilio — try again later.', 'busy', true);
          return;
        }
        this.notReadyRetries += 1;
        const seconds = Math.max(2, Math.min(error.retryAfterS ?? 5, 30));
        this.#say(
          `Still processing — trying again in ${seconds} seconds.`,
          'busy',
          this.notReadyRetries === 1,
        );
        this.playButton.disabled = true;
        this.timers.retry = setTimeout(() => {
          this.playButton.disabled = false;
          this.start();
        }, seconds * 1000);
        return;
      }
      case 'RECGATE_RECORDING_GONE':
        this.update({ ...this.call, recording: { ...this.call.recording, state: 'deleted' } });
        this.#say('Deleted from Twilio — this recording no longer exists.', 'bad', true);
        return;
      case 'RECGATE_NOT_FOUND':
        this.update({ ...this.call, recording: { ...this.call.recording, state: 'absent' } });
        this.#say('No recording for this call.', 'bad', true);
        return;
      case 'RECGATE_UPSTREAM_UNAVAILABLE':
      case 'RECGATE_UPSTREAM_TIMEOUT':
      case 'RECGATE_UPSTREAM_AUTH':
      case 'HTTP_502':
      case 'HTTP_504':
        this.#say('Twilio is unavailable — try again.', 'bad', true);
        return;
      case 'RECGATE_LOCK_TIMEOUT':
        this.#say('The recording is still being fetched — try again in a moment.', 'busy', true);
        return;
      case 'RECGATE_UNAUTHENTICATED':
        // api() has logged out already when the session itself was rejected.
        this.#say('Not authorized to play this recording.', 'bad', true);
        return;
      case 'NETWORK':
        this.#say('The gateway could not be reached — check the connection and try again.', 'bad', true);
        return;
      default:
        this.#say(`Playback failed: ${error.message}`, 'bad', true);
    }
  }

  #showGone() {
    this.gone = true;
    this.#detachAudio();
    this.#stopPolling();
    clearTimeout(this.timers.retry);
    this.playButton.hidden = false;
    this.playButton.disabled = true;
    this.downloadButton.disabled = true;
  }

  /** Sets the player's message; important ones also go to the page's live region. */
  #say(text, kind, important) {
    this.message.textContent = text;
    this.message.className = `message ${kind}`;
    if (important && text) announce(`${text} (${this.label})`);
  }

  #stopPolling() {
    clearTimeout(this.timers.poll);
    this.timers.poll = 0;
  }

  /** Re-reads the call once, so the badge shows what the gateway knows after a failure. */
  #refreshSoon() {
    setTimeout(() => {
      if (this.gone || !session.token) return;
      api(`/api/calls/${encodeURIComponent(this.call.call_sid)}`).then(
        (fresh) => {
          if (!this.gone) updateCall(fresh);
        },
        () => {},
      );
    }, 250);
  }

  /** Polls the call about once a second until its recording is cached, to show download progress. */
  #startPolling() {
    if (this.timers.poll) return;
    this.idlePolls = 0;
    const tick = async () => {
      try {
        const fresh = await api(`/api/calls/${encodeURIComponent(this.call.call_sid)}`);
        // Stopped (failure, logout) while this request was out.
        if (this.gone || !session.token || !this.timers.poll) return;
        updateCall(fresh);
        const cache = fresh.recording?.cache?.state;
        this.idlePolls = cache === 'downloading' ? 0 : this.idlePolls + 1;
        const done =
          cache === 'cached' || fresh.recording?.state === 'deleted' || this.idlePolls > MAX_IDLE_POLLS;
        if (done) {
          this.timers.poll = 0;
          return;
        }
      } catch {
        this.timers.poll = 0;
        return;
      }
      this.timers.poll = setTimeout(tick, POLL_INTERVAL_MS);
    };
    this.timers.poll = setTimeout(tick, POLL_INTERVAL_MS / 2);
  }
}

/* ----------------------------------------------------------------------------------------------------------
 * Start
 * -------------------------------------------------------------------------------------------------------- */

ui.logout.addEventListener('click', () => logout());
ui.loadMore.addEventListener('click', () => loadCalls());
ui.loginForm.addEventListener('submit', (event) => {
  event.preventDefault();
  const token = ui.tokenInput.value.trim();
  ui.tokenInput.value = '';
  login(token);
});
// A login link opened in a tab that already shows the UI changes only the fragment.
window.addEventListener('hashchange', () => {
  const token = takeFragmentToken();
  if (token) login(token);
});

{
  const token = takeFragmentToken() ?? sessionStorage.getItem(TOKEN_KEY);
  if (token) login(token);
  else logout('Open your login link to see your calls.');
}
