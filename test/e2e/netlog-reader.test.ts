/**
 * `egress-guard rules log-reader`, the built-in NFLOG reader (native/nflog.c), where a machine has no ulogd (GitHub's
 * runner images): in a network namespace of its own, NFLOG rules as the redirect rules write them report UDP and a
 * TCP SYN; the reader writes ulogd's JSON lines; `run --netfilter-log` turns them into decision events. Also: a
 * second reader on the group is refused (exit 1, EPERM), SIGTERM ends the reader and removes its pid file; the reader
 * (root) never writes through a symlink; reports the kernel dropped are counted exactly (reports written + lost ==
 * packets the NFLOG rule matched) and reach `run` as a warning. Needs root.
 */
import assert from 'node:assert/strict';
import { existsSync, lstatSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, test } from 'node:test';
import { spawnInNamespace, type NamespaceProcess } from './namespace-process.js';
import { destroyNamespaceSync, must, run } from './netns.js';
import { waitFor } from '../helpers/wait-for.js';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const ns = `eg-nflogread-${process.pid}`;
const GROUP = 4601;
/** A group whose rule has no rate limit (the redirect rules' have one), to overflow the reader's queue. */
const FLOOD_GROUP = 4602;
const FLOOD_PORT = 9997;
const dir = mkdtempSync(path.join(tmpdir(), 'egress-guard-nflog-'));
const jsonFile = path.join(dir, 'nflog.json');
const pidFile = path.join(dir, 'reader.pid');
const started: NamespaceProcess[] = [];
const cli = `${JSON.stringify(process.execPath)} dist/egress-guard.js`;

before(async () => {
  await must('ip', ['netns', 'add', ns]);
  await must('ip', ['netns', 'exec', ns, 'ip', 'link', 'set', 'lo', 'up']);
  for (const tool of ['iptables', 'ip6tables']) {
    for (const match of [
      ['-p', 'udp', '--dport', '9999'],
      ['-p', 'tcp', '--dport', '9998', '--syn'],
    ]) {
      await must('ip', ['netns', 'exec', ns, tool, '-A', 'OUTPUT', ...match, '-j', 'NFLOG', '--nflog-group', String(GROUP), '--nflog-prefix', 'eg:out', '--nflog-threshold', '1']);
    }
  }
  await must('ip', [
    'netns',
    'exec',
    ns,
    'iptables',
    '-A',
    'OUTPUT',
    '-p',
    'udp',
    '--dport',
    String(FLOOD_PORT),
    '-j',
    'NFLOG',
    '--nflog-group',
    String(FLOOD_GROUP),
    '--nflog-prefix',
    'eg:out',
  ]);
});

after(() => {
  for (const child of started) child.kill();
  destroyNamespaceSync(ns);
  rmSync(dir, { recursive: true, force: true });
});

