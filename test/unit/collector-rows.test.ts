import assert from 'node:assert/strict';
import { it } from 'node:test';
import fc from 'fast-check';
import { jobEvents } from '../../bench/collector-events.js';
import { batchStrings, toRows, type EventRowV2 } from '../../collector/stores/aggregate.js';
import { CLOSE, DECISION, encodeId, OUTCOME_CODES, packBody } from '../../collector/stores/codec.js';
import { keepsIdInBody, pgKey } from '../../collector/stores/pg-key.js';
import { batchRows, joinsDecision } from '../../collector/stores/postgres-store.js';
import { jobKey } from '../../events/job-key.js';
import type { CloseEvent, DecisionEvent, EgressEvent } from '../../events/schema.js';

/**
 * A batch's rows (aggregate.ts toRows, postgres-store.ts batchRows) are what the sixth round's toRows made: the same
 * rows in the same order, the same keys, the same bytes of every body, the same pairs. The reference below is that
 * toRows as it was (rows named by the hex of codec.ts encodeId's key, keys from that Buffer), kept here only as the
 * check: the seventh round pairs rows by the id's text and keys them from it (docs/collector.md, "Seventh round").
 */

/** What is compared of a row: its fields, its key as text, its body as hex, and its pair's index (-1: none in the batch). */
const FIELDS = ['event', 'time', 'jobId', 'repoId', 'hostId', 'port', 'decision', 'bytesIn', 'bytesOut', 'base'] as const;
type Expected = Pick<EventRowV2, (typeof FIELDS)[number]> & { key: string; body: string; pair: number };

function expected(r: Pick<EventRowV2, (typeof FIELDS)[number] | 'body'>, key: string, pair: number): Expected {
  return { ...(Object.fromEntries(FIELDS.map((f) => [f, r[f]])) as Pick<EventRowV2, (typeof FIELDS)[number]>), key, body: r.body.toString('hex'), pair };
}

/** The sixth round's toRows, then its stored keys: `storeKey` of the id's encodeId key; `keepsId` of that key. */
function referenceRows(
  events: readonly EgressEvent[],
  ids: ReadonlyMap<string, number>,
  storeKey: (key: Buffer, event: number) => string,
  keepsId: (key: Buffer) => boolean,
  joins?: (d: { hostId: number; time: number }, c: { hostId: number; time: number }) => boolean,
): Expected[] {
  type Row = Pick<EventRowV2, (typeof FIELDS)[number]> & { hex: string; ref: string; pair: string; keyBytes: Buffer; source: EgressEvent; body: Buffer };
  const rows = new Map<string, Row>();
  for (const e of events) {
    const hex = encodeId(e.id).toString('hex');
    const event = e.event === 'decision' ? DECISION : CLOSE;
    const ref = `${event}${hex}`;
    if (rows.has(ref)) continue;
    const time = Date.parse(e.time);
    rows.set(ref, {
      keyBytes: Buffer.from(hex, 'hex'),
      hex,
      ref,
      pair: '',
      event,
      time,
      jobId: e.event === 'decision' ? ids.get(jobKey(e))! : null,
      repoId: e.event === 'decision' && e.ci?.repository ? ids.get(e.ci.repository)! : null,
      hostId: ids.get(e.host)!,
      port: e.port,
      decision: e.event === 'decision' ? OUTCOME_CODES[e.decision] : null,
      bytesIn: e.event === 'close' ? e.bytes_in : null,
      bytesOut: e.event === 'close' ? e.bytes_out : null,
      body: Buffer.alloc(0),
      base: time,
      source: e,
    });
  }
  const all = [...rows.values()];
  const decisions = new Map(all.filter((r) => r.event === DECISION).map((r) => [r.hex, r]));
  for (const r of all) {
    if (r.event === CLOSE) {
      const decision = decisions.get(r.hex);
      r.jobId = decision?.jobId ?? null;
      if (decision) {
        r.pair = decision.ref;
        decision.pair = r.ref;
      }
      if (decision && joins?.(decision, r)) r.base = decision.time;
    }
    r.body = packBody(r.source, r.time, keepsId(r.keyBytes), r.base);
  }
  const index = new Map(all.map((r, i) => [r.ref, i]));
  return all.map((r) => expected(r, storeKey(r.keyBytes, r.event), r.pair === '' ? -1 : index.get(r.pair)!));
}

function actual<K>(rows: ReturnType<typeof toRows<K>>, key: (k: K) => string): Expected[] {
  const index = new Map(rows.map((r, i) => [r, i]));
  return rows.map((r) => expected(r, key(r.key), r.pair === null ? -1 : index.get(r.pair)!));
}

