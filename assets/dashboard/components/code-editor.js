// A plain-text code editor: a monospace <textarea> with a line-number gutter,
// and one line that can be marked (an error) and jumped to.
//
// Deliberately a real <textarea> rather than a contenteditable or a library:
// the browser keeps undo, selection, IME, spell-check off and screen-reader
// support, and nothing here ever parses the code or turns it into markup. Lines
// do not wrap, so every line of text is exactly one gutter row; the gutter
// follows the textarea's scroll with a transform (not its own scrollTop, which
// stops short by the height of the horizontal scrollbar).
//
// Tab is left to the browser (it moves focus), so the editor never traps the
// keyboard; indent with spaces.

import { h } from '../dom.js';

/**
 * Build an editor. `id` and `label` name the textarea (the label is the caller's
 * <label for=id>; `describedBy` points at its hints). Returns the element and
 * the controls the caller needs.
 */
export function codeEditor({ id, value = '', readOnly = false, rows = 14, describedBy, testid }) {
  const textarea = h('textarea', {
    id, class: 'code-editor__input', rows, wrap: 'off', spellcheck: 'false', autocomplete: 'off',
    autocapitalize: 'off', autocorrect: 'off', readonly: readOnly, 'aria-describedby': describedBy, 'data-testid': testid,
  });
  textarea.value = value;
  const lines = h('div', { class: 'code-editor__lines' });
  const gutter = h('div', { class: 'code-editor__gutter', 'aria-hidden': 'true', 'data-testid': testid && `${testid}-gutter` }, lines);
  // A band behind the marked line's text (the textarea is transparent over it).
  const band = h('div', { class: 'code-editor__band', hidden: true });
  const el = h('div', { class: `code-editor${readOnly ? ' code-editor--readonly' : ''}` },
    gutter, h('div', { class: 'code-editor__text' }, band, textarea));

  let marked = null; // the marked line (1-based), or null

  // Line height and top padding from the stylesheet, read when needed so a
  // zoomed or restyled page still lines up.
  const metrics = () => {
    const cs = getComputedStyle(textarea);
    return { lh: parseFloat(cs.lineHeight) || 20, top: parseFloat(cs.paddingTop) || 0 };
  };

  const renumber = () => {
    const count = textarea.value.split('\n').length;
    while (lines.childElementCount < count) {
      const n = lines.childElementCount + 1;
      lines.append(h('div', { class: 'code-editor__num', 'data-line': n }, String(n)));
    }
    while (lines.childElementCount > count) lines.lastElementChild.remove();
    gutter.style.width = `calc(${Math.max(2, String(count).length)}ch + 18px)`;
    for (const num of lines.children) num.classList.toggle('is-marked', Number(num.dataset.line) === marked);
  };

  const follow = () => {
    lines.style.transform = `translateY(${-textarea.scrollTop}px)`;
    if (marked !== null) {
      const { lh, top } = metrics();
      band.style.transform = `translateY(${top + (marked - 1) * lh - textarea.scrollTop}px)`;
      band.style.height = `${lh}px`;
    }
  };

  textarea.addEventListener('input', () => {
    // The marked line came from the code as it was; after an edit it may point
    // at a different line, so the mark goes (the message stays on screen).
    if (marked !== null) unmark();
    renumber();
    follow();
  });
  textarea.addEventListener('scroll', follow);

  function unmark() {
    marked = null;
    band.hidden = true;
    gutter.removeAttribute('data-marked-line');
    renumber();
  }

  renumber();

  return {
    el,
    textarea,
    get value() { return textarea.value; },
    /** Replace the text (clears the mark and scrolls to the top). */
    set value(v) {
      textarea.value = v;
      textarea.scrollTop = 0;
      unmark();
      follow();
    },
    /** Mark line `n` (1-based) in the gutter and behind the text; null or out of range: no mark. */
    mark(n) {
      const count = textarea.value.split('\n').length;
      if (!Number.isInteger(n) || n < 1 || n > count) { unmark(); return; }
      marked = n;
      band.hidden = false;
      gutter.dataset.markedLine = String(n);
      renumber();
      follow();
    },
    unmark,
    /** Put the caret at the start of line `n`, focus the editor and scroll the line into view. */
    goTo(n) {
      const text = textarea.value.split('\n');
      const line = Math.min(Math.max(1, n), text.length);
      let at = 0;
      for (let i = 0; i < line - 1; i++) at += text[i].length + 1;
      textarea.focus({ preventScroll: true });
      textarea.setSelectionRange(at, at);
      const { lh, top } = metrics();
      textarea.scrollTop = Math.max(0, top + (line - 1) * lh - textarea.clientHeight / 3);
      textarea.scrollLeft = 0;
      follow();
    },
  };
}
