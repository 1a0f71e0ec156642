/**
 * A connection to the transparent listener that no redirect rule sent there (here: straight to it on loopback, as a
 * job does that names the listener as its HTTP proxy) is reset, in audit mode too, and since 2026-12-03 has a blocked
 * `not-redirected` decision naming the listener's address; before, a log line only, so the job's report did not say
 * why its requests failed. The real CLI; whether the kernel reports no original destination (no conntrack entry) or
 * the listener itself, the outcome is the same.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import net from 'node:net';
import { after, before, describe, test } from 'node:test';
import { startEgressGuard, type EgressGuardProcess } from '../helpers/egress-guard-process.js';

/** Connect, write a request, and say how the connection ended: `reset`, `closed` (with what came), or `timed out`. */
function outcome(port: number): Promise<string> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    let received = '';
    const done = (what: string) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(what);
    };
    const timer = setTimeout(() => done('timed out'), 5000);
    socket.on('connect', () => socket.write('GET http://allowed.test/ HTTP/1.1\r\nHost: allowed.test\r\n\r\n'));
    socket.on('data', (c: Buffer) => (received += c.toString('latin1')));
    socket.on('end', () => done(`closed ${JSON.stringify(received)}`));
    socket.on('error', (err: NodeJS.ErrnoException) => done(err.code === 'ECONNRESET' ? 'reset' : `error ${err.code}`));
  });
}

for (const mode of ['block', 'audit'] as const) {
  describe(`${mode} mode: a connection straight to the transparent listener`, () => {
    let eg: EgressGuardProcess;
    let transparentPort: number;
    before(async () => {
      eg = await startEgressGuard(['--mode', mode], { EGRESS_TRANSPARENT_LISTEN: '127.0.0.1:0', EGRESS_ALLOWED_ENDPOINTS: 'allowed.test' });
      transparentPort = (await eg.waitFor((l) => l.msg === 'listening' && l.listener === 'transparent')).port as number;
    });
    after(async () => {
      await eg?.stop();
    });

    test('is reset with a blocked not-redirected decision naming the listener', async () => {
      assert.equal(await outcome(transparentPort), 'reset');
      const event = await eg.waitFor((l) => l.event === 'decision' && l.reason === 'not-redirected');
      assert.deepEqual(
        [event.kind, event.host, event.ip, event.port, event.decision, event.rule, event.mode],
        ['transparent', '127.0.0.1', '127.0.0.1', transparentPort, 'blocked', null, mode],
      );
      assert.match(String(event.message), /no redirect rule sent there .*HTTP_PROXY/);
    });

    test('curl that names it as its proxy fails, and its report says why', async () => {
      const before = eg.events().filter((l) => l.reason === 'not-redirected').length;
      const code = await new Promise<number>((resolve) => {
        execFile('curl', ['-s', '--max-time', '5', '-x', `http://127.0.0.1:${transparentPort}`, 'http://allowed.test/'], (err) =>
          resolve(err ? Number((err as { code?: number }).code ?? 1) : 0),
        );
      });
      assert.notEqual(code, 0, 'curl succeeded through the transparent listener');
      await eg.waitForCount((l) => l.event === 'decision' && l.reason === 'not-redirected', before + 1);
    });
  });
}
