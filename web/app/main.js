// The owner web app: signs in, keeps one live feed and one map for the whole session, and shows
// one screen at a time beside the map (below it on a phone). Routes are the URL's hash
// (#/pets/rex), so the server only ever serves this one page; tokens never appear in URLs.

import { h, replace, setText } from './lib/dom.js';
import { api } from './lib/api.js';
import { onSessionChange, resume, currentSession, currentUser } from './lib/session.js';
import { LiveFeed } from './lib/live.js';
import { MapView } from './lib/map.js';
import { state, on, emit, setPets, applyLive, addAlert, unackedCount, reset, frameWork } from './lib/store.js';
import { alertText, petName } from './lib/format.js';
import * as auth from './screens/auth.js';
import * as pets from './screens/pets.js';
import * as pet from './screens/pet.js';
import * as history from './screens/history.js';
import * as zones from './screens/zones.js';
import * as alerts from './screens/alerts.js';
import * as apps from './screens/apps.js';
import * as admin from './screens/admin.js';
import * as account from './screens/account.js';

const root = document.getElementById('app');
let mapSettings = { tile_url: null, tile_attribution: '', max_zoom: 19 };
let shell = null; // the signed-in layout, while signed in
let signedOutView = null;

// Measurements the benchmarks read (benchmarks/browser.py): when the pets first showed on the
// map, and how long after its fix each live update reached the screen.
const metrics = { firstPetsPaint: null, lagMs: [], arrivalLagMs: [], frames: 0 };
window.__pettracker = { metrics, frameWork };

const ROUTES = {
  pets: pets,
  pet: pet,
  history: history,
  zones: zones,
  alerts: alerts,
  apps: apps,
  admin: admin,
  account: account,
};

const MAP_SCREENS = new Set(['pets', 'pet', 'history', 'zones', 'alerts']);

const TABS = [
  ['pets', 'Pets'],
  ['history', 'History'],
  ['zones', 'Zones'],
  ['alerts', 'Alerts'],
  ['apps', 'Apps'],
  ['admin', 'Operators'],
  ['account', 'Account'],
];

// --- signed out --------------------------------------------------------------------------

function showSignedOut(reason) {
  if (shell) {
    shell.live.stop();
    shell.cleanup();
    shell = null;
  }
  reset();
  const mode = window.location.hash.startsWith('#/register') ? 'register' : 'signin';
  const message = reason === 'expired' ? 'Your session has ended. Please sign in again.' : '';
  if (signedOutView && signedOutView.mode === mode && !message) return;
  signedOutView = { mode };
  root.removeAttribute('aria-busy');
  replace(root, mode === 'register' ? auth.registerView() : auth.signInView(message));
  document.title = mode === 'register' ? 'Create an account – pettracker' : 'Sign in – pettracker';
}

// --- signed in ---------------------------------------------------------------------------

