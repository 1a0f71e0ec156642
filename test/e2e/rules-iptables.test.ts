import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { after, before, describe, test } from 'node:test';
import { applyCommands, FILTER_CHAIN, formatCommands, NAT_CHAIN, onLinkPrefixes, parseInboundPort, type RuleCommand } from '../../rules/iptables-rules.js';
import { uidOfUser } from '../../rules/user-id.js';
import { CONTAINER_FORWARD_CHAIN } from '../../rules/container-rules.js';
import { applyContainerRules } from '../../rules/run-container-rules.js';
import { BRIDGE_ROUTES_TABLE } from '../../rules/bridge-routes.js';
import { FRAME_GUARD_TABLE } from '../../rules/frame-guard.js';
import type { CommandRunner } from '../../rules/run-rules.js';
import { run } from './netns.js';

const options = { uid: 995, mode: 'block' as const, transparentPort: 3129, dnsPort: 53 };
const line = (c: RuleCommand) => `${c.binary} ${c.args.join(' ')}`;

describe('rule generation (pure)', () => {
  test('both families, own chains, uid exemption first, jumps appended last', () => {
    const commands = applyCommands(options).map(line);
    for (const binary of ['iptables', 'ip6tables']) {
      const own = commands.filter((c) => c.startsWith(`${binary} `));
      assert.ok(own.includes(`${binary} -w 5 -t nat -N ${NAT_CHAIN}`));
      assert.ok(own.includes(`${binary} -w 5 -t filter -N ${FILTER_CHAIN}`));
      assert.equal(own.at(-2), `${binary} -w 5 -t nat -A OUTPUT -j ${NAT_CHAIN}`);
      assert.equal(own.at(-1), `${binary} -w 5 -t filter -A OUTPUT -j ${FILTER_CHAIN}`);
      const nat = own.filter((c) => c.includes(`-A ${NAT_CHAIN} `));
      assert.match(nat[0]!, /-m owner --uid-owner 995 -j CONNMARK --set-xmark 0x4547\/0xffff$/);
      assert.match(nat[1]!, /-m owner --uid-owner 995 -j RETURN$/);
      // Packets of the job on a connection egress-guard opened are refused before ESTABLISHED traffic returns.
      const filter = own.filter((c) => c.includes(`-A ${FILTER_CHAIN} `));
      // First, before anything returns: every connection whose first packet the chain sees gets RULES_SEEN_MARK's bit
      // (masked, so the low 16 bits of OWN_CONNECTION_MARK set in nat OUTPUT stay as they are).
      assert.match(filter[0]!, /-m conntrack --ctstate NEW -j CONNMARK --set-xmark 0x10000\/0x10000$/);
      assert.match(filter[1]!, /-m owner --uid-owner 995 -j RETURN$/);
      assert.match(filter[2]!, /-m connmark --mark 0x4547\/0xffff -m conntrack --ctdir ORIGINAL .*-j NFLOG --nflog-group 4547 --nflog-prefix eg:own --nflog-threshold 1$/);
      assert.match(filter[3]!, /-m connmark --mark 0x4547\/0xffff -m conntrack --ctdir ORIGINAL -j REJECT$/);
      // A connection open before the rules: reported (never refused) after loopback and redirected connections have
      // returned, right before the ESTABLISHED exemption that lets it through.
      const established = filter.findIndex((c) => c.includes('ESTABLISHED,RELATED --ctdir ORIGINAL -j RETURN'));
      assert.ok(established > 3);
      assert.match(
        filter[established - 1]!,
        /-m conntrack --ctstate ESTABLISHED --ctdir ORIGINAL -m connmark ! --mark 0x10000\/0x10000 -m hashlimit .*--hashlimit-name eg-pre -j NFLOG --nflog-group 4547 --nflog-prefix eg:pre --nflog-threshold 1$/,
      );
      for (const earlier of [' -o lo -j RETURN', '--ctstate DNAT --ctdir ORIGINAL -j RETURN']) assert.ok(filter.findIndex((c) => c.includes(earlier)) < established - 1, earlier);
      assert.equal(filter.filter((c) => c.includes('0x10000')).length, 2, 'the bit is set once and read once');
      // TCP from its SYN only: a first packet without one is a connection conntrack picked up mid-stream (open before the
      // rules), which the listener could only reset.
      assert.match(nat.at(-1)!, /-p tcp --syn -j REDIRECT --to-ports 3129$/);
      assert.ok(nat.some((c) => /-p udp --dport 53 -j REDIRECT --to-ports 53$/.test(c)));
      assert.ok(nat.some((c) => /-p tcp --syn --dport 53 -j REDIRECT --to-ports 53$/.test(c)));
      assert.ok(!nat.some((c) => c.includes('-p tcp') && c.includes('REDIRECT') && !c.includes('--syn')));
      // Nothing but our own chains is created, and nothing is ever flushed or inserted.
      assert.ok(!own.some((c) => / -[FIXP] /.test(c)));
    }
  });

  test('with a socket mark, the uid is exempt only together with the mark, in nat and filter alike', () => {
    const commands = applyCommands({ ...options, socketMark: 0x5eed1e55 }).map(line);
    const exempting = commands.filter((c) => c.includes('--uid-owner'));
    assert.equal(exempting.length, 6, 'CONNMARK and RETURN in nat, RETURN in filter, per family');
    for (const c of exempting) assert.match(c, /-m owner --uid-owner 995 -m mark --mark 0x5eed1e55 -j /);
  });

  test('block mode rejects other UDP and ICMP (fail fast); audit mode only logs', () => {
    const block = applyCommands(options)
      .map(line)
      .filter((c) => c.includes(`-A ${FILTER_CHAIN}`));
    assert.ok(block.some((c) => c.startsWith('iptables') && /-p udp -j REJECT --reject-with icmp-port-unreachable$/.test(c)));
    assert.ok(block.some((c) => c.startsWith('ip6tables') && /-j REJECT --reject-with icmp6-adm-prohibited$/.test(c)));
    // What block mode refuses is reported first (NFLOG), for the events.
    const firstReject = block.findIndex((c) => c.startsWith('iptables') && c.endsWith('-p tcp -j REJECT --reject-with tcp-reset'));
    assert.match(block[firstReject - 1]!, /-j NFLOG .*--nflog-prefix eg:out/);
    const audit = applyCommands({ ...options, mode: 'audit' })
      .map(line)
      .filter((c) => c.includes(`-A ${FILTER_CHAIN}`));
    assert.ok(!audit.some((c) => c.includes('REJECT') || c.includes('DROP')));
    assert.ok(audit.some((c) => c.includes('--nflog-prefix eg:out')));
    assert.ok(audit.some((c) => c.includes('--nflog-prefix eg:reply')));
    // Reports are limited per flow, never by one bucket a flood to a decoy could use up for every other flow.
    for (const rule of [...block, ...audit].filter((c) => c.includes('-j NFLOG'))) {
      assert.match(rule, /-m hashlimit --hashlimit-upto 1\/minute .*--hashlimit-mode srcip,srcport,dstip,dstport .*--hashlimit-name eg-(out|reply|own|pre) /, rule);
      assert.doesNotMatch(rule, / -m limit /, rule);
    }
  });

  test('IPv6 keeps neighbour discovery; print output is valid shell words', () => {
    const v6 = applyCommands(options)
      .map(line)
      .filter((c) => c.startsWith('ip6tables'));
    for (const type of ['133', '135', '136']) assert.ok(v6.some((c) => c.includes(`--icmpv6-type ${type} -d ff02::/16 -j RETURN`)));
    assert.match(formatCommands(applyCommands({ ...options, mode: 'audit' })), / --nflog-prefix eg:out --nflog-threshold 1\n/);
  });

  test('every exemption is scoped: DHCP to broadcast, neighbour discovery to the link, ESTABLISHED to what the job opened', () => {
    const filter = applyCommands({
      ...options,
      inboundPorts: [{ protocol: 'tcp', port: 22 }],
      onLink: { 6: [{ prefix: '2001:db8:1::/64', dev: 'egr0' }] },
      dhcpServers: ['168.63.129.16'],
    })
      .map(line)
      .filter((c) => c.includes(`-A ${FILTER_CHAIN}`));
    const returns = filter.filter((c) => c.endsWith('-j RETURN'));
    // Nothing returns on a DHCP port without a destination, and no ICMPv6 without one.
    for (const r of returns.filter((c) => /--sport (68|546)/.test(c))) assert.match(r, / -d \S+ /, r);
    assert.ok(returns.some((c) => c.startsWith('iptables') && c.includes('--sport 68 --dport 67 -d 255.255.255.255')));
    assert.ok(returns.some((c) => c.startsWith('iptables') && c.includes('--sport 68 --dport 67 -d 168.63.129.16')));
    assert.ok(!returns.some((c) => c.startsWith('ip6tables') && c.includes('168.63.129.16')));
    // Or neighbour solicitations/advertisements out through Docker's bridges only (a network made after apply).
    for (const r of returns.filter((c) => c.includes('ipv6-icmp'))) {
      assert.match(r, / -d (fe80::\/10|ff02::\/16|2001:db8:1::\/64) |-o (docker0|br-\+) -p ipv6-icmp --icmpv6-type 13[56] -j RETURN$/, r);
    }
    assert.equal(returns.filter((c) => / -o (docker0|br-\+) /.test(c)).length, 4, 'types 135 and 136, docker0 and br-+');
    // To an on-link prefix only neighbour solicitations/advertisements, and only out through that link.
    const onLink = returns.filter((c) => c.includes('2001:db8:1::/64'));
    assert.deepEqual(
      onLink.map((c) => /--icmpv6-type (\d+)/.exec(c)?.[1]),
      ['135', '136'],
    );
    for (const r of onLink) assert.match(r, /-o egr0 /);
    const established = returns.filter((c) => c.includes('ESTABLISHED'));
    assert.ok(established.length > 0);
    for (const r of established) {
      if (r.includes('--ctdir REPLY')) assert.match(r, /-p tcp --sport 22 -m conntrack --ctstate ESTABLISHED --ctdir REPLY -j RETURN$/);
      else assert.match(r, /--ctdir ORIGINAL -j RETURN$/);
    }
    assert.equal(established.filter((c) => c.includes('--ctdir REPLY')).length, 2, 'one inbound rule per family');
  });

  test('inbound ports and on-link prefixes are parsed', () => {
    assert.deepEqual(parseInboundPort('22'), { protocol: 'tcp', port: 22 });
    assert.deepEqual(parseInboundPort('5353/udp'), { protocol: 'udp', port: 5353 });
    for (const bad of ['0', '70000', 'ssh', '22/sctp', '']) assert.equal(parseInboundPort(bad), undefined, bad);
    const routes = [
      '2001:db8:1::/64 dev egr0 proto kernel metric 256 pref medium',
      'fe80::/64 dev egr0 proto kernel metric 256 pref medium',
      'default via 2001:db8:1::1 dev egr0 metric 1024 pref medium',
      '2001:db8:9::/48 via 2001:db8:1::1 dev egr0 metric 1024 pref medium',
      'multicast ff00::/8 dev egr0 table local proto kernel metric 256 pref medium',
      // A VPN's routes: no gateway, but not links (a tunnel would carry neighbour discovery anywhere).
      '::/1 dev tun0 metric 1024 pref medium',
      '2000::/3 dev wg0 proto static metric 1024 pref medium',
      '2001:db8:77::/48 dev tun0 proto kernel metric 256 pref medium',
      'throw 2001:db8:66::/64 proto static metric 1024 pref medium',
    ].join('\n');
    assert.deepEqual(onLinkPrefixes(routes), [{ prefix: '2001:db8:1::/64', dev: 'egr0' }]);
  });

  test('uidOfUser reads passwd lines', () => {
    assert.equal(uidOfUser('egress-guard', 'root:x:0:0::/root:/bin/sh\negress-guard:x:995:995::/nonexistent:/usr/sbin/nologin\n'), 995);
    assert.equal(uidOfUser('nobody-here', 'root:x:0:0::/root:/bin/sh\n'), undefined);
  });
});

