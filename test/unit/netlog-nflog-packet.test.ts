/**
 * netlog/nflog-packet.ts: an NFLOG report's packet bytes as the record ulogd's JSON plugin writes (what
 * netlog/report.ts reads), built by hand for each case; malformed or cut-short packets never throw.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { recordOfPacket } from '../../netlog/nflog-packet.js';
import { reportedFlow } from '../../netlog/report.js';

const NOW = 1_800_000_000;

function ipv4(protocol: number, transport: number[], options: { fragmentOffset?: number; headerWords?: number } = {}): Buffer {
  const words = options.headerWords ?? 5;
  const header = Buffer.alloc(words * 4);
  header[0] = 0x40 | words;
  header.writeUInt16BE(words * 4 + transport.length, 2);
  header.writeUInt16BE(options.fragmentOffset ?? 0, 6);
  header[8] = 64;
  header[9] = protocol;
  Buffer.from([198, 51, 100, 7]).copy(header, 12);
  Buffer.from([203, 0, 113, 9]).copy(header, 16);
  return Buffer.concat([header, Buffer.from(transport)]);
}

function ipv6(nextHeader: number, rest: number[]): Buffer {
  const header = Buffer.alloc(40);
  header[0] = 0x60;
  header.writeUInt16BE(rest.length, 4);
  header[6] = nextHeader;
  header[7] = 64;
  Buffer.from('20010db8000000000000000000000007', 'hex').copy(header, 8);
  Buffer.from('20010db8000100000000000000000000', 'hex').copy(header, 24);
  return Buffer.concat([header, Buffer.from(rest)]);
}

const udp = (source: number, destination: number) => [source >> 8, source & 255, destination >> 8, destination & 255, 0, 12, 0, 0, 104, 105, 0, 0];

test('IPv4 UDP from a job process: addresses, ports, uid, the prefix, and the decision report.ts makes of it', () => {
  const record = recordOfPacket({ family: 2, prefix: 'eg:out', uid: 1001, payload: ipv4(17, udp(40000, 443)) }, NOW);
  assert.deepEqual(record, {
    'oob.prefix': 'eg:out',
    'oob.family': 2,
    'oob.time.sec': NOW,
    'oob.uid': 1001,
    'ip.protocol': 17,
    src_ip: '198.51.100.7',
    dest_ip: '203.0.113.9',
    src_port: 40000,
    dest_port: 443,
  });
  const flow = reportedFlow(record!, 'audit');
  assert.equal(flow?.fields.kind, 'udp');
  assert.equal(flow?.fields.decision, 'would-block');
  assert.equal(flow?.fields.host, '203.0.113.9');
  assert.equal(flow?.fields.port, 443);
});

test('a packet the kernel sent (no socket owner): no oob.uid', () => {
  const record = recordOfPacket({ family: 2, prefix: 'eg:reply', uid: -1, payload: ipv4(1, [3, 3, 0, 0]) }, NOW);
  assert.equal(record?.['oob.uid'], undefined);
  assert.equal(record?.['icmp.type'], 3);
});

test('TCP: the SYN flag; IPv4 options skipped by the header length', () => {
  const syn = [0x9c, 0x40, 0, 22, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0];
  const record = recordOfPacket({ family: 2, prefix: 'eg:reply', uid: -1, payload: ipv4(6, syn, { headerWords: 6 }) }, NOW);
  assert.deepEqual([record?.src_port, record?.dest_port, record?.['tcp.syn']], [40000, 22, 1]);
  const ack = [...syn];
  ack[13] = 0x10;
  assert.equal(recordOfPacket({ family: 2, prefix: 'eg:reply', uid: -1, payload: ipv4(6, ack) }, NOW)?.['tcp.syn'], 0);
});

test('an IPv4 fragment after the first: addresses and protocol, no ports (its first bytes are data)', () => {
  const record = recordOfPacket({ family: 2, prefix: 'eg:out', uid: 0, payload: ipv4(17, udp(1, 2), { fragmentOffset: 185 }) }, NOW);
  assert.equal(record?.['ip.protocol'], 17);
  assert.equal(record?.src_port, undefined);
});

test('IPv6 UDP, its addresses written as RFC 5952 text; through a hop-by-hop header; ICMPv6', () => {
  const direct = recordOfPacket({ family: 10, prefix: 'eg:out', uid: 0, payload: ipv6(17, udp(5353, 9999)) }, NOW);
  assert.deepEqual([direct?.src_ip, direct?.dest_ip, direct?.['ip6.nexthdr'], direct?.dest_port], ['2001:db8::7', '2001:db8:1::', 17, 9999]);
  const hopByHop = [17, 0, 5, 2, 0, 0, 1, 0];
  const through = recordOfPacket({ family: 10, prefix: 'eg:out', uid: 0, payload: ipv6(0, [...hopByHop, ...udp(5353, 9999)]) }, NOW);
  assert.deepEqual([through?.['ip6.nexthdr'], through?.dest_port], [17, 9999]);
  const icmp = recordOfPacket({ family: 10, prefix: 'eg:out', uid: 0, payload: ipv6(58, [128, 0, 0, 0]) }, NOW);
  assert.equal(icmp?.['icmpv6.type'], 128);
});

test('not an IP packet of the family given: no record', () => {
  assert.equal(recordOfPacket({ family: 2, prefix: 'eg:out', uid: 0, payload: ipv6(17, udp(1, 2)) }, NOW), undefined);
  assert.equal(recordOfPacket({ family: 10, prefix: 'eg:out', uid: 0, payload: ipv4(17, udp(1, 2)) }, NOW), undefined);
  assert.equal(recordOfPacket({ family: 2, prefix: 'eg:out', uid: 0, payload: Buffer.alloc(10) }, NOW), undefined);
  assert.equal(recordOfPacket({ family: 7, prefix: 'eg:out', uid: 0, payload: ipv4(17, udp(1, 2)) }, NOW), undefined);
});

test('any bytes: never a throw, and a record only with addresses that report.ts accepts', () => {
  fc.assert(
    fc.property(fc.constantFrom(2, 10), fc.uint8Array({ maxLength: 120 }), (family, bytes) => {
      const record = recordOfPacket({ family, prefix: 'eg:out', uid: 0, payload: Buffer.from(bytes) }, NOW);
      if (record) assert.ok(reportedFlow(record, 'block'), JSON.stringify(record));
    }),
    { numRuns: 2000 },
  );
});

/** An Ethernet frame around `packet`, with VLAN tags (802.1Q) before its ether type when given. */
function ethernet(etherType: number, packet: Buffer, vlanTags = 0): Buffer {
  const header = Buffer.alloc(12 + vlanTags * 4 + 2);
  header.fill(0xff, 0, 6);
  Buffer.from('02fc00000001', 'hex').copy(header, 6);
  for (let i = 0; i < vlanTags; i++) header.writeUInt32BE(0x81000064, 12 + i * 4);
  header.writeUInt16BE(etherType, 12 + vlanTags * 4);
  return Buffer.concat([header, packet]);
}

