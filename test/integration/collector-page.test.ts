import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { chromium, type Browser } from 'playwright-core';
import { startCollector, type Collector } from '../../collector/server.js';
import { testDecision } from '../helpers/aggregate-model.js';

const FIXTURE = fileURLToPath(new URL('../../../test/fixtures/audit-run.ndjson', import.meta.url));
const ARTIFACTS = fileURLToPath(new URL('../../../test-artifacts/', import.meta.url));
const JOB = 'octo-org/webapp/9001/build';

describe('collector web page in headless Chromium', () => {
  let dir: string;
  let collector: Collector;
  let browser: Browser;
  let base: string;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'egress-page-'));
    collector = await startCollector({ listen: { host: '127.0.0.1', port: 0 }, db: join(dir, 'p.db') });
    base = `http://127.0.0.1:${collector.port}`;
    const body = readFileSync(FIXTURE, 'utf8')
      .split('\n')
      .filter((l) => l.includes('"schema":1'))
      .join('\n');
    assert.equal((await fetch(`${base}/api/v1/events`, { method: 'POST', body })).status, 200);
    // A second job whose names try to inject markup.
    const hostile = {
      schema: 1,
      event: 'decision',
      id: 'hostile-1',
      time: '2025-03-14T11:00:00.000Z',
      kind: 'http',
      client: '127.0.0.1:1',
      host: '<img src=x onerror="window.pwned=1">',
      port: 80,
      decision: 'blocked',
      reason: 'invalid-host',
      rule: null,
      message: '<b>bold</b>',
      mode: 'block',
      ci: { job_id: '<script>window.pwned=2</script>' },
    };
    assert.equal((await fetch(`${base}/api/v1/events`, { method: 'POST', body: JSON.stringify(hostile) })).status, 200);
    browser = await chromium.launch({
      executablePath: '/usr/bin/chromium',
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
  });
  after(async () => {
    await browser?.close();
    await collector?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('lists jobs, shows destinations with blocked / would-block rows marked, a timeline and the policy to copy', async () => {
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, permissions: ['clipboard-read', 'clipboard-write'] });
    const page = await context.newPage();
    const errors: string[] = [];
    page.on('pageerror', (err) => errors.push(err.message));
    page.on('console', (msg) => {
      if (msg.type() === 'error') errors.push(msg.text());
    });

    await page.goto(`${base}/`);
    const jobs = await page.$$eval('#jobs tbody tr', (rows) => rows.map((r) => [...r.querySelectorAll('td')].map((td) => td.textContent)));
    assert.deepEqual(
      jobs.map((r) => [r[0], r[3], r[4], r[5], r[6]]),
      [
        ['<script>window.pwned=2</script>', '1', '0', '0', '1'],
        [JOB, '33', '18', '15', '0'],
      ],
    );

    await page.click(`a:text("${JOB}")`);
    await page.waitForSelector('#destinations');
    assert.equal(decodeURIComponent(new URL(page.url()).pathname), `/jobs/${JOB}`);
    const rows = await page.$$eval('#destinations tbody tr', (trs) => trs.map((tr) => ({ cls: tr.className, cells: [...tr.querySelectorAll('td')].map((td) => td.textContent) })));
    assert.equal(rows.length, 16);
    const byDest = Object.fromEntries(rows.map((r) => [r.cells[1], r]));
    assert.equal(byDest['registry.internal.test:8443']!.cls, 'would-block');
    assert.equal(byDest['registry.internal.test:8443']!.cells[0], 'would-block');
    assert.equal(byDest['registry.npmjs.org:443']!.cls, 'allowed');
    assert.equal(byDest['registry.npmjs.org:443']!.cells[3], '12');
    assert.equal(rows.filter((r) => r.cls.split(' ').includes('would-block')).length, 11);
    // What looks like an attack is flagged, first, and said in words above the table; sizes are for people.
    assert.equal(rows[0]!.cells[1], '203.0.113.50:8080');
    assert.equal(byDest['203.0.113.50:8080']!.cls, 'would-block flagged');
    assert.equal(byDest['203.0.113.50:8080']!.cells[10], 'raw-ip');
    assert.match((await page.textContent('#findings + ul.findings')) ?? '', /203\.0\.113\.50:8080 \(would-block\): a connection to a raw IP address/);
    assert.equal(byDest['objects.githubusercontent.com:443']!.cells[8], '8.6 MiB');
    const background = await page.$eval('#destinations tr.would-block td', (td) => getComputedStyle(td).backgroundColor);
    assert.equal(background, 'rgb(255, 248, 197)');

    assert.equal(await page.locator('#timeline rect').count(), 33, 'one mark per connection');
    assert.equal(await page.locator('#timeline text', { hasText: 'registry.npmjs.org:443' }).count(), 1);

    const policy = await page.textContent('#policy');
    const apiPolicy = await (await fetch(`${base}/api/v1/jobs/${encodeURIComponent(JOB)}/policy`)).text();
    assert.equal(policy, apiPolicy);
    await page.click('button[data-copy="policy"]');
    await page.waitForSelector('button:text("Copied")');
    assert.equal(await page.evaluate(() => navigator.clipboard.readText()), apiPolicy);

    mkdirSync(ARTIFACTS, { recursive: true });
    const shot = join(ARTIFACTS, 'collector-page.png');
    await page.screenshot({ path: shot, fullPage: true });
    assert.ok(statSync(shot).size > 10_000);
    assert.deepEqual(errors, []);
    await context.close();
  });

  it('searches a host from the search box, filters jobs by repository and pages the job list', async () => {
    const page = await browser.newPage();
    const errors: string[] = [];
    page.on('pageerror', (err) => errors.push(err.message));
    await page.goto(`${base}/`);
    await page.fill('#search input[name="host"]', 'npmjs.org');
    await page.click('#search button[type="submit"]');
    await page.waitForSelector('#search-table tbody tr');
    const found = await page.$$eval('#search-table tbody tr', (rows) => rows.map((r) => [...r.querySelectorAll('td')].map((td) => td.textContent)));
    assert.deepEqual(
      found.map((r) => [r[0], r[1]]),
      [[JOB, 'registry.npmjs.org']],
    );
    assert.match((await page.textContent('#search-total')) ?? '', /^1 job\(s\) talked to npmjs\.org$/);
    await page.fill('#search input[name="host"]', '%');
    await page.click('#search button[type="submit"]');
    await page.waitForFunction(() => /not a host pattern/.test(document.getElementById('search-results')!.textContent ?? ''));

    await page.fill('#repository-filter input[name="repository"]', 'octo-org/webapp');
    await page.click('#repository-filter button[type="submit"]');
    await page.waitForURL(/repository=octo-org%2Fwebapp/);
    assert.deepEqual(await page.$$eval('#jobs tbody tr td:first-child', (tds) => tds.map((td) => td.textContent)), [JOB]);

    await page.goto(`${base}/?limit=1`);
    assert.deepEqual(await page.$$eval('#jobs tbody tr td:first-child', (tds) => tds.map((td) => td.textContent)), ['<script>window.pwned=2</script>']);
    await page.click('#next-page');
    await page.waitForSelector('#first-page');
    assert.deepEqual(await page.$$eval('#jobs tbody tr td:first-child', (tds) => tds.map((td) => td.textContent)), [JOB]);
    assert.equal(await page.locator('#next-page').count(), 0, 'the last page');
    assert.deepEqual(errors, []);
    await page.close();
  });

  it('escapes hostile job ids, hosts and messages', async () => {
    const page = await browser.newPage();
    await page.goto(`${base}/jobs/${encodeURIComponent('<script>window.pwned=2</script>')}`);
    assert.equal(await page.evaluate(() => (window as unknown as { pwned?: number }).pwned), undefined);
    assert.equal(await page.locator('h1 code').textContent(), '<script>window.pwned=2</script>');
    assert.equal(await page.locator('#destinations img').count(), 0);
    assert.equal(await page.locator('#destinations td code').first().textContent(), '<img src=x onerror="window.pwned=1">:80');
    const missing = await page.goto(`${base}/jobs/nope`);
    assert.equal(missing?.status(), 404);
    await page.close();
  });
  it('pages the search results with the More button (the next page by cursor), each job once', async () => {
    // Older than every other job, so the job list above is not disturbed (this test runs last).
    const events = Array.from({ length: 55 }, (_, i) =>
      testDecision(`more-${i}`, Date.UTC(2020, 0, 1, 0, i), 'cdn.more.example', { job_id: `more-job-${String(i).padStart(2, '0')}`, repository: 'org/more' }),
    );
    const body = events.map((e) => JSON.stringify(e)).join('\n');
    assert.equal((await fetch(`${base}/api/v1/events`, { method: 'POST', body })).status, 200);
    const page = await browser.newPage();
    const errors: string[] = [];
    page.on('pageerror', (err) => errors.push(err.message));
    await page.goto(`${base}/`);
    await page.fill('#search input[name="host"]', 'more.example');
    await page.click('#search button[type="submit"]');
    await page.waitForSelector('#search-more');
    assert.equal(await page.locator('#search-table tbody tr').count(), 50);
    assert.match((await page.textContent('#search-total')) ?? '', /^55 job\(s\) talked to more\.example$/);
    await page.click('#search-more');
    await page.waitForFunction(() => document.querySelectorAll('#search-table tbody tr').length === 55);
    const jobs = await page.$$eval('#search-table tbody tr td:first-child', (tds) => tds.map((td) => td.textContent));
    assert.deepEqual(
      jobs,
      Array.from({ length: 55 }, (_, i) => `more-job-${String(54 - i).padStart(2, '0')}`),
    );
    assert.equal(await page.locator('#search-more').count(), 0, 'no More after the last page');
    assert.deepEqual(errors, []);
    await page.close();
  });
});
