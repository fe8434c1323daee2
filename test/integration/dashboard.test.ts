// The dashboard in a real browser (Debian's chromium driven by playwright-core): under load through
// Tessera its charts draw and its numbers move, a saturated pool is highlighted, a database named
// like HTML is shown as text; with 1,000 pools it still sorts, cuts to the top N and searches.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import { chromium, type Browser, type Page } from 'playwright-core';
import { ROLES, TEST_DB, sharedCluster } from '../support/cluster.js';
import { startTessera, clusterEntry, connect, until } from '../support/tessera.js';
import { serveMetrics, startMetrics } from '../../src/metrics/metrics.js';
import type { MetricsSnapshot, PoolFigures } from '../../src/metrics/snapshot.js';
import { zeroDurationCounts } from '../../src/pool/histogram.js';

const CHROMIUM = '/usr/bin/chromium';
const FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];
// .ci/run installs Debian's chromium; without it these tests are skipped, never passed.
const it = fs.existsSync(CHROMIUM) ? test : test.skip;
if (!fs.existsSync(CHROMIUM)) console.log(`  (skipped: no ${CHROMIUM}; apt-get install chromium)`);

/** A database name that would run script if it were ever put in the page as HTML. */
const HTML_NAME = '<img src=x onerror="window.__pwned=1">&amp;';

let browser: Browser | undefined;
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tessera-dashboard-'));

async function openDashboard(base: string): Promise<Page> {
  browser ??= await chromium.launch({ executablePath: CHROMIUM, headless: true, args: FLAGS });
  const page = await browser.newPage({ viewport: { width: 1400, height: 1300 } });
  // Offline: anything but Tessera's own endpoint is refused, so a CDN dependency would show.
  const outside: string[] = [];
  await page.route('**/*', (route) => {
    if (route.request().url().startsWith(base)) return route.continue();
    outside.push(route.request().url());
    return route.abort();
  });
  (page as Page & { outside?: string[] }).outside = outside;
  await page.goto(`${base}/`);
  return page;
}

const updates = (page: Page) => page.evaluate(() => Number(document.body.dataset.updates ?? 0));
const number = async (page: Page, id: string) => Number((await page.textContent(`#${id}`))!.replace(/,/g, '').split(' ')[0]);

/** Pixels of a chart's canvas that are not background: uPlot drew lines and axes. */
function drawnPixels(page: Page, chart: string): Promise<number> {
  return page.evaluate((id) => {
    const canvas = document.querySelector(`#chart-${id} canvas`) as HTMLCanvasElement | null;
    if (!canvas) return -1;
    const data = canvas.getContext('2d')!.getImageData(0, 0, canvas.width, canvas.height).data;
    let n = 0;
    for (let i = 3; i < data.length; i += 4) if (data[i] !== 0) n++;
    return n;
  }, chart);
}

/** Distinct colours in a PNG, counted by the browser itself (a blank page has one or two). */
async function colours(page: Page, png: Buffer): Promise<number> {
  const blank = await browser!.newPage();
  await blank.setContent(`<img id="shot" src="data:image/png;base64,${png.toString('base64')}">`);
  await blank.waitForFunction(() => (document.getElementById('shot') as HTMLImageElement).complete);
  const n = await blank.evaluate(() => {
    const img = document.getElementById('shot') as HTMLImageElement;
    const c = document.createElement('canvas');
    c.width = img.naturalWidth;
    c.height = img.naturalHeight;
    const ctx = c.getContext('2d')!;
    ctx.drawImage(img, 0, 0);
    const d = ctx.getImageData(0, 0, c.width, c.height).data;
    const seen = new Set<number>();
    for (let i = 0; i < d.length; i += 16) seen.add((d[i] << 16) | (d[i + 1] << 8) | d[i + 2]);
    return seen.size;
  });
  await blank.close();
  return n;
}