describe('apply and remove in a fresh network namespace', () => {
  const ns = `eg-rules-test-${process.pid}`;
  const cli = new URL('../helpers/rules-cli-fixture.js', import.meta.url).pathname;
  const inNs = (cmd: string, args: string[]) => execFileSync('ip', ['netns', 'exec', ns, cmd, ...args], { encoding: 'utf8' });
  const inNsRunner: CommandRunner = (binary, args) => run('ip', ['netns', 'exec', ns, binary, ...args]);
  const snapshot = () =>
    (inNs('iptables-save', []) + inNs('ip6tables-save', []))
      .split('\n')
      .filter((l) => !l.startsWith('#'))
      .join('\n');

  before(() => {
    execFileSync('ip', ['netns', 'add', ns]);
    inNs('ip', ['link', 'set', 'lo', 'up']);
    // What a container runtime leaves in nat/filter OUTPUT: must survive apply + remove untouched.
    for (const bin of ['iptables', 'ip6tables']) {
      inNs(bin, ['-t', 'nat', '-N', 'DOCKER']);
      inNs(bin, ['-t', 'nat', '-A', 'OUTPUT', '-m', 'addrtype', '--dst-type', 'LOCAL', '-j', 'DOCKER']);
      inNs(bin, ['-t', 'filter', '-N', 'DOCKER-USER']);
      inNs(bin, ['-t', 'filter', '-A', 'OUTPUT', '-j', 'DOCKER-USER']);
    }
  });
  after(() => {
    execFileSync('ip', ['netns', 'del', ns]);
  });

  test('apply (twice) then remove leaves iptables-save and ip6tables-save as they were', async () => {
    const before = snapshot();
    inNs(process.execPath, [cli, 'apply', '--uid', '995', '--mode', 'block']);
    inNs(process.execPath, [cli, 'apply', '--uid', '995', '--mode', 'audit']);
    const applied = snapshot();
    assert.equal(applied.split('\n').filter((l) => l === `-A OUTPUT -j ${NAT_CHAIN}`).length, 2, 'one nat jump per family after applying twice');
    assert.ok(!applied.includes('-j REJECT --reject-with tcp-reset'), 'the second apply replaced the first (audit)');
    assert.ok(applied.includes('-A OUTPUT -m addrtype --dst-type LOCAL -j DOCKER'));
    // The rules for containers, as the GitHub Action applies them beside the host's: `rules remove` takes them too.
    await applyContainerRules({ mode: 'block', transparentPort: 3132, dnsPort: 3153 }, inNsRunner);
    assert.ok(snapshot().includes(`-j ${CONTAINER_FORWARD_CHAIN}`));
    // With its route lookup in nftables (setup-test-host.sh installs nft), which `rules remove` takes too.
    assert.match(inNs('nft', ['list', 'tables']), new RegExp(`table inet ${BRIDGE_ROUTES_TABLE}`));
    inNs(process.execPath, [cli, 'remove']);
    assert.equal(snapshot(), before);
    assert.doesNotMatch(inNs('nft', ['list', 'tables']), new RegExp(BRIDGE_ROUTES_TABLE));
    // remove is idempotent
    assert.match(inNs(process.execPath, [cli, 'remove']), /no egress-guard rules/);
    assert.equal(snapshot(), before);
  });

  test('the frame guard: made on a routed device by apply, left out (and an earlier one removed) by --frame-guard off, taken by remove', () => {
    // A device with a route (a veth pair with both ends here: nothing leaves the namespace).
    inNs('ip', ['link', 'add', 'eg-fg0', 'type', 'veth', 'peer', 'name', 'eg-fg1']);
    inNs('ip', ['link', 'set', 'eg-fg0', 'up']);
    inNs('ip', ['addr', 'add', '198.51.100.9/24', 'dev', 'eg-fg0']);
    try {
      const frameTables = () =>
        inNs('nft', ['list', 'tables'])
          .split('\n')
          .filter((l) => l.includes(FRAME_GUARD_TABLE));
      assert.match(inNs(process.execPath, [cli, 'apply', '--uid', '995', '--mode', 'block']), /frames written on packet sockets \(AF_PACKET\) refused on lo, eg-fg0\n/);
      assert.deepEqual(frameTables(), [`table netdev ${FRAME_GUARD_TABLE}`]);
      // The routed device and lo (since review49: a frame written on lo comes back in and, where the namespace
      // forwards, leaves routed); not the peer, which has no route.
      const chains = inNs('nft', ['list', 'table', 'netdev', FRAME_GUARD_TABLE]);
      assert.match(chains, /hook egress device "eg-fg0"/);
      assert.match(chains, /hook egress device "lo"/);
      assert.doesNotMatch(chains, /eg-fg1/);
      assert.match(
        inNs(process.execPath, [cli, 'apply', '--uid', '995', '--mode', 'block', '--frame-guard', 'off']),
        /NOT guarded: --frame-guard off \(the earlier guard removed\)/,
      );
      assert.deepEqual(frameTables(), []);
      inNs(process.execPath, [cli, 'apply', '--uid', '995', '--mode', 'audit']);
      assert.equal(frameTables().length, 1);
      assert.match(inNs(process.execPath, [cli, 'remove']), new RegExp(`nft netdev ${FRAME_GUARD_TABLE}`));
      assert.deepEqual(frameTables(), []);
    } finally {
      inNs('ip', ['link', 'del', 'eg-fg0']);
    }
  });

  test('remove with a bad --family or an unknown flag exits 2 and removes nothing', () => {
    inNs(process.execPath, [cli, 'apply', '--uid', '995', '--mode', 'block']);
    const applied = snapshot();
    for (const bad of [['--family', '7'], ['--bogus']]) {
      assert.throws(
        () => inNs(process.execPath, [cli, 'remove', ...bad]),
        (err: { status?: number }) => err.status === 2,
        bad.join(' '),
      );
      assert.equal(snapshot(), applied, `rules still there after remove ${bad.join(' ')}`);
    }
    inNs(process.execPath, [cli, 'remove']);
    assert.ok(!snapshot().includes(NAT_CHAIN));
  });

  test("neighbour discovery is not exempt out through a bridge pattern the runner's uplink matches (br-ex), nor any where the routes cannot be read", () => {
    // An uplink named like a Docker bridge (OpenStack's br-ex), its IPv6 default route in a table of its own: the
    // exemption `-o br-+` to any address would let neighbour solicitations carry a raw socket's bytes to the internet.
    const peer = `eg-rules-peer-${process.pid}`;
    execFileSync('ip', ['netns', 'add', peer]);
    try {
      inNs('ip', ['link', 'add', 'br-ex', 'type', 'veth', 'peer', 'name', 'egr-peer', 'netns', peer]);
      inNs('ip', ['link', 'set', 'br-ex', 'up']);
      inNs('ip', ['-6', 'addr', 'add', '2001:db8:e::2/64', 'dev', 'br-ex', 'nodad']);
      inNs('ip', ['-6', 'route', 'add', 'default', 'via', '2001:db8:e::1', 'dev', 'br-ex', 'table', '100']);
      const printed = inNs(process.execPath, [cli, 'print', '--uid', '995', '--mode', 'block']);
      const bridgeReturns = printed.split('\n').filter((l) => / -o (docker0|br-\+) -p ipv6-icmp /.test(l));
      assert.deepEqual(
        bridgeReturns.map((l) => / -o (\S+) .*--icmpv6-type (\d+) /.exec(l)?.slice(1).join(' ')),
        ['docker0 135', 'docker0 136'],
        'docker0 only',
      );
      // The on-link prefix of br-ex keeps its own exemption, to that prefix only.
      assert.match(printed, /-o br-ex -p ipv6-icmp --icmpv6-type 135 -d 2001:db8:e::\/64 -j RETURN/);
      // Without `ip` on the PATH the routes cannot be read: no bridge is exempt.
      const noIp = execFileSync('ip', ['netns', 'exec', ns, 'env', 'PATH=/nonexistent', process.execPath, cli, 'print', '--uid', '995', '--mode', 'block'], {
        encoding: 'utf8',
      });
      assert.doesNotMatch(noIp, / -o (docker0|br-\+) -p ipv6-icmp /);
      assert.match(noIp, /--icmpv6-type 135 -d ff02::\/16 -j RETURN/, 'link-scope neighbour discovery still');
    } finally {
      execFileSync('ip', ['netns', 'del', peer]);
    }
  });

  test('apply refuses uid 0 (it would exempt the job)', () => {
    assert.throws(() => inNs(process.execPath, [cli, 'apply', '--uid', '0']), /Command failed/);
    assert.ok(!snapshot().includes(NAT_CHAIN));
  });
});
