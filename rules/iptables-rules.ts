/**
 * The netfilter rules of transparent interception, as pure data: which iptables/ip6tables commands apply
 * them and which remove them. Everything lives in egress-guard's own chains, reached by one jump appended
 * to nat OUTPUT and filter OUTPUT; nothing else in the tables is touched (container runtimes keep rules there).
 */

export const NAT_CHAIN = 'EGRESS_GUARD_NAT';
export const FILTER_CHAIN = 'EGRESS_GUARD_FILTER';
export const LOG_PREFIX = 'egress-guard would-block: ';

export type RulesMode = 'block' | 'audit';
export type Family = 4 | 6;

export interface RuleOptions {
  /** egress-guard's own uid: its traffic (upstream connections, upstream DNS) is exempt. */
  uid: number;
  mode: RulesMode;
  /** Port of the transparent listener on 127.0.0.1 and [::1]. */
  transparentPort: number;
  /** Port of egress-guard's DNS server on 127.0.0.1 and [::1]. */
  dnsPort: number;
  /** Address families to cover (default both). */
  families?: readonly Family[];
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

function natRules(family: Family, o: RuleOptions): string[][] {
  const loopback = family === 4 ? '127.0.0.0/8' : '::1/128';
  return [
    ['-m', 'owner', '--uid-owner', String(o.uid), '-j', 'CONNMARK', '--set-xmark', OWN_CONNECTION_MARK],
    ['-m', 'owner', '--uid-owner', String(o.uid), '-j', 'RETURN'],
    ['-d', loopback, '-j', 'RETURN'],
    // Addresses of this machine (or namespace) are not egress.
    ['-m', 'addrtype', '--dst-type', 'LOCAL', '-j', 'RETURN'],
    ['-p', 'udp', '--dport', '53', '-j', 'REDIRECT', '--to-ports', String(o.dnsPort)],
    ['-p', 'tcp', '--dport', '53', '-j', 'REDIRECT', '--to-ports', String(o.dnsPort)],
    ['-p', 'tcp', '-j', 'REDIRECT', '--to-ports', String(o.transparentPort)],
  ];
}

function filterRules(family: Family, o: RuleOptions): string[][] {
  const ownConnectionHijacked: string[][] =
    o.mode === 'block'
      ? [['-m', 'connmark', '--mark', OWN_CONNECTION_MARK, '-j', 'REJECT']]
      : [['-m', 'connmark', '--mark', OWN_CONNECTION_MARK, '-m', 'limit', '--limit', '20/second', '-j', 'LOG', '--log-prefix', LOG_PREFIX, '--log-uid']];
  const rules: string[][] = [
    ['-m', 'owner', '--uid-owner', String(o.uid), '-j', 'RETURN'],
    ...ownConnectionHijacked,
    ['-o', 'lo', '-j', 'RETURN'],
    // Redirected connections: filter OUTPUT sees them with the loopback destination nat OUTPUT gave them
    // (the output interface is still the one routed to before the rewrite).
    ['-d', family === 4 ? '127.0.0.0/8' : '::1/128', '-j', 'RETURN'],
    ['-m', 'conntrack', '--ctstate', 'DNAT', '-j', 'RETURN'],
    ['-m', 'conntrack', '--ctstate', 'ESTABLISHED,RELATED', '-j', 'RETURN'],
  ];
  if (family === 4) {
    rules.push(['-p', 'udp', '--sport', '68', '--dport', '67', '-j', 'RETURN']);
  } else {
    // Without neighbour discovery IPv6 stops working altogether; DHCPv6 keeps the lease.
    for (const type of ['133', '135', '136', '143']) rules.push(['-p', 'ipv6-icmp', '--icmpv6-type', type, '-j', 'RETURN']);
    rules.push(['-p', 'udp', '--sport', '546', '--dport', '547', '-j', 'RETURN']);
  }
  if (o.mode === 'block') {
    const unreachable = family === 4 ? 'icmp-port-unreachable' : 'icmp6-port-unreachable';
    const prohibited = family === 4 ? 'icmp-admin-prohibited' : 'icmp6-adm-prohibited';
    rules.push(['-p', 'tcp', '-j', 'REJECT', '--reject-with', 'tcp-reset']);
    rules.push(['-p', 'udp', '-j', 'REJECT', '--reject-with', unreachable]);
    rules.push(['-j', 'REJECT', '--reject-with', prohibited]);
  } else {
    rules.push(['-m', 'limit', '--limit', '20/second', '--limit-burst', '100', '-j', 'LOG', '--log-prefix', LOG_PREFIX, '--log-uid']);
  }
  return rules;
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
