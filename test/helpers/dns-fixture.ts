import { execFile } from 'node:child_process';
import dgram from 'node:dgram';
import { promisify } from 'node:util';
import type { DecisionEvent, EgressEvent } from '../../events/schema.js';
import { EventLog } from '../../events/event-log.js';
import { buildPolicy, type Policy } from '../../policy/index.js';
import { AddressBook } from '../../decision/address-book.js';
import type { AnswerCacheOptions } from '../../dns/cache.js';
import { startDnsServer, type DnsServer, type DnsUdpMode } from '../../dns/server.js';
import { startZoneServer, type ZoneRecord, type ZoneServer } from './dns-zone-server.js';

const run = promisify(execFile);

/** The `.test` zone the DNS tests and the benchmark resolve against. */
export const TEST_ZONE: Record<string, ZoneRecord[]> = {
  'allowed.test': [
    { type: 'A', value: '198.51.100.10' },
    { type: 'AAAA', value: '2001:db8::10' },
    { type: 'TXT', value: ['hello', 'world'] },
    { type: 'MX', value: 'mail.allowed.test' },
  ],
  'short.allowed.test': [{ type: 'A', value: '198.51.100.11', ttl: 2 }],
  // On allowed.test's address, with a TTL of its own far shorter than allowed.test's.
  'shared-short.allowed.test': [{ type: 'A', value: '198.51.100.10', ttl: 2 }],
  'cname.allowed.test': [{ type: 'CNAME', value: 'target.other.test' }],
  'target.other.test': [{ type: 'A', value: '198.51.100.30' }],
  'secret.attacker.test': [
    { type: 'A', value: '203.0.113.66' },
    { type: 'TXT', value: 'exfil-ack' },
  ],
  '*.attacker.test': [{ type: 'A', value: '203.0.113.67' }],
  '*.wild.test': [{ type: 'A', value: '198.51.100.20' }],
  'big.allowed.test': Array.from({ length: 12 }, (_, i): ZoneRecord => ({ type: 'TXT', value: [`${'x'.repeat(200)}${i}`] })),
};

export interface PolicyInput {
  mode?: 'audit' | 'block';
  dns?: 'policy' | 'any';
  endpoints?: string;
}

export function makePolicy(input: PolicyInput): Policy {
  const origin = { file: 'test', line: 1 };
  return buildPolicy({
    mode: { value: input.mode ?? 'block', origin },
    dns: { value: input.dns ?? 'policy', origin },
    'allowed-endpoints': { value: input.endpoints ?? 'allowed.test *.allowed.test *.wild.test', origin },
  });
}

export interface DnsFixture {
  zone: ZoneServer;
  server: DnsServer;
  port: number;
  book: AddressBook;
  events: EventLog;
  decisions: DecisionEvent[];
  setPolicy(policy: Policy): void;
  close(): Promise<void>;
}

