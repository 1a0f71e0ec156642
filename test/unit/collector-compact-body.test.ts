import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { it } from 'node:test';
import fc from 'fast-check';
import { decodeId, encodeId, packBody, unpackEvent, withBodyId } from '../../collector/stores/codec.js';
import { jobEvents } from '../../bench/collector-events.js';
import { Connection } from '../../events/connection.js';
import { EventLog } from '../../events/event-log.js';
import { jobKey } from '../../events/job-key.js';
import { eventFromLine } from '../../events/validate.js';
import { CLOSE_ERRORS, DECISION_REASONS, type EgressEvent } from '../../events/schema.js';

/** Body version 3 (compact-body.ts): the known fields as bytes; anything else still goes to the JSON versions. */

const text = fc.string({ unit: 'binary', maxLength: 30 });
const address = fc.oneof(
  fc.constantFrom('127.0.0.1:40000', '127.0.0.1:0', '127.0.0.1:65535', '10.1.2.3:5', '104.16.0.1', '0.0.0.0', '255.255.255.255:80'),
  fc.constantFrom('127.0.0.1:040000', '127.0.0.01:5', '256.1.1.1', '1.2.3.4:70000', '[::1]:53', '2001:db8::1', ''),
  fc.ipV4(),
  text,
);
const someOf = <T>(values: readonly T[]) => fc.oneof(fc.constantFrom(...values), text);
const time = fc.oneof(
  fc.integer({ min: 0, max: 4e12 }).map((t) => new Date(t).toISOString()),
  fc.constantFrom('2026-11-20T10:00:00Z', '2026-11-20T11:00:00+01:00'),
);

const decision = fc
  .record({
    id: fc.oneof(
      fc.uuid(),
      text.filter((s) => s.length > 0),
    ),
    time,
    kind: fc.constantFrom('http', 'connect', 'transparent', 'dns', 'udp', 'icmp', 'tcp', 'ip'),
    client: address,
    host: fc.oneof(
      fc.constantFrom('registry.npmjs.org', 'a.b', '10.0.0.1', 'x'),
      text.filter((s) => s.length > 0),
    ),
    port: fc.integer({ min: 0, max: 65535 }),
    optional: fc.record({ sni: text, qtype: text, ip: address, method: text, path: text }, { requiredKeys: [] }),
    decision: fc.constantFrom('allowed', 'blocked', 'would-block'),
    reason: someOf(['allowed-endpoint', 'not-allowed-endpoint', 'own-connection']),
    rule: fc.option(text),
    message: text,
    hostInText: fc.boolean(),
    phrase: fc.constantFrom('', ' is allowed by "', 'would block: ', ' is not in the allowlist', 'dns: any resolves every name'),
    ruleInMessage: fc.boolean(),
    level: fc.option(fc.constantFrom('info', 'warn', 'error')),
    mode: fc.constantFrom('audit', 'block'),
    ci: fc.option(fc.record({ repository: text, run_id: text, job: text, job_id: fc.oneof(text, fc.constant('')) }, { requiredKeys: [] })),
  })
  .map((r) => {
    const withHost = (t: string) => (r.hostInText ? `${t} ${r.host}:443 ${r.host}` : t);
    const rule = r.rule === null ? null : withHost(r.rule);
    return {
      ...(r.level !== null && { level: r.level }),
      schema: 1,
      event: 'decision',
      id: r.id,
      time: r.time,
      kind: r.kind,
      client: r.client,
      host: r.host,
      port: r.port,
      ...r.optional,
      decision: r.decision,
      reason: r.reason,
      rule,
      message: `${withHost(r.message)}${r.phrase}${r.ruleInMessage && rule !== null ? `${rule}"` : ''}`,
      mode: r.mode,
      ...(r.ci && { ci: r.ci }),
    } as unknown as EgressEvent;
  });

