import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { POLICY_USAGE, policyCommand } from '../../cli/policy-command.js';
import { renderJobPage } from '../../collector/page.js';
import { EventLog } from '../../events/event-log.js';
import type { EgressEvent } from '../../events/schema.js';
import { buildReport, renderReport } from '../../report/format.js';
import { renderPolicyYaml, suggestPolicy } from '../../report/suggest.js';
import { summarize } from '../../report/summary.js';
import { runCaptured } from '../helpers/capture-io.js';

/**
 * A job of 200,000 decisions (the collector reads at most 200,000 events of a job): 150,000 DNS names under as many
 * domains, and 50,000 connections to a CDN name on 30 addresses. A spread of that many values into Math.max
 * overflowed the stack, so the job's page (the timeline), `report`'s table and the policy's YAML failed.
 */
function largeJob(): EgressEvent[] {
  const events = new EventLog({ stdout: false, ci: { job_id: 'large' } });
  const seen: EgressEvent[] = [];
  events.subscribe((e) => seen.push(e));
  for (let i = 0; i < 150_000; i++) {
    events.decision({
      kind: 'dns',
      client: '127.0.0.1:1',
      host: `n${i}.d${i}.test`,
      port: 53,
      decision: 'would-block',
      reason: 'not-allowed-endpoint',
      rule: null,
      message: '',
      mode: 'audit',
    });
  }
  for (let i = 0; i < 50_000; i++) {
    const ip = `198.51.100.${i % 30}`;
    events.decision({
      kind: 'connect',
      client: '127.0.0.1:1',
      host: 'cdn.example.test',
      port: 443,
      ip,
      decision: 'allowed',
      reason: 'allowed-endpoint',
      rule: 'cdn.example.test',
      message: '',
      mode: 'audit',
    });
  }
  return seen;
}

test('a job of 200,000 decisions: its page, report table and suggested policy render; the timeline merges its marks; a row shows 20 addresses', () => {
  const events = largeJob();
  const summary = summarize(events);
  assert.equal(summary.connections.length, 200_000);
  const yaml = renderPolicyYaml(suggestPolicy(events), 'job large');
  assert.ok(yaml.split('\n').length > 150_000, 'one entry per name');
  const table = renderReport(buildReport(events, 'job large'), 'table');
  assert.ok(table.includes('cdn.example.test'));

  const html = renderJobPage('large', summary, yaml, 'nonce');
  const svg = /<svg id="timeline"[\s\S]*?<\/svg>/.exec(html)![0];
  const titles = [...svg.matchAll(/<rect [^>]*><title>([^<]*)<\/title><\/rect>/g)].map((m) => m[1]!);
  // 60 rows drawn, at most 80 columns of 8 px per row and decision.
  assert.ok(titles.length <= 60 * 80 * 3, `${titles.length} marks`);
  const drawnRows = Math.min(60, summary.destinations.length);
  const counted = titles.reduce((n, t) => n + (/^(\d+) \S+ connections, /.exec(t) ? Number(/^(\d+)/.exec(t)![1]) : 1), 0);
  const inDrawnRows = summary.destinations.slice(0, drawnRows).reduce((n, d) => n + d.count, 0);
  assert.equal(counted, inDrawnRows, 'every connection of a drawn row is in one mark');
  assert.match(html, /200000 connections: those of one destination and decision within 8 pixels are drawn as one mark/);
  assert.match(html, /198\.51\.100\.19 and 10 more<\/td>/);
});

test('policy replay of a job that a policy blocks at 150,000 destinations prints its table', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'eg-large-replay-'));
  try {
    const events = join(dir, 'events.ndjson');
    writeFileSync(
      events,
      `${largeJob()
        .slice(0, 150_000)
        .map((e) => JSON.stringify(e))
        .join('\n')}\n`,
    );
    const policy = join(dir, 'policy.yml');
    writeFileSync(policy, 'allowed-endpoints: cdn.example.test:443\n');
    const result = await runCaptured(policyCommand, ['replay', '--policy', policy, events], {}, POLICY_USAGE);
    assert.match(result.stdout, /a block run would have blocked 150000 of 150000 decisions \(150000 destinations\)/);
    assert.match(result.stdout, /n149999\.d149999\.test:53/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
