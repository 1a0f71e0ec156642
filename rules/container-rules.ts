/**
 * Rules for the containers a job starts on Docker bridges, IPv4 (iptables) and IPv6 (ip6tables) alike, as pure
 * data. Their traffic reaches the host on a bridge and takes the FORWARD path, which the OUTPUT rules
 * (iptables-rules.ts) never see. Here, per family:
 *
 * - nat PREROUTING, from each bridge: TCP to egress-guard's container transparent listener, DNS (53, any server,
 *   Docker's embedded resolver's upstream queries included) to its container DNS listener. REDIRECT from
 *   PREROUTING lands on the bridge's own address, so those listeners are on 0.0.0.0 and [::] (IPv6 only) at their
 *   own ports; the INPUT chain lets only redirected connections reach them. (IPv6 has no route_localnet: a
 *   redirect to ::1 from a bridge cannot be made.)
 * - Connections that stay on the bridges are not redirected: with br_netfilter, container-to-container frames on one
 *   bridge pass PREROUTING too. Where nftables can look the destination's route up (bridge-routes.ts), such a
 *   connection carries a conntrack mark and returns; every other destination, private ones included, is redirected
 *   and decided by the policy. Without it (`staysOnBridges: 'private-ranges'`), destinations in the private ranges
 *   are not redirected, which keeps Docker's own (private) subnets working. The FORWARD chain (hooked in
 *   DOCKER-USER, made here where Docker has not made it yet) lets a bridge talk to a bridge and refuses (block) or
 *   reports (audit) every other new flow from a bridge: UDP other than DNS, ICMP, and TCP that was not redirected
 *   (private addresses off the bridges, without the route lookup); and a container's answers on a connection an
 *   outside host opened (a published port).
 * - Bridges are matched by name pattern (`docker0`, `br-+`), so a network created later in the job is covered.
 */
import type { Family, RuleCommand, RulesMode } from './iptables-rules.js';
import { STAYS_ON_BRIDGES_CONNMARK } from './bridge-routes.js';
import { DOCKER_BRIDGES } from './docker-bridges.js';
import { binaryOf, NFLOG_PREFIX, nflogReport } from './iptables-rules.js';

export const CONTAINER_NAT_CHAIN = 'EGRESS_GUARD_CTR_NAT';
export const CONTAINER_FORWARD_CHAIN = 'EGRESS_GUARD_CTR_FWD';
export const CONTAINER_INPUT_CHAIN = 'EGRESS_GUARD_CTR_IN';
/**
 * Without the route lookup, not redirected from a bridge (see above); refused or reported in FORWARD unless they stay
 * on the bridges.
 */
export const PRIVATE_V4 = '10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,100.64.0.0/10';
/**
 * Link-local IPv6 destinations, never forwarded: a container's connection to fe80:: is to another container on its
 * bridge (br_netfilter passes it through PREROUTING), and egress-guard could not even reach it (no zone). Not
 * redirected in either way of telling what stays on the bridges (a route lookup without the zone is no answer).
 */
export const LINK_LOCAL_V6 = 'fe80::/10';
/** The same as PRIVATE_V4 for IPv6: unique local addresses (Docker's IPv6 networks are often ULA, NAT66 to the outside). */
export const PRIVATE_V6 = `fc00::/7,${LINK_LOCAL_V6}`;

/**
 * How the nat rules tell a connection that stays on the bridges: by its route (the mark bridge-routes.ts sets) or,
 * where nftables cannot look routes up, by the private ranges.
 */
export type StaysOnBridges = 'route' | 'private-ranges';

/**
 * Where the FORWARD chain for containers is hooked, in both families: Docker's DOCKER-USER, the one chain Docker keeps
 * ahead of its own FORWARD rules (it inserts those at the top when it starts, accepting what leaves a bridge) and
 * never flushes. Where Docker has not made it (not started yet, or not managing ip6tables), it is made here, as
 * Docker would make it (a jump first in FORWARD), with a marker rule that says so: a Docker started later keeps it
 * and its contents. Until 2026-12-02 the hook went into FORWARD then, and a Docker started after main put its
 * accepts above it (a container's UDP left unrefused and unreported in block mode: e2e github-action).
 */
export const DOCKER_USER = 'DOCKER-USER';
/** The rule in a DOCKER-USER made here: it passes on (as Docker's own `-j RETURN`) and tells teardown who made the chain. */
export const MADE_DOCKER_USER_RULE: readonly string[] = ['-m', 'comment', '--comment', 'egress-guard-made-this-chain', '-j', 'RETURN'];
/** Where earlier versions hooked the FORWARD chain for containers when DOCKER-USER was missing (still removed). */
export const LEGACY_FORWARD_HOOK = 'FORWARD';

