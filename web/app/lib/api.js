// Calls to /api/v1 with the session's access token in the Authorization header (never in a URL).
// A 401 renews the token once and retries; a 429 waits as told.

import { accessToken, refresh, errorFrom } from './session.js';

export { ApiError } from './session.js';

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * api('/trackers') -> parsed JSON; api(path, {method, body}) for changes; `raw: true` returns
 * the Response (exports).
 */
export async function api(path, { method = 'GET', body, raw = false, signal } = {}) {
  for (let attempt = 0; ; attempt += 1) {
    const token = await accessToken();
    const headers = { authorization: `Bearer ${token}` };
    if (body !== undefined) headers['content-type'] = 'application/json';
    const response = await fetch(`/api/v1${path}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
      credentials: 'same-origin',
    });
    if (response.status === 401 && attempt === 0) {
      await refresh();
      continue;
    }
    if (response.status === 429 && attempt < 3) {
      const wait = Number(response.headers.get('retry-after')) || 1;
      await sleep(Math.min(wait, 10) * 1000);
      continue;
    }
    if (!response.ok) throw await errorFrom(response);
    if (raw) return response;
    if (response.status === 204) return null;
    return response.json();
  }
}

/** Encodes a path segment (tracker ids are plain, but never trust that in a URL). */
export const seg = (s) => encodeURIComponent(s);

/** A query string from an object, skipping empty values. */
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== '') q.set(k, String(v));
  }
  const s = q.toString();
  return s ? `?${s}` : '';
}
