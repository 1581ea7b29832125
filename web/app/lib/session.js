// The signed-in session. The refresh token lives in an HttpOnly cookie that only
// /api/v1/auth/session receives (no script can read it); this module keeps the short-lived
// access token in memory, renews it before it expires, and tells the app when the session ends
// (signed out here or in another tab, or revoked on the server).

const BASE = '/api/v1/auth/session';

let current = null; // { token, expiresAt (ms), user: {id, email, is_admin} }
let timer = null;
let inflight = null;
const listeners = new Set();
// Other tabs of the app share the cookie: they hear about sign-in and sign-out.
const channel = 'BroadcastChannel' in window ? new BroadcastChannel('pettracker-session') : null;

export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.message) || `HTTP ${status}`);
    this.status = status;
    this.code = body && body.error;
    this.field = body && body.field;
  }
}

export async function errorFrom(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    // not JSON: the status says enough
  }
  return new ApiError(response.status, body);
}

/** Called with (session or null, reason) whenever the session starts, renews or ends. */
export function onSessionChange(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

function emit(reason) {
  for (const fn of listeners) fn(current, reason);
}

export function currentSession() {
  return current;
}

export function currentUser() {
  return current && current.user;
}

function adopt(body, reason) {
  const expiresIn = Number(body.expires_in) || 60;
  current = {
    token: body.access_token,
    expiresAt: Date.now() + expiresIn * 1000,
    lifetimeMs: expiresIn * 1000,
    user: body.user,
  };
  clearTimeout(timer);
  // Renew well before expiry: a minute early for the usual 15 minutes, earlier in proportion
  // for short lifetimes.
  const lead = expiresIn > 120 ? expiresIn - 60 : expiresIn * 0.6;
  timer = setTimeout(() => refresh().catch(() => {}), lead * 1000);
  emit(reason);
}

function end(reason) {
  const had = current !== null;
  current = null;
  clearTimeout(timer);
  if (had || reason === 'boot') emit(reason);
}

async function postJson(url, body) {
  return fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
    credentials: 'same-origin',
  });
}

export async function signIn(email, password) {
  const response = await postJson(BASE, { email, password });
  if (!response.ok) throw await errorFrom(response);
  adopt(await response.json(), 'signed-in');
  if (channel) channel.postMessage({ type: 'signed-in' });
}

export async function register(email, password) {
  const response = await postJson('/api/v1/auth/register', { email, password });
  if (!response.ok) throw await errorFrom(response);
  await signIn(email, password);
}

/**
 * Exchanges the cookie for a new access token. One at a time in this tab, and across tabs with
 * the Web Locks API: the refresh token works once, and presenting an already exchanged one
 * would end the session everywhere.
 */
export function refresh() {
  if (inflight) return inflight;
  const run = async () => {
    const response = await fetch(`${BASE}/refresh`, { method: 'POST', credentials: 'same-origin' });
    if (response.status === 401) {
      end(current ? 'expired' : 'boot');
      throw await errorFrom(response);
    }
    if (!response.ok) throw await errorFrom(response);
    adopt(await response.json(), 'renewed');
    return current;
  };
  const locked = navigator.locks ? navigator.locks.request('pettracker-refresh', run) : run();
  inflight = locked.finally(() => {
    inflight = null;
  });
  return inflight;
}

/** The server's readable companion of the HttpOnly session cookie (no secret in it). */
function hasSessionCookie() {
  return document.cookie.split(';').some((c) => c.trim() === 'pettracker_session=1');
}

/** Resumes a session from the cookie, if there is one. */
export async function resume() {
  if (!hasSessionCookie()) return null;
  try {
    return await refresh();
  } catch {
    return null;
  }
}

/** A valid access token, renewed first if it has (nearly) expired. */
export async function accessToken() {
  // Renewed when less than a quarter of its life (at most 5 s) is left.
  if (current && current.expiresAt - Date.now() > Math.min(5000, current.lifetimeMs / 4)) return current.token;
  const renewed = await refresh();
  return renewed.token;
}

export async function signOut() {
  try {
    await fetch(BASE, { method: 'DELETE', credentials: 'same-origin' });
  } finally {
    end('signed-out');
    if (channel) channel.postMessage({ type: 'signed-out' });
  }
}

if (channel) {
  channel.onmessage = (event) => {
    const type = event.data && event.data.type;
    if (type === 'signed-out') end('signed-out');
    else if (type === 'signed-in' && !current) resume();
  };
}

// A tab that slept past its renewal time renews as soon as it is looked at again.
document.addEventListener('visibilitychange', () => {
  if (document.visibilityState === 'visible' && current && current.expiresAt - Date.now() < 30000) {
    refresh().catch(() => {});
  }
});
