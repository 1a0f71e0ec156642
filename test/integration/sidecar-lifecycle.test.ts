import assert from 'node:assert/strict';
import { mkdirSync, renameSync, symlinkSync, writeFileSync } from 'node:fs';
import net, { type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { runCli, startEgressGuard } from '../helpers/egress-guard-process.js';
import { openTunnel } from '../helpers/raw-client.js';
import { tempDir } from '../helpers/temp-dir.js';

function echoServer(): Promise<{ port: number; close: () => Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => s.destroy());
    s.pipe(s);
  });
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () =>
      resolve({
        port: (server.address() as AddressInfo).port,
        close: () =>
          new Promise((r) => {
            for (const s of sockets) s.destroy();
            server.close(() => r());
          }),
      }),
    ),
  );
}

/** Send `text` as a line through a tunnel and read it back (text without its line end would be waited for, then read as HTTP). */
function echo(socket: net.Socket, word: string): Promise<string> {
  const text = `${word}\n`;
  return new Promise((resolve, reject) => {
    let got = '';
    const onData = (c: Buffer) => {
      got += c.toString();
      if (got.length >= text.length) {
        socket.off('data', onData);
        resolve(got.trimEnd());
      }
    };
    socket.on('data', onData);
    socket.once('error', reject);
    socket.write(text);
  });
}

