import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, test } from 'node:test';
import { renderJobPage } from '../../collector/page.js';
import { EventLog } from '../../events/event-log.js';
import type { DecisionFields, EgressEvent } from '../../events/schema.js';
import { buildReport, renderReport } from '../../report/format.js';
import { entropy, formatBytes, looksEncoded, review } from '../../report/review.js';
import { summarize } from '../../report/summary.js';

function run(): EgressEvent[] {
  const events = new EventLog({ stdout: false, ci: { job_id: 'review' } });
  const seen: EgressEvent[] = [];
  events.subscribe((e) => seen.push(e));
  const decide = (fields: Partial<DecisionFields> & Pick<DecisionFields, 'host' | 'port' | 'kind'>) =>
    events.decision({ client: '127.0.0.1:1', decision: 'would-block', reason: 'not-allowed-endpoint', rule: null, message: '', mode: 'audit', ...fields });
  // An audit run of the attack suite: a DNS tunnel, a raw IP, fronting, a large upload, QUIC, and the job's own traffic.
  for (let i = 0; i < 5; i++) decide({ kind: 'dns', host: `${createHash('sha256').update(`tunnel-${i}`).digest('hex').slice(0, 60)}.attacker.test`, port: 53 });
  decide({ kind: 'transparent', host: '203.0.113.66', port: 443, reason: 'raw-ip', ip: '203.0.113.66' });
  decide({ kind: 'transparent', host: 'cdn.attacker.test', port: 443, reason: 'sni-mismatch', sni: 'cdn.attacker.test' });
  const upload = decide({ kind: 'connect', host: 'paste.example.com', port: 443 });
  events.close({ id: upload.id, kind: 'connect', client: '127.0.0.1:1', host: 'paste.example.com', port: 443, bytes_in: 2_000, bytes_out: 5 * 1024 * 1024, duration_ms: 10 });
  decide({ kind: 'udp', host: '203.0.113.66', port: 443, reason: 'not-proxied' });
  decide({ kind: 'tcp', host: '198.51.100.77', port: 9419, decision: 'allowed', reason: 'established-before-rules' });
  for (const name of ['registry.npmjs.org', 'github.com', 'api.github.com']) {
    const d = decide({ kind: 'connect', host: name, port: 443, decision: 'allowed', reason: 'allowed-endpoint', rule: name });
    events.close({ id: d.id, kind: 'connect', client: '127.0.0.1:1', host: name, port: 443, bytes_in: 300_000, bytes_out: 4_000, duration_ms: 10 });
  }
  return seen;
}

describe('report review: what a reviewer reads first', () => {
  const rows = review(summarize(run()));

  test('random names under one domain are one row, flagged as DNS tunnelling', () => {
    const tunnel = rows.find((r) => r.label.startsWith('*.attacker.test:53'))!;
    assert.equal(tunnel.label, '*.attacker.test:53 (5 names)');
    assert.equal(tunnel.count, 5);
    assert.deepEqual(
      tunnel.flags.map((f) => f.id),
      ['dns-tunnelling'],
    );
    assert.equal(rows.filter((r) => r.hosts.some((h) => h.endsWith('.attacker.test') && r.kinds.includes('dns'))).length, 1);
  });

  test('raw IP, fronting, an upload far larger than its download, and traffic around the proxy are flagged; flagged rows come first', () => {
    const flagsOf = (label: string) => rows.find((r) => r.label === label)?.flags.map((f) => f.id);
    assert.deepEqual(flagsOf('203.0.113.66:443'), ['raw-ip', 'around-proxy'], 'one destination, two ways in');
    assert.deepEqual(flagsOf('cdn.attacker.test:443'), ['fronting']);
    assert.deepEqual(flagsOf('paste.example.com:443'), ['upload']);
    assert.deepEqual(flagsOf('github.com:443'), []);
    assert.deepEqual(flagsOf('198.51.100.77:9419'), ['before-rules'], 'a connection open before the rules: let through, and flagged');
    const cache = {
      host: 'productionresultssa0.blob.core.windows.net',
      port: 443,
      kinds: ['connect' as const],
      count: 1,
      first: 't',
      last: 't',
      reasons: ['allowed-endpoint'],
      ips: [],
      bytesIn: 1000,
      bytesOut: 300 * 1024 * 1024,
      outcomes: { allowed: 1, blocked: 0, 'would-block': 0 },
    };
    assert.deepEqual(review({ destinations: [{ ...cache, decision: 'allowed' }] })[0]!.flags, [], 'an allowed cache upload is no attack');
    assert.deepEqual(
      review({ destinations: [{ ...cache, decision: 'would-block' }] })[0]!.flags.map((f) => f.id),
      ['upload'],
    );
    const firstUnflagged = rows.findIndex((r) => r.flags.length === 0);
    assert.ok(rows.slice(firstUnflagged).every((r) => r.flags.length === 0));
    assert.equal(firstUnflagged, 5, 'the tunnel, raw IP, fronting, upload and before-rules rows');
  });

  test('sizes people read', () => {
    assert.deepEqual([0, 512, 1536, 64 * 1024 * 1024, 2.25 * 1024 ** 3].map(formatBytes), ['0 B', '512 B', '1.5 KiB', '64 MiB', '2.3 GiB']);
    // Deterministic samples: what tunnels put in labels (hex, base32) and long names people chose.
    const digest = (i: number) => createHash('sha256').update(String(i)).digest();
    for (let i = 0; i < 20; i++) {
      assert.ok(looksEncoded(digest(i).toString('hex').slice(0, 40)), `hex ${i}`);
      assert.ok(
        looksEncoded(
          [...digest(i), ...digest(i + 100)]
            .map((b) => 'abcdefghijklmnopqrstuvwxyz234567'[b % 32])
            .join('')
            .slice(0, 60),
        ),
        `base32 ${i}`,
      );
    }
    const chosen = [
      'objects-githubusercontent',
      'productionresultssa0',
      'pipelines-actions-runner',
      'build-2024-11-29-release',
      'codeload-githubusercontent',
      'dc01-productionresultssa12',
    ];
    for (const name of chosen) assert.ok(!looksEncoded(name), name);
    assert.ok(entropy('aaaa') === 0);
  });

  test('terminal: colour only when asked (a TTY), columns aligned either way; markdown and the page say it in words', () => {
    const report = buildReport(run(), 'test');
    const plain = renderReport(report, 'table');
    const coloured = renderReport(report, 'table', { color: true });
    assert.ok(coloured.includes('\x1b[33mwould-block\x1b[0m'));
    // eslint-disable-next-line no-control-regex
    assert.equal(coloured.replace(/\x1b\[[0-9;]*m/g, ''), plain);
    assert.match(plain, /^ {2}! \*\.attacker\.test:53 \(5 names\) \(would-block\): 5 names with long random labels/m);
    const markdown = renderReport(report, 'markdown');
    assert.match(markdown, /#### 🚩 Looks like an attack/);
    assert.match(markdown, /\| 🚩 upload \|/);
    assert.match(markdown, /\| 5\.0 MiB \| 2\.0 KiB \|/);
    const page = renderJobPage('review', report.summary, '', 'nonce');
    assert.match(page, /<h2 id="findings">Looks like an attack/);
    assert.match(page, /title="5242880 bytes">5\.0 MiB</);
    assert.doesNotMatch(page, />5242880</, 'no raw byte counts on the page');
  });
});
