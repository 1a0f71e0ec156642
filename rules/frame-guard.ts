/**
 * The guard against frames written below the IP stack: a root job that keeps CAP_NET_RAW (Docker's default) can open
 * an AF_PACKET socket and write a whole Ethernet frame (an IP packet to any address inside) straight to a device. Such
 * a frame never passes netfilter's IP hooks, so no iptables rule of the redirect sees it. nftables' netdev egress hook
 * (Linux 5.16+) does: the kernel runs it for AF_PACKET frames too (their qdisc bypass included).
 *
 *   packet from the IP stack (a process, egress-guard, a forwarded container packet, the kernel's own; not all ARP:
 *   its replies and probes carry no route, only a request a queued packet waits on does)
 *     -> routed: the packet carries its route (skb dst) down to the device, the redirect rules on the way
 *     -> the device's egress hook, this table: a route -> accept (`meta rtclassid` reads the route's realm: no route,
 *        no value, and the rule does not match)
 *   frame from a packet socket (no route: it was never routed)
 *     -> the device's egress hook: ARP and a DHCP broadcast, untagged or behind one VLAN tag, and LACP (link-local)
 *        -> accept (not on the loopback); else reported to NFLOG
 *        (NFLOG_PREFIX.frame: an Ethernet frame; frameIp: a device without link-layer header, a tunnel) and dropped
 *        in block mode, passed in audit mode; a frame past the reports' rate is dropped in either mode (reported or
 *        dropped, never passed unseen, as the redirect rules' reports)
 *
 * Why the route: it is the one thing the IP stack's packets carry that a packet socket cannot give its frame. The
 * netdev family has no `ct` (refused) and no `rt`; every other field it reads a job with CAP_NET_RAW sets (SO_MARK,
 * Linux 5.17+; SO_PRIORITY) or reads (SO_RCVPRIORITY, Linux 6.14+, no capability at all). Until review48 the stack's
 * packets carried a random secret in their priority instead: any process read it back from a packet it sent itself
 * over loopback, and then wrote frames with it (docs/transparent.md). `meta rtclassid` needs the kernel's
 * CONFIG_IP_ROUTE_CLASSID (Debian's and Ubuntu's kernels have it); without, nft refuses the rule and there is no guard.
 * The stack's packets keep their route through the devices stacked on a guarded one (macvlan, VLAN, bond keep it:
 * netif_keep_dst) down to its egress hook; the kernel drops it only after the hooks.
 *
 * Guarded: every device the routing tables name (any table, either family: the devices anything is routed out of),
 * and the devices below them (a VLAN's or macvlan's parent, a bond's members), and the loopback, but bridge ports. A
 * bridge port carries frames the bridge forwards between its other ports (containers on docker0), which are not
 * routed either; where the uplink itself is a port, frames written on it leave unguarded (docs/transparent.md).
 * The loopback since review49: a frame written on it comes straight back in, and where the namespace forwards (a
 * container's or pod's inherits ip_forward=1 from its host) the kernel routes it out of the uplink, route and all,
 * through a FORWARD chain that has no rule for it: out in block mode, unreported in audit mode. What the stack
 * sends over the loopback carries its route like any other packet.
 * One `netdev` table, a chain per device, applied in one nft transaction.
 *
 * Pure data (as bridge-routes.ts); run-frame-guard.ts reads the devices and applies it.
 */
import { NFLOG_GROUP, NFLOG_PREFIX, type RulesMode } from './iptables-rules.js';

export const FRAME_GUARD_TABLE = 'egress_guard_frames';

/** The ether types of a VLAN tag (802.1Q, 802.1ad), as nft reads them before a tagged frame's own. */
const VLAN_TAGS = '0x8100, 0x88a8';

/** Reports a second at most (burst twice that); a frame past them is dropped, in audit mode too. */
const REPORTS_PER_SECOND = 50;

export interface GuardedDevice {
  name: string;
  /** The device has an Ethernet header (link/ether, and the loopback's): what a packet socket writes starts with it. */
  ethernet: boolean;
  /** The loopback (link/loopback): no neighbours to resolve nor DHCP server to ask, so only what was routed passes. */
  loopback?: true;
}

/** Interface names as nft takes them quoted; anything else (a space, a quote) is left unguarded rather than misquoted. */
const DEVICE_NAME = /^[A-Za-z0-9_.:-]{1,15}$/;

/**
 * The devices to guard, from `ip -o -d link show` and the routes of both families (`ip -o route show table all`):
 * those a route names and the devices below them (a VLAN's or macvlan's parent, a bond's members), and `lo`, but bridge
 * ports. Also the names left out for being unquotable.
 */