describe('lifecycle: reload, drain, limits', () => {
  let echoSrv: Awaited<ReturnType<typeof echoServer>>;
  let dir: string;

  before(async () => {
    echoSrv = await echoServer();
    dir = tempDir('eg-life-');
  });
  after(() => echoSrv?.close());

  test('SIGHUP reloads the policy file without dropping open tunnels; a bad reload keeps the old policy', async () => {
    const policy = join(dir, 'reload.yaml');
    writeFileSync(policy, `mode: block\ntrusted-ranges: [127.0.0.0/8]\nallowed-endpoints:\n  - one.test:*\n  - two.test:*\n`);
    const guard = await startEgressGuard(['--policy', policy, '--resolve', 'one.test=127.0.0.1', '--resolve', 'two.test=127.0.0.1']);
    try {
      const open = await openTunnel(guard.port, `one.test:${echoSrv.port}`);
      assert.equal(open.status, 200);
      assert.equal(await echo(open.socket, 'before'), 'before');
      writeFileSync(policy, `mode: block\ntrusted-ranges: [127.0.0.0/8]\nallowed-endpoints:\n  - two.test:*\n`);
      guard.child.kill('SIGHUP');
      await guard.waitFor((l) => l.msg === 'policy reloaded');
      assert.equal(await echo(open.socket, 'after-reload'), 'after-reload', 'the open tunnel survived the reload');
      const denied = await openTunnel(guard.port, `one.test:${echoSrv.port}`);
      denied.socket.destroy();
      assert.equal(denied.status, 403, 'the new policy applies to new connections');
      writeFileSync(policy, `mode: block\nallowed-endpoints:\n  - "*.com"\n`);
      guard.child.kill('SIGHUP');
      const failed = await guard.waitFor((l) => l.msg === 'policy reload failed; keeping the previous policy');
      assert.match(String(failed.err), /reload\.yaml:3/);
      const still = await openTunnel(guard.port, `two.test:${echoSrv.port}`);
      assert.equal(still.status, 200);
      still.socket.destroy();
      open.socket.destroy();
    } finally {
      await guard.stop();
    }
  });

  test('with transparent listeners (redirect rules), a reload that changes the mode is refused and the old policy kept', async () => {
    const policy = join(dir, 'mode.yaml');
    writeFileSync(policy, `mode: audit\ntrusted-ranges: [127.0.0.0/8]\nallowed-endpoints:\n  - one.test:*\n`);
    const guard = await startEgressGuard(['--policy', policy, '--transparent-listen', '127.0.0.1:0', '--resolve', 'two.test=127.0.0.1']);
    try {
      writeFileSync(policy, `mode: block\ntrusted-ranges: [127.0.0.0/8]\nallowed-endpoints:\n  - one.test:*\n`);
      guard.child.kill('SIGHUP');
      const refused = await guard.waitFor((l) => typeof l.msg === 'string' && l.msg.startsWith('policy reload refused'));
      assert.equal(refused.mode, 'audit');
      assert.equal(refused.requested, 'block');
      // Still audit: a host the policy does not allow is relayed, as would-block.
      const tunnel = await openTunnel(guard.port, `two.test:${echoSrv.port}`);
      assert.equal(tunnel.status, 200);
      tunnel.socket.destroy();
      const event = await guard.waitFor((l) => l.event === 'decision' && l.host === 'two.test');
      assert.equal(event.decision, 'would-block');
    } finally {
      await guard.stop();
    }
  });

  test('watch-policy: a ConfigMap-style update (a ..data symlink swapped) reloads without a signal', async () => {
    // What the kubelet does: policy.yaml -> ..data/policy.yaml, ..data -> ..v1; an update writes ..v2 and swaps ..data.
    const mount = join(dir, 'configmap');
    const version = (name: string, endpoints: string) => {
      mkdirSync(join(mount, name), { recursive: true });
      writeFileSync(join(mount, name, 'policy.yaml'), `mode: block\ntrusted-ranges: [127.0.0.0/8]\nallowed-endpoints:\n  - ${endpoints}\n`);
    };
    version('..v1', 'one.test:*');
    symlinkSync('..v1', join(mount, '..data'));
    symlinkSync('..data/policy.yaml', join(mount, 'policy.yaml'));
    const guard = await startEgressGuard(['--policy', join(mount, 'policy.yaml'), '--resolve', 'one.test=127.0.0.1', '--resolve', 'two.test=127.0.0.1'], {
      EGRESS_WATCH_POLICY: 'true',
    });
    try {
      const before = await openTunnel(guard.port, `two.test:${echoSrv.port}`);
      before.socket.destroy();
      assert.equal(before.status, 403);
      version('..v2', 'two.test:*');
      symlinkSync('..v2', join(mount, '..data_tmp'));
      renameSync(join(mount, '..data_tmp'), join(mount, '..data'));
      await guard.waitFor((l) => l.msg === 'policy reloaded', 10_000);
      const after = await openTunnel(guard.port, `two.test:${echoSrv.port}`);
      after.socket.destroy();
      assert.equal(after.status, 200, 'the new policy applies without a restart or SIGHUP');
      assert.equal(guard.lines.filter((l) => l.msg === 'policy reloaded').length, 1, 'one change, one reload');
    } finally {
      await guard.stop();
    }
  });

  test('SIGTERM stops accepting, lets open tunnels drain, then exits 0', async () => {
    const guard = await startEgressGuard(['--resolve', 'one.test=127.0.0.1'], {
      EGRESS_ALLOWED_ENDPOINTS: 'one.test:*',
      EGRESS_TRUSTED_RANGES: '127.0.0.0/8',
      EGRESS_MODE: 'block',
      EGRESS_DRAIN_TIMEOUT: '5000',
    });
    const open = await openTunnel(guard.port, `one.test:${echoSrv.port}`);
    assert.equal(open.status, 200);
    const exited = guard.stop('SIGTERM');
    await guard.waitFor((l) => l.msg === 'shutting down: no new connections, draining');
    await assert.rejects(openTunnel(guard.port, `one.test:${echoSrv.port}`), /ECONNREFUSED/);
    assert.equal(await echo(open.socket, 'draining'), 'draining', 'open tunnel still works while draining');
    open.socket.destroy();
    assert.equal(await exited, 0);
  });

  test('a tunnel past max-tunnels gets 503 and the drain timeout bounds shutdown', async () => {
    const guard = await startEgressGuard(['--resolve', 'one.test=127.0.0.1'], {
      EGRESS_ALLOWED_ENDPOINTS: 'one.test:*',
      EGRESS_TRUSTED_RANGES: '127.0.0.0/8',
      EGRESS_MAX_TUNNELS: '2',
      EGRESS_DRAIN_TIMEOUT: '300',
    });
    const a = await openTunnel(guard.port, `one.test:${echoSrv.port}`);
    const b = await openTunnel(guard.port, `one.test:${echoSrv.port}`);
    const c = await openTunnel(guard.port, `one.test:${echoSrv.port}`);
    assert.deepEqual([a.status, b.status, c.status], [200, 200, 503]);
    c.socket.destroy();
    const exited = guard.stop('SIGTERM');
    assert.equal(await exited, 0, 'exits after the drain timeout although tunnels were still open');
    await guard.waitFor((l) => l.msg === 'drain timeout: closing open connections');
    a.socket.destroy();
    b.socket.destroy();
  });

  test('a bad policy file stops start-up with exit 2 and names file, line and entry', async () => {
    const bad = join(dir, 'bad.yaml');
    writeFileSync(bad, 'mode: block\nallowed-endpoints:\n  - github.com\n  - "*.co.uk"\n');
    await assert.rejects(
      startEgressGuard(['--policy', bad]),
      (err: Error) => /exited with 2/.test(err.message) && err.message.includes(`${bad}:4`) && err.message.includes('*.co.uk'),
    );
    const decided = await runCli(['decide', '--policy', bad, 'github.com']);
    assert.equal(decided.code, 2);
    assert.equal(JSON.parse(decided.stdout).line, 4);
    const missing = await runCli(['decide', '--policy', join(dir, 'missing.yaml'), 'github.com']);
    assert.equal(missing.code, 2);
    assert.match(missing.stderr, /cannot read policy file/);
  });

  test('decide: exit 0 allowed, 1 blocked, JSON on stdout; env settings apply; --address checks the address stage', async () => {
    const policy = join(dir, 'decide.yaml');
    writeFileSync(policy, 'mode: block\nallowed-endpoints: >\n  github.com\n  *.githubusercontent.com:443\n');
    const ok = await runCli(['decide', '--policy', policy, 'objects.githubusercontent.com']);
    assert.equal(ok.code, 0);
    assert.deepEqual(JSON.parse(ok.stdout), {
      decision: 'allowed',
      reason: 'allowed-endpoint',
      rule: '*.githubusercontent.com:443',
      message: 'objects.githubusercontent.com:443 is allowed by "*.githubusercontent.com:443"',
      host: 'objects.githubusercontent.com',
      port: 443,
      mode: 'block',
    });
    const blocked = await runCli(['decide', '--policy', policy, 'github.com:22']);
    assert.equal(blocked.code, 1);
    assert.equal(JSON.parse(blocked.stdout).reason, 'not-allowed-endpoint');
    const viaEnv = await runCli(['decide', 'github.com:22'], { EGRESS_ALLOWED_ENDPOINTS: 'github.com:22' });
    assert.equal(viaEnv.code, 0);
    const metadata = await runCli(['decide', '--policy', policy, '--address', '169.254.169.254', 'github.com']);
    assert.equal(metadata.code, 1);
    assert.equal(JSON.parse(metadata.stdout).reason, 'denied-address');
  });
});
