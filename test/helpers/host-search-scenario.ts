import assert from 'node:assert/strict';
import { EventLog } from '../../events/event-log.js';
import type { EgressEvent } from '../../events/schema.js';
import type { EventStore } from '../../collector/stores/event-store.js';
import { hostQuery } from '../../collector/host-search.js';
import { testDecision } from './aggregate-model.js';

/**
 * Three jobs, one of which talked to a compromised uploader's host (and its subdomain), one that was blocked
 * reaching it, and one that never did: what GET /api/v1/search must tell apart, on either store.
 */
export function hostSearchEvents(): EgressEvent[] {
  const out: EgressEvent[] = [];
  const run = (job: string, visits: Array<{ host: string; decision: 'allowed' | 'blocked'; bytesOut: number; time: string }>) => {
    const log = new EventLog({ stdout: false, ci: { job_id: job } });
    log.subscribe((e) => void out.push({ ...e, time: e.event === 'decision' ? visits.find((v) => v.host === e.host)!.time : e.time }));
    for (const visit of visits) {
      const d = log.decision({
        client: '127.0.0.1:1',
        mode: 'block',
        kind: 'connect',
        host: visit.host,
        port: 443,
        decision: visit.decision,
        reason: visit.decision === 'allowed' ? 'allowed-endpoint' : 'not-allowed-endpoint',
        rule: null,
        message: 'x',
      });
      if (visit.decision === 'allowed')
        log.close({ id: d.id, kind: 'connect', client: '127.0.0.1:1', host: visit.host, port: 443, bytes_in: 10, bytes_out: visit.bytesOut, duration_ms: 5 });
    }
  };
  run('job-old', [{ host: 'codecov.io', decision: 'allowed', bytesOut: 100, time: '2026-10-01T10:00:00.000Z' }]);
  run('job-new', [
    { host: 'uploader.codecov.io', decision: 'allowed', bytesOut: 5000, time: '2026-11-20T10:00:00.000Z' },
    { host: 'github.com', decision: 'allowed', bytesOut: 1, time: '2026-11-20T10:01:00.000Z' },
  ]);
  run('job-blocked', [{ host: 'evil-codecov.io', decision: 'blocked', bytesOut: 0, time: '2026-11-10T10:00:00.000Z' }]);
  run('job-clean', [{ host: 'registry.npmjs.org', decision: 'allowed', bytesOut: 7, time: '2026-11-21T10:00:00.000Z' }]);
  return out;
}

