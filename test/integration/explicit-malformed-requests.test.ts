/**
 * Requests the explicit proxy cannot forward whatever the policy says: one sent to it as to an origin server (no
 * absolute URI), an absolute URI of another scheme than http:// (`GET https://...`: a client that will not CONNECT), a
 * CONNECT whose target is not host:port. Each is refused 400 in audit mode too (there is nothing to forward) and is a
 * decision with its event, reason malformed-request, naming the host it names: until 2026-12-03 they were answered
 * 400 with a log line at most, so an audit run did not show them. Raw requests against the real CLI, in audit mode.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { startEgressGuard, type EgressGuardProcess } from '../helpers/egress-guard-process.js';
import { rawExchange } from '../helpers/raw-client.js';

describe('explicit proxy: a request it cannot forward is a malformed-request decision with its event, in audit mode too', () => {
  let guard: EgressGuardProcess;

  before(async () => {
    guard = await startEgressGuard([], { EGRESS_MODE: 'audit', EGRESS_ALLOWED_ENDPOINTS: 'allowed.test:*' });
  });
  after(async () => {
    await guard?.stop();
  });

  const cases = [
    {
      what: 'origin form, named by its Host',
      request: 'GET /origin-form?token=s3cret HTTP/1.1\r\nHost: Attacker.test:8080\r\nConnection: close\r\n\r\n',
      event: { kind: 'http', host: 'attacker.test', port: 8080, method: 'GET', path: '/origin-form' },
      reason: /is not an absolute URI/,
    },
    {
      what: 'origin form without a Host',
      request: 'GET /no-host HTTP/1.0\r\n\r\n',
      event: { kind: 'http', host: '(none)', port: 0, method: 'GET', path: '/no-host' },
      reason: /is not an absolute URI/,
    },
    {
      what: 'an https:// absolute URI',
      request: 'POST https://attacker.test/upload HTTP/1.1\r\nHost: attacker.test\r\nContent-Length: 0\r\nConnection: close\r\n\r\n',
      event: { kind: 'http', host: 'attacker.test', port: 443, method: 'POST', path: '/upload' },
      reason: /use CONNECT for https:/,
    },
    {
      what: 'a CONNECT target with a port out of range',
      request: 'CONNECT attacker.test:99999 HTTP/1.1\r\nHost: attacker.test:99999\r\n\r\n',
      event: { kind: 'connect', host: '(none)', port: 0 },
      reason: /CONNECT needs host:port, got "attacker.test:99999"/,
    },
  ];

  for (const { what, request, event, reason } of cases) {
    test(`${what}: 400, one blocked decision event (malformed-request) whose id the answer carries`, async () => {
      const before = guard.lines.length;
      const answer = await rawExchange(guard.port, request);
      assert.match(answer, /^HTTP\/1\.1 400 /, answer.slice(0, 200));
      const decision = await guard.waitFor((l) => guard.lines.indexOf(l) >= before && l.event === 'decision');
      assert.deepEqual(Object.fromEntries(Object.keys(event).map((k) => [k, decision[k]])), event);
      assert.deepEqual([decision.decision, decision.reason, decision.mode, decision.rule], ['blocked', 'malformed-request', 'audit', null]);
      assert.match(String(decision.message), reason);
      assert.match(answer, new RegExp(`X-Egress-Guard-Event: ${decision.id}\r\n`, 'i'));
      // The query string is not logged (log-query is off).
      assert.ok(!JSON.stringify(decision).includes('s3cret'));
    });
  }
});
