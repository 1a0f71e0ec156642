import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { EgressEvent } from '../events/schema.js';
import { jobEvents } from './collector-events.js';
import { round } from './stats.js';

/**
 * The collector's CPU per ingested event before PostgreSQL (issue 16), in-process, stage by stage:
 * `node dist/bench/collector-ingest-profile.js [DIST...]`. Each DIST is a build's `dist/` (default: this one), so two
 * builds are compared in one run, rounds alternating (A, B, A, B, ...). Per round, BENCH_PROFILE_EVENTS bench events
 * (default 100,000) as NDJSON batches of 500 go through: `parse` (collector/ingest.ts parseBatch: JSON.parse and
 * validation), `rows` (the batch's dictionary strings, their ids from a warm dictionary, aggregate.toRows: keys and
 * deflated bodies, then pg-key.ts's stored key per row), `params` (the insert's eleven parameter arrays as the build
 * encodes them, then as the driver does on every execution). CPU from process.cpuUsage; BENCH_PROFILE_ROUNDS rounds per build (5).
 * collector-pg-profile.ts gives the database side; run this with --cpu-prof for the functions. Under valgrind --tool=callgrind
 * with BENCH_PROFILE_CALLGRIND=1, the counters are zeroed after the warm-up and dumped after the rounds (the dump's
 * `totals:` is the rounds' instructions, e.g. one build per run with BENCH_PROFILE_ROUNDS=1). BENCH_PROFILE_STAGES=parse
 * runs the `parse` stage alone (its instructions without the other stages' garbage collection and random keys);
 * BENCH_PROFILE_STAGES=rows runs `rows` and `params` alone (the batches parsed before the counters are zeroed), warmed
 * on every batch three times. BENCH_PROFILE_INPUT=FILE: the batches are read from FILE when it exists, else generated
 * and written to it, so that runs of two builds count the same events (random ids and hosts move a count by several %).
 */

const EVENTS = Number(process.env.BENCH_PROFILE_EVENTS ?? 100_000);
const ROUNDS = Number(process.env.BENCH_PROFILE_ROUNDS ?? 5);
const PARSE_ONLY = process.env.BENCH_PROFILE_STAGES === 'parse';
const ROWS_ONLY = process.env.BENCH_PROFILE_STAGES === 'rows';
const INPUT = process.env.BENCH_PROFILE_INPUT;
/** Run under valgrind --tool=callgrind: the counters zeroed after the warm-up, dumped after the rounds. */
const CALLGRIND = process.env.BENCH_PROFILE_CALLGRIND === '1';
const BATCH = 500;

interface Build {
  parseBatch(text: string, max: number): { events: EgressEvent[] };
  batchStrings(events: readonly EgressEvent[]): string[];
  toRows(
    events: readonly EgressEvent[],
    ids: ReadonlyMap<string, number>,
    keepsId: (key: Buffer) => boolean,
    joinsDecision?: (decision: unknown, close: unknown) => boolean,
  ): Array<{ key: Buffer; event: number } & Record<string, unknown>>;
  /** postgres-store.ts's: whether a close goes into its decision's row (its body's time relative to the decision's). */
  joinsDecision?(decision: unknown, close: unknown): boolean;
  keepsIdInBody(key: Buffer): boolean;
  /** `id` (the event's id) is ignored by builds before the sixth round. */
  pgKey(key: Buffer, event: number, id: string): string;
  /** The insert's eleven parameters as the build hands them to the driver. */
  insertParams(rows: ReadonlyArray<Record<string, unknown>>, keys: readonly string[]): unknown[];
  /** The rows and stored keys of a batch as postgres-store.ts's insert makes them (seventh round on); earlier builds: toRows (with joinsDecision, as their insert) and pgKey here. */
  batchRows?(events: readonly EgressEvent[], ids: ReadonlyMap<string, number>): Array<Record<string, unknown> & { key: string }>;
  Dictionary: new () => { remember(id: number, text: string): void; unknownTexts(t: readonly string[]): string[]; idMap(t: readonly string[]): Map<string, number> };
}

async function load(dist: string): Promise<Build> {
  const at = (p: string) => import(pathToFileURL(resolve(dist, p)).href);
  const [ingest, aggregate, key, dictionary, store] = await Promise.all([
    at('collector/ingest.js'),
    at('collector/stores/aggregate.js'),
    at('collector/stores/pg-key.js'),
    at('collector/stores/dictionary.js'),
    at('collector/stores/postgres-store.js'),
  ]);
  return { ...ingest, ...aggregate, ...key, ...dictionary, batchRows: store.batchRows, joinsDecision: store.joinsDecision, insertParams: await insertParams(at) } as Build;
}

type Encode = (values: unknown[]) => unknown;

/**
 * The insert's parameters as a build encodes them: binary arrays (pg-binary-array.ts, since the sixth round), else the
 * integer and key arrays as one text literal each (pg-array.ts, fourth and fifth rounds), else JavaScript arrays.
 * A close's body and bytes in its decision's row are left out (the profile packs no such pair): NULL arrays.
 */
