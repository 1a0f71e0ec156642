/**
 * The netfilter rules of transparent interception, as pure data: which iptables/ip6tables commands apply
 * them and which remove them. Everything lives in egress-guard's own chains, reached by one jump appended
 * to nat OUTPUT and filter OUTPUT; nothing else in the tables is touched (container runtimes keep rules there).
 */
import { DOCKER_BRIDGES } from './docker-bridges.js';

export const NAT_CHAIN = 'EGRESS_GUARD_NAT';
export const FILTER_CHAIN = 'EGRESS_GUARD_FILTER';
/**
 * What the rules refuse (block) or let pass while reporting it (audit) is sent to this NFLOG group, one
 * prefix per reason; a reader (ulogd, `rules log-config`) writes it as JSON lines that egress-guard turns
 * into decision events (netlog/).
 */
export const NFLOG_GROUP = 4547;
export const NFLOG_PREFIX = {
  /** Leaves the rules' end: UDP but DNS (QUIC...), ICMP, other protocols. */
  out: 'eg:out',
  /** The job answering a connection an outside host opened (not in --inbound-ports). */
  reply: 'eg:reply',
  /** A job packet on a connection egress-guard opened (its tuple reused). */
  own: 'eg:own',
  /** `out`, from a container on a Docker bridge (container-rules.ts): forwarded, so no socket owner to read. */
  containerOut: 'eg:ctr-out',
  /** `reply`, from a container on a Docker bridge (a published port). */
  containerReply: 'eg:ctr-reply',
  /** A job packet on a connection open before the rules (no RULES_SEEN_MARK): let through, reported. */
  beforeRules: 'eg:pre',
  /** An Ethernet frame written on a packet socket (AF_PACKET), below the IP hooks (frame-guard.ts). */
  frame: 'eg:frame',
  /** The same on a device without link-layer header (a tunnel): the frame is the IP packet. */
  frameIp: 'eg:frame-ip',
} as const;
/**
 * Kernel-side bound on reports: one report per flow (addresses and ports) and minute, as the reader turns them into
 * events (hashlimit: a bucket per flow, in a table per rule and family named `name`). Until 2026-12-02 this was one
 * `limit` bucket per rule (100 a second, burst 200): a flood to a decoy used it up, so that a datagram to another
 * host sent meanwhile was never reported and audit mode passed it unseen (e2e ways-out). The table holds at most
 * 8192 flows (a flow leaves it 10 s after its last packet), so a burst of reports (one per new flow, about 260
 * bytes each with the reader's 160-byte copy) stays within the reader's 4 MiB socket queue. A new flow the table
 * has no room for is dropped by the kernel, in audit mode too: a packet is reported or dropped, never passed
 * unreported.
 */
export function nflogLimit(name: string): string[] {
  return [
    '-m',
    'hashlimit',
    '--hashlimit-upto',
    '1/minute',
    '--hashlimit-burst',
    '1',
    '--hashlimit-mode',
    'srcip,srcport,dstip,dstport',
    '--hashlimit-htable-size',
    '1024',
    '--hashlimit-htable-max',
    '8192',
    '--hashlimit-name',
    name,
  ];
}

export type RulesMode = 'block' | 'audit';
export type Family = 4 | 6;

