/**
 * A redirected connection past `max-tunnels` (1 here): reset at once, and, since 2026-12-03, with its decision event
 * (`at-capacity`, blocked in audit mode too: egress-guard's own limit), where before only a log line said why the
 * job's connection failed. The job (node in the runner namespace) holds one connection to allowed.test's
 * reply-after-FIN service open, then opens a second: reset, nothing of it arrives; the first still gets its reply.
 * Needs root (namespaces `cap-*`, iptables in them).
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { HALF_CLOSE_PORTS, NET, World } from './harness.js';

let world: World;

before(async () => {
  world = await World.create({ prefix: 'cap' });
});

after(async () => {
  await world?.close();
});

/**
 * node in the runner: a first connection to allowed.test, held (connected, nothing sent) for a second, then a second
 * connection that writes `second` and ends; then the first writes `first` and ends. Prints each one's reply or error.
 */
function holdThenSecond() {
  const script = `
const net = require('node:net');
const outcome = (s, payload) => new Promise((resolve) => {
  let reply = '';
  s.on('data', (c) => (reply += c));
  s.on('end', () => resolve(reply.trim()));
  s.on('error', (e) => resolve('error ' + (e.code || e.message)));
  if (payload) s.end(payload);
});
const connect = () => new Promise((resolve) => { const s = net.connect({ host: 'allowed.test', port: ${HALF_CLOSE_PORTS.plain}, allowHalfOpen: true }, () => resolve(s)); s.on('error', () => resolve(s)); });
(async () => {
  const first = await connect();
  await new Promise((r) => setTimeout(r, 1000));
  const second = await connect();
  const secondOutcome = await outcome(second, 'second');
  const firstOutcome = outcome(first);
  first.end('first');
  process.stdout.write(JSON.stringify({ second: secondOutcome, first: await firstOutcome }));
  process.exit(0);
})();
setTimeout(() => { process.stdout.write('timed out'); process.exit(0); }, 15000).unref();
`;
  return world.job(process.execPath, ['-e', script], { timeoutMs: 25_000 });
}

for (const mode of ['block', 'audit'] as const) {
  describe(`${mode} mode, max-tunnels 1`, () => {
    before(async () => {
      await world.startEgressGuard(mode, [], { env: { EGRESS_MAX_TUNNELS: '1' } });
    });
    after(async () => {
      await world.stopEgressGuard();
    });

    test('a second redirected connection is reset with a blocked at-capacity decision naming its destination; the first is served', async () => {
      const arrivedBefore = world.internetLog().length;
      const result = await holdThenSecond();
      const outcome = JSON.parse(result.stdout) as { second: string; first: string };
      assert.equal(outcome.second, 'error ECONNRESET', result.stdout);
      assert.equal(outcome.first, 'received 5 bytes', result.stdout);
      const event = await world.decision((e) => e.reason === 'at-capacity' && e.mode === mode, 5000);
      assert.ok(event, 'an at-capacity decision');
      // (node in the runner may reach allowed.test by either family.)
      assert.ok(([NET.allowed, NET.allowed6] as string[]).includes(event.host), event.host);
      assert.deepEqual([event.kind, event.ip, event.port, event.decision, event.rule], ['transparent', event.host, HALF_CLOSE_PORTS.plain, 'blocked', null]);
      assert.match(event.message, /at its limit of 1 open connections/);
      const arrived = world
        .internetLog()
        .slice(arrivedBefore)
        .filter((e) => e.type === 'half-close' && e.port === HALF_CLOSE_PORTS.plain);
      assert.deepEqual(
        arrived.map((e) => e.bytes),
        [5],
        'only the first connection reached allowed.test',
      );
    });
  });
}
