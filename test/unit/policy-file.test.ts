import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { ConfigError, loadConfig, type Flags } from '../../config/load-config.js';
import { buildPolicy, decide, parsePolicyFile, PolicyError, type Policy, type PolicySettings } from '../../policy/index.js';

// Compiled to dist/test/: the fixtures stay in the source tree.
const FIXTURES = fileURLToPath(new URL('../../../test/fixtures/policies/', import.meta.url));

function fixture(name: string): string {
  return join(FIXTURES, name);
}

function readFixture(file: string): string {
  return readFileSync(file, 'utf8');
}

/** What `egress-guard` does with a policy file, minus the config layering: parse, then validate. */
function loadPolicy(name: string): Policy {
  const file = fixture(name);
  return buildPolicy(Object.fromEntries(parsePolicyFile(readFixture(file), file)) as PolicySettings);
}

function policyError(fn: () => unknown): PolicyError {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof PolicyError, `expected PolicyError, got ${String(err)}`);
    return err;
  }
  assert.fail('expected a PolicyError, nothing was thrown');
}

function endpoints(policy: Policy) {
  return policy.endpoints.map((rule) => ({ source: rule.source, port: rule.port, line: rule.origin.line }));
}

describe('policy files that load', () => {
  test('full_policy_as_lists.yaml: every policy key', () => {
    const file = fixture('full_policy_as_lists.yaml');
    const policy = loadPolicy('full_policy_as_lists.yaml');
    assert.equal(policy.mode, 'block');
    assert.equal(policy.dns, 'any');
    assert.deepEqual(endpoints(policy), [
      { source: 'github.com', port: 443, line: 5 },
      { source: '*.actions.githubusercontent.com:443', port: 443, line: 6 },
      { source: 'registry.npmjs.org:*', port: '*', line: 7 },
      { source: 'deb.debian.org:80', port: 80, line: 8 },
    ]);
    assert.ok(policy.endpoints.every((rule) => rule.origin.file === file));
    assert.deepEqual(
      policy.allowedIps.map((r) => [r.source, r.origin.line]),
      [
        ['198.51.100.0/24', 10],
        ['2001:db8::/32', 11],
      ],
    );
    assert.deepEqual(
      policy.trustedRanges.map((r) => [r.source, r.origin.line]),
      [['10.0.0.0/8', 13]],
    );
    assert.deepEqual(policy.warnings, []);
  });

  test('endpoints_as_harden_runner_block.yaml: a pasted `>` block is a list of entries', () => {
    const policy = loadPolicy('endpoints_as_harden_runner_block.yaml');
    assert.deepEqual(
      policy.endpoints.map((r) => r.source),
      ['api.github.com:443', 'github.com:443', 'objects.githubusercontent.com:443', 'registry.npmjs.org:443'],
    );
    assert.equal(decide(policy, { host: 'github.com', port: 443 }).outcome, 'allowed');
    assert.equal(decide(policy, { host: 'gist.github.com', port: 443 }).outcome, 'blocked');
  });

  test('endpoints_as_literal_block.yaml: `|` block, commas, comments, each entry keeps its line', () => {
    assert.deepEqual(endpoints(loadPolicy('endpoints_as_literal_block.yaml')), [
      { source: 'api.github.com:443', port: 443, line: 3 },
      { source: 'github.com:443', port: 443, line: 4 },
      { source: 'registry.npmjs.org:443', port: 443, line: 4 },
      { source: 'objects.githubusercontent.com:443', port: 443, line: 6 },
    ]);
  });

  test('empty_file.yaml: defaults are audit, dns policy, nothing allowed', () => {
    const policy = loadPolicy('empty_file.yaml');
    assert.equal(policy.mode, 'audit');
    assert.equal(policy.dns, 'policy');
    assert.deepEqual([policy.endpoints, policy.allowedIps, policy.trustedRanges], [[], [], []]);
    assert.equal(decide(policy, { host: 'github.com', port: 443 }).outcome, 'would-block');
  });

  test('wildcard_over_private_suffix_warns.yaml: *.github.io loads with a warning naming file:line', () => {
    const file = fixture('wildcard_over_private_suffix_warns.yaml');
    const policy = loadPolicy('wildcard_over_private_suffix_warns.yaml');
    assert.deepEqual(policy.warnings, [`${file}:4: "*.github.io" wildcards over "github.io", a suffix where anyone can register names`]);
    assert.equal(decide(policy, { host: 'someone.github.io', port: 443 }).outcome, 'allowed');
  });
});

