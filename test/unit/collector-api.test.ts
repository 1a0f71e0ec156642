import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, request } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { gzipSync } from 'node:zlib';
import { EventLog } from '../../events/event-log.js';
import type { EgressEvent } from '../../events/schema.js';
import { startCollector, type Collector } from '../../collector/server.js';
import { policyFromFile, replay } from '../../report/replay.js';
import { writeFirstLayoutDb } from '../helpers/aggregate-model.js';
import { checkHostSearch, hostSearchEvents } from '../helpers/host-search-scenario.js';
import { runCaptured } from '../helpers/capture-io.js';
import { reportCommand } from '../../cli/report-command.js';
import { fetchHostSightings } from '../../report/host-sightings.js';

const TOKEN = 'api-test-token';

interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

function send(port: number, method: string, path: string, body?: Buffer, headers: Record<string, string> = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, method, path, headers: { ...headers, ...(body && { 'content-length': String(body.length) }) } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString() }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

function post(port: number, lines: string[] | Buffer, headers: Record<string, string> = { authorization: `Bearer ${TOKEN}` }): Promise<Reply> {
  const body = Buffer.isBuffer(lines) ? lines : Buffer.from(lines.map((l) => `${l}\n`).join(''));
  return send(port, 'POST', '/api/v1/events', body, { 'content-type': 'application/x-ndjson', ...headers });
}

/** Events made by a real EventLog: a small audit run of job "api-job". */
function recordRun(): EgressEvent[] {
  const log = new EventLog({ stdout: false, ci: { job_id: 'api-job' } });
  const out: EgressEvent[] = [];
  log.subscribe((e) => out.push(e));
  const base = { client: '127.0.0.1:5000', mode: 'audit' as const };
  const npm = log.decision({
    ...base,
    kind: 'connect',
    host: 'registry.npmjs.org',
    port: 443,
    ip: '104.16.1.34',
    decision: 'allowed',
    reason: 'allowed-endpoint',
    rule: 'registry.npmjs.org:443',
    message: 'ok',
  });
  log.close({ id: npm.id, kind: 'connect', client: base.client, host: npm.host, port: 443, bytes_in: 5000, bytes_out: 700, duration_ms: 120 });
  log.decision({
    ...base,
    kind: 'connect',
    host: 'telemetry.example.com',
    port: 443,
    ip: '93.184.216.34',
    decision: 'would-block',
    reason: 'not-allowed-endpoint',
    rule: null,
    message: 'telemetry.example.com:443 is not in allowed-endpoints',
  });
  log.decision({
    ...base,
    kind: 'http',
    host: 'cache.internal.test',
    port: 8080,
    ip: '198.51.100.20',
    decision: 'would-block',
    reason: 'not-allowed-endpoint',
    rule: null,
    message: 'no',
  });
  log.decision({ ...base, kind: 'connect', host: '203.0.113.9', port: 22, ip: '203.0.113.9', decision: 'would-block', reason: 'raw-ip', rule: null, message: 'raw ip' });
  return out;
}