export interface ContainerRuleOptions {
  mode: RulesMode;
  /** egress-guard's transparent listeners for containers, on 0.0.0.0 and [::]. */
  transparentPort: number;
  /** egress-guard's DNS listeners for containers, on 0.0.0.0 and [::]. */
  dnsPort: number;
  /** Bridge interface names or iptables patterns (default DOCKER_BRIDGES). */
  bridges?: readonly string[];
  /**
   * Per family: DOCKER-USER is missing and is made here (see DOCKER_USER). Docker makes it in ip6tables only where its
   * IPv6 support (`ip6tables`) is on.
   */
  makeDockerUser: Record<Family, boolean>;
  /** Default 'private-ranges'; 'route' only with bridge-routes.ts's table in place (run-container-rules.ts). */
  staysOnBridges?: StaysOnBridges;
  nflogGroup?: number;
}

const WAIT = ['-w', '5'];

/** What REJECT sends back, per family (ip6tables has its own ICMPv6 names; a TCP reset is the same). */
const REJECT_WITH: Record<Family, { adminProhibited: string; portUnreachable: string }> = {
  4: { adminProhibited: 'icmp-admin-prohibited', portUnreachable: 'icmp-port-unreachable' },
  6: { adminProhibited: 'icmp6-adm-prohibited', portUnreachable: 'icmp6-port-unreachable' },
};

function natRules(family: Family, o: ContainerRuleOptions): string[][] {
  const staying =
    o.staysOnBridges === 'route'
      ? [['-m', 'connmark', '--mark', STAYS_ON_BRIDGES_CONNMARK, '-j', 'RETURN'], ...(family === 6 ? [['-d', LINK_LOCAL_V6, '-j', 'RETURN']] : [])]
      : [['-d', family === 4 ? PRIVATE_V4 : PRIVATE_V6, '-j', 'RETURN']];
  return [
    ...staying,
    // The host itself (its services, published ports) is not egress.
    ['-m', 'addrtype', '--dst-type', 'LOCAL', '-j', 'RETURN'],
    ['-p', 'udp', '--dport', '53', '-j', 'REDIRECT', '--to-ports', String(o.dnsPort)],
    ['-p', 'tcp', '--dport', '53', '-j', 'REDIRECT', '--to-ports', String(o.dnsPort)],
    ['-p', 'tcp', '-j', 'REDIRECT', '--to-ports', String(o.transparentPort)],
  ];
}

function forwardRules(family: Family, o: ContainerRuleOptions, bridges: readonly string[]): string[][] {
  const reject = REJECT_WITH[family];
  // Per flow, not per rule: a flood from one container cannot hide another flow's report (iptables-rules.ts).
  const report = (prefix: string, table: string) => nflogReport(o.nflogGroup, prefix, table);
  const reply = ['-m', 'conntrack', '--ctdir', 'REPLY'];
  const rules: string[][] = [];
  for (const from of bridges) for (const to of bridges) rules.push(['-i', from, '-o', to, '-j', 'RETURN']);
  // Later packets of flows a container opened. Not REPLY: that is a container answering a connection an outside host
  // opened (a published port, DNAT), which the host's own services may not do either (iptables-rules.ts). Until
  // 2026-12-02 this had no direction, and a service container with a published port answered anyone who connected
  // (e2e ways-out-containers).
  rules.push(['-m', 'conntrack', '--ctstate', 'ESTABLISHED,RELATED', '--ctdir', 'ORIGINAL', '-j', 'RETURN']);
  for (const bridge of bridges) {
    rules.push(['-i', bridge, ...reply, ...report(NFLOG_PREFIX.containerReply, 'eg-ctr-reply')]);
    rules.push(o.mode === 'block' ? ['-i', bridge, ...reply, '-j', 'REJECT', '--reject-with', reject.adminProhibited] : ['-i', bridge, ...reply, '-j', 'RETURN']);
    rules.push(['-i', bridge, ...report(NFLOG_PREFIX.containerOut, 'eg-ctr-out')]);
    if (o.mode === 'block') {
      rules.push(['-i', bridge, '-p', 'tcp', '-j', 'REJECT', '--reject-with', 'tcp-reset']);
      rules.push(['-i', bridge, '-p', 'udp', '-j', 'REJECT', '--reject-with', reject.portUnreachable]);
      rules.push(['-i', bridge, '-j', 'REJECT', '--reject-with', reject.adminProhibited]);
    }
  }
  return rules;
}

