// One pet: where and how fresh, commands to its collar with their progress as it happens
// (queued → sent → delivered → succeeded / failed / expired), retry and cancel, and who it is
// shared with.

import { h, replace, setText, field, errorBox, showError, busy } from '../lib/dom.js';
import { api, seg, query } from '../lib/api.js';
import { state, on } from '../lib/store.js';
import { petName, COMMAND_LABELS } from '../lib/format.js';
import { facts, freshness } from './pets.js';

const FINISHED = new Set(['succeeded', 'failed', 'expired', 'cancelled']);
const RETRYABLE = new Set(['failed', 'expired', 'cancelled']);
const STEPS = ['queued', 'sent', 'delivered', 'succeeded'];

function commandSummary(c) {
  const p = c.params || {};
  switch (c.type) {
    case 'live_mode': return `for ${p.minutes ?? '?'} min, every ${p.interval_secs ?? 5} s`;
    case 'set_interval': return `every ${p.seconds ?? '?'} s`;
    case 'buzzer':
    case 'light': return p.seconds ? `${p.seconds} s` : '';
    default: return '';
  }
}

function lifecycle(c) {
  const failedAt = FINISHED.has(c.status) && c.status !== 'succeeded' ? c.status : null;
  const reached = STEPS.indexOf(c.status);
  return h('ol', { class: 'lifecycle', 'aria-label': 'Progress' },
    STEPS.map((step, i) => {
      let cls = 'todo';
      if (failedAt && i === STEPS.length - 1) return h('li', { class: 'bad' }, failedAt);
      if (reached >= i || (failedAt && i < STEPS.length - 1 && c.history && c.history.some((e) => e.status === step))) cls = 'done';
      if (reached === i && !FINISHED.has(c.status)) cls = 'now';
      return h('li', { class: cls }, step);
    }));
}

