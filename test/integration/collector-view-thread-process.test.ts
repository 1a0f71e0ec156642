import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { jobEvents as generatedJob } from '../../bench/collector-events.js';
import { renderJobView } from '../../collector/job-view.js';
import { VIEW_THREAD_FROM } from '../../collector/view-thread.js';
import { jobKey } from '../../events/job-key.js';
import type { DecisionEvent, EgressEvent } from '../../events/schema.js';
import { postEvents, startCollectorProcess } from '../helpers/collector-process.js';

function get(port: number, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode!, body: Buffer.concat(chunks).toString() }));
    });
    req.setTimeout(60_000, () => req.destroy(new Error('no answer in 60 s')));
    req.on('error', reject);
    req.end();
  });
}

// The CLI is a bundle (scripts/build-cli-bundle.mjs) whose collector starts its view thread from a file beside its
// own chunk (dist/chunks/): a job large enough for the thread, through the `egress-guard collector` users run.
test("egress-guard collector (the bundled CLI) renders a large job's summary, policy and page in its view thread", async () => {
  const dir = mkdtempSync(join(tmpdir(), 'eg-view-thread-process-'));
  const collector = await startCollectorProcess(join(dir, 'collector.db'));
  try {
    const events = generatedJob('bundled-view-job', VIEW_THREAD_FROM + 500, Date.parse('2026-12-01T10:00:00Z'), 40);
    for (let at = 0; at < events.length; at += 2_000) assert.equal((await postEvents(collector.port, events.slice(at, at + 2_000))).status, 200);
    const job = jobKey(events[0] as DecisionEvent);
    const path = `/api/v1/jobs/${encodeURIComponent(job)}`;
    const stored = (JSON.parse((await get(collector.port, `${path}/events`)).body) as { events: EgressEvent[] }).events;
    assert.equal(stored.length, events.length);

    const summary = await get(collector.port, `${path}/summary`);
    assert.equal(summary.status, 200, summary.body);
    assert.equal(summary.body, renderJobView({ kind: 'summary', job }, stored));
    const policy = await get(collector.port, `${path}/policy`);
    assert.equal(policy.status, 200, policy.body);
    assert.equal(policy.body, renderJobView({ kind: 'policy', job, collapse: 0 }, stored));
    const page = await get(collector.port, `/jobs/${encodeURIComponent(job)}`);
    assert.equal(page.status, 200, page.body);
    assert.match(page.body, /<h2>Suggested policy<\/h2>/);
  } finally {
    await collector.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});
