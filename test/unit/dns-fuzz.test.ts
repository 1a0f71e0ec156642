import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import fc from 'fast-check';
import { DnsResponder } from '../../dns/responder.js';
import { parseUpstream } from '../../dns/upstream.js';
import { parseMessage } from '../../dns/wire.js';
import { AddressBook } from '../../decision/address-book.js';
import { EventLog } from '../../events/event-log.js';
import type { EgressEvent } from '../../events/schema.js';
import { eventFromLine, validateEvent } from '../../events/validate.js';
import { makePolicy, queryBytes, rcodeOf, startDnsFixture, udpExchange, type DnsFixture } from '../helpers/dns-fixture.js';

const SEEDS = [
  queryBytes(1, 'allowed.test'),
  queryBytes(2, 'a.wild.test', 28, true),
  queryBytes(3, 'secret.attacker.test', 16),
  queryBytes(4, 'cname.allowed.test', 1, true),
  queryBytes(5, 'localhost', 1),
];

/** A valid query with bytes overwritten, inserted, cut or its counts changed. */
const mutatedQuery = fc
  .tuple(
    fc.constantFrom(...SEEDS),
    fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 6 }),
    fc.option(fc.nat(), { nil: undefined }),
    fc.option(fc.uint8Array({ minLength: 1, maxLength: 40 }), { nil: undefined }),
  )
  .map(([seed, writes, cut, insert]) => {
    let bytes = Buffer.from(seed);
    for (const [position, value] of writes) bytes[position % bytes.length] = value;
    if (insert) {
      const at = 12 + ((cut ?? 0) % (bytes.length - 12));
      bytes = Buffer.concat([bytes.subarray(0, at), Buffer.from(insert), bytes.subarray(at)]);
    } else if (cut !== undefined) bytes = bytes.subarray(0, cut % (bytes.length + 1));
    return bytes;
  });

const randomBytes = fc.uint8Array({ minLength: 0, maxLength: 600 }).map((a) => Buffer.from(a));

/** Any reply must be a well-formed response to the packet's id. */
function checkReply(packet: Buffer, reply: Buffer | null): void {
  if (!reply) return;
  assert.ok(packet.length >= 2, 'answered a packet that has no id');
  assert.equal(reply.readUInt16BE(0), packet.readUInt16BE(0));
  assert.equal(reply[2]! & 0x80, 0x80);
  parseMessage(reply);
  assert.ok(reply.length <= 4096);
}

describe('fuzz: the responder (in process)', () => {
  let fx: DnsFixture;
  let responder: DnsResponder;
  let events: EventLog;
  const emitted: EgressEvent[] = [];
  const everyEvent: EgressEvent[] = [];
  const eventsPath = join(mkdtempSync(join(tmpdir(), 'eg-dns-fuzz-')), 'events.ndjson');
  before(async () => {
    fx = await startDnsFixture({ mode: 'block' });
    events = new EventLog({ stdout: false, eventsFile: eventsPath });
    events.subscribe((e) => emitted.push(e));
    events.subscribe((e) => everyEvent.push(e));
    responder = new DnsResponder({
      upstreams: [parseUpstream(fx.zone.address)],
      policy: () => makePolicy({ mode: 'block' }),
      events,
      addressBook: new AddressBook(),
      upstreamTimeoutMs: 300,
      upstreamRounds: 1,
    });
  });
  after(async () => {
    responder?.close();
    await fx?.close();
    rmSync(dirname(eventsPath), { recursive: true, force: true });
  });

  test('random bytes and mutated queries never throw and get a well-formed reply or none; every event they cause is one the collector accepts', async () => {
    for (const arbitrary of [randomBytes, mutatedQuery]) {
      await fc.assert(
        fc.asyncProperty(arbitrary, fc.constantFrom<'udp' | 'tcp'>('udp', 'tcp'), async (packet, transport) => {
          const started = Date.now();
          const reply = await responder.answer(packet, { address: '127.0.0.1', port: 1 }, transport);
          checkReply(packet, reply);
          assert.ok(Date.now() - started < 1000, 'a packet took a second');
          // The collector validates with the same module: an event it refuses would be lost there.
          for (const event of emitted.splice(0)) validateEvent(JSON.parse(JSON.stringify(event)));
        }),
        { numRuns: 3000 },
      );
    }
    // Each line in the events file is the event's own JSON (the responder makes the JSON of its fields itself: emit).
    events.flushDecisions();
    // (Operational lines, such as a refused zone transfer's, are in the file too: only event lines are compared.)
    const lines = readFileSync(eventsPath, 'utf8')
      .split('\n')
      .filter((line) => eventFromLine(line) !== null);
    assert.ok(everyEvent.length > 100, `${everyEvent.length} events`);
    assert.deepEqual(
      lines,
      everyEvent.map((e) => `{"level":"${e.event === 'decision' && e.decision === 'allowed' ? 'info' : 'warn'}",${JSON.stringify(e).slice(1)}`),
    );
  });
});

describe('fuzz: the running server (UDP and TCP)', () => {
  let fx: DnsFixture;
  before(async () => {
    fx = await startDnsFixture({ mode: 'block' });
  });
  after(async () => fx?.close());

  const stillAnswers = async (id: number) => {
    const reply = await udpExchange(fx.port, queryBytes(id, 'allowed.test'), 2000);
    assert.ok(reply, 'the server stopped answering');
    assert.equal(reply.readUInt16BE(0), id);
    assert.equal(rcodeOf(reply), 0);
  };

  test('UDP: after each fuzzed packet a good query is still answered', async () => {
    const socket = dgram.createSocket('udp4');
    const replies: Buffer[] = [];
    socket.on('message', (m) => replies.push(m));
    await new Promise<void>((r) => socket.bind(0, '127.0.0.1', () => r()));
    try {
      let id = 0;
      await fc.assert(
        fc.asyncProperty(fc.oneof(randomBytes, mutatedQuery), async (packet) => {
          await new Promise<void>((r) => socket.send(packet, fx.port, '127.0.0.1', () => r()));
          await stillAnswers(++id % 0xffff);
        }),
        { numRuns: 1000 },
      );
      for (const reply of replies) parseMessage(reply);
    } finally {
      socket.close();
    }
  });

  test('TCP: random byte streams never stop the server', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(
          fc.oneof(
            randomBytes,
            mutatedQuery.map((q) => Buffer.concat([Buffer.from([q.length >> 8, q.length & 0xff]), q])),
          ),
          { maxLength: 4 },
        ),
        async (chunks) => {
          await new Promise<void>((resolve) => {
            const socket = net.connect(fx.port, '127.0.0.1');
            socket.on('error', () => resolve());
            socket.on('close', () => resolve());
            socket.on('data', () => {});
            socket.setTimeout(1500, () => socket.destroy());
            socket.end(Buffer.concat(chunks));
          });
          await stillAnswers(7);
        },
      ),
      { numRuns: 150 },
    );
  });
});
