import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { InputError, inputWords, parseActionInputs } from '../../action/inputs.js';
import { actionLayout } from '../../action/layout.js';
import { withRunnerEndpoints } from '../../action/runner-endpoints.js';
import { ciVariables, inInputTerms, sidecarEnvironment } from '../../action/sidecar-settings.js';
import { loadConfig } from '../../config/load-config.js';

/** Inputs as GitHub hands them over: the workflow's values, '' for the rest (action.yml defaults are '' too). */
function reader(values: Record<string, string>) {
  return (name: string) => values[name] ?? '';
}

const LAYOUT = actionLayout({ RUNNER_TEMP: '/home/runner/work/_temp' });

describe('action inputs', () => {
  it('takes a peer action allowed-endpoints block unchanged: a folded block scalar, one entry a line or several on one', () => {
    const block = 'github.com:443\n  registry.npmjs.org:443   objects.githubusercontent.com:443\n*.blob.core.windows.net:443 # artifacts\n\n';
    assert.deepEqual(inputWords(block), ['github.com:443', 'registry.npmjs.org:443', 'objects.githubusercontent.com:443', '*.blob.core.windows.net:443']);
    assert.deepEqual(inputWords('a.test:443,b.test:80'), ['a.test:443', 'b.test:80']);
  });

  it('defaults: no mode (the policy file or egress-guard decides), summary on, sudo kept, no failing', () => {
    assert.deepEqual(parseActionInputs(reader({})), { allowedEndpoints: [], allowedIps: [], trustedRanges: [], disableSudo: false, failOnBlock: false, jobSummary: true });
  });

  it('reads every input', () => {
    const inputs = parseActionInputs(
      reader({
        'egress-policy': 'block',
        'allowed-endpoints': 'github.com:443',
        'policy-file': '.github/egress.yaml',
        'allowed-ips': '203.0.113.0/24',
        'trusted-ranges': '10.0.0.0/8 2001:db8::/32',
        'dns-policy': 'any',
        'encrypted-client-hello': 'allow',
        'disable-sudo': 'true',
        'collector-url': 'https://collector.test/',
        'collector-token': 's3cret',
        'fail-on-block': 'True',
        'job-summary': 'FALSE',
      }),
    );
    assert.deepEqual(inputs, {
      mode: 'block',
      allowedEndpoints: ['github.com:443'],
      policyFile: '.github/egress.yaml',
      allowedIps: ['203.0.113.0/24'],
      trustedRanges: ['10.0.0.0/8', '2001:db8::/32'],
      dnsPolicy: 'any',
      encryptedClientHello: 'allow',
      disableSudo: true,
      collectorUrl: 'https://collector.test/',
      collectorToken: 's3cret',
      failOnBlock: true,
      jobSummary: false,
    });
  });

  it('refuses what it cannot mean, naming the input', () => {
    assert.throws(
      () => parseActionInputs(reader({ 'egress-policy': 'enforce' })),
      (err: Error) => err instanceof InputError && /egress-policy: "enforce"/.test(err.message),
    );
    assert.throws(() => parseActionInputs(reader({ 'disable-sudo': 'yes' })), /disable-sudo: "yes" is not true or false/);
    assert.throws(() => parseActionInputs(reader({ 'dns-policy': 'none' })), /dns-policy/);
    assert.throws(() => parseActionInputs(reader({ 'encrypted-client-hello': 'ignore' })), /encrypted-client-hello: "ignore" is not one of refuse, allow/);
    assert.throws(() => parseActionInputs(reader({ 'collector-url': 'collector.test' })), /collector-url: "collector.test" is not a URL/);
    assert.throws(() => parseActionInputs(reader({ 'collector-url': 'ftp://collector.test' })), /is not http\(s\)/);
    assert.throws(() => parseActionInputs(reader({ 'collector-token': 'x' })), /collector-token is set but collector-url is not/);
  });
});