export interface RuleOptions {
  /** egress-guard's own uid: its traffic (upstream connections, upstream DNS) is exempt. */
  uid: number;
  /**
   * With a mark, only packets of egress-guard's uid that carry it are exempt (setting socket-mark): a root job
   * in another container can take the uid, not the mark (setting one needs CAP_NET_ADMIN or CAP_NET_RAW, and
   * it is random per start). Without, the uid alone (a single-host install, where root is root anyway).
   */
  socketMark?: number;
  mode: RulesMode;
  /** Port of the transparent listener on 127.0.0.1 and [::1]. */
  transparentPort: number;
  /** Port of egress-guard's DNS server on 127.0.0.1 and [::1]. */
  dnsPort: number;
  /** Address families to cover (default both). */
  families?: readonly Family[];
  /**
   * Services of the job that hosts outside may connect to (an sshd on a self-hosted runner): their replies
   * are let out. Any other packet on a connection the outside opened is refused (block) or logged (audit).
   */
  inboundPorts?: readonly InboundPort[];
  /**
   * Prefixes on the runner's own links, per family (routes without a gateway): neighbour discovery may reach
   * them. `rules apply` reads them from the routing table; nothing sent there leaves the link.
   */
  onLink?: Partial<Record<Family, readonly OnLinkPrefix[]>>;
  /**
   * Bridge patterns neighbour solicitations and advertisements may leave through to any address (a Docker network
   * made after `rules apply`); default DOCKER_BRIDGES. `rules apply` leaves out a pattern that the runner's uplink
   * matches (OpenStack's `br-ex`), and all of them where it cannot read the routes (docker-bridges.ts).
   */
  neighbourBridges?: readonly string[];
  /** DHCP servers a renewal may be sent to by unicast (e.g. a cloud's off-link one); broadcast always works. */
  dhcpServers?: readonly string[];
  /** NFLOG group for reports (default NFLOG_GROUP). */
  nflogGroup?: number;
}

/** A prefix on one of the runner's links, and that link (a packet to it leaves through nothing else). */
export interface OnLinkPrefix {
  prefix: string;
  dev: string;
}

export interface InboundPort {
  protocol: 'tcp' | 'udp';
  port: number;
}

export interface RuleCommand {
  binary: 'iptables' | 'ip6tables';
  args: string[];
}

export function binaryOf(family: Family): RuleCommand['binary'] {
  return family === 4 ? 'iptables' : 'ip6tables';
}

/**
 * Connections egress-guard itself opens (upstream DNS, upstream TCP) carry this conntrack mark. nat OUTPUT sees
 * only a connection's first packet, so only connections egress-guard originates are marked. A job process
 * that sends on such a connection's tuple (e.g. binds the source port of an upstream DNS exchange it read from
 * /proc/net/udp) would otherwise pass as ESTABLISHED; the filter chain refuses it.
 */
export const OWN_CONNECTION_MARK = '0x4547/0xffff';

/**
 * Every connection whose first packet the filter chain saw carries this conntrack bit (outside the low 16 bits that
 * OWN_CONNECTION_MARK and bridge-routes.ts's mark use as values). A connection without it was open before the rules
 * (or while they were removed, where other rules kept conntrack tracking): its packets are ESTABLISHED and the
 * exemption for those would pass them unseen, so they are reported first (NFLOG_PREFIX.beforeRules). A connection
 * conntrack did not track before the rules is picked up mid-stream instead (natRules' --syn; docs/transparent.md).
 * Not refused, in block mode either: on a runner where the rules are applied by a step (the GitHub Action), the
 * runner's own connections to its service are among them, and cutting them would break the job (docs/transparent.md,
 * "Connections open before the rules").
 */
export const RULES_SEEN_MARK = '0x10000/0x10000';

/** What identifies egress-guard's own packets: its uid, and its socket mark when one is set. */
function ownPackets(o: RuleOptions): string[] {
  const mark = o.socketMark === undefined ? [] : ['-m', 'mark', '--mark', `0x${o.socketMark.toString(16)}`];
  return ['-m', 'owner', '--uid-owner', String(o.uid), ...mark];
}

function natRules(family: Family, o: RuleOptions): string[][] {
  const loopback = family === 4 ? '127.0.0.0/8' : '::1/128';
  return [
    [...ownPackets(o), '-j', 'CONNMARK', '--set-xmark', OWN_CONNECTION_MARK],
    [...ownPackets(o), '-j', 'RETURN'],
    ['-d', loopback, '-j', 'RETURN'],
    // Addresses of this machine (or namespace) are not egress.
    ['-m', 'addrtype', '--dst-type', 'LOCAL', '-j', 'RETURN'],
    ['-p', 'udp', '--dport', '53', '-j', 'REDIRECT', '--to-ports', String(o.dnsPort)],
    // TCP only from its SYN. A first packet without one is a connection conntrack picked up mid-stream: open before the
    // rules where nothing tracked it yet (a namespace with no other rule using conntrack). Redirected, the listener's
    // kernel reset it, in audit mode too, and no event said why; now the filter chain reports it (NFLOG_PREFIX.out, read
    // as established-before-rules) and refuses it in block mode, as it does any packet that was not redirected.
    ['-p', 'tcp', '--syn', '--dport', '53', '-j', 'REDIRECT', '--to-ports', String(o.dnsPort)],
    ['-p', 'tcp', '--syn', '-j', 'REDIRECT', '--to-ports', String(o.transparentPort)],
  ];
}

