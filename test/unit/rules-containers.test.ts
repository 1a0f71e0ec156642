import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { CONTAINER_FORWARD_CHAIN, CONTAINER_INPUT_CHAIN, CONTAINER_NAT_CHAIN, containerApplyCommands, PRIVATE_V4, PRIVATE_V6 } from '../../rules/container-rules.js';
import { uplinksNamedLikeBridges } from '../../rules/docker-bridges.js';
import type { SidecarUser } from '../../action/sidecar-user.js';
import type { CommandResult } from '../../rules/run-rules.js';
import { BRIDGE_ROUTES_TABLE, bridgeRoutesCommands, STAYS_ON_BRIDGES_CONNMARK } from '../../rules/bridge-routes.js';
import { applyCommands, OWN_CONNECTION_MARK, RULES_SEEN_MARK } from '../../rules/iptables-rules.js';
import { applyContainerGuard, applyContainerRules, removeContainerRules } from '../../rules/run-container-rules.js';
import { NetworkTeardownError, restoreNetwork } from '../../action/network-teardown.js';
import { applyRedirectRules } from '../../action/redirect-rules.js';
import type { ActionLayout } from '../../action/layout.js';
import type { Privileged } from '../../action/privileged.js';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** What the action gives applyContainerRules (which finds out itself whether DOCKER-USER is to be made). */
const APPLY = { mode: 'block' as const, transparentPort: 3132, dnsPort: 3153 };
/** Docker made DOCKER-USER in iptables, not in ip6tables (its IPv6 support off). */
const OPTIONS = { ...APPLY, makeDockerUser: { 4: false, 6: true } };

/** The rules of one chain, as `iptables -S` would list them (without the -w). */
function chain(commands: ReturnType<typeof containerApplyCommands>, table: string, name: string): string[] {
  return commands
    .filter((c) => c.args.includes(table) && c.args[c.args.indexOf('-A') + 1] === name && c.args.includes('-A'))
    .map((c) => c.args.slice(c.args.indexOf('-A') + 2).join(' '));
}

const escape = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

