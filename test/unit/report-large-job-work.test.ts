import assert from 'node:assert/strict';
import { test } from 'node:test';
import { EventLog } from '../../events/event-log.js';
import type { EgressEvent } from '../../events/schema.js';
import { review } from '../../report/review.js';
import { suggestPolicy } from '../../report/suggest.js';
import type { Destination } from '../../report/summary.js';

/**
 * The views of a large job (the collector's page, `report`, `policy suggest`) must do work in proportion to the job,
 * not to its square: each view runs on the collector's event loop. Work is counted here (array elements searched or
 * iterated, labels split), never timed.
 */

function decisions(specs: ReadonlyArray<{ kind: 'dns' | 'connect'; host: string; port: number; ip?: string }>): EgressEvent[] {
  const log = new EventLog({ stdout: false, ci: { job_id: 'work' } });
  const seen: EgressEvent[] = [];
  log.subscribe((e) => seen.push(e));
  for (const s of specs) {
    log.decision({
      kind: s.kind,
      client: '127.0.0.1:1',
      host: s.host,
      port: s.port,
      ...(s.ip !== undefined && { ip: s.ip }),
      decision: s.kind === 'dns' ? 'would-block' : 'allowed',
      reason: s.kind === 'dns' ? 'not-allowed-endpoint' : 'allowed-endpoint',
      rule: null,
      message: '',
      mode: 'audit',
    });
  }
  return seen;
}

/** Calls `f` while `count(this, args)` is added up for each call of `owner[name]`. */
function counting<R>(owner: object, name: PropertyKey, count: (self: unknown, args: unknown[]) => number, f: () => R): { result: R; work: number } {
  const original = Reflect.get(owner, name) as (...args: unknown[]) => unknown;
  let work = 0;
  Reflect.defineProperty(owner, name, {
    configurable: true,
    writable: true,
    value: function (this: unknown, ...args: unknown[]) {
      work += count(this, args);
      return original.apply(this, args);
    },
  });
  try {
    return { result: f(), work };
  } finally {
    Reflect.defineProperty(owner, name, { configurable: true, writable: true, value: original });
  }
}

test("review: a destination seen on 30,000 addresses is one row with every address once, without searching the row's list per address", () => {
  const n = 30_000;
  const ips = Array.from({ length: n }, (_, i) => `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`);
  const destination: Destination = {
    host: 'cdn.example.test',
    port: 443,
    kinds: ['connect'],
    count: n,
    first: '2026-12-01T10:00:00.000Z',
    last: '2026-12-01T10:00:01.000Z',
    decision: 'allowed',
    outcomes: { allowed: n, blocked: 0, 'would-block': 0 },
    reasons: ['allowed-endpoint'],
    ips,
    bytesIn: 0,
    bytesOut: 0,
  };
  // Array.prototype.includes over a list of n elements costs n: summed, the elements searched.
  const { result: rows, work } = counting(
    Array.prototype,
    'includes',
    (self) => (Array.isArray(self) ? self.length : 0),
    () => review({ destinations: [destination] }),
  );
  assert.equal(rows.length, 1);
  assert.deepEqual(rows[0]!.ips, ips, 'every address once, first seen first');
  assert.ok(work < 10 * n, `${work} array elements searched for ${n} addresses (quadratic: ~${(n * n) / 2})`);
});

