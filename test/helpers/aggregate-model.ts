import assert from 'node:assert/strict';
import fc from 'fast-check';
import type { CloseEvent, DecisionEvent, EgressEvent } from '../../events/schema.js';
import Database from 'better-sqlite3';
import type { EventStore, JobInfo, SearchPage } from '../../collector/stores/event-store.js';
import { hostQuery } from '../../collector/host-search.js';
import type { JobSighting } from '../../report/host-sightings.js';

/**
 * The oracle of the aggregate property tests (SQLite and PostgreSQL): a model of which events a store holds after
 * batches (with repeats) and retention runs, and the job list and host sightings recounted from it the slow way.
 */

export const DAY = 86_400_000;
const BASE = Date.UTC(2026, 10, 1);
const JOBS = [
  { job_id: 'job-a', repository: 'org/one' },
  { job_id: 'job-b', repository: 'org/two' },
  { job_id: 'job-c', repository: 'org/one' },
];
const HOSTS = ['a.example.com', 'b.example.com', 'c.test'];
const OUTCOMES = ['allowed', 'blocked', 'would-block'] as const;

export type Step = { batch: EgressEvent[] } | { retainAt: number };

/** A decision of a test job (connect to `host`:443 unless `fields` say otherwise). */
export function testDecision(id: string, time: number, host: string, job: { job_id: string; repository: string }, fields: Partial<DecisionEvent> = {}): DecisionEvent {
  return {
    schema: 1,
    event: 'decision',
    id,
    time: new Date(time).toISOString(),
    kind: 'connect',
    client: '127.0.0.1:4000',
    host,
    port: 443,
    decision: 'allowed',
    reason: 'allowed-endpoint',
    rule: null,
    message: 'm',
    mode: 'audit',
    ci: job,
    ...fields,
  };
}

/** The close of a decision, `after` ms later. */
export function testClose(d: DecisionEvent, after: number, bytesIn: number, bytesOut: number): CloseEvent {
  return {
    schema: 1,
    event: 'close',
    id: d.id,
    time: new Date(Date.parse(d.time) + after).toISOString(),
    kind: d.kind,
    client: d.client,
    host: d.host,
    port: d.port,
    bytes_in: bytesIn,
    bytes_out: bytesOut,
    duration_ms: after,
  };
}

/** Run the steps on a store and its model: each batch stores exactly what the model says is new. */
export async function runSteps(store: EventStore, model: StoreModel, steps: readonly Step[], checkEach: boolean): Promise<void> {
  for (const step of steps) {
    if ('batch' in step) {
      const expected = model.insert(step.batch);
      assert.equal((await store.insert(step.batch)).stored, expected, 'each event stored once');
    } else {
      model.retain(step.retainAt);
      await store.retain(new Date(step.retainAt));
    }
    if (checkEach) await checkAgainstModel(store, model, POOL_WINDOW);
  }
  await checkAgainstModel(store, model, POOL_WINDOW);
  assert.equal(await store.count(), model.held.size);
}

/** A SQLite file in the collector's first layout (one JSON row per event), holding these events. */
export function writeFirstLayoutDb(path: string, events: readonly EgressEvent[]): void {
  const db = new Database(path);
  db.exec(`CREATE TABLE egress_events (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL, event TEXT NOT NULL, job TEXT, time TEXT NOT NULL,
    decision TEXT, body TEXT NOT NULL, received_at TEXT NOT NULL, UNIQUE (id, event))`);
  const insert = db.prepare('INSERT INTO egress_events (id, event, job, time, decision, body, received_at) VALUES (?, ?, ?, ?, ?, ?, ?)');
  for (const e of events) {
    insert.run(e.id, e.event, e.event === 'decision' ? (e.ci?.job_id ?? null) : null, e.time, e.event === 'decision' ? e.decision : null, JSON.stringify(e), e.time);
  }
  db.close();
}

