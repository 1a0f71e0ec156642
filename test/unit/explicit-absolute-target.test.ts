import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { parseAbsoluteTarget, plainHttpTarget } from '../../proxy/explicit/absolute-target.js';

/** What the listener decided on before: WHATWG URL's parts, or the error it threw. */
function byUrl(target: string) {
  try {
    const { protocol, hostname, port, host } = new URL(target);
    return { protocol, hostname, port, host };
  } catch (err) {
    return { error: (err as Error).name };
  }
}

function byParse(target: string) {
  try {
    return parseAbsoluteTarget(target);
  } catch (err) {
    return { error: (err as Error).name };
  }
}

/** The usual targets (the fast path must take them) and the tricky ones (it must give what URL gives, or leave them to URL). */
const USUAL = ['http://a.test/', 'http://a.test', 'http://a.test:8080/x?y#z', 'http://registry.npmjs.org/-/v1/search?text=a', 'http://a-b.c1.test:1/', 'http://x:65535/'];
const TRICKY = [
  'http://A.test/',
  'http://a.test:80/',
  'http://a.test:080/',
  'http://a.test:0/',
  'http://a.test:/',
  'http://a.test:65536/',
  'http://a.test:123456/',
  'http://a.test./',
  'http://a..test/',
  'http://.a.test/',
  'http://127.0.0.1/',
  'http://127.1/',
  'http://0x7f.1/',
  'http://2130706433/',
  'http://a.0x7f/',
  'http://a.1/',
  'http://a.09/',
  'http://a.test.1e/',
  'http://[::1]:8080/',
  'http://user:pw@a.test/',
  'http://a.test@b.test/',
  'http://a.test\\@b.test/',
  'http://a.test\\b',
  'http://xn--nxasmq6b.test/',
  'http://xn--a.test/',
  'http://a.xn--zz/',
  'http://a%2etest/',
  'http://a_b.test/',
  'http://-a-.test/',
  'http://a.test#@b.test/',
  'http://a.test?@b.test/',
  'http:a.test/',
  'http:/a.test/',
  'http:///a.test/',
  'HTTP://a.test/',
  'https://a.test/',
  'ftp://a.test/',
  'http://a.test:8080:90/',
  'http://a.test :80/',
  'http://a\ttest/',
  'http://ａ.test/',
  'http://',
  '/relative',
  '',
  '*',
];

describe('absolute request targets: the fast path gives what URL gives', () => {
  test('the usual http://name[:port] targets take the fast path, with URL parts', () => {
    for (const target of USUAL) {
      assert.ok(plainHttpTarget(target), `fast path for ${target}`);
      assert.deepEqual(byParse(target), byUrl(target), target);
    }
  });

  test('tricky targets: the same parts or the same refusal as URL', () => {
    for (const target of TRICKY) assert.deepEqual(byParse(target), byUrl(target), JSON.stringify(target));
  });

  test('the fast path leaves to URL what URL rewrites: addresses, upper case, punycode, default and odd ports', () => {
    for (const target of ['http://A.test/', 'http://127.1/', 'http://0x7f.1/', 'http://a.1/', 'http://xn--a.test/', 'http://a.test:080/', 'http://a.test./', 'http://u@a.test/']) {
      assert.equal(plainHttpTarget(target), undefined, target);
    }
    assert.deepEqual(plainHttpTarget('http://a.test:80/x'), { protocol: 'http:', hostname: 'a.test', port: '', host: 'a.test' });
  });
});
