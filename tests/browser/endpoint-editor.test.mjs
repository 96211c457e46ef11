// Browser test of the endpoint page and its transformation editor, against a
// running `hookit demo` (same environment as dashboard.test.mjs):
//
//   HOOKIT_URL        base URL of the running server (required)
//   HOOKIT_API_KEY    an API key accepted by that server (required)
//   HOOKIT_ARTIFACTS  where screenshots go (default: artifacts/)
//   CHROMIUM_PATH     browser binary (default: /usr/bin/chromium)
//
// The test makes its own endpoint through the API, so it depends on no demo
// traffic. The endpoint points at a closed loopback port (the demo allows
// loopback targets): nothing is ever delivered to it, since its event types
// match no demo event and the one test event it gets is cancelled by its
// transformation before anything goes on the wire.
//
// Every wait is bounded and polls the DOM; there are no fixed sleeps.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';

const BASE_URL = (process.env.HOOKIT_URL || '').replace(/\/+$/, '');
const API_KEY = process.env.HOOKIT_API_KEY || '';
const ARTIFACTS = path.resolve(process.env.HOOKIT_ARTIFACTS || 'artifacts');
const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';

const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

const T_UI = 15_000; // the page reacting to a click (a run or save is one API call)
const T_LOAD = 30_000; // first data from the API
const T_DELIVERY = 60_000; // the worker claiming and finishing one delivery

const sel = {
  editor: '[data-testid="transformation-editor"]',
  code: '[data-testid="tf-code"]',
  gutter: '[data-testid="tf-code-gutter"]',
  eventType: '[data-testid="tf-event-type"]',
  payload: '[data-testid="tf-payload"]',
  payloadError: '[data-testid="tf-payload-error"]',
  run: '[data-testid="tf-run"]',
  save: '[data-testid="tf-save"]',
  remove: '[data-testid="tf-remove"]',
  state: '[data-testid="tf-state"]',
  output: '[data-testid="tf-output"]',
  outputPayload: '[data-testid="tf-output-payload"]',
  outputError: '[data-testid="tf-output-error-text"]',
  saveProblem: '[data-testid="tf-save-problem"]',
};

// A handler that reshapes the Standard Webhooks envelope it is given.
const RESHAPE = `function handler(webhook) {
  const { type, data } = webhook.payload;
  webhook.payload = { kind: type, total: data.amount * 2, currency: data.currency };
  webhook.headers['X-Reshaped'] = 'yes';
  return webhook;
}
`;
// Throws on line 3.
const THROWS = `function handler(webhook) {
  const amount = webhook.payload.data.amount;
  throw new Error('amount too large: ' + amount);
}
`;
// Does not compile: line 2 is not an expression.
const SYNTAX_ERROR = `function handler(webhook) {
  const total = ;
  return webhook;
}
`;
const CANCEL = `function handler(webhook) {
  webhook.cancel = true;
  return webhook;
}
`;

let context;
let page;
let profile;
let endpoint;
const pageErrors = [];
const consoleErrors = [];
let transformRuns = 0; // requests the page made to /v1/transformations/test

