// The account: who is signed in, signing out, and the licences of the libraries the app uses.

import { h, replace, errorBox, busy } from '../lib/dom.js';
import { signOut } from '../lib/session.js';
import { state } from '../lib/store.js';

export function render(ctx) {
  const error = errorBox();
  const user = state.user || {};
  replace(ctx.panel, h('div', { class: 'screen' },
    h('h1', null, 'Account'),
    h('p', null, 'Signed in as ', h('strong', { dataset: { testid: 'account-email' } }, user.email || ''), user.is_admin ? ' (operator)' : ''),
    h('button', {
      type: 'button',
      class: 'danger',
      dataset: { testid: 'sign-out' },
      onclick: (e) => busy(e.target, error, async () => {
        await signOut();
        window.location.hash = '#/signin';
      }),
    }, 'Sign out'),
    error,
    h('section', { class: 'card' },
      h('h2', null, 'About'),
      h('p', { class: 'muted small' }, 'pettracker, Apache-2.0. Maps with ',
        h('a', { href: '/vendor/leaflet/LICENSE', target: '_blank', rel: 'noopener' }, 'Leaflet'), ' (BSD-2-Clause) and ',
        h('a', { href: '/vendor/@geoman-io/leaflet-geoman-free/LICENSE', target: '_blank', rel: 'noopener' }, 'Leaflet-Geoman'), ' (MIT); map data as credited on the map.'))));
  void ctx;
  return () => {};
}
