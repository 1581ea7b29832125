// What the app knows: the account, its pets with their latest state, alerts, commands in flight.
// Live updates land here as they arrive and are handed to the screens once per animation frame,
// however many arrive in between (1,000 pets reporting every 5 s are 200 updates a second).

const TRAIL_POINTS = 30;
const TRAIL_MAX_AGE_MS = 15 * 60 * 1000;

export const state = {
  user: null,
  /** id -> pet: {id, name, role, revoked, online, battery, charging, lastSeen, fix, trail, livePoints} */
  pets: new Map(),
  selected: null,
  follow: false,
  /** Newest first; at most ALERTS_KEPT. */
  alerts: [],
  /** command id -> {id, tracker_id, type, status, attempt, reason, updated_at, history?} */
  commands: new Map(),
  connection: { state: 'stopped', detail: 0 },
};

export const ALERTS_KEPT = 500;

const listeners = new Map();

/** on('pets-changed', fn) -> unsubscribe. */
export function on(type, fn) {
  if (!listeners.has(type)) listeners.set(type, new Set());
  listeners.get(type).add(fn);
  return () => listeners.get(type).delete(fn);
}

export function emit(type, detail) {
  const set = listeners.get(type);
  if (!set) return;
  for (const fn of [...set]) {
    try {
      fn(detail);
    } catch (err) {
      // One broken screen must not stop the others from updating.
      setTimeout(() => {
        throw err;
      });
    }
  }
}

// --- pets --------------------------------------------------------------------------------

export function petFromApi(t) {
  const s = t.status || {};
  return {
    id: t.id,
    name: t.pet_name || '',
    role: t.role,
    revoked: Boolean(t.revoked),
    online: Boolean(s.online),
    battery: s.battery ?? null,
    charging: s.charging ?? null,
    firmware: s.firmware ?? null,
    lastSeen: s.last_seen || null,
    fix: s.last_fix || null,
    trail: s.last_fix ? [[s.last_fix.lat, s.last_fix.lon, Date.parse(s.last_fix.ts)]] : [],
    livePoints: 0,
  };
}

export function setPets(list) {
  const fresh = new Map();
  for (const t of list) {
    const old = state.pets.get(t.id);
    const pet = petFromApi(t);
    if (old) {
      pet.trail = old.trail.length ? old.trail : pet.trail;
      pet.livePoints = old.livePoints;
      if (old.fix && pet.fix && Date.parse(old.fix.ts) > Date.parse(pet.fix.ts)) pet.fix = old.fix;
    }
    fresh.set(t.id, pet);
  }
  state.pets = fresh;
  if (state.selected && !fresh.has(state.selected)) state.selected = null;
  emit('pets-changed');
}

// Updated pet ids wait here for the next animation frame.
const dirty = new Set();
let frameRequested = false;

function touch(id) {
  dirty.add(id);
  if (!frameRequested) {
    frameRequested = true;
    requestAnimationFrame(flush);
  }
}

/** Main-thread time the screens spend applying a frame's updates (read by the benchmarks). */
export const frameWork = { frames: 0, totalMs: 0, maxMs: 0 };

function flush() {
  frameRequested = false;
  if (dirty.size === 0) return;
  const started = performance.now();
  const ids = new Set(dirty);
  dirty.clear();
  emit('pets-updated', ids);
  const spent = performance.now() - started;
  frameWork.frames += 1;
  frameWork.totalMs += spent;
  frameWork.maxMs = Math.max(frameWork.maxMs, spent);
}

function addToTrail(pet, fix) {
  const t = Date.parse(fix.ts);
  pet.trail.push([fix.lat, fix.lon, t]);
  const cutoff = t - TRAIL_MAX_AGE_MS;
  let drop = Math.max(0, pet.trail.length - TRAIL_POINTS);
  while (drop < pet.trail.length - 1 && pet.trail[drop][2] < cutoff) drop += 1;
  if (drop > 0) pet.trail.splice(0, drop);
}

/** A message from the live feed. */
export function applyLive(message) {
  const pet = state.pets.get(message.tracker);
  switch (message.type) {
    case 'snapshot': {
      if (!pet) return;
      const s = message.status || {};
      pet.online = Boolean(s.online);
      pet.battery = s.battery ?? pet.battery;
      pet.charging = s.charging ?? pet.charging;
      pet.lastSeen = s.last_seen || pet.lastSeen;
      if (s.last_fix && (!pet.fix || Date.parse(s.last_fix.ts) > Date.parse(pet.fix.ts))) {
        pet.fix = s.last_fix;
        addToTrail(pet, s.last_fix);
      }
      touch(pet.id);
      return;
    }
    case 'position': {
      if (!pet) return;
      const fix = message.fix;
      pet.livePoints += 1;
      pet.lastSeen = fix.received_at || fix.ts;
      if (fix.bat !== undefined && fix.bat !== null) pet.battery = fix.bat;
      if (!message.late && (!pet.fix || Date.parse(fix.ts) >= Date.parse(pet.fix.ts))) {
        pet.fix = fix;
        pet.online = true;
        addToTrail(pet, fix);
      }
      pet.receivedAt = performance.now();
      touch(pet.id);
      return;
    }
    case 'status': {
      if (!pet) return;
      if (message.online !== undefined && message.online !== null) pet.online = message.online;
      if (message.battery !== undefined && message.battery !== null) pet.battery = message.battery;
      if (message.charging !== undefined && message.charging !== null) pet.charging = message.charging;
      if (message.firmware) pet.firmware = message.firmware;
      if (message.at) pet.lastSeen = message.at;
      touch(pet.id);
      return;
    }
    case 'alert': {
      addAlert(message.alert, true);
      return;
    }
    case 'command': {
      const c = message.command;
      const known = state.commands.get(c.id) || { id: c.id, tracker_id: message.tracker };
      known.status = c.status;
      known.attempt = c.attempt;
      known.reason = c.reason;
      known.updated_at = c.at;
      state.commands.set(c.id, known);
      emit('command', known);
      return;
    }
    default:
  }
}

// --- alerts ------------------------------------------------------------------------------

export function addAlert(alert, live) {
  if (state.alerts.some((a) => a.id === alert.id)) return;
  // Newest first by id (ids grow with time).
  let i = 0;
  while (i < state.alerts.length && state.alerts[i].id > alert.id) i += 1;
  state.alerts.splice(i, 0, alert);
  if (state.alerts.length > ALERTS_KEPT) state.alerts.length = ALERTS_KEPT;
  emit('alerts-changed', { alert, live });
}

export function unackedCount() {
  return state.alerts.reduce((n, a) => n + (a.acked_at ? 0 : 1), 0);
}

export function reset() {
  state.user = null;
  state.pets = new Map();
  state.selected = null;
  state.follow = false;
  state.alerts = [];
  state.commands = new Map();
  emit('pets-changed');
  emit('alerts-changed', {});
}
