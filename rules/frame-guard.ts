/**
 * The guard against frames written below the IP stack: a root job that keeps CAP_NET_RAW (Docker's default) can open
 * an AF_PACKET socket and write a whole Ethernet frame (an IP packet to any address inside) straight to a device. Such
 * a frame never passes netfilter's IP hooks, so no iptables rule of the redirect sees it. nftables' netdev egress hook
 * (Linux 5.16+) does: the kernel runs it for AF_PACKET frames too (their qdisc bypass included).
 *
 *   packet from the IP stack (a process, egress-guard, a forwarded container packet, the kernel's own)
 *     -> ... filter OUTPUT / FORWARD (the redirect rules) ... -> postrouting, priority 500 (after mangle, NAT and
 *        every other table): the packet's skb priority gets the guard's secret in its upper 28 bits
 *     -> the device's egress hook, this table: the secret -> accept
 *   frame from a packet socket (no IP hook passed: the priority its socket gave it)
 *     -> the device's egress hook: ARP and a DHCP broadcast (link-local) -> accept; else reported to NFLOG
 *        (NFLOG_PREFIX.frame: an Ethernet frame; frameIp: a device without link-layer header, a tunnel) and dropped
 *        in block mode, passed in audit mode; a frame past the reports' rate is dropped in either mode (reported or
 *        dropped, never passed unseen, as the redirect rules' reports)
 *
 * Why a secret in the priority, not a mark bit nor conntrack: the netdev family has no `ct` (refused), and a packet
 * socket can set every field of the packet that the family can read: with CAP_NET_RAW a job may set any SO_MARK
 * (Linux 5.17+) and any SO_PRIORITY. So the frame must carry a value the job does not know: 28 random bits, drawn at each
 * `rules apply` and kept only in the kernel's rules. Not in the mark: a job with CAP_NET_RAW can read the marks of
 * the packets it sniffs (a classic BPF filter's SKF_AD_MARK), and the mark is read after postrouting (tc, eBPF
 * datapaths). The priority is not exposed to classic BPF, but it is to any socket with SO_RCVPRIORITY (Linux 6.14+, no
 * capability): the secret is readable, a way out (docs/transparent.md, review48). Its low 4 bits, which qdiscs and mqprio read (TC_PRIO_MAX),
 * are kept. A job guesses one frame per try, each wrong one dropped and reported (docs/transparent.md).
 *
 * Guarded: every device the routing tables name (any table, either family: the devices anything is routed out of),
 * and the devices below them (a VLAN's or macvlan's parent, a bond's members), but the loopback and bridge ports. A bridge port carries frames the bridge forwards between its other ports
 * (containers on docker0), which pass no IP hook either; a frame written on a port reaches only that bridge's
 * segment. Two tables: `inet` for the secret, `netdev` for the filter; both applied in one nft transaction, the secret
 * first, so that no packet of the stack reaches a filter before it carries it.
 *
 * Pure data (as bridge-routes.ts); run-frame-guard.ts reads the devices, draws the secret and applies it.
 */
import { NFLOG_GROUP, NFLOG_PREFIX, type RulesMode } from './iptables-rules.js';

export const FRAME_GUARD_TABLE = 'egress_guard_frames';

/** The priority bits the secret takes: all but the low 4 that qdiscs read (pfifo_fast, prio, fq, mqprio). */
export const SECRET_MASK = 0xfffffff0;

/** A secret for frameGuardScript from 32 random bits: the upper 28, with a major (upper 16) that is no qdisc's root or unspecified handle. */
export function frameSecret(random32: number): number {
  const secret = (random32 & SECRET_MASK) >>> 0;
  const major = secret >>> 16;
  return major === 0 || major === 0xffff ? (secret ^ 0x10000000) >>> 0 : secret;
}

/** Reports a second at most (burst twice that); a frame past them is dropped, in audit mode too. */
const REPORTS_PER_SECOND = 50;

export interface GuardedDevice {
  name: string;
  /** The device has an Ethernet header (link/ether): what a packet socket writes starts with it. */
  ethernet: boolean;
}

/** Interface names as nft takes them quoted; anything else (a space, a quote) is left unguarded rather than misquoted. */
const DEVICE_NAME = /^[A-Za-z0-9_.:-]{1,15}$/;

/**
 * The devices to guard, from `ip -o -d link show` and the routes of both families (`ip -o route show table all`):
 * those a route names and the devices below them (a VLAN's or macvlan's parent, a bond's members), but `lo` and bridge
 * ports. Also the names left out for being unquotable.
 */