describe('container rules (Docker bridges, IPv4)', () => {
  it('nat: from a bridge, DNS to any server and every TCP connection go to the container listeners; private and local destinations do not', () => {
    const nat = chain(containerApplyCommands(OPTIONS, 4), 'nat', CONTAINER_NAT_CHAIN);
    assert.deepEqual(nat, [
      `-d ${PRIVATE_V4} -j RETURN`,
      '-m addrtype --dst-type LOCAL -j RETURN',
      '-p udp --dport 53 -j REDIRECT --to-ports 3153',
      '-p tcp --dport 53 -j REDIRECT --to-ports 3153',
      '-p tcp -j REDIRECT --to-ports 3132',
    ]);
  });

  it('forward, block mode: bridge to bridge and flows a container opened pass; its answers to the outside and anything else new from a bridge are reported then refused', () => {
    const forward = chain(containerApplyCommands({ ...OPTIONS, bridges: ['docker0', 'br-+'] }, 4), 'filter', CONTAINER_FORWARD_CHAIN);
    assert.deepEqual(forward.slice(0, 5), [
      '-i docker0 -o docker0 -j RETURN',
      '-i docker0 -o br-+ -j RETURN',
      '-i br-+ -o docker0 -j RETURN',
      '-i br-+ -o br-+ -j RETURN',
      '-m conntrack --ctstate ESTABLISHED,RELATED --ctdir ORIGINAL -j RETURN',
    ]);
    for (const bridge of ['docker0', 'br-+']) {
      const own = forward.filter((r) => r.startsWith(`-i ${bridge} `) && !r.includes('-o '));
      // A container answering a connection an outside host opened (a published port): reported, refused.
      assert.match(own[0]!, new RegExp(`^-i ${escape(bridge)} -m conntrack --ctdir REPLY -m hashlimit .* -j NFLOG --nflog-group 4547 --nflog-prefix eg:ctr-reply$`));
      assert.equal(own[1], `-i ${bridge} -m conntrack --ctdir REPLY -j REJECT --reject-with icmp-admin-prohibited`);
      assert.match(own[2]!, /-m hashlimit .*--hashlimit-mode srcip,srcport,dstip,dstport .* -j NFLOG --nflog-group 4547 --nflog-prefix eg:ctr-out$/);
      assert.deepEqual(own.slice(3), [
        `-i ${bridge} -p tcp -j REJECT --reject-with tcp-reset`,
        `-i ${bridge} -p udp -j REJECT --reject-with icmp-port-unreachable`,
        `-i ${bridge} -j REJECT --reject-with icmp-admin-prohibited`,
      ]);
    }
  });

  it('forward, audit mode: reported, never refused', () => {
    const forward = chain(containerApplyCommands({ ...OPTIONS, mode: 'audit' }, 4), 'filter', CONTAINER_FORWARD_CHAIN);
    assert.ok(forward.some((r) => r.includes('NFLOG')));
    assert.ok(forward.some((r) => r.includes('--ctdir REPLY') && r.endsWith('--nflog-prefix eg:ctr-reply')));
    assert.ok(!forward.some((r) => r.includes('REJECT')));
  });

  it('input: only redirected connections reach the 0.0.0.0 listeners', () => {
    assert.deepEqual(chain(containerApplyCommands(OPTIONS, 4), 'filter', CONTAINER_INPUT_CHAIN), [
      '-p tcp --dport 3132 -m conntrack ! --ctstate DNAT -j DROP',
      '-p tcp --dport 3153 -m conntrack ! --ctstate DNAT -j DROP',
      '-p udp --dport 3153 -m conntrack ! --ctstate DNAT -j DROP',
    ]);
  });

  it('hooks come last, inserted first in their chains, one per bridge pattern (later bridges match the pattern)', () => {
    const commands = containerApplyCommands(OPTIONS, 4).map((c) => c.args.join(' '));
    const firstHook = commands.findIndex((c) => c.includes(' -I '));
    assert.ok(commands.slice(0, firstHook).every((c) => !c.includes(' -I ')));
    assert.deepEqual(commands.slice(firstHook), [
      `-w 5 -t filter -I INPUT 1 -j ${CONTAINER_INPUT_CHAIN}`,
      `-w 5 -t filter -I DOCKER-USER 1 -j ${CONTAINER_FORWARD_CHAIN}`,
      `-w 5 -t nat -I PREROUTING 1 -i docker0 -j ${CONTAINER_NAT_CHAIN}`,
      `-w 5 -t nat -I PREROUTING 1 -i br-+ -j ${CONTAINER_NAT_CHAIN}`,
    ]);
  });

  it('apply replaces an earlier copy; remove deletes hooks then chains and is idempotent', async () => {
    const { run, hooks, chains, nftTables } = fakeXtables();
    // Docker made DOCKER-USER in iptables, not in ip6tables (its IPv6 support off).
    const docker = ['iptables filter DOCKER-USER -j RETURN', 'iptables filter FORWARD -j DOCKER-USER'];
    chains.add('iptables filter DOCKER-USER');
    for (const rule of docker) hooks.add(rule);
    assert.deepEqual(await applyContainerRules(APPLY, run), { staysOnBridges: 'route', madeDockerUser: [6] });
    assert.deepEqual([...nftTables], [`inet ${BRIDGE_ROUTES_TABLE}`]);
    assert.equal(chains.size, 8, "three chains in iptables and three in ip6tables, Docker's DOCKER-USER and the one it had not made");
    assert.equal(hooks.size, 12);
    assert.ok(
      hooks.has(`iptables filter DOCKER-USER -j ${CONTAINER_FORWARD_CHAIN}`) && hooks.has(`ip6tables filter DOCKER-USER -j ${CONTAINER_FORWARD_CHAIN}`),
      'each family hooked in DOCKER-USER',
    );
    assert.ok(hooks.has('ip6tables filter FORWARD -j DOCKER-USER'), "FORWARD's jump made where the chain was not");
    assert.deepEqual(await applyContainerRules(APPLY, run), { staysOnBridges: 'route', madeDockerUser: [6] }, 'the chain an earlier apply made is made again');
    assert.equal(hooks.size, 12, 'a second apply doubled the hooks');
    const removed = await removeContainerRules(run);
    assert.equal(removed.length, 17);
    assert.equal(removed.at(-1), `nft inet ${BRIDGE_ROUTES_TABLE}`, 'the route lookup goes last, once no nat chain reads its mark');
    assert.equal(nftTables.size, 0);
    assert.deepEqual([...chains], ['iptables filter DOCKER-USER'], "Docker's chain stays");
    assert.deepEqual([...hooks].sort(), docker);
    assert.deepEqual(await removeContainerRules(run), []);
  });

  it('remove under the xtables lock (exit 4 on -C and -S) says so instead of taking the rules for gone; the route table stays', async () => {
    const { run, hooks, chains, failing, nftTables } = fakeXtables();
    await applyContainerRules(APPLY, run);
    failing.add('iptables -C');
    failing.add('iptables -S');
    await assert.rejects(removeContainerRules(run), /iptables .*-C .*could not tell \(exit 4\)/);
    assert.ok([...hooks].some((k) => k.startsWith('iptables ')) && [...chains].some((k) => k.startsWith('iptables ')), 'the IPv4 rules are still there');
    assert.ok(![...hooks, ...chains].some((k) => k.startsWith('ip6tables ')), 'the IPv6 rules are gone');
    assert.equal(nftTables.size, 1, 'the IPv4 nat chain may still read its mark');
    failing.clear();
    await removeContainerRules(run);
    assert.equal(chains.size + hooks.size + nftTables.size, 0);
  });

  it("remove: a family whose iptables fails does not keep the other family's rules in place", async () => {
    const { run, hooks, chains, failing } = fakeXtables();
    await applyContainerRules(APPLY, run);
    failing.add('iptables -D');
    await assert.rejects(removeContainerRules(run), /iptables .*-D .*failed \(exit 4\)/);
    assert.ok(![...hooks, ...chains].some((k) => k.startsWith('ip6tables ')), 'the IPv6 rules are gone');
    failing.clear();
    await removeContainerRules(run);
    assert.equal(chains.size + hooks.size, 0);
  });
});

