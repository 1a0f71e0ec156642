import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { loadConfig } from '../../config/load-config.js';
import { EventLog } from '../../events/event-log.js';
import { decide, decideName, type Policy } from '../../policy/index.js';
import { POLICY_USAGE, policyCommand } from '../../cli/policy-command.js';
import { policyFromFile } from '../../report/replay.js';
import { runCaptured, type CommandResult } from '../helpers/capture-io.js';

const FIXTURE = fileURLToPath(new URL('../../../test/fixtures/audit-run.ndjson', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'egress-workflow-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function run(argv: string[]): Promise<CommandResult> {
  return runCaptured(policyCommand, argv, {}, POLICY_USAGE);
}

function write(name: string, text: string): string {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
}

function endpoints(yaml: string): string[] {
  return policyFromFile(yaml, 'x').endpoints.map((e) => e.source);
}

async function replayed(policy: string, events: string): Promise<{ code: number; blocked: string[]; reasons: Record<string, string> }> {
  const result = await run(['replay', '--policy', policy, '--format', 'json', events]);
  assert.ok(result.code === 0 || result.code === 1, result.stderr);
  const json = JSON.parse(result.stdout);
  const key = (b: any) => `${b.kinds.includes('dns') ? 'dns ' : ''}${b.host}:${b.port}`;
  return { code: result.code, blocked: json.blocked.map(key).sort(), reasons: Object.fromEntries(json.blocked.map((b: any) => [key(b), b.reason])) };
}

describe('policy suggest -> replay on the recorded audit run (fixture)', () => {
  it('suggests exact entries with counts, allowed-ips for raw IPs and trusted-ranges for private addresses', async () => {
    const { code, stdout } = await run(['suggest', FIXTURE]);
    assert.equal(code, 0);
    assert.deepEqual(endpoints(stdout), [
      'a.github.io:443',
      'b.github.io:443',
      'c.github.io:443',
      'cdn1.assets.example.com:443',
      'cdn2.assets.example.com:443',
      'cdn3.assets.example.com:443',
      'codeload.github.com:443',
      'github.com:443',
      'metrics.example.net:443',
      'o450000.ingest.sentry.io:443',
      'objects.githubusercontent.com:443',
      'registry.internal.test:8443',
      'registry.npmjs.org:443',
    ]);
    assert.match(stdout, /"registry\.npmjs\.org:443"\s+# seen 12 times \(connect\)/);
    assert.match(stdout, /"metrics\.example\.net:443"\s+# DNS queries only \(A, AAAA\), 2 times/);
    const policy = policyFromFile(stdout, 'suggested.yml');
    assert.equal(policy.mode, 'block');
    assert.deepEqual(
      policy.allowedIps.map((r) => r.source),
      ['203.0.113.50'],
    );
    assert.deepEqual(
      policy.trustedRanges.map((r) => r.source),
      ['198.51.100.7'],
    );
    assert.match(stdout, /Left out: 1 decision on malformed requests/);
  });

  it('the suggested policy replays with zero blocks (exit 0)', async () => {
    const { stdout } = await run(['suggest', FIXTURE]);
    const policy = write('suggested.yml', stdout);
    const result = await run(['replay', '--policy', policy, FIXTURE]);
    assert.equal(result.code, 0, result.stdout);
    assert.match(result.stdout, /would have allowed all 32 decisions/);
  });

  it('a narrower policy lists exactly the removed destinations (exit 1)', async () => {
    const { stdout } = await run(['suggest', FIXTURE]);
    const narrower = stdout
      .split('\n')
      .filter((line) => !/"(o450000\.ingest\.sentry\.io:443|b\.github\.io:443|203\.0\.113\.50|metrics\.example\.net:443)"/.test(line))
      .join('\n');
    const result = await replayed(write('narrow.yml', narrower), FIXTURE);
    assert.equal(result.code, 1);
    assert.deepEqual(result.blocked, ['203.0.113.50:8080', 'b.github.io:443', 'dns metrics.example.net:53', 'o450000.ingest.sentry.io:443']);
    const table = await run(['replay', '--policy', join(dir, 'narrow.yml'), FIXTURE]);
    assert.equal(table.code, 1);
    assert.match(table.stdout, /would have blocked 6 of 32 decisions \(4 destinations\)/);
    assert.match(table.stdout, /o450000\.ingest\.sentry\.io:443\s+connect\s+2x\s+not-allowed-endpoint/);
  });

  it('without the trusted range, the private address is what blocks', async () => {
    const { stdout } = await run(['suggest', FIXTURE]);
    const result = await replayed(write('no-trusted.yml', stdout.replace(/trusted-ranges:\n.*\n/, 'trusted-ranges: []\n')), FIXTURE);
    assert.deepEqual(result.blocked, ['registry.internal.test:8443']);
    assert.equal(result.reasons['registry.internal.test:8443'], 'denied-address');
  });

  it('--collapse N makes a wildcard for N or more subdomains of one parent, never over a public suffix', async () => {
    const three = await run(['suggest', '--collapse', '3', FIXTURE]);
    const list = endpoints(three.stdout);
    assert.ok(list.includes('*.assets.example.com:443'));
    assert.ok(!list.some((e) => e.startsWith('cdn')));
    assert.ok(!list.some((e) => e.includes('*.github.io')), 'github.io is a public suffix: anyone can register below it');
    assert.deepEqual(
      list.filter((e) => e.endsWith('github.io:443')),
      ['a.github.io:443', 'b.github.io:443', 'c.github.io:443'],
    );
    assert.match(three.stdout, /"\*\.assets\.example\.com:443"\s+# 3 subdomains seen 4 times \(connect\): cdn1, cdn2, cdn3/);
    assert.equal((await replayed(write('collapsed.yml', three.stdout), FIXTURE)).code, 0);
    const four = endpoints((await run(['suggest', '--collapse', '4', FIXTURE])).stdout);
    assert.ok(!four.some((e) => e.startsWith('*.')));
  });

  it('reports bad input with exit 2 and a message', async () => {
    assert.equal((await run(['replay', FIXTURE])).code, 2);
    const bad = await run(['replay', '--policy', write('bad.yml', 'mode: block\nallowed-endpoints:\n  - "*:443"\n'), FIXTURE]);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /bad\.yml:3: .*bare \* is not accepted/);
    assert.match((await run(['suggest', join(dir, 'missing.ndjson')])).stderr, /cannot read .*missing\.ndjson/);
    assert.equal((await run(['suggest', '--collapse', 'x', FIXTURE])).code, 2);
    assert.equal((await run(['frobnicate'])).code, 2);
  });
});

describe('policy workflow on a run recorded through decide() and a real EventLog', () => {
  // What the proxy does per connection: decide on the name, then on the resolved address, emit one event.
  function connect(log: EventLog, policy: Policy, host: string, port: number, address: string): void {
    const d = decide(policy, { host, port, addresses: [address] });
    log.decision({
      kind: 'connect',
      client: '127.0.0.1:50000',
      host: d.host,
      port,
      ip: d.ip ?? address,
      decision: d.outcome,
      reason: d.reason,
      rule: d.rule,
      message: d.message,
      mode: policy.mode,
    });
  }

  it('audit run -> suggest -> replay passes; dropping entries blocks exactly those', async () => {
    const eventsFile = join(dir, 'recorded.ndjson');
    const audit = loadConfig({ flags: new Map(), env: {}, readFile: () => '' }).policy; // the embedded default: audit mode
    assert.equal(audit.mode, 'audit');
    const log = new EventLog({ stdout: false, eventsFile, ci: { job_id: 'recorded' } });
    log.log.info({ listen: '127.0.0.1:3128' }, 'proxy listening'); // an operational line the tools must skip
    const destinations: Array<[string, number, string]> = [
      ['registry.npmjs.org', 443, '104.16.3.35'],
      ['api.github.com', 443, '140.82.113.6'],
      ['Downloads.Example.Org.', 443, '93.184.215.20'],
      ['mirror.example.org', 80, '93.184.215.21'],
      ['db.corp.test', 5432, '203.0.113.40'],
      ['2001:db8::5', 8443, '2001:db8::5'],
      ['198.51.100.99', 9000, '198.51.100.99'],
    ];
    for (const [host, port, address] of destinations) {
      connect(log, audit, host, port, address);
      connect(log, audit, host, port, address);
    }
    const q = decideName(audit, 'only-resolved.example.org');
    log.decision({
      kind: 'dns',
      client: '127.0.0.1:53000',
      host: q.host,
      port: 53,
      qtype: 'A',
      decision: q.outcome,
      reason: q.reason,
      rule: q.rule,
      message: q.message,
      mode: 'audit',
    });
    log.flush();
    assert.match(readFileSync(eventsFile, 'utf8'), /proxy listening/);

    const suggested = await run(['suggest', eventsFile]);
    assert.equal(suggested.code, 0, suggested.stderr);
    assert.deepEqual(endpoints(suggested.stdout), [
      'api.github.com:443',
      'db.corp.test:5432',
      'downloads.example.org:443',
      'mirror.example.org:80',
      'only-resolved.example.org:443',
      'registry.npmjs.org:443',
    ]);
    const policy = policyFromFile(suggested.stdout, 's');
    assert.deepEqual(
      policy.allowedIps.map((r) => r.source),
      ['198.51.100.99', '2001:db8::5'],
    );
    assert.deepEqual(
      policy.trustedRanges.map((r) => r.source),
      ['203.0.113.40'],
    );
    const full = write('recorded-policy.yml', suggested.stdout);
    assert.equal((await replayed(full, eventsFile)).code, 0);

    const narrower = write(
      'recorded-narrow.yml',
      suggested.stdout
        .split('\n')
        .filter((l) => !/"(mirror\.example\.org:80|2001:db8::5|only-resolved\.example\.org:443)"/.test(l))
        .join('\n'),
    );
    const result = await replayed(narrower, eventsFile);
    assert.equal(result.code, 1);
    assert.deepEqual(result.blocked, ['2001:db8::5:8443', 'dns only-resolved.example.org:53', 'mirror.example.org:80']);
  });
});
