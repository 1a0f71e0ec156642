/**
 * Which of a container's connections stay on Docker's bridges, told by the route their destination takes
 * (nftables), so that the nat chain for containers (container-rules.ts) redirects every other one.
 *
 *   frame from a bridge port (br_netfilter) or packet from a bridge
 *     -> conntrack (priority -200)
 *     -> this table, prerouting at mangle (-150): is the destination routed out of a bridge (`fib daddr oifname`),
 *        or is the source not routed back out of the bridge it came from (`fib saddr . iif oif 0`)?
 *        yes: the connection gets STAYS_ON_BRIDGES_MARK
 *     -> nat PREROUTING (-100), EGRESS_GUARD_CTR_NAT: marked -> RETURN (bridged, or bridge to bridge: FORWARD);
 *        else DNS and TCP -> egress-guard's container listeners, decided by the policy
 *
 * Why a route lookup: with br_netfilter, frames bridged from one container to another on the same bridge pass the
 * IP PREROUTING hooks as routed packets do, before any routing decision, and no iptables match there tells the two
 * apart (pkttype: br_netfilter turns OTHERHOST into HOST first; physdev-is-bridged: FORWARD and POSTROUTING only).
 * Without it the nat chain keeps the private ranges from the redirect instead, which lets container-to-container
 * traffic on Docker's (private) subnets through, but also leaves a container's private destinations off the bridges
 * (an internal registry at 10.x) to the FORWARD chain, which refuses them in block mode whatever the policy says,
 * and redirects a container's connection to another on a bridge with global IPv6 addresses.
 *
 * Why the source too: a bridge without an address of its own (Docker's `com.docker.network.bridge.inhibit_ipv4`, or
 * none in one family) has no route to its subnet, so the destination lookup says nothing of its containers'
 * connections to each other; redirected, they were dropped (REDIRECT has no address to send them to on such a bridge;
 * e2e ways-out-containers). A connection whose source the host would not route back out of its bridge is no
 * connection the host can carry for it either way (its answers, egress-guard's included, are routed elsewhere), and
 * not redirecting it lets nothing out: the FORWARD chain for containers passes only bridge to bridge and refuses
 * (block) or reports (audit) every other new flow from a bridge.
 *
 * One `inet` table for both families (pure data, as container-rules.ts; run-container-rules.ts applies it). nftables
 * and iptables (legacy or nft) hook the same netfilter points, so the mark set here is the one iptables' connmark
 * match reads.
 */
export const BRIDGE_ROUTES_TABLE = 'egress_guard_bridges';
const CHAIN = 'classify';

/**
 * The conntrack mark of a connection whose destination is routed out of a bridge (or whose source is not routed back
 * out of its own), under the low 16 bits that iptables-rules.ts's OWN_CONNECTION_MARK (0x4547) uses too: a connection
 * is one or the other, never both.
 */
export const STAYS_ON_BRIDGES_MARK = { value: 0x4548, mask: 0xffff } as const;

/** As iptables' connmark match takes it. */
export const STAYS_ON_BRIDGES_CONNMARK = `0x${STAYS_ON_BRIDGES_MARK.value.toString(16)}/0x${STAYS_ON_BRIDGES_MARK.mask.toString(16)}`;

export interface NftCommand {
  binary: 'nft';
  args: string[];
}

/** iptables' interface pattern (`br-+`) as nftables writes it (`"br-*"`), quoted for nft's parser. */
export function nftInterface(pattern: string): string {
  return `"${pattern.endsWith('+') ? `${pattern.slice(0, -1)}*` : pattern}"`;
}

/**
 * Create the table, its chain, one rule per (incoming bridge, outgoing bridge) pattern for the destination and one
 * per bridge pattern for the source.
 */
export function bridgeRoutesCommands(bridges: readonly string[]): NftCommand[] {
  const nft = (...args: string[]): NftCommand => ({ binary: 'nft', args });
  const keep = ~STAYS_ON_BRIDGES_MARK.mask >>> 0;
  const setMark = ['ct', 'mark', 'set', 'ct', 'mark', 'and', `0x${keep.toString(16)}`, 'or', `0x${STAYS_ON_BRIDGES_MARK.value.toString(16)}`];
  const commands = [
    nft('add', 'table', 'inet', BRIDGE_ROUTES_TABLE),
    // `mangle`, not -150: nft would read a negative number in its argv as an option.
    nft('add', 'chain', 'inet', BRIDGE_ROUTES_TABLE, CHAIN, '{', 'type', 'filter', 'hook', 'prerouting', 'priority', 'mangle', ';', 'policy', 'accept', ';', '}'),
  ];
  for (const from of bridges) {
    for (const to of bridges) {
      commands.push(
        nft('add', 'rule', 'inet', BRIDGE_ROUTES_TABLE, CHAIN, 'iifname', nftInterface(from), 'ct', 'state', 'new', 'fib', 'daddr', 'oifname', nftInterface(to), ...setMark),
      );
    }
  }
  // `oif 0`, not `oif missing`: no lookup result, in the form every nft and kernel with fib takes (the existence flag
  // came later, and kernels before 5.2 did not always honour it).
  for (const from of bridges) {
    commands.push(nft('add', 'rule', 'inet', BRIDGE_ROUTES_TABLE, CHAIN, 'iifname', nftInterface(from), 'ct', 'state', 'new', 'fib', 'saddr', '.', 'iif', 'oif', '0', ...setMark));
  }
  return commands;
}
