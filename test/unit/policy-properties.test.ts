import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import {
  buildPolicy,
  canonicalHost,
  compileHostPattern,
  decide,
  decideName,
  matchHost,
  parsePolicyFile,
  PolicyError,
  type Policy,
  type PolicySettings,
} from '../../policy/index.js';

const RUNS = 400;
const OUTCOMES = new Set(['allowed', 'blocked', 'would-block']);

function policy(endpoints: string, allowedIps = '', mode: 'audit' | 'block' = 'block'): Policy {
  const origin = { file: 'policy-properties.test', line: 1 };
  return buildPolicy({ mode: { value: mode, origin }, 'allowed-endpoints': { value: endpoints, origin }, 'allowed-ips': { value: allowedIps, origin } });
}

// --- IPv4 spellings -------------------------------------------------------------------------------

type Radix = 'dec' | 'hex' | 'HEX' | 'oct';

function spell(value: number, radix: Radix): string {
  switch (radix) {
    case 'dec':
      return String(value);
    case 'hex':
      return `0x${value.toString(16)}`;
    case 'HEX':
      return `0X${value.toString(16).toUpperCase()}`;
    case 'oct':
      return `0${value.toString(8)}`;
  }
}

/** Split an address into the parts of an inet_aton form: a, a.b (8.24), a.b.c (8.8.16) or a.b.c.d. */
function parts(n: number, count: 1 | 2 | 3 | 4): number[] {
  const [a, b, c, d] = [n >>> 24, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff];
  if (count === 1) return [n];
  if (count === 2) return [a, n & 0xffffff];
  if (count === 3) return [a, b, n & 0xffff];
  return [a, b, c, d];
}

const radix = fc.constantFrom<Radix>('dec', 'hex', 'HEX', 'oct');
const ipv4Spelling = fc
  .record({
    n: fc.integer({ min: 0, max: 0xffffffff }),
    count: fc.constantFrom<1 | 2 | 3 | 4>(1, 2, 3, 4),
    radixes: fc.array(radix, { minLength: 4, maxLength: 4 }),
    trailingDot: fc.boolean(),
  })
  .map(({ n, count, radixes, trailingDot }) => ({
    dotted: [n >>> 24, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff].join('.'),
    n,
    spelling:
      parts(n, count)
        .map((p, i) => spell(p, radixes[i]!))
        .join('.') + (trailingDot ? '.' : ''),
  }));

test('property: every spelling of an IPv4 address canonicalises to that address', () => {
  fc.assert(
    fc.property(ipv4Spelling, ({ dotted, spelling }) => {
      const host = canonicalHost(spelling);
      assert.equal(host.type, 'ip', spelling);
      assert.equal(host.type === 'ip' ? host.text : '', dotted, spelling);
    }),
    { numRuns: RUNS * 5 },
  );
});

test('property: every spelling, IPv4-mapped IPv6 included, is decided by allowed-ips alone', () => {
  fc.assert(
    fc.property(ipv4Spelling, fc.constantFrom('plain', 'mapped-dotted', 'mapped-hex'), ({ dotted, n, spelling }, form) => {
      const host = form === 'plain' ? spelling : form === 'mapped-dotted' ? `[::ffff:${dotted}]` : `[::ffff:${(n >>> 16).toString(16)}:${(n & 0xffff).toString(16)}]`;
      const denied = decide(policy('example.com'), { host, port: 443 });
      assert.equal(denied.reason, 'raw-ip', host);
      assert.equal(denied.outcome, 'blocked');
      const allowed = decide(policy('example.com', `${dotted}/32`), { host, port: 443 });
      assert.equal(allowed.outcome, 'allowed', host);
      assert.equal(allowed.rule, `${dotted}/32`);
    }),
    { numRuns: RUNS },
  );
});