const close = fc
  .record({
    id: fc.oneof(
      fc.uuid(),
      text.filter((s) => s.length > 0),
    ),
    time,
    timeFirst: fc.boolean(),
    client: address,
    ip: fc.option(address),
    bytesIn: fc.oneof(fc.nat(), fc.constant(Number.MAX_SAFE_INTEGER)),
    bytesOut: fc.nat(),
    duration: fc.oneof(fc.nat(), fc.constant(Number.MAX_SAFE_INTEGER), fc.double({ min: 0, noNaN: true }), fc.constant(-0)),
    status: fc.option(fc.integer({ min: 100, max: 999 })),
    error: fc.option(someOf(['client-aborted', 'upstream-ECONNRESET', 'upstream-ehostunreach'])),
    level: fc.option(fc.constantFrom('info', 'warn', 'error')),
  })
  .map((r) => {
    const rest = {
      kind: 'connect',
      client: r.client,
      host: 'h.example',
      port: 443,
      ...(r.ip !== null && { ip: r.ip }),
      bytes_in: r.bytesIn,
      bytes_out: r.bytesOut,
      duration_ms: r.duration,
      ...(r.status !== null && { status: r.status }),
      ...(r.error !== null && { error: r.error }),
    };
    return (r.timeFirst
      ? { schema: 1, event: 'close', time: r.time, id: r.id, ...rest }
      : { schema: 1, event: 'close', id: r.id, time: r.time, ...rest }) as unknown as EgressEvent;
  });

/** The same event with its keys in another order (an emitter this format does not know): still version 3, field codes listed. */
function shuffled(event: EgressEvent, seed: number): EgressEvent {
  const entries = Object.entries(event);
  for (let i = entries.length - 1; i > 0; i--) {
    const j = (seed * (i + 7)) % (i + 1);
    [entries[i], entries[j]] = [entries[j]!, entries[i]!];
  }
  return Object.fromEntries(entries) as unknown as EgressEvent;
}

function roundTrip(event: EgressEvent): number {
  const timeMs = Date.parse(event.time);
  const job = event.event === 'decision' ? jobKey(event) : null;
  const bytes = event.event === 'close' ? { in: event.bytes_in, out: event.bytes_out } : null;
  const json = JSON.stringify(event);
  const body = packBody(event, timeMs);
  assert.equal(JSON.stringify(unpackEvent(body, decodeId(encodeId(event.id)), event.host, timeMs, job, bytes)), json);
  const kept = packBody(event, timeMs, true);
  assert.equal(JSON.stringify(unpackEvent(kept, 'from-the-key', event.host, timeMs, job, bytes)), json);
  assert.equal(JSON.stringify(unpackEvent(withBodyId(body, event.id), 'from-the-key', event.host, timeMs, job, bytes)), json);
  assert.equal(JSON.stringify(unpackEvent(withBodyId(kept, 0), decodeId(encodeId(event.id)), event.host, timeMs, job, bytes)), json);
  return body[0]!;
}

it('any decision or close, in any key order, is rebuilt with the same JSON text (addresses, reasons, errors, floats, CI contexts)', () => {
  const versions = new Map<number, number>();
  fc.assert(
    fc.property(fc.oneof(decision, close), fc.nat(), fc.boolean(), (event, seed, shuffle) => {
      const v = roundTrip(shuffle ? shuffled(event, seed) : event);
      versions.set(v, (versions.get(v) ?? 0) + 1);
    }),
    { numRuns: 3000 },
  );
  assert.ok((versions.get(3) ?? 0) > 2000, `most go to version 3: ${JSON.stringify([...versions])}`);
});

it("the sidecar's events are written as version 3, and smaller than their deflated JSON", () => {
  const events = jobEvents('compact-job', 400, Date.parse('2026-11-30T08:00:00Z'), 50);
  let compact = 0;
  for (const e of events) {
    assert.equal(roundTrip(e), 3);
    compact += packBody(e, Date.parse(e.time)).length;
  }
  // The same events with an unknown field take the JSON path (version 1 or 2): the compact bodies are smaller.
  let json = 0;
  for (const e of events) {
    const extra = { ...e, extra: 1 } as unknown as EgressEvent;
    const v = roundTrip(extra);
    assert.ok(v === 1 || v === 2, `version ${v}`);
    json += packBody(extra, Date.parse(e.time)).length - 5; // about the bytes of "extra":1
  }
  assert.ok(compact < json, `${compact} < ${json}`);
});