export async function startDnsFixture(
  options: PolicyInput & {
    upstreams?: string[];
    cache?: AnswerCacheOptions;
    localNames?: Map<string, string[]>;
    upstreamTimeoutMs?: number;
    eventsFile?: string;
    udp?: DnsUdpMode;
    /** The server's listen address (default 127.0.0.1). */
    listenHost?: string;
    /** Queries at an upstream at once before UDP queries are dropped (the server's default when unset). */
    maxInFlight?: number;
    /** A TCP connection's idle timeout (the server's default when unset). */
    tcpIdleTimeoutMs?: number;
    /** TCP connections open at once (the server's default when unset). */
    maxTcpConnections?: number;
  } = {},
): Promise<DnsFixture> {
  const zone = await startZoneServer(TEST_ZONE);
  let policy = makePolicy(options);
  const events = new EventLog({ stdout: false, eventsFile: options.eventsFile });
  const decisions: DecisionEvent[] = [];
  events.subscribe((event: EgressEvent) => {
    if (event.event === 'decision') decisions.push(event);
  });
  const book = new AddressBook();
  let server: DnsServer;
  try {
    server = await startDnsServer({
      listen: { host: options.listenHost ?? '127.0.0.1', port: 0 },
      upstreams: options.upstreams ?? [zone.address],
      policy: () => policy,
      events,
      addressBook: book,
      localNames: options.localNames,
      cache: options.cache,
      upstreamTimeoutMs: options.upstreamTimeoutMs ?? 500,
      ...(options.maxInFlight !== undefined && { maxInFlight: options.maxInFlight }),
      ...(options.tcpIdleTimeoutMs !== undefined && { tcpIdleTimeoutMs: options.tcpIdleTimeoutMs }),
      ...(options.maxTcpConnections !== undefined && { maxTcpConnections: options.maxTcpConnections }),
      // The DNS tests run on the batched UDP path; EGRESS_DNS_UDP=dgram runs them on node's dgram (both must pass).
      udp: options.udp ?? (process.env.EGRESS_DNS_UDP === 'dgram' ? 'dgram' : 'batch'),
    });
  } catch (err) {
    await zone.close();
    throw err;
  }
  return {
    zone,
    server,
    port: server.udpAddress.port,
    book,
    events,
    decisions,
    setPolicy: (next) => {
      policy = next;
    },
    close: async () => {
      await server.close();
      await zone.close();
    },
  };
}

export interface DigResult {
  status: string;
  /** Answer section lines as [name, ttl, type, data]. */
  answers: [string, number, string, string][];
  stdout: string;
}

/** Run the real dig against 127.0.0.1:port (asynchronously: the server runs in this process). */
export async function dig(port: number, name: string, type: string, ...flags: string[]): Promise<DigResult> {
  const { stdout } = await run('dig', ['@127.0.0.1', '-p', String(port), name, type, '+time=3', '+tries=1', ...flags], { encoding: 'utf8' });
  const status = /status: ([A-Z]+)/.exec(stdout)?.[1] ?? 'NONE';
  const answers: DigResult['answers'] = [];
  const section = stdout.split(';; ANSWER SECTION:\n')[1]?.split('\n\n')[0] ?? '';
  for (const line of section.split('\n')) {
    const m = /^(\S+)\s+(\d+)\s+IN\s+(\S+)\s+(.*)$/.exec(line);
    if (m) answers.push([m[1]!, Number(m[2]), m[3]!, m[4]!]);
  }
  return { status, answers, stdout };
}

/** A query as a client writes it (id, RD, one question, optional OPT). */
export function queryBytes(id: number, name: string, type = 1, edns = false): Buffer {
  const labels = name
    .split('.')
    .filter(Boolean)
    .map((l) => Buffer.concat([Buffer.from([l.length]), Buffer.from(l, 'latin1')]));
  const header = Buffer.alloc(12);
  header.writeUInt16BE(id, 0);
  header.writeUInt16BE(0x0100, 2);
  header.writeUInt16BE(1, 4);
  header.writeUInt16BE(edns ? 1 : 0, 10);
  const tail = Buffer.alloc(4);
  tail.writeUInt16BE(type, 0);
  tail.writeUInt16BE(1, 2);
  const opt = Buffer.from([0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0]);
  return Buffer.concat([header, ...labels, Buffer.from([0]), tail, ...(edns ? [opt] : [])]);
}

/** Send raw bytes over UDP; the first reply, or null after `waitMs`. */
export function udpExchange(port: number, bytes: Buffer, waitMs = 1000): Promise<Buffer | null> {
  return new Promise((resolve) => {
    const socket = dgram.createSocket('udp4');
    const done = (reply: Buffer | null) => {
      clearTimeout(timer);
      socket.close();
      resolve(reply);
    };
    const timer = setTimeout(() => done(null), waitMs);
    socket.on('message', (reply) => done(reply));
    socket.on('error', () => done(null));
    socket.send(bytes, port, '127.0.0.1');
  });
}

export const rcodeOf = (reply: Buffer) => reply.readUInt16BE(2) & 0xf;