export function guardedDevices(linkOutput: string, routeOutput: string): { devices: GuardedDevice[]; unquotable: string[] } {
  const routed = new Set<string>();
  for (const line of routeOutput.split('\n')) {
    // Every `dev`: a multipath route (`-o` puts its `nexthop via ... dev eth1 weight 1` on one line) names one a hop.
    // Until review49 only the first was read, and an unnumbered device named by a later hop alone was left unguarded.
    const words = line.trim().split(/\s+/);
    words.forEach((word, at) => {
      if (word === 'dev' && words[at + 1]) routed.add(words[at + 1]!);
    });
  }
  // `4: eth0@if5: <BROADCAST,...> ... link/ether ... bridge_slave ...` (-o: one line per device, `\` for its line breaks)
  const links: { name: string; lower?: string; master?: string; line: string }[] = [];
  for (const line of linkOutput.split('\n')) {
    const m = /^\d+:\s+([^:@\s]+)(?:@([^:\s]*))?:\s/.exec(line);
    // A veth's `@` names its peer (`@if5` in another namespace, or a device here), which is no device below it.
    if (m) links.push({ name: m[1]!, lower: /\sveth\s/.test(line) ? undefined : m[2] || undefined, master: /\smaster\s+(\S+)/.exec(line)?.[1], line });
  }
  // A routed device's lower devices too (a VLAN's or macvlan's parent `name@lower`, a bond's members `master bond0`):
  // a packet socket writes on them as well, and the frames the stack sends through the upper device reach them with
  // their route. Until review48 only the routed devices were guarded: a frame written on the unrouted parent of a
  // routed macvlan left unseen.
  const wanted = new Set(routed);
  for (let grew = true, rounds = 0; grew && rounds < links.length + 1; rounds++) {
    grew = false;
    for (const link of links) {
      const below = [...(link.lower && wanted.has(link.name) ? [link.lower] : []), ...(link.master && wanted.has(link.master) ? [link.name] : [])];
      for (const name of below) {
        if (wanted.has(name)) continue;
        wanted.add(name);
        grew = true;
      }
    }
  }
  const devices: GuardedDevice[] = [];
  const unquotable: string[] = [];
  for (const { name, line } of links) {
    const loopback = /\slink\/loopback\s/.test(line);
    if ((!wanted.has(name) && !loopback) || /\sbridge_slave\s/.test(line)) continue;
    if (!DEVICE_NAME.test(name)) {
      unquotable.push(name);
      continue;
    }
    devices.push(loopback ? { name, ethernet: true, loopback: true } : { name, ethernet: /\slink\/ether\s/.test(line) });
  }
  return { devices, unquotable };
}

export interface FrameGuardOptions {
  mode: RulesMode;
  devices: readonly GuardedDevice[];
  nflogGroup?: number;
}

/** One nft transaction (for `nft -f -`, one command a line) that makes the table. */
export function frameGuardScript(o: FrameGuardOptions): string {
  const t = FRAME_GUARD_TABLE;
  const group = o.nflogGroup ?? NFLOG_GROUP;
  const verdict = o.mode === 'block' ? 'drop' : 'accept';
  const commands = [`add table netdev ${t}`];
  o.devices.forEach((device, i) => {
    const chain = `device${i}`;
    const rule = (text: string) => commands.push(`add rule netdev ${t} ${chain} ${text}`);
    commands.push(`add chain netdev ${t} ${chain} { type filter hook egress device "${device.name}" priority 0 ; policy accept ; }`);
    // Routed by the IP stack: any realm, 0 included; a frame with no route gives no value, so no match.
    rule('meta rtclassid 0-4294967295 accept');
    if (device.ethernet && !device.loopback) {
      // Address resolution has no IP hook to pass; it stays on the link.
      rule('ether type arp accept');
      // A DHCP client's discover and request on a packet socket (dhclient, systemd-networkd): to the limited
      // broadcast address, which no router forwards (the redirect rules let the same through, iptables-rules.ts).
      // Raw offsets from the frame's start: ether type, IPv4 without options, UDP, 255.255.255.255, ports 68 -> 67.
      rule('@ll,96,16 0x0800 @ll,112,8 0x45 @ll,184,8 17 @ll,240,32 0xffffffff @ll,272,16 68 @ll,288,16 67 accept');
      // The same two behind one VLAN tag (802.1Q or 802.1ad): on a VLAN's parent. The VLAN device hands its frames
      // down with the tag beside the data (hardware offload), and nft reads the frame as if the tag were in it, so
      // the ether type is the tag's. Until review49 a VLAN's ARP replies (no route: ARP is not routed) were dropped
      // on its parent in block mode, and its DHCP broadcasts: no IPv4 over a VLAN once neighbours expired.
      rule(`@ll,96,16 { ${VLAN_TAGS} } @ll,128,16 0x0806 accept`);
      rule(`@ll,96,16 { ${VLAN_TAGS} } @ll,128,16 0x0800 @ll,144,8 0x45 @ll,216,8 17 @ll,272,32 0xffffffff @ll,304,16 68 @ll,320,16 67 accept`);
      // IEEE 802.3 slow protocols (LACP, its marker): the bonding driver's own LACPDUs on a bond's members in
      // 802.3ad mode carry no route (drivers/net/bonding/bond_3ad.c: dev_queue_xmit on the member). Refused, the
      // bond never aggregates. Their address is one no bridge forwards and no router routes.
      rule('ether daddr 01:80:c2:00:00:02 ether type 0x8809 accept');
    }
    const prefix = device.ethernet ? NFLOG_PREFIX.frame : NFLOG_PREFIX.frameIp;
    rule(`limit rate ${REPORTS_PER_SECOND}/second burst ${REPORTS_PER_SECOND * 2} packets log group ${group} prefix "${prefix}" ${verdict}`);
    rule('drop');
  });
  return `${commands.join('\n')}\n`;
}

/** The removal: the table, if there (nft's `destroy` is too new for Debian 12's nft, so the caller lists first). */
export function frameGuardRemoval(): { family: 'netdev'; table: string }[] {
  return [{ family: 'netdev', table: FRAME_GUARD_TABLE }];
}