it("a close kept in its decision's row (PostgreSQL) stays version 3, its time as ms after the decision's; one before it goes to JSON", () => {
  const events = jobEvents('joined-job', 200, Date.parse('2026-11-30T08:00:00Z'), 20);
  let closes = 0;
  for (const [i, e] of events.entries()) {
    if (e.event !== 'close') continue;
    const decision = events.slice(0, i).find((d) => d.event === 'decision' && d.id === e.id)!;
    const [time, base] = [Date.parse(e.time), Date.parse(decision.time)];
    for (const shift of [0, 1, time - base + 1]) {
      const body = packBody(e, time, false, base - shift);
      assert.equal(body[0], 3);
      assert.equal(JSON.stringify(unpackEvent(body, e.id, e.host, base - shift, null, { in: e.bytes_in, out: e.bytes_out })), JSON.stringify(e));
    }
    const before = packBody(e, time, false, time + 5);
    assert.notEqual(before[0], 3, 'a negative offset is not a varint: the JSON versions hold it');
    assert.equal(JSON.stringify(unpackEvent(before, e.id, e.host, time + 5, null, { in: e.bytes_in, out: e.bytes_out })), JSON.stringify(e));
    closes++;
  }
  assert.ok(closes > 50, `${closes} closes`);
});

it('what version 3 cannot hold exactly goes to the JSON versions: lone surrogates, unknown fields, odd values', () => {
  const [d, c] = jobEvents('odd-job', 2, Date.parse('2026-11-30T08:00:00Z'), 5) as [EgressEvent, EgressEvent];
  const odd: Array<Record<string, unknown>> = [
    { ...d, message: 'half \ud800 a pair' },
    { ...d, ci: { job: 'x', repository: 'org/r' } },
    { ...d, ci: { repository: 'org/r', other: 'x' } },
    { ...d, port: 70000 },
    { ...d, mode: 'strict' },
    { ...c, status: 'ok' },
    { ...c, duration_ms: '5' },
    { ...d, kind: 'smtp' },
  ];
  for (const e of odd) {
    const event = e as unknown as EgressEvent;
    const timeMs = Date.parse(event.time);
    const body = packBody(event, timeMs);
    assert.notEqual(body[0], 3, JSON.stringify(e));
    const job = event.event === 'decision' ? jobKey(event) : null;
    const bytes = event.event === 'close' ? { in: event.bytes_in, out: event.bytes_out } : null;
    assert.equal(JSON.stringify(unpackEvent(body, decodeId(encodeId(event.id)), event.host, timeMs, job, bytes)), JSON.stringify(e));
  }
});

it('a truncated version 3 body is an error, never a wrong event', () => {
  const [d] = jobEvents('cut-job', 1, Date.parse('2026-11-30T08:00:00Z'), 5) as [EgressEvent];
  const body = packBody(d, Date.parse(d.time));
  for (let n = 1; n < body.length; n++) {
    assert.throws(() => unpackEvent(body.subarray(0, n), d.id, d.host, Date.parse(d.time), jobKey(d as never), null), /truncated/, `cut at ${n}`);
  }
});

