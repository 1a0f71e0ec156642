import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { originForm } from '../../proxy/relay/http-forwarder.js';
import { endToEndHeaders } from '../../proxy/relay/hop-by-hop.js';

describe('endToEndHeaders', () => {
  test('hop-by-hop headers go, whatever their case; the rest keep their names, order and repeats', () => {
    const raw = [
      'Host',
      'a.test',
      'Connection',
      'keep-alive',
      'Keep-Alive',
      'timeout=5',
      'Proxy-Authorization',
      'Basic x',
      'TE',
      'trailers',
      'Accept',
      '*/*',
      'X-Two',
      '1',
      'X-Two',
      '2',
    ];
    assert.deepEqual(endToEndHeaders(raw), ['Host', 'a.test', 'Accept', '*/*', 'X-Two', '1', 'X-Two', '2']);
  });

  test('headers the Connection header names go, before or after it; framing and Host never', () => {
    const raw = [
      'X-Before',
      '1',
      'Connection',
      'x-before, X-After',
      'connection',
      'content-length, host, transfer-encoding',
      'X-After',
      '2',
      'Content-Length',
      '3',
      'Host',
      'a.test',
    ];
    assert.deepEqual(endToEndHeaders(raw), ['Content-Length', '3', 'Host', 'a.test']);
  });

  test('Host: replaced by the decided one (every line of it), or added when there was none', () => {
    assert.deepEqual(endToEndHeaders(['host', 'attacker.test', 'Accept', '*/*', 'Host', 'second.test'], { host: 'allowed.test:80' }), ['host', 'allowed.test:80', 'Accept', '*/*']);
    assert.deepEqual(endToEndHeaders(['Accept', '*/*'], { host: 'allowed.test' }), ['Host', 'allowed.test', 'Accept', '*/*']);
  });

  test('drop and add', () => {
    assert.deepEqual(endToEndHeaders(['Transfer-Encoding', 'chunked', 'Date', 'x'], { drop: 'transfer-encoding', add: ['Content-Length', '0'] }), [
      'Date',
      'x',
      'Content-Length',
      '0',
    ]);
  });
});

describe('originForm', () => {
  test('an origin-form target is sent as it is, without a fragment', () => {
    assert.equal(originForm('/a/b?q=1'), '/a/b?q=1');
    assert.equal(originForm('/a#frag'), '/a');
  });

  test('an absolute-form target loses scheme and authority', () => {
    assert.equal(originForm('http://a.test:8080/x/y?z'), '/x/y?z');
    assert.equal(originForm('HTTP://a.test'), '/');
    assert.equal(originForm('http://a.test?q'), '/?q');
    assert.equal(originForm('http://a.test/p#f'), '/p');
  });

  test('anything else is left for node to accept or refuse', () => {
    assert.equal(originForm('*'), '*');
  });
});
