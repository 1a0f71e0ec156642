/**
 * Method and path rules (issue 13): entry syntax, the path normaliser and matcher, and the decisions, with
 * property tests that no spelling of a path is judged differently from its canonical form.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { bodyMethodMatters, buildPolicy, compilePathPattern, decide, decideName, matchPath, normalisePath, PolicyError, type Policy } from '../../policy/index.js';

const origin = { file: 'policy-request-rules.test', line: 1 };
function policy(allowed: string, denied = '', mode: 'audit' | 'block' = 'block', extra: Record<string, string> = {}): Policy {
  const settings: Record<string, { value: string; origin: typeof origin }> = {
    mode: { value: mode, origin },
    'allowed-endpoints': { value: allowed, origin },
    'denied-endpoints': { value: denied, origin },
  };
  for (const [key, value] of Object.entries(extra)) settings[key] = { value, origin };
  return buildPolicy(settings);
}

const GITHUB = policy(
  `objects.githubusercontent.com
   github.com/my-org/**
   api.github.com/repos/my-org/**
   GET,HEAD registry.npmjs.org`,
  `POST api.github.com/user/repos
   * gist.github.com`,
);

function request(p: Policy, method: string, host: string, path: string) {
  return decide(p, { host, port: 443, method, path });
}

describe('entries', () => {
  test('a method list attaches to the entry after it, in a folded block and as one YAML item alike', () => {
    assert.deepEqual(
      GITHUB.endpoints.map((e) => e.source),
      ['objects.githubusercontent.com', 'github.com/my-org/**', 'api.github.com/repos/my-org/**', 'GET,HEAD registry.npmjs.org'],
    );
    assert.deepEqual(GITHUB.endpoints[3]!.methods, ['GET', 'HEAD']);
    const listed = buildPolicy({ 'allowed-endpoints': { value: [{ text: 'GET,HEAD registry.npmjs.org', origin }], origin } });
    assert.deepEqual(listed.endpoints[0]!.methods, ['GET', 'HEAD']);
    assert.equal(GITHUB.deniedEndpoints[1]!.methods, undefined, '"*" is any method: a host-level entry');
  });

  test('entries that cannot be judged are refused with the entry named', () => {
    for (const [text, why] of [
      ['GET', /names methods but no host follows/],
      ['github.com/a/%2Fb', /encoded/],
      ['github.com/a**/b', /whole segments/],
      ['github.com/a?x=1', /query string/],
      ['github.com/a//b', /empty segment/],
      ['get,HEAD x.test', /write methods in upper case/],
    ] as const) {
      assert.throws(
        () => policy(text),
        (err: unknown) => err instanceof PolicyError && why.test(err.message),
        text,
      );
    }
  });
});