/** Only connections the nat rules redirected reach the 0.0.0.0 and [::] listeners; nobody outside the host does. */
function inputRules(o: Pick<ContainerRuleOptions, 'transparentPort' | 'dnsPort'>): string[][] {
  const notRedirected = ['-m', 'conntrack', '!', '--ctstate', 'DNAT', '-j', 'DROP'];
  return [
    ['-p', 'tcp', '--dport', String(o.transparentPort), ...notRedirected],
    ['-p', 'tcp', '--dport', String(o.dnsPort), ...notRedirected],
    ['-p', 'udp', '--dport', String(o.dnsPort), ...notRedirected],
  ];
}

/** For one family: create and fill the three chains, then hook them in (inserted first, before Docker's own rules). */
export function containerApplyCommands(o: ContainerRuleOptions, family: Family): RuleCommand[] {
  const binary = binaryOf(family);
  const bridges = o.bridges ?? DOCKER_BRIDGES;
  const commands: RuleCommand[] = [];
  const add = (table: string, chain: string, rules: string[][]) => {
    commands.push({ binary, args: [...WAIT, '-t', table, '-N', chain] });
    for (const rule of rules) commands.push({ binary, args: [...WAIT, '-t', table, '-A', chain, ...rule] });
  };
  add('nat', CONTAINER_NAT_CHAIN, natRules(family, o));
  add('filter', CONTAINER_FORWARD_CHAIN, forwardRules(family, o, bridges));
  // The INPUT chain and its hook, as the guard alone makes them: the first of the hooks, inserted after every chain.
  commands.push(...containerGuardCommands(o, family));
  if (o.makeDockerUser[family]) {
    commands.push({ binary, args: [...WAIT, '-t', 'filter', '-N', DOCKER_USER] });
    commands.push({ binary, args: [...WAIT, '-t', 'filter', '-A', DOCKER_USER, ...MADE_DOCKER_USER_RULE] });
    commands.push({ binary, args: [...WAIT, '-t', 'filter', '-I', 'FORWARD', '1', '-j', DOCKER_USER] });
  }
  commands.push({ binary, args: [...WAIT, '-t', 'filter', '-I', DOCKER_USER, '1', '-j', CONTAINER_FORWARD_CHAIN] });
  for (const bridge of bridges) commands.push({ binary, args: [...WAIT, '-t', 'nat', '-I', 'PREROUTING', '1', '-i', bridge, '-j', CONTAINER_NAT_CHAIN] });
  return commands;
}

/**
 * For one family: the INPUT chain alone, for when the rest could not be applied (audit mode goes on without them):
 * the container listeners on 0.0.0.0 and [::] are then reachable by nobody, instead of by the runner's network.
 */
export function containerGuardCommands(o: Pick<ContainerRuleOptions, 'transparentPort' | 'dnsPort'>, family: Family): RuleCommand[] {
  const binary = binaryOf(family);
  return [
    { binary, args: [...WAIT, '-t', 'filter', '-N', CONTAINER_INPUT_CHAIN] },
    ...inputRules(o).map((rule): RuleCommand => ({ binary, args: [...WAIT, '-t', 'filter', '-A', CONTAINER_INPUT_CHAIN, ...rule] })),
    { binary, args: [...WAIT, '-t', 'filter', '-I', 'INPUT', '1', '-j', CONTAINER_INPUT_CHAIN] },
  ];
}

export interface ContainerHook {
  table: 'nat' | 'filter';
  chain: string;
  /** The jump's match and target, as `-D` takes them. */
  rule: string[];
}

/**
 * The jumps containerApplyCommands inserts (the same for both families), and the one earlier versions put in FORWARD,
 * for removal (`-D`, each until it is gone).
 */
export function containerHooks(o: { bridges?: readonly string[] }): ContainerHook[] {
  return [
    { table: 'filter', chain: 'INPUT', rule: ['-j', CONTAINER_INPUT_CHAIN] },
    { table: 'filter', chain: DOCKER_USER, rule: ['-j', CONTAINER_FORWARD_CHAIN] },
    { table: 'filter', chain: LEGACY_FORWARD_HOOK, rule: ['-j', CONTAINER_FORWARD_CHAIN] },
    ...(o.bridges ?? DOCKER_BRIDGES).map((bridge): ContainerHook => ({ table: 'nat', chain: 'PREROUTING', rule: ['-i', bridge, '-j', CONTAINER_NAT_CHAIN] })),
  ];
}

export const CONTAINER_CHAINS: ReadonlyArray<{ table: 'nat' | 'filter'; chain: string }> = [
  { table: 'nat', chain: CONTAINER_NAT_CHAIN },
  { table: 'filter', chain: CONTAINER_FORWARD_CHAIN },
  { table: 'filter', chain: CONTAINER_INPUT_CHAIN },
];

/** `-C`/`-D` arguments of one hook. */
export function containerHookArgs(op: '-C' | '-D', hook: ContainerHook): string[] {
  return [...WAIT, '-t', hook.table, op, hook.chain, ...hook.rule];
}
