import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { test } from 'node:test';
import { parsePolicyFile } from '../../policy/index.js';
import { fetchHostSightings, renderHostSightings, type JobSighting } from '../../report/host-sightings.js';

/**
 * Lists of unbounded length passed as a spread (push(...list), Math.max(...list)) overflow the stack past ~120,000
 * values: a RangeError instead of an answer.
 */

const N = 150_000;

function sighting(i: number): JobSighting {
  return {
    job: `org/repo/run-${i}/job`,
    first: '2026-12-01T10:00:00.000Z',
    last: '2026-12-01T10:00:01.000Z',
    decisions: 1,
    allowed: 1,
    blocked: 0,
    wouldBlock: 0,
    bytesOut: 0,
    hosts: ['a.test'],
  };
}

test('a policy file whose list item holds 150,000 entries in one string is read', () => {
  const item = Array.from({ length: N }, (_, i) => `h${i}.example.test:443`).join(' ');
  const settings = parsePolicyFile(`allowed-endpoints:\n  - "${item}"\n  - last.example.test:443\n`, 'big.yml');
  const entries = settings.get('allowed-endpoints')!.value;
  assert.ok(Array.isArray(entries));
  assert.equal(entries.length, N + 1);
  assert.deepEqual(entries.at(-1), { text: 'last.example.test:443', origin: { file: 'big.yml', line: 3 } });
});

test("host sightings: a collector's page of 150,000 jobs is kept, and a table of as many jobs is rendered", async () => {
  const jobs = Array.from({ length: N }, (_, i) => sighting(i));
  const body = JSON.stringify({ host: 'a.test', next: null, jobs });
  const server = createServer((_req, res) => res.end(body));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  try {
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const result = await fetchHostSightings(url, { host: 'a.test' }, N);
    assert.equal(result.jobs.length, N);
    assert.equal(result.truncated, false);
    const table = renderHostSightings(result, 'table');
    assert.equal(table.split('\n').length, N + 4);
    assert.match(table, /^org\/repo\/run-149999\/job {2}2026/m);
  } finally {
    await new Promise((resolve) => server.close(resolve));
  }
});