/** [fixture, line, entry, reason] for every file the loader must refuse. */
const REJECTED: Array<[name: string, line: number, entry: string, reason: RegExp]> = [
  ['wildcard_over_public_suffix.yaml', 4, '*.co.uk', /wildcard directly over the public suffix "co\.uk"/],
  ['bare_star.yaml', 3, '*', /bare \* is not accepted/],
  ['star_dot.yaml', 1, '*.', /bare \* is not accepted/],
  ['wildcard_top_level_label.yaml', 2, 'example.*', /wildcard in the top-level label/],
  ['double_star.yaml', 3, '**.example.com', /\*\* is not a pattern here/],
  ['empty_label.yaml', 4, 'api..github.com', /empty label/],
  ['invalid_port.yaml', 2, 'github.com:https', /invalid port "https"/],
  ['port_out_of_range.yaml', 3, 'github.com:65536', /port 65536 out of range 1-65535/],
  ['port_zero.yaml', 1, 'github.com:0', /port 0 out of range/],
  ['url_instead_of_host.yaml', 2, 'https://github.com', /./],
  ['ip_in_allowed_endpoints.yaml', 4, '10.0.0.1:443', /list addresses under allowed-ips/],
  ['ipv6_in_allowed_endpoints.yaml', 2, '[2001:db8::1]:443', /list addresses under allowed-ips/],
  ['yaml_syntax_error.yaml', 4, '', /YAML syntax error: Tabs/],
  ['duplicate_key.yaml', 3, '', /YAML syntax error: Map keys must be unique/],
  ['mode_typo.yaml', 2, 'blokc', /mode must be one of audit, block/],
  ['dns_typo.yaml', 1, 'all', /dns must be one of policy, any/],
  ['bad_allowed_ip.yaml', 3, '198.51.100.0/33', /not an address or CIDR range in allowed-ips/],
  ['bad_trusted_range.yaml', 1, 'corp.example.com', /not an address or CIDR range in trusted-ranges/],
  ['not_a_mapping.yaml', 1, '', /a policy file is a YAML mapping/],
  ['nested_entry.yaml', 3, '{"host":"registry.npmjs.org","port":443}', /entries of allowed-endpoints must be strings/],
  ['mapping_as_list.yaml', 2, 'allowed-endpoints', /allowed-endpoints must be a string or a list/],
  ['literal_block_bad_entry.yaml', 5, 'registry..npmjs.org:443', /empty label/],
];

describe('policy files the loader rejects with file, line and entry', () => {
  for (const [name, line, entry, reason] of REJECTED) {
    test(name, () => {
      const err = policyError(() => loadPolicy(name));
      assert.deepEqual({ file: err.file, line: err.line, entry: err.entry }, { file: fixture(name), line, entry });
      assert.match(err.reason, reason);
      assert.ok(err.message.startsWith(`${fixture(name)}:${line}: `), err.message);
    });
  }
});

// KNOWN BUGS (reported to the lead): these fixtures load when they must not, or lose entries/lines.
describe('policy file bugs', () => {
  // splitListString() gets the folded value: `>` joins the lines, so every entry reports the block's first line.
  test('harden_runner_block_bad_entry.yaml: a bad entry in a `>` block reports its own line', () => {
    const err = policyError(() => loadPolicy('harden_runner_block_bad_entry.yaml'));
    assert.deepEqual({ line: err.line, entry: err.entry }, { line: 5, entry: 'registry..npmjs.org:443' });
  });

  // Folding puts a comment and the lines after it on one line; `#.*$` then drops them silently.
  test('harden_runner_block_with_comment.yaml: a comment in a `>` block drops no entries', () => {
    assert.deepEqual(
      loadPolicy('harden_runner_block_with_comment.yaml').endpoints.map((r) => r.source),
      ['api.github.com:443', 'github.com:443', 'registry.npmjs.org:443'],
    );
  });

  // domainToASCII('github.com/my-org') stops at '/': the entry once silently became github.com (all of it). Since
  // method and path rules, it is a path rule: exactly /my-org, never the whole host.
  test('path_in_endpoint.yaml: a path is a path rule, not truncated to the host', () => {
    const policy = loadPolicy('path_in_endpoint.yaml');
    assert.equal(policy.endpoints[0]!.path?.source, '/my-org');
    assert.equal(decide(policy, { host: 'github.com', port: 443, method: 'GET', path: '/my-org' }).permitted, true);
    assert.equal(decide(policy, { host: 'github.com', port: 443, method: 'GET', path: '/other-org' }).permitted, false);
    assert.equal(decide(policy, { host: 'github.com', port: 443 }).reason, 'inspection-required');
  });

  // The address check in canonicalPattern() knows only 127.1-style and 0x7f000001-style spellings;
  // 0x7f.0.0.1 loads as a name that can never match (canonicalHost reads it as 127.0.0.1).
  test('hex_ip_in_allowed_endpoints.yaml: every address spelling is sent to allowed-ips', () => {
    const err = policyError(() => loadPolicy('hex_ip_in_allowed_endpoints.yaml'));
    assert.equal(err.line, 2);
    assert.match(err.reason, /list addresses under allowed-ips/);
  });
});