test('a frame the netdev egress hook reported (rules/frame-guard.ts): the IP packet inside it, IPv4 and IPv6, tagged or not', () => {
  const v4 = recordOfPacket({ family: 5, prefix: 'eg:frame', uid: 0, payload: ethernet(0x0800, ipv4(17, udp(40000, 9999))) }, NOW);
  assert.deepEqual(v4, {
    'oob.prefix': 'eg:frame',
    'oob.family': 2,
    'oob.time.sec': NOW,
    'oob.uid': 0,
    'ip.protocol': 17,
    src_ip: '198.51.100.7',
    dest_ip: '203.0.113.9',
    src_port: 40000,
    dest_port: 9999,
  });
  const v6 = recordOfPacket({ family: 5, prefix: 'eg:frame', uid: 0, payload: ethernet(0x86dd, ipv6(17, udp(40000, 53)), 2) }, NOW);
  assert.equal(v6?.['oob.family'], 10);
  assert.equal(v6?.dest_ip, '2001:db8:1::');
  assert.equal(v6?.dest_port, 53);
  // A device without a link-layer header (a tunnel): the frame is the packet.
  const tunnel = recordOfPacket({ family: 5, prefix: 'eg:frame-ip', uid: 0, payload: ipv4(6, [0x9c, 0x40, 0, 80, 0, 0, 0, 0, 0, 0, 0, 0, 0x50, 0x02]) }, NOW);
  assert.equal(tunnel?.dest_port, 80);
  assert.equal(tunnel?.['tcp.syn'], 1);

  const flow = reportedFlow(v4!, 'block');
  assert.equal(flow?.fields.kind, 'udp');
  assert.equal(flow?.fields.host, '203.0.113.9');
  assert.equal(flow?.fields.decision, 'blocked');
  assert.equal(flow?.fields.reason, 'not-proxied');
  assert.match(flow!.fields.message!, /frame on a packet socket \(AF_PACKET/);
  // Not the flow of the same packet reported by the IP rules (eg:out): each is an event of its own.
  assert.notEqual(flow?.key, reportedFlow({ ...v4!, 'oob.prefix': 'eg:out' }, 'block')?.key);
});

test('a frame with no IP packet in it is recorded all the same (its ether type), and reported without addresses', () => {
  for (const payload of [ethernet(0x1234, Buffer.from('hello')), ethernet(0x0800, Buffer.alloc(0)).subarray(0, 13)]) {
    const record = recordOfPacket({ family: 5, prefix: 'eg:frame', uid: 0, payload }, NOW);
    assert.ok(record, 'a reported frame is never dropped from the file');
    assert.equal(record['oob.family'], 5);
    assert.equal(record.src_ip, undefined);
    const flow = reportedFlow(record, 'audit');
    assert.equal(flow?.fields.kind, 'ip');
    assert.equal(flow?.fields.host, 'unknown');
    assert.equal(flow?.fields.decision, 'would-block');
  }
  assert.equal(recordOfPacket({ family: 5, prefix: 'eg:frame', uid: 0, payload: ethernet(0x1234, Buffer.from('x')) }, NOW)?.['oob.protocol'], 0x1234);
  // A tunnel's frame that is no IP packet: nothing to call its ether type.
  assert.equal(recordOfPacket({ family: 5, prefix: 'eg:frame-ip', uid: 0, payload: Buffer.from([0x10, 1, 2]) }, NOW)?.['oob.protocol'], undefined);
});

test("ulogd's line of a reported frame (oob.family 5, no addresses: its BASE plugin decodes no netdev report) is an event naming the uid and ether type", () => {
  // As ulogd 2.0.8 wrote it in a probe of the guard (2026-12-04).
  const line = { 'oob.prefix': 'eg:frame', 'oob.time.sec': NOW, 'oob.mark': 0, 'oob.ifindex_out': 2, 'oob.hook': 1, 'oob.family': 5, 'oob.protocol': 2048, 'oob.uid': 0 };
  const flow = reportedFlow(line, 'block');
  assert.equal(flow?.fields.decision, 'blocked');
  assert.equal(flow?.fields.client, 'uid 0');
  assert.match(flow!.fields.message!, /ether type 0x0800/);
  assert.match(flow!.fields.message!, /rules log-reader/);
});

test('frames: no payload makes the reader throw', () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 80 }), fc.constantFrom('eg:frame', 'eg:frame-ip'), (bytes, prefix) => {
      const record = recordOfPacket({ family: 5, prefix, uid: 0, payload: Buffer.from(bytes) }, NOW);
      if (record) reportedFlow(record, 'audit');
    }),
  );
});
