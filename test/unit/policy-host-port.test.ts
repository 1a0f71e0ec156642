import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { formatHostPort, hostHeaderValue, parseAuthority } from '../../policy/host-port.js';

describe('host-port: the one parser and formatter of host:port', () => {
  it('hostHeaderValue brackets an IPv6 address on the default port too', () => {
    // The inspector's authorityOf and the inspected upgrade sent `2001:db8::1` (no brackets) on the default port:
    // a Host that reads as host 2001:db8: and port 1.
    assert.equal(hostHeaderValue('2001:db8::1', 80, 80), '[2001:db8::1]');
    assert.equal(hostHeaderValue('2001:db8::1', 8080, 80), '[2001:db8::1]:8080');
    assert.equal(hostHeaderValue('allowed.test', 443, 443), 'allowed.test');
    assert.equal(hostHeaderValue('allowed.test', 80, 443), 'allowed.test:80');
    assert.equal(hostHeaderValue('198.51.100.7', 80, 80), '198.51.100.7');
  });

  it('what hostHeaderValue and formatHostPort write, parseAuthority reads back', () => {
    const host = fc.oneof(
      fc.domain(),
      fc.ipV4(),
      fc.ipV6().filter((a) => !a.includes('.')),
    );
    fc.assert(
      fc.property(host, fc.oneof(fc.constantFrom(80, 443), fc.integer({ min: 1, max: 65535 })), fc.constantFrom(80, 443), (h, port, defaultPort) => {
        assert.deepEqual(parseAuthority(formatHostPort(h, port)), { host: h, port });
        assert.deepEqual(parseAuthority(hostHeaderValue(h, port, defaultPort), defaultPort), { host: h, port });
      }),
      { numRuns: 2000 },
    );
  });
});
