import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { methodOverrides } from '../../proxy/relay/method-override.js';

describe('methodOverrides: the methods a request asks the server to take instead', () => {
  test('override headers, each value and comma-separated values apart', () => {
    assert.deepEqual(methodOverrides({ 'x-http-method-override': 'PUT, DELETE', 'x-method-override': 'patch' }), ['PUT', 'DELETE', 'patch']);
    assert.equal(methodOverrides({ host: 'a.test' }), undefined);
  });

  test('the `_method` query parameter in every spelling a server decodes to it (hunt2)', () => {
    const of = (target: string) => methodOverrides({}, target);
    assert.deepEqual(of('/x?_method=PUT'), ['PUT']);
    assert.deepEqual(of('http://a.test:8080/x?a=1&_method=delete&_method=PATCH'), ['delete', 'PATCH']);
    // Escapes (also of letters), PHP's `.` or space for `_` and its leading spaces dropped, `+` for a space.
    for (const target of ['/x?%5Fmethod=PUT', '/x?_%6Dethod=PUT', '/x?.method=PUT', '/x?+_method=PUT']) assert.deepEqual(of(target), ['PUT'], target);
    // PHP cuts a name at its first NUL (php_register_variable_ex takes its strlen): `_method%00junk` is `_method` there (review41b).
    for (const target of ['/x?_method%00=PUT', '/x?_method%00junk=PUT', '/x?.method%00[]=PUT']) assert.deepEqual(of(target), ['PUT'], target);
    // Not the parameter: another name, the path, the fragment; no query at all.
    for (const target of ['/x?method=PUT', '/x?%20method=PUT', '/x?__method=PUT', '/_method=PUT', '/x?a=1#_method=PUT', '/x', '/x?']) assert.equal(of(target), undefined, target);
    // Headers and parameter together.
    assert.deepEqual(methodOverrides({ 'x-http-method': 'PUT' }, '/x?_method=DELETE'), ['PUT', 'DELETE']);
  });
});