describe('DOCKER-USER where Docker has not made it (a Docker started later keeps it ahead of its own FORWARD rules)', () => {
  it('made with its marker and a jump first in FORWARD; teardown removes the three', async () => {
    const commands = containerApplyCommands(OPTIONS, 6).map((c) => c.args.join(' '));
    const made = commands.indexOf('-w 5 -t filter -N DOCKER-USER');
    assert.deepEqual(commands.slice(made, made + 4), [
      '-w 5 -t filter -N DOCKER-USER',
      '-w 5 -t filter -A DOCKER-USER -m comment --comment egress-guard-made-this-chain -j RETURN',
      '-w 5 -t filter -I FORWARD 1 -j DOCKER-USER',
      `-w 5 -t filter -I DOCKER-USER 1 -j ${CONTAINER_FORWARD_CHAIN}`,
    ]);
    assert.ok(!containerApplyCommands(OPTIONS, 4).some((c) => c.args.includes('-N') && c.args.includes('DOCKER-USER')), 'not made where Docker made it');
    const { run, hooks, chains } = fakeXtables();
    await applyContainerRules(APPLY, run);
    const removed = await removeContainerRules(run);
    assert.ok(removed.includes('ip6tables filter DOCKER-USER'), removed.join('\n'));
    assert.equal(chains.size + hooks.size, 0);
  });

  it('a Docker that started since adopted it: only the marker goes, the chain and its jump stay', async () => {
    const { run, hooks, chains } = fakeXtables();
    await applyContainerRules(APPLY, run);
    // What Docker does when it finds the chain: a RETURN of its own (AddReturnRule), its DOCKER chain.
    hooks.add('ip6tables filter DOCKER-USER -j RETURN');
    chains.add('ip6tables filter DOCKER');
    await removeContainerRules(run);
    assert.deepEqual([...hooks].sort(), ['ip6tables filter DOCKER-USER -j RETURN', 'ip6tables filter FORWARD -j DOCKER-USER']);
    assert.deepEqual([...chains].sort(), ['ip6tables filter DOCKER', 'ip6tables filter DOCKER-USER']);
  });

  it('either sign of adoption alone keeps the chain: a rule of its own in it, or the DOCKER chain', async () => {
    // Each on its own: the test above adds both, and kept passing with only one of them heeded.
    for (const sign of ['a rule in DOCKER-USER', 'the DOCKER chain'] as const) {
      const { run, hooks, chains } = fakeXtables();
      await applyContainerRules(APPLY, run);
      if (sign === 'a rule in DOCKER-USER') hooks.add('ip6tables filter DOCKER-USER -j RETURN');
      else chains.add('ip6tables filter DOCKER');
      await removeContainerRules(run);
      assert.ok(chains.has('ip6tables filter DOCKER-USER'), `${sign}: the chain was removed`);
      assert.ok(hooks.has('ip6tables filter FORWARD -j DOCKER-USER'), `${sign}: FORWARD's jump was removed`);
      assert.ok(!chains.has('iptables filter DOCKER-USER'), `${sign}: the IPv4 chain, not adopted, stays`);
    }
  });

  it("main over an earlier apply's DOCKER-USER (a second main in the job, or one whose post never ran): the chain is made anew", async () => {
    // The chain an earlier apply made is no sign of Docker: apply removes it with the earlier copy, so it must be made
    // again (until 2026-12-02 main asked before that removal, found it, and then hooked into a chain no longer there:
    // block mode failed, audit mode went on with containers unfiltered).
    const { run, hooks, chains } = fakeXtables();
    const root = {
      run: (command: string, args: readonly string[]) => (command === 'node' ? Promise.resolve({ code: 0, stdout: 'applied', stderr: '' }) : run(command, args)),
    } as Privileged;
    const layout = { node: 'node', entry: 'egress-guard.js' } as ActionLayout;
    const user = { name: 'egress-guard', uid: 995, gid: 995 };
    for (const round of ['first', 'second']) {
      const outcome = await applyRedirectRules(root, layout, user, 'block');
      assert.deepEqual(outcome.warnings, [], round);
      assert.match(outcome.applied.join('\n'), /filtered first in DOCKER-USER \(made in iptables and ip6tables, where Docker had not made it yet\)/, round);
      for (const binary of ['iptables', 'ip6tables']) {
        assert.ok(chains.has(`${binary} filter DOCKER-USER`), `${round}: ${binary}`);
        for (const hook of ['FORWARD -j DOCKER-USER', `DOCKER-USER -j ${CONTAINER_FORWARD_CHAIN}`, 'DOCKER-USER -m comment --comment egress-guard-made-this-chain -j RETURN']) {
          assert.ok(hooks.has(`${binary} filter ${hook}`), `${round}: ${binary} ${hook}`);
        }
      }
    }
    await removeContainerRules(run);
    assert.equal(chains.size + hooks.size, 0);
  });

  it("an earlier version's hook in FORWARD is removed too", async () => {
    const { run, hooks } = fakeXtables();
    hooks.add(`iptables filter FORWARD -j ${CONTAINER_FORWARD_CHAIN}`);
    assert.deepEqual(await removeContainerRules(run), [`iptables filter FORWARD -j ${CONTAINER_FORWARD_CHAIN}`]);
  });
});

