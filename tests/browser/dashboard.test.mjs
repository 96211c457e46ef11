// End-to-end browser test of the HookIt dashboard against a running `hookit demo`.
//
//   HOOKIT_URL        base URL of the running server, e.g. http://127.0.0.1:8080 (required)
//   HOOKIT_API_KEY    an API key accepted by that server (required)
//   HOOKIT_ARTIFACTS  where screenshots go (default: artifacts/, relative to the working directory)
//   CHROMIUM_PATH     browser binary (default: /usr/bin/chromium, Debian's chromium package)
//   HOOKIT_DEMO_ENDPOINT_ID  optional: id of the endpoint that points at the demo receiver
//
// Run: cd tests/browser && npm ci && node --test
//
// Every wait is bounded and polls the DOM; there are no fixed sleeps.

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
const DEMO_ENDPOINT_ID = process.env.HOOKIT_DEMO_ENDPOINT_ID || '';

const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

// Bounded waits (milliseconds).
const T_UI = 15_000; // the page reacting to a click
const T_LOAD = 30_000; // first data from the API
const T_DELIVERY = 90_000; // retries / redelivery in demo mode (4 attempts, ~1 s, 2 s, 4 s apart: dead in under 10 s)

const sel = {
  signinForm: '[data-testid="signin-form"]',
  keyInput: '[data-testid="api-key-input"]',
  signinSubmit: '[data-testid="signin-submit"]',
  endpointRow: '[data-testid="endpoint-row"]',
  demoPanel: '[data-testid="demo-panel"]',
  demoMode: (m) => `[data-testid="demo-mode-${m}"]`,
  chartSvg: '[data-testid="activity-chart"] svg[role="img"]',
  navDeadLetters: '[data-testid="nav-dead-letters"]',
  navDeliveries: '[data-testid="nav-deliveries"]',
  deadLettersEndpoint: '[data-testid="dead-letters-endpoint"]',
  deliveriesEndpoint: '[data-testid="filter-endpoint"]',
  deadRow: '[data-testid="delivery-row"][data-status="dead"]',
  redriveAll: '[data-testid="redrive-all"]',
  confirmDialog: '[data-testid="confirm-dialog"]',
  confirmButton: '[data-testid="confirm-dialog-confirm"]',
  redriveCount: '[data-testid="redrive-count"]',
  signout: '[data-testid="signout-button"]',
};

function requireEnv() {
  assert.ok(BASE_URL, 'HOOKIT_URL is not set. Start `hookit demo` and set HOOKIT_URL to its base URL (e.g. http://127.0.0.1:8080) and HOOKIT_API_KEY to its API key.');
  assert.ok(API_KEY, 'HOOKIT_API_KEY is not set. Set it to an API key accepted by the server at HOOKIT_URL.');
  assert.ok(fs.existsSync(CHROMIUM), `No browser at ${CHROMIUM}. Install Debian's chromium (apt-get install -y chromium) or set CHROMIUM_PATH.`);
}

