// Safe zones: draw circles and polygons on the map (leaflet-geoman), or make a circle from the
// keyboard; edit shapes, assign them to pets, delete them. A pet leaving its zone raises an
// alert that every open session of its owner and members sees at once.

import { h, replace, field, errorBox, showError, busy } from '../lib/dom.js';
import { api } from '../lib/api.js';
import { state } from '../lib/store.js';
import { distance, petName } from '../lib/format.js';

function ownedPets() {
  return [...state.pets.values()].filter((p) => p.role === 'owner').sort((a, b) => petName(a).localeCompare(petName(b)));
}

function petChecks(selected) {
  const pets = ownedPets();
  if (!pets.length) return { el: h('p', { class: 'muted' }, 'You own no pets to assign.'), values: () => [] };
  const boxes = pets.map((p) => h('input', { type: 'checkbox', value: p.id, checked: selected.includes(p.id), dataset: { testid: 'zone-pet', trackerId: p.id } }));
  return {
    el: h('fieldset', { class: 'checks' }, h('legend', null, 'Pets it keeps safe'),
      pets.map((p, i) => h('label', { class: 'toggle' }, boxes[i], petName(p)))),
    values: () => boxes.filter((b) => b.checked).map((b) => b.value),
  };
}

function describe(zone) {
  if (zone.shape.type === 'circle') return `circle, ${distance(zone.shape.radius_m)} radius`;
  return `polygon, ${zone.shape.coordinates[0].length - 1} corners`;
}