/** A pool of decisions (with closes, some crossing midnight) over five days, then steps drawing from it. */
export function scenario(): fc.Arbitrary<{ pool: EgressEvent[]; steps: Step[] }> {
  const decision = fc.record({
    uuid: fc.boolean(),
    id: fc.uuid(),
    job: fc.nat({ max: JOBS.length - 1 }),
    host: fc.nat({ max: HOSTS.length - 1 }),
    port: fc.constantFrom(443, 80),
    outcome: fc.nat({ max: 2 }),
    at: fc.integer({ min: 0, max: 5 * DAY - 1 }),
    close: fc.option(fc.record({ after: fc.integer({ min: 0, max: 3 * 3_600_000 }), bytesIn: fc.nat({ max: 1e6 }), bytesOut: fc.nat({ max: 1e6 }) })),
  });
  return fc.uniqueArray(decision, { minLength: 1, maxLength: 25, selector: (d) => d.id }).chain((specs) => {
    const pool: EgressEvent[] = specs.flatMap((s, i) => {
      const id = s.uuid ? s.id : `evt-${i}-${s.id.slice(0, 8)}`;
      const time = BASE + s.at;
      const d = testDecision(id, time, HOSTS[s.host]!, JOBS[s.job]!, { port: s.port, decision: OUTCOMES[s.outcome]! });
      if (!s.close) return [d];
      const c = testClose(d, s.close.after, s.close.bytesIn, s.close.bytesOut);
      return [d, c];
    });
    const step: fc.Arbitrary<Step> = fc.oneof(
      { weight: 4, arbitrary: fc.array(fc.nat({ max: pool.length - 1 }), { minLength: 1, maxLength: 20 }).map((picks) => ({ batch: picks.map((i) => pool[i]!) })) },
      { weight: 1, arbitrary: fc.integer({ min: 0, max: 6 * DAY }).map((offset) => ({ retainAt: BASE + offset })) },
    );
    return fc.record({ pool: fc.constant(pool), steps: fc.array(step, { minLength: 1, maxLength: 10 }) });
  });
}

/** Which events a store holds: (id, event) -> event. */
export class StoreModel {
  readonly held = new Map<string, EgressEvent>();

  constructor(
    /** Whether retention at `cutoff` deletes an event of this time (the stores differ: exact time vs whole days). */
    private readonly deletes: (time: number, cutoff: number) => boolean,
  ) {}

  insert(events: readonly EgressEvent[]): number {
    let stored = 0;
    for (const e of events) {
      const key = `${e.event}:${e.id}`;
      if (this.held.has(key)) continue;
      this.held.set(key, e);
      stored++;
    }
    return stored;
  }

  retain(cutoff: number): void {
    for (const [key, e] of this.held) if (this.deletes(Date.parse(e.time), cutoff)) this.held.delete(key);
  }

  private decisions(): Array<{ d: DecisionEvent; close?: CloseEvent }> {
    return [...this.held.values()].flatMap((e) => {
      if (e.event !== 'decision') return [];
      const close = this.held.get(`close:${e.id}`) as CloseEvent | undefined;
      return [{ d: e, ...(close && { close }) }];
    });
  }

  jobs(): JobInfo[] {
    const jobs = new Map<string, JobInfo>();
    for (const { d, close } of this.decisions()) {
      const job = d.ci!.job_id!;
      const j = jobs.get(job) ?? { job, repository: d.ci!.repository!, first: d.time, last: d.time, decisions: 0, allowed: 0, blocked: 0, wouldBlock: 0, bytesIn: 0, bytesOut: 0 };
      jobs.set(job, j);
      if (d.time < j.first) j.first = d.time;
      if (d.time > j.last) j.last = d.time;
      j.decisions++;
      if (d.decision === 'allowed') j.allowed++;
      else if (d.decision === 'blocked') j.blocked++;
      else j.wouldBlock++;
      j.bytesIn += close?.bytes_in ?? 0;
      j.bytesOut += close?.bytes_out ?? 0;
    }
    return [...jobs.values()].sort((a, b) => a.job.localeCompare(b.job));
  }

  /** Per job sightings of the hosts `matches` accepts in [since, until] (of one outcome, when given). */
  sightings(matches: (host: string) => boolean, since: number, until: number, outcome?: string): JobSighting[] {
    const out = new Map<string, JobSighting>();
    for (const { d, close } of this.decisions()) {
      const t = Date.parse(d.time);
      if (!matches(d.host) || t < since || t > until || (outcome !== undefined && d.decision !== outcome)) continue;
      const key = d.ci!.job_id!;
      const s = out.get(key) ?? { job: key, first: d.time, last: d.time, decisions: 0, allowed: 0, blocked: 0, wouldBlock: 0, bytesOut: 0, hosts: [] };
      out.set(key, s);
      s.decisions++;
      if (d.decision === 'allowed') s.allowed++;
      else if (d.decision === 'blocked') s.blocked++;
      else s.wouldBlock++;
      s.bytesOut += close?.bytes_out ?? 0;
      if (d.time < s.first) s.first = d.time;
      if (d.time > s.last) s.last = d.time;
      if (!s.hosts.includes(d.host)) s.hosts.push(d.host);
    }
    for (const s of out.values()) s.hosts.sort();
    return [...out.values()].sort((a, b) => a.job.localeCompare(b.job));
  }
}

/** The store's job list, sorted by job as StoreModel.jobs() is. */
export async function storedJobs(store: EventStore): Promise<Awaited<ReturnType<EventStore['jobs']>>['jobs']> {
  return (await store.jobs()).jobs.sort((a, b) => a.job.localeCompare(b.job));
}

