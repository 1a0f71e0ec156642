import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { MAX_CONNECT_HEAD_BYTES, parseConnectHead } from '../../proxy/explicit/connect-head.js';

const parse = (text: string) => parseConnectHead(Buffer.from(text, 'latin1'));

describe('parseConnectHead: the lean CONNECT reader', () => {
  test('a complete head gives the target as written and where the tunnel bytes start', () => {
    const head = 'CONNECT example.test:443 HTTP/1.1\r\nHost: example.test:443\r\nUser-Agent: curl/8.5.0\r\nProxy-Connection: Keep-Alive\r\n\r\n';
    assert.deepEqual(parse(head), { kind: 'connect', target: 'example.test:443', headBytes: head.length });
    assert.deepEqual(parse(`${head}\x16\x03\x01`), { kind: 'connect', target: 'example.test:443', headBytes: head.length });
    assert.deepEqual(parse('CONNECT [2001:db8::1]:443 HTTP/1.0\r\n\r\n'), { kind: 'connect', target: '[2001:db8::1]:443', headBytes: 38 });
  });

  test('every prefix of a head is incomplete, never other or malformed', () => {
    const head = 'CONNECT example.test:443 HTTP/1.1\r\nHost: example.test:443\r\n\r\n';
    for (let n = 0; n < head.length; n++) assert.deepEqual(parse(head.slice(0, n)), { kind: 'incomplete' }, JSON.stringify(head.slice(0, n)));
  });

  test('anything that does not start with "CONNECT " is left to the HTTP server', () => {
    for (const start of ['GET http://a.test/ HTTP/1.1\r\n', 'connect a.test:443 HTTP/1.1\r\n\r\n', 'CONNECTX a:1', 'C\r\n', '\x16\x03\x01\x00', 'P']) {
      assert.deepEqual(parse(start), { kind: 'other' }, JSON.stringify(start));
    }
  });

  test('malformed heads are refused with llhttp-like codes', () => {
    const cases: Array<[string, string]> = [
      ['CONNECT a.test:443 HTTP/2.0\r\n\r\n', 'HPE_INVALID_REQUEST_LINE'],
      ['CONNECT a.test:443\r\n\r\n', 'HPE_INVALID_REQUEST_LINE'],
      ['CONNECT  a.test:443 HTTP/1.1\r\n\r\n', 'HPE_INVALID_REQUEST_LINE'],
      ['CONNECT a.test:443 HTTP/1.1 \r\n\r\n', 'HPE_INVALID_REQUEST_LINE'],
      ['CONNECT a.test:443 HTTP/1.1\r\nBad Header\r\n\r\n', 'HPE_INVALID_HEADER_TOKEN'],
      ['CONNECT a.test:443 HTTP/1.1\r\nHost : a\r\n\r\n', 'HPE_INVALID_HEADER_TOKEN'],
      ['CONNECT a.test:443 HTTP/1.1\r\n: a\r\n\r\n', 'HPE_INVALID_HEADER_TOKEN'],
      ['CONNECT a.test:443 HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n', 'HPE_INVALID_HEADER_TOKEN'],
      ['CONNECT a.test:443 HTTP/1.1\r\nX: a\x00b\r\n\r\n', 'HPE_INVALID_HEADER_TOKEN'],
      ['CONNECT a.test:443 HTTP/1.1\r\nX: a\nY: b\r\n\r\n', 'HPE_INVALID_HEADER_TOKEN'],
      // A bare LF is refused before the head is complete (no wait for a blank line that never comes).
      ['CONNECT a.test:443 HTTP/1.1\nHost: a\n', 'HPE_CR_EXPECTED'],
    ];
    for (const [head, code] of cases) assert.deepEqual(parse(head), { kind: 'malformed', code }, JSON.stringify(head));
  });

  test('with bare line ends read (audit mode): a CONNECT head that has one is left to the request reader', () => {
    const lenient = (text: string) => parseConnectHead(Buffer.from(text, 'latin1'), true);
    for (const head of [
      'CONNECT a.test:443 HTTP/1.1\nHost: a\n\n',
      'CONNECT a.test:443 HTTP/1.1\n',
      'CONNECT a.test:443 HTTP/1.1\nHost: a\r\n\r\n',
      'CONNECT a.test:443 HTTP/1.1\r\nHost: a\n\r\n',
      'CONNECT a.test:443 HTTP/1.0\n\n\x16\x03\x01\r\n\r\n',
      'CONNECT a.test:443 HTTP/1.1\rHost: a\r\n\r\n',
    ]) {
      assert.deepEqual(lenient(head), { kind: 'bare-line-ends' }, JSON.stringify(head));
    }
    // CRLF heads are read here as in block mode, also when the tunnel's first bytes after the head have a bare LF.
    const head = 'CONNECT a.test:443 HTTP/1.1\r\nHost: a\r\n\r\n';
    assert.deepEqual(lenient(`${head}\x16\n\r\x03`), { kind: 'connect', target: 'a.test:443', headBytes: head.length });
    assert.deepEqual(lenient('CONNECT a.test:443 HTTP/1.1\r'), { kind: 'incomplete' });
    assert.deepEqual(lenient('GET / HTTP/1.1\n\n'), { kind: 'other' });
    // Strict (block mode), the same heads are refused.
    assert.deepEqual(parse('CONNECT a.test:443 HTTP/1.1\nHost: a\n\n'), { kind: 'malformed', code: 'HPE_CR_EXPECTED' });
  });

  test('a head longer than the limit is refused, complete or not', () => {
    const long = `CONNECT a.test:443 HTTP/1.1\r\nX: ${'a'.repeat(MAX_CONNECT_HEAD_BYTES)}`;
    assert.deepEqual(parse(long), { kind: 'malformed', code: 'HPE_HEADER_OVERFLOW' });
    assert.deepEqual(parse(`${long}\r\n\r\n`), { kind: 'malformed', code: 'HPE_HEADER_OVERFLOW' });
    const fits = `CONNECT a.test:443 HTTP/1.1\r\nX: ${'a'.repeat(MAX_CONNECT_HEAD_BYTES - 40)}\r\n\r\n`;
    assert.equal(parse(fits).kind, 'connect');
  });
});
