import type { DecisionFields, RequestKind } from '../events/schema.js';
import { isIP } from 'node:net';
import { formatHostPort, type Mode, type Reason } from '../policy/index.js';

/**
 * One packet the redirect rules reported (an NFLOG message as ulogd's JSON plugin writes it: BASE and IP2STR
 * fields). Only what egress-guard reads; ulogd writes more.
 */
export interface NflogRecord {
  'oob.prefix'?: string;
  'oob.family'?: number;
  'oob.uid'?: number;
  'ip.protocol'?: number;
  'ip6.nexthdr'?: number;
  src_ip?: string;
  dest_ip?: string;
  src_port?: number;
  dest_port?: number;
  'icmp.type'?: number;
  'icmpv6.type'?: number;
  'tcp.syn'?: number | boolean;
  'oob.time.sec'?: number;
  /** A frame's ether type (skb->protocol), where the frame carried no IP packet a reader could read. */
  'oob.protocol'?: number;
  /** Not a packet: the built-in reader's count of reports the kernel dropped (LOST_FIELD; netlog/nflog-sequence.ts). */
  'egress-guard.lost'?: number;
}

/**
 * The line that says the kernel dropped reports (written by the built-in reader, netlog/nflog-reader.ts; it counts
 * there too the reports it could not write, its file full): not a packet, so not in ulogd's format; netlog/reader.ts
 * counts it and warns, since those packets' flows may have no event.
 */
export const LOST_FIELD = 'egress-guard.lost';

/** The rules' NFLOG prefixes (rules/iptables-rules.ts NFLOG_PREFIX) and the reason each reports. */
const PREFIX_REASON: Record<string, Reason> = {
  'eg:out': 'not-proxied',
  'eg:reply': 'inbound-reply',
  'eg:own': 'own-connection',
  'eg:ctr-out': 'not-proxied',
  'eg:ctr-reply': 'inbound-reply',
  'eg:pre': 'established-before-rules',
  'eg:frame': 'not-proxied',
  'eg:frame-ip': 'not-proxied',
};
/** Reported at a device's egress hook: a frame written on a packet socket (rules/frame-guard.ts). */
const FRAME_PREFIXES: ReadonlySet<string> = new Set(['eg:frame', 'eg:frame-ip']);
const FRAME = 'written as a frame on a packet socket (AF_PACKET, below the IP stack: no redirect rule sees it)';
/** What the frame guard does with such a frame, for the message. */
const frameOutcome = (mode: Mode) => (mode === 'block' ? 'refused' : 'block mode refuses it');
/** Reported in FORWARD, from a container on a Docker bridge (rules/container-rules.ts). */
const CONTAINER_PREFIXES: ReadonlySet<string> = new Set(['eg:ctr-out', 'eg:ctr-reply']);
const FROM_CONTAINER = ' (a container on a Docker bridge)';

const PROTOCOL: Record<number, { kind: RequestKind; name: string }> = {
  1: { kind: 'icmp', name: 'ICMP' },
  6: { kind: 'tcp', name: 'TCP' },
  17: { kind: 'udp', name: 'UDP' },
  58: { kind: 'icmp', name: 'ICMPv6' },
  136: { kind: 'udp', name: 'UDP-Lite' },
};

/** A reported packet's flow: what one event stands for (at most one per flow and minute). */
export interface ReportedFlow {
  key: string;
  fields: DecisionFields;
}

/** What a port number hints at, for the message a person reads. */
function hint(kind: RequestKind, port: number): string {
  if (kind !== 'udp') return '';
  if (port === 443) return ' (QUIC / HTTP/3?)';
  if (port === 53 || port === 5353 || port === 853) return ' (DNS to a resolver egress-guard does not see?)';
  return '';
}

const isPort = (v: unknown): v is number => Number.isInteger(v) && (v as number) >= 0 && (v as number) <= 65535;

/** A TCP record's SYN flag as the readers write it (ulogd: 1 / 0 or true / false), undefined when it has none. */
function tcpSyn(record: NflogRecord): boolean | undefined {
  const flag = record['tcp.syn'];
  return flag === 1 || flag === true ? true : flag === 0 || flag === false ? false : undefined;
}

