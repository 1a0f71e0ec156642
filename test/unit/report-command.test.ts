import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { REPORT_USAGE, reportCommand } from '../../cli/report-command.js';
import { startCollector, type Collector } from '../../collector/server.js';
import { runCaptured, type CommandResult } from '../helpers/capture-io.js';

const FIXTURE = fileURLToPath(new URL('../../../test/fixtures/audit-run.ndjson', import.meta.url));
const STEPS = fileURLToPath(new URL('../../../test/fixtures/audit-run-job.json', import.meta.url));
const JOB = 'octo-org/webapp/9001/build';

function report(argv: string[]): Promise<CommandResult> {
  return runCaptured(reportCommand, argv, {}, REPORT_USAGE);
}

describe('egress-guard report', () => {
  let dir: string;
  let collector: Collector;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'egress-report-'));
    collector = await startCollector({ listen: { host: '127.0.0.1', port: 0 }, db: join(dir, 'r.db') });
  });
  after(async () => {
    await collector?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('prints a terminal table: what looks like an attack first, then blocked and would-block, sizes people read; skips operational lines', async () => {
    const { code, stdout } = await report([FIXTURE]);
    assert.equal(code, 0);
    assert.ok(!stdout.includes('\x1b['), 'no colour when stdout is not a terminal');
    const lines = stdout.split('\n');
    assert.match(lines[0]!, new RegExp(`job ${JOB}: 16 destinations, 33 decisions`));
    assert.equal(lines[1], 'allowed 18, would-block 15, blocked 0');
    assert.equal(lines[3], 'Looks like an attack, not a missing allowlist entry:');
    assert.equal(lines[4], '  ! 203.0.113.50:8080 (would-block): a connection to a raw IP address, with no name looked up');
    const header = lines.findIndex((l) => l.startsWith('DECISION'));
    assert.match(lines[header]!, /^DECISION\s+DESTINATION\s+KINDS\s+COUNT\s+OUT\s+IN\s+FIRST\s+LAST\s+REASON\s+LOOKS LIKE$/);
    const rows = lines
      .slice(header + 1)
      .filter(Boolean)
      .map((l) => l.split(/\s{2,}/));
    assert.equal(rows.length, 16);
    assert.deepEqual(rows[0]!.slice(0, 4), ['would-block', '203.0.113.50:8080', 'http', '1']);
    assert.equal(rows[0]!.at(-1), 'raw-ip', 'the flagged row is first');
    assert.deepEqual(rows[1]!.slice(0, 4), ['would-block', 'cdn1.assets.example.com:443', 'connect', '2']);
    const npm = rows.find((r) => r[1] === 'registry.npmjs.org:443')!;
    assert.deepEqual(npm, ['allowed', 'registry.npmjs.org:443', 'connect', '12', '18 KiB', '650 KiB', '10:00:11', '10:00:22', 'allowed-endpoint']);
    assert.ok(rows.findIndex((r) => r[0] === 'allowed') > rows.map((r) => r[0]).lastIndexOf('would-block'));
    assert.ok(!stdout.includes('egress-guard started'));
  });

  it('--format json carries the summary with bytes from close events', async () => {
    const { stdout } = await report(['--format', 'json', FIXTURE]);
    const json = JSON.parse(stdout);
    assert.deepEqual(json.summary.totals, { allowed: 18, blocked: 0, 'would-block': 15 });
    const codeload = json.summary.destinations.find((d: any) => d.host === 'codeload.github.com');
    assert.equal(codeload.bytesIn, 480000);
    assert.equal(json.summary.connections.length, 33);
    assert.equal(json.steps, undefined);
  });

  it('--steps groups events by the CI step that was running (markdown for $GITHUB_STEP_SUMMARY)', async () => {
    const { code, stdout } = await report(['--format', 'markdown', '--steps', STEPS, FIXTURE]);
    assert.equal(code, 0);
    const headings = stdout.split('\n').filter((l) => l.startsWith('#### '));
    assert.deepEqual(headings, [
      '#### 🚩 Looks like an attack, not a missing allowlist entry',
      '#### Step 2: Run actions/checkout@v4',
      '#### Step 3: Run actions/setup-node@v4',
      '#### Step 4: Run npm ci',
      '#### Step 5: Run npm test',
      '#### (outside any step)',
    ]);
    const section = (title: string) => stdout.split(`#### ${title}`)[1]!.split('####')[0]!;
    assert.match(section('Step 4: Run npm ci'), /\| ⚠️ would-block \| `registry\.internal\.test:8443` \| connect \| 2 \|/);
    assert.match(section('Step 4: Run npm ci'), /`o450000\.ingest\.sentry\.io:443` \| connect \| 1 \|/);
    assert.match(section('(outside any step)'), /`o450000\.ingest\.sentry\.io:443` \| connect \| 1 \|/);
    assert.doesNotMatch(section('Step 2: Run actions/checkout@v4'), /npmjs/);
    assert.match(stdout, /^### egress-guard: job octo-org\/webapp\/9001/m);
    assert.match(stdout, /\*\*18\*\* allowed · \*\*15\*\* would-block · \*\*0\*\* blocked/);

    const json = JSON.parse((await report(['--format', 'json', '--steps', STEPS, FIXTURE])).stdout);
    assert.deepEqual(
      json.steps.map((s: any) => [s.step, s.summary.decisions]),
      [
        ['Run actions/checkout@v4', 3],
        ['Run actions/setup-node@v4', 5],
        ['Run npm ci', 17],
        ['Run npm test', 7],
        ['(outside any step)', 1],
      ],
    );
  });

  it('escapes markdown in step names and keeps table cells intact', async () => {
    const steps = JSON.parse(readFileSync(STEPS, 'utf8'));
    steps.steps[3].name = 'Run npm ci | tee <log> *now*';
    const path = join(dir, 'steps.json');
    writeFileSync(path, JSON.stringify(steps));
    const { stdout } = await report(['--format', 'markdown', '--steps', path, FIXTURE]);
    assert.match(stdout, /#### Step 4: Run npm ci \\\| tee \\<log\\> \\\*now\\\*/);
  });

  it('reads a job from a collector by URL', async () => {
    const body = readFileSync(FIXTURE, 'utf8')
      .split('\n')
      .filter((l) => l.includes('"schema":1'))
      .join('\n');
    const res = await fetch(`http://127.0.0.1:${collector.port}/api/v1/events`, { method: 'POST', body });
    assert.equal(res.status, 200);
    const fromFile = JSON.parse((await report(['--format', 'json', FIXTURE])).stdout);
    const fromCollector = await report(['--format', 'json', '--job', JOB, `http://127.0.0.1:${collector.port}`]);
    assert.equal(fromCollector.code, 0, fromCollector.stderr);
    assert.deepEqual(JSON.parse(fromCollector.stdout).summary, fromFile.summary);
    // One job on the collector: --job may be left out.
    assert.equal(JSON.parse((await report(['--format', 'json', '--collector', `http://127.0.0.1:${collector.port}`])).stdout).summary.decisions, 33);
    const missing = await report(['--job', 'nope', `http://127.0.0.1:${collector.port}`]);
    assert.equal(missing.code, 2);
    assert.match(missing.stderr, /collector answered 404.*no events for job "nope"/);
  });

  it('refuses bad options and bad step files with exit 2', async () => {
    const format = await report(['--format', 'html', FIXTURE]);
    assert.equal(format.code, 2);
    assert.equal(format.stderr, `egress-guard: --format must be one of table, markdown, json\nusage: ${REPORT_USAGE}\n`);
    const unknown = await report(['--bogus', FIXTURE]);
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr, /^egress-guard: unknown option --bogus\n/);
    assert.match((await report(['--format'])).stderr, /^egress-guard: --format needs a value\n/);
    assert.equal((await report([])).code, 2);
    const notJob = join(dir, 'not-job.json');
    writeFileSync(notJob, '{"jobs": []}');
    const bad = await report(['--steps', notJob, FIXTURE]);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /no "steps" list/);
  });
});