async function insertParams(at: (p: string) => Promise<Record<string, unknown>>): Promise<Build['insertParams']> {
  const binary = (await at('collector/stores/pg-binary-array.js').catch(() => undefined)) as Record<string, Encode> | undefined;
  const text = (await at('collector/stores/pg-array.js').catch(() => ({}))) as { plainArrayLiteral?: Encode };
  const plain: Encode = text.plainArrayLiteral ?? ((v) => v);
  const [uuid, i2, i4, i8, bytea]: Encode[] = binary
    ? [binary.uuidArray!, binary.int2Array!, binary.int4Array!, binary.int8Array!, binary.byteaArray!]
    : [plain, plain, plain, plain, (v) => v];
  return (rows, keys) => {
    const col = (f: string) => rows.map((r) => r[f] ?? null);
    const nulls = rows.map(() => null);
    return [
      uuid(keys as unknown[]),
      i2(col('event')),
      i8(col('time')),
      i4(col('jobId')),
      i4(col('hostId')),
      i4(col('port')),
      i2(col('decision')),
      i8(col('bytesIn')),
      i8(col('bytesOut')),
      bytea(col('body')),
      bytea(nulls),
    ];
  };
}

const prepareValue = (createRequire(import.meta.url)('pg/lib/utils.js') as { prepareValue(v: unknown): unknown }).prepareValue;

function batches(): string[] {
  if (INPUT && existsSync(INPUT)) return JSON.parse(readFileSync(INPUT, 'utf8')) as string[];
  const events: EgressEvent[] = [];
  for (let j = 0; events.length < EVENTS; j++) events.push(...jobEvents(`profile-${j}`, Math.min(1000, EVENTS - events.length), Date.now() - 3_600_000, 300));
  const out: string[] = [];
  for (let i = 0; i < events.length; i += BATCH)
    out.push(
      `${events
        .slice(i, i + BATCH)
        .map((e) => JSON.stringify(e))
        .join('\n')}\n`,
    );
  if (INPUT) writeFileSync(INPUT, JSON.stringify(out));
  return out;
}

function cpuMicros(from: NodeJS.CpuUsage): number {
  const d = process.cpuUsage(from);
  return d.user + d.system;
}

/** A batch's rows and stored keys: as the build's store makes them, or (earlier builds) as its insert did. */
function rowsOf(build: Build, events: readonly EgressEvent[], ids: ReadonlyMap<string, number>): { rows: Array<Record<string, unknown>>; keys: string[] } {
  if (build.batchRows) {
    const rows = build.batchRows(events, ids);
    return { rows, keys: rows.map((r) => r.key) };
  }
  const rows = build.toRows(events, ids, build.keepsIdInBody, build.joinsDecision);
  return { rows, keys: rows.map((r) => build.pgKey(r.key, r.event, (r.source as EgressEvent).id)) };
}

/**
 * `parsed`: the batches parsed already (BENCH_PROFILE_STAGES=rows), so that the parse stage is skipped. `dictionary`:
 * an empty one, made before the round (its LRU caches take ~0.2 s to make: a store makes one when it opens).
 */
function runRound(
  build: Build,
  texts: readonly string[],
  parsed: ReadonlyArray<EgressEvent[]> | undefined,
  dictionary: InstanceType<Build['Dictionary']>,
): { parse: number; rows: number; params: number } {
  let next = 1;
  const t = { parse: 0, rows: 0, params: 0 };
  for (const [i, text] of texts.entries()) {
    let c = process.cpuUsage();
    const events = parsed?.[i] ?? build.parseBatch(text, 10_000).events;
    t.parse += cpuMicros(c);
    if (PARSE_ONLY) continue;
    c = process.cpuUsage();
    const strings = build.batchStrings(events);
    for (const s of dictionary.unknownTexts(strings)) dictionary.remember(next++, s); // the database's answer, outside the timing would be fairer; it is small
    const { rows, keys } = rowsOf(build, events, dictionary.idMap(strings));
    t.rows += cpuMicros(c);
    c = process.cpuUsage();
    for (const values of build.insertParams(rows, keys)) prepareValue(values);
    t.params += cpuMicros(c);
  }
  return t;
}

async function main(): Promise<void> {
  const dists = process.argv.slice(2);
  if (dists.length === 0) dists.push(new URL('..', import.meta.url).pathname);
  const builds = await Promise.all(dists.map(load));
  const texts = batches();
  const events = texts.length * BATCH;
  const parsed = ROWS_ONLY ? builds.map((b) => texts.map((t) => b.parseBatch(t, 10_000).events)) : [];
  // Warm the JIT; for one stage alone, on every batch three times, so that its count is not of compilation.
  const alone = PARSE_ONLY || ROWS_ONLY;
  for (const [i, b] of builds.entries()) for (let w = 0; w < (alone ? 3 : 1); w++) runRound(b, alone ? texts : texts.slice(0, 20), parsed[i], new b.Dictionary());
  const dictionaries = builds.map((b) => Array.from({ length: ROUNDS }, () => new b.Dictionary()));
  // Under callgrind: counters zeroed here and dumped at the end, so the instruction count is of the measured rounds
  // only (not the events' generation nor the warm-up): what differs between two builds counted one at a time.
  if (CALLGRIND) execFileSync('callgrind_control', ['-z', String(process.pid)]);
  for (let r = 0; r < ROUNDS; r++) {
    for (const [i, b] of builds.entries()) {
      const t = runRound(b, texts, parsed[i], dictionaries[i]![r]!);
      const per = (n: number) => round(n / events, 2);
      process.stdout.write(
        `${JSON.stringify({ build: dists[i], parseMicros: per(t.parse), rowsMicros: per(t.rows), paramsMicros: per(t.params), totalMicros: per(t.parse + t.rows + t.params) })}\n`,
      );
    }
  }
}

await main();
if (CALLGRIND) execFileSync('callgrind_control', ['-d', String(process.pid)]);