describe('loadConfig: unknown keys and precedence flag > env > file > default', () => {
  const readFile = (path: string) => readFileSync(path, 'utf8');
  const flags = (entries: Record<string, string[]> = {}): Flags => new Map(Object.entries(entries));

  test('unknown_key.yaml: an unknown setting names file, line and key', () => {
    const file = fixture('unknown_key.yaml');
    const err = policyError(() => loadConfig({ flags: flags({ policy: [file] }), env: {}, readFile }));
    assert.deepEqual({ file: err.file, line: err.line, entry: err.entry }, { file, line: 2, entry: 'allowed-endpoint' });
    assert.match(err.reason, /unknown setting "allowed-endpoint"/);
  });

  test('an unreadable policy file is a PolicyError naming it', () => {
    const missing = fixture('does_not_exist.yaml');
    const err = policyError(() => loadConfig({ flags: flags(), env: { EGRESS_POLICY_FILE: missing }, readFile }));
    assert.equal(err.file, missing);
    assert.match(err.reason, /cannot read policy file/);
  });

  test('stdout-events: auto by default (refused with an events file, all without); refused only with an events file (the record of what stdout leaves out)', () => {
    const file = { EGRESS_EVENTS_FILE: '/tmp/e.ndjson' };
    assert.equal(loadConfig({ flags: flags(), env: {}, readFile }).stdoutEvents, 'all');
    assert.equal(loadConfig({ flags: flags(), env: file, readFile }).stdoutEvents, 'refused');
    assert.equal(loadConfig({ flags: flags(), env: { ...file, EGRESS_STDOUT_EVENTS: 'all' }, readFile }).stdoutEvents, 'all');
    assert.equal(loadConfig({ flags: flags(), env: { ...file, EGRESS_STDOUT_EVENTS: 'refused' }, readFile }).stdoutEvents, 'refused');
    assert.throws(() => loadConfig({ flags: flags(), env: { EGRESS_STDOUT_EVENTS: 'refused' }, readFile }), /stdout-events: refused needs events-file/);
    assert.throws(() => loadConfig({ flags: flags({ 'stdout-events': ['some'] }), env: {}, readFile }), /stdout-events: "some" is not auto or all or refused/);
  });

  test('idle-timeout and connect-timeout: 0, negative, fractional or not a number is a ConfigError naming the key, from the file, the environment or a flag', () => {
    const policyFile = '/policy.test/egress.yaml';
    const fromFile = (text: string) => (path: string) => (path === policyFile ? text : readFile(path));
    // (An empty value is no value: the default.)
    for (const value of ['0', '00', '-1', '1.5', 'soon']) {
      for (const [key, env] of [
        ['idle-timeout', 'EGRESS_IDLE_TIMEOUT'],
        ['connect-timeout', 'EGRESS_CONNECT_TIMEOUT'],
      ] as const) {
        // The value as read (YAML reads a bare 00 as 0).
        const message = new RegExp(`^${key}: ".*" is not a whole number of milliseconds above 0$`);
        const refused = (fn: () => unknown) => assert.throws(fn, (err: Error) => err instanceof ConfigError && message.test(err.message), `${key}: "${value}"`);
        // In the file, as YAML (a quoted string where the bare value would be another type).
        refused(() => loadConfig({ flags: flags(), env: { EGRESS_POLICY_FILE: policyFile }, readFile: fromFile(`${key}: "${value}"\n`) }));
        refused(() => loadConfig({ flags: flags(), env: { EGRESS_POLICY_FILE: policyFile }, readFile: fromFile(`${key}: ${value}\n`) }));
        refused(() => loadConfig({ flags: flags(), env: { [env]: value }, readFile }));
        refused(() => loadConfig({ flags: flags({ [key]: [value] }), env: {}, readFile }));
      }
    }
    const config = loadConfig({ flags: flags(), env: { EGRESS_POLICY_FILE: policyFile }, readFile: fromFile('idle-timeout: 1\nconnect-timeout: 2500\n') });
    assert.deepEqual([config.idleTimeoutMs, config.connectTimeoutMs], [1, 2500]);
  });

  test('an unknown flag is a ConfigError', () => {
    assert.throws(() => loadConfig({ flags: flags({ 'allowed-endpoint': ['x.com'] }), env: {}, readFile }), ConfigError);
  });

  test('default: the embedded default policy, audit, 127.0.0.1:3128', () => {
    const config = loadConfig({ flags: flags(), env: {}, readFile });
    assert.equal(config.policy.mode, 'audit');
    assert.equal(config.settings.get('mode')?.source, 'default');
    assert.deepEqual(config.listen, { host: '127.0.0.1', port: 3128 });
    assert.equal(decide(config.policy, { host: 'registry.npmjs.org', port: 443 }).outcome, 'allowed');
  });

  test('file overrides default', () => {
    const config = loadConfig({ flags: flags(), env: { EGRESS_POLICY_FILE: fixture('precedence.yaml') }, readFile });
    assert.equal(config.policy.mode, 'block');
    assert.equal(config.settings.get('mode')?.source, 'file');
    assert.deepEqual(config.listen, { host: '127.0.0.1', port: 4000 });
    // a list from the file replaces the default list, it is not merged with it
    assert.deepEqual(
      config.policy.endpoints.map((r) => r.source),
      ['file.example.com'],
    );
  });

  test('env overrides file, empty env values are ignored', () => {
    const config = loadConfig({
      flags: flags(),
      env: { EGRESS_POLICY_FILE: fixture('precedence.yaml'), EGRESS_MODE: 'audit', EGRESS_LISTEN: '', EGRESS_ALLOWED_ENDPOINTS: 'env.example.com other.example.com:80' },
      readFile,
    });
    assert.equal(config.policy.mode, 'audit');
    assert.equal(config.settings.get('mode')?.source, 'env');
    assert.deepEqual(config.listen, { host: '127.0.0.1', port: 4000 });
    assert.deepEqual(
      config.policy.endpoints.map((r) => r.source),
      ['env.example.com', 'other.example.com:80'],
    );
  });

  test('flag overrides env and file', () => {
    const config = loadConfig({
      flags: flags({ policy: [fixture('precedence.yaml')], mode: ['block'], 'allowed-endpoints': ['flag.example.com', 'two.example.com three.example.com'] }),
      env: { EGRESS_MODE: 'audit', EGRESS_ALLOWED_ENDPOINTS: 'env.example.com', EGRESS_LISTEN: '127.0.0.1:5000' },
      readFile,
    });
    assert.equal(config.policy.mode, 'block');
    assert.equal(config.settings.get('mode')?.source, 'flag');
    assert.deepEqual(config.listen, { host: '127.0.0.1', port: 5000 });
    assert.deepEqual(
      config.policy.endpoints.map((r) => r.source),
      ['flag.example.com', 'two.example.com', 'three.example.com'],
    );
  });

  test('a bad entry in an environment variable names the variable and the line', () => {
    const err = policyError(() => loadConfig({ flags: flags(), env: { EGRESS_ALLOWED_ENDPOINTS: 'github.com\n*.com' }, readFile }));
    assert.deepEqual({ file: err.file, line: err.line, entry: err.entry }, { file: 'environment EGRESS_ALLOWED_ENDPOINTS', line: 2, entry: '*.com' });
  });

  test('a mode typo in the environment is refused, not read as audit', () => {
    const err = policyError(() => loadConfig({ flags: flags(), env: { EGRESS_MODE: 'blokc' }, readFile }));
    assert.deepEqual({ file: err.file, entry: err.entry }, { file: 'environment EGRESS_MODE', entry: 'blokc' });
  });

  test('encrypted-client-hello: refuse by default; allow from the file, the environment or a flag; anything else refused with where it was written', () => {
    assert.equal(loadConfig({ flags: flags(), env: {}, readFile }).policy.encryptedClientHello, 'refuse');
    const inFile = (text: string) => loadConfig({ flags: flags({ policy: ['/p.yaml'] }), env: {}, readFile: () => text }).policy.encryptedClientHello;
    assert.equal(inFile('mode: block\nencrypted-client-hello: allow\n'), 'allow');
    assert.equal(inFile('mode: block\nencrypted-client-hello: refuse\n'), 'refuse');
    assert.equal(loadConfig({ flags: flags(), env: { EGRESS_ENCRYPTED_CLIENT_HELLO: 'allow' }, readFile }).policy.encryptedClientHello, 'allow');
    assert.equal(
      loadConfig({ flags: flags({ 'encrypted-client-hello': ['allow'] }), env: { EGRESS_ENCRYPTED_CLIENT_HELLO: 'refuse' }, readFile }).policy.encryptedClientHello,
      'allow',
    );
    const typo = policyError(() => inFile('mode: block\nencrypted-client-hello: alow\n'));
    assert.deepEqual({ file: typo.file, line: typo.line, entry: typo.entry }, { file: '/p.yaml', line: 2, entry: 'alow' });
    assert.match(typo.reason, /encrypted-client-hello must be one of refuse, allow/);
  });

  test('a bad flag entry names the flag', () => {
    const err = policyError(() => loadConfig({ flags: flags({ 'allowed-ips': ['10.0.0.0/8', 'nope'] }), env: {}, readFile }));
    assert.deepEqual({ file: err.file, entry: err.entry }, { file: 'flag --allowed-ips', entry: 'nope' });
  });
});
