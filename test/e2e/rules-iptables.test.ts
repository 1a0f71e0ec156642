import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { after, before, describe, test } from 'node:test';
import { applyCommands, FILTER_CHAIN, formatCommands, NAT_CHAIN, type RuleCommand } from '../../rules/iptables-rules.js';
import { uidOfUser } from '../../rules/user-id.js';

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
      assert.match(filter[1]!, /-m connmark --mark 0x4547\/0xffff -j REJECT$/);
      assert.ok(filter.findIndex((c) => c.includes('ESTABLISHED')) > 1);
      assert.match(nat.at(-1)!, /-p tcp -j REDIRECT --to-ports 3129$/);
      assert.ok(nat.some((c) => /-p udp --dport 53 -j REDIRECT --to-ports 53$/.test(c)));
      assert.ok(nat.some((c) => /-p tcp --dport 53 -j REDIRECT --to-ports 53$/.test(c)));
      // Nothing but our own chains is created, and nothing is ever flushed or inserted.
      assert.ok(!own.some((c) => / -[FIXP] /.test(c)));
    }
  });

  test('block mode rejects other UDP and ICMP (fail fast); audit mode only logs', () => {
    const block = applyCommands(options)
      .map(line)
      .filter((c) => c.includes(`-A ${FILTER_CHAIN}`));
    assert.ok(block.some((c) => c.startsWith('iptables') && /-p udp -j REJECT --reject-with icmp-port-unreachable$/.test(c)));
    assert.ok(block.some((c) => c.startsWith('ip6tables') && /-j REJECT --reject-with icmp6-adm-prohibited$/.test(c)));
    assert.ok(!block.some((c) => c.includes(' LOG ')));
    const audit = applyCommands({ ...options, mode: 'audit' })
      .map(line)
      .filter((c) => c.includes(`-A ${FILTER_CHAIN}`));
    assert.ok(!audit.some((c) => c.includes('REJECT') || c.includes('DROP')));
    assert.ok(audit.some((c) => c.includes('-j LOG')));
  });

  test('IPv6 keeps neighbour discovery; print output is valid shell words', () => {
    const v6 = applyCommands(options)
      .map(line)
      .filter((c) => c.startsWith('ip6tables'));
    for (const type of ['133', '135', '136']) assert.ok(v6.some((c) => c.includes(`--icmpv6-type ${type} -j RETURN`)));
    assert.match(formatCommands(applyCommands({ ...options, mode: 'audit' })), /--log-prefix 'egress-guard would-block: '/);
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

  test('apply (twice) then remove leaves iptables-save and ip6tables-save as they were', () => {
    const before = snapshot();
    inNs(process.execPath, [cli, 'apply', '--uid', '995', '--mode', 'block']);
    inNs(process.execPath, [cli, 'apply', '--uid', '995', '--mode', 'audit']);
    const applied = snapshot();
    assert.equal(applied.split('\n').filter((l) => l === `-A OUTPUT -j ${NAT_CHAIN}`).length, 2, 'one nat jump per family after applying twice');
    assert.ok(applied.includes('-j LOG'), 'the second apply replaced the first (audit)');
    assert.ok(applied.includes('-A OUTPUT -m addrtype --dst-type LOCAL -j DOCKER'));
    inNs(process.execPath, [cli, 'remove']);
    assert.equal(snapshot(), before);
    // remove is idempotent
    assert.match(inNs(process.execPath, [cli, 'remove']), /no egress-guard rules/);
    assert.equal(snapshot(), before);
  });

  test('apply refuses uid 0 (it would exempt the job)', () => {
    assert.throws(() => inNs(process.execPath, [cli, 'apply', '--uid', '0']), /Command failed/);
    assert.ok(!snapshot().includes(NAT_CHAIN));
  });
});