/** Call the API directly (not through the page), as a second client would. */
async function callApi(p, { method = 'GET', body } = {}) {
  const res = await fetch(`${BASE_URL}${p}`, {
    method,
    headers: { Authorization: `Bearer ${API_KEY}`, 'Content-Type': 'application/json', Accept: 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  assert.ok(res.ok, `${method} ${p} answered ${res.status}: ${text}`);
  return text ? JSON.parse(text) : null;
}

const shot = (name) => page.screenshot({ path: path.join(ARTIFACTS, name), fullPage: true });

/** Open the endpoint page through its link in the endpoint list. */
async function openEndpointPage() {
  await page.evaluate(() => { location.hash = '#/endpoints'; });
  const link = page.locator(`[data-testid="endpoint-row"][data-endpoint-id="${endpoint.id}"] a[data-testid="endpoint-url"]`);
  await link.waitFor({ state: 'visible', timeout: T_LOAD });
  await link.click();
  await page.waitForSelector(sel.editor, { state: 'visible', timeout: T_LOAD });
  assert.equal(new URL(page.url()).hash, `#/endpoints/${endpoint.id}`);
}

/** Replace the handler code (fill() sends the input event the editor listens to). */
const setCode = (code) => page.fill(sel.code, code);

/** Click Run and wait for the result of that run. */
async function runSample() {
  const before = transformRuns;
  await page.click(sel.run);
  await page.waitForFunction((s) => {
    const out = document.querySelector(s);
    return out && out.dataset.outcome && out.getAttribute('aria-busy') !== 'true';
  }, sel.output, { timeout: T_UI });
  await page.waitForFunction(() => !document.querySelector('[data-testid="tf-run"]').hasAttribute('aria-busy'), null, { timeout: T_UI });
  assert.equal(transformRuns, before + 1, 'one run, one request');
  return page.getAttribute(sel.output, 'data-outcome');
}

/** Whether the gutter marks `line` (and no other). */
const markedLines = () => page.$$eval(`${sel.gutter} .is-marked`, (els) => els.map((el) => Number(el.dataset.line)));

/** The caret's line in the editor (1-based) and whether the editor has focus. */
const caret = () => page.$eval(sel.code, (ta) => ({
  line: ta.value.slice(0, ta.selectionStart).split('\n').length,
  focused: document.activeElement === ta,
}));

before(async () => {
  assert.ok(BASE_URL, 'HOOKIT_URL is not set (see dashboard.test.mjs).');
  assert.ok(API_KEY, 'HOOKIT_API_KEY is not set (see dashboard.test.mjs).');
  assert.ok(fs.existsSync(CHROMIUM), `No browser at ${CHROMIUM}. Install Debian's chromium or set CHROMIUM_PATH.`);
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  endpoint = await callApi('/v1/endpoints', {
    method: 'POST',
    body: {
      // Port 9 (discard) on loopback: never listened on in the test, never reached.
      url: 'http://127.0.0.1:9/editor-test',
      description: 'Browser test: transformation editor',
      event_types: ['editortest.*', 'editortest.ran'],
      headers: { 'X-Team': 'payments' },
    },
  });
  assert.equal(endpoint.transformation, null, 'a new endpoint has no transformation');

  profile = fs.mkdtempSync(path.join(os.tmpdir(), 'hookit-chromium-'));
  context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS, viewport: { width: 1440, height: 900 }, timeout: 60_000,
  });
  page = context.pages()[0] || await context.newPage();
  page.setDefaultTimeout(T_UI);
  page.on('pageerror', (err) => pageErrors.push(String(err && err.stack || err)));
  page.on('console', (msg) => { if (msg.type() === 'error') consoleErrors.push(msg.text()); });
  page.on('request', (req) => { if (new URL(req.url()).pathname === '/v1/transformations/test') transformRuns++; });

  await page.goto(`${BASE_URL}/`, { waitUntil: 'domcontentloaded', timeout: T_LOAD });
  await page.fill('[data-testid="api-key-input"]', API_KEY);
  await page.click('[data-testid="signin-submit"]');
  await page.waitForSelector('[data-testid="endpoint-row"]', { state: 'visible', timeout: T_LOAD });
});

after(async () => {
  if (consoleErrors.length) console.error(`browser console errors:\n${consoleErrors.slice(-20).join('\n')}`);
  if (context) await context.close().catch(() => {});
  if (profile) fs.rmSync(profile, { recursive: true, force: true });
  if (endpoint) await callApi(`/v1/endpoints/${encodeURIComponent(endpoint.id)}`, { method: 'DELETE' }).catch(() => {});
});

/** Run `fn`; on failure, save a screenshot named after the test and say which step failed. */
async function withFailureShot(t, name, fn) {
  let current = 'start';
  const step = async (what, body) => { current = what; t.diagnostic(`step: ${what}`); return body(); };
  try {
    await fn(step);
    assert.deepEqual(pageErrors, [], 'uncaught errors in the page');
  } catch (err) {
    await page.screenshot({ path: path.join(ARTIFACTS, `${name}-failure.png`), fullPage: true }).catch(() => {});
    err.message = `[step: ${current}] ${err.message}`;
    throw err;
  }
}

test('endpoint page: settings, and a transformation run on a sample event (output, bad JSON, error line)', { timeout: 180_000 }, async (t) => {
  await withFailureShot(t, 'endpoint-editor-run', async (step) => {
    await step('open the endpoint page from the list', async () => {
      await openEndpointPage();
      assert.equal(await page.textContent('[data-testid="endpoint-detail-url"]'), endpoint.url);
      assert.match(await page.textContent('[data-testid="endpoint-detail-event-types"]'), /editortest\.ran/);
      assert.match(await page.textContent('[data-testid="endpoint-detail-headers"]'), /X-Team: payments/i);
      assert.match(await page.textContent('[data-testid="endpoint-detail-circuit"]'), /Closed/);
      assert.match(await page.textContent('[data-testid="endpoint-detail-order"]'), /^Concurrent/);
      assert.equal(await page.getAttribute('[data-testid="endpoint-deliveries-link"]', 'href'), `#/deliveries?endpoint_id=${endpoint.id}`);
      // No transformation yet: the starter template, and a sample of the endpoint's first exact event type.
      assert.match(await page.inputValue(sel.code), /^function handler\(webhook\) \{/);
      assert.equal(await page.getAttribute(sel.state, 'data-state'), 'none');
      assert.equal(await page.inputValue(sel.eventType), 'editortest.ran');
      assert.equal(JSON.parse(await page.inputValue(sel.payload)).test, true);
      // Labelled controls.
      assert.equal(await page.getByLabel('Handler code', { exact: true }).getAttribute('data-testid'), 'tf-code');
      assert.equal(await page.getByLabel('Payload (JSON)', { exact: true }).getAttribute('data-testid'), 'tf-payload');
    });

    await step('pause and resume from the page', async () => {
      await page.click('[data-testid="endpoint-pause-toggle"][data-action="pause"]');
      await page.waitForFunction(() => /Paused/.test(document.querySelector('[data-testid="endpoint-detail-status"]').textContent), null, { timeout: T_UI });
      await page.click('[data-testid="endpoint-pause-toggle"][data-action="resume"]');
      await page.waitForFunction(() => document.querySelector('[data-testid="endpoint-detail-status"]').textContent === 'Active', null, { timeout: T_UI });
    });

    await step('run a handler that reshapes the payload', async () => {
      await setCode(RESHAPE);
      assert.equal(await page.getAttribute(sel.state, 'data-state'), 'unsaved');
      await page.fill(sel.payload, '{"amount": 21, "currency": "EUR"}');
      assert.equal(await runSample(), 'send');
      const body = JSON.parse(await page.textContent(sel.outputPayload));
      assert.deepEqual(body, { kind: 'editortest.ran', total: 42, currency: 'EUR' });
      assert.equal(await page.textContent('[data-testid="tf-output-method"]'), 'POST');
      assert.equal(await page.textContent('[data-testid="tf-output-url"]'), endpoint.url);
      const headers = await page.textContent('[data-testid="tf-output-headers"]');
      assert.match(headers, /X-Reshaped\s*yes/i, 'the header the handler added');
      assert.match(headers, /X-Team\s*payments/i, "the endpoint's own header, as the handler saw it");
      assert.deepEqual(await markedLines(), []);
      await shot('dashboard-endpoint-editor.png');
    });

    await step('a payload that is not JSON is refused next to its box, without a request', async () => {
      const before = transformRuns;
      await page.fill(sel.payload, '{"amount": ');
      await page.click(sel.run);
      await page.waitForFunction((s) => /not valid JSON/.test(document.querySelector(s).textContent), sel.payloadError, { timeout: T_UI });
      assert.equal(await page.getAttribute(sel.payload, 'aria-invalid'), 'true');
      assert.equal(transformRuns, before, 'no request for a payload that is not JSON');
      assert.equal(await page.getAttribute(sel.output, 'data-outcome'), 'send', 'the previous result stays');
    });

    await step('code that throws on line 3: the error and its line', async () => {
      await page.fill(sel.payload, '{"amount": 21}');
      await setCode(THROWS);
      assert.equal(await runSample(), 'error');
      assert.equal(await page.textContent(sel.payloadError), '', 'the payload error is gone once the JSON is valid');
      assert.match(await page.textContent(sel.outputError), /amount too large: 21/);
      assert.match(await page.textContent('[data-testid="tf-output-error"]'), /line 3/);
      assert.deepEqual(await markedLines(), [3], 'line 3 is marked in the gutter');
      assert.equal(await page.getAttribute(sel.gutter, 'data-marked-line'), '3');
      assert.deepEqual(await caret(), { line: 3, focused: true }, 'the caret is on line 3');
      await shot('dashboard-endpoint-editor-error.png');
      // Editing the code takes the (now stale) mark away.
      await page.keyboard.type(' ');
      assert.deepEqual(await markedLines(), []);
    });

    await step('a handler that cancels: the delivery would be skipped (run with Ctrl+Enter)', async () => {
      await setCode(CANCEL);
      const before = transformRuns;
      await page.focus(sel.code);
      await page.keyboard.press('Control+Enter');
      await page.waitForSelector(`${sel.output}[data-outcome="cancel"] [data-testid="tf-output-skipped"]`, { timeout: T_UI });
      assert.equal(transformRuns, before + 1);
    });
  });
});

test('endpoint page: save, refuse and remove a transformation; a cancelled delivery shows as skipped', { timeout: 180_000 }, async (t) => {
  await withFailureShot(t, 'endpoint-editor-save', async (step) => {
    const epPath = `/v1/endpoints/${encodeURIComponent(endpoint.id)}`;

    await step('open the endpoint page', openEndpointPage);

    await step('save valid code', async () => {
      await setCode(RESHAPE);
      await page.click(sel.save);
      await page.waitForSelector(`${sel.state}[data-state="saved"]`, { timeout: T_UI });
      assert.equal((await callApi(epPath)).transformation, RESHAPE);
      await page.locator(sel.remove).waitFor({ state: 'visible' });
    });

    await step('save code that does not compile: the problem, its line, and the stored code unchanged', async () => {
      await setCode(SYNTAX_ERROR);
      await page.click(sel.save);
      await page.waitForSelector(sel.saveProblem, { state: 'visible', timeout: T_UI });
      const problem = await page.textContent(sel.saveProblem);
      assert.match(problem, /does not compile/);
      assert.match(problem, /line 2/);
      assert.deepEqual(await markedLines(), [2], 'line 2 is marked in the gutter');
      assert.deepEqual(await caret(), { line: 2, focused: true });
      assert.equal(await page.getAttribute(sel.state, 'data-state'), 'unsaved');
      assert.equal((await callApi(epPath)).transformation, RESHAPE, 'the stored code is unchanged');
      await shot('dashboard-endpoint-editor-refused.png');
    });

    await step('a reload shows the stored code', async () => {
      await page.reload({ waitUntil: 'domcontentloaded', timeout: T_LOAD });
      await page.waitForSelector(sel.editor, { state: 'visible', timeout: T_LOAD });
      assert.equal(await page.inputValue(sel.code), RESHAPE);
      assert.equal(await page.getAttribute(sel.state, 'data-state'), 'saved');
    });

    const deliveryId = await step('save a cancelling handler and send a test event: skipped, not sent', async () => {
      await setCode(CANCEL);
      await page.click(sel.save);
      await page.waitForSelector(`${sel.state}[data-state="saved"]`, { timeout: T_UI });
      const evt = await callApi(`${epPath}/test`, { method: 'POST', body: {} });
      // Wait for the worker to finish the delivery.
      for (const deadline = Date.now() + T_DELIVERY; ;) {
        const res = await callApi(`/v1/deliveries?endpoint_id=${encodeURIComponent(endpoint.id)}&event_id=${encodeURIComponent(evt.id)}`);
        const d = (res.data || [])[0];
        if (d && d.status === 'skipped') return d.id;
        assert.ok(Date.now() < deadline, `delivery of ${evt.id} not skipped in time: ${JSON.stringify(d)}`);
        await new Promise((resolve) => setTimeout(resolve, 250));
      }
    });

    await step('the delivery page shows the skip', async () => {
      await page.evaluate((id) => { location.hash = `#/deliveries/${encodeURIComponent(id)}`; }, deliveryId);
      await page.waitForSelector('[data-testid="delivery-detail"][data-status="skipped"]', { timeout: T_LOAD });
      assert.equal(await page.textContent('[data-testid="delivery-detail"] [data-testid="delivery-status"]'), 'Skipped');
      const notSent = page.locator('[data-testid="attempt-row"] [data-testid="attempt-not-sent"]').first();
      await notSent.waitFor({ state: 'visible', timeout: T_UI });
      assert.equal(await notSent.textContent(), 'not sent (transformation)');
      // A skipped delivery is finished, so it can be redriven.
      assert.equal(await page.getAttribute('[data-testid="delivery-redrive"]', 'aria-disabled'), null);
    });

    await step('remove the transformation (confirmed)', async () => {
      await openEndpointPage();
      await page.click(sel.remove);
      await page.waitForSelector('[data-testid="confirm-dialog"][open]', { state: 'visible', timeout: T_UI });
      await page.click('[data-testid="confirm-dialog-confirm"]');
      await page.waitForSelector(`${sel.state}[data-state="none"]`, { timeout: T_UI });
      assert.equal((await callApi(epPath)).transformation, null);
      assert.match(await page.inputValue(sel.code), /^function handler\(webhook\) \{/, 'the starter template is back');
      assert.ok(await page.locator(sel.remove).isHidden(), 'nothing left to remove');
    });
  });
});
