/**
 * One call's player: a badge with the recording's cache state, a Play button that turns into a native
 * `<audio controls>` on first press (so a list of 50 calls fetches nothing until asked), a Download button
 * and a message line for what went wrong. Once playing, it draws the recording's waveform above the
 * controls (a click on it seeks there) and offers the WAV file, and the dual-channel file where the
 * recording has one. It keeps its signed playback URL fresh, recovers the `<audio>`
 * from an expired URL or a dropped connection, and polls the call to show download progress.
 */
import { ApiError, describeFailure, downloadUrl, probe } from './api.js';
import { callLabel, formatBytes } from './format.js';

/** A playback URL this close to expiry (or a quarter of its lifetime, if less) is replaced before use. */
const URL_MARGIN_MS = 30_000;
const POLL_INTERVAL_MS = 1000;
/** Polls that may see no download start before polling gives up (the player may simply not have asked yet). */
const MAX_IDLE_POLLS = 10;
/** Automatic retries while Twilio is still processing a recording (about two minutes at 5 s apart). */
const MAX_NOT_READY_RETRIES = 24;
/** Consecutive media errors recovered (expired URL, dropped connection) before giving up. */
const MAX_RECOVERIES = 3;
/** Peaks drawn: about one per two CSS pixels of a desktop row. */
const WAVEFORM_POINTS = 400;

/** The other files of a recording the UI offers, with what their buttons say. */
const VARIANTS = {
  wav: { variant: { format: 'wav' }, text: 'WAV', label: 'Download WAV of', suffix: '.wav' },
  dual: {
    variant: { channels: 2 },
    text: 'Dual channel',
    label: 'Download dual-channel recording of',
    suffix: '.dual.mp3',
  },
};

