/**
 * decide() keeps, per policy, what its entries say about a host and port (request-rules.ts) and the answer for one
 * checked address (decide.ts), and canonicalHost's answers by text: a keep-alive connection's requests are then
 * judged without searching the entries again. The path is still normalised and matched per request. Checked here:
 * over generated policies and long runs of requests that come back to the same hosts, ports, addresses and rules,
 * every answer of the policy that remembers equals the answer of a copy of it that has remembered nothing (a new
 * object: nothing kept for it), whatever was asked before.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { buildPolicy, decide, decideOnAddresses, type DecisionRequest, type Policy } from '../../policy/index.js';

const origin = { file: 'policy-decide-memo.test', line: 1 };

const HOSTS = ['a.test', '*.a.test', 'b.a.test', 'c.test', 'x*.c.test'];
const PORTS = ['', ':443', ':8443', ':*'];
const METHODS = ['', 'GET ', 'GET,HEAD ', 'POST '];
const PATHS = ['', '/p/**', '/p/*', '/q', '/**', '/P/x'];

const entry = fc
  .tuple(fc.constantFrom(...METHODS), fc.constantFrom(...HOSTS), fc.constantFrom(...PORTS), fc.constantFrom(...PATHS))
  .map(([method, host, port, path]) => `${method}${host}${port}${path}`);

const policyArbitrary = fc
  .record({
    mode: fc.constantFrom('block', 'audit'),
    allowed: fc.uniqueArray(entry, { minLength: 0, maxLength: 6 }),
    denied: fc.uniqueArray(entry, { minLength: 0, maxLength: 3 }),
    enforceDenied: fc.boolean(),
  })
  .map(({ mode, allowed, denied, enforceDenied }) =>
    buildPolicy({
      mode: { value: mode, origin },
      'allowed-endpoints': { value: allowed.join('\n'), origin },
      'denied-endpoints': { value: denied.join('\n'), origin },
      'enforce-denied-in-audit': { value: String(enforceDenied), origin },
      'allowed-ips': { value: '10.0.0.1/32', origin },
      'trusted-ranges': { value: '127.0.0.0/8', origin },
    }),
  );

const requestArbitrary: fc.Arbitrary<DecisionRequest> = fc
  .record(
    {
      host: fc.oneof(
        fc.constantFrom('a.test', 'b.a.test', 'c.test'),
        fc.constantFrom('A.TEST.', 'z.b.a.test', 'xy.c.test', 'x.c.test', '127.0.0.1', '10.0.0.1', '[::1]', 'bad host', ''),
      ),
      port: fc.constantFrom(443, 8443, 80),
      method: fc.constantFrom('GET', 'get', 'HEAD', 'POST', 'PUT'),
      path: fc.constantFrom('/', '/p/x', '/p/x/y', '/q', '/q?token=1', '/P/x', '/p/%78', '/p//x', '/../x', '/p/./x/'),
      addresses: fc.oneof(fc.constantFrom(['127.0.0.1'], ['8.8.8.8']), fc.constantFrom(['10.1.2.3'], ['8.8.8.8', '127.0.0.2'], ['not-an-address'], [], ['::1'], ['10.0.0.1'])),
      inspectable: fc.boolean(),
    },
    { requiredKeys: ['host', 'port'] },
  )
  // A request with a method or a path has both (an HTTP request); one with neither is a connection.
  .map((r) => (r.method === undefined && r.path === undefined ? r : { ...r, method: r.method ?? 'GET', path: r.path ?? '/' }));

/** The same policy as a new object: decide() has kept nothing for it. */
const fresh = (policy: Policy): Policy => ({ ...policy });

describe('decide() with what it keeps per policy, host and address', () => {
  test('answers as a policy that has kept nothing, over runs of repeated requests', () => {
    fc.assert(
      fc.property(policyArbitrary, fc.array(requestArbitrary, { minLength: 20, maxLength: 80 }), (policy, requests) => {
        // Each request twice: the second is answered from what the first left behind.
        for (const request of [...requests, ...requests]) {
          assert.deepEqual(decide(policy, request), decide(fresh(policy), request), JSON.stringify(request));
          const onName = decide(policy, { ...request, addresses: undefined });
          if (request.addresses !== undefined) {
            assert.deepEqual(decideOnAddresses(policy, onName, request.port, request.addresses), decideOnAddresses(fresh(policy), onName, request.port, request.addresses));
          }
        }
      }),
      { numRuns: 600 },
    );
  });

  test('an answer given out and changed does not change the next answers', () => {
    const policy = buildPolicy({
      mode: { value: 'block', origin },
      'allowed-endpoints': { value: 'a.test b.test/p/**', origin },
      'trusted-ranges': { value: '127.0.0.0/8', origin },
    });
    for (const request of [
      { host: 'a.test', port: 443, addresses: ['127.0.0.1'] },
      { host: 'b.test', port: 443, method: 'GET', path: '/p/x', addresses: ['127.0.0.1'] },
    ]) {
      const first = { ...decide(policy, request) };
      const given = decide(policy, request);
      try {
        Object.assign(given, { ip: '8.8.8.8', rule: 'changed' });
      } catch {
        // frozen: kept as it was
      }
      assert.deepEqual(decide(policy, request), first);
      assert.equal(first.ip, '127.0.0.1');
    }
  });
});
