import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { bodyFormOf, bodyMethods } from '../../proxy/relay/body-method.js';

/** The methods a body with this Content-Type asks for, or undefined when no server reads fields from it. */
function methodsOf(contentType: string | undefined, body: string | Buffer): string[] | undefined {
  const form = bodyFormOf(contentType);
  return form && bodyMethods(form, Buffer.isBuffer(body) ? body : Buffer.from(body, 'latin1'));
}

/** A multipart/form-data body with these parts (head lines, value), CRLF as curl writes it. */
function multipart(boundary: string, parts: [string[], string][]): string {
  return `${parts.map(([head, value]) => `--${boundary}\r\n${head.join('\r\n')}\r\n\r\n${value}\r\n`).join('')}--${boundary}--\r\n`;
}

describe('bodyFormOf: which POST bodies a server reads a `_method` field from', () => {
  test('forms (parsed properly: case, parameters, what PHP and Rack cut the media type at), JSON, no Content-Type at all', () => {
    for (const type of [
      'application/x-www-form-urlencoded',
      'Application/X-WWW-Form-URLEncoded; charset=utf-8',
      'application/x-www-form-urlencoded,x',
      'application/x-www-form-urlencoded x',
    ]) {
      assert.deepEqual(bodyFormOf(type), { urlencoded: true, boundaries: [], json: false }, type);
    }
    // Rack parses a POST without a media type as a form.
    assert.deepEqual(bodyFormOf(undefined), { urlencoded: true, boundaries: [], json: false });
    assert.deepEqual(bodyFormOf(''), { urlencoded: true, boundaries: [], json: false });
    assert.deepEqual(bodyFormOf('multipart/form-data; boundary=----abc'), { urlencoded: false, boundaries: ['----abc'], json: false });
    assert.deepEqual(bodyFormOf('Multipart/Form-Data; BOUNDARY="a b;c"'), { urlencoded: false, boundaries: ['a b;c', 'a b'], json: false });
    // Many boundary parameters: the first and the last, as PHP and Rack take them, not one pass over the body for each.
    const many = bodyFormOf(`multipart/form-data; ${Array.from({ length: 1000 }, (_, i) => `boundary=b${i}`).join('; ')}`);
    assert.deepEqual(many?.boundaries, ['b0', 'b999']);
    // Without a boundary Rack reads the body as URL-encoded.
    assert.deepEqual(bodyFormOf('multipart/form-data'), { urlencoded: true, boundaries: [], json: false });
    // Laravel reads `_method` from a JSON body (its isJson: `/json` or `+json` anywhere in the header).
    assert.deepEqual(bodyFormOf('application/json'), { urlencoded: false, boundaries: [], json: true });
    assert.deepEqual(bodyFormOf('application/vnd.api+json; charset=utf-8'), { urlencoded: false, boundaries: [], json: true });
    for (const type of ['text/plain', 'application/octet-stream', 'application/x-www-form-urlencodedx', 'application/xml']) assert.equal(bodyFormOf(type), undefined, type);
  });
});