describe('what stays on the bridges: by route (nftables), else by the private ranges', () => {
  it('with the route lookup: the nat chain returns on its mark, private destinations are redirected (link-local IPv6 never)', async () => {
    const { run } = fakeXtables();
    assert.deepEqual(await applyContainerRules(APPLY, run), { staysOnBridges: 'route', madeDockerUser: [4, 6] });
    const route = { ...OPTIONS, staysOnBridges: 'route' as const };
    assert.deepEqual(chain(containerApplyCommands(route, 4), 'nat', CONTAINER_NAT_CHAIN).slice(0, 2), [
      `-m connmark --mark ${STAYS_ON_BRIDGES_CONNMARK} -j RETURN`,
      '-m addrtype --dst-type LOCAL -j RETURN',
    ]);
    assert.deepEqual(chain(containerApplyCommands(route, 6), 'nat', CONTAINER_NAT_CHAIN).slice(0, 3), [
      `-m connmark --mark ${STAYS_ON_BRIDGES_CONNMARK} -j RETURN`,
      '-d fe80::/10 -j RETURN',
      '-m addrtype --dst-type LOCAL -j RETURN',
    ]);
    assert.ok(![4, 6].some((f) => chain(containerApplyCommands(route, f as 4 | 6), 'nat', CONTAINER_NAT_CHAIN).some((r) => /10\.0\.0\.0|fc00::/.test(r))));
  });

  it('the mark: set on a new connection from each bridge pattern whose destination is routed out of one, or whose source is not routed back out of it, in nft patterns', () => {
    const rules = bridgeRoutesCommands(['docker0', 'br-+']).filter((c) => c.args[1] === 'rule');
    const setMark = 'ct mark set ct mark and 0xffff0000 or 0x4548';
    assert.deepEqual(
      rules.map((c) => c.args.slice(5).join(' ')),
      [
        ...[
          ['"docker0"', '"docker0"'],
          ['"docker0"', '"br-*"'],
          ['"br-*"', '"docker0"'],
          ['"br-*"', '"br-*"'],
        ].map(([from, to]) => `iifname ${from} ct state new fib daddr oifname ${to} ${setMark}`),
        // A bridge without an address of its own has no route to its subnet: its containers' connections to each other
        // are told by their source (e2e ways-out-containers).
        ...['"docker0"', '"br-*"'].map((from) => `iifname ${from} ct state new fib saddr . iif oif 0 ${setMark}`),
      ],
    );
    assert.equal(STAYS_ON_BRIDGES_CONNMARK, '0x4548/0xffff');
    assert.notEqual(STAYS_ON_BRIDGES_CONNMARK, OWN_CONNECTION_MARK, "not the mark of egress-guard's own connections");
  });

  it('where nft cannot (not installed, no fib): the private ranges, why in the result, nothing of nft left', async () => {
    const { run, nftTables } = fakeXtables();
    const failing = fakeXtables();
    failing.failing.add('nft');
    const applied = await applyContainerRules(APPLY, failing.run);
    assert.equal(applied.staysOnBridges, 'private-ranges');
    assert.match(applied.noRouteLookup ?? '', /nft add table .* failed \(exit 1\): Error: Could not process rule/);
    assert.equal(failing.nftTables.size, 0);
    assert.equal(failing.chains.size, 8, 'the iptables rules are applied all the same');
    await removeContainerRules(failing.run);
    assert.equal(failing.chains.size + failing.hooks.size, 0);
    // And a table of an earlier run is replaced, not doubled, when nft works.
    await applyContainerRules(APPLY, run);
    await applyContainerRules(APPLY, run);
    assert.equal(nftTables.size, 1);
  });

  it('`rules remove --family 4` keeps the table while the IPv6 nat chain still reads its mark', async () => {
    const { run, nftTables } = fakeXtables();
    await applyContainerRules(APPLY, run);
    await removeContainerRules(run, undefined, [4]);
    assert.equal(nftTables.size, 1);
    assert.deepEqual(await removeContainerRules(run, undefined, [6]).then((r) => r.at(-1)), `nft inet ${BRIDGE_ROUTES_TABLE}`);
    assert.equal(nftTables.size, 0);
  });
});