test('property: a canonical host is its own canonical form (the SNI check compares an SNI to it as it is)', () => {
  const hostUnit = fc.constantFrom(...'aZ09-_.:[]%xX\u00e9\u00df\u0130\u212a\uff0e\u3002'.split(''));
  const host = fc.oneof(
    ipv4Spelling.map((v) => v.spelling),
    fc.ipV6(),
    fc.ipV6().map((v) => `[${v.toUpperCase()}]`),
    fc.domain().map((d) => d.toUpperCase()),
    fc.domain().map((d) => `${d}.`),
    fc.string({ unit: hostUnit, minLength: 1, maxLength: 30 }),
    fc.constantFrom('B\u00dcCHER.test', 'xn--bcher-kva.test', 'a.0x10', 'a.1', 'bench.test.', '\u0130stanbul.test', 'K\u212aLVIN.test', 'faß.de'),
  );
  let canonicalOnes = 0;
  fc.assert(
    fc.property(host, (input) => {
      const first = canonicalHost(input);
      if (first.type === 'invalid') return;
      canonicalOnes++;
      const text = first.type === 'name' ? first.name : first.text;
      const again = canonicalHost(text);
      assert.equal(again.type, first.type, `${input} -> ${text}`);
      assert.equal(again.type === 'name' ? again.name : again.type === 'ip' ? again.text : '', text, input);
    }),
    { numRuns: RUNS * 10, seed: 14 },
  );
  assert.ok(canonicalOnes > RUNS, `only ${canonicalOnes} inputs were hosts`);
});

// --- host patterns --------------------------------------------------------------------------------

