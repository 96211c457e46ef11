// DOM building blocks shared by every module: element and SVG factories, a
// query shortcut, and keyed list reconciliation.
//
// Views build the DOM with h()/s() instead of HTML strings, so text from the API
// (URLs, payloads, receiver responses, error messages) can only ever become a
// text node, never markup.

const SVG_NS = 'http://www.w3.org/2000/svg';

/** Create an element. attrs: on* -> listeners, class, dataset via data-*, boolean attrs. */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  applyAttrs(el, attrs);
  appendChildren(el, children);
  return el;
}

/** Like h(), for SVG elements. */
export function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  applyAttrs(el, attrs);
  appendChildren(el, children);
  return el;
}

function applyAttrs(el, attrs) {
  if (!attrs) return;
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') {
      el.addEventListener(k.slice(2).toLowerCase(), v);
    } else if (k === 'text') {
      el.textContent = v;
    } else if (v === true) {
      el.setAttribute(k, '');
    } else {
      el.setAttribute(k, String(v));
    }
  }
}

function appendChildren(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** The first element matching `sel` in `root` (the document by default). */
export const $ = (sel, root = document) => root.querySelector(sel);

/** Replace an element's children; skips null/false and flattens arrays (unlike replaceChildren). */
export function setChildren(el, ...children) {
  el.replaceChildren();
  appendChildren(el, children);
  return el;
}

/**
 * Keyed reconciliation of a list of rows into a container. Rows whose signature
 * is unchanged keep their DOM node; changed rows are rebuilt. Keyboard focus
 * inside a rebuilt row is moved to the matching control of the new row.
 */
export function reconcile(container, items, keyOf, sigOf, build, { flashNew = false } = {}) {
  const existing = new Map();
  for (const el of container.children) if (el.dataset.key) existing.set(el.dataset.key, el);
  const active = document.activeElement;
  let focusKey = null;
  let focusTestId = null;
  if (active && container.contains(active)) {
    const row = active.closest('[data-key]');
    if (row) { focusKey = row.dataset.key; focusTestId = active.dataset.testid || null; }
  }
  const hadRows = existing.size > 0;
  const wanted = [];
  for (const item of items) {
    const key = keyOf(item);
    const sig = sigOf(item);
    let el = existing.get(key);
    if (el && el.dataset.sig === sig) {
      existing.delete(key);
    } else {
      const old = el;
      el = build(item);
      el.dataset.key = key;
      el.dataset.sig = sig;
      if (old) { old.replaceWith(el); existing.delete(key); } else if (flashNew && hadRows) el.classList.add('is-new');
    }
    wanted.push(el);
  }
  for (const el of existing.values()) el.remove();
  wanted.forEach((el, i) => {
    if (container.children[i] !== el) container.insertBefore(el, container.children[i] || null);
  });
  while (container.children.length > wanted.length) container.lastElementChild.remove();
  if (focusKey && !container.contains(document.activeElement)) {
    const row = wanted.find((el) => el.dataset.key === focusKey);
    const target = row && (focusTestId ? row.querySelector(`[data-testid="${focusTestId}"]`) : null);
    if (target && !target.disabled) target.focus();
  }
}