export function guardedDevices(linkOutput: string, routeOutput: string): { devices: GuardedDevice[]; unquotable: string[] } {
  const routed = new Set<string>();
  for (const line of routeOutput.split('\n')) {
    const words = line.trim().split(/\s+/);
    const at = words.indexOf('dev');
    if (at !== -1 && words[at + 1]) routed.add(words[at + 1]!);
  }
  // `4: eth0@if5: <BROADCAST,...> ... link/ether ... bridge_slave ...` (-o: one line per device, `\` for its line breaks)
  const links: { name: string; lower?: string; master?: string; line: string }[] = [];
  for (const line of linkOutput.split('\n')) {
    const m = /^\d+:\s+([^:@\s]+)(?:@([^:\s]*))?:\s/.exec(line);
    if (m) links.push({ name: m[1]!, lower: m[2] || undefined, master: /\smaster\s+(\S+)/.exec(line)?.[1], line });
  }
  // A routed device's lower devices too (a VLAN's or macvlan's parent `name@lower`, a bond's members `master bond0`):
  // a packet socket writes on them as well, and the frames the stack sends through the upper device reach them with
  // the secret. Until 2026-12-04 only the routed devices were guarded: a frame written on the unrouted parent of a
  // routed macvlan left unseen (review48).
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
    if (!wanted.has(name) || /\slink\/loopback\s/.test(line) || /\sbridge_slave\s/.test(line)) continue;
    if (!DEVICE_NAME.test(name)) {
      unquotable.push(name);
      continue;
    }
    devices.push({ name, ethernet: /\slink\/ether\s/.test(line) });
  }
  return { devices, unquotable };
}

export interface FrameGuardOptions {
  mode: RulesMode;
  /** frameSecret(): what the stack's packets carry in their priority, and frames from a packet socket do not. */
  secret: number;
  devices: readonly GuardedDevice[];
  nflogGroup?: number;
}

const hex = (n: number) => `0x${(n >>> 0).toString(16).padStart(8, '0')}`;

/** One nft transaction (a file for `nft -f`, one command a line) that makes both tables. */
export function frameGuardScript(o: FrameGuardOptions): string {
  const t = FRAME_GUARD_TABLE;
  const group = o.nflogGroup ?? NFLOG_GROUP;
  const verdict = o.mode === 'block' ? 'drop' : 'accept';
  const secret = hex(o.secret & SECRET_MASK);
  const commands = [
    `add table inet ${t}`,
    // 500: after mangle (-150), NAT (100) and anything a runtime hooks at the usual priorities.
    `add chain inet ${t} stamp { type filter hook postrouting priority 500 ; policy accept ; }`,
    `add rule inet ${t} stamp meta priority set meta priority and 0xf or ${secret}`,
    `add table netdev ${t}`,
  ];
  o.devices.forEach((device, i) => {
    const chain = `device${i}`;
    const rule = (text: string) => commands.push(`add rule netdev ${t} ${chain} ${text}`);
    commands.push(`add chain netdev ${t} ${chain} { type filter hook egress device "${device.name}" priority 0 ; policy accept ; }`);
    rule(`meta priority and ${hex(SECRET_MASK)} == ${secret} accept`);
    if (device.ethernet) {
      // Address resolution has no IP hook to pass; it stays on the link.
      rule('ether type arp accept');
      // A DHCP client's discover and request on a packet socket (dhclient, systemd-networkd): to the limited
      // broadcast address, which no router forwards (the redirect rules let the same through, iptables-rules.ts).
      // Raw offsets from the frame's start: ether type, IPv4 without options, UDP, 255.255.255.255, ports 68 -> 67.
      rule('@ll,96,16 0x0800 @ll,112,8 0x45 @ll,184,8 17 @ll,240,32 0xffffffff @ll,272,16 68 @ll,288,16 67 accept');
    }
    const prefix = device.ethernet ? NFLOG_PREFIX.frame : NFLOG_PREFIX.frameIp;
    rule(`limit rate ${REPORTS_PER_SECOND}/second burst ${REPORTS_PER_SECOND * 2} packets log group ${group} prefix "${prefix}" ${verdict}`);
    rule('drop');
  });
  return `${commands.join('\n')}\n`;
}

/** The removal: each table, if there (nft's `destroy` is too new for Debian 12's nft, so the caller lists first). */
export function frameGuardRemoval(): { family: 'inet' | 'netdev'; table: string }[] {
  // The filter first: with the secret gone first, every packet of the stack would be dropped until the filter went too.
  return [
    { family: 'netdev', table: FRAME_GUARD_TABLE },
    { family: 'inet', table: FRAME_GUARD_TABLE },
  ];
}