/** [css class, text] of a call's recording badge. */
function badgeFor(call) {
  const recording = call.recording ?? { state: 'unknown' };
  if (recording.purged_at || recording.state === 'purged') return ['purged', 'purged'];
  // What Twilio said by webhook: it made no recording (absent), or failed to make one.
  if (recording.upstream_status === 'failed' && recording.state !== 'available') {
    return ['failed', 'recording failed at Twilio'];
  }
  switch (recording.state) {
    case 'deleted':
      return recording.upstream_status === 'absent'
        ? ['absent', 'no recording']
        : ['deleted', 'deleted upstream'];
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

/**
 * Why a call's recording will not play, from what the gateway knows of it (Twilio's word by webhook first),
 * or null while it may play.
 */
function whyNoAudio(recording) {
  if (!recording) return null;
  if (recording.purged_at || recording.state === 'purged') {
    return 'Purged by an operator — this recording is no longer served.';
  }
  if (recording.state !== 'deleted' && recording.state !== 'absent') return null;
  if (recording.upstream_status === 'failed') return 'Recording failed at Twilio — this call has no audio.';
  if (recording.upstream_status === 'absent') return 'No recording — Twilio made none for this call.';
  return recording.state === 'deleted'
    ? 'Deleted from Twilio — this recording no longer exists.'
    : 'No recording for this call.';
}

/**
 * Built for one call with what it needs from the page: `api` (an ApiClient), `announce(text)` for the live
 * region, and `onFresh(call)`, given every fresh copy of the call it fetches, so the list can update this
 * player and any other playing the same recording. Its `element` goes in the call's row; `update(call)`
 * shows new call data; `destroy()` stops it for good.
 */
export class Player {
  #api;
  #announce;
  #onFresh;

  constructor(call, { api, announce, onFresh }) {
    this.#api = api;
    this.#announce = announce;
    this.#onFresh = onFresh;
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

    this.variantButtons = {};
    for (const [name, { variant, text, label }] of Object.entries(VARIANTS)) {
      const button = document.createElement('button');
      button.type = 'button';
      button.className = `button secondary download-${name}`;
      button.textContent = text;
      button.setAttribute('aria-label', `${label} ${this.label}`);
      button.hidden = true;
      button.addEventListener('click', () => this.downloadVariant(name, variant));
      this.variantButtons[name] = button;
    }

    /** The waveform (peaks 0..255 and the audio's length), drawn once the player is open. */
    this.peaks = null;
    this.extrasLoaded = false;
    this.waveform = document.createElement('canvas');
    this.waveform.className = 'waveform';
    this.waveform.hidden = true;
    // Mouse and touch seek here; keyboard users have the native controls' own seeking.
    this.waveform.setAttribute('aria-hidden', 'true');
    this.waveform.title = 'Click to seek';
    this.waveform.addEventListener('click', (event) => this.#seekTo(event));

    this.message = document.createElement('p');
    this.message.className = 'message';
    this.message.id = `message-${call.call_sid}`;
    // The Play button is described by the message line: a screen reader says why it failed or is disabled.
    this.playButton.setAttribute('aria-describedby', this.message.id);

    this.element.append(
      this.playButton,
      this.downloadButton,
      this.variantButtons.wav,
      this.variantButtons.dual,
      this.badge,
      this.message,
    );
    this.update(call);
  }

  update(call) {
    this.call = call;
    const [kind, text] = badgeFor(call);
    this.badge.className = `badge ${kind}`;
    this.badge.textContent = text;
    const recording = call.recording;
    if (recording?.state === 'deleted' || recording?.state === 'purged' || recording?.purged_at)
      this.#showGone(whyNoAudio(recording));
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
      this.#loadExtras();
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
      a.href = downloadUrl(url);
      a.download = `${this.call.call_sid}.mp3`;
      a.click();
      this.#startPolling();
    } catch (error) {
      this.#fail(error);
    } finally {
      this.downloadButton.disabled = this.gone;
    }
  }

  /** Downloads another file of the recording (WAV, dual channel) through a URL signed for it. */
  async downloadVariant(name, variant) {
    if (this.gone) return;
    const button = this.variantButtons[name];
    button.disabled = true;
    try {
      const { url } = await this.#api.createPlaybackUrl(this.call.call_sid, variant);
      const problem = await probe(url);
      if (problem) {
        this.#say(describeFailure(problem).text, 'bad', true);
        return;
      }
      const a = document.createElement('a');
      a.href = downloadUrl(url);
      a.download = `${this.call.call_sid}${VARIANTS[name].suffix}`;
      a.click();
    } catch (error) {
      this.#say(describeFailure(error).text, 'bad', true);
    } finally {
      button.disabled = this.gone;
    }
  }

  /**
   * Once per player, after it first plays: the waveform, and which other files the recording has (WAV
   * always; dual channel when a HEAD of it answers 200). Failures only leave them out.
   */
  #loadExtras() {
    if (this.extrasLoaded) return;
    this.extrasLoaded = true;
    const sid = this.call.call_sid;
    this.#api.getPeaks(sid, WAVEFORM_POINTS).then(
      (body) => {
        if (this.gone) return;
        this.peaks = body;
        this.waveform.hidden = false;
        if (!this.waveform.isConnected) this.element.prepend(this.waveform);
        this.#drawWaveform();
      },
      () => {},
    );
    this.variantButtons.wav.hidden = false;
    this.#api.hasDualChannel(sid).then(
      (dual) => {
        if (this.gone) return;
        this.variantButtons.dual.hidden = !dual;
        this.element.dataset.dualChannel = dual ? 'yes' : 'no';
      },
      () => {},
    );
  }

  /** Bars for the peaks, the part already played in the accent colour. */
  #drawWaveform() {
    const canvas = this.waveform;
    if (!this.peaks || canvas.hidden) return;
    const ratio = window.devicePixelRatio || 1;
    const width = Math.max(1, Math.round(canvas.clientWidth * ratio));
    const height = Math.max(1, Math.round(canvas.clientHeight * ratio));
    if (canvas.width !== width) canvas.width = width;
    if (canvas.height !== height) canvas.height = height;
    const context = canvas.getContext('2d');
    if (!context) return;
    const style = getComputedStyle(canvas);
    const played = style.getPropertyValue('--wave-played').trim() || '#2457c5';
    const rest = style.getPropertyValue('--wave-rest').trim() || '#9aa7bd';
    const { peaks } = this.peaks;
    const duration = this.#duration();
    const position = duration > 0 && this.audio ? this.audio.currentTime / duration : 0;
    context.clearRect(0, 0, width, height);
    const step = width / peaks.length;
    for (let i = 0; i < peaks.length; i++) {
      const bar = Math.max(1, (peaks[i] / 255) * height);
      context.fillStyle = (i + 0.5) / peaks.length <= position ? played : rest;
      context.fillRect(i * step, (height - bar) / 2, Math.max(1, step - ratio), bar);
    }
  }

  /** The audio's length: the player's once it knows it, else the waveform's. */
  #duration() {
    const known = this.audio?.duration;
    return Number.isFinite(known) && known > 0 ? known : (this.peaks?.duration_s ?? 0);
  }

  /** A click on the waveform: play from there. */
  #seekTo(event) {
    const duration = this.#duration();
    if (!this.audio || duration <= 0) return;
    const box = this.waveform.getBoundingClientRect();
    const fraction = Math.min(1, Math.max(0, (event.clientX - box.left) / box.width));
    this.audio.currentTime = fraction * duration;
    this.#drawWaveform();
    if (this.audio.paused) this.#play();
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
      this.urlRequest = this.#api
        .createPlaybackUrl(this.call.call_sid)
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
    audio.addEventListener('timeupdate', () => {
      if (audio === this.audio) this.#drawWaveform();
    });
    audio.src = url;
    this.audio = audio;
    this.playButton.hidden = true;
    this.element.prepend(audio);
    if (this.waveform.isConnected) this.element.prepend(this.waveform);
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
    const failure = describeFailure(error);
    if (failure.state) {
      this.update({ ...this.call, recording: { ...this.call.recording, state: failure.state } });
      // What Twilio said by webhook (failed, made none) explains more than the gateway's error does.
      failure.text = whyNoAudio(this.call.recording) ?? failure.text;
    }
    if (failure.retryInS !== undefined && this.notReadyRetries < MAX_NOT_READY_RETRIES) {
      this.notReadyRetries += 1;
      const seconds = failure.retryInS;
      this.#say(`Still processing — trying again in ${seconds} seconds.`, 'busy', this.notReadyRetries === 1);
      this.playButton.disabled = true;
      this.timers.retry = setTimeout(() => {
        this.playButton.disabled = false;
        this.start();
      }, seconds * 1000);
      return;
    }
    this.#say(failure.text, failure.kind, true);
  }

  /** The recording will never play here: the controls are disabled and the message line says why (`reason`). */
  #showGone(reason) {
    if (reason) this.#say(reason, 'bad', false);
    this.gone = true;
    this.#detachAudio();
    this.#stopPolling();
    clearTimeout(this.timers.retry);
    this.playButton.hidden = false;
    this.playButton.disabled = true;
    this.downloadButton.disabled = true;
    for (const button of Object.values(this.variantButtons)) button.disabled = true;
    this.waveform.hidden = true;
  }

  /** Sets the player's message; important ones also go to the page's live region. */
  #say(text, kind, important) {
    this.message.textContent = text;
    this.message.className = `message ${kind}`;
    if (important && text) this.#announce(`${text} (${this.label})`);
  }

  #stopPolling() {
    clearTimeout(this.timers.poll);
    this.timers.poll = 0;
  }

  /** Re-reads the call once, so the badge shows what the gateway knows after a failure. */
  #refreshSoon() {
    setTimeout(() => {
      if (this.gone || !this.#api.token) return;
      this.#api.getCall(this.call.call_sid).then(
        (fresh) => {
          if (!this.gone) this.#onFresh(fresh);
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
        const fresh = await this.#api.getCall(this.call.call_sid);
        // Stopped (failure, logout) while this request was out.
        if (this.gone || !this.#api.token || !this.timers.poll) return;
        this.#onFresh(fresh);
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