test('reports of UDP (IPv4, IPv6) and a TCP SYN become ulogd JSON lines, then decision events', { timeout: 90_000 }, async () => {
  const reader = spawnInNamespace(ns, `${cli} rules log-reader --json-file ${jsonFile} --nflog-group ${GROUP} --pid-file ${pidFile}`, repo);
  started.push(reader);
  await waitFor('the reader bound the group (its pid file)', () => existsSync(pidFile) || reader.child.exitCode !== null, 15_000);
  assert.equal(reader.child.exitCode, null, reader.stderr());
  // `ip netns exec` and `bash -c 'exec ...'` exec: the child is the reader itself.
  assert.equal(readFileSync(pidFile, 'utf8').trim(), String(reader.child.pid));

  const second = await run('ip', ['netns', 'exec', ns, 'bash', '-c', `exec ${cli} rules log-reader --json-file ${jsonFile}.2 --nflog-group ${GROUP}`], {
    cwd: repo,
    timeoutMs: 15_000,
  });
  assert.equal(second.code, 3, 'a second reader of the group is refused (exit 3: NFLOG_GROUP_REFUSED_EXIT)');
  assert.match(second.stderr, /EPERM|not permitted/);

  const guard = spawnInNamespace(ns, `${cli} run --dns-listen off --netfilter-log ${jsonFile}`, repo);
  started.push(guard);
  await guard.waitFor('the proxy listening', (l) => l.msg === 'listening' && l.listener === 'proxy');

  const send = `const d = require('dgram'); const net = require('net');
    const v4 = d.createSocket('udp4'); v4.send('secret', 9999, '127.0.0.1', () => v4.close());
    const v6 = d.createSocket('udp6'); v6.send('secret', 9999, '::1', () => v6.close());
    net.connect(9998, '127.0.0.1').on('error', () => {});`;
  const sent = await run('ip', ['netns', 'exec', ns, process.execPath, '-e', send], { timeoutMs: 15_000 });
  assert.equal(sent.code, 0, sent.stderr);

  const udp4 = await guard.waitFor('the IPv4 UDP decision', (l) => l.event === 'decision' && l.kind === 'udp' && l.host === '127.0.0.1' && l.port === 9999);
  assert.deepEqual([udp4.decision, udp4.reason], ['would-block', 'not-proxied']);
  await guard.waitFor('the IPv6 UDP decision', (l) => l.event === 'decision' && l.kind === 'udp' && l.host === '::1' && l.port === 9999);
  await guard.waitFor('the TCP SYN decision', (l) => l.event === 'decision' && l.kind === 'tcp' && l.port === 9998);

  const lines = readFileSync(jsonFile, 'utf8')
    .trim()
    .split('\n')
    .map((line) => JSON.parse(line) as Record<string, unknown>);
  const udpLine = lines.find((l) => l['ip.protocol'] === 17);
  assert.equal(udpLine?.['oob.prefix'], 'eg:out');
  assert.equal(udpLine?.['oob.uid'], 0);
  assert.equal(udpLine?.dest_ip, '127.0.0.1');
  assert.equal(lines.find((l) => l['ip.protocol'] === 6)?.['tcp.syn'], 1);

  reader.child.kill('SIGTERM');
  assert.equal(await reader.exited, 0, reader.stderr());
  assert.equal(existsSync(pidFile), false, 'the pid file is removed at the end');
  // Nothing was dropped: the reports' numbers ran on from 0 without a gap (no lost line, even at the end).
  assert.equal(readFileSync(jsonFile, 'utf8').includes('"egress-guard.lost"'), false);
  assert.doesNotMatch(reader.stderr(), /dropped reports|sequence number/);
});

test('the reader (root) never writes through a symlink: not at --json-file, not at --pid-file', { timeout: 60_000 }, async () => {
  const victim = path.join(dir, 'victim');
  writeFileSync(victim, 'untouched\n');
  const linkedJson = path.join(dir, 'linked.json');
  symlinkSync(victim, linkedJson);
  const refused = await run('ip', ['netns', 'exec', ns, 'bash', '-c', `exec ${cli} rules log-reader --json-file ${linkedJson} --nflog-group ${GROUP + 10}`], {
    cwd: repo,
    timeoutMs: 15_000,
  });
  assert.equal(refused.code, 1, 'a symlink at --json-file is refused');
  assert.match(refused.stderr, /symbolic link/);
  assert.equal(readFileSync(victim, 'utf8'), 'untouched\n');

  // A symlink left at the pid file's path (by an earlier run, or planted): replaced by a file of the reader's own.
  const linkedPid = path.join(dir, 'linked.pid');
  symlinkSync(victim, linkedPid);
  const reader = spawnInNamespace(ns, `${cli} rules log-reader --json-file ${path.join(dir, 'own.json')} --nflog-group ${GROUP + 10} --pid-file ${linkedPid}`, repo);
  started.push(reader);
  // The reader takes the symlink away, then creates its file, then writes its line: between those steps the path holds
  // nothing (ENOENT) or an empty file, which the test must not take for the end.
  const written = (file: string) => {
    try {
      return lstatSync(file).isFile() && readFileSync(file, 'utf8').endsWith('\n');
    } catch {
      return false;
    }
  };
  await waitFor('the reader wrote its pid file', () => written(linkedPid) || reader.child.exitCode !== null, 15_000);
  assert.equal(reader.child.exitCode, null, reader.stderr());
  assert.equal(readFileSync(linkedPid, 'utf8').trim(), String(reader.child.pid));
  assert.equal(readFileSync(victim, 'utf8'), 'untouched\n');
  reader.child.kill('SIGTERM');
  assert.equal(await reader.exited, 0, reader.stderr());
  assert.equal(existsSync(linkedPid), false);
});

/** What the flood's reader wrote: reports of the flood port, and the sum of its `egress-guard.lost` lines. */
function floodFile(file: string): { reports: number; lost: number; lostLines: number; fromPort: (port: number) => number } {
  const records = readFileSync(file, 'utf8')
    .split('\n')
    .filter((line) => line.trim() !== '')
    .map((line) => JSON.parse(line) as Record<string, unknown>);
  const reports = records.filter((r) => r.dest_port === FLOOD_PORT);
  const lostLines = records.filter((r) => typeof r['egress-guard.lost'] === 'number');
  return {
    reports: reports.length,
    lost: lostLines.reduce((sum, r) => sum + (r['egress-guard.lost'] as number), 0),
    lostLines: lostLines.length,
    fromPort: (port) => reports.filter((r) => r.src_port === port).length,
  };
}