test('suggestPolicy: 20,000 DNS names beside 200 endpoints are not each matched against every endpoint', () => {
  const names = 20_000;
  const endpoints = 200;
  const events = decisions([
    ...Array.from({ length: endpoints }, (_, i) => ({ kind: 'connect' as const, host: `api${i}.service${i}.test`, port: 443 })),
    // Names a connection also went to (covered by its entry) and names only looked up (an entry each).
    ...Array.from({ length: names }, (_, i) => ({ kind: 'dns' as const, host: i < endpoints ? `api${i}.service${i}.test` : `n${i}.d${i}.test`, port: 53 })),
  ]);
  // matchHost splits the name it is given: a split per (name, endpoint) pair was 4,000,000 of them.
  const { result: policy, work } = counting(
    String.prototype,
    'split',
    () => 1,
    () => suggestPolicy(events),
  );
  assert.equal(policy.endpoints.length, names, 'one entry per endpoint and per name only looked up');
  assert.ok(!policy.endpoints.some((e) => e.value === 'api0.service0.test:443' && e.comment.startsWith('DNS queries only')), 'a name an endpoint covers gets no entry of its own');
  assert.ok(work < 20 * (names + endpoints), `${work} splits for ${names + endpoints} decisions`);
});

test('suggestPolicy with collapse: 5,000 subdomains of one parent collapse into one entry without copying the group per subdomain', () => {
  const n = 5_000;
  const events = decisions(Array.from({ length: n }, (_, i) => ({ kind: 'connect' as const, host: `h${i}.example.test`, port: 443 })));
  // A spread ([...group, t]) iterates its array: the array elements iterated, summed.
  const iterate = Array.prototype[Symbol.iterator];
  let work = 0;
  Array.prototype[Symbol.iterator] = function (this: unknown[]) {
    const it = iterate.call(this);
    return {
      next() {
        work++;
        return it.next();
      },
      [Symbol.iterator]() {
        return this;
      },
    } as ArrayIterator<unknown>;
  } as typeof iterate;
  let policy;
  try {
    policy = suggestPolicy(events, { collapse: 2 });
  } finally {
    Array.prototype[Symbol.iterator] = iterate;
  }
  assert.deepEqual(
    policy.endpoints.map((e) => e.value),
    ['*.example.test:443'],
  );
  assert.match(policy.endpoints[0]!.comment, /^5000 subdomains seen 5000 times \(connect\): h0, h1, h10, h100, h1000, \+4995 more$/);
  assert.ok(work < 50 * n, `${work} array elements iterated for ${n} endpoints (quadratic: ~${(n * n) / 2})`);
});

test('suggestPolicy with paths: 5,000 path groups on one host and 5,000 hosts with a path, without searching a list per group or per host', () => {
  const n = 5_000;
  const log = new EventLog({ stdout: false, ci: { job_id: 'work' } });
  const events: EgressEvent[] = [];
  log.subscribe((e) => events.push(e));
  const request = (host: string, path: string) =>
    log.decision({
      kind: 'http',
      client: '127.0.0.1:1',
      host,
      port: 80,
      method: 'GET',
      path,
      decision: 'allowed',
      reason: 'allowed-endpoint',
      rule: null,
      message: '',
      mode: 'audit',
    });
  for (let i = 0; i < n; i++) request('files.example.test', `/owner${i}/file`);
  request('files.example.test', '/owner0'); // covered by /owner0/**: no entry of its own
  for (let i = 0; i < n; i++) request(`h${i}.example.test`, '/x');
  // Array.prototype.includes and .some over a list of n elements cost up to n: summed, the elements searched.
  const searched = (self: unknown) => (Array.isArray(self) ? self.length : 0);
  let policy: ReturnType<typeof suggestPolicy> | undefined;
  let includes = 0;
  const { work: some } = counting(Array.prototype, 'some', searched, () => {
    includes = counting(Array.prototype, 'includes', searched, () => (policy = suggestPolicy(events, { paths: true }))).work;
  });
  assert.equal(policy!.endpoints.length, 2 * n, 'an entry per path group and per host');
  assert.ok(policy!.endpoints.some((e) => e.value === 'files.example.test:80/owner0/**'));
  assert.ok(!policy!.endpoints.some((e) => e.value === 'files.example.test:80/owner0'), 'a path its group covers has no entry');
  assert.ok(some + includes < 20 * n, `${some + includes} array elements searched for ${2 * n} path groups`);
});