/**
 * Whether a job process sent the packet. Packets the kernel sends on its own (a reset or an ICMP error in
 * answer to an outside host's probe, the last ACKs of a connection egress-guard has closed) carry no socket
 * owner: the rules refuse them all the same, but they are no attempt of the job's. A TCP SYN-ACK is the one
 * job packet without an owner (the listener's half-open socket): a job service answering an outside host.
 */
export function sentByJob(record: NflogRecord): boolean {
  if (Number.isInteger(record['oob.uid'])) return true;
  const prefix = record['oob.prefix'];
  const tcp = (record['ip.protocol'] ?? record['ip6.nexthdr']) === 6;
  const syn = tcpSyn(record) === true;
  // A forwarded packet has no socket owner on this host: a container sent it (this host's kernel sends nothing
  // through FORWARD). Of a container's answers to an outside host, its kernel's resets and late ACKs are left out
  // as the host's are; until 2026-12-02 every forwarded packet but a SYN-ACK was taken for the kernel's, and a
  // container's UDP, ICMP and private-address TCP had no event in either mode (e2e ways-out-containers).
  if (prefix === 'eg:ctr-out') return true;
  // The kernel writes no frame on a packet socket: a process did (the guard lets the stack's own through by their route).
  if (typeof prefix === 'string' && FRAME_PREFIXES.has(prefix)) return true;
  if (prefix === 'eg:ctr-reply') return !tcp || syn;
  // On this host, a job process's packets carry its uid; a SYN-ACK is the one without (see above).
  return prefix === 'eg:reply' && tcp && syn;
}

/**
 * The decision event of a packet the rules reported, or undefined for a record that is not one of ours (or is
 * malformed: a line is data from a file, every field is checked). `mode` is the rules' (the policy's: a reload
 * cannot change it, see sidecar.ts).
 */
export function reportedFlow(record: NflogRecord, mode: Mode): ReportedFlow | undefined {
  const prefix = record['oob.prefix'];
  const protocolNumber = record['ip.protocol'] ?? record['ip6.nexthdr'];
  // A TCP packet without SYN that left the host rules' end was not redirected: nat OUTPUT redirects TCP from its SYN
  // only, so its connection was picked up mid-stream by conntrack (open before the rules, where nothing tracked it).
  const midStream = prefix === 'eg:out' && protocolNumber === 6 && tcpSyn(record) === false;
  const reason = midStream ? 'established-before-rules' : typeof prefix === 'string' && Object.hasOwn(PREFIX_REASON, prefix) ? PREFIX_REASON[prefix] : undefined;
  if (reason && FRAME_PREFIXES.has(prefix!) && record.src_ip === undefined && record.dest_ip === undefined) return opaqueFrame(record, mode);
  if (!reason || typeof record.src_ip !== 'string' || typeof record.dest_ip !== 'string' || !isIP(record.src_ip) || !isIP(record.dest_ip)) return undefined;
  if (!Number.isInteger(protocolNumber) || protocolNumber! < 0 || protocolNumber! > 255) return undefined;
  const protocol = (Object.hasOwn(PROTOCOL, protocolNumber!) ? PROTOCOL[protocolNumber!] : undefined) ?? { kind: 'ip' as const, name: `IP protocol ${protocolNumber}` };
  const hasPorts = protocol.kind === 'udp' || protocol.kind === 'tcp';
  const port = hasPorts && isPort(record.dest_port) ? record.dest_port : 0;
  const source = hasPorts ? formatHostPort(record.src_ip, isPort(record.src_port) ? record.src_port : 0) : record.src_ip;
  const destination = hasPorts ? formatHostPort(record.dest_ip, port) : record.dest_ip;
  const icmpType = [record['icmp.type'], record['icmpv6.type']].find((t) => Number.isInteger(t));
  const what = `${protocol.name}${icmpType !== undefined ? ` type ${icmpType}` : ''} from ${source}${CONTAINER_PREFIXES.has(prefix!) ? FROM_CONTAINER : ''} to ${destination}`;
  const outcome = mode === 'block' ? 'refused by the redirect rules' : 'block mode refuses it';
  const message =
    reason === 'inbound-reply'
      ? prefix === 'eg:ctr-reply'
        ? // No --inbound-ports for containers (rules/container-rules.ts): naming it would send the user to a setting that changes nothing.
          `${what}: a container answering a connection ${record.dest_ip} opened (a published port: no container may answer outside hosts); ${outcome}`
        : `${what}: the job answering a connection ${record.dest_ip} opened (its port is not in --inbound-ports); ${outcome}`
      : reason === 'own-connection'
        ? `${what}: a job packet on a connection egress-guard opened; ${outcome}`
        : midStream
          ? `${what}: a packet of a TCP connection conntrack had not seen open (open before the rules were applied, where nothing tracked it yet, or a crafted packet); ${outcome}`
          : FRAME_PREFIXES.has(prefix!)
            ? `${what}, ${FRAME}; ${frameOutcome(mode)}`
            : reason === 'established-before-rules'
              ? `${what}: a connection open before the rules were applied, still sending; egress-guard never saw where it goes, and the rules let it through in either mode (cutting such connections would cut the runner's own)`
              : `${what}${hint(protocol.kind, port)} goes around egress-guard (only TCP and DNS are proxied); ${outcome}`;
  return {
    key: `${record['oob.prefix']}|${protocolNumber}|${source}|${destination}`,
    fields: {
      kind: protocol.kind,
      client: source,
      host: record.dest_ip,
      port,
      ip: record.dest_ip,
      // eg:pre is let through by the rules in block mode too: an event that said blocked (or would-block) would be false.
      decision: prefix === 'eg:pre' ? 'allowed' : mode === 'block' ? 'blocked' : 'would-block',
      reason,
      rule: null,
      message,
      mode,
    },
  };
}

