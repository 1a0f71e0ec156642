/** policy suggest --paths: path entries from the requests an audit run saw, never wider than an owner. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { DecisionEvent } from '../../events/schema.js';
import { buildPolicy, decide } from '../../policy/index.js';
import { renderPolicyYaml, suggestPolicy } from '../../report/suggest.js';

let n = 0;
function request(host: string, method: string | undefined, path: string | undefined, kind: DecisionEvent['kind'] = 'connect'): DecisionEvent {
  n++;
  return {
    schema: 1,
    event: 'decision',
    id: `e${n}`,
    time: `2026-11-29T12:00:${String(n).padStart(2, '0')}.000Z`,
    kind,
    client: '127.0.0.1:1',
    host,
    port: 443,
    ...(method !== undefined && { method }),
    ...(path !== undefined && { path }),
    decision: 'would-block',
    reason: 'path-not-allowed',
    rule: null,
    message: 'x',
    mode: 'audit',
  };
}

const EVENTS: DecisionEvent[] = [
  request('github.com', undefined, undefined), // the inspected CONNECT itself
  request('github.com', 'GET', '/my-org/app.git/info/refs?service=git-upload-pack'),
  request('github.com', 'POST', '/my-org/app.git/git-upload-pack'),
  request('github.com', 'POST', '/my-org/lib.git/git-receive-pack'),
  request('github.com', 'GET', '/other-org'),
  request('api.github.com', 'GET', '/repos/my-org/app/pulls'),
  request('api.github.com', 'GET', '/user'),
  request('objects.githubusercontent.com', undefined, undefined),
];

test('paths are grouped per owner, the query left out, hosts without paths stay host entries', () => {
  const suggestion = suggestPolicy(EVENTS, { paths: true });
  assert.deepEqual(
    suggestion.endpoints.map((e) => e.value),
    ['api.github.com:443/repos/my-org/**', 'api.github.com:443/user', 'github.com:443/my-org/**', 'github.com:443/other-org', 'objects.githubusercontent.com:443'],
  );
  assert.match(suggestion.endpoints.find((e) => e.value === 'github.com:443/my-org/**')!.comment, /3 times \(GET, POST\)/);
});

test('without --paths nothing changes: one entry per host', () => {
  assert.deepEqual(
    suggestPolicy(EVENTS).endpoints.map((e) => e.value),
    ['api.github.com:443', 'github.com:443', 'objects.githubusercontent.com:443'],
  );
});

test('the suggested file loads, and allows exactly what was seen under each owner', () => {
  const yaml = renderPolicyYaml(suggestPolicy(EVENTS, { paths: true }), 'test');
  const entries = [...yaml.matchAll(/^ {2}- "([^"]+)"/gm)].map((m) => m[1]).join(' ');
  const policy = buildPolicy({ mode: { value: 'block', origin: { file: 't', line: 1 } }, 'allowed-endpoints': { value: entries, origin: { file: 't', line: 1 } } });
  const asks = (method: string, host: string, path: string) => decide(policy, { host, port: 443, method, path }).permitted;
  assert.ok(asks('POST', 'github.com', '/my-org/app.git/git-receive-pack'));
  assert.ok(!asks('POST', 'github.com', '/attacker/loot.git/git-receive-pack'));
  assert.ok(!asks('POST', 'api.github.com', '/user/repos'));
  assert.ok(asks('GET', 'objects.githubusercontent.com', '/anything'));
});

test('a request that could name two hosts (ambiguous-host) suggests no entry: it is decided on none of them', () => {
  // Until 2026-12-03 there was no such event; an allowlist entry for the host it names first would not let it through.
  const ambiguous: DecisionEvent = { ...request('elsewhere.test', 'GET', '/two-hosts', 'transparent'), reason: 'ambiguous-host', ip: '203.0.113.7', port: 80 };
  const suggestion = suggestPolicy([ambiguous, request('objects.githubusercontent.com', undefined, undefined)]);
  assert.deepEqual(
    suggestion.endpoints.map((e) => e.value),
    ['objects.githubusercontent.com:443'],
  );
});