it('bodies written before version 3 (JSON, deflated: versions 1 and 2) still decode to the same JSON', () => {
  // Written by the build before this version (main at cb2eb5f): a decision (version 2) and a close (version 1), id left out and kept.
  const decisionJson =
    '{"schema":1,"event":"decision","id":"0b0e8f1c-6a57-4c9e-9d1e-2f4a1b3c5d7e","time":"2026-11-30T08:00:00.250Z","kind":"connect","client":"127.0.0.1:40001","host":"svc3.example3.com","port":443,"ip":"104.16.1.7","decision":"allowed","reason":"allowed-endpoint","rule":"svc3.example3.com:443","message":"allowed by endpoint svc3.example3.com:443","mode":"audit","ci":{"repository":"org/repo","run_id":"9000001","job":"test","job_id":"job-1"}}';
  const closeJson =
    '{"schema":1,"event":"close","time":"2026-11-30T08:00:00.370Z","id":"0b0e8f1c-6a57-4c9e-9d1e-2f4a1b3c5d7e","kind":"connect","client":"127.0.0.1:40001","host":"svc3.example3.com","port":443,"ip":"104.16.1.7","bytes_in":5120,"bytes_out":300,"duration_ms":120,"status":200}';
  const old = [
    [decisionJson, '0223144a205dc0ac5892999b0a6610136a26060606208b32f28b21191b47fa32d433a72000634a41d6101578a84a09a61c6c0167696000f51552f02172a4416d2d00'],
    [
      decisionJson,
      '0223144a605d064906a9166986c9ba6689a6e6ba26c996a9ba962986a9ba466926898649c6c9a629e6a0b2a1243337159c7189095a13030303906b32f28b21b91f472234d433a72094634a41d61015c2a84a09262f6ca16b696000f515521823b2ad416d2d00',
    ],
    [closeJson, '01c39bd94b327353c13911a4d780b8203331303000d992915f0cc9d5381297a19eb912f1a581a191016a210500'],
    [closeJson, '01c39bd94b327353c13911acd720c920d522cd3059d72cd1d45cd724d93255d732c53055d728cd24d130c938d934c59cd882cbc4c0c000e4948cfc6248d6c791020df5cc95882f320c8d0c504b3200'],
  ] as const;
  for (const [json, hex] of old) {
    const event = JSON.parse(json) as EgressEvent;
    const timeMs = Date.parse(event.time);
    const job = event.event === 'decision' ? jobKey(event) : null;
    const bytes = event.event === 'close' ? { in: event.bytes_in, out: event.bytes_out } : null;
    assert.equal(JSON.stringify(unpackEvent(Buffer.from(hex, 'hex'), event.id, event.host, timeMs, job, bytes)), json);
    assert.equal(JSON.stringify(unpackEvent(withBodyId(Buffer.from(hex, 'hex'), 0), event.id, event.host, timeMs, job, bytes)), json);
    // The same event now: version 3, smaller.
    const now = packBody(event, timeMs);
    assert.equal(now[0], 3);
    assert.ok(now.length < hex.length / 2, `${now.length} < ${hex.length / 2}`);
  }
});