export function render(ctx, id) {
  const pet = state.pets.get(id);
  if (!pet) {
    replace(ctx.panel, h('div', { class: 'screen' },
      h('p', null, h('a', { href: '#/pets' }, '← Pets')),
      h('h1', null, 'Pet'),
      h('p', { class: 'muted', dataset: { testid: 'pet-missing' } }, 'No such pet.')));
    return () => {};
  }
  state.selected = id;
  ctx.map.select(state.pets, id);
  const owner = pet.role === 'owner';

  const title = h('h1', { dataset: { testid: 'pet-title' } }, petName(pet));
  const info = h('p', { class: 'pet-facts big', dataset: { testid: 'pet-detail-facts' } });
  const dot = h('span', { class: 'status-dot', 'aria-hidden': 'true' });
  const updateFacts = () => {
    const p = state.pets.get(id);
    if (!p) return;
    setText(title, petName(p));
    setText(info, facts(p));
    dot.dataset.freshness = freshness(p);
  };
  updateFacts();

  // --- commands ---
  const commandList = h('ul', { class: 'commands', dataset: { testid: 'command-list' } });
  const commandError = errorBox();
  const commandRows = new Map();
  const commandRow = (c) => {
    const li = h('li', { class: 'command', dataset: { testid: 'command', commandId: c.id, status: c.status, type: c.type } },
      h('div', { class: 'command-head' },
        h('strong', null, COMMAND_LABELS[c.type] || c.type), ' ', h('span', { class: 'muted' }, commandSummary(c)),
        h('span', { class: `chip ${c.status}`, dataset: { testid: 'command-status' } }, c.status),
        c.attempt > 1 ? h('span', { class: 'muted' }, ` attempt ${c.attempt}`) : null),
      lifecycle(c),
      c.reason ? h('p', { class: 'muted small' }, c.reason) : null,
      owner ? h('div', { class: 'row' },
        RETRYABLE.has(c.status) ? h('button', {
          type: 'button', class: 'small', dataset: { testid: 'command-retry' },
          onclick: (e) => busy(e.target, commandError, async () => setCommand(await api(`/commands/${seg(c.id)}/retry`, { method: 'POST' }))),
        }, 'Retry') : null,
        !FINISHED.has(c.status) ? h('button', {
          type: 'button', class: 'small ghost', dataset: { testid: 'command-cancel' },
          onclick: (e) => busy(e.target, commandError, async () => setCommand(await api(`/commands/${seg(c.id)}`, { method: 'DELETE' }))),
        }, 'Cancel') : null) : null);
    return li;
  };
  const setCommand = (c) => {
    const known = state.commands.get(c.id) || {};
    const merged = { ...known, ...c };
    // An answer can arrive after the live feed already told of a later step: keep the later.
    if (known.updated_at && c.updated_at && Date.parse(known.updated_at) > Date.parse(c.updated_at)) {
      for (const k of ['status', 'attempt', 'reason', 'updated_at']) merged[k] = known[k];
    }
    state.commands.set(c.id, merged);
    const old = commandRows.get(c.id);
    const li = commandRow(merged);
    commandRows.set(c.id, li);
    if (old) old.replaceWith(li);
    else commandList.prepend(li);
  };
  const send = (type, params) => async (e) => {
    e.preventDefault();
    const button = e.submitter || e.target;
    await busy(button, commandError, async () => {
      setCommand(await api(`/trackers/${seg(id)}/commands`, { method: 'POST', body: { type, params } }));
    });
  };
  const minutes = h('input', { type: 'number', min: 1, max: 240, value: 30, dataset: { testid: 'live-minutes' }, class: 'narrow' });
  const seconds = h('input', { type: 'number', min: 5, max: 86400, value: 60, dataset: { testid: 'interval-seconds' }, class: 'narrow' });
  const commands = owner ? h('section', { class: 'card', 'aria-labelledby': 'cmd-h' },
    h('h2', { id: 'cmd-h' }, 'Commands'),
    h('div', { class: 'command-buttons' },
      h('button', { type: 'button', dataset: { testid: 'cmd-buzzer' }, onclick: send('buzzer', { seconds: 3 }) }, 'Buzzer'),
      h('button', { type: 'button', dataset: { testid: 'cmd-light' }, onclick: send('light', { seconds: 60 }) }, 'Light'),
      h('button', { type: 'button', dataset: { testid: 'cmd-locate' }, onclick: send('locate_now', {}) }, 'Locate now')),
    h('form', { class: 'inline', onsubmit: (e) => send('live_mode', { minutes: Number(minutes.value), interval_secs: 5 })(e) },
      field('Live mode, minutes', minutes),
      h('button', { type: 'submit', dataset: { testid: 'cmd-live' } }, 'Start live mode')),
    h('form', { class: 'inline', onsubmit: (e) => send('set_interval', { seconds: Number(seconds.value) })(e) },
      field('Report every, seconds', seconds),
      h('button', { type: 'submit', dataset: { testid: 'cmd-interval' } }, 'Set interval')),
    commandError,
    commandList)
    : h('section', { class: 'card' }, h('h2', null, 'Commands'), h('p', { class: 'muted' }, 'Only the owner sends commands; you see them as they happen.'), commandList);

  api(`/commands${query({ tracker: id, limit: 20 })}`).then((body) => {
    for (const c of [...body.commands].reverse()) setCommand(c);
  }).catch((err) => showError(commandError, err));
  const offCommand = on('command', (c) => {
    if (c.tracker_id !== id) return;
    // A command created in another tab or by an application appears as it starts.
    if (!commandRows.has(c.id) && !c.type) {
      api(`/commands/${seg(c.id)}`).then(setCommand).catch(() => {});
      return;
    }
    setCommand(c);
  });

  // --- sharing ---
  const members = h('ul', { class: 'members', dataset: { testid: 'member-list' } });
  const shareError = errorBox();
  const loadMembers = async () => {
    const body = await api(`/trackers/${seg(id)}/members`);
    replace(members, body.members.length ? body.members.map((m) => h('li', { dataset: { testid: 'member', userId: m.user_id } },
      h('span', null, m.email), ' ', h('span', { class: 'tag' }, m.role),
      owner ? h('button', {
        type: 'button', class: 'small ghost', dataset: { testid: 'member-remove' },
        onclick: (e) => busy(e.target, shareError, async () => {
          await api(`/trackers/${seg(id)}/members/${m.user_id}`, { method: 'DELETE' });
          await loadMembers();
        }),
      }, 'Remove') : null)) : [h('li', { class: 'muted' }, 'Not shared with anyone.')]);
  };
  const invite = h('input', { type: 'email', required: true, placeholder: 'family@example.com', dataset: { testid: 'invite-email' } });
  const inviteButton = h('button', { type: 'submit', dataset: { testid: 'invite' } }, 'Invite as viewer');
  const sharing = h('section', { class: 'card', 'aria-labelledby': 'share-h' },
    h('h2', { id: 'share-h' }, 'Sharing'),
    owner ? members : h('p', { class: 'muted' }, 'Shared with you as a viewer: you see where it is and its history.'),
    owner ? h('form', {
      class: 'inline',
      onsubmit: (e) => {
        e.preventDefault();
        busy(inviteButton, shareError, async () => {
          await api(`/trackers/${seg(id)}/members`, { method: 'POST', body: { email: invite.value.trim() } });
          invite.value = '';
          await loadMembers();
        });
      },
    }, field('Invite by email', invite, 'They need an account here.'), inviteButton)
      : h('button', {
        type: 'button', class: 'danger', dataset: { testid: 'leave' },
        onclick: (e) => busy(e.target, shareError, async () => {
          await api(`/trackers/${seg(id)}/members/${state.user.id}`, { method: 'DELETE' });
          await ctx.reloadPets();
          ctx.navigate('#/pets');
        }),
      }, 'Leave this pet'),
    shareError);
  if (owner) loadMembers().catch((err) => showError(shareError, err));

  // --- rename ---
  const rename = owner ? (() => {
    const input = h('input', { type: 'text', maxlength: 64, value: pet.name, dataset: { testid: 'pet-name-input' } });
    const error = errorBox();
    const button = h('button', { type: 'submit', dataset: { testid: 'pet-rename' } }, 'Rename');
    return h('details', { class: 'card' }, h('summary', null, 'Name and collar'),
      h('form', {
        class: 'inline',
        onsubmit: (e) => {
          e.preventDefault();
          busy(button, error, async () => {
            const name = input.value.trim();
            await api(`/trackers/${seg(id)}`, { method: 'PATCH', body: { pet_name: name || null } });
            await ctx.reloadPets();
          });
        },
      }, field('Pet name', input), button),
      h('p', { class: 'muted small' }, `Collar ${id}${pet.firmware ? `, firmware ${pet.firmware}` : ''}`),
      error);
  })() : null;

  replace(ctx.panel, h('div', { class: 'screen' },
    h('p', null, h('a', { href: '#/pets', dataset: { testid: 'back' } }, '← Pets')),
    h('div', { class: 'screen-head' }, h('div', { class: 'title-row' }, dot, title),
      h('a', { class: 'button small', href: `#/history/${encodeURIComponent(id)}`, dataset: { testid: 'open-history' } }, 'History')),
    info,
    h('p', { class: 'muted small' }, `Tracker ${id}`),
    commands,
    sharing,
    rename));

  const offUpdated = on('pets-updated', (ids) => {
    if (ids.has(id)) updateFacts();
  });
  const offChanged = on('pets-changed', updateFacts);
  const ticker = setInterval(updateFacts, 5000);
  return () => {
    offUpdated();
    offChanged();
    offCommand();
    clearInterval(ticker);
  };
}
