// Numbers, times and distances as people read them.

export function age(iso, now = Date.now()) {
  if (!iso) return 'never';
  const secs = Math.max(0, Math.round((now - Date.parse(iso)) / 1000));
  if (secs < 10) return 'just now';
  if (secs < 60) return `${secs} s ago`;
  const mins = Math.floor(secs / 60);
  if (mins < 60) return `${mins} min ago`;
  const hours = Math.floor(mins / 60);
  if (hours < 48) return `${hours} h ago`;
  return `${Math.floor(hours / 24)} d ago`;
}

/** Seconds since `iso`, or Infinity. */
export function ageSecs(iso, now = Date.now()) {
  return iso ? (now - Date.parse(iso)) / 1000 : Infinity;
}

export function distance(metres) {
  if (!Number.isFinite(metres)) return '–';
  if (metres < 1000) return `${Math.round(metres)} m`;
  return `${(metres / 1000).toFixed(metres < 10000 ? 2 : 1)} km`;
}

export function duration(secs) {
  if (!Number.isFinite(secs)) return '–';
  const s = Math.round(secs);
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

export function dateTime(iso) {
  if (!iso) return '–';
  return new Date(iso).toLocaleString(undefined, {
    month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit',
  });
}

export function time(ms) {
  return new Date(ms).toLocaleString(undefined, {
    month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit',
  });
}

/** yyyy-mm-dd of a local date, for <input type=date>. */
export function dayInput(date) {
  const pad = (n) => String(n).padStart(2, '0');
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}`;
}

/** The start of a local day from <input type=date>'s value. */
export function dayStart(value) {
  const [y, m, d] = value.split('-').map(Number);
  return new Date(y, m - 1, d);
}

export function petName(pet) {
  return (pet && (pet.name || pet.id)) || '';
}

const KINDS = {
  geofence_exit: (a, name) => `${name} left ${a.details && a.details.geofence ? a.details.geofence : 'a safe zone'}`,
  geofence_enter: (a, name) => `${name} entered ${a.details && a.details.geofence ? a.details.geofence : 'a safe zone'}`,
  battery_low: (a, name) => `${name}'s battery is low (${a.details && a.details.battery}%)`,
  offline: (a, name) => `${name}'s collar went offline`,
  online: (a, name) => `${name}'s collar is back online`,
};

/** An alert as a sentence (plain text; it is only ever put in text nodes). */
export function alertText(alert, name) {
  const f = KINDS[alert.kind];
  return f ? f(alert, name) : `${name}: ${alert.kind}`;
}

export const COMMAND_LABELS = {
  live_mode: 'Live mode',
  set_interval: 'Reporting interval',
  buzzer: 'Buzzer',
  light: 'Light',
  locate_now: 'Locate now',
  firmware_update: 'Firmware update',
};
