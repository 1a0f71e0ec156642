import assert from 'node:assert/strict';
import { describe, it, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { annotationsOf, blockedCount, exitedEarlyNotice, lastEventTime } from '../../action/findings.js';
import { jobSummaryMarkdown } from '../../action/job-summary.js';
import { upstreamResolvers } from '../../action/job-dns.js';
import { denyRule } from '../../action/disable-sudo.js';
import { decodeState, encodeState } from '../../action/state.js';
import type { DecisionEvent, EgressEvent } from '../../events/schema.js';
import { addonCandidates } from '../../net/native-addon.js';
import { readEventsFile } from '../../report/events-file.js';
import { buildReport } from '../../report/format.js';
import { renderPolicyYaml, suggestPolicy } from '../../report/suggest.js';

const FIXTURE = fileURLToPath(new URL('../../../test/fixtures/audit-run.ndjson', import.meta.url));

/** The audit fixture replayed as a block-mode run: every would-block became blocked. */
function asBlockRun(events: readonly EgressEvent[]): EgressEvent[] {
  return events.map((e) => (e.event === 'decision' && e.decision === 'would-block' ? ({ ...e, decision: 'blocked', mode: 'block' } as DecisionEvent) : e));
}

describe('action post: annotations, blocked-count, job summary', () => {
  it('audit mode: one warning per would-block row, none for allowed ones; blocked-count counts host:port destinations', async () => {
    const { events } = await readEventsFile(FIXTURE);
    const report = buildReport(events, FIXTURE);
    const annotations = annotationsOf(report.review);
    const refused = report.summary.destinations.filter((d) => d.decision === 'would-block');
    assert.equal(refused.length, 11);
    assert.equal(blockedCount(report.summary), 11);
    assert.ok(annotations.length > 0 && annotations.length <= refused.length);
    assert.ok(annotations.every((a) => a.level === 'warning' && a.title.startsWith('egress-guard would-block: ')));
    assert.ok(!annotations.some((a) => /github\.com:443\b/.test(a.title) && !/github\.io/.test(a.title)), 'an allowed destination got an annotation');
    const sentry = annotations.find((a) => a.title.includes('o450000.ingest.sentry.io:443'));
    assert.ok(sentry, JSON.stringify(annotations));
    assert.match(sentry.message, /would block \(audit mode\) o450000\.ingest\.sentry\.io:443 \(connect; 2x; not-allowed-endpoint\)/);
    const rawIp = annotations.find((a) => a.title.includes('203.0.113.50:8080'));
    assert.match(rawIp?.message ?? '', /Looks like /, 'a raw-IP destination says what it looks like');
  });

  it('block mode: errors, and blocked-count is the same destinations', async () => {
    const events = asBlockRun((await readEventsFile(FIXTURE)).events);
    const report = buildReport(events, FIXTURE);
    const annotations = annotationsOf(report.review);
    assert.ok(annotations.length > 0 && annotations.every((a) => a.level === 'error' && /^egress-guard blocked /.test(a.message)));
    assert.equal(blockedCount(report.summary), 11);
  });

  it('nothing refused: no annotation, blocked-count 0', async () => {
    const events = (await readEventsFile(FIXTURE)).events.filter((e) => e.event !== 'decision' || e.decision === 'allowed');
    const report = buildReport(events, FIXTURE);
    assert.deepEqual(annotationsOf(report.review), []);
    assert.equal(blockedCount(report.summary), 0);
  });

  it('the summary: the report table with refused rows before allowed ones, then the suggested policy collapsed', async () => {
    const { events } = await readEventsFile(FIXTURE);
    const report = buildReport(events, FIXTURE);
    const markdown = jobSummaryMarkdown(report, renderPolicyYaml(suggestPolicy(events), FIXTURE));
    const rows = markdown.split('\n').filter((line) => /^\| (⛔|⚠️|✅)/.test(line));
    const firstAllowed = rows.findIndex((r) => r.startsWith('| ✅'));
    const lastRefused = rows.map((r) => !r.startsWith('| ✅')).lastIndexOf(true);
    assert.ok(firstAllowed > 0 && lastRefused < firstAllowed, rows.join('\n'));
    const details = markdown.slice(markdown.indexOf('<details>'));
    assert.match(details, /^<details><summary>Suggested policy[^\n]*<\/summary>\n\n```yaml\n# egress-guard policy suggested from/);
    assert.match(details, /mode: block\n/);
    assert.match(details, /```\n\n<\/details>\n$/);
  });
});

describe('action main: DNS upstream, sudo rule, state', () => {
  const files = (map: Record<string, string>) => (file: string) => map[file];

  it('upstream: systemd-resolved upstreams when it runs (its stub is loopback), else resolv.conf, never loopback', () => {
    const stub = 'nameserver 127.0.0.53\noptions edns0 trust-ad\nsearch abc.internal.cloudapp.net\n';
    assert.deepEqual(upstreamResolvers(files({ '/run/systemd/resolve/resolv.conf': 'nameserver 168.63.129.16\nnameserver fe80::1%eth0\n', '/etc/resolv.conf': stub })), [
      '168.63.129.16',
      'fe80::1%eth0',
    ]);
    assert.deepEqual(upstreamResolvers(files({ '/etc/resolv.conf': 'nameserver 127.0.0.1\nnameserver 203.0.113.53\n' })), ['203.0.113.53']);
    assert.throws(() => upstreamResolvers(files({ '/etc/resolv.conf': stub })), /no upstream DNS server/);
  });

  it('the sudo deny rule names the user and denies every command', () => {
    assert.match(denyRule('runner'), /^runner ALL=\(ALL:ALL\) !ALL$/m);
  });

  it('state survives the trip from main to post', () => {
    const state = {
      mode: 'block' as const,
      sidecarPid: 42,
      rulesApplied: true,
      resolvConf: { kind: 'symlink' as const, target: '../run/systemd/resolve/stub-resolv.conf' },
      sudoDisabled: false,
    };
    assert.deepEqual(decodeState(encodeState(state)), state);
    assert.equal(decodeState(''), undefined);
    assert.throws(() => decodeState('{}'), /no mode/);
  });

  it('addons: a local build first, then the node-gyp-build prebuild layout, from the loading module upwards', () => {
    const candidates = addonCandidates('original_dst', 'file:///repo/action-dist/egress-guard.js', 'linux', 'arm64');
    assert.deepEqual(candidates.slice(0, 4), [
      '/repo/action-dist/native/build/Release/original_dst.node',
      '/repo/action-dist/prebuilds/linux-arm64/original_dst.node',
      '/repo/native/build/Release/original_dst.node',
      '/repo/prebuilds/linux-arm64/original_dst.node',
    ]);
    assert.equal(candidates.at(-1), '/prebuilds/linux-arm64/original_dst.node');
  });
});

test('post when egress-guard exited during the job: the last event time, the notice per mode, the notice first in the summary', () => {
  const events = [{ time: '2026-12-02T01:00:00.000Z' }, { time: '2026-12-02T01:05:00.000Z' }, { time: '2026-12-02T01:02:00.000Z' }] as EgressEvent[];
  assert.equal(lastEventTime(events), '2026-12-02T01:05:00.000Z');
  assert.equal(lastEventTime([]), undefined);
  const audit = exitedEarlyNotice('audit', '2026-12-02T01:05:00.000Z', '/tmp/eg.log');
  assert.match(audit, /^egress-guard exited during the job \(its output: \/tmp\/eg\.log\); audit mode .* after its last event \(2026-12-02T01:05:00\.000Z\) went out unchecked/);
  assert.match(exitedEarlyNotice('block', undefined, '/tmp/eg.log'), /block mode kept the redirect rules, so the job's connections after it started were refused/);
  const summary = jobSummaryMarkdown(buildReport([], 'events.ndjson'), 'allowed-endpoints: ""\n', [audit]);
  assert.ok(summary.startsWith(`> [!WARNING]\n> ${audit}\n`), summary.slice(0, 200));
  assert.ok(!jobSummaryMarkdown(buildReport([], 'events.ndjson'), '').includes('[!WARNING]'));
});