const label = fc.stringMatching(/^[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?$/);
const labels = (min: number, max: number) => fc.array(label, { minLength: min, maxLength: max });
const globPart = fc.stringMatching(/^[a-z0-9-]{0,5}$/);

test('property: a host never matches a pattern whose fixed suffix differs', () => {
  fc.assert(
    fc.property(labels(0, 3), labels(1, 3), fc.nat(), label, globPart, (prefix, suffix, at, replacement, glob) => {
      const i = at % suffix.length;
      fc.pre(suffix[i] !== replacement);
      const near = [...suffix];
      near[i] = replacement;
      const host = [...prefix, ...near].join('.');
      const fixed = suffix.join('.');
      for (const pattern of [fixed, `*.${fixed}`, `${glob}*.${fixed}`, `*.${glob}*.${fixed}`]) {
        assert.equal(matchHost(compileHostPattern(pattern), host), false, `${pattern} vs ${host}`);
      }
    }),
    { numRuns: RUNS },
  );
});

test('property: *.x.y matches every subdomain of x.y but never x.y', () => {
  fc.assert(
    fc.property(labels(2, 4), labels(1, 3), (suffix, sub) => {
      const apex = suffix.join('.');
      const pattern = compileHostPattern(`*.${apex}`);
      assert.equal(matchHost(pattern, apex), false, apex);
      assert.equal(matchHost(pattern, `${sub.join('.')}.${apex}`), true);
    }),
    { numRuns: RUNS },
  );
});

test('property: a label glob matches within one label and never across a dot', () => {
  fc.assert(
    fc.property(globPart, globPart, labels(1, 3), globPart, globPart, globPart, (pre, post, fixedLabels, m, m1, m2) => {
      // a bare `*` label is the any-depth prefix, not a label glob; canonical hosts have no empty labels
      fc.pre(pre + post !== '' && pre + m1 !== '' && m2 + post !== '');
      const fixed = fixedLabels.join('.');
      for (const pattern of [`${pre}*${post}.${fixed}`, `api.${pre}*${post}.${fixed}`]) {
        const head = pattern.startsWith('api.') ? 'api.' : '';
        const compiled = compileHostPattern(pattern);
        assert.equal(matchHost(compiled, `${head}${pre}${m}${post}.${fixed}`), true, `${pattern} within a label`);
        assert.equal(matchHost(compiled, `${head}${pre}${m1}.${m2}${post}.${fixed}`), false, `${pattern} across a dot`);
      }
    }),
    { numRuns: RUNS },
  );
});

// --- robustness -----------------------------------------------------------------------------------

/** Pieces that make host parsers disagree: brackets, zones, userinfo, IDNA edge cases, odd unicode. */
const HOST_PIECES = [
  '[',
  ']',
  ':',
  '::',
  '.',
  '..',
  '%',
  '%25',
  '@',
  '#',
  '/',
  '\\',
  '?',
  '0x',
  '0',
  '7f',
  '127',
  '255',
  '4294967296',
  'ffff',
  'xn--',
  'xn--bcher-kva',
  'example',
  'com',
  '*',
  '-',
  '_',
  ' ',
  '\t',
  '\n',
  '\u0000',
  '\u00ad',
  '\u200b',
  'ß',
  'ü',
  '。',
  '．',
  'Ⅸ',
  '\ud800',
  '😀',
  'a'.repeat(64),
  '64:ff9b::',
  '2002:',
  'fe80::1%eth0',
  '1.2.3.4',
];
const hostSoup = fc.array(fc.constantFrom(...HOST_PIECES), { maxLength: 12 }).map((p) => p.join(''));
const anyHost = fc.oneof(fc.string({ unit: 'binary', maxLength: 300 }), fc.string({ unit: 'grapheme', maxLength: 100 }), hostSoup);
const anyPort = fc.oneof(fc.integer(), fc.constantFrom(0, -1, 65536, Number.NaN, Number.POSITIVE_INFINITY, 1.5));

test('property: decide and decideName never throw and always decide', () => {
  const policies = [policy('example.com *.example.net:* a*b.example.org:80', '10.0.0.0/8'), policy('example.com', '', 'audit')];
  fc.assert(
    fc.property(anyHost, anyPort, fc.option(fc.array(anyHost, { maxLength: 5 }), { nil: undefined }), fc.constantFrom(0, 1), (host, port, addresses, which) => {
      const p = policies[which]!;
      for (const d of [decide(p, { host, port, addresses }), decideName(p, host)]) {
        assert.ok(OUTCOMES.has(d.outcome));
        assert.equal(typeof d.message, 'string');
        assert.equal(d.outcome === 'allowed', d.permitted);
      }
    }),
    { numRuns: RUNS * 5 },
  );
});

test('property: decide never throws on huge hosts and address lists', () => {
  const p = policy('example.com *.example.net');
  fc.assert(
    fc.property(fc.string({ unit: 'binary-ascii', minLength: 1000, maxLength: 100_000 }), fc.constantFrom('', '.example.net', ':'), (junk, tail) => {
      const host = junk + tail;
      assert.ok(OUTCOMES.has(decide(p, { host, port: 443, addresses: [junk, '93.184.215.14'] }).outcome));
      assert.ok(OUTCOMES.has(decideName(p, host).outcome));
    }),
    { numRuns: 30 },
  );
  const long = `${'a.'.repeat(50_000)}example.net`;
  assert.equal(decide(p, { host: long, port: 443 }).reason, 'invalid-host');
});

const YAML_PIECES = [
  'mode',
  'dns',
  'allowed-endpoints',
  'allowed-ips',
  'trusted-ranges',
  'listen',
  ':',
  ': ',
  '\n',
  '  ',
  '- ',
  '>',
  '|',
  '|-',
  '>+',
  '#',
  '*',
  '&a ',
  '*a',
  '!!binary ',
  '!!set ',
  '!!map ',
  '!!seq ',
  '!!int ',
  '!foo ',
  '{',
  '}',
  '[',
  ']',
  ',',
  '"',
  "'",
  '? ',
  '---',
  '...',
  '%YAML 1.2\n',
  'block',
  'audit',
  'any',
  'github.com',
  '*.com',
  'x.example.com:*',
  '10.0.0.0/8',
  '<<: ',
  '\t',
  '\r\n',
  '\ufeff',
  '~',
  'null',
  '0x1f',
  '1e400',
  '__proto__',
  'constructor',
];
const yamlSoup = fc.array(fc.constantFrom(...YAML_PIECES), { maxLength: 40 }).map((p) => p.join(''));

test('property: parsePolicyFile + buildPolicy throw nothing but PolicyError', () => {
  fc.assert(
    fc.property(fc.oneof(yamlSoup, fc.string({ unit: 'binary', maxLength: 500 })), (text) => {
      try {
        buildPolicy(Object.fromEntries(parsePolicyFile(text, 'fuzz.yaml')) as PolicySettings);
      } catch (err) {
        assert.ok(err instanceof PolicyError, `${JSON.stringify(text)} threw ${String(err)}`);
        assert.equal(err.file, 'fuzz.yaml');
        assert.ok(Number.isInteger(err.line) && err.line >= 1, `line ${err.line}`);
      }
    }),
    { numRuns: RUNS * 5 },
  );
});
