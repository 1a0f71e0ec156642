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
 * deflated bodies, then pg-key.ts's stored key per row), `params` (the insert's ten parameter arrays as the build
 * encodes them, then as the driver does on every execution). CPU from process.cpuUsage; BENCH_PROFILE_ROUNDS rounds per build (5).
 * collector-pg-profile.ts gives the database side; run this with --cpu-prof for the functions.
 */

const EVENTS = Number(process.env.BENCH_PROFILE_EVENTS ?? 100_000);
const ROUNDS = Number(process.env.BENCH_PROFILE_ROUNDS ?? 5);
const BATCH = 500;

interface Build {
  parseBatch(text: string, max: number): { events: EgressEvent[] };
  batchStrings(events: readonly EgressEvent[]): string[];
  toRows(events: readonly EgressEvent[], ids: ReadonlyMap<string, number>, keepsId: (key: Buffer) => boolean): Array<{ key: Buffer; event: number } & Record<string, unknown>>;
  keepsIdInBody(key: Buffer): boolean;
  pgKey(key: Buffer, event: number): string;
  encodeArray(values: unknown[]): unknown;
  Dictionary: new () => { remember(id: number, text: string): void; unknownTexts(t: readonly string[]): string[]; idMap(t: readonly string[]): Map<string, number> };
}

async function load(dist: string): Promise<Build> {
  const at = (p: string) => import(pathToFileURL(resolve(dist, p)).href);
  const [ingest, aggregate, key, dictionary] = await Promise.all([
    at('collector/ingest.js'),
    at('collector/stores/aggregate.js'),
    at('collector/stores/pg-key.js'),
    at('collector/stores/dictionary.js'),
  ]);
  // A build's own encoding of the insert's integer and key arrays, when it has one (pg-array.ts); else the driver's.
  const array = (await at('collector/stores/pg-array.js').catch(() => ({}))) as { plainArrayLiteral?: (v: unknown[]) => string };
  return { ...ingest, ...aggregate, ...key, ...dictionary, encodeArray: array.plainArrayLiteral ?? ((v: unknown[]) => v) } as Build;
}

const prepareValue = (createRequire(import.meta.url)('pg/lib/utils.js') as { prepareValue(v: unknown): unknown }).prepareValue;

function batches(): string[] {
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
  return out;
}

function cpuMicros(from: NodeJS.CpuUsage): number {
  const d = process.cpuUsage(from);
  return d.user + d.system;
}

function runRound(build: Build, texts: readonly string[]): { parse: number; rows: number; params: number } {
  const dictionary = new build.Dictionary();
  let next = 1;
  const t = { parse: 0, rows: 0, params: 0 };
  for (const text of texts) {
    let c = process.cpuUsage();
    const { events } = build.parseBatch(text, 10_000);
    t.parse += cpuMicros(c);
    c = process.cpuUsage();
    const strings = build.batchStrings(events);
    for (const s of dictionary.unknownTexts(strings)) dictionary.remember(next++, s); // the database's answer, outside the timing would be fairer; it is small
    const rows = build.toRows(events, dictionary.idMap(strings), build.keepsIdInBody);
    const keys = rows.map((r) => build.pgKey(r.key, r.event));
    t.rows += cpuMicros(c);
    c = process.cpuUsage();
    const cols = ['event', 'time', 'jobId', 'hostId', 'port', 'decision', 'bytesIn', 'bytesOut'].map((f) => build.encodeArray(rows.map((r) => r[f])));
    for (const values of [build.encodeArray(keys), ...cols, rows.map((r) => r.body)]) prepareValue(values);
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
  for (const b of builds) runRound(b, texts.slice(0, 20)); // warm the JIT
  for (let r = 0; r < ROUNDS; r++) {
    for (const [i, b] of builds.entries()) {
      const t = runRound(b, texts);
      const per = (n: number) => round(n / events, 2);
      process.stdout.write(
        `${JSON.stringify({ build: dists[i], parseMicros: per(t.parse), rowsMicros: per(t.rows), paramsMicros: per(t.params), totalMicros: per(t.parse + t.rows + t.params) })}\n`,
      );
    }
  }
}

await main();