/** Ids of every kind a key is made from: RFC UUIDs, UUIDs of other variants or in upper case, text, lone surrogates. */
const id = fc.oneof(
  fc.uuid(),
  fc.tuple(fc.uuid(), fc.integer({ min: 0, max: 15 })).map(([u, variant]) => `${u.slice(0, 19)}${'0123456789abcdef'[variant]}${u.slice(20)}`),
  fc.uuid().map((u) => u.toUpperCase()),
  fc.constantFrom('a', 'job-1-7', '\ud800', '\ufffd', 'x\udc00y', 'x\ufffdy', '0b0e8f1c-6a57-4c9e-9d1e-2f4a1b3c5d7e'),
  fc.string({ unit: 'binary', minLength: 1, maxLength: 40 }),
);

const DAY = 86_400_000;
/** The bench's events of one job, near midnight (so that some closes fall on the next day by themselves too). */
const template = jobEvents('rows-test', 200, Date.UTC(2026, 10, 30, 23, 59, 45), 40);

/**
 * A batch: pairs of a decision and its close (the bench's events) with ids from the pool above (so that ids repeat:
 * repeats in the batch, two ids that share a key), each close on time, before its decision, on the next day or for
 * another host, some decisions or closes alone, in any order.
 */
const batch = fc
  .record({
    ids: fc.array(id, { minLength: 1, maxLength: 12 }),
    picks: fc.array(
      fc.record({
        id: fc.nat(),
        close: fc.constantFrom('after', 'before', 'next-day', 'other-host', 'none', 'alone'),
        twice: fc.boolean(),
        rank: fc.double({ min: 0, max: 1, noNaN: true }),
      }),
      { minLength: 1, maxLength: 40 },
    ),
  })
  .map(({ ids, picks }) => {
    const out: Array<{ rank: number; e: EgressEvent }> = [];
    picks.forEach((p, i) => {
      const d = template.find((e, j) => j >= i * 2 && e.event === 'decision') as DecisionEvent;
      const c = template.find((e) => e.event === 'close' && e.id === d.id) as CloseEvent | undefined;
      const eventId = ids[p.id % ids.length]!;
      const decision: DecisionEvent = { ...d, id: eventId };
      const t = Date.parse(d.time);
      const closeTime = p.close === 'before' ? t - 1000 : p.close === 'next-day' ? t + DAY : t + 120;
      const close: CloseEvent = {
        ...(c ?? (template.find((e) => e.event === 'close') as CloseEvent)),
        id: eventId,
        time: new Date(closeTime).toISOString(),
        host: p.close === 'other-host' ? 'other.example.test' : d.host,
      };
      if (p.close !== 'alone') out.push({ rank: p.rank, e: decision });
      if (p.close !== 'none') out.push({ rank: p.close === 'before' ? p.rank / 2 : p.rank, e: close });
      if (p.twice) out.push({ rank: 1 - p.rank, e: p.close === 'alone' ? close : decision });
    });
    return out.sort((a, b) => a.rank - b.rank).map((x) => x.e);
  });

function dictionary(events: readonly EgressEvent[]): Map<string, number> {
  return new Map(batchStrings(events).map((s, i) => [s, i + 1]));
}

it('a batch has the rows, keys, bodies and pairs the sixth round made (PostgreSQL and SQLite keys)', () => {
  fc.assert(
    fc.property(batch, (events) => {
      const ids = dictionary(events);
      const pg = actual(batchRows(events, ids), (k) => k);
      assert.deepEqual(pg, referenceRows(events, ids, pgKey, keepsIdInBody, joinsDecision));
      const sqlite = actual(toRows(events, ids, { key: encodeId }), (k) => k.toString('hex'));
      assert.deepEqual(
        sqlite,
        referenceRows(
          events,
          ids,
          (k) => k.toString('hex'),
          () => false,
        ),
      );
    }),
    { numRuns: 300 },
  );
});

it('ids that differ only in a lone surrogate share one row, as they share a key', () => {
  const c = template.find((e) => e.event === 'close') as CloseEvent;
  const d = template.find((e) => e.event === 'decision' && e.id === c.id) as DecisionEvent;
  const events: EgressEvent[] = [
    { ...d, id: 'a\ud800' },
    { ...d, id: 'a\ufffd' },
    { ...c, id: 'a\ufffd' },
  ];
  const rows = batchRows(events, dictionary(events));
  assert.equal(rows.length, 2);
  assert.equal(rows[1]!.pair, rows[0]);
  assert.equal(rows[0]!.key, pgKey(encodeId('a\ud800'), DECISION));
});
