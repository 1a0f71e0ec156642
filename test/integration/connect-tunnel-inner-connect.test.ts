/**
 * A CONNECT inside an allowed plain CONNECT tunnel (the tunnel's host a proxy of the job's own, asked for a tunnel to
 * another host): it names two hosts and what goes through its tunnel cannot be read, so it is decided as
 * ambiguous-host: block mode answers 400 and nothing reaches the server; audit mode relays it to the tunnel's address
 * as written, reported would-block. Until 2026-12-03 the request reader closed the connection with no answer and no
 * event, in audit mode too. Raw clients against the real CLI; the server echoes what it gets (`echo:` and the bytes).
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, describe, test } from 'node:test';
import { startEgressGuard, type EgressGuardProcess } from '../helpers/egress-guard-process.js';
import { exchangeOnTunnel as exchange, openTunnel } from '../helpers/raw-client.js';

describe('a CONNECT inside a plain CONNECT tunnel is an ambiguous-host decision with its event', () => {
  const received: string[] = [];
  let echo: net.Server;
  let echoPort: number;
  const guards: Record<'block' | 'audit', EgressGuardProcess | undefined> = { block: undefined, audit: undefined };

  before(async () => {
    echo = net.createServer((socket) => {
      const index = received.push('') - 1;
      socket.on('error', () => undefined);
      socket.on('data', (chunk: Buffer) => {
        received[index] += chunk.toString('latin1');
        socket.write(Buffer.concat([Buffer.from('echo:'), chunk]));
      });
    });
    await new Promise<void>((resolve) => echo.listen(0, '127.0.0.1', resolve));
    echoPort = (echo.address() as net.AddressInfo).port;
    for (const mode of ['block', 'audit'] as const) {
      guards[mode] = await startEgressGuard(['--resolve', 'allowed.test=127.0.0.1'], {
        EGRESS_MODE: mode,
        EGRESS_ALLOWED_ENDPOINTS: 'allowed.test:*',
        EGRESS_TRUSTED_RANGES: '127.0.0.0/8',
      });
    }
  });

  after(async () => {
    for (const guard of Object.values(guards)) await guard?.stop();
    await new Promise((resolve) => echo?.close(resolve));
  });

  for (const mode of ['block', 'audit'] as const) {
    test(`${mode} mode: ${mode === 'block' ? '400 with the event id, nothing reaches the server' : 'relayed as written, reported would-block'}`, async () => {
      const guard = guards[mode]!;
      const marker = `inner-${mode}.test`;
      const tunnel = await openTunnel(guard.port, `allowed.test:${echoPort}`);
      assert.equal(tunnel.status, 200);
      const inner = `CONNECT ${marker}:443 HTTP/1.1\r\nHost: ${marker}:443\r\n\r\nhello`;
      const answer = await exchange(tunnel.socket, inner, mode === 'block' ? 'Bad Request' : 'hello');
      tunnel.socket.destroy();
      const decision = await guard.waitFor((l) => l.event === 'decision' && l.method === 'CONNECT' && l.path === `${marker}:443`);
      assert.deepEqual(
        [decision.reason, decision.decision, decision.host, decision.ip, decision.port],
        ['ambiguous-host', mode === 'block' ? 'blocked' : 'would-block', marker, '127.0.0.1', echoPort],
      );
      if (mode === 'block') {
        assert.match(answer, /^HTTP\/1\.1 400 /);
        assert.match(answer, new RegExp(`X-Egress-Guard-Event: ${decision.id}\\r\\n`, 'i'));
        assert.ok(!received.some((r) => r.includes(marker)), JSON.stringify(received));
      } else {
        // The server echoes each piece it reads (`echo:` before it): the CONNECT head and what followed it, as written.
        assert.equal(answer.replace(/echo:/g, ''), inner);
        assert.ok(
          received.some((r) => r === inner),
          JSON.stringify(received),
        );
        const close = await guard.waitFor((l) => l.event === 'close' && l.id === decision.id);
        assert.ok(Number(close.bytes_out) >= inner.length, JSON.stringify(close));
      }
    });
  }
});