function buildShell() {
  signedOutView = null;
  const user = currentUser();
  state.user = user;
  const conn = h('span', { class: 'conn', role: 'status', dataset: { testid: 'connection-state', state: 'connecting' } }, 'Connecting…');
  const badge = h('span', { class: 'badge', hidden: true, dataset: { testid: 'alert-badge' } });
  const tabs = h('nav', { class: 'tabs', 'aria-label': 'Screens' },
    TABS.filter(([id]) => id !== 'admin' || (user && user.is_admin)).map(([id, label]) =>
      h('a', { href: `#/${id}`, dataset: { tab: id, testid: `tab-${id}` } }, label, id === 'alerts' ? badge : null)));
  const panel = h('section', { class: 'panel', id: 'panel', tabindex: '-1', 'aria-live': 'off' });
  const mapEl = h('div', { class: 'map', id: 'map', role: 'region', 'aria-label': 'Map of your pets', dataset: { testid: 'map' } });
  const notices = h('div', { class: 'notices', 'aria-live': 'polite', dataset: { testid: 'notices' } });
  const layout = h('div', { class: 'shell' },
    h('header', { class: 'topbar' },
      h('a', { class: 'brand', href: '#/pets' }, h('img', { src: '/assets/icon.svg', alt: '', width: 24, height: 24 }), 'pettracker'),
      conn,
      h('span', { class: 'who', dataset: { testid: 'signed-in-as' } }, user ? user.email : ''),
      tabs),
    h('main', { class: 'main' }, h('div', { class: 'map-wrap' }, mapEl), panel),
    notices);
  root.removeAttribute('aria-busy');
  replace(root, layout);

  const mapView = new MapView(mapEl, mapSettings);
  const unsubs = [];
  const live = new LiveFeed({
    onMessage: (message) => {
      if (message.type === 'position') {
        metrics.arrivalLagMs.push(Date.now() - Date.parse(message.fix.ts));
        if (metrics.arrivalLagMs.length > 20000) metrics.arrivalLagMs.splice(0, 10000);
      }
      applyLive(message);
    },
    onState: (s, detail) => {
      // Back after a drop: pets shared or released meanwhile are picked up with the list.
      if (s === 'live' && state.connection.state === 'reconnecting') reloadPets().catch(() => {});
      state.connection = { state: s, detail };
      conn.dataset.state = s;
      const text = {
        connecting: 'Connecting…',
        live: 'Live',
        reconnecting: detail ? `Reconnecting in ${detail} s…` : 'Reconnecting…',
        stopped: 'Offline',
      }[s];
      setText(conn, text);
    },
  });

  mapView.onPetClick = (id) => navigate(`#/pets/${encodeURIComponent(id)}`);
  unsubs.push(on('pets-changed', () => {
    mapView.setPets(state.pets);
  }));
  unsubs.push(on('pets-updated', (ids) => {
    mapView.updatePets(state.pets, ids);
    const now = Date.now();
    for (const id of ids) {
      const p = state.pets.get(id);
      if (p && p.receivedAt && p.fix) {
        metrics.lagMs.push(now - Date.parse(p.fix.ts));
        p.receivedAt = 0;
      }
    }
    if (metrics.lagMs.length > 20000) metrics.lagMs.splice(0, 10000);
  }));
  const updateBadge = () => {
    const n = unackedCount();
    badge.hidden = n === 0;
    setText(badge, n > 99 ? '99+' : n);
  };
  unsubs.push(on('alerts-changed', ({ alert, live: isLive } = {}) => {
    updateBadge();
    if (isLive && alert) {
      const p = state.pets.get(alert.tracker_id);
      notify(alertText(alert, petName(p) || alert.tracker_id), {
        kind: 'alert',
        testid: 'alert-notice',
        trackerId: alert.tracker_id,
        action: ['Show', () => navigate('#/alerts')],
      });
    }
  }));

  shell = {
    layout,
    mapView,
    live,
    panel,
    tabs,
    notices,
    current: null,
    cleanup: () => {
      for (const u of unsubs) u();
      if (shell && shell.current && shell.current.cleanup) shell.current.cleanup();
      mapView.map.remove();
    },
  };
  return shell;
}

async function startSession() {
  const s = buildShell();
  // Pets first: the map paints as soon as they are here; alerts and the feed follow.
  try {
    const body = await api('/trackers');
    setPets(body.trackers);
    requestAnimationFrame(() => requestAnimationFrame(() => {
      if (metrics.firstPetsPaint === null) {
        metrics.firstPetsPaint = performance.now();
        performance.mark('pettracker-pets-painted');
      }
    }));
  } catch (err) {
    notify(`Cannot load your pets: ${err.message}`, { kind: 'error' });
  }
  if (shell !== s) return;
  s.live.start();
  route();
  loadAlerts(s).catch((err) => notify(`Cannot load alerts: ${err.message}`, { kind: 'error' }));
}

