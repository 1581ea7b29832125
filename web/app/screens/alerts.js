// Alerts: newest first, acknowledged by the pet's owner. New ones arrive over the live feed and
// also show as a notice on whatever screen is open.

import { h, replace, errorBox, busy } from '../lib/dom.js';
import { api } from '../lib/api.js';
import { state, on, emit } from '../lib/store.js';
import { alertText, dateTime, petName } from '../lib/format.js';

const SHOWN = 200;

export function render(ctx) {
  const list = h('ul', { class: 'alerts', dataset: { testid: 'alert-list' } });
  const error = errorBox();
  const onlyOpen = h('input', { type: 'checkbox', dataset: { testid: 'alerts-open-only' } });

  const draw = () => {
    const shown = state.alerts.filter((a) => !onlyOpen.checked || !a.acked_at).slice(0, SHOWN);
    if (!shown.length) {
      replace(list, h('li', { class: 'muted', dataset: { testid: 'no-alerts' } }, onlyOpen.checked ? 'Nothing left to acknowledge.' : 'No alerts.'));
      return;
    }
    replace(list, shown.map((a) => {
      const pet = state.pets.get(a.tracker_id);
      const owner = pet && pet.role === 'owner';
      const d = a.details || {};
      const where = Number.isFinite(d.lat) && Number.isFinite(d.lon);
      return h('li', { class: `alert ${a.acked_at ? 'acked' : 'open'}`, dataset: { testid: 'alert', alertId: a.id, trackerId: a.tracker_id, kind: a.kind } },
        h('div', null, h('strong', null, alertText(a, petName(pet) || a.tracker_id))),
        h('div', { class: 'muted small' }, dateTime(a.at), a.acked_at ? ` · acknowledged ${dateTime(a.acked_at)}` : ''),
        h('div', { class: 'row' },
          where ? h('button', {
            type: 'button',
            class: 'small ghost',
            dataset: { testid: 'alert-where' },
            onclick: () => ctx.map.showSpot(d.lat, d.lon),
          }, 'Where') : null,
          !a.acked_at && owner ? h('button', {
          type: 'button',
          class: 'small',
          dataset: { testid: 'alert-ack' },
          onclick: (e) => busy(e.target, error, async () => {
            const acked = await api(`/alerts/${a.id}/ack`, { method: 'POST' });
            Object.assign(a, acked);
            emit('alerts-changed', {});
          }),
        }, 'Acknowledge') : null));
    }));
  };

  replace(ctx.panel, h('div', { class: 'screen' },
    h('div', { class: 'screen-head' }, h('h1', null, 'Alerts'), h('label', { class: 'toggle' }, onlyOpen, 'Open only')),
    error,
    list));
  onlyOpen.addEventListener('change', draw);
  draw();
  const off = on('alerts-changed', draw);
  return () => {
    off();
    ctx.map.clearSpot();
  };
}
