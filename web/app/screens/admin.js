// Operators (admins only): provision collars (their secret and claim code shown once), revoke
// them, and look at dead letters, the messages collars sent that could not be used, re-running
// them after a fix.

import { h, replace, field, errorBox, showError, busy, secretBox } from '../lib/dom.js';
import { api, seg, query } from '../lib/api.js';
import { dateTime } from '../lib/format.js';

const PAGE = 100;

export function render(ctx) {
  const error = errorBox();

  // --- provisioning ---
  const trackerId = h('input', { type: 'text', required: true, pattern: '[A-Za-z0-9_\\-]{1,64}', autocomplete: 'off', dataset: { testid: 'provision-id' } });
  const petNameInput = h('input', { type: 'text', maxlength: 64, dataset: { testid: 'provision-name' } });
  const provisioned = h('div');
  const provisionButton = h('button', { type: 'submit', class: 'primary', dataset: { testid: 'provision' } }, 'Provision');
  const provision = h('form', {
    class: 'card stack',
    onsubmit: (e) => {
      e.preventDefault();
      busy(provisionButton, error, async () => {
        const body = { tracker_id: trackerId.value.trim() };
        if (petNameInput.value.trim()) body.pet_name = petNameInput.value.trim();
        const made = await api('/admin/trackers', { method: 'POST', body });
        trackerId.value = '';
        petNameInput.value = '';
        replace(provisioned, h('div', { class: 'card highlight', dataset: { testid: 'provisioned' } },
          h('p', null, 'Collar ', h('strong', null, made.tracker_id), ' — shown only now:'),
          secretBox('Device secret (the collar’s MQTT password)', made.secret, 'device-secret'),
          secretBox('Claim code (for the card in the box)', made.claim_code, 'claim-code-shown')));
        await loadTrackers(null);
      });
    },
  }, h('h2', null, 'Provision a collar'), field('Tracker id', trackerId, 'Letters, digits, _ and -'), field('Pet name (optional)', petNameInput), provisionButton);

  // --- trackers ---
  const trackers = h('tbody', { dataset: { testid: 'admin-trackers' } });
  const more = h('button', { type: 'button', class: 'small ghost', hidden: true }, 'More');
  let after = null;
  const loadTrackers = async (from) => {
    const body = await api(`/admin/trackers${query({ limit: PAGE, after: from })}`);
    if (!from) trackers.replaceChildren();
    for (const t of body.trackers) {
      trackers.appendChild(h('tr', { dataset: { testid: 'admin-tracker', trackerId: t.tracker_id } },
        h('td', null, t.tracker_id),
        h('td', null, t.pet_name || ''),
        h('td', null, t.revoked ? 'revoked' : t.online ? 'online' : 'offline'),
        h('td', null, t.last_seen ? dateTime(t.last_seen) : '–'),
        h('td', null, t.revoked ? null : h('button', {
          type: 'button',
          class: 'small danger',
          dataset: { testid: 'admin-revoke' },
          onclick: (e) => busy(e.target, error, async () => {
            await api(`/admin/trackers/${seg(t.tracker_id)}/revoke`, { method: 'POST' });
            await loadTrackers(null);
          }),
        }, 'Revoke'))));
    }
    after = body.next_after || null;
    more.hidden = !after;
  };
  more.addEventListener('click', (e) => busy(e.target, error, () => loadTrackers(after)));

  // --- dead letters ---
  const letters = h('ul', { class: 'letters', dataset: { testid: 'dead-letters' } });
  const loadLetters = async () => {
    const body = await api(`/dead-letters${query({ limit: PAGE })}`);
    if (!body.dead_letters.length) {
      replace(letters, h('li', { class: 'muted', dataset: { testid: 'no-dead-letters' } }, 'No dead letters.'));
      return;
    }
    replace(letters, body.dead_letters.slice().reverse().map((d) => h('li', { class: `letter ${d.resolved_at ? 'resolved' : ''}`, dataset: { testid: 'dead-letter', letterId: d.id } },
      h('div', null, h('strong', null, d.tracker_id || '(no tracker)'), ' ', h('span', { class: 'muted small' }, `${dateTime(d.received_at)} · ${d.topic}`)),
      h('div', { dataset: { testid: 'dead-letter-reason' } }, d.resolved_at ? `stored after a re-run (${dateTime(d.resolved_at)})` : d.reason),
      h('pre', { class: 'payload' }, d.payload_text !== undefined ? d.payload_text : `base64: ${d.payload_base64}`),
      d.resolved_at ? null : h('button', {
        type: 'button',
        class: 'small',
        dataset: { testid: 'dead-letter-retry' },
        onclick: (e) => busy(e.target, error, async () => {
          const out = await api(`/dead-letters/${d.id}/retry`, { method: 'POST' });
          ctx.notify(out.stored ? `Dead letter ${d.id} stored.` : `Dead letter ${d.id} still refused: ${out.reason}`, { testid: 'retried' });
          await loadLetters();
        }),
      }, 'Re-run'))));
  };
  const retryAll = h('button', {
    type: 'button',
    class: 'small',
    dataset: { testid: 'dead-letters-retry-all' },
    onclick: (e) => busy(e.target, error, async () => {
      const out = await api('/dead-letters/retry', { method: 'POST', body: {} });
      ctx.notify(`Re-ran ${out.retried}: ${out.stored} stored.`, { testid: 'retried' });
      await loadLetters();
    }),
  }, 'Re-run all unresolved');

  replace(ctx.panel, h('div', { class: 'screen' },
    h('h1', null, 'Operators'),
    error,
    provision,
    provisioned,
    h('section', { class: 'card' }, h('h2', null, 'Collars'),
      h('div', { class: 'table-wrap' }, h('table', { class: 'table' },
        h('thead', null, h('tr', null, ['Tracker', 'Pet', 'State', 'Last seen', ''].map((t) => h('th', { scope: 'col' }, t)))),
        trackers)),
      more),
    h('section', { class: 'card' }, h('div', { class: 'screen-head' }, h('h2', null, 'Dead letters'), retryAll), letters)));
  Promise.all([loadTrackers(null), loadLetters()]).catch((err) => showError(error, err));
  return () => {};
}
