// Takes the README's dashboard picture (docs/images/dashboard.png): the Endpoints
// page of a running `hookit demo`, with the chart on its 15-minute range.
//
//   HOOKIT_URL=http://127.0.0.1:8080 HOOKIT_API_KEY=hk_… node tests/browser/readme-screenshot.mjs [out.png]
//
// Best after a few minutes of demo traffic with an `errors` spell and a redrive
// (see docs/demo.md). Not a test: `node --test` does not pick this file up.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';

const BASE_URL = (process.env.HOOKIT_URL || '').replace(/\/+$/, '');
const API_KEY = process.env.HOOKIT_API_KEY || '';
const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const OUT = path.resolve(process.argv[2] || 'docs/images/dashboard.png');

if (!BASE_URL || !API_KEY) {
  console.error('Set HOOKIT_URL and HOOKIT_API_KEY (the key `hookit demo` prints last).');
  process.exit(2);
}

const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'hookit-shot-'));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: CHROMIUM,
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--hide-scrollbars'],
  viewport: { width: 1280, height: 800 },
  deviceScaleFactor: 1,
});
try {
  const page = context.pages()[0] || await context.newPage();
  await page.goto(`${BASE_URL}/`, { waitUntil: 'domcontentloaded' });
  await page.fill('[data-testid="api-key-input"]', API_KEY);
  await page.click('[data-testid="signin-submit"]');
  await page.waitForSelector('[data-testid="endpoint-row"]', { state: 'visible', timeout: 30_000 });
  await page.waitForSelector('[data-testid="demo-panel"]', { state: 'visible', timeout: 30_000 });
  await page.click('[data-testid="activity-range-15"]');
  await page.waitForFunction(() => /last 15 minutes/.test(document.querySelector('[data-testid="activity-table"] caption')?.textContent || ''), null, { timeout: 30_000 });
  // Let the live indicator and the row statistics settle.
  await page.waitForSelector('[data-testid="endpoint-sparkline"] polyline', { state: 'attached', timeout: 30_000 });
  await page.mouse.move(0, 0);
  fs.mkdirSync(path.dirname(OUT), { recursive: true });
  await page.screenshot({ path: OUT, fullPage: true });
  console.log(`wrote ${OUT}`);
} finally {
  await context.close();
  fs.rmSync(profile, { recursive: true, force: true });
}