describe("the listeners' guard alone, when the rules for containers cannot be applied (audit mode)", () => {
  it('each family that can take it gets the INPUT guard and nothing else of ours', async () => {
    const { run, hooks, chains, failing } = fakeXtables();
    failing.add('ip6tables -N nat'); // e.g. no ip6 nat table
    await assert.rejects(applyContainerRules(APPLY, run), /ip6tables .*-N .*failed/);
    assert.equal(chains.size + hooks.size, 0, 'a failed apply leaves nothing (both families)');
    assert.deepEqual(await applyContainerGuard(APPLY, run), [4, 6]);
    assert.deepEqual([...chains].sort(), [`ip6tables filter ${CONTAINER_INPUT_CHAIN}`, `iptables filter ${CONTAINER_INPUT_CHAIN}`]);
    assert.deepEqual([...hooks].sort(), [`ip6tables filter INPUT -j ${CONTAINER_INPUT_CHAIN}`, `iptables filter INPUT -j ${CONTAINER_INPUT_CHAIN}`]);
    failing.clear();
    await removeContainerRules(run);
    assert.equal(chains.size + hooks.size, 0, 'teardown removes the guard');
  });

  it('a family that cannot take the guard either is left without any rule of ours', async () => {
    const { run, hooks, chains, failing } = fakeXtables();
    failing.add('ip6tables -I filter INPUT');
    assert.deepEqual(await applyContainerGuard(APPLY, run), [4]);
    assert.ok(![...hooks, ...chains].some((k) => k.startsWith('ip6tables ')));
    assert.ok(hooks.has(`iptables filter INPUT -j ${CONTAINER_INPUT_CHAIN}`));
  });
});

