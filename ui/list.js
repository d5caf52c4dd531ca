/**
 * The calls list: pages of the business's calls, newest first, one table row each with its details, its
 * parent/child links and a player; fresh call data from any player is passed on to every player it concerns.
 */
import { formatDirection, formatDuration, formatTime } from './format.js';
import { Player } from './player.js';

const PAGE_SIZE = 50;

const rowId = (callSid) => `call-${callSid}`;

function cell(label, content, className) {
  const td = document.createElement('td');
  // Shown as the line's label when rows become cards on narrow screens.
  td.dataset.label = label;
  if (className) td.className = className;
  td.append(content);
  return td;
}

/**
 * The list in the page's `rows` (a tbody), with its `empty` note and `loadMore` button; `api` is the
 * ApiClient and `announce(text)` writes to the live region. `load()` fetches the next page (the first after
 * `clear()`); `clear()` empties the list and stops its players.
 */
export class CallList {
  #elements;
  #api;
  #announce;
  /** call_sid → call JSON, in the order shown. */
  #calls = new Map();
  /** call_sid → Player. */
  #players = new Map();
  #nextCursor = null;
  #loading = false;

  constructor({ rows, empty, loadMore }, { api, announce }) {
    this.#elements = { rows, empty, loadMore };
    this.#api = api;
    this.#announce = announce;
    loadMore.addEventListener('click', () => this.load());
  }

  clear() {
    for (const player of this.#players.values()) player.destroy();
    this.#players.clear();
    this.#calls.clear();
    this.#nextCursor = null;
    this.#elements.rows.replaceChildren();
    this.#elements.empty.hidden = true;
    this.#elements.loadMore.hidden = true;
  }

  async load() {
    if (this.#loading) return;
    this.#loading = true;
    const { rows, empty, loadMore } = this.#elements;
    loadMore.disabled = true;
    const token = this.#api.token;
    const more = this.#nextCursor !== null;
    this.#announce(more ? 'Loading more calls…' : 'Loading calls…');
    try {
      const page = await this.#api.listCalls(PAGE_SIZE, this.#nextCursor);
      if (token !== this.#api.token) return;
      for (const call of page.calls) {
        if (this.#calls.has(call.call_sid)) continue;
        this.#calls.set(call.call_sid, call);
        rows.append(this.#renderRow(call));
      }
      this.#nextCursor = page.next_cursor ?? null;
      this.#renderAllLegs();
      empty.hidden = this.#calls.size > 0;
      loadMore.hidden = this.#nextCursor === null;
      const count = this.#calls.size;
      this.#announce(
        `${count} ${count === 1 ? 'call' : 'calls'} shown${this.#nextCursor ? '; more can be loaded' : ''}.`,
      );
    } catch (error) {
      if (token === this.#api.token && error.status !== 401) {
        this.#announce(`Could not load calls: ${error.message}`);
      }
    } finally {
      this.#loading = false;
      loadMore.disabled = false;
    }
  }

  /** Applies a fresh copy of a call from the API, and its cache state to every call playing the same recording. */
  update(fresh) {
    this.#calls.set(fresh.call_sid, fresh);
    this.#players.get(fresh.call_sid)?.update(fresh);
    const sid = fresh.recording?.recording_sid;
    if (!sid) return;
    for (const [callSid, player] of this.#players) {
      if (callSid !== fresh.call_sid && player.call.recording?.recording_sid === sid) {
        player.update({
          ...player.call,
          recording: { ...player.call.recording, cache: fresh.recording.cache },
        });
      }
    }
  }

  #renderRow(call) {
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

    const player = new Player(call, {
      api: this.#api,
      announce: this.#announce,
      onFresh: (fresh) => this.update(fresh),
    });
    this.#players.set(call.call_sid, player);

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
  #callLink(targetSid, text) {
    const a = document.createElement('a');
    a.href = `#${rowId(targetSid)}`;
    a.textContent = text;
    a.addEventListener('click', (event) => {
      event.preventDefault();
      const row = document.getElementById(rowId(targetSid));
      if (!row) {
        this.#announce('That call is not in the list yet. Load more calls to see it.');
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
  #renderAllLegs() {
    const children = new Map();
    for (const call of this.#calls.values()) {
      if (!call.parent_call_sid) continue;
      if (!children.has(call.parent_call_sid)) children.set(call.parent_call_sid, []);
      children.get(call.parent_call_sid).push(call);
    }
    for (const call of this.#calls.values()) {
      const ul = document.querySelector(`#${rowId(call.call_sid)} .legs`);
      const items = [];
      if (call.parent_call_sid) {
        const parent = this.#calls.get(call.parent_call_sid);
        const li = document.createElement('li');
        li.append(
          'leg of ',
          this.#callLink(
            call.parent_call_sid,
            parent ? `call from ${parent.from ?? 'unknown'}` : 'a parent call',
          ),
        );
        items.push(li);
      }
      for (const child of children.get(call.call_sid) ?? []) {
        const li = document.createElement('li');
        li.append('leg: ', this.#callLink(child.call_sid, `to ${child.to ?? 'unknown'}`));
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
}