test('dashboard: sign in, dead letters in demo "errors" mode, redrive after "up"', { timeout: 300_000 }, async (t) => {
  requireEnv();
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'hookit-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_ARGS,
    viewport: { width: 1440, height: 900 },
    timeout: 60_000,
  });
  const pageErrors = [];
  const consoleErrors = [];
  const page = context.pages()[0] || await context.newPage();
  page.on('pageerror', (err) => pageErrors.push(String(err && err.stack || err)));
  page.on('console', (msg) => { if (msg.type() === 'error') consoleErrors.push(msg.text()); });
  // The dashboard is native ES modules: the entry and each module it imports are separate requests.
  const scripts = [];
  page.on('response', (res) => { if (/^\/assets\/.+\.js$/.test(new URL(res.url()).pathname)) scripts.push(res); });
  page.setDefaultTimeout(T_UI);

  let current = 'start';
  const step = async (name, fn) => {
    current = name;
    t.diagnostic(`step: ${name}`);
    return fn();
  };
  const shot = (name) => page.screenshot({ path: path.join(ARTIFACTS, name), fullPage: true });

  try {
    await step('open the dashboard', async () => {
      const res = await page.goto(`${BASE_URL}/`, { waitUntil: 'domcontentloaded', timeout: T_LOAD });
      assert.ok(res && res.ok(), `GET / answered ${res && res.status()}`);
      await page.waitForSelector(sel.signinForm, { state: 'visible', timeout: T_LOAD });
      // Every module was served as JavaScript under the dashboard's CSP (a module the
      // server does not serve would stop the whole page). The page lists what it
      // loaded; Playwright may report those responses a little later.
      const loaded = await page.evaluate(() => performance.getEntriesByType('resource')
        .map((e) => new URL(e.name).pathname).filter((p) => /^\/assets\/.+\.js$/.test(p)));
      assert.ok(loaded.includes('/assets/app.js') && loaded.includes('/assets/views/endpoints.js'), `modules loaded: ${loaded.join(', ')}`);
      const reported = () => new Set(scripts.map((r) => new URL(r.url()).pathname));
      for (const deadline = Date.now() + T_UI; loaded.some((p) => !reported().has(p));) {
        assert.ok(Date.now() < deadline, `no response reported for ${loaded.filter((p) => !reported().has(p)).join(', ')}`);
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      for (const r of scripts) {
        const where = new URL(r.url()).pathname;
        assert.equal(r.status(), 200, `GET ${where}`);
        assert.match(r.headers()['content-type'] || '', /^text\/javascript/, `content type of ${where}`);
        assert.match(r.headers()['content-security-policy'] || '', /default-src 'self'/, `CSP of ${where}`);
      }
      // The key input must be a labelled password field.
      const input = page.getByLabel('API key', { exact: true });
      assert.equal(await input.getAttribute('type'), 'password');
    });

    await step('sign in', async () => {
      await page.fill(sel.keyInput, API_KEY);
      await page.click(sel.signinSubmit);
      await page.waitForSelector(sel.endpointRow, { state: 'visible', timeout: T_LOAD });
      assert.ok(!page.url().includes(API_KEY), 'the API key must never appear in the URL');
      const stored = await page.evaluate(() => sessionStorage.getItem('hookit.apiKey'));
      assert.equal(stored, API_KEY, 'the API key is kept in sessionStorage');
    });

    const demoEndpointId = await step('find the demo endpoint', async () => {
      await page.waitForSelector(sel.demoPanel, { state: 'visible', timeout: T_LOAD });
      const rows = await page.$$eval(sel.endpointRow, (els) => els.map((el) => ({
        id: el.dataset.endpointId,
        status: el.dataset.status,
        url: (el.querySelector('[data-testid="endpoint-url"]') || {}).textContent || '',
      })));
      assert.ok(rows.length >= 1, 'at least one endpoint row');
      if (DEMO_ENDPOINT_ID) {
        assert.ok(rows.some((r) => r.id === DEMO_ENDPOINT_ID), `HOOKIT_DEMO_ENDPOINT_ID=${DEMO_ENDPOINT_ID} is not listed`);
        return DEMO_ENDPOINT_ID;
      }
      const baseHost = new URL(BASE_URL).host;
      const active = rows.filter((r) => r.status === 'active');
      const pick = active.find((r) => /demo/i.test(r.url))
        || active.find((r) => { try { return new URL(r.url).host === baseHost; } catch { return false; } })
        || active[0];
      assert.ok(pick, `no active endpoint among ${JSON.stringify(rows)}`);
      t.diagnostic(`demo endpoint: ${pick.id} ${pick.url}`);
      return pick.id;
    });
    const demoRow = page.locator(`${sel.endpointRow}[data-endpoint-id="${demoEndpointId}"]`);

    await step('endpoints screenshot', async () => {
      await page.waitForSelector(sel.chartSvg, { state: 'attached', timeout: T_LOAD });
      // The chart's time range: 15 minutes shows the demo's first minutes best.
      await page.click('[data-testid="activity-range-15"]');
      await page.waitForSelector('[data-testid="activity-range-15"][aria-pressed="true"]', { timeout: T_UI });
      await page.waitForFunction(() => /last 15 minutes/.test(document.querySelector('[data-testid="activity-table"] caption')?.textContent || ''), null, { timeout: T_LOAD });
      await demoRow.locator('[data-testid="endpoint-sparkline"]').waitFor({ state: 'attached' });
      await shot('dashboard-endpoints.png');
    });

    const setDemoMode = async (mode) => {
      await page.click(sel.demoMode(mode));
      await page.waitForSelector(`${sel.demoMode(mode)}[aria-pressed="true"]`, { timeout: T_UI });
      await page.waitForFunction((m) => document.querySelector('[data-testid="demo-mode-current"]').textContent === m, mode, { timeout: T_UI });
    };

    await step('switch the demo receiver to errors', () => setDemoMode('errors'));

    const testEventIds = await step('send test events to the demo endpoint', async () => {
      // Test events go to this endpoint only, so the test does not depend on other traffic.
      const ids = [];
      for (let i = 0; i < 2; i++) {
        const before = await page.textContent('[data-testid="status-message"]');
        await demoRow.locator('[data-testid="endpoint-send-test"]').click();
        await page.waitForFunction((prev) => {
          const text = document.querySelector('[data-testid="status-message"]').textContent;
          return text !== prev && /Test event .* sent/.test(text);
        }, before, { timeout: T_UI });
        const href = await page.getAttribute('[data-testid="status-message"] [data-testid="status-link"]', 'href');
        const m = /^#\/events\/(.+)$/.exec(href || '');
        assert.ok(m, `the status message links to the test event (got ${href})`);
        ids.push(decodeURIComponent(m[1]));
        await page.waitForFunction((id) => {
          const b = document.querySelector(`[data-testid="endpoint-row"][data-endpoint-id="${id}"] [data-testid="endpoint-send-test"]`);
          return b && !b.disabled && b.getAttribute('aria-disabled') !== 'true';
        }, demoEndpointId, { timeout: T_UI });
      }
      t.diagnostic(`test events: ${ids.join(', ')}`);
      return ids;
    });

    const dead = await step('wait for the test deliveries in dead letters', async () => {
      await page.click(sel.navDeadLetters);
      await page.waitForFunction(({ s, id }) => {
        const select = document.querySelector(s);
        return select && [...select.options].some((o) => o.value === id);
      }, { s: sel.deadLettersEndpoint, id: demoEndpointId }, { timeout: T_LOAD });
      await page.selectOption(sel.deadLettersEndpoint, demoEndpointId);
      // Wait until the delivery of every test event is listed as dead.
      const handle = await page.waitForFunction(({ rowSel, eventIds }) => {
        const rows = eventIds.map((id) => document.querySelector(`${rowSel}[data-event-id="${CSS.escape(id)}"]`));
        if (rows.some((r) => !r)) return false;
        return rows.map((r) => ({ id: r.dataset.id, eventType: r.dataset.eventType }));
      }, { rowSel: `${sel.deadRow}[data-endpoint-id="${demoEndpointId}"]`, eventIds: testEventIds }, { timeout: T_DELIVERY, polling: 250 });
      const rows = await handle.jsonValue();
      t.diagnostic(`dead test deliveries: ${rows.map((r) => r.id).join(', ')}`);
      await shot('dashboard-dead-letters.png');
      return { ids: rows.map((r) => r.id), eventType: rows[0].eventType };
    });

    await step('switch the demo receiver to up', () => setDemoMode('up'));

    await step('redrive all matching', async () => {
      await page.click(sel.redriveAll);
      await page.waitForSelector(`${sel.confirmDialog}[open]`, { state: 'visible', timeout: T_UI });
      const countText = await page.textContent(sel.redriveCount);
      const count = Number(String(countText).replace(/[^\d]/g, ''));
      assert.ok(count >= 1, `the confirmation names how many will be redriven (got "${countText}")`);
      const message = await page.textContent('[data-testid="confirm-dialog-message"]');
      assert.match(message, /will be redriven/);
      t.diagnostic(`confirmation: ${message}`);
      await page.click(sel.confirmButton);
      await page.waitForSelector(`${sel.confirmDialog}[open]`, { state: 'detached', timeout: T_UI });
      await page.waitForFunction(() => /redriven/.test(document.querySelector('[data-testid="status-message"]').textContent), null, { timeout: T_UI });
    });

    await step('see the redriven deliveries succeed', async () => {
      await page.click(sel.navDeliveries);
      await page.waitForFunction(({ s, id }) => {
        const select = document.querySelector(s);
        return select && [...select.options].some((o) => o.value === id);
      }, { s: sel.deliveriesEndpoint, id: demoEndpointId }, { timeout: T_LOAD });
      await page.selectOption(sel.deliveriesEndpoint, demoEndpointId);
      // Narrow the list to the test events' type so other traffic cannot push them off the page.
      if (dead.eventType) {
        await page.fill('[data-testid="filter-event-type"]', dead.eventType);
        await page.press('[data-testid="filter-event-type"]', 'Enter');
      }
      await page.waitForFunction((ids) => ids.every((id) => {
        const row = document.querySelector(`[data-testid="delivery-row"][data-id="${CSS.escape(id)}"]`);
        return row && row.dataset.status === 'succeeded';
      }), dead.ids, { timeout: T_DELIVERY, polling: 250 }).catch(async (err) => {
        const seen = await page.$$eval('[data-testid="delivery-row"]', (els, ids) => els
          .filter((el) => ids.includes(el.dataset.id))
          .map((el) => `${el.dataset.id}=${el.dataset.status}`), dead.ids).catch(() => []);
        err.message += `\nredriven test deliveries: ${dead.ids.join(', ')}\nof those, listed now: ${seen.join(', ') || 'none'}`;
        throw err;
      });
      await shot('dashboard-redriven.png');
    });

    await step('open a redriven delivery and its event', async () => {
      const id = dead.ids[0];
      await page.click(`[data-testid="delivery-row"][data-id="${id}"] a[href="#/deliveries/${encodeURIComponent(id)}"]`);
      await page.waitForSelector('[data-testid="delivery-detail"][data-status="succeeded"]', { timeout: T_LOAD });
      // The attempt that succeeded after the redrive is listed with its 2xx status.
      await page.locator('[data-testid="attempt-row"] .code-pill--ok').first().waitFor({ state: 'visible', timeout: T_UI });
      await page.locator('[data-testid="event-payload"]').waitFor({ state: 'visible', timeout: T_LOAD });
      await page.locator('#main').getByRole('link', { name: 'View event' }).click();
      await page.waitForSelector(`[data-testid="delivery-row"][data-id="${id}"]`, { timeout: T_LOAD });
      await page.locator('[data-testid="event-payload"]').waitFor({ state: 'visible', timeout: T_UI });
      assert.equal(await page.getAttribute(sel.navDeliveries, 'aria-current'), 'page', 'an event page belongs to Deliveries');
    });

    await step('sign out', async () => {
      await page.click(sel.signout);
      await page.waitForSelector(sel.signinForm, { state: 'visible', timeout: T_UI });
      assert.equal(await page.evaluate(() => sessionStorage.getItem('hookit.apiKey')), null);
    });

    assert.deepEqual(pageErrors, [], 'uncaught errors in the page');
  } catch (err) {
    await page.screenshot({ path: path.join(ARTIFACTS, 'dashboard-failure.png'), fullPage: true }).catch(() => {});
    if (consoleErrors.length) t.diagnostic(`browser console errors:\n${consoleErrors.slice(-20).join('\n')}`);
    if (pageErrors.length) t.diagnostic(`page errors:\n${pageErrors.join('\n')}`);
    err.message = `[step: ${current}] ${err.message}`;
    throw err;
  } finally {
    await context.close().catch(() => {});
    fs.rmSync(profile, { recursive: true, force: true });
  }
});