/**
 * A reported frame whose addresses no reader could read: a frame that carries no IP packet, or any frame in ulogd's
 * lines (its BASE plugin decodes no netdev-family report; `rules log-reader` does). One flow per ether type and uid.
 */
function opaqueFrame(record: NflogRecord, mode: Mode): ReportedFlow {
  const type = Number.isInteger(record['oob.protocol']) ? `ether type 0x${record['oob.protocol']!.toString(16).padStart(4, '0')}` : 'unknown ether type';
  const uid = Number.isInteger(record['oob.uid']) ? `uid ${record['oob.uid']}` : 'an unknown process';
  return {
    key: `${record['oob.prefix']}|${type}|${uid}`,
    fields: {
      kind: 'ip',
      client: uid,
      host: 'unknown',
      port: 0,
      decision: mode === 'block' ? 'blocked' : 'would-block',
      reason: 'not-proxied',
      rule: null,
      message: `a frame (${type}) from ${uid}, ${FRAME}; its addresses were not read (ulogd reads none of a frame; \`egress-guard rules log-reader\` does); ${frameOutcome(mode)}`,
      mode,
    },
  };
}

/**
 * At most one event per flow (5-tuple and reason) per window: a datagram flood is one event a minute, not
 * thousands. What it holds back is counted, so the limit itself can be reported.
 */
export class FlowLimiter {
  private readonly lastReported = new Map<string, number>();
  suppressed = 0;

  constructor(
    private readonly windowMs = 60_000,
    /** Flows remembered at most; past it the oldest are forgotten (reported again sooner, never lost). */
    private readonly maxFlows = 10_000,
  ) {}

  /** True when this flow is to be reported now. */
  admit(key: string, now = Date.now()): boolean {
    const last = this.lastReported.get(key);
    if (last !== undefined && now - last < this.windowMs) {
      this.suppressed++;
      return false;
    }
    this.lastReported.delete(key);
    this.lastReported.set(key, now);
    if (this.lastReported.size > this.maxFlows) this.lastReported.delete(this.lastReported.keys().next().value!);
    return true;
  }
}