describe('collector HTTP API (SQLite)', () => {
  let dir: string;
  let collector: Collector;
  let run: EgressEvent[];
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'egress-api-'));
    collector = await startCollector({
      listen: { host: '127.0.0.1', port: 0 },
      db: join(dir, 'c.db'),
      token: TOKEN,
      limits: { maxBodyBytes: 64 * 1024, maxDecodedBytes: 256 * 1024, maxEvents: 100 },
    });
    run = recordRun();
  });
  after(async () => {
    await collector?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('refuses batches without the right token, storing nothing', async () => {
    const lines = run.map((e) => JSON.stringify(e));
    for (const headers of <Array<Record<string, string>>>[{}, { authorization: 'Bearer wrong' }, { authorization: `Basic ${TOKEN}` }]) {
      const reply = await post(collector.port, lines, headers);
      assert.equal(reply.status, 401);
      assert.match(JSON.parse(reply.body).error, /bearer token/);
      assert.equal(reply.headers['www-authenticate'], 'Bearer realm="egress-guard"');
    }
    assert.equal(await collector.store.count(), 0);
  });

  it('refuses a batch with no valid event (400, naming the lines), and bad encodings, storing nothing', async () => {
    const before = await collector.store.count();
    const cases: Array<[string[], RegExp]> = [
      [['{not json', '[1,2]'], /line 1: not JSON/],
      [['', '  '], /no events/],
    ];
    for (const [lines, message] of cases) {
      const reply = await post(collector.port, lines);
      assert.equal(reply.status, 400, reply.body);
      assert.match(JSON.parse(reply.body).error, message);
    }
    assert.deepEqual(
      JSON.parse((await post(collector.port, ['{not json', '[1,2]'])).body).rejected.map((r: { line: number }) => r.line),
      [1, 2],
    );
    const notGzip = await post(collector.port, Buffer.from('plain text'), { authorization: `Bearer ${TOKEN}`, 'content-encoding': 'gzip' });
    assert.equal(notGzip.status, 400);
    assert.match(JSON.parse(notGzip.body).error, /not valid gzip/);
    const brotli = await post(collector.port, Buffer.from('x'), { authorization: `Bearer ${TOKEN}`, 'content-encoding': 'br' });
    assert.equal(brotli.status, 415);
    assert.equal(await collector.store.count(), before, 'nothing half-stored');
  });

  it('rejects oversized batches (body, decompressed size, event count) with 413, storing nothing', async () => {
    const line = JSON.stringify(run[0]);
    const big = await post(
      collector.port,
      Array.from({ length: 200 }, () => line),
    );
    assert.equal(big.status, 413);
    // A gzip bomb: small on the wire, far over the decompressed limit.
    const bomb = gzipSync(Buffer.alloc(10 * 1024 * 1024, 0x20));
    assert.ok(bomb.length < 64 * 1024);
    const bombReply = await post(collector.port, bomb, { authorization: `Bearer ${TOKEN}`, 'content-encoding': 'gzip' });
    assert.equal(bombReply.status, 413);
    assert.match(JSON.parse(bombReply.body).error, /decompresses to more than/);
    const many = run.flatMap(() => Array.from({ length: 30 }, (_, i) => JSON.stringify({ ...run[0], id: `many-${i}-${Math.random()}` })));
    const manyReply = await post(collector.port, gzipSync(Buffer.from(many.join('\n'))), { authorization: `Bearer ${TOKEN}`, 'content-encoding': 'gzip' });
    assert.equal(manyReply.status, 413);
    assert.match(JSON.parse(manyReply.body).error, /more than 100 events/);
    assert.equal(await collector.store.count(), 0);
  });

  it('stores a batch once however often it is delivered (gzip or not)', async () => {
    const body = run.map((e) => JSON.stringify(e));
    const first = await post(collector.port, body);
    assert.equal(first.status, 200, first.body);
    assert.deepEqual(JSON.parse(first.body), { accepted: 5, stored: 5, duplicates: 0, rejected: [] });
    const again = await post(collector.port, gzipSync(Buffer.from(body.join('\n'))), { authorization: `Bearer ${TOKEN}`, 'content-encoding': 'gzip' });
    assert.deepEqual(JSON.parse(again.body), { accepted: 5, stored: 0, duplicates: 5, rejected: [] });
    // A decision and a close share an id yet are two events.
    const closeOnly = await post(collector.port, [JSON.stringify(run[1])]);
    assert.deepEqual(JSON.parse(closeOnly.body), { accepted: 1, stored: 0, duplicates: 1, rejected: [] });
    assert.equal(await collector.store.count(), 5);
  });

  it('serves jobs, events, the summary and a suggested policy that replays clean', async () => {
    const jobs = JSON.parse((await send(collector.port, 'GET', '/api/v1/jobs')).body).jobs;
    assert.deepEqual(
      jobs.map((j: any) => [j.job, j.decisions, j.allowed, j.wouldBlock, j.blocked]),
      [['api-job', 4, 1, 3, 0]],
    );
    const events = JSON.parse((await send(collector.port, 'GET', '/api/v1/jobs/api-job/events')).body).events;
    assert.deepEqual(events.map((e: any) => e.id).sort(), run.map((e) => e.id).sort());
    const ndjson = await send(collector.port, 'GET', '/api/v1/jobs/api-job/events?format=ndjson');
    assert.equal(ndjson.body.trim().split('\n').length, 5);

    const summary = JSON.parse((await send(collector.port, 'GET', '/api/v1/jobs/api-job/summary')).body);
    assert.equal(summary.job, 'api-job');
    const byKey = Object.fromEntries(summary.destinations.map((d: any) => [`${d.host}:${d.port}`, d]));
    assert.deepEqual(Object.keys(byKey).sort(), ['203.0.113.9:22', 'cache.internal.test:8080', 'registry.npmjs.org:443', 'telemetry.example.com:443']);
    assert.equal(byKey['registry.npmjs.org:443'].decision, 'allowed');
    assert.equal(byKey['registry.npmjs.org:443'].bytesIn, 5000);
    assert.deepEqual(byKey['registry.npmjs.org:443'].kinds, ['connect']);
    assert.equal(byKey['telemetry.example.com:443'].decision, 'would-block');
    assert.equal(byKey['telemetry.example.com:443'].first, run[2]!.time);

    const policy = await send(collector.port, 'GET', '/api/v1/jobs/api-job/policy');
    assert.equal(policy.status, 200);
    assert.match(String(policy.headers['content-type']), /yaml/);
    assert.match(policy.body, /"telemetry\.example\.com:443"\s+# seen once \(connect\)/);
    assert.match(policy.body, /allowed-ips:\n {2}- "203\.0\.113\.9"/);
    assert.match(policy.body, /trusted-ranges:\n {2}- "198\.51\.100\.20"\s+# cache\.internal\.test resolved here/);
    assert.deepEqual(replay(policyFromFile(policy.body, 'suggested.yml'), run).blocked, []);
  });

  it('stores an encrypted-client-hello refusal as it came, and suggests no entry for it (the host is allowed already)', async () => {
    const log = new EventLog({ stdout: false, ci: { job_id: 'ech-job' } });
    const sent: EgressEvent[] = [];
    log.subscribe((e) => sent.push(e));
    log.decision({
      kind: 'connect',
      client: '127.0.0.1:5001',
      host: 'front.example.test',
      port: 443,
      ip: '198.51.100.80',
      sni: 'front.example.test',
      decision: 'would-block',
      reason: 'encrypted-client-hello',
      rule: null,
      message: 'inside the CONNECT tunnel to front.example.test:443: the ClientHello carries an encrypted inner ClientHello (ECH)',
      mode: 'audit',
    });
    const reply = await post(
      collector.port,
      sent.map((e) => JSON.stringify(e)),
    );
    assert.deepEqual(JSON.parse(reply.body), { accepted: 1, stored: 1, duplicates: 0, rejected: [] });
    const events = JSON.parse((await send(collector.port, 'GET', '/api/v1/jobs/ech-job/events')).body).events;
    assert.deepEqual(events, JSON.parse(JSON.stringify(sent)));
    const policy = await send(collector.port, 'GET', '/api/v1/jobs/ech-job/policy');
    assert.equal(policy.status, 200);
    assert.doesNotMatch(policy.body, /front\.example\.test/);
  });

  it('answers unknown jobs and paths with 404 and wrong methods with 405', async () => {
    assert.equal((await send(collector.port, 'GET', '/api/v1/jobs/nope/summary')).status, 404);
    assert.equal((await send(collector.port, 'GET', '/api/v1/jobs/%E0%A4%A/summary')).status, 400);
    assert.equal((await send(collector.port, 'GET', '/nothing')).status, 404);
    assert.equal((await send(collector.port, 'GET', '/api/v1/events')).status, 405);
    assert.equal((await send(collector.port, 'DELETE', '/api/v1/jobs')).status, 405);
    assert.equal((await send(collector.port, 'GET', '/healthz')).body, 'ok\n');
  });

  it('stores the valid lines of a batch and reports the invalid ones by line number', async () => {
    // Fresh ids: stored here, after the tests that count the store.
    const fresh = run.map((e, n) => ({ ...e, id: `partial-${n}-${e.id}` }));
    const good = fresh.map((e) => JSON.stringify(e));
    const cases: Array<[string[], number, RegExp]> = [
      [[good[0]!, '{not json'], 2, /not JSON/],
      [[good[0]!, JSON.stringify({ ...fresh[1], port: 70000 })], 2, /"port" must be an integer/],
      [[JSON.stringify({ ...fresh[0], schema: 2 }), good[1]!], 1, /"schema" must be 1/],
      [[good[0]!, JSON.stringify({ ...fresh[2], decision: 'maybe' })], 2, /"decision"/],
      [[good[0]!, '[1,2]'], 2, /an event is a JSON object/],
      [[good[0]!, JSON.stringify({ ...fresh[1], host: '' })], 2, /"host" is empty/],
    ];
    for (const [lines, badLine, message] of cases) {
      const before = await collector.store.count();
      const reply = await post(collector.port, lines);
      assert.equal(reply.status, 200, reply.body);
      const answer = JSON.parse(reply.body) as { accepted: number; stored: number; duplicates: number; rejected: Array<{ line: number; error: string }> };
      assert.equal(answer.accepted, 1);
      assert.equal(answer.stored + answer.duplicates, 1);
      assert.equal(answer.rejected.length, 1);
      assert.equal(answer.rejected[0]!.line, badLine);
      assert.match(answer.rejected[0]!.error, message);
      assert.equal(await collector.store.count(), before + answer.stored, 'the valid line is stored');
    }
  });
});

describe('host search (SQLite)', () => {
  let dir: string;
  let collector: Collector;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'egress-search-'));
    collector = await startCollector({ listen: { host: '127.0.0.1', port: 0 }, db: join(dir, 'c.db'), token: TOKEN });
    const reply = await post(
      collector.port,
      hostSearchEvents().map((e) => JSON.stringify(e)),
    );
    assert.equal(reply.status, 200, reply.body);
  });
  after(async () => {
    await collector?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('answers which jobs talked to a host, and when (GET /api/v1/search)', async () => {
    await checkHostSearch(collector.port);
  });

  it('report --collector --host prints the same for a terminal or a ticket', async () => {
    const url = `http://127.0.0.1:${collector.port}`;
    const table = await runCaptured(reportCommand, ['--collector', url, '--host', 'codecov.io']);
    assert.equal(table.code, 0, table.stderr);
    assert.match(table.stdout, /^Jobs that talked to codecov\.io: 2\n/);
    assert.ok(table.stdout.indexOf('job-new') < table.stdout.indexOf('job-old'), 'newest first');
    const markdown = await runCaptured(reportCommand, ['--collector', url, '--host', 'codecov.io', '--since', '2026-11-01T00:00:00Z', '--format', 'markdown']);
    assert.match(markdown.stdout, /^### Jobs that talked to codecov\.io \(since 2026-11-01T00:00:00\.000Z\): 1/);
    assert.match(markdown.stdout, /\| job-new \| 2026-11-20T10:00:00\.000Z \| .* \| 4\.9 KiB \| uploader\.codecov\.io \|/);
    const recent = await runCaptured(reportCommand, ['--collector', url, '--host', 'codecov.io', '--since', '1d']);
    assert.match(recent.stdout, /: 0\n/, 'relative times count back from now');
    assert.equal((await runCaptured(reportCommand, ['--host', 'codecov.io', 'events.ndjson'])).code, 2, 'a host search needs a collector');
  });

  it('report --host follows next pages: cursors, and the offsets an older collector answered', async () => {
    // Five jobs served two a page, as this collector (`next` a cursor) and as one from before cursors (`next` an offset).
    const jobs = Array.from({ length: 5 }, (_, i) => ({
      job: `j${i}`,
      first: 'x',
      last: 'x',
      decisions: 1,
      allowed: 1,
      blocked: 0,
      wouldBlock: 0,
      bytesOut: 0,
      hosts: ['h.test'],
    }));
    const asked: string[] = [];
    const server = createServer((req, res) => {
      const params = new URL(req.url ?? '/', 'http://x').searchParams;
      asked.push(`${params.get('cursor') ?? ''}|${params.get('offset') ?? ''}`);
      const older = params.get('host') === 'old.test';
      const from = older ? Number(params.get('offset') ?? 0) : Number(params.get('cursor') ?? 0);
      const page = jobs.slice(from, from + 2);
      const next = from + 2 < jobs.length ? (older ? from + 2 : String(from + 2)) : null;
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ host: params.get('host'), next, jobs: page }));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
      for (const host of ['new.test', 'old.test']) {
        asked.length = 0;
        const all = await fetchHostSightings(url, { host });
        assert.deepEqual([all.jobs.map((j) => j.job), all.truncated], [['j0', 'j1', 'j2', 'j3', 'j4'], false], host);
        assert.deepEqual(asked, host === 'old.test' ? ['|', '|2', '|4'] : ['|', '2|', '4|'], `${host}: the pages asked`);
        const cut = await fetchHostSightings(url, { host }, 3);
        assert.deepEqual([cut.jobs.map((j) => j.job), cut.truncated], [['j0', 'j1', 'j2'], true], `${host}: cut at maxJobs`);
      }
    } finally {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
  });

  it('a database from before the host column gets it, filled from the stored events', async () => {
    const old = join(dir, 'old.db');
    writeFirstLayoutDb(old, hostSearchEvents());
    const reopened = await startCollector({ listen: { host: '127.0.0.1', port: 0 }, db: old, token: TOKEN });
    try {
      await checkHostSearch(reopened.port);
    } finally {
      await reopened.close();
    }
  });
});