describe('action inputs -> egress-guard settings', () => {
  const facts = { dnsUpstream: ['168.63.129.16'] };

  it('listeners on loopback where the rules point, events in the state directory, the runner resolvers upstream', () => {
    const env = sidecarEnvironment(parseActionInputs(reader({})), LAYOUT, facts);
    assert.deepEqual(env, {
      EGRESS_LISTEN: '127.0.0.1:3128',
      EGRESS_TRANSPARENT_LISTEN: '127.0.0.1:3129 [::1]:3129 0.0.0.0:3132 [::]:3132',
      EGRESS_DNS_LISTEN: '127.0.0.1:53 [::1]:53 0.0.0.0:3153 [::]:3153',
      EGRESS_ADMIN_LISTEN: '127.0.0.1:3130',
      EGRESS_EVENTS_FILE: '/var/lib/egress-guard/events.ndjson',
      EGRESS_STATE_DIR: '/var/lib/egress-guard/sidecar',
      EGRESS_DNS_UPSTREAM: '168.63.129.16',
    });
  });

  it('is a configuration egress-guard loads: the inputs override the policy file, which sets the rest', () => {
    const policyFile = 'mode: block\ndns: any\nencrypted-client-hello: refuse\nallowed-endpoints:\n  - github.com:443\n';
    const inputs = parseActionInputs(
      reader({ 'allowed-endpoints': 'registry.npmjs.org:443\nfiles.pythonhosted.org', 'trusted-ranges': '10.0.0.0/8', 'encrypted-client-hello': 'allow' }),
    );
    const env = sidecarEnvironment(inputs, LAYOUT, { ...facts, policyFile: '/var/lib/egress-guard/policy.yaml', netfilterLog: '/var/lib/egress-guard/netlog/nflog.json' });
    const config = loadConfig({ flags: new Map(), env, readFile: () => policyFile });
    assert.equal(config.policy.mode, 'block');
    assert.equal(config.policy.dns, 'any');
    assert.equal(config.policy.encryptedClientHello, 'allow');
    assert.deepEqual(
      config.policy.endpoints.map((e) => e.source),
      ['registry.npmjs.org:443', 'files.pythonhosted.org'],
    );
    assert.equal(config.netfilterLog, '/var/lib/egress-guard/netlog/nflog.json');
    assert.deepEqual(config.dnsUpstream, ['168.63.129.16']);
  });

  it("the runner's own endpoints join the policy file's list; the file keeps every other key", () => {
    const policyFile = 'mode: block\nallowed-endpoints:\n  - github.com:443\n  - "*.actions.githubusercontent.com:443"\nallowed-ips: [203.0.113.0/24]\n';
    const readFile = () => policyFile;
    const inputs = parseActionInputs(reader({ 'policy-file': '.github/egress.yaml' }));
    const asWritten = loadConfig({ flags: new Map(), env: sidecarEnvironment(inputs, LAYOUT, { ...facts, policyFile: '/p.yaml' }), readFile }).policy;
    const allowedEndpoints = withRunnerEndpoints(asWritten.endpoints.map((e) => e.source));
    assert.deepEqual(allowedEndpoints, ['github.com:443', '*.actions.githubusercontent.com:443', 'productionresultssa*.blob.core.windows.net:443']);
    const running = loadConfig({ flags: new Map(), env: sidecarEnvironment(inputs, LAYOUT, { ...facts, policyFile: '/p.yaml', allowedEndpoints }), readFile }).policy;
    assert.equal(running.mode, 'block');
    assert.deepEqual(
      running.allowedIps.map((r) => r.source),
      ['203.0.113.0/24'],
    );
    assert.deepEqual(
      running.endpoints.map((e) => e.source),
      allowedEndpoints,
    );
  });

  it('names the job in every event: the CI variables that sudo would drop are passed on', () => {
    const ci = ciVariables({ GITHUB_REPOSITORY: 'octo-org/webapp', GITHUB_RUN_ID: '9001', GITHUB_JOB: 'build', GITHUB_TOKEN: 'not this', HOME: '/home/runner' });
    assert.deepEqual(ci, { GITHUB_REPOSITORY: 'octo-org/webapp', GITHUB_RUN_ID: '9001', GITHUB_JOB: 'build' });
    assert.equal(sidecarEnvironment(parseActionInputs(reader({})), LAYOUT, { ...facts, ci }).GITHUB_JOB, 'build');
  });

  it('egress-policy beats the file; the collector gets a spool directory and its token', () => {
    const inputs = parseActionInputs(reader({ 'egress-policy': 'audit', 'collector-url': 'https://collector.test', 'collector-token': 't' }));
    const env = sidecarEnvironment(inputs, LAYOUT, { ...facts, policyFile: '/p.yaml' });
    const config = loadConfig({ flags: new Map(), env, readFile: () => 'mode: block\n' });
    assert.equal(config.policy.mode, 'audit');
    assert.equal(config.collectorUrl, 'https://collector.test');
    assert.equal(config.collectorToken, 't');
    assert.equal(config.spoolDir, '/var/lib/egress-guard/spool');
  });

  it('a bad entry fails with the input it came from, before anything on the runner changes', () => {
    const env = sidecarEnvironment(parseActionInputs(reader({ 'allowed-endpoints': 'github.com:443\n*.com:443' })), LAYOUT, facts);
    assert.throws(
      () => loadConfig({ flags: new Map(), env, readFile: () => '' }),
      (err: Error) => inInputTerms(err.message).startsWith('input allowed-endpoints: "*.com:443" has a wildcard directly over the public suffix "com"'),
    );
    assert.equal(inInputTerms('environment EGRESS_LISTEN:1: bad'), 'environment EGRESS_LISTEN:1: bad', 'a variable no input sets is left as it is');
  });
});
