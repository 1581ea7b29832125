// History: a pet's track over a range of days, played back with speed and a time slider, its
// daily summary, and exports. A couple of days come as every fix; longer ranges are downsampled
// by the server (`bucket`, then `simplify`), so 30 days of a collar reporting every 5 s arrive as
// a few thousand points. The track is kept in typed arrays, never as one object per fix.

import { h, replace, setText, field, errorBox, showError, busy } from '../lib/dom.js';
import { api, seg, query } from '../lib/api.js';
import { state } from '../lib/store.js';
import { dayInput, dayStart, distance, duration, time, petName } from '../lib/format.js';

const DAY = 86400e3;
const RAW_MAX_SPAN = 2 * DAY;
const TARGET_POINTS = 10000;
const BUCKETS = [['1m', 60e3], ['5m', 300e3], ['15m', 900e3], ['1h', 3600e3], ['6h', 21600e3], ['1d', DAY]];
/** A pause longer than this is skipped during playback. */
const GAP_MS = 10 * 60e3;
const SPEEDS = [1, 10, 60, 300, 1800, 7200];

/** Loads a track: {ts, lat, lon} typed arrays, and how it was fetched. */
export async function loadTrack(id, from, to, signal) {
  const span = to - from;
  const base = { from: new Date(from).toISOString(), to: new Date(to).toISOString() };
  const chunks = [];
  let how;
  if (span <= RAW_MAX_SPAN) {
    how = 'every fix';
    let cursor = null;
    do {
      const body = await api(`/trackers/${seg(id)}/positions${query({ ...base, limit: 5000, cursor })}`, { signal });
      chunks.push(packed(body.positions));
      cursor = body.next_cursor || null;
    } while (cursor);
  } else {
    const [bucket] = BUCKETS.find(([, ms]) => span / ms <= TARGET_POINTS) || BUCKETS[BUCKETS.length - 1];
    how = `last fix of every ${bucket}, simplified to 5 m`;
    const body = await api(`/trackers/${seg(id)}/positions${query({ ...base, bucket, simplify: 5 })}`, { signal });
    chunks.push(packed(body.positions));
  }
  const n = chunks.reduce((s, c) => s + c.ts.length, 0);
  const track = { ts: new Float64Array(n), lat: new Float64Array(n), lon: new Float64Array(n), how };
  let at = 0;
  for (const c of chunks) {
    track.ts.set(c.ts, at);
    track.lat.set(c.lat, at);
    track.lon.set(c.lon, at);
    at += c.ts.length;
  }
  return track;
}

function packed(positions) {
  const n = positions.length;
  const out = { ts: new Float64Array(n), lat: new Float64Array(n), lon: new Float64Array(n) };
  for (let i = 0; i < n; i += 1) {
    const p = positions[i];
    out.ts[i] = Date.parse(p.ts);
    out.lat[i] = p.lat;
    out.lon[i] = p.lon;
  }
  return out;
}

/** Index of the last fix at or before t. */
function indexAt(ts, t) {
  let lo = 0;
  let hi = ts.length - 1;
  if (t <= ts[0]) return 0;
  if (t >= ts[hi]) return hi;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (ts[mid] <= t) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

async function download(id, format, from, to) {
  const response = await api(`/trackers/${seg(id)}/positions${query({ format, from: new Date(from).toISOString(), to: new Date(to).toISOString() })}`, { raw: true });
  const blob = await response.blob();
  const disposition = response.headers.get('content-disposition') || '';
  const match = /filename="?([^";]+)"?/.exec(disposition);
  const name = match ? match[1] : `${id}.${format === 'geojson' ? 'geojson' : format}`;
  const url = URL.createObjectURL(blob);
  const a = h('a', { href: url, download: name, hidden: true });
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60000);
  return name;
}

