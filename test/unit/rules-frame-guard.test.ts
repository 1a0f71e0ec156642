/**
 * rules/frame-guard.ts: which devices the guard against packet-socket frames covers (from `ip` output as this
 * machine's iproute2 prints it) and the nft transaction that makes it. The kernel's side is e2e ways-out.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { FRAME_GUARD_TABLE, frameGuardRemoval, frameGuardScript, guardedDevices } from '../../rules/frame-guard.js';

const LINKS = [
  '1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue state UNKNOWN mode DEFAULT group default qlen 1000\\    link/loopback 00:00:00:00:00:00 brd 00:00:00:00:00:00 promiscuity 0',
  '2: ifb0: <BROADCAST,NOARP> mtu 1500 qdisc noop state DOWN mode DEFAULT group default qlen 32\\    link/ether 16:0b:d7:1a:f1:57 brd ff:ff:ff:ff:ff:ff promiscuity 0 \\    ifb addrgenmode eui64',
  '4: eth0: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1400 qdisc pfifo_fast state UP mode DEFAULT group default qlen 1000\\    link/ether 02:fc:00:00:00:01 brd ff:ff:ff:ff:ff:ff promiscuity 0 parentbus virtio',
  '5: docker0: <NO-CARRIER,BROADCAST,MULTICAST,UP> mtu 1500 qdisc noqueue state DOWN mode DEFAULT group default\\    link/ether 02:42:ac:11:00:01 brd ff:ff:ff:ff:ff:ff promiscuity 0 \\    bridge forward_delay 1500',
  '7: veth1a2b@if6: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue master docker0 state UP mode DEFAULT group default\\    link/ether 6e:11:22:33:44:55 brd ff:ff:ff:ff:ff:ff link-netnsid 0 promiscuity 1 \\    veth \\    bridge_slave state forwarding priority 32',
  '8: wg0: <POINTOPOINT,NOARP,UP,LOWER_UP> mtu 1420 qdisc noqueue state UNKNOWN mode DEFAULT group default qlen 1000\\    link/none  promiscuity 0 \\    wireguard',
].join('\n');

const ROUTES = [
  'default via 198.51.100.1 dev eth0 proto dhcp src 198.51.100.7 metric 100',
  '172.17.0.0/16 dev docker0 proto kernel scope link src 172.17.0.1 linkdown',
  '203.0.113.0/24 dev wg0 scope link',
  'local 127.0.0.1 dev lo table local proto kernel scope host src 127.0.0.1',
  'fe80::/64 dev veth1a2b proto kernel metric 256 pref medium',
].join('\n');

test('guarded: every routed device and lo, but bridge ports; Ethernet or not told by its link type', () => {
  const { devices, unquotable } = guardedDevices(LINKS, ROUTES);
  assert.deepEqual(devices, [
    { name: 'lo', ethernet: true, loopback: true },
    { name: 'eth0', ethernet: true },
    { name: 'docker0', ethernet: true },
    { name: 'wg0', ethernet: false },
  ]);
  assert.deepEqual(unquotable, []);
  // ifb0 has no route: frames it sends are another device's, redirected by tc (inbound ones too); not guarded.
  assert.ok(!devices.some((d) => d.name === 'ifb0'));
});

test("the unrouted devices below a routed one are guarded: a macvlan's and a VLAN's parent, a bond's members (a packet socket writes on them too)", () => {
  // As iproute2 prints them (the macvlan pair from a probe namespace, 2026-12-04; review48): only mv0, eth0.100 and
  // bond0 are routed. A frame written on eth2 left unseen while only routed devices were guarded.
  const links = [
    '8: eth2@if7: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP mode DEFAULT group default qlen 1000\\    link/ether fe:87:ca:4c:99:f1 brd ff:ff:ff:ff:ff:ff link-netns egr-gw promiscuity 1  allmulti 0 \\    veth addrgenmode eui64',
    '9: mv0@eth2: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP mode DEFAULT group default qlen 1000\\    link/ether 06:a8:5f:6b:17:a7 brd ff:ff:ff:ff:ff:ff promiscuity 0  allmulti 0 \\    macvlan mode bridge bcqueuelen 1000',
    '10: eth1: <BROADCAST,MULTICAST,SLAVE,UP,LOWER_UP> mtu 1500 qdisc fq_codel master bond0 state UP mode DEFAULT group default qlen 1000\\    link/ether 02:00:00:00:00:0a brd ff:ff:ff:ff:ff:ff promiscuity 0 \\    bond_slave state ACTIVE',
    '11: bond0: <BROADCAST,MULTICAST,MASTER,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP mode DEFAULT group default qlen 1000\\    link/ether 02:00:00:00:00:0a brd ff:ff:ff:ff:ff:ff promiscuity 0 \\    bond mode active-backup',
    '12: eth0.100@bond0: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP mode DEFAULT group default qlen 1000\\    link/ether 02:00:00:00:00:0a brd ff:ff:ff:ff:ff:ff promiscuity 0 \\    vlan protocol 802.1Q id 100 <REORDER_HDR>',
    '13: eth3: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc fq_codel state UP mode DEFAULT group default qlen 1000\\    link/ether 02:00:00:00:00:0d brd ff:ff:ff:ff:ff:ff promiscuity 0',
  ].join('\n');
  const routes = ['2001:db8:77::/64 dev mv0 proto kernel metric 256 pref medium', '198.51.100.0/24 dev eth0.100 proto kernel scope link src 198.51.100.2'].join('\n');
  const { devices } = guardedDevices(links, routes);
  assert.deepEqual(
    devices.map((d) => d.name),
    ['eth2', 'mv0', 'eth1', 'bond0', 'eth0.100'],
    'eth2 below mv0; bond0 below eth0.100 and eth1 a member of bond0; eth3, unrouted and below nothing routed, not',
  );
});

test("a veth's peer in the same namespace is no device below it", () => {
  const links = [
    '5: eg-fg1@eg-fg0: <BROADCAST,MULTICAST,M-DOWN> mtu 1500 qdisc noop state DOWN mode DEFAULT group default qlen 1000\\    link/ether 5a:1e:2b:3c:4d:5e brd ff:ff:ff:ff:ff:ff promiscuity 0 \\    veth addrgenmode eui64',
    '6: eg-fg0@eg-fg1: <NO-CARRIER,BROADCAST,MULTICAST,UP,M-DOWN> mtu 1500 qdisc noqueue state LOWERLAYERDOWN mode DEFAULT group default qlen 1000\\    link/ether 6a:1e:2b:3c:4d:5f brd ff:ff:ff:ff:ff:ff promiscuity 0 \\    veth addrgenmode eui64',
  ].join('\n');
  assert.deepEqual(guardedDevices(links, '198.51.100.0/24 dev eg-fg0 proto kernel scope link src 198.51.100.9').devices, [{ name: 'eg-fg0', ethernet: true }]);
});

test('a device name nft cannot be given quoted is left out and named', () => {
  const { devices, unquotable } = guardedDevices(`9: we"ird: <UP> mtu 1500\\    link/ether 02:00:00:00:00:09 brd ff:ff:ff:ff:ff:ff`, 'default via 198.51.100.1 dev we"ird');
  assert.deepEqual(devices, []);
  assert.deepEqual(unquotable, ['we"ird']);
});

test('the nft transaction: one netdev table; per device what was routed accepted, ARP and DHCP broadcast, a bounded report', () => {
  const block = frameGuardScript({
    mode: 'block',
    devices: [
      { name: 'eth0', ethernet: true },
      { name: 'wg0', ethernet: false },
    ],
    nflogGroup: 77,
  });
  const commands = block.trimEnd().split('\n');
  assert.equal(commands[0], `add table netdev ${FRAME_GUARD_TABLE}`);
  assert.ok(!block.includes('inet') && !block.includes('priority set') && !block.includes('mark'), "nothing stamped on the stack's packets");
  const eth0 = commands.filter((c) => c.includes(' device0'));
  assert.match(eth0[0]!, /hook egress device "eth0"/);
  assert.deepEqual(
    eth0.slice(1).map((c) => c.replace(/^add rule netdev \S+ device0 /, '')),
    [
      'meta rtclassid 0-4294967295 accept',
      'ether type arp accept',
      '@ll,96,16 0x0800 @ll,112,8 0x45 @ll,184,8 17 @ll,240,32 0xffffffff @ll,272,16 68 @ll,288,16 67 accept',
      '@ll,96,16 { 0x8100, 0x88a8 } @ll,128,16 0x0806 accept',
      '@ll,96,16 { 0x8100, 0x88a8 } @ll,128,16 0x0800 @ll,144,8 0x45 @ll,216,8 17 @ll,272,32 0xffffffff @ll,304,16 68 @ll,320,16 67 accept',
      'ether daddr 01:80:c2:00:00:02 ether type 0x8809 accept',
      'limit rate 50/second burst 100 packets log group 77 prefix "eg:frame" drop',
      'drop',
    ],
  );
  const wg0 = commands.filter((c) => c.startsWith(`add rule netdev ${FRAME_GUARD_TABLE} device1 `)).map((c) => c.replace(/^add rule netdev \S+ device1 /, ''));
  assert.deepEqual(wg0, ['meta rtclassid 0-4294967295 accept', 'limit rate 50/second burst 100 packets log group 77 prefix "eg:frame-ip" drop', 'drop']);
  // Audit mode passes what it reported; what is past the reports' rate is dropped all the same (never passed unseen).
  const audit = frameGuardScript({ mode: 'audit', devices: [{ name: 'eth0', ethernet: true }] })
    .trimEnd()
    .split('\n');
  assert.ok(audit.includes(`add rule netdev ${FRAME_GUARD_TABLE} device0 limit rate 50/second burst 100 packets log group 4547 prefix "eg:frame" accept`));
  assert.equal(audit.at(-1), `add rule netdev ${FRAME_GUARD_TABLE} device0 drop`);
});

test('review49: lo is guarded, whether or not a route names it (a frame written on it comes back in and is forwarded)', () => {
  const lo = LINKS.split('\n')[0]!;
  // A namespace whose lo is down has no local routes naming it; it is guarded all the same.
  assert.deepEqual(guardedDevices(lo, 'default via 198.51.100.1 dev eth0').devices, [{ name: 'lo', ethernet: true, loopback: true }]);
  // Its chain passes only what was routed: no ARP, DHCP or LACP to let through there; reported as an Ethernet frame.
  const rules = frameGuardScript({ mode: 'block', devices: [{ name: 'lo', ethernet: true, loopback: true }] })
    .trimEnd()
    .split('\n')
    .filter((c) => c.startsWith('add rule '))
    .map((c) => c.replace(/^add rule netdev \S+ device0 /, ''));
  assert.deepEqual(rules, ['meta rtclassid 0-4294967295 accept', 'limit rate 50/second burst 100 packets log group 4547 prefix "eg:frame" drop', 'drop']);
});

test("review49: every device a multipath route names is routed, not only the first hop's", () => {
  const links = [
    '3: eth0: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP mode DEFAULT group default qlen 1000\\    link/ether 02:00:00:00:00:01 brd ff:ff:ff:ff:ff:ff promiscuity 0',
    '4: eth1: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP mode DEFAULT group default qlen 1000\\    link/ether 02:00:00:00:00:02 brd ff:ff:ff:ff:ff:ff promiscuity 0',
  ].join('\n');
  // As `ip -o route` printed it in a probe namespace (review49): eth1 unnumbered, named by the second hop only.
  const routes = '192.0.2.0/24 \\\tnexthop via 198.51.100.20 dev eth0 weight 1 \\\tnexthop via 198.51.100.131 dev eth1 weight 1 onlink';
  assert.deepEqual(
    guardedDevices(links, routes).devices.map((d) => d.name),
    ['eth0', 'eth1'],
  );
});

test('removal: the one table', () => {
  assert.deepEqual(frameGuardRemoval(), [{ family: 'netdev', table: FRAME_GUARD_TABLE }]);
});
