import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { aggregateDeltas, type Deltas, type EventRowV2, type Link, type StoredDecision } from '../../collector/stores/aggregate.js';
import { DECISION, OUTCOME_CODES } from '../../collector/stores/codec.js';

/**
 * aggregateDeltas as it was before the eighth round (docs/collector.md): destinations by a `job:host:port:outcome`
 * string, one StoredDecision object per new decision. Kept here as the reference the current one must equal.
 */
function referenceDeltas(newDecisions: readonly EventRowV2[], links: readonly Link[]): Deltas {
  const jobs = new Map<number, Deltas['jobs'][number]>();
  const destinations = new Map<string, Deltas['destinations'][number]>();
  const add = (d: StoredDecision, time: number | null, bytesIn: number, bytesOut: number) => {
    let job = jobs.get(d.jobId);
    if (!job) {
      job = { jobId: d.jobId, repoId: null, first: Infinity, last: -Infinity, decisions: 0, allowed: 0, blocked: 0, wouldBlock: 0, bytesIn: 0, bytesOut: 0 };
      jobs.set(d.jobId, job);
    }
    const destKey = `${d.jobId}:${d.hostId}:${d.port}:${d.decision}`;
    let dest = destinations.get(destKey);
    if (!dest) {
      dest = { jobId: d.jobId, hostId: d.hostId, port: d.port, decision: d.decision, count: 0, bytesIn: 0, bytesOut: 0, first: Infinity, last: -Infinity };
      destinations.set(destKey, dest);
    }
    job.bytesIn += bytesIn;
    job.bytesOut += bytesOut;
    dest.bytesIn += bytesIn;
    dest.bytesOut += bytesOut;
    if (time === null) return;
    job.decisions++;
    if (d.decision === OUTCOME_CODES.allowed) job.allowed++;
    else if (d.decision === OUTCOME_CODES.blocked) job.blocked++;
    else job.wouldBlock++;
    dest.count++;
    for (const t of [job, dest]) {
      t.first = Math.min(t.first!, time);
      t.last = Math.max(t.last!, time);
    }
  };
  for (const r of newDecisions) {
    add({ jobId: r.jobId!, hostId: r.hostId, port: r.port, decision: r.decision! }, r.time, 0, 0);
    if (r.repoId !== null) jobs.get(r.jobId!)!.repoId ??= r.repoId;
  }
  for (const link of links) add(link.decision, null, link.bytesIn, link.bytesOut);
  const byKey = (a: StoredDecision, b: StoredDecision) => a.jobId - b.jobId || a.hostId - b.hostId || a.port - b.port || a.decision - b.decision;
  const times = <T extends { first: number | null; last: number | null }>(t: T): T => (t.first === Infinity ? { ...t, first: null, last: null } : t);
  return { jobs: [...jobs.values()].sort((a, b) => a.jobId - b.jobId).map(times), destinations: [...destinations.values()].sort(byKey).map(times) };
}

/** Few jobs, hosts and ports so that rows share aggregates; some values outside what the numeric key holds. */
const jobId = fc.integer({ min: 1, max: 4 });
const hostId = fc.oneof(fc.integer({ min: 0, max: 3 }), fc.constantFrom(0x7fff_ffff, 0x8000_0000, 2 ** 40, 1.5, -1));
const port = fc.oneof(fc.constantFrom(0, 1, 2, 443, 32768, 65535), fc.constantFrom(65536, 70_000, 0.5, -2));
const outcome = fc.oneof(fc.constantFrom(0, 1, 2), fc.constantFrom(3, 4, 1.25));
const stored = fc.record({ jobId, hostId, port, decision: outcome });

function row(d: StoredDecision, time: number, repoId: number | null): EventRowV2 {
  return {
    id: 'x',
    key: 'x',
    keepsId: false,
    pair: null,
    event: DECISION,
    time,
    jobId: d.jobId,
    repoId,
    hostId: d.hostId,
    port: d.port,
    decision: d.decision,
    bytesIn: null,
    bytesOut: null,
    body: Buffer.alloc(0),
    base: time,
    source: {} as never,
  };
}

describe('collector aggregate deltas', () => {
  it('equal the earlier per-string-key sums for random decisions and links, including hosts, ports and outcomes no stored row has', () => {
    fc.assert(
      fc.property(
        fc.array(fc.record({ d: stored, time: fc.integer({ min: 0, max: 10_000 }), repoId: fc.option(fc.integer({ min: 1, max: 3 })) }), { maxLength: 40 }),
        fc.array(fc.record({ decision: stored, bytesIn: fc.nat(1000), bytesOut: fc.nat(1000) }), { maxLength: 20 }),
        (decisions, links) => {
          const rows = decisions.map((x) => row(x.d, x.time, x.repoId));
          assert.deepEqual(aggregateDeltas(rows, links), referenceDeltas(rows, links));
        },
      ),
      { numRuns: 500 },
    );
  });

  it('keeps apart destinations whose numbers a sloppy key would mix (port by outcome, host by port, hosts past 2^31)', () => {
    const dests: StoredDecision[] = [
      { jobId: 1, hostId: 0, port: 0, decision: 2 },
      { jobId: 1, hostId: 0, port: 1, decision: 0 },
      { jobId: 1, hostId: 0, port: 0, decision: 4 },
      { jobId: 1, hostId: 0, port: 1, decision: 1 },
      { jobId: 1, hostId: 1, port: 32768, decision: 0 },
      { jobId: 1, hostId: 1.5, port: 0, decision: 0 },
      { jobId: 1, hostId: 2 ** 40, port: 0, decision: 0 },
      { jobId: 1, hostId: 2 ** 40, port: 1, decision: 0 },
    ];
    const rows = dests.map((d, i) => row(d, i, i === 3 ? 7 : null));
    const deltas = aggregateDeltas(rows, []);
    assert.equal(deltas.destinations.length, dests.length);
    assert.deepEqual(deltas, referenceDeltas(rows, []));
  });
});