/** Neighbour discovery: router solicitation and MLDv2 reports go to link-scope multicast only ... */
const MULTICAST_ND_TYPES = ['133', '143'];
/** ... neighbour solicitation and advertisement also to a neighbour's own address (address resolution, NUD). */
const NEIGHBOUR_TYPES = ['135', '136'];

/**
 * What returns from the filter chain besides egress-guard's own traffic, each with what it exists for. None
 * can carry a job's data off the runner's link: see docs/transparent.md, "What the rules let through".
 */
function exemptions(family: Family, o: RuleOptions): string[][] {
  const v4 = family === 4;
  const rules: string[][] = [
    // Loopback and the machine's own addresses (they go out through lo): not egress. Local forwarders are
    // not exempt themselves, so what they relay goes through these rules too.
    ['-o', 'lo', '-j', 'RETURN'],
    // Redirected connections: filter OUTPUT sees them with the loopback destination nat OUTPUT gave them
    // (the output interface is still the one routed to before the rewrite).
    ['-d', v4 ? '127.0.0.0/8' : '::1/128', '-j', 'RETURN'],
    // Only the job's own connections: an outside host's connection that a PREROUTING rule redirected inbound is
    // DNAT too, and what the job sends back on it is REPLY.
    ['-m', 'conntrack', '--ctstate', 'DNAT', '--ctdir', 'ORIGINAL', '-j', 'RETURN'],
    // A connection the job's side opened before the rules: reported (once a minute per flow), then let through below.
    ['-m', 'conntrack', '--ctstate', 'ESTABLISHED', '--ctdir', 'ORIGINAL', '-m', 'connmark', '!', '--mark', RULES_SEEN_MARK, ...nflog(o, NFLOG_PREFIX.beforeRules)],
    // Later packets of connections the job's side opened and the rules let through (DHCP, neighbour
    // discovery). Not --ctdir REPLY: that is the job answering a connection an outside host opened.
    ['-m', 'conntrack', '--ctstate', 'ESTABLISHED,RELATED', '--ctdir', 'ORIGINAL', '-j', 'RETURN'],
  ];
  for (const inbound of o.inboundPorts ?? []) {
    rules.push(['-p', inbound.protocol, '--sport', String(inbound.port), '-m', 'conntrack', '--ctstate', 'ESTABLISHED', '--ctdir', 'REPLY', '-j', 'RETURN']);
  }
  if (v4) {
    // DHCP: broadcast (discover, request, rebinding) stays on the link; unicast only to named servers.
    rules.push(['-p', 'udp', '--sport', '68', '--dport', '67', '-d', '255.255.255.255', '-j', 'RETURN']);
  } else {
    // Without neighbour discovery IPv6 stops working altogether: allowed to link-scope destinations only, and
    // to a neighbour on one of the runner's own links only out through that link (-o).
    for (const type of [...MULTICAST_ND_TYPES, ...NEIGHBOUR_TYPES]) {
      for (const destination of ['fe80::/10', 'ff02::/16']) rules.push(['-p', 'ipv6-icmp', '--icmpv6-type', type, '-d', destination, '-j', 'RETURN']);
    }
    for (const type of NEIGHBOUR_TYPES) {
      for (const link of o.onLink?.[6] ?? []) rules.push(['-o', link.dev, '-p', 'ipv6-icmp', '--icmpv6-type', type, '-d', link.prefix, '-j', 'RETURN']);
      // And out through Docker's bridges, whatever their prefix: a network made after `rules apply` (`docker network
      // create --ipv6` in the job) is on no list read then, and the host's answers to its containers' neighbour
      // solicitations for their gateway were refused, so in block mode those containers had no IPv6 at all
      // (e2e github-action). What leaves through a bridge reaches only the containers on it; not through a pattern the
      // runner's uplink matches (until 2026-12-02 `br-+` was exempt on a runner whose uplink is br-ex: to any address).
      for (const bridge of o.neighbourBridges ?? DOCKER_BRIDGES) rules.push(['-o', bridge, '-p', 'ipv6-icmp', '--icmpv6-type', type, '-j', 'RETURN']);
    }
    // DHCPv6 from a link-local address to All_DHCP_Relay_Agents_and_Servers.
    rules.push(['-p', 'udp', '--sport', '546', '--dport', '547', '-s', 'fe80::/10', '-d', 'ff02::1:2', '-j', 'RETURN']);
  }
  for (const server of o.dhcpServers ?? []) {
    if (server.includes(':') !== !v4) continue;
    rules.push(
      v4 ? ['-p', 'udp', '--sport', '68', '--dport', '67', '-d', server, '-j', 'RETURN'] : ['-p', 'udp', '--sport', '546', '--dport', '547', '-d', server, '-j', 'RETURN'],
    );
  }
  return rules;
}