/** The packets the flood group's NFLOG rule matched: one report the kernel built for each. */
async function floodRulePackets(): Promise<number> {
  const listing = await must('ip', ['netns', 'exec', ns, 'iptables', '-L', 'OUTPUT', '-v', '-x', '-n']);
  const rule = listing.split('\n').find((line) => / NFLOG /.test(line) && line.includes(`dpt:${FLOOD_PORT}`) && line.includes(`nflog-group ${FLOOD_GROUP}`));
  assert.ok(rule, listing);
  return Number(rule.trim().split(/\s+/)[0]);
}

test('reports the kernel dropped (the reader fell behind) are counted exactly and reach run --netfilter-log as a warning and a count', { timeout: 120_000 }, async (t) => {
  const floodJson = path.join(dir, 'flood.json');
  const floodPid = path.join(dir, 'flood.pid');
  const reader = spawnInNamespace(ns, `${cli} rules log-reader --json-file ${floodJson} --nflog-group ${FLOOD_GROUP} --pid-file ${floodPid}`, repo);
  started.push(reader);
  await waitFor('the reader bound the group', () => existsSync(floodPid) || reader.child.exitCode !== null, 15_000);
  assert.equal(reader.child.exitCode, null, reader.stderr());
  const guard = spawnInNamespace(ns, `${cli} run --dns-listen off --listen 127.0.0.1:0 --netfilter-log ${floodJson}`, repo);
  started.push(guard);
  await guard.waitFor('the proxy listening', (l) => l.msg === 'listening' && l.listener === 'proxy');

  // The reader stopped while 40,000 datagrams are reported: its queue (4 MiB, doubled by the kernel) overflows.
  process.kill(reader.child.pid!, 'SIGSTOP');
  try {
    const flood = `import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\nfor i in range(40000):\n    s.sendto(b'x', ('127.0.0.1', ${FLOOD_PORT}))\n`;
    const sent = await run('ip', ['netns', 'exec', ns, 'python3', '-c', flood], { timeoutMs: 30_000 });
    assert.equal(sent.code, 0, sent.stderr);
  } finally {
    process.kill(reader.child.pid!, 'SIGCONT');
  }
  // One datagram more, from a port of its own, once the reader runs again: the report after the drop, whose number
  // measures the gap (until a later report arrives, an overflow counts 1).
  const MARKER_PORT = 9996;
  const marker = `import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.bind(('127.0.0.1', ${MARKER_PORT}))\ns.sendto(b'x', ('127.0.0.1', ${FLOOD_PORT}))\n`;
  const markerSent = await run('ip', ['netns', 'exec', ns, 'python3', '-c', marker], { timeoutMs: 15_000 });
  assert.equal(markerSent.code, 0, markerSent.stderr);
  await waitFor('the report of the datagram after the flood', () => floodFile(floodJson).fromPort(MARKER_PORT) === 1, 30_000);
  // SIGTERM: the reader writes what it has not written yet of its count (a line at most once a second) and ends.
  reader.child.kill('SIGTERM');
  assert.equal(await reader.exited, 0, reader.stderr());

  const made = await floodRulePackets();
  const written = floodFile(floodJson);
  assert.ok(written.lostLines > 0, 'the JSON file has a line counting the dropped reports');
  // Exact: every report the kernel made (one per packet the rule matched) is either in the file or counted lost.
  t.diagnostic(`the kernel made ${made} reports: ${written.reports} written, ${written.lost} counted lost`);
  assert.equal(written.reports + written.lost, made, `reports ${written.reports} + lost ${written.lost} != ${made} the kernel made`);
  // Thousands dropped while the reader was stopped, counted as reports (an overflow alone would count 1).
  assert.ok(written.lost > 1000, `lost ${written.lost}`);
  assert.match(reader.stderr(), /the kernel dropped reports/);
  assert.doesNotMatch(reader.stderr(), /sequence number/, 'the numbers were followed throughout (no resync)');

  const warning = await guard.waitFor(
    'the warning with the whole count',
    (l) => typeof l.msg === 'string' && l.msg.includes('the kernel dropped reports') && l.lostTotal === written.lost,
    30_000,
  );
  assert.match(String(warning.msg), /counted from the gaps in their sequence numbers/);
});
