// Pets: every pet the account owns or was invited to see, with how fresh its position is, and
// claiming a new collar. Selecting a pet centres the map on it and opens its page.

import { h, replace, setText, field, errorBox, busy } from '../lib/dom.js';
import { api } from '../lib/api.js';
import { state, on } from '../lib/store.js';
import { age, ageSecs, petName } from '../lib/format.js';

/** How fresh a pet's position is, at a glance: fresh, aging, offline. */
export function freshness(pet, now = Date.now()) {
  if (!pet.fix) return 'none';
  if (!pet.online) return 'offline';
  return ageSecs(pet.fix.ts, now) < 120 ? 'fresh' : 'aging';
}

export function facts(pet, now = Date.now()) {
  const parts = [];
  parts.push(pet.fix ? age(pet.fix.ts, now) : 'no position yet');
  if (pet.fix && pet.fix.acc !== undefined && pet.fix.acc !== null) parts.push(`± ${Math.round(pet.fix.acc)} m`);
  if (pet.battery !== null && pet.battery !== undefined) parts.push(`battery ${pet.battery}%${pet.charging ? ' (charging)' : ''}`);
  parts.push(pet.revoked ? 'revoked' : pet.online ? 'online' : 'offline');
  return parts.join(' · ');
}

function row(pet, ctx) {
  const status = h('span', { class: 'status-dot', 'aria-hidden': 'true' });
  const name = h('span', { class: 'pet-name' }, petName(pet));
  const info = h('span', { class: 'pet-facts', dataset: { testid: 'pet-facts' } });
  const li = h('li', { class: 'pet', dataset: { trackerId: pet.id, testid: 'pet' } },
    h('button', {
      type: 'button',
      class: 'pet-main',
      dataset: { testid: 'pet-select' },
      onclick: () => {
        state.selected = pet.id;
        ctx.map.select(state.pets, pet.id);
        ctx.navigate(`#/pets/${encodeURIComponent(pet.id)}`);
      },
    },
    status,
    h('span', { class: 'pet-text' },
      h('span', { class: 'pet-title' }, name, pet.role === 'viewer' ? h('span', { class: 'tag' }, 'shared with you') : null),
      info)),
    h('a', { class: 'button small ghost', href: `#/history/${encodeURIComponent(pet.id)}`, dataset: { testid: 'pet-history' } }, 'History'));
  li.refs = { status, info };
  return li;
}

function update(li, pet, now) {
  li.refs.status.dataset.freshness = freshness(pet, now);
  setText(li.refs.info, facts(pet, now));
  li.dataset.livePoints = String(pet.livePoints);
  li.dataset.freshness = freshness(pet, now);
}

export function render(ctx) {
  const list = h('ul', { class: 'pets', dataset: { testid: 'pet-list' } });
  const empty = h('p', { class: 'muted', dataset: { testid: 'no-pets' } }, 'No pets yet. Claim a collar with the code from its card.');
  const filter = h('input', { type: 'search', placeholder: 'Find a pet', 'aria-label': 'Find a pet', dataset: { testid: 'pet-filter' } });
  const rows = new Map();
  // Only rows on screen are kept up to date as fixes arrive (a thousand pets report 200 times a
  // second); a row scrolled into view catches up.
  const visible = new Set();
  const stale = new Set();
  const observer = new IntersectionObserver((entries) => {
    const now = Date.now();
    for (const entry of entries) {
      const id = entry.target.dataset.trackerId;
      if (entry.isIntersecting) {
        visible.add(id);
        if (stale.delete(id)) {
          const pet = state.pets.get(id);
          if (pet) update(entry.target, pet, now);
        }
      } else {
        visible.delete(id);
      }
    }
  }, { root: ctx.panel });

  const rebuild = () => {
    observer.disconnect();
    visible.clear();
    stale.clear();
    rows.clear();
    const needle = filter.value.trim().toLowerCase();
    const sorted = [...state.pets.values()].sort((a, b) => petName(a).localeCompare(petName(b)));
    const now = Date.now();
    const items = [];
    for (const pet of sorted) {
      if (needle && !petName(pet).toLowerCase().includes(needle) && !pet.id.toLowerCase().includes(needle)) continue;
      const li = row(pet, ctx);
      update(li, pet, now);
      rows.set(pet.id, li);
      observer.observe(li);
      items.push(li);
    }
    replace(list, items);
    empty.hidden = state.pets.size > 0;
    filter.parentElement.hidden = state.pets.size < 8;
  };

  const claimId = h('input', { type: 'text', required: true, autocomplete: 'off', spellcheck: 'false', dataset: { testid: 'claim-tracker' } });
  const claimCode = h('input', { type: 'text', required: true, autocomplete: 'off', spellcheck: 'false', dataset: { testid: 'claim-code' } });
  const claimError = errorBox();
  const claimButton = h('button', { type: 'submit', class: 'primary', dataset: { testid: 'claim' } }, 'Claim');
  const claim = h('details', { class: 'card', dataset: { testid: 'claim-panel' } },
    h('summary', { dataset: { testid: 'add-collar' } }, 'Add a collar'),
    h('form', {
      class: 'stack',
      onsubmit: (e) => {
        e.preventDefault();
        busy(claimButton, claimError, async () => {
          const id = claimId.value.trim();
          await api('/trackers/claim', { method: 'POST', body: { tracker_id: id, claim_code: claimCode.value.trim() } });
          claimId.value = '';
          claimCode.value = '';
          claim.open = false;
          await ctx.reloadPets();
          ctx.notify(`Collar ${id} is yours now.`, { testid: 'claimed' });
        });
      },
    },
    field('Tracker id', claimId, 'Printed on the collar’s card.'),
    field('Claim code', claimCode),
    claimError,
    claimButton));

  replace(ctx.panel,
    h('div', { class: 'screen' },
      h('div', { class: 'screen-head' },
        h('h1', null, 'Pets'),
        h('label', { class: 'toggle' }, h('input', {
          type: 'checkbox',
          checked: state.follow,
          dataset: { testid: 'follow' },
          onchange: (e) => {
            state.follow = e.target.checked;
            ctx.map.setFollow(state.follow);
          },
        }), 'Follow selected')),
      h('div', { class: 'filter' }, filter),
      empty,
      list,
      claim));
  filter.addEventListener('input', rebuild);
  rebuild();

  const offChanged = on('pets-changed', rebuild);
  const offUpdated = on('pets-updated', (ids) => {
    const now = Date.now();
    for (const id of ids) {
      const li = rows.get(id);
      const pet = state.pets.get(id);
      if (!li || !pet) continue;
      if (visible.has(id)) update(li, pet, now);
      else stale.add(id);
    }
  });
  // Ages move on by themselves.
  const ticker = setInterval(() => {
    const now = Date.now();
    for (const id of visible) {
      const pet = state.pets.get(id);
      const li = rows.get(id);
      if (pet && li) update(li, pet, now);
    }
    for (const id of rows.keys()) if (!visible.has(id)) stale.add(id);
  }, 5000);
  return () => {
    observer.disconnect();
    offChanged();
    offUpdated();
    clearInterval(ticker);
  };
}