/** A rule's report to the NFLOG group (default NFLOG_GROUP) under `prefix`, bounded per flow in the kernel table `table`. */
export function nflogReport(group: number | undefined, prefix: string, table: string): string[] {
  return [...nflogLimit(table), '-j', 'NFLOG', '--nflog-group', String(group ?? NFLOG_GROUP), '--nflog-prefix', prefix];
}

function nflog(o: RuleOptions, prefix: string): string[] {
  // One hashlimit table per rule: eg-out, eg-reply, eg-own, eg-pre (iptables and ip6tables keep theirs apart).
  return [...nflogReport(o.nflogGroup, prefix, prefix.replace(':', '-')), '--nflog-threshold', '1'];
}

/**
 * The filter chain: egress-guard's uid, then what is reported before anything returns (a job packet on one of
 * egress-guard's connections), the exemptions, then what is reported and, in block mode, refused: the job
 * answering connections from outside, and everything else that is not redirected. Every report goes to NFLOG.
 */
function filterRules(family: Family, o: RuleOptions): string[][] {
  const block = o.mode === 'block';
  // ORIGINAL only: packets that travel as egress-guard's own did. What answers on such a connection (a collector on
  // this machine's loopback replying to egress-guard) is REPLY and no way out.
  const own = ['-m', 'connmark', '--mark', OWN_CONNECTION_MARK, '-m', 'conntrack', '--ctdir', 'ORIGINAL'];
  const reply = ['-m', 'conntrack', '--ctdir', 'REPLY'];
  const unreachable = family === 4 ? 'icmp-port-unreachable' : 'icmp6-port-unreachable';
  const prohibited = family === 4 ? 'icmp-admin-prohibited' : 'icmp6-adm-prohibited';
  return [
    // Seen by the rules: what is not marked here was open before them (exemptions(), NFLOG_PREFIX.beforeRules).
    // egress-guard's own connections too, so that a job packet on one is reported as that (`own`), not twice.
    ['-m', 'conntrack', '--ctstate', 'NEW', '-j', 'CONNMARK', '--set-xmark', RULES_SEEN_MARK],
    [...ownPackets(o), '-j', 'RETURN'],
    [...own, ...nflog(o, NFLOG_PREFIX.own)],
    ...(block ? [[...own, '-j', 'REJECT']] : []),
    ...exemptions(family, o),
    [...reply, ...nflog(o, NFLOG_PREFIX.reply)],
    block ? [...reply, '-j', 'REJECT', '--reject-with', prohibited] : [...reply, '-j', 'RETURN'],
    nflog(o, NFLOG_PREFIX.out),
    ...(block
      ? [
          ['-p', 'tcp', '-j', 'REJECT', '--reject-with', 'tcp-reset'],
          ['-p', 'udp', '-j', 'REJECT', '--reject-with', unreachable],
          ['-j', 'REJECT', '--reject-with', prohibited],
        ]
      : []),
  ];
}

/** `22`, `8080/tcp`, `5353/udp` -> an inbound port; undefined when it is not one. */
export function parseInboundPort(text: string): InboundPort | undefined {
  const m = /^(\d{1,5})(?:\/(tcp|udp))?$/.exec(text.trim());
  if (!m || Number(m[1]) < 1 || Number(m[1]) > 65535) return undefined;
  return { protocol: (m[2] ?? 'tcp') as InboundPort['protocol'], port: Number(m[1]) };
}