describe("a runner whose uplink is named like a Docker bridge (OpenStack's br-ex)", () => {
  it('found in the default routes of either family; docker0 and br-* only', () => {
    const routes = [
      'default via 203.0.113.1 dev br-ex proto static',
      'default via 2001:db8::1 dev eth0 proto ra metric 100 pref medium',
      'default dev docker0 scope link',
      '203.0.113.0/24 dev br-lan proto kernel scope link src 203.0.113.7',
      'default via 198.51.100.1 dev br0',
    ].join('\n');
    assert.deepEqual(uplinksNamedLikeBridges(routes), ['br-ex', 'docker0']);
    assert.deepEqual(uplinksNamedLikeBridges('default via 198.51.100.1 dev eth0 proto dhcp src 198.51.100.9 metric 100\n'), []);
  });

  it('every nexthop of a multipath default, and the default routes of every table', () => {
    // As `ip -o route show table all default` prints them (iproute2 6.1, in a namespace): a multipath default is one
    // line with its nexthops after `\\` and a tab; another table's default ends with `table N`.
    const routes = [
      'default \\\tnexthop via 198.51.100.1 dev eth0 weight 1 \\\tnexthop via 203.0.113.1 dev br-ex weight 1 ',
      'default via 2001:db8:1::1 dev br-int table 100 metric 1024 pref medium',
      'unreachable default dev lo table 10 metric 4278198272',
    ].join('\n');
    assert.deepEqual(uplinksNamedLikeBridges(routes), ['br-ex', 'br-int']);
  });

  it('the action applies no rule for containers there: block mode stops, audit mode warns and closes their listeners', async () => {
    const routed = (xtables: ReturnType<typeof fakeXtables>) =>
      ({
        run: async (binary: string, args: readonly string[]) => {
          if (binary === 'node') return { code: 0, stdout: 'egress-guard rules applied', stderr: '' };
          // Its default in a table of its own (policy routing): seen only when every table is read.
          if (binary === 'ip')
            return { code: 0, stdout: args.includes('-6') || !args.includes('all') ? '' : 'default via 203.0.113.1 dev br-ex table 100 proto static\n', stderr: '' };
          return xtables.run(binary, args);
        },
      }) as unknown as Privileged;
    const layout = { node: 'node', entry: 'egress-guard.js' } as ActionLayout;
    const user = { uid: 995 } as SidecarUser;
    const block = fakeXtables();
    await assert.rejects(applyRedirectRules(routed(block), layout, user, 'block'), /uplink br-ex is named like a Docker bridge/);
    assert.equal(block.chains.size + block.nftTables.size, 0, 'block mode applied nothing for containers');
    const audit = fakeXtables();
    const outcome = await applyRedirectRules(routed(audit), layout, user, 'audit');
    assert.match(outcome.warnings.join('\n'), /uplink br-ex is named like a Docker bridge.*audit mode goes on/);
    assert.deepEqual([...audit.chains].sort(), [`ip6tables filter ${CONTAINER_INPUT_CHAIN}`, `iptables filter ${CONTAINER_INPUT_CHAIN}`], 'the guard alone');
  });

  it('where the routes cannot be read (no `ip`), the uplink is unknown: block mode stops, audit mode warns', async () => {
    const noIp = (xtables: ReturnType<typeof fakeXtables>) =>
      ({
        run: async (binary: string, args: readonly string[]) => {
          if (binary === 'node') return { code: 0, stdout: 'egress-guard rules applied', stderr: '' };
          if (binary === 'ip') return { code: 127, stdout: '', stderr: 'spawn ip ENOENT' };
          return xtables.run(binary, args);
        },
      }) as unknown as Privileged;
    const layout = { node: 'node', entry: 'egress-guard.js' } as ActionLayout;
    const user = { uid: 995 } as SidecarUser;
    const block = fakeXtables();
    await assert.rejects(applyRedirectRules(noIp(block), layout, user, 'block'), /default routes could not be read \(ip route: exit 127: spawn ip ENOENT\)/);
    assert.equal(block.chains.size + block.nftTables.size, 0, 'block mode applied nothing for containers');
    const audit = fakeXtables();
    const outcome = await applyRedirectRules(noIp(audit), layout, user, 'audit');
    assert.match(outcome.warnings.join('\n'), /default routes could not be read.*audit mode goes on/);
    assert.deepEqual([...audit.chains].sort(), [`ip6tables filter ${CONTAINER_INPUT_CHAIN}`, `iptables filter ${CONTAINER_INPUT_CHAIN}`], 'the guard alone');
  });
});

describe('network teardown (action/network-teardown.ts)', () => {
  it('the container rules are removed even when the host rules cannot be, and the error names what was left', async () => {
    const { run, hooks, chains, failing } = fakeXtables();
    await applyContainerRules(APPLY, run);
    // The host rules' jump in nat OUTPUT, as `rules apply` leaves it, and its removal failing (the xtables lock held).
    hooks.add('iptables nat OUTPUT -j EGRESS_GUARD_NAT');
    failing.add('iptables -D nat OUTPUT');
    const layout = { savedResolvConf: join(tmpdir(), `eg-no-saved-resolv-${process.pid}`) } as ActionLayout;
    const root = {} as Privileged;
    const err = await restoreNetwork(root, layout, run).then(
      () => assert.fail('the teardown said it undid everything'),
      (e: unknown) => e,
    );
    assert.ok(err instanceof NetworkTeardownError);
    assert.match(err.failed.join(), /^the redirect rules: /);
    assert.ok(
      err.done.some((d) => d.includes(CONTAINER_FORWARD_CHAIN)),
      err.message,
    );
    assert.ok(![...hooks, ...chains].some((k) => k.includes('EGRESS_GUARD_CTR')), 'no rule for containers is left');
  });

  it('the host rules\' check under the xtables lock (exit 4 on -C) is a failure, not "nothing to remove"', async () => {
    const { run, hooks, failing } = fakeXtables();
    hooks.add('iptables nat OUTPUT -j EGRESS_GUARD_NAT');
    failing.add('iptables -C nat OUTPUT');
    const layout = { savedResolvConf: join(tmpdir(), `eg-no-saved-resolv-${process.pid}`) } as ActionLayout;
    const err = await restoreNetwork({} as Privileged, layout, run).then(
      () => assert.fail('the teardown said it undid everything'),
      (e: unknown) => e,
    );
    assert.ok(err instanceof NetworkTeardownError);
    assert.match(err.failed.join(), /^the redirect rules: iptables .*-C OUTPUT -j EGRESS_GUARD_NAT could not tell \(exit 4\)/);
    assert.ok(hooks.has('iptables nat OUTPUT -j EGRESS_GUARD_NAT'));
  });
});