/** Alerts come oldest first; the list keeps the newest ALERTS_KEPT. */
async function loadAlerts(s) {
  let since = 0;
  for (let page = 0; page < 50; page += 1) {
    const body = await api(`/alerts?since=${since}&limit=1000`);
    if (shell !== s) return;
    for (const a of body.alerts) addAlert(a, false);
    if (body.alerts.length < 1000) break;
    since = body.next_since;
  }
  emit('alerts-changed', {});
}

/** Reloads the pet list (after a claim, a rename, leaving a shared pet). */
export async function reloadPets() {
  const body = await api('/trackers');
  const before = new Set(state.pets.keys());
  setPets(body.trackers);
  const added = [...state.pets.keys()].filter((id) => !before.has(id));
  if (added.length && shell) shell.live.subscribe(added);
}

// --- notices -----------------------------------------------------------------------------

export function notify(text, { kind = 'info', testid = 'notice', trackerId, action, timeout = 15000 } = {}) {
  if (!shell) return;
  const close = () => el.remove();
  const el = h('div', { class: `notice notice-${kind}`, role: kind === 'error' ? 'alert' : 'status', dataset: { testid, trackerId } },
    h('span', { class: 'text' }, text),
    action ? h('button', { type: 'button', class: 'small', onclick: () => { action[1](); close(); } }, action[0]) : null,
    h('button', { type: 'button', class: 'small ghost', 'aria-label': 'Dismiss', onclick: close }, '×'));
  shell.notices.appendChild(el);
  while (shell.notices.children.length > 4) shell.notices.firstChild.remove();
  if (timeout) setTimeout(close, timeout);
}

// --- routing -----------------------------------------------------------------------------

export function navigate(hash) {
  if (window.location.hash === hash) route();
  else window.location.hash = hash;
}

function parseHash() {
  const [path] = window.location.hash.replace(/^#\/?/, '').split('?');
  const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
  let name = parts[0] || 'pets';
  if (name === 'pets' && parts[1]) name = 'pet';
  return { name, id: parts[1] || null };
}

function route() {
  if (!shell) return;
  let { name, id } = parseHash();
  if (!ROUTES[name] || (name === 'admin' && !(state.user && state.user.is_admin))) name = 'pets';
  if (shell.current && shell.current.cleanup) shell.current.cleanup();
  const tab = name === 'pet' ? 'pets' : name;
  for (const a of shell.tabs.querySelectorAll('a')) {
    if (a.dataset.tab === tab) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  shell.panel.replaceChildren();
  // Screens about places keep the map; the others get the whole width.
  const withMap = MAP_SCREENS.has(name);
  const hadMap = shell.layout.dataset.map !== 'off';
  shell.layout.dataset.map = withMap ? 'on' : 'off';
  if (withMap && !hadMap) shell.mapView.invalidate();
  shell.mapView.showPets(name !== 'history');
  if (name !== 'history') shell.mapView.clearTrack();
  if (name !== 'zones') shell.mapView.clearZones();
  const ctx = { panel: shell.panel, map: shell.mapView, live: shell.live, navigate, notify, reloadPets };
  const cleanup = ROUTES[name].render(ctx, id);
  shell.current = { name, cleanup };
  const label = TABS.find(([t]) => t === tab);
  document.title = `${label ? label[1] : 'pettracker'} – pettracker`;
}

window.addEventListener('hashchange', () => {
  if (shell) route();
  else if (!currentSession()) showSignedOut();
});

// --- start -------------------------------------------------------------------------------

onSessionChange((session, reason) => {
  if (session && !shell) startSession();
  else if (!session) showSignedOut(reason);
});

async function boot() {
  try {
    const response = await fetch('/api/v1/map');
    if (response.ok) mapSettings = await response.json();
  } catch {
    // No basemap settings: the map draws without tiles.
  }
  const session = await resume();
  if (!session && !shell) showSignedOut('boot');
}

boot();
