import assert from 'node:assert/strict';
import { test } from 'node:test';
import { canonicalPattern, EntryError } from '../../policy/endpoint.js';
import { canonicalHost, compileHostPattern, matchHost } from '../../policy/index.js';

/**
 * Matcher semantics, one row per documented behaviour (in the spirit of Cilium's fqdn/matchpattern test).
 * Both sides go through the same canonicalisation the engine uses: the pattern through canonicalPattern()
 * (what parseEndpoint does at load), the host through canonicalHost() (what decide() does per request).
 * Rows marked `loadRejects` are patterns the policy loader refuses (see policy-file.test.ts); they are
 * compiled directly to show the matcher itself still never lets `*` cross a dot.
 */
interface Row {
  pattern: string;
  host: string;
  matches: boolean;
  why: string;
  loadRejects?: true;
}

const rows: Row[] = [
  // exact
  { pattern: 'example.com', host: 'example.com', matches: true, why: 'exact name' },
  { pattern: 'example.com', host: 'www.example.com', matches: false, why: 'exact does not cover subdomains' },
  { pattern: 'example.com', host: 'example.com.evil.net', matches: false, why: 'exact is not a prefix match' },
  { pattern: 'example.com', host: 'notexample.com', matches: false, why: 'exact is not a suffix match' },
  { pattern: 'example.com', host: 'example.co', matches: false, why: 'exact is not a prefix match' },
  { pattern: 'example.com', host: 'com', matches: false, why: 'parent is not covered' },

  // leading *. : one or more labels, never the apex
  { pattern: '*.example.com', host: 'a.example.com', matches: true, why: 'one label' },
  { pattern: '*.example.com', host: 'a.b.example.com', matches: true, why: 'any depth' },
  { pattern: '*.example.com', host: 'a.b.c.d.e.example.com', matches: true, why: 'any depth' },
  { pattern: '*.example.com', host: 'example.com', matches: false, why: 'not the apex' },
  { pattern: '*.example.com', host: 'aexample.com', matches: false, why: 'the * label ends at a dot' },
  { pattern: '*.example.com', host: 'a.example.com.evil.net', matches: false, why: 'suffix is fixed' },
  { pattern: '*.example.com', host: 'example.com.evil.net', matches: false, why: 'suffix is fixed' },
  { pattern: '*.example.com', host: 'a.example.org', matches: false, why: 'suffix is fixed' },
  { pattern: '*.actions.githubusercontent.com', host: 'pipelinesghubeus2.actions.githubusercontent.com', matches: true, why: 'real GitHub Actions host' },
  { pattern: '*.actions.githubusercontent.com', host: 'actions.githubusercontent.com', matches: false, why: 'not the apex' },
  { pattern: '*.*.example.com', host: 'a.b.example.com', matches: true, why: 'any-depth prefix plus one one-label glob' },
  { pattern: '*.*.example.com', host: 'b.example.com', matches: false, why: 'the second * needs a label of its own' },

  // * inside a label: within that label only
  { pattern: 'productionresultssa*.blob.core.windows.net', host: 'productionresultssa12.blob.core.windows.net', matches: true, why: 'in-label glob' },
  { pattern: 'productionresultssa*.blob.core.windows.net', host: 'productionresultssa.blob.core.windows.net', matches: true, why: 'in-label * may be empty' },
  { pattern: 'productionresultssa*.blob.core.windows.net', host: 'productionresultssa1.evil.blob.core.windows.net', matches: false, why: 'in-label * never crosses a dot' },
  { pattern: 'productionresultssa*.blob.core.windows.net', host: 'xproductionresultssa1.blob.core.windows.net', matches: false, why: 'the fixed part of the label is anchored' },
  { pattern: 'productionresultssa*.blob.core.windows.net', host: 'productionresultssa1.blob.core.windows.net.evil.net', matches: false, why: 'suffix is fixed' },
  { pattern: 'productionresultssa*.blob.core.windows.net', host: 'otherstorage.blob.core.windows.net', matches: false, why: 'prefix of the label is fixed' },
  { pattern: 'a*b.example.com', host: 'ab.example.com', matches: true, why: 'in-label * may be empty' },
  { pattern: 'a*b.example.com', host: 'a-x-b.example.com', matches: true, why: 'in-label glob' },
  { pattern: 'a*b.example.com', host: 'a.b.example.com', matches: false, why: 'in-label * never crosses a dot' },
  { pattern: '*-cdn.example.com', host: 'eu-cdn.example.com', matches: true, why: 'a label glob starting with * is one label' },
  { pattern: '*-cdn.example.com', host: 'x.eu-cdn.example.com', matches: false, why: 'a label glob is not the any-depth prefix' },
  { pattern: 'api.*.example.com', host: 'api.eu.example.com', matches: true, why: 'middle * is one label' },
  { pattern: 'api.*.example.com', host: 'api.eu.west.example.com', matches: false, why: 'middle * is exactly one label' },
  { pattern: 'api.*.example.com', host: 'api.example.com', matches: false, why: 'middle * is exactly one label' },
  { pattern: 'example.*', host: 'example.com', matches: true, why: 'trailing * is one label', loadRejects: true },
  { pattern: 'example.*', host: 'example.com.evil.net', matches: false, why: 'trailing * never crosses a dot', loadRejects: true },
  { pattern: 'example.*', host: 'example.co.uk', matches: false, why: 'trailing * never crosses a dot', loadRejects: true },

  // case-insensitive, both sides
  { pattern: 'Example.COM', host: 'example.com', matches: true, why: 'pattern case ignored' },
  { pattern: 'example.com', host: 'EXAMPLE.Com', matches: true, why: 'host case ignored' },
  { pattern: '*.Example.com', host: 'A.B.EXAMPLE.COM', matches: true, why: 'case ignored under any-depth' },
  { pattern: 'ProductionResultsSA*.blob.core.windows.net', host: 'productionresultssa7.BLOB.core.windows.NET', matches: true, why: 'case ignored in label globs' },

  // trailing dot (fully qualified form), both sides
  { pattern: 'example.com.', host: 'example.com', matches: true, why: 'pattern trailing dot ignored' },
  { pattern: 'example.com', host: 'example.com.', matches: true, why: 'host trailing dot ignored' },
  { pattern: '*.example.com.', host: 'a.example.com.', matches: true, why: 'trailing dots ignored under any-depth' },
  { pattern: '*.example.com', host: 'example.com.', matches: false, why: 'trailing dot does not make the apex a subdomain' },

  // IDN: punycode on both sides
  { pattern: 'bücher.example', host: 'xn--bcher-kva.example', matches: true, why: 'unicode pattern, punycode host' },
  { pattern: 'xn--bcher-kva.example', host: 'bücher.example', matches: true, why: 'punycode pattern, unicode host' },
  { pattern: 'BÜCHER.example', host: 'bücher.EXAMPLE', matches: true, why: 'unicode case folded before punycode' },
  { pattern: '*.bücher.example', host: 'shop.BÜCHER.example', matches: true, why: 'unicode under any-depth' },
  { pattern: '*.bücher.example', host: 'shop.bucher.example', matches: false, why: 'ü is not u' },
  { pattern: 'straße.de', host: 'straße.de', matches: true, why: 'same unicode name' },
  { pattern: 'straße.de', host: 'strasse.de', matches: false, why: 'non-transitional IDNA: ß stays ß' },
  { pattern: 'example.com', host: 'еxample.com', matches: false, why: 'Cyrillic е homograph is a different name' },
  { pattern: 'example.com', host: 'ｅｘａｍｐｌｅ．ｃｏｍ', matches: true, why: 'full-width form maps to ASCII (IDNA mapping)' },
];

function compile(row: Row) {
  if (row.loadRejects) {
    assert.throws(() => canonicalPattern(row.pattern, row.pattern), EntryError, `${row.pattern} should be rejected at load`);
    return compileHostPattern(row.pattern);
  }
  return compileHostPattern(canonicalPattern(row.pattern, row.pattern).pattern);
}

test('host pattern semantics: exact, *. any depth, in-label *, case, trailing dot, IDN', () => {
  const wrong: string[] = [];
  for (const row of rows) {
    const host = canonicalHost(row.host);
    assert.equal(host.type, 'name', `${row.host} should canonicalise to a name`);
    const got = matchHost(compile(row), host.type === 'name' ? host.name : '');
    if (got !== row.matches) wrong.push(`${row.pattern} vs ${row.host}: expected ${row.matches} (${row.why}), got ${got}`);
  }
  assert.deepEqual(wrong, []);
});