const BUILT_IN_CHAINS = new Set(['INPUT', 'FORWARD', 'OUTPUT', 'PREROUTING', 'POSTROUTING']);

/**
 * A fake iptables/ip6tables holding which hooks and chains exist; `failing` holds "binary op [table chain]" prefixes
 * that exit 4. nft: its tables (`nft` in `failing` makes every nft command fail, as where it is not installed).
 */
function fakeXtables() {
  const hooks = new Set<string>();
  const chains = new Set<string>();
  const failing = new Set<string>();
  const nftTables = new Set<string>();
  const nftRules: string[] = [];
  const ok = (code: number): CommandResult => ({ code, stdout: '', stderr: code === 0 ? '' : 'Another app is currently holding the xtables lock' });
  const run = async (binary: string, args: readonly string[]): Promise<CommandResult> => {
    if (binary === 'nft') {
      if (failing.has('nft')) return { code: 1, stdout: '', stderr: 'Error: Could not process rule: No such file or directory' };
      const [verb, kind, family, table] = args;
      const name = `${family} ${table}`;
      if (kind === 'table' && verb === 'list') return ok(nftTables.has(name) ? 0 : 1);
      if (kind === 'table' && verb === 'add') nftTables.add(name);
      else if (kind === 'table' && verb === 'delete') nftTables.delete(name);
      else if (!nftTables.has(name)) return ok(1);
      else if (kind === 'rule') nftRules.push(args.slice(5).join(' '));
      return ok(0);
    }
    const [, table, op, name, ...rest] = args.slice(2);
    if ([...failing].some((f) => `${binary} ${op} ${table} ${name}`.startsWith(f))) return ok(4);
    const key = `${binary} ${table} ${name} ${rest.filter((x) => x !== '1').join(' ')}`;
    // As iptables: no chain made twice, no rule into a chain that is not there.
    const noChain: CommandResult = { code: 1, stdout: '', stderr: 'iptables: No chain/target/match by that name.' };
    if (op === '-N' && chains.has(`${binary} ${table} ${name}`)) return { code: 1, stdout: '', stderr: 'iptables: Chain already exists.' };
    if ((op === '-I' || op === '-A') && !BUILT_IN_CHAINS.has(name ?? '') && !chains.has(`${binary} ${table} ${name}`)) return noChain;
    if (op === '-N') chains.add(`${binary} ${table} ${name}`);
    else if (op === '-X') chains.delete(`${binary} ${table} ${name}`);
    else if (op === '-F') return ok(chains.has(`${binary} ${table} ${name}`) ? 0 : 1);
    else if (op === '-S') {
      if (!chains.has(`${binary} ${table} ${name}`)) return ok(1);
      const rules = [...hooks].filter((h) => h.startsWith(`${binary} ${table} ${name} `)).map((h) => `-A ${name} ${h.slice(`${binary} ${table} ${name} `.length)}`);
      return { code: 0, stdout: [`-N ${name}`, ...rules].join('\n') + '\n', stderr: '' };
    } else if (op === '-I' || (op === '-A' && name === 'DOCKER-USER')) hooks.add(key);
    else if (op === '-C') return ok(hooks.has(key) ? 0 : 1);
    else if (op === '-D') hooks.delete(key);
    return ok(0);
  };
  return { run, hooks, chains, failing, nftTables, nftRules };
}