it("the sidecar's own lines (the event log's decisions of each shape, a connection's close) are version 3 with the one-byte order", async () => {
  const dir = mkdtempSync(join(tmpdir(), 'eg-compact-'));
  const file = join(dir, 'events.ndjson');
  const log = new EventLog({ stdout: false, eventsFile: file, ci: { repository: 'org/repo', run_id: '7', job: 'build', job_id: 'job-7' } });
  // What the stream client sends (events/delivery/stream-client.ts: JSON.stringify of each event, no level).
  const streamed: EgressEvent[] = [];
  log.subscribe((e) => streamed.push(JSON.parse(JSON.stringify(e)) as EgressEvent));
  try {
    const common = {
      decision: 'allowed',
      reason: 'allowed-endpoint',
      rule: 'registry.npmjs.org:443',
      message: 'registry.npmjs.org:443 is allowed by "registry.npmjs.org:443"',
      mode: 'block',
    } as const;
    // decision/authorize.ts, dns/responder.ts and netlog/report.ts order their fields so.
    const d = log.decision({
      kind: 'http',
      client: '127.0.0.1:40000',
      host: 'registry.npmjs.org',
      port: 443,
      sni: 'registry.npmjs.org',
      ip: '104.16.0.1',
      method: 'GET',
      path: '/x',
      ...common,
    });
    log.decision({ kind: 'dns', client: '127.0.0.1:5353', host: 'registry.npmjs.org', port: 53, qtype: 'AAAA', ...common });
    log.decision({
      kind: 'udp',
      client: '10.0.0.2:5000',
      host: '8.8.8.8',
      port: 443,
      ip: '8.8.8.8',
      ...common,
      decision: 'would-block',
      reason: 'not-proxied',
      rule: null,
      mode: 'audit',
    });
    new Connection(log, { id: d.id, kind: 'http', client: '127.0.0.1:40000', host: 'registry.npmjs.org', port: 443, ip: '104.16.0.1' }, Date.now()).close({
      bytesIn: 10,
      bytesOut: 2,
      status: 200,
      error: 'client-aborted',
    });
    log.flush();
    const events = readFileSync(file, 'utf8')
      .split('\n')
      .map(eventFromLine)
      .filter((e): e is EgressEvent => e !== null);
    assert.equal(events.length, 4);
    assert.equal(streamed.length, 4);
    for (const e of [...events, ...streamed]) {
      const body = packBody(e, Date.parse(e.time));
      assert.equal(body[0], 3, JSON.stringify(e));
      assert.equal(body[1]! & 2, 0, `field order not listed: ${JSON.stringify(e)}`);
      assert.equal(roundTrip(e), 3);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

it('a damaged version 3 body (a flag, an outcome, a tag or a list index no writer makes, or bytes after its last field) is an error, never a wrong event', () => {
  const decision: EgressEvent = {
    schema: 1,
    event: 'decision',
    id: '0b6f4f0e-1d2c-4b6a-8e7f-0a1b2c3d4e5f',
    time: '2026-11-20T10:00:00.000Z',
    kind: 'connect',
    client: '127.0.0.1:40000',
    host: 'registry.npmjs.org',
    port: 443,
    decision: 'allowed',
    reason: 'allowed-endpoint',
    rule: 'registry.npmjs.org:443',
    message: 'allowed by endpoint registry.npmjs.org:443',
    mode: 'block',
    ci: { repository: 'org/repo', job_id: 'job-1' },
  };
  const close: EgressEvent = {
    schema: 1,
    event: 'close',
    id: decision.id,
    time: '2026-11-20T10:00:01.000Z',
    kind: 'connect',
    client: '127.0.0.1:40000',
    host: 'registry.npmjs.org',
    port: 443,
    ip: '104.16.0.1',
    bytes_in: 10,
    bytes_out: 20,
    duration_ms: 1000,
    error: 'idle-timeout',
  };
  const unpack = (body: Buffer, e: EgressEvent) => unpackEvent(body, e.id, e.host, Date.parse(e.time), 'job-1', { in: 10, out: 20 });
  const d = packBody(decision, Date.parse(decision.time));
  const c = packBody(close, Date.parse(close.time));
  assert.equal(d[0], 3);
  assert.equal(c[0], 3);
  assert.equal(JSON.stringify(unpack(d, decision)), JSON.stringify(decision));
  assert.equal(JSON.stringify(unpack(c, close)), JSON.stringify(close));
  const damaged = (body: Buffer, at: number, value: number) => {
    const copy = Buffer.from(body);
    copy[at] = value;
    return copy;
  };
  const cases: Array<[string, Buffer, EgressEvent]> = [
    ['an outcome past the list', damaged(d, 2, d[2]! | (3 << 3)), decision],
    ['a bit past the mode', damaged(d, 2, d[2]! | 64), decision],
    ['a close enum past the kind', damaged(c, 2, c[2]! | 8), close],
    ['an unknown flag', damaged(d, 1, d[1]! | 128), decision],
    ['both a time and a time delta', damaged(c, 1, c[1]! | 16 | 64), close],
    ['an order mask past the optional fields', damaged(c, 3, c[3]! | 128), close],
    ['an error past the list', damaged(c, c.length - 1, 200), close],
    ['bytes after the last field', Buffer.concat([d, Buffer.of(0)]), decision],
    ['a close with bytes after its last field', Buffer.concat([c, Buffer.of(7)]), close],
  ];
  for (const [what, body, e] of cases) assert.throws(() => unpack(body, e), /stored event body/, what);
});

it('every decision reason and close error of the schema is one byte in a body, not its text (and rebuilt the same)', () => {
  const time = '2026-12-03T22:00:00.000Z';
  const stored = (event: EgressEvent, name: string) => {
    const body = packBody(event, Date.parse(time));
    assert.equal(body[0], 3, `${name}: a version 3 body`);
    // Until 2026-12-03 (stop 46) five reasons added since the list was written were stored as text.
    assert.equal(body.includes(Buffer.from(name)), false, `${name} stored as its text`);
    roundTrip(event);
  };
  for (const reason of DECISION_REASONS) {
    const event = {
      schema: 1,
      event: 'decision',
      id: 'd1',
      time,
      kind: 'dns',
      client: '127.0.0.1:40000',
      host: 'x.test',
      port: 53,
      decision: 'blocked',
      reason,
      rule: null,
      message: 'm',
      mode: 'block',
    };
    stored(event as unknown as EgressEvent, reason);
  }
  for (const error of Object.keys(CLOSE_ERRORS)) {
    const event = {
      schema: 1,
      event: 'close',
      id: 'c1',
      time,
      kind: 'connect',
      client: '127.0.0.1:40000',
      host: 'x.test',
      port: 443,
      bytes_in: 1,
      bytes_out: 2,
      duration_ms: 3,
      error,
    };
    stored(event as unknown as EgressEvent, error);
  }
});