describe('decisions', () => {
  test('paths: only under the allowed prefix, dot-segments resolved first', () => {
    assert.equal(request(GITHUB, 'GET', 'github.com', '/my-org/app.git/info/refs?service=git-upload-pack').outcome, 'allowed');
    assert.equal(request(GITHUB, 'POST', 'github.com', '/my-org/app.git/git-receive-pack').outcome, 'allowed');
    assert.equal(request(GITHUB, 'GET', 'github.com', '/my-org').outcome, 'allowed');
    const loot = request(GITHUB, 'POST', 'github.com', '/attacker/loot.git/git-receive-pack');
    assert.equal(loot.reason, 'path-not-allowed');
    assert.equal(request(GITHUB, 'GET', 'github.com', '/my-org/../attacker/loot').reason, 'path-not-allowed');
    assert.equal(request(GITHUB, 'GET', 'github.com', '/my-org/%2e%2e/attacker/loot').reason, 'path-not-allowed');
    assert.equal(request(GITHUB, 'GET', 'github.com', '/my-orgx/app').reason, 'path-not-allowed');
    assert.equal(request(GITHUB, 'GET', 'github.com', '/My-Org/app').reason, 'path-not-allowed', 'allow entries match case-sensitively');
  });

  test('paths that cannot be made canonical are refused, never guessed', () => {
    for (const path of ['/my-org%2fapp', '/my-org%5capp', '/my-org\\app', '/my-org//app', '/../my-org', '/my-org/%zz', 'my-org/app', '/my-org/a b']) {
      assert.equal(request(GITHUB, 'GET', 'github.com', path).reason, 'invalid-path', path);
    }
  });

  test('a double percent-encoding is refused (a server that decodes twice reads %252e%252e as ..); a lone %25 is a %', () => {
    for (const path of ['/my-org/%252e%252e/attacker/loot', '/my-org/%252F', '/my-org/app%2541']) {
      assert.equal(request(GITHUB, 'POST', 'github.com', path).reason, 'invalid-path', path);
    }
    for (const path of ['/my-org/100%25', '/my-org/100%25-off', '/my-org/%25zz']) assert.equal(request(GITHUB, 'GET', 'github.com', path).outcome, 'allowed', path);
  });

  test('path parameters (;) are refused, literal or encoded: Tomcat, Jetty and Spring drop them, so /my-org/..;/attacker is /attacker there', () => {
    for (const path of [
      '/my-org/..;/attacker/loot',
      '/my-org/..;x/attacker/loot',
      '/my-org/.;/app',
      '/my-org/app;jsessionid=1',
      '/my-org/..%3B/attacker/loot',
      '/my-org/app%3bx',
    ]) {
      assert.equal(request(GITHUB, 'POST', 'github.com', path).reason, 'invalid-path', path);
    }
    // A denial a server that drops the parameter would not see past: POST /user/repos;x is /user/repos there.
    const p = policy('api.github.com', 'POST api.github.com/user/repos');
    assert.equal(request(p, 'POST', 'api.github.com', '/user/repos;x').reason, 'invalid-path');
    assert.equal(request(p, 'GET', 'api.github.com', '/repos/my-org/app?a=1;b=2').outcome, 'allowed', 'a ; in the query is not the path');
    assert.throws(() => compilePathPattern('/my-org;x/**'), /;/);
  });

  test('method override headers: each method named must be allowed and none denied; hosts without method entries are not judged', () => {
    const p = policy('GET,POST api.test/repos/** other.test', 'DELETE api.test/repos/**');
    const asked = (method: string, overrides: string[], host = 'api.test') => decide(p, { host, port: 443, method, path: '/repos/x', methodOverrides: overrides });
    assert.equal(asked('POST', ['DELETE']).reason, 'denied-endpoint');
    assert.equal(asked('POST', ['delete']).reason, 'denied-endpoint');
    assert.equal(asked('POST', ['PUT']).reason, 'method-not-allowed');
    assert.match(asked('POST', ['PUT']).message, /PUT instead \(a method override header, or a _method parameter or body field\)/);
    assert.equal(asked('POST', ['GET']).outcome, 'allowed');
    assert.equal(asked('POST', []).outcome, 'allowed');
    assert.equal(asked('PUT', ['POST']).reason, 'method-not-allowed', 'the method itself is still judged');
    assert.equal(asked('POST', ['DELETE'], 'other.test').outcome, 'allowed', 'a host-level entry: methods are not judged');
  });

  test("a body that may name a method: read only where some method is refused that the request's is not; unread, refused there", () => {
    const p = policy('GET,HEAD,POST api.test/repos/** * any.test other.test POST,DELETE both.test/x/**', 'DELETE both.test/x/secret');
    const matters = (host: string, path = '/repos/x', method = 'POST') => bodyMethodMatters(p, { host, port: 443, method, path });
    assert.equal(matters('api.test'), true, 'DELETE (and any method not listed) is refused where POST is allowed');
    assert.equal(matters('API.test.'), true, 'the host as the client spelt it');
    assert.equal(matters('api.test', '/elsewhere'), false, 'POST is refused there anyway');
    assert.equal(matters('any.test'), false, 'every method is allowed');
    assert.equal(matters('other.test'), false, 'a host-level entry: methods are not judged');
    assert.equal(matters('127.0.0.1'), false, 'an address: allowed-ips decide');
    assert.equal(matters('both.test', '/x'), true, 'a method no entry names (PUT) is refused');
    assert.equal(matters('both.test', '/x/secret'), true, 'DELETE is denied there');
    const unread = (host: string, path = '/repos/x') => decide(p, { host, port: 443, method: 'POST', path, unreadBody: 'its body is larger than 1 MiB' });
    assert.equal(unread('api.test').reason, 'method-not-allowed');
    assert.match(
      unread('api.test').message,
      /^POST api\.test\/repos\/x: its body is larger than 1 MiB, so a _method field in it .* could not be judged; not every method is allowed here$/,
    );
    assert.match(unread('both.test', '/x/secret').message, /DELETE is not allowed here$/);
    assert.equal(unread('any.test').outcome, 'allowed', 'nothing it could name is refused');
  });

  test('methods: installs pass, publishing does not', () => {
    assert.equal(request(GITHUB, 'GET', 'registry.npmjs.org', '/left-pad').outcome, 'allowed');
    assert.equal(request(GITHUB, 'head', 'registry.npmjs.org', '/left-pad').outcome, 'allowed');
    assert.equal(request(GITHUB, 'PUT', 'registry.npmjs.org', '/left-pad').reason, 'method-not-allowed');
  });

  test('a host with method entries only is judged by the method, whatever its path: npm asks for scoped packages as /@scope%2fname', () => {
    assert.equal(request(GITHUB, 'GET', 'registry.npmjs.org', '/@types%2fnode').outcome, 'allowed');
    assert.equal(request(GITHUB, 'PUT', 'registry.npmjs.org', '/@types%2fnode').reason, 'method-not-allowed');
    // Where an entry for the host has a path (allowing or denying), the path must be canonical to be judged.
    const withPath = policy('GET,HEAD registry.npmjs.org', 'PUT registry.npmjs.org/-/user/**');
    assert.equal(request(withPath, 'GET', 'registry.npmjs.org', '/@types%2fnode').reason, 'invalid-path');
    assert.equal(request(policy('registry.npmjs.org/@types/**'), 'GET', 'registry.npmjs.org', '/@types%2fnode').reason, 'invalid-path');
  });

  test('denied entries win over any allow, case-insensitively, and deny whole hosts (DNS too)', () => {
    const p = policy('*.github.com github.com', 'POST api.github.com/user/repos\n* gist.github.com');
    assert.equal(request(p, 'POST', 'api.github.com', '/user/repos').reason, 'denied-endpoint');
    assert.equal(request(p, 'POST', 'api.github.com', '/USER/Repos').reason, 'denied-endpoint');
    assert.equal(request(p, 'GET', 'api.github.com', '/user/repos').outcome, 'allowed');
    assert.equal(decide(p, { host: 'gist.github.com', port: 443 }).reason, 'denied-endpoint');
    assert.equal(decideName(p, 'gist.github.com').reason, 'denied-endpoint');
    assert.equal(decideName(p, 'api.github.com').outcome, 'allowed');
  });

  test('a connection to a host with request rules needs inspection; host-only hosts are decided as before', () => {
    const connection = decide(GITHUB, { host: 'github.com', port: 443 });
    assert.equal(connection.reason, 'inspection-required');
    assert.equal(connection.outcome, 'blocked');
    const inspectable = decide(GITHUB, { host: 'github.com', port: 443, inspectable: true });
    assert.equal(inspectable.outcome, 'allowed');
    assert.equal(inspectable.inspect, true);
    const plain = decide(GITHUB, { host: 'objects.githubusercontent.com', port: 443, inspectable: true });
    assert.equal(plain.inspect, undefined, 'never inspected');
    // A host without request rules judges no path: an absolute-form target or an odd path passes as before.
    assert.equal(request(GITHUB, 'GET', 'objects.githubusercontent.com', 'http://x/a//b').outcome, 'allowed');
  });

  test('audit mode reports would-block per request; enforce-denied-in-audit refuses denied entries anyway', () => {
    const audit = policy('github.com/my-org/**', '* gist.github.com', 'audit');
    assert.equal(request(audit, 'GET', 'github.com', '/attacker/x').outcome, 'would-block');
    assert.equal(decide(audit, { host: 'gist.github.com', port: 443 }).outcome, 'would-block');
    const enforced = policy('github.com/my-org/**', '* gist.github.com', 'audit', { 'enforce-denied-in-audit': 'true' });
    assert.equal(decide(enforced, { host: 'gist.github.com', port: 443 }).outcome, 'blocked');
    assert.equal(request(enforced, 'GET', 'github.com', '/attacker/x').outcome, 'would-block', 'only denied entries are enforced');
  });
});