it('under load: the charts draw, the numbers move, the saturated pool is highlighted, an HTML-like name is text', async () => {
  const cluster = await sharedCluster();
  const user = ROLES.trust.user;
  const t = await startTessera({
    pool_mode: 'transaction',
    query_wait_timeout: 60,
    databases: { [TEST_DB]: clusterEntry(cluster, { pool_size: 2 }), [HTML_NAME]: clusterEntry(cluster, { dbname: TEST_DB, pool_size: 5 }) },
  });
  const http: Server = await startMetrics('127.0.0.1:0', t.proxy, t.file);
  const base = `http://127.0.0.1:${(http.address() as AddressInfo).port}`;
  // Six clients on a pool of two keep four waiting: the pool is saturated while the load runs.
  let running = true;
  const clients = await Promise.all([...Array(6)].map(() => connect(t.conn(user))));
  const odd = await connect(t.conn(user, undefined, HTML_NAME));
  const load = [
    ...clients.map(async (c) => {
      while (running) await c.query('select pg_sleep(0.02)');
    }),
    (async () => {
      while (running) await odd.query('select 1');
    })(),
  ];
  try {
    const page = await openDashboard(base);
    await until('three dashboard updates', async () => (await updates(page)) >= 3, 20000);
    const first = await number(page, 't-xacts-total');
    await until('the transaction count to move', async () => (await number(page, 't-xacts-total')) > first, 20000);
    assert.ok((await number(page, 't-xacts')) > 0, 'transactions/s under load');
    assert.match((await page.textContent('#version'))!, /^Tessera \d+\.\d+\.\d+/);
    assert.is(await page.textContent('#config'), t.file);
    assert.is(await page.textContent('#workers'), '1 process');
    for (const chart of ['throughput', 'latency', 'clients', 'servers', 'errors']) {
      assert.ok((await drawnPixels(page, chart)) > 500, `chart ${chart} drew`);
    }
    await until('the throughput chart to have points', () => page.evaluate(() => document.querySelectorAll('#chart-throughput canvas').length > 0 && Number(document.body.dataset.updates) > 4));

    // The saturated pool: highlighted, and sorted first.
    const saturated = page.locator(`#pools-body tr.saturated[data-database="${TEST_DB}"]`);
    await saturated.waitFor({ timeout: 20000 });
    assert.is(await page.locator('#pools-body tr').first().getAttribute('data-database'), TEST_DB);
    assert.ok((await number(page, 't-saturated')) >= 1);
    assert.ok((await number(page, 't-waiting')) >= 1);

    // The HTML-like name is text: no element made of it, no script run.
    const odd_row = page.locator('#pools-body tr').filter({ hasText: 'onerror' });
    await odd_row.waitFor();
    assert.is(await odd_row.locator('td').first().textContent(), HTML_NAME);
    assert.match((await odd_row.locator('td').first().innerHTML())!, '&lt;img');
    assert.is(await page.locator('main img').count(), 0);
    assert.is(await page.evaluate(() => (window as unknown as { __pwned?: number }).__pwned), undefined);
    // Search narrows the table to it.
    await page.fill('#search', 'onerror');
    await until('the search to apply', async () => (await page.locator('#pools-body tr').count()) === 1);
    assert.match((await page.textContent('#pools-count'))!, 'showing 1 of 1 matching (2 pools)');
    await page.fill('#search', '');

    assert.equal((page as Page & { outside?: string[] }).outside, [], 'the page asked for nothing outside Tessera');
    const shot = path.join(tmp, 'dashboard.png');
    await page.screenshot({ path: shot, fullPage: true });
    const png = fs.readFileSync(shot);
    assert.ok(png.length > 10_000, `screenshot of ${png.length} bytes`);
    assert.ok((await colours(page, png)) > 20, 'the screenshot is not blank');
    if (process.env.TESSERA_DASHBOARD_SCREENSHOT) fs.copyFileSync(shot, process.env.TESSERA_DASHBOARD_SCREENSHOT);
    await page.close();
  } finally {
    running = false;
    await Promise.allSettled(load);
    await Promise.all([...clients, odd].map((c) => c.end().catch(() => {})));
    http.close();
    await t.stop();
  }
});

/** A pool as a worker reports it (the 1,000-pool test builds them; no Tessera has that many test backends). */
function pool(i: number, extra: Partial<PoolFigures> = {}): PoolFigures {
  return {
    database: `db${String(i).padStart(4, '0')}`, user: 'app', mode: 'transaction', clients_active: i % 7, clients_waiting: 0, servers_login: 0, servers_idle: 1,
    servers_active: i % 5, servers_cleanup: 0, max_wait_seconds: 0, pool_size: 10, reserve_size: 0, min_pool_size: 0, transactions: i * 10, queries: i * 10,
    received_bytes: 0, sent_bytes: 0, server_assignments: i * 10, server_connects: 1, transaction_us: i * 1000, query_us: i * 1000, wait_us: 0,
    transaction_times: zeroDurationCounts(), wait_times: zeroDurationCounts(), ...extra,
  };
}

it('1,000 pools: top 50 shown, saturated first, search and sort work in the browser', async () => {
  const pools = [...Array(1000)].map((_, i) => pool(i));
  pools[777] = pool(777, { clients_waiting: 12, servers_active: 10, max_wait_seconds: 3 });
  const snapshot: MetricsSnapshot = {
    processes: 1, stopping: false, listening: true, clients: 3000, clients_logging_in: 0, max_client_conn: 5000, database_limits: {}, user_limits: {},
    pools, login_failures: {}, client_errors: {}, session_logins: { ok: 0, failed: 0 }, accessors: [], server_closes: {},
  };
  const http = await serveMetrics('127.0.0.1:0', {
    snapshot: async () => snapshot,
    console: async () => { throw new Error('not used'); },
    readiness: async () => ({ ready: true, listening: true, shutting_down: false, databases: [] }),
    processMetrics: async () => '',
    format: () => 'tessera',
    configFile: '',
    workers: 1,
  });
  try {
    const page = await openDashboard(`http://127.0.0.1:${(http.address() as AddressInfo).port}`);
    await until('the pool table', async () => (await page.locator('#pools-body tr').count()) === 50, 20000);
    assert.match((await page.textContent('#pools-count'))!, 'showing 50 of 1000 pools');
    assert.is(await page.locator('#pools-body tr').first().getAttribute('data-database'), 'db0777');
    assert.is(await page.locator('#pools-body tr.saturated').count(), 1);
    await page.selectOption('#limit', '1000');
    await until('all 1,000 rows', async () => (await page.locator('#pools-body tr').count()) === 1000, 20000);
    await page.selectOption('#sort', 'name');
    await until('sorted by name', async () => (await page.locator('#pools-body tr').first().getAttribute('data-database')) === 'db0000');
    await page.fill('#search', 'db099');
    await until('the search', async () => (await page.locator('#pools-body tr').count()) === 10);
    assert.match((await page.textContent('#pools-count'))!, 'showing 10 of 10 matching (1000 pools)');
    await page.close();
  } finally {
    http.close();
  }
});

test.after(async () => {
  await browser?.close();
  fs.rmSync(tmp, { recursive: true, force: true });
});

test.run();
