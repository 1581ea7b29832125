// Applications: API keys for scripts and integrations. A key is shown once, when it is made;
// afterwards only its name, scope and use are listed.

import { h, replace, field, errorBox, showError, busy, secretBox } from '../lib/dom.js';
import { api } from '../lib/api.js';
import { dateTime } from '../lib/format.js';

export function render(ctx) {
  const list = h('ul', { class: 'keys', dataset: { testid: 'key-list' } });
  const error = errorBox();
  const created = h('div');

  const load = async () => {
    const keys = await api('/api-keys');
    if (!keys.length) {
      replace(list, h('li', { class: 'muted', dataset: { testid: 'no-keys' } }, 'No API keys.'));
      return;
    }
    replace(list, keys.map((k) => h('li', { class: 'key', dataset: { testid: 'key', keyId: k.id } },
      h('div', null, h('strong', null, k.name), ' ', h('span', { class: `tag ${k.scope}` }, k.scope === 'read' ? 'read only' : 'full access')),
      h('div', { class: 'muted small' }, `created ${dateTime(k.created_at)} · ${k.last_used_at ? `last used ${dateTime(k.last_used_at)}` : 'never used'}`),
      h('button', {
        type: 'button',
        class: 'small danger',
        dataset: { testid: 'key-revoke' },
        onclick: (e) => busy(e.target, error, async () => {
          await api(`/api-keys/${k.id}`, { method: 'DELETE' });
          await load();
        }),
      }, 'Revoke'))));
  };

  const name = h('input', { type: 'text', required: true, maxlength: 100, placeholder: 'home dashboard', dataset: { testid: 'key-name' } });
  const scope = h('select', { dataset: { testid: 'key-scope' } },
    h('option', { value: 'read' }, 'Read only'),
    h('option', { value: 'full' }, 'Full access (can change things)'));
  const button = h('button', { type: 'submit', class: 'primary', dataset: { testid: 'key-create' } }, 'Create key');
  const form = h('form', {
    class: 'card stack',
    onsubmit: (e) => {
      e.preventDefault();
      busy(button, error, async () => {
        const key = await api('/api-keys', { method: 'POST', body: { name: name.value.trim(), scope: scope.value } });
        name.value = '';
        replace(created, h('div', { class: 'card highlight', dataset: { testid: 'key-created' } },
          secretBox(`API key “${key.name}” — shown only now. Copy it into your application:`, key.key, 'new-key'),
          h('p', { class: 'muted small' }, 'Use it as ', h('code', null, 'Authorization: Bearer <key>'), ' on /api/v1 (docs/api.md).')));
        await load();
      });
    },
  }, h('h2', null, 'New API key'), field('Name', name), field('Scope', scope), button);

  replace(ctx.panel, h('div', { class: 'screen' },
    h('h1', null, 'Applications'),
    h('p', { class: 'muted' }, 'API keys let scripts and other applications use the API as you.'),
    form, error, created,
    h('h2', null, 'Your keys'), list));
  load().catch((err) => showError(error, err));
  return () => {};
}
