/**
 * The gateway's API as the UI uses it: JSON requests with the session's bearer token, signed playback URLs,
 * and what each error means to the person at the page.
 *
 * What it asks the gateway (all JSON; errors are {"error": {"code": "RECGATE_…", "message": "…"}}):
 *   GET  /api/calls?limit=50&cursor=…      the business's calls, newest first, paged
 *   GET  /api/calls/{sid}                   one call; polled while its recording downloads
 *   POST /api/calls/{sid}/playback-url      {url, expires_at}: a short-lived signed URL for <audio src>;
 *                                           ?channels=2 / ?format=wav for the dual-channel or WAV file
 *   GET  {signed url}                       the audio (audio/mpeg), with Range support for seeking
 *   GET  /api/calls/{sid}/peaks?points=N    {duration_s, points, peaks: [0..255]}: the waveform
 *   HEAD /api/calls/{sid}/download?channels=2  200 when the recording has a dual-channel file, 409 if mono
 */

export class ApiError extends Error {
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

/**
 * The API for one page. It holds no token of its own: it asks `token()` for the session's current one before
 * each request, and calls `onRejected()` when the gateway answers that very token with 401.
 */
export class ApiClient {
  #token;
  #onRejected;

  constructor({ token, onRejected }) {
    this.#token = token;
    this.#onRejected = onRejected;
  }

  /**
   * The token requests go out with now, null when logged out. Callers compare it across an await to drop
   * answers that belong to an earlier session.
   */
  get token() {
    return this.#token();
  }

  /** One page of the business's calls, newest first: {calls, next_cursor}. */
  listCalls(limit, cursor) {
    const query = new URLSearchParams({ limit: String(limit) });
    if (cursor !== null) query.set('cursor', cursor);
    return this.#request(`/api/calls?${query}`);
  }

  /** One call, with its recording's state and cache progress. */
  getCall(callSid) {
    return this.#request(`/api/calls/${encodeURIComponent(callSid)}`);
  }

  /**
   * A new signed playback URL for the call's recording: {url, expires_at}. `variant` ({channels, format})
   * asks for the dual-channel or WAV file instead; the URL is good for that variant only.
   */
  createPlaybackUrl(callSid, variant = {}) {
    const query = variantQuery(variant);
    return this.#request(`/api/calls/${encodeURIComponent(callSid)}/playback-url${query}`, {
      method: 'POST',
    });
  }

  /** The recording's waveform: {duration_s, points, peaks}, `points` integers 0..255. */
  getPeaks(callSid, points) {
    return this.#request(`/api/calls/${encodeURIComponent(callSid)}/peaks?points=${points}`);
  }

  /**
   * Whether the call's recording has a dual-channel file (Twilio keeps one only for recordings made
   * dual-channel): a HEAD of it answers 200, or 409 for a mono recording. Any other answer counts as no.
   */
  async hasDualChannel(callSid) {
    const token = this.#token();
    if (!token) return false;
    const response = await fetch(`/api/calls/${encodeURIComponent(callSid)}/download?channels=2`, {
      method: 'HEAD',
      headers: { Authorization: `Bearer ${token}` },
    });
    return response.ok;
  }

  /** A JSON request with the session's bearer token. A 401 ends the session. */
  async #request(path, init = {}) {
    const token = this.#token();
    if (!token) throw new ApiError(401, 'RECGATE_UNAUTHENTICATED', 'Not logged in', null);
    const response = await fetch(path, {
      ...init,
      headers: { Accept: 'application/json', Authorization: `Bearer ${token}` },
    });
    if (!response.ok) {
      const error = await apiErrorFrom(response);
      // Only if it is still the same session: a late answer to a previous login must not log the new one out.
      if (response.status === 401 && token === this.#token()) this.#onRejected();
      throw error;
    }
    return response.json();
  }
}

/**
 * Why a playback URL fails, or null if it works. `<audio>` cannot read error bodies, so this asks for one
 * byte with fetch: a success costs one byte, a failure returns the gateway's JSON error.
 */
export async function probe(url) {
  const response = await fetch(url, { headers: { Range: 'bytes=0-0' }, cache: 'no-store' });
  if (response.ok) {
    await response.body?.cancel();
    return null;
  }
  return apiErrorFrom(response);
}

/** `?channels=2&format=wav` and the like for a variant ({channels, format}); '' for the plain MP3. */
function variantQuery(variant) {
  const query = new URLSearchParams();
  if (variant.channels === 2) query.set('channels', '2');
  if (variant.format === 'wav') query.set('format', 'wav');
  const text = query.toString();
  return text === '' ? '' : `?${text}`;
}

/** The signed URL that makes the gateway answer with `Content-Disposition: attachment`. */
export function downloadUrl(url) {
  return `${url}&download=1`;
}

/**
 * What a failed playback means to the person at the page: {text, kind} for the message line ('bad', or
 * 'busy' for a wait), `state` when the failure reveals the recording's state, and for a recording Twilio is
 * still processing, `retryInS`: when asking again makes sense. Anything that is not an ApiError is taken
 * for a network failure.
 */
export function describeFailure(error) {
  const code = error instanceof ApiError ? error.code : 'NETWORK';
  switch (code) {
    case 'RECGATE_RECORDING_NOT_READY':
      return {
        state: 'processing',
        kind: 'busy',
        text: 'Still processing at Twilio — try again later.',
        retryInS: Math.max(2, Math.min(error.retryAfterS ?? 5, 30)),
      };
    case 'RECGATE_RECORDING_GONE':
      return {
        state: 'deleted',
        kind: 'bad',
        text: 'Deleted from Twilio — this recording no longer exists.',
      };
    case 'RECGATE_RECORDING_PURGED':
      return {
        state: 'purged',
        kind: 'bad',
        text: 'Purged by an operator — this recording is no longer served.',
      };
    case 'RECGATE_VARIANT_UNAVAILABLE':
      return { kind: 'bad', text: 'This recording was made in mono: there is no dual-channel file.' };
    case 'RECGATE_NOT_FOUND':
      return { state: 'absent', kind: 'bad', text: 'No recording for this call.' };
    case 'RECGATE_UPSTREAM_UNAVAILABLE':
    case 'RECGATE_UPSTREAM_TIMEOUT':
    case 'RECGATE_UPSTREAM_AUTH':
    case 'HTTP_502':
    case 'HTTP_504':
      return { kind: 'bad', text: 'Twilio is unavailable — try again.' };
    case 'RECGATE_LOCK_TIMEOUT':
      return { kind: 'busy', text: 'The recording is still being fetched — try again in a moment.' };
    case 'RECGATE_UNAUTHENTICATED':
      // The client has ended the session already when the session itself was rejected.
      return { kind: 'bad', text: 'Not authorized to play this recording.' };
    case 'NETWORK':
      return { kind: 'bad', text: 'The gateway could not be reached — check the connection and try again.' };
    default:
      return { kind: 'bad', text: `Playback failed: ${error.message}` };
  }
}