describe('bodyMethods: the methods a body`s `_method` fields name, decoded as servers decode them', () => {
  const FORM = 'application/x-www-form-urlencoded';
  test('URL-encoded: the spellings the query code reads (escapes, `+`, PHP`s leading spaces, `.`, NUL cut), every value', () => {
    assert.deepEqual(methodsOf(FORM, '_method=DELETE'), ['DELETE']);
    assert.deepEqual(methodsOf(FORM, 'a=1&_method=delete&_method=PUT,PATCH'), ['delete', 'PUT', 'PATCH']);
    for (const body of ['%5Fmethod=PUT', '_%6Dethod=PUT', '.method=PUT', '+_method=PUT', '_method%00junk=PUT', 'a=1&_method=+PUT+'])
      assert.deepEqual(methodsOf(FORM, body), ['PUT'], body);
    for (const body of ['method=PUT', '__method=PUT', 'a=_method%3DPUT', '_method=', 'x']) assert.deepEqual(methodsOf(FORM, body), [], body);
    // No Content-Type, and multipart without a boundary: read as URL-encoded (Rack).
    assert.deepEqual(methodsOf(undefined, '_method=DELETE'), ['DELETE']);
    assert.deepEqual(methodsOf('multipart/form-data', '_method=DELETE'), ['DELETE']);
  });

  test('multipart: a part named `_method`, in every way a server reads its name', () => {
    const B = '------------------------a1b2c3';
    const TYPE = `multipart/form-data; boundary=${B}`;
    assert.deepEqual(methodsOf(TYPE, multipart(B, [[['Content-Disposition: form-data; name="_method"'], 'DELETE']])), ['DELETE']);
    assert.deepEqual(
      methodsOf(
        TYPE,
        multipart(B, [
          [['Content-Disposition: form-data; name="file"; filename="a.txt"', 'Content-Type: text/plain'], 'hello\r\n--not-it\r\n'],
          [['content-disposition: form-data; name=_method'], 'PUT'],
        ]),
      ),
      ['PUT'],
    );
    const named = (disposition: string) => methodsOf(TYPE, multipart(B, [[[disposition], 'PATCH']]));
    for (const disposition of [
      "Content-Disposition: form-data; name='_method'",
      'Content-Disposition: form-data;name = "\\_method"',
      'Content-Disposition: name="_method"',
      'Content-Disposition: form-data; name=".method"',
      'Content-Disposition: form-data; name="_method\0junk"',
      "Content-Disposition: form-data; name*=UTF-8''%5Fmethod",
    ]) {
      assert.deepEqual(named(disposition), ['PATCH'], disposition);
    }
    for (const disposition of [
      'Content-Disposition: form-data; name="method"',
      'Content-Disposition: form-data; filename="_method"',
      'Content-Disposition: form-data; name="_method2"',
    ]) {
      assert.deepEqual(named(disposition), [], disposition);
    }
    // LF line ends (PHP reads them), and a quoted boundary.
    assert.deepEqual(methodsOf('multipart/form-data; boundary="q q"', '--q q\nContent-Disposition: form-data; name="_method"\n\nDELETE\n--q q--\n'), ['DELETE']);
    // After the closing delimiter: the epilogue, not a part.
    assert.deepEqual(
      methodsOf(TYPE, `${multipart(B, [[['Content-Disposition: form-data; name="a"'], '1']])}--${B}\r\nContent-Disposition: form-data; name="_method"\r\n\r\nPUT\r\n`),
      [],
    );
  });

  test('malformed multipart never throws: read as far as it goes', () => {
    const TYPE = 'multipart/form-data; boundary=xyz';
    for (const body of [
      '',
      '--xyz',
      '--xyz\r\n',
      '--xyz\r\nContent-Disposition: form-data; name="_method"',
      '--xyz\r\nname="_method"\r\n\r\n',
      'garbage',
      '--xyz--',
      Buffer.from([0xff, 0xfe, 0, 1]).toString('latin1'),
    ]) {
      assert.doesNotThrow(() => methodsOf(TYPE, body), JSON.stringify(body));
    }
    // A part cut before its closing delimiter: its value is what came.
    assert.deepEqual(methodsOf(TYPE, '--xyz\r\nContent-Disposition: form-data; name="_method"\r\n\r\nDELETE'), ['DELETE']);
  });

  test('JSON (Laravel): a top-level `_method` string; anything else is none', () => {
    const JSON_TYPE = 'application/json';
    assert.deepEqual(methodsOf(JSON_TYPE, '{"title":"x","_method":"DELETE"}'), ['DELETE']);
    assert.deepEqual(methodsOf(JSON_TYPE, '{"\\u005fmethod":"PUT"}'), ['PUT']);
    for (const body of ['{"_method":1}', '{"a":{"_method":"PUT"}}', '["_method","PUT"]', '{"_method":"PUT"', 'not json', ''])
      assert.deepEqual(methodsOf(JSON_TYPE, body), [], body);
  });
});