/** The job list a recount of `events` gives (no retention). */
export function recountJobs(events: readonly EgressEvent[]): ReturnType<StoreModel['jobs']> {
  const model = new StoreModel(() => false);
  model.insert(events);
  return model.jobs();
}

/** The store's aggregates (job list, sightings in a window) and its raw events equal the model's recount. */
export async function checkAgainstModel(store: EventStore, model: StoreModel, window: { since: number; until: number }): Promise<void> {
  assert.deepEqual(await storedJobs(store), model.jobs(), 'job aggregates equal a recount of the raw events');
  // Each host alone, and a pattern that matches two of them (summed per job in the database), of every outcome or one.
  const searches: Array<{ pattern: string; decision?: string }> = [
    ...HOSTS.map((host) => ({ pattern: host })),
    { pattern: 'example.com' },
    { pattern: 'example.com', decision: 'blocked' },
  ];
  for (const { pattern, decision } of searches) {
    const query = hostQuery(pattern);
    const filter = {
      likes: query.likes,
      matches: query.matches,
      since: new Date(window.since).toISOString(),
      until: new Date(window.until).toISOString(),
      ...(decision && { decision }),
    };
    const all = await store.searchJobs(filter, { limit: 1000, offset: 0 });
    const expected = model.sightings(query.matches, window.since, window.until, decision);
    const what = `sightings of ${pattern} (${decision ?? 'any outcome'}) in the window`;
    assert.deepEqual(
      [...all.jobs].sort((a, b) => a.job.localeCompare(b.job)),
      expected,
      what,
    );
    assert.equal(all.total, expected.length, `${what}: total`);
    assert.deepEqual([all.more, all.next], [false, null], `${what}: one page holds them all`);
    assert.ok(
      all.jobs.every((j, i) => i === 0 || j.last <= all.jobs[i - 1]!.last),
      `${what}: newest first`,
    );
    // A page of none (`limit=0`: only the total asked), at the start and further on.
    for (const offset of [0, 1]) {
      const none = await store.searchJobs(filter, { limit: 0, offset });
      assert.deepEqual(none, { jobs: [], total: all.total, more: all.total! > offset, next: null }, `${what}: a page of none at ${offset} still has the total`);
    }
    // Pages by offset and by cursor, read in chunks of 1 and 2 rows (pages that end mid-scan) and the default: together
    // the whole answer in its order (no job twice, none missing); `total` exact whenever it is given.
    for (const [limit, scanRows] of [
      [1, 1],
      [2, undefined],
      [3, 2],
    ] as Array<[number, number | undefined]>) {
      const chunks = scanRows === undefined ? {} : { scanRows };
      const byOffset: JobSighting[] = [];
      for (let offset = 0; offset <= all.total!; offset += limit) {
        const page = await store.searchJobs(filter, { limit, offset, ...chunks });
        if (page.total !== undefined) assert.equal(page.total, all.total, `${what}: total of the page at ${offset}`);
        assert.equal(page.more, offset + limit < all.total!, `${what}: more after the page at ${offset}`);
        byOffset.push(...page.jobs);
      }
      assert.deepEqual(byOffset, all.jobs, `${what}: pages of ${limit} by offset (scan chunks ${scanRows ?? 'default'})`);
      const byCursor: JobSighting[] = [];
      let cursor: string | undefined;
      for (let n = 0; n <= all.total! + 1; n++) {
        const page: SearchPage = await store.searchJobs(filter, { limit, ...(cursor && { cursor }), ...chunks });
        byCursor.push(...page.jobs);
        assert.equal(page.next !== null, page.more, `${what}: a next cursor exactly when more follow`);
        if (!page.next) break;
        cursor = page.next;
      }
      assert.deepEqual(byCursor, all.jobs, `${what}: pages of ${limit} by cursor (scan chunks ${scanRows ?? 'default'})`);
    }
  }
  for (const job of model.jobs()) {
    const stored = await store.jobEvents(job.job, 10_000);
    const expected = [...model.held.values()].filter((e) => e.event === 'decision' && e.ci?.job_id === job.job);
    const closes = expected.flatMap((d) => {
      const c = model.held.get(`close:${d.id}`);
      return c ? [c] : [];
    });
    const text = (events: readonly EgressEvent[]) => events.map((e) => JSON.stringify(e)).sort();
    assert.deepEqual(text(stored), text([...expected, ...closes]), `job ${job.job}: its events rebuilt exactly`);
  }
}

export const POOL_WINDOW = { since: BASE + DAY + 6 * 3_600_000, until: BASE + 3 * DAY + 18 * 3_600_000 };
