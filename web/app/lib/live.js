// The live feed (GET /api/v1/live, docs/live.md) as the app uses it: one WebSocket per tab, the
// token offered as a subprotocol (never in the URL), reconnects with backoff, and `since` cursors
// so a reconnect replays what was missed: no gap, and no position handed on twice.

import { accessToken, refresh } from './session.js';

const PROTOCOL = 'pettracker.v1';
/** Close codes of docs/live.md. */
const TOKEN_EXPIRED = 4001;

/** A cursor (`t` + microseconds in hex) as a number that orders correctly. */
export function cursorValue(cursor) {
  if (typeof cursor !== 'string' || cursor[0] !== 't') return -1n;
  try {
    return BigInt(`0x${cursor.slice(1)}`);
  } catch {
    return -1n;
  }
}

export class LiveFeed {
  /**
   * onMessage(message) gets every server message, positions with `late: true` when older than
   * one already handed on; onState(state, detail) gets 'connecting', 'live', 'reconnecting'
   * (detail: seconds until the next try) and 'stopped'.
   */
  constructor({ onMessage, onState }) {
    this.onMessage = onMessage;
    this.onState = onState;
    this.cursors = new Map(); // tracker -> highest cursor seen (string)
    this.highest = new Map(); // tracker -> its value (BigInt)
    this.recent = new Map(); // tracker -> Set of recent cursors, to drop repeats
    this.ws = null;
    this.stopped = true;
    this.attempt = 0;
    this.retryTimer = null;
    this.countdown = null;
    this.state = 'stopped';
  }

  start() {
    if (!this.stopped) return;
    this.stopped = false;
    this.connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    clearInterval(this.countdown);
    if (this.ws) {
      this.ws.onclose = null;
      this.ws.close(1000, 'signed out');
      this.ws = null;
    }
    this.cursors.clear();
    this.highest.clear();
    this.recent.clear();
    this.setState('stopped');
  }

  setState(state, detail) {
    this.state = state;
    if (this.onState) this.onState(state, detail);
  }

  /** Subscribes to more trackers (a claimed collar) on the open connection. */
  subscribe(trackers) {
    this.send({ type: 'subscribe', trackers, since: this.sinceFor(trackers) });
  }

  send(message) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(message));
  }

  sinceFor(trackers) {
    const since = {};
    for (const [tracker, cursor] of this.cursors) {
      if (!trackers || trackers.includes(tracker)) since[tracker] = cursor;
    }
    return since;
  }

  async connect() {
    if (this.stopped) return;
    this.setState(this.attempt === 0 ? 'connecting' : 'reconnecting', 0);
    let token;
    try {
      token = await accessToken();
    } catch {
      // Signed out or the server is away: the session module handles the first, backoff the second.
      this.retry();
      return;
    }
    if (this.stopped) return;
    const scheme = window.location.protocol === 'https:' ? 'wss' : 'ws';
    const ws = new WebSocket(`${scheme}://${window.location.host}/api/v1/live`, [PROTOCOL, `bearer.${token}`]);
    this.ws = ws;
    ws.onopen = () => {
      this.attempt = 0;
      this.setState('live');
      // Every tracker the account may see, and for each one already known, what came after it.
      ws.send(JSON.stringify({ type: 'subscribe', since: this.sinceFor(null) }));
    };
    ws.onmessage = (event) => this.receive(event.data);
    ws.onerror = () => {};
    ws.onclose = (event) => {
      if (this.ws !== ws) return;
      this.ws = null;
      if (this.stopped) return;
      if (event.code === TOKEN_EXPIRED) {
        // The token this connection was opened with ran out: renew and come straight back.
        refresh().then(() => this.connect(), () => this.retry());
        return;
      }
      this.retry();
    };
  }

  retry() {
    if (this.stopped) return;
    this.attempt += 1;
    // 1, 2, 4 ... 30 s, with jitter so many tabs do not come back at once.
    const base = Math.min(30, 2 ** Math.min(this.attempt - 1, 5));
    let left = Math.max(1, Math.round(base * (0.5 + Math.random() * 0.5)));
    this.setState('reconnecting', left);
    clearInterval(this.countdown);
    this.countdown = setInterval(() => {
      left -= 1;
      if (left > 0) this.setState('reconnecting', left);
      else clearInterval(this.countdown);
    }, 1000);
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => {
      clearInterval(this.countdown);
      this.connect();
    }, left * 1000);
  }

  receive(data) {
    let message;
    try {
      message = JSON.parse(data);
    } catch {
      return;
    }
    const tracker = message.tracker;
    if (message.type === 'position') {
      const value = cursorValue(message.cursor);
      let seen = this.recent.get(tracker);
      if (!seen) {
        seen = new Set();
        this.recent.set(tracker, seen);
      }
      if (seen.has(message.cursor)) return;
      seen.add(message.cursor);
      if (seen.size > 256) seen.delete(seen.values().next().value);
      const highest = this.highest.get(tracker);
      if (highest !== undefined && value <= highest) {
        message.late = true;
      } else {
        this.highest.set(tracker, value);
        this.cursors.set(tracker, message.cursor);
      }
    } else if (message.type === 'snapshot' && message.cursor && !this.cursors.has(tracker)) {
      // The first time only: after a reconnect the positions replayed after our cursor come
      // next, in order, and they move the cursor on.
      this.highest.set(tracker, cursorValue(message.cursor));
      this.cursors.set(tracker, message.cursor);
    } else if (message.type === 'overflow') {
      // Events were dropped for this slow tab: subscribing again replays them from the cursors.
      this.send({ type: 'subscribe', since: this.sinceFor(null) });
    }
    this.onMessage(message);
  }
}
