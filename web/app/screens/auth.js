// Sign in and create an account.

import { h, field, errorBox, busy } from '../lib/dom.js';
import { signIn, register } from '../lib/session.js';

function card(title, ...children) {
  return h('main', { class: 'auth' },
    h('div', { class: 'auth-card' },
      h('div', { class: 'auth-brand' }, h('img', { src: '/assets/icon.svg', alt: '', width: 40, height: 40 }), h('span', null, 'pettracker')),
      h('h1', null, title),
      ...children));
}

export function signInView(message) {
  const email = h('input', { type: 'email', name: 'email', autocomplete: 'username', required: true, dataset: { testid: 'email' } });
  const password = h('input', { type: 'password', name: 'password', autocomplete: 'current-password', required: true, dataset: { testid: 'password' } });
  const error = errorBox();
  const button = h('button', { type: 'submit', class: 'primary', dataset: { testid: 'sign-in' } }, 'Sign in');
  const form = h('form', {
    class: 'stack',
    dataset: { testid: 'sign-in-form' },
    onsubmit: (e) => {
      e.preventDefault();
      busy(button, error, () => signIn(email.value.trim(), password.value));
    },
  },
  message ? h('p', { class: 'notice-inline', role: 'status', dataset: { testid: 'session-ended' } }, message) : null,
  field('Email', email),
  field('Password', password),
  error,
  button);
  setTimeout(() => email.focus(), 0);
  return card('Sign in', form,
    h('p', { class: 'muted' }, 'New here? ', h('a', { href: '#/register', dataset: { testid: 'to-register' } }, 'Create an account')));
}

export function registerView() {
  const email = h('input', { type: 'email', name: 'email', autocomplete: 'username', required: true, dataset: { testid: 'email' } });
  const password = h('input', { type: 'password', name: 'new-password', autocomplete: 'new-password', required: true, minlength: 10, dataset: { testid: 'password' } });
  const error = errorBox();
  const button = h('button', { type: 'submit', class: 'primary', dataset: { testid: 'register' } }, 'Create account');
  const form = h('form', {
    class: 'stack',
    onsubmit: (e) => {
      e.preventDefault();
      busy(button, error, async () => {
        // The address says where the app will be once signed in, without a second drawing.
        history.replaceState(null, '', '#/pets');
        try {
          await register(email.value.trim(), password.value);
        } catch (err) {
          history.replaceState(null, '', '#/register');
          throw err;
        }
      });
    },
  },
  field('Email', email),
  field('Password', password, 'At least 10 characters, not your email.'),
  error,
  button);
  setTimeout(() => email.focus(), 0);
  return card('Create an account', form,
    h('p', { class: 'muted' }, 'Have an account? ', h('a', { href: '#/signin', dataset: { testid: 'to-sign-in' } }, 'Sign in')));
}