/** The shortest prefix taken as one link: a shorter one is a routing decision (a VPN's 2000::/3), not a link. */
const MIN_ON_LINK_PREFIX = 64;

/**
 * Prefixes on the runner's links from `ip -o -6 route show` output: the routes the kernel made for an address
 * configured on an interface (`proto kernel`, no gateway, /64 or longer), with their device. Routes a VPN or a
 * user added (`::/1 dev tun0`) are not links: neighbour discovery there would leave through the tunnel.
 */
export function onLinkPrefixes(routeOutput: string): OnLinkPrefix[] {
  const links: OnLinkPrefix[] = [];
  for (const line of routeOutput.split('\n')) {
    const words = line.trim().split(/\s+/);
    const m = /^([0-9a-f:]+)\/(\d{1,3})$/i.exec(words[0] ?? '');
    const dev = words[words.indexOf('dev') + 1];
    if (!m || !dev || words.indexOf('dev') === -1 || words.includes('via')) continue;
    if (words[words.indexOf('proto') + 1] !== 'kernel' || Number(m[2]) < MIN_ON_LINK_PREFIX) continue;
    if (/^(fe80|ff[0-9a-f]{2}):/i.test(m[1]!)) continue;
    links.push({ prefix: words[0]!, dev });
  }
  return links;
}

const WAIT = ['-w', '5'];

/** Commands that create the chains, fill them and append the two jumps, for each family. */
export function applyCommands(options: RuleOptions): RuleCommand[] {
  const commands: RuleCommand[] = [];
  for (const family of options.families ?? [4, 6]) {
    const binary = binaryOf(family);
    const add = (table: string, chain: string, rules: string[][]) => {
      commands.push({ binary, args: [...WAIT, '-t', table, '-N', chain] });
      for (const rule of rules) commands.push({ binary, args: [...WAIT, '-t', table, '-A', chain, ...rule] });
    };
    add('nat', NAT_CHAIN, natRules(family, options));
    add('filter', FILTER_CHAIN, filterRules(family, options));
    // The jumps last: until they exist, nothing is redirected to a half-built chain.
    commands.push({ binary, args: [...WAIT, '-t', 'nat', '-A', 'OUTPUT', '-j', NAT_CHAIN] });
    commands.push({ binary, args: [...WAIT, '-t', 'filter', '-A', 'OUTPUT', '-j', FILTER_CHAIN] });
  }
  return commands;
}

export interface OwnChain {
  table: 'nat' | 'filter';
  chain: string;
}

export const OWN_CHAINS: readonly OwnChain[] = [
  { table: 'nat', chain: NAT_CHAIN },
  { table: 'filter', chain: FILTER_CHAIN },
];

/** `-C`/`-D` arguments of the jump to one of our chains. */
export function jumpArgs(op: '-C' | '-D', own: OwnChain): string[] {
  return [...WAIT, '-t', own.table, op, 'OUTPUT', '-j', own.chain];
}

export function chainArgs(op: '-S' | '-F' | '-X', own: OwnChain): string[] {
  return [...WAIT, '-t', own.table, op, own.chain];
}

function quote(arg: string): string {
  return /^[\w@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replace(/'/g, `'\\''`)}'`;
}

/** The commands as shell lines (`egress-guard rules print`). */
export function formatCommands(commands: readonly RuleCommand[]): string {
  return commands.map((c) => [c.binary, ...c.args].map(quote).join(' ')).join('\n') + '\n';
}

/** The removal as shell lines: delete the jumps, then flush and delete our chains. */
export function removalCommands(families: readonly Family[] = [4, 6]): RuleCommand[] {
  const commands: RuleCommand[] = [];
  for (const family of families) {
    const binary = binaryOf(family);
    for (const own of OWN_CHAINS) commands.push({ binary, args: jumpArgs('-D', own) });
    for (const own of OWN_CHAINS) commands.push({ binary, args: chainArgs('-F', own) }, { binary, args: chainArgs('-X', own) });
  }
  return commands;
}
