import type { NflogRecord } from './report.js';

/**
 * One NFLOG report as native/nflog.c hands it over: the packet's first bytes, from its IP header on; from its
 * link-layer header on for a frame the netdev egress hook reported (rules/frame-guard.ts).
 */
export interface NflogPacket {
  /** AF_INET (2) or AF_INET6 (10); NFPROTO_NETDEV (5) for a frame. */
  family: number;
  prefix: string;
  /** The sending socket's owner; -1 when the kernel sent the packet on its own. */
  uid: number;
  /** The report's sequence number (NFULA_SEQ, a u32); absent when the kernel gave none. */
  seq?: number;
  payload: Buffer;
}

const AF_INET = 2;
const AF_INET6 = 10;
const NFPROTO_NETDEV = 5;
/** The prefix of a report on a device without link-layer header (rules/iptables-rules.ts NFLOG_PREFIX.frameIp). */
const FRAME_IP_PREFIX = 'eg:frame-ip';
const ETHER_TYPE_IPV4 = 0x0800;
const ETHER_TYPE_IPV6 = 0x86dd;
/** 802.1Q and 802.1ad tags, walked to the ether type they carry. */
const ETHER_TYPE_VLAN = new Set([0x8100, 0x88a8]);

/**
 * A frame's IP packet and its family: after the Ethernet header (and any VLAN tags) where the report says the device
 * has one, else the frame itself by its version nibble. Undefined for a frame that carries no IP packet.
 */
function ipOfFrame(packet: NflogPacket): { family: number; payload: Buffer } | undefined {
  const bytes = packet.payload;
  if (packet.prefix === FRAME_IP_PREFIX) {
    const version = bytes.length > 0 ? bytes[0]! >> 4 : 0;
    return version === 4 ? { family: AF_INET, payload: bytes } : version === 6 ? { family: AF_INET6, payload: bytes } : undefined;
  }
  let at = 12;
  for (let tags = 0; tags < 2 && bytes.length >= at + 2 && ETHER_TYPE_VLAN.has(bytes.readUInt16BE(at)); tags++) at += 4;
  if (bytes.length < at + 2) return undefined;
  const type = bytes.readUInt16BE(at);
  const family = type === ETHER_TYPE_IPV4 ? AF_INET : type === ETHER_TYPE_IPV6 ? AF_INET6 : undefined;
  return family === undefined ? undefined : { family, payload: bytes.subarray(at + 2) };
}
/** IPv6 extension headers walked to the transport header (hop-by-hop, routing, destination options). */
const IPV6_EXTENSIONS = new Set([0, 43, 60]);
const IPV6_FRAGMENT = 44;

function ipv6Text(bytes: Buffer, at: number): string {
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(bytes.readUInt16BE(at + i).toString(16));
  // The longest run of two or more zero groups becomes '::' (RFC 5952), as ulogd's IP2STR writes it.
  let best = -1;
  let bestLength = 1;
  for (let i = 0; i < 8;) {
    if (groups[i] !== '0') {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === '0') j++;
    if (j - i > bestLength) [best, bestLength] = [i, j - i];
    i = j;
  }
  if (best === -1) return groups.join(':');
  return `${groups.slice(0, best).join(':')}::${groups.slice(best + bestLength).join(':')}`;
}

/** Ports, ICMP type and TCP SYN from the transport header at `at`, where the packet holds it. */
function transport(record: NflogRecord, protocol: number, bytes: Buffer, at: number): void {
  if ((protocol === 6 || protocol === 17 || protocol === 136) && bytes.length >= at + 4) {
    record.src_port = bytes.readUInt16BE(at);
    record.dest_port = bytes.readUInt16BE(at + 2);
    if (protocol === 6 && bytes.length >= at + 14) record['tcp.syn'] = (bytes[at + 13]! & 0x02) !== 0 ? 1 : 0;
  } else if (protocol === 1 && bytes.length > at) record['icmp.type'] = bytes[at]!;
  else if (protocol === 58 && bytes.length > at) record['icmpv6.type'] = bytes[at]!;
}

/**
 * The record ulogd's JSON plugin would have written for this report (the fields netlog/report.ts reads), or
 * undefined when the bytes are not an IP packet of the family given. A packet cut short of its transport header (or
 * a fragment after the first) gives addresses and protocol without ports, as ulogd does.
 */
export function recordOfPacket(packet: NflogPacket, timeSec: number): NflogRecord | undefined {
  if (packet.family === NFPROTO_NETDEV) {
    // A frame: the record of the IP packet inside it (the prefix says it was a frame), as ulogd cannot write it.
    // A frame without one is recorded all the same (reported, so never passed unseen): its ether type and sender.
    const inner = ipOfFrame(packet);
    if (inner) return recordOfPacket({ ...packet, ...inner }, timeSec);
    const record: NflogRecord = { 'oob.prefix': packet.prefix, 'oob.family': packet.family, 'oob.time.sec': timeSec };
    if (packet.uid >= 0) record['oob.uid'] = packet.uid;
    if (packet.prefix !== FRAME_IP_PREFIX && packet.payload.length >= 14) record['oob.protocol'] = packet.payload.readUInt16BE(12);
    return record;
  }
  const bytes = packet.payload;
  const record: NflogRecord = { 'oob.prefix': packet.prefix, 'oob.family': packet.family, 'oob.time.sec': timeSec };
  if (packet.uid >= 0) record['oob.uid'] = packet.uid;
  if (packet.family === AF_INET) {
    if (bytes.length < 20 || bytes[0]! >> 4 !== 4) return undefined;
    const headerLength = (bytes[0]! & 0x0f) * 4;
    if (headerLength < 20) return undefined;
    const protocol = bytes[9]!;
    record['ip.protocol'] = protocol;
    record.src_ip = `${bytes[12]}.${bytes[13]}.${bytes[14]}.${bytes[15]}`;
    record.dest_ip = `${bytes[16]}.${bytes[17]}.${bytes[18]}.${bytes[19]}`;
    const fragmentOffset = bytes.readUInt16BE(6) & 0x1fff;
    if (fragmentOffset === 0) transport(record, protocol, bytes, headerLength);
    return record;
  }
  if (packet.family === AF_INET6) {
    if (bytes.length < 40 || bytes[0]! >> 4 !== 6) return undefined;
    record.src_ip = ipv6Text(bytes, 8);
    record.dest_ip = ipv6Text(bytes, 24);
    let next = bytes[6]!;
    let at = 40;
    let first = true;
    // At most a few extension headers; each must lie within the copied bytes.
    for (let hops = 0; hops < 8; hops++) {
      if (IPV6_EXTENSIONS.has(next) && bytes.length >= at + 2) {
        const following = bytes[at]!;
        at += (bytes[at + 1]! + 1) * 8;
        next = following;
      } else if (next === IPV6_FRAGMENT && bytes.length >= at + 8) {
        first = (bytes.readUInt16BE(at + 2) & 0xfff8) === 0;
        next = bytes[at]!;
        at += 8;
      } else break;
    }
    record['ip6.nexthdr'] = next;
    if (first) transport(record, next, bytes, at);
    return record;
  }
  return undefined;
}
