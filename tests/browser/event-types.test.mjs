// Browser test of the dashboard's Event types view against a running `hookit demo`
// (same environment as dashboard.test.mjs: HOOKIT_URL, HOOKIT_API_KEY,
// HOOKIT_ARTIFACTS, CHROMIUM_PATH).
//
// It writes its own types through the API (names under `browser-test.`, so it
// does not disturb what the demo shows), then checks the view lists them with
// their schema, example and deprecation. Every wait is bounded and polls the DOM.

import { test } from 'node:test';
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
const T_UI = 15_000;
const T_LOAD = 30_000;

/** A call to the API with the test's key; fails the test on anything but `expect`. */
async function call(method, p, body, expect) {
  const res = await fetch(`${BASE_URL}${p}`, {
    method,
    headers: { authorization: `Bearer ${API_KEY}`, ...(body ? { 'content-type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await res.text();
  assert.equal(res.status, expect, `${method} ${p} answered ${res.status}: ${text}`);
  return text ? JSON.parse(text) : null;
}

/** Creates `name`, or brings it back to `fields` if an earlier run left it. */
async function ensureType(name, fields) {
  const res = await fetch(`${BASE_URL}/v1/event-types/${name}`, { headers: { authorization: `Bearer ${API_KEY}` } });
  if (res.status === 404) return call('POST', '/v1/event-types', { name, ...fields }, 201);
  return call('PATCH', `/v1/event-types/${name}`, { schema: null, example: null, ...fields, deprecated: false }, 200);
}

test('dashboard: the Event types view lists the catalog with schemas and examples', { timeout: 120_000 }, async (t) => {
  assert.ok(BASE_URL && API_KEY, 'HOOKIT_URL and HOOKIT_API_KEY must be set (see dashboard.test.mjs)');
  assert.ok(fs.existsSync(CHROMIUM), `No browser at ${CHROMIUM}`);
  fs.mkdirSync(ARTIFACTS, { recursive: true });

  const schema = { type: 'object', required: ['id', 'amount'], properties: { id: { type: 'string' }, amount: { type: 'integer', minimum: 0 } } };
  await ensureType('browser-test.order', { description: 'An order, for the browser test.', schema, example: { id: 'o-1', amount: 1999 } });
  await ensureType('browser-test.legacy', { description: '' });
  await call('POST', '/v1/event-types/browser-test.legacy/deprecate', null, 200);

  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'hookit-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS, viewport: { width: 1440, height: 900 }, timeout: 60_000,
  });
  const page = context.pages()[0] || await context.newPage();
  const pageErrors = [];
  page.on('pageerror', (err) => pageErrors.push(String(err && err.stack || err)));
  page.setDefaultTimeout(T_UI);
  try {
    await page.goto(`${BASE_URL}/`, { waitUntil: 'domcontentloaded', timeout: T_LOAD });
    await page.fill('[data-testid="api-key-input"]', API_KEY);
    await page.click('[data-testid="signin-submit"]');
    await page.click('[data-testid="nav-event-types"]');
    await page.waitForURL(/#\/event-types$/);

    const order = page.locator('[data-testid="event-type"][data-name="browser-test.order"]');
    await order.waitFor({ state: 'visible', timeout: T_LOAD });
    t.diagnostic('the view lists the types');
    assert.equal(await order.locator('[data-testid="event-type-description"]').textContent(), 'An order, for the browser test.');
    // The schema and the example, as written, as text (never markup).
    assert.deepEqual(JSON.parse(await order.locator('[data-testid="event-type-schema"]').textContent()), schema);
    assert.deepEqual(JSON.parse(await order.locator('[data-testid="event-type-example"]').textContent()), { id: 'o-1', amount: 1999 });
    assert.equal(await order.locator('[data-testid="event-type-deprecated"]').count(), 0);

    const legacy = page.locator('[data-testid="event-type"][data-name="browser-test.legacy"]');
    await legacy.locator('[data-testid="event-type-deprecated"]').waitFor({ state: 'visible' });
    await legacy.locator('[data-testid="event-type-no-schema"]').waitFor({ state: 'visible' });
    assert.match(await page.locator('[data-testid="event-types-strict"]').textContent(), /strict/i);
    assert.equal(await page.locator('[data-testid="nav-event-types"]').getAttribute('aria-current'), 'page');
    await page.screenshot({ path: path.join(ARTIFACTS, 'event-types.png'), fullPage: true });
    assert.deepEqual(pageErrors, []);
  } finally {
    await context.close();
    fs.rmSync(profile, { recursive: true, force: true });
  }
});