describe('the normaliser and matcher (properties)', () => {
  const segmentChar = fc.constantFrom(...'abcXYZ019-._~!$&()*+,;=:@'.split(''), '%41', '%7e', '%20', '%2F', '%5c', '.', '..');
  const segment = fc.array(segmentChar, { minLength: 0, maxLength: 5 }).map((parts) => parts.join(''));
  const rawPath = fc.array(segment, { minLength: 1, maxLength: 6 }).map((segments) => `/${segments.join('/')}`);
  const patternSegment = fc.constantFrom('a', 'b', '*', '**', 'a*', '~x', 'X');
  const pattern = fc.array(patternSegment, { minLength: 1, maxLength: 4 }).map((segments) => `/${segments.join('/')}`);

  /** Percent-encode some unreserved characters: a spelling servers read as the same path. */
  function respell(path: string, mask: number): string {
    // Characters of an existing %XX escape stay as they are: encoding them would be another path.
    return path.replace(/%[0-9A-Fa-f]{2}|./g, (c, at: number) =>
      c.length === 1 && /[A-Za-z0-9\-._~]/.test(c) && (mask >> (at % 30)) & 1 ? `%${c.charCodeAt(0).toString(16).padStart(2, '0')}` : c,
    );
  }

  test('normalising is idempotent', () => {
    fc.assert(
      fc.property(rawPath, (raw) => {
        const once = normalisePath(raw);
        if (!once.ok) return;
        const twice = normalisePath(once.path);
        assert.ok(twice.ok);
        assert.equal(twice.path, once.path);
      }),
      { numRuns: 500 },
    );
  });

  test('no spelling of a path matches differently from its canonical form', () => {
    fc.assert(
      fc.property(rawPath, pattern, fc.integer({ min: 0, max: 2 ** 30 - 1 }), (raw, text, mask) => {
        const compiled = compilePathPattern(text);
        const canonical = normalisePath(raw);
        const respelt = normalisePath(respell(raw, mask));
        assert.equal(respelt.ok, canonical.ok, `${raw} vs ${respell(raw, mask)}`);
        if (!canonical.ok || !respelt.ok) return;
        assert.equal(respelt.path, canonical.path);
        assert.equal(matchPath(compiled, respelt.path), matchPath(compiled, canonical.path));
        // And the policy decides both spellings alike.
        const p = policy(`x.test${text}`);
        assert.equal(request(p, 'GET', 'x.test', respell(raw, mask)).outcome, request(p, 'GET', 'x.test', raw).outcome);
      }),
      { numRuns: 500 },
    );
  });

  test('a detour through a segment and back (/x/..) changes nothing', () => {
    fc.assert(
      fc.property(rawPath, fc.integer({ min: 1, max: 5 }), (raw, at) => {
        const segments = raw.slice(1).split('/');
        const cut = Math.min(at, segments.length - 1);
        const detour = `/${[...segments.slice(0, cut), 'detour', '..', ...segments.slice(cut)].join('/')}`;
        const a = normalisePath(raw);
        const b = normalisePath(detour);
        if (a.ok && b.ok) assert.equal(b.path, a.path);
      }),
      { numRuns: 300 },
    );
  });
});