/** The answers a collector holding hostSearchEvents() must give. */
export async function checkHostSearch(port: number): Promise<void> {
  const get = async (query: string) => {
    const res = await fetch(`http://127.0.0.1:${port}/api/v1/search?${query}`);
    return {
      status: res.status,
      body: (await res.json()) as {
        total?: number;
        more: boolean;
        next: string | null;
        jobs: Array<{ job: string; hosts: string[]; bytesOut: number; first: string; last: string; blocked: number }>;
      },
    };
  };
  const all = await get('host=codecov.io');
  assert.equal(all.status, 200);
  assert.deepEqual(
    all.body.jobs.map((j) => j.job),
    ['job-new', 'job-old'],
    'registrable-domain match, newest first; evil-codecov.io is another domain',
  );
  assert.deepEqual(all.body.jobs[0]!.hosts, ['uploader.codecov.io']);
  assert.equal(all.body.jobs[0]!.bytesOut, 5000);
  assert.equal((await get('host=*.codecov.io')).body.jobs.map((j) => j.job).join(), 'job-new');
  assert.deepEqual(
    (await get('host=*codecov.io')).body.jobs.map((j) => j.job),
    ['job-blocked', 'job-old'],
    'a glob stays within its label: codecov.io and evil-codecov.io, not uploader.codecov.io',
  );
  assert.equal((await get('host=evil-*.io')).body.jobs[0]!.blocked, 1);
  assert.deepEqual(
    (await get('host=codecov.io&since=2026-11-01T00:00:00Z')).body.jobs.map((j) => j.job),
    ['job-new'],
  );
  assert.deepEqual(
    (await get('host=codecov.io&until=2026-11-01T00:00:00Z')).body.jobs.map((j) => j.job),
    ['job-old'],
  );
  assert.equal((await get('host=codecov.io&decision=blocked')).body.total, 0);
  const first = await get('host=codecov.io&limit=1');
  assert.deepEqual([first.body.jobs.length, first.body.total, first.body.more, typeof first.body.next], [1, 2, true, 'string']);
  const second = await get(`host=codecov.io&limit=1&cursor=${first.body.next}`);
  assert.deepEqual([second.body.jobs.map((j) => j.job), second.body.more, second.body.next], [['job-old'], false, null]);
  assert.equal((await get('host=codecov.io&limit=1&offset=1')).body.jobs[0]!.job, 'job-old');
  assert.equal((await get('host=codecov.io&cursor=bm90LWEtY3Vyc29y')).status, 400, 'a cursor this collector did not give');
  const huge = Buffer.from(`${'9'.repeat(400)}.1`).toString('base64url');
  assert.equal((await get(`host=codecov.io&cursor=${huge}`)).status, 400, 'a cursor out of range');
  // A page of none (limit 0) counts the jobs but offers no next page: a client that follows `next` must not loop.
  const none = await get('host=codecov.io&limit=0');
  assert.deepEqual([none.body.jobs.length, none.body.total, none.body.more, none.body.next], [0, 2, true, null]);
  assert.equal((await get('host=%25_%25')).status, 400, 'LIKE wildcards are not a pattern');
  assert.equal((await get('host=codecov.io&since=yesterday')).status, 400);
}

/**
 * A pattern matching `hosts` hosts (more than queries.ts SCAN_UNION_HOSTS: PostgreSQL's LATERAL scan, SQLite's scan per
 * host merged by the store): `hosts + 20` jobs, job j on one host at minute j, every fifth also on the next host half
 * a minute before (blocked). Paged by cursor with scan chunks of 7 rows, and by offset; the count alone.
 */
export async function checkManyHostSearch(store: EventStore, hosts: number): Promise<void> {
  const jobs = hosts + 20;
  const base = Date.UTC(2026, 0, 5);
  const events: EgressEvent[] = [];
  // Job j talks to one host at minute j; every fifth job also to the next host half a minute before, blocked.
  for (let j = 0; j < jobs; j++) {
    const ci = { job_id: `many-${j}`, repository: 'org/many' };
    events.push(testDecision(`many-${j}`, base + j * 60_000, `h${j % hosts}.many.test`, ci));
    if (j % 5 === 0) events.push(testDecision(`many-${j}-b`, base + j * 60_000 - 30_000, `h${(j + 1) % hosts}.many.test`, ci, { decision: 'blocked' }));
  }
  await store.insert(events);
  const q = hostQuery('many.test');
  const filter = { likes: q.likes, matches: q.matches };
  const expected = Array.from({ length: jobs }, (_, i) => jobs - 1 - i).map((j) => [`many-${j}`, j % 5 === 0 ? 2 : 1, new Date(base + j * 60_000).toISOString()]);
  const row = (j: { job: string; decisions: number; last: string }) => [j.job, j.decisions, j.last];
  const byCursor: unknown[] = [];
  let cursor: string | undefined;
  for (let n = 0; n < jobs; n++) {
    const page = await store.searchJobs(filter, { limit: 97, scanRows: 7, ...(cursor && { cursor }) });
    byCursor.push(...page.jobs.map(row));
    if (!page.next) break;
    cursor = page.next;
  }
  assert.deepEqual(byCursor, expected, 'by cursor: each job once, newest first, its rows on two hosts summed');
  const byOffset = await store.searchJobs(filter, { limit: 20, offset: 100 });
  assert.deepEqual(byOffset.jobs.map(row), expected.slice(100, 120));
  assert.deepEqual((await store.searchJobs(filter, { limit: 0 })).total, jobs);
}