export function render(ctx, id) {
  const pets = [...state.pets.values()].sort((a, b) => petName(a).localeCompare(petName(b)));
  if (!id && pets.length) id = state.selected && state.pets.has(state.selected) ? state.selected : pets[0].id;
  if (!pets.length || !state.pets.has(id)) {
    replace(ctx.panel, h('div', { class: 'screen' }, h('h1', null, 'History'),
      h('p', { class: 'muted', dataset: { testid: 'no-history' } }, pets.length ? 'No such pet.' : 'No pets yet.')));
    return () => {};
  }
  state.selected = id;
  const today = new Date();
  const select = h('select', {
    dataset: { testid: 'history-pet' },
    onchange: () => ctx.navigate(`#/history/${encodeURIComponent(select.value)}`),
  }, pets.map((p) => h('option', { value: p.id, selected: p.id === id }, petName(p))));
  const fromInput = h('input', { type: 'date', value: dayInput(today), max: dayInput(today), dataset: { testid: 'history-from' } });
  const toInput = h('input', { type: 'date', value: dayInput(today), max: dayInput(today), dataset: { testid: 'history-to' } });
  const error = errorBox();
  const status = h('p', { class: 'muted small', role: 'status', dataset: { testid: 'history-status' } });
  const show = h('button', { type: 'submit', class: 'primary', dataset: { testid: 'history-show' } }, 'Show');

  const play = h('button', { type: 'button', disabled: true, dataset: { testid: 'play' }, 'aria-pressed': 'false' }, 'Play');
  const speed = h('select', { dataset: { testid: 'speed' }, 'aria-label': 'Playback speed' },
    SPEEDS.map((s) => h('option', { value: s, selected: s === 60 }, `${s}×`)));
  const slider = h('input', { type: 'range', min: 0, max: 1000, value: 0, step: 1, disabled: true, 'aria-label': 'Time', dataset: { testid: 'time-slider' } });
  const clock = h('span', { class: 'clock', dataset: { testid: 'playback-time' } }, '–');
  const followIt = h('input', { type: 'checkbox', checked: true, dataset: { testid: 'playback-follow' } });
  const summary = h('div', { class: 'summary', dataset: { testid: 'summary' } });
  const exports = h('div', { class: 'row exports' },
    ['gpx', 'geojson', 'csv'].map((format) => h('button', {
      type: 'button',
      class: 'small',
      dataset: { testid: `export-${format}` },
      onclick: (e) => busy(e.target, error, async () => {
        const name = await download(id, format, range().from, range().to);
        ctx.notify(`Saved ${name}`, { testid: 'exported' });
      }),
    }, format === 'geojson' ? 'GeoJSON' : format.toUpperCase())));

  let track = null;
  let t = 0;
  let playing = false;
  let last = 0;
  let frame = 0;
  let controller = null;

  const range = () => {
    const from = dayStart(fromInput.value).getTime();
    const to = dayStart(toInput.value).getTime() + DAY;
    return { from, to: Math.min(to, Date.now() + 60e3) };
  };

  const place = () => {
    if (!track || track.ts.length === 0) return;
    const { ts, lat, lon } = track;
    const i = indexAt(ts, t);
    let la = lat[i];
    let lo = lon[i];
    if (i + 1 < ts.length && ts[i + 1] > ts[i] && ts[i + 1] - ts[i] < GAP_MS) {
      const f = Math.min(1, Math.max(0, (t - ts[i]) / (ts[i + 1] - ts[i])));
      la += (lat[i + 1] - la) * f;
      lo += (lon[i + 1] - lo) * f;
    }
    ctx.map.movePlayback(la, lo, followIt.checked && playing);
    const span = ts[ts.length - 1] - ts[0] || 1;
    slider.value = String(Math.round(((t - ts[0]) / span) * 1000));
    setText(clock, time(t));
  };

  const stop = () => {
    playing = false;
    cancelAnimationFrame(frame);
    setText(play, 'Play');
    play.setAttribute('aria-pressed', 'false');
  };

  const tick = (now) => {
    if (!playing) return;
    const dt = last ? now - last : 0;
    last = now;
    const { ts } = track;
    t += dt * Number(speed.value);
    const i = indexAt(ts, t);
    // Skip long pauses (the pet asleep at home) instead of playing them.
    if (i + 1 < ts.length && ts[i + 1] - ts[i] >= GAP_MS) t = Math.max(t, ts[i + 1] - 1000);
    if (t >= ts[ts.length - 1]) {
      t = ts[ts.length - 1];
      place();
      stop();
      return;
    }
    place();
    frame = requestAnimationFrame(tick);
  };

  play.addEventListener('click', () => {
    if (!track || track.ts.length < 2) return;
    if (playing) {
      stop();
      return;
    }
    if (t >= track.ts[track.ts.length - 1]) t = track.ts[0];
    playing = true;
    last = 0;
    setText(play, 'Pause');
    play.setAttribute('aria-pressed', 'true');
    frame = requestAnimationFrame(tick);
  });
  slider.addEventListener('input', () => {
    if (!track) return;
    const { ts } = track;
    t = ts[0] + (Number(slider.value) / 1000) * (ts[ts.length - 1] - ts[0]);
    place();
  });

  const loadSummary = async (from, to, signal) => {
    const body = await api(`/trackers/${seg(id)}/summary${query({ from: new Date(from).toISOString(), to: new Date(to).toISOString() })}`, { signal });
    const days = body.days;
    if (!days.length) {
      replace(summary, h('p', { class: 'muted' }, 'No fixes in this range.'));
      return;
    }
    const total = days.reduce((s, d) => ({ m: s.m + d.distance_m, s: s.s + d.moving_s }), { m: 0, s: 0 });
    replace(summary, h('table', { class: 'table' },
      h('caption', null, 'Daily summary (UTC days)'),
      h('thead', null, h('tr', null, h('th', { scope: 'col' }, 'Day'), h('th', { scope: 'col' }, 'Distance'), h('th', { scope: 'col' }, 'Moving'), h('th', { scope: 'col' }, 'Fixes'))),
      h('tbody', null, days.map((d) => h('tr', { dataset: { testid: 'summary-day' } },
        h('td', null, d.day.slice(0, 10)), h('td', { dataset: { testid: 'summary-distance' } }, distance(d.distance_m)), h('td', null, duration(d.moving_s)), h('td', null, String(d.points))))),
      days.length > 1 ? h('tfoot', null, h('tr', null, h('th', { scope: 'row' }, 'Total'), h('td', null, distance(total.m)), h('td', null, duration(total.s)), h('td', null, String(days.reduce((s, d) => s + d.points, 0))))) : null));
  };

  const load = async () => {
    stop();
    if (controller) controller.abort();
    controller = new AbortController();
    const mine = controller;
    const { from, to } = range();
    if (!(to > from)) throw new Error('The end of the range must be after its start.');
    if (to - from > 366 * DAY) throw new Error('At most 366 days at once.');
    setText(status, 'Loading…');
    const started = performance.now();
    track = null;
    ctx.map.clearTrack();
    const loaded = await loadTrack(id, from, to, mine.signal);
    const summaryDone = loadSummary(from, to, mine.signal).catch((err) => {
      if (err.name !== 'AbortError') showError(error, err);
    });
    track = loaded;
    if (track.ts.length === 0) {
      setText(status, 'No positions in this range.');
      play.disabled = true;
      slider.disabled = true;
      await summaryDone;
      return;
    }
    ctx.map.showTrack(track.lat, track.lon);
    performance.mark('pettracker-track-drawn');
    t = track.ts[0];
    place();
    play.disabled = track.ts.length < 2;
    slider.disabled = false;
    setText(status, `${track.ts.length.toLocaleString()} points (${track.how}) in ${Math.round(performance.now() - started)} ms`);
    status.dataset.points = String(track.ts.length);
    await summaryDone;
    if (mine === controller) performance.mark('pettracker-history-drawn');
  };

  // A new range may be asked for while one loads: the older load is abandoned, not waited for.
  const run = () => {
    showError(error, null);
    load().catch((err) => {
      if (err.name !== 'AbortError') showError(error, err);
    });
  };

  const quick = (label, days, offset = 0) => h('button', {
    type: 'button',
    class: 'small ghost',
    dataset: { testid: `range-${label.toLowerCase().replace(/\s+/g, '-')}` },
    onclick: () => {
      const end = new Date(today.getFullYear(), today.getMonth(), today.getDate() - offset);
      const start = new Date(end.getFullYear(), end.getMonth(), end.getDate() - (days - 1));
      fromInput.value = dayInput(start);
      toInput.value = dayInput(end);
      run();
    },
  }, label);

  replace(ctx.panel, h('div', { class: 'screen' },
    h('h1', null, 'History'),
    h('form', {
      class: 'stack',
      onsubmit: (e) => {
        e.preventDefault();
        run();
      },
    },
    field('Pet', select),
    h('div', { class: 'row two' }, field('From', fromInput), field('To', toInput)),
    h('div', { class: 'row' }, quick('Today', 1), quick('Yesterday', 1, 1), quick('7 days', 7), quick('30 days', 30), show)),
    error,
    status,
    h('div', { class: 'card player' },
      h('div', { class: 'row' }, play, field('Speed', speed), h('label', { class: 'toggle' }, followIt, 'Follow')),
      slider,
      clock),
    summary,
    h('div', { class: 'card' }, h('h2', null, 'Export this range'), exports)));

  run();
  return () => {
    stop();
    if (controller) controller.abort();
    ctx.map.clearTrack();
  };
}