export function render(ctx) {
  let zones = [];
  const list = h('ul', { class: 'zones', dataset: { testid: 'zone-list' } });
  const error = errorBox();
  const work = h('div', { class: 'zone-work' });
  let editing = null;

  let fitted = false;
  const reload = async () => {
    const body = await api('/geofences');
    zones = body.geofences;
    await ctx.map.geoman();
    ctx.map.setZones(zones);
    if (!fitted) {
      fitted = true;
      // The selected pet's zone, or all of them.
      const mine = zones.find((z) => z.trackers.includes(state.selected));
      if (mine) ctx.map.fitZone(mine.id);
      else ctx.map.fitZones();
    }
    renderList();
  };

  const renderList = () => {
    if (!zones.length) {
      replace(list, h('li', { class: 'muted', dataset: { testid: 'no-zones' } }, 'No safe zones yet. Draw one around home.'));
      return;
    }
    replace(list, zones.map((zone) => {
      const names = zone.trackers.map((id) => petName(state.pets.get(id)) || id);
      let confirmDelete = false;
      const del = h('button', {
        type: 'button',
        class: 'small danger',
        dataset: { testid: 'zone-delete' },
        onclick: (e) => {
          if (!confirmDelete) {
            confirmDelete = true;
            e.target.textContent = 'Really delete?';
            return;
          }
          busy(e.target, error, async () => {
            await api(`/geofences/${zone.id}`, { method: 'DELETE' });
            await reload();
          });
        },
      }, 'Delete');
      return h('li', { class: 'zone', dataset: { testid: 'zone', zoneId: zone.id } },
        h('div', null, h('strong', { dataset: { testid: 'zone-name' } }, zone.name), ' ', h('span', { class: 'muted' }, describe(zone))),
        h('div', { class: 'muted small', dataset: { testid: 'zone-pets' } }, names.length ? `Keeps safe: ${names.join(', ')}` : 'No pets assigned'),
        h('div', { class: 'row' },
          h('button', { type: 'button', class: 'small ghost', dataset: { testid: 'zone-show' }, onclick: () => ctx.map.fitZone(zone.id) }, 'Show'),
          h('button', { type: 'button', class: 'small', dataset: { testid: 'zone-edit' }, onclick: () => startEdit(zone) }, 'Edit'),
          del));
    }));
  };

  const startEdit = async (zone) => {
    if (editing) ctx.map.finishEdit(editing);
    editing = zone.id;
    ctx.map.fitZone(zone.id);
    await ctx.map.editZone(zone.id);
    const name = h('input', { type: 'text', required: true, maxlength: 100, value: zone.name, dataset: { testid: 'zone-name-input' } });
    const checks = petChecks(zone.trackers);
    const save = h('button', { type: 'submit', class: 'primary', dataset: { testid: 'zone-save' } }, 'Save');
    const formError = errorBox();
    replace(work, h('form', {
      class: 'card stack',
      onsubmit: (e) => {
        e.preventDefault();
        busy(save, formError, async () => {
          const shape = ctx.map.finishEdit(zone.id);
          await api(`/geofences/${zone.id}`, { method: 'PATCH', body: { name: name.value.trim(), shape, trackers: checks.values() } });
          editing = null;
          replace(work);
          await reload();
        });
      },
    },
    h('h2', null, 'Edit zone'),
    h('p', { class: 'muted small' }, 'Drag the corners or the circle’s edge on the map.'),
    field('Name', name), checks.el, formError,
    h('div', { class: 'row' }, save, h('button', {
      type: 'button',
      class: 'ghost',
      onclick: async () => {
        editing = null;
        replace(work);
        await reload();
      },
    }, 'Cancel'))));
  };

  /** After a shape was drawn: name it and pick its pets. */
  const nameNew = (shape) => {
    const name = h('input', { type: 'text', required: true, maxlength: 100, value: 'Home', dataset: { testid: 'zone-name-input' } });
    const checks = petChecks(state.selected && state.pets.get(state.selected)?.role === 'owner' ? [state.selected] : []);
    const save = h('button', { type: 'submit', class: 'primary', dataset: { testid: 'zone-save' } }, 'Save zone');
    const formError = errorBox();
    replace(work, h('form', {
      class: 'card stack',
      dataset: { testid: 'zone-new' },
      onsubmit: (e) => {
        e.preventDefault();
        busy(save, formError, async () => {
          await api('/geofences', { method: 'POST', body: { name: name.value.trim(), shape, trackers: checks.values() } });
          replace(work);
          await reload();
          ctx.notify(`Safe zone “${name.value.trim()}” saved.`, { testid: 'zone-saved' });
        });
      },
    },
    h('h2', null, 'New safe zone'),
    h('p', { class: 'muted small' }, describe({ shape })),
    field('Name', name), checks.el, formError,
    h('div', { class: 'row' }, save, h('button', { type: 'button', class: 'ghost', onclick: () => replace(work) }, 'Discard'))));
    name.focus();
    name.select();
  };

  const drawing = async (kind) => {
    replace(work, h('div', { class: 'card', role: 'status', dataset: { testid: 'drawing-hint' } },
      kind === 'circle' ? 'Click the centre on the map, then click again at the edge.' : 'Click each corner on the map; click the first one again to finish.',
      ' ',
      h('button', { type: 'button', class: 'small ghost', onclick: () => ctx.map.cancelDraw() }, 'Cancel')));
    const shape = await ctx.map.draw(kind);
    if (shape) nameNew(shape);
    else replace(work);
  };

  replace(ctx.panel, h('div', { class: 'screen' },
    h('h1', null, 'Safe zones'),
    h('div', { class: 'row' },
      h('button', { type: 'button', dataset: { testid: 'draw-circle' }, onclick: (e) => busy(e.target, error, () => drawing('circle')) }, 'Draw a circle'),
      h('button', { type: 'button', dataset: { testid: 'draw-polygon' }, onclick: (e) => busy(e.target, error, () => drawing('polygon')) }, 'Draw a polygon'),
      h('button', {
        type: 'button',
        class: 'ghost',
        dataset: { testid: 'circle-here' },
        onclick: () => {
          const c = ctx.map.centre();
          nameNew({ type: 'circle', center: [c.lon, c.lat], radius_m: c.radius });
        },
      }, 'Circle at the map’s centre')),
    error,
    work,
    list));
  reload().catch((err) => showError(error, err));
  return () => {
    ctx.map.cancelDraw();
    if (editing) ctx.map.finishEdit(editing);
    ctx.map.clearZones();
  };
}
