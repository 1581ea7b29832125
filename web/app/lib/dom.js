// Building the page: every element is made with createElement and every piece of text goes in as
// a text node, so a pet, zone or account named `<img src=x onerror=alert(1)>` is shown as those
// characters. Nothing in the app assigns innerHTML.

/**
 * h('button', {class: 'primary', dataset: {testid: 'x'}, onclick: f}, 'Save', child, ...)
 * Attributes: `class`, `dataset`, `style` (an object), `on<event>` handlers, booleans
 * (`disabled`, `hidden`, ...), anything else with setAttribute. Children: nodes, strings
 * (text), numbers, arrays, null/false (skipped).
 */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  if (attrs) {
    for (const [key, value] of Object.entries(attrs)) {
      if (value === undefined || value === null || value === false) continue;
      if (key === 'class') el.className = value;
      else if (key === 'dataset') Object.assign(el.dataset, value);
      else if (key === 'style') Object.assign(el.style, value);
      else if (key.startsWith('on') && typeof value === 'function') {
        el.addEventListener(key.slice(2), value);
      } else if (key === 'value') el.value = value;
      else if (key === 'checked') el.checked = Boolean(value);
      else if (value === true) el.setAttribute(key, '');
      else el.setAttribute(key, String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else if (child instanceof Node) el.appendChild(child);
    else el.appendChild(document.createTextNode(String(child)));
  }
}

/** Replaces an element's children. */
export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** Sets text only when it changed (cheap for lists updated many times a second). */
export function setText(el, text) {
  const value = String(text);
  if (el.textContent !== value) el.textContent = value;
}

/** A labelled form field: <label>Text <input ...></label>. */
export function field(label, input, hint) {
  return h('label', { class: 'field' }, h('span', { class: 'label' }, label), input,
    hint ? h('span', { class: 'hint' }, hint) : null);
}

/** A message area for a form: role=alert so screen readers announce errors. */
export function errorBox() {
  return h('p', { class: 'error', role: 'alert', hidden: true, dataset: { testid: 'form-error' } });
}

export function showError(box, err) {
  if (!err) {
    box.hidden = true;
    box.textContent = '';
    return;
  }
  box.hidden = false;
  box.textContent = err.message || String(err);
}

/** Runs an async action from a button: disabled while it runs, errors shown in `box`. */
export async function busy(button, box, action) {
  if (box) showError(box, null);
  button.disabled = true;
  try {
    return await action();
  } catch (err) {
    if (box) showError(box, err);
    else throw err;
  } finally {
    button.disabled = false;
  }
}

/** Copies text, falling back to selecting it when the clipboard is unavailable. */
export async function copyText(text, fallbackEl) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    if (fallbackEl) {
      const range = document.createRange();
      range.selectNodeContents(fallbackEl);
      const sel = window.getSelection();
      sel.removeAllRanges();
      sel.addRange(range);
    }
    return false;
  }
}

/** A secret shown once, with a copy button. */
export function secretBox(label, value, testid) {
  const code = h('code', { class: 'secret', dataset: { testid } }, value);
  const status = h('span', { class: 'hint', role: 'status' });
  const copy = h('button', {
    type: 'button',
    class: 'small',
    dataset: { testid: `${testid}-copy` },
    onclick: async () => {
      status.textContent = (await copyText(value, code)) ? 'Copied' : 'Selected: press Ctrl+C';
    },
  }, 'Copy');
  return h('div', { class: 'secret-box' }, h('span', { class: 'label' }, label), code, h('div', { class: 'row' }, copy, status));
}