describe('container rules (Docker bridges, IPv6)', () => {
  const v6 = containerApplyCommands(OPTIONS, 6);

  it('every command is ip6tables, and hooks into its own DOCKER-USER', () => {
    assert.ok(v6.every((c) => c.binary === 'ip6tables'));
    assert.ok(v6.some((c) => c.args.join(' ') === `-w 5 -t filter -I DOCKER-USER 1 -j ${CONTAINER_FORWARD_CHAIN}`));
    assert.ok(!v6.some((c) => c.args.join(' ').includes(`FORWARD 1 -j ${CONTAINER_FORWARD_CHAIN}`)), 'never straight into FORWARD');
  });

  it('nat: unique local destinations stay, the rest is redirected as IPv4 is (to the [::] listeners)', () => {
    assert.deepEqual(chain(v6, 'nat', CONTAINER_NAT_CHAIN), [
      `-d ${PRIVATE_V6} -j RETURN`,
      '-m addrtype --dst-type LOCAL -j RETURN',
      '-p udp --dport 53 -j REDIRECT --to-ports 3153',
      '-p tcp --dport 53 -j REDIRECT --to-ports 3153',
      '-p tcp -j REDIRECT --to-ports 3132',
    ]);
  });

  it('forward, block mode: refused with ICMPv6 (ip6tables has no icmp-* reject types)', () => {
    const forward = chain(containerApplyCommands({ ...OPTIONS, bridges: ['docker0'] }, 6), 'filter', CONTAINER_FORWARD_CHAIN);
    assert.deepEqual(
      forward.filter((r) => r.includes('REJECT')),
      [
        '-i docker0 -m conntrack --ctdir REPLY -j REJECT --reject-with icmp6-adm-prohibited',
        '-i docker0 -p tcp -j REJECT --reject-with tcp-reset',
        '-i docker0 -p udp -j REJECT --reject-with icmp6-port-unreachable',
        '-i docker0 -j REJECT --reject-with icmp6-adm-prohibited',
      ],
    );
    assert.ok(!forward.some((r) => /icmp-(admin|port)/.test(r)));
  });

  it('input: the same guard of the [::] listeners', () => {
    assert.deepEqual(chain(v6, 'filter', CONTAINER_INPUT_CHAIN), chain(containerApplyCommands(OPTIONS, 4), 'filter', CONTAINER_INPUT_CHAIN));
  });
});

describe('conntrack marks: the host rules, the container rules and the route lookup never overwrite each other', () => {
  /** value/mask of an iptables mark argument (`0x4547/0xffff`); no mask is all 32 bits. */
  const parse = (mark: string) => {
    const [value, mask = '0xffffffff'] = mark.split('/');
    return { value: Number(value), mask: Number(mask) };
  };

  it("RULES_SEEN_MARK's bit is outside the low 16 bits the other two marks use as values", () => {
    const seen = parse(RULES_SEEN_MARK);
    assert.equal(seen.value & ~seen.mask, 0);
    for (const other of [parse(OWN_CONNECTION_MARK), parse(STAYS_ON_BRIDGES_CONNMARK)]) {
      assert.equal(seen.mask & other.mask, 0, `${RULES_SEEN_MARK} against ${other.value.toString(16)}/${other.mask.toString(16)}`);
      assert.equal(other.value & ~other.mask, 0);
    }
  });

  it('every connmark rule (set or match) in either family, mode and option carries a mask, so the bit set in filter OUTPUT never spoils a match', () => {
    const host = [
      ...applyCommands({ uid: 995, mode: 'block', transparentPort: 3129, dnsPort: 53 }),
      ...applyCommands({ uid: 995, mode: 'audit', transparentPort: 3129, dnsPort: 53, socketMark: 0x5eed1e55 }),
    ];
    const containers = ([4, 6] as const).flatMap((family) => containerApplyCommands({ ...OPTIONS, staysOnBridges: 'route' }, family));
    const marks = [...host, ...containers].flatMap((c) =>
      c.args.flatMap((arg, i) => ((arg === '--mark' && c.args.slice(0, i).includes('connmark')) || (arg === '--set-xmark' && c.args.includes('CONNMARK')) ? [c.args[i + 1]!] : [])),
    );
    assert.ok(marks.includes(RULES_SEEN_MARK) && marks.includes(OWN_CONNECTION_MARK) && marks.includes(STAYS_ON_BRIDGES_CONNMARK), marks.join(' '));
    for (const mark of marks) assert.match(mark, /^0x[0-9a-f]+\/0x[0-9a-f]+$/, mark);
    // The route lookup (nftables) keeps every bit outside its own mask, RULES_SEEN_MARK's too.
    const keep = /ct mark set ct mark and (0x[0-9a-f]+) or /.exec(bridgeRoutesCommands(['docker0']).at(-1)!.args.join(' '))?.[1];
    assert.equal(Number(keep) & parse(RULES_SEEN_MARK).mask, parse(RULES_SEEN_MARK).mask);
  });
});
