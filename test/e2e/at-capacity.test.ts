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
 * node in the runner: a first connection to allowed.test (IPv4 only: node's happy eyeballs may open a second attempt,
 * which would take the one place), held (connected, nothing sent) for a second, then a second connection that writes
 * `second` and ends; then the first writes `first` and ends. Prints each one's reply or error as JSON. Each socket's
 * outcome is listened for from its start, so a reset that comes with its connect is not missed.
 */
function holdThenSecond() {
  const script = `
const net = require('node:net');
const open = () => {
  const s = net.connect({ host: 'allowed.test', port: ${HALF_CLOSE_PORTS.plain}, family: 4, allowHalfOpen: true });
  let reply = '';
  const outcome = new Promise((resolve) => {
    s.on('data', (c) => (reply += c));
    s.on('end', () => resolve(reply.trim()));
    s.on('error', (e) => resolve('error ' + (e.code || e.message)));
  });
  const connected = new Promise((resolve) => { s.once('connect', resolve); s.once('error', resolve); });
  return { s, outcome, connected };
};
(async () => {
  const first = open();
  await first.connected;
  await new Promise((r) => setTimeout(r, 1000));
  const second = open();
  await second.connected;
  second.s.end('second');
  const secondOutcome = await second.outcome;
  first.s.end('first');
  process.stdout.write(JSON.stringify({ second: secondOutcome, first: await first.outcome }));
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
      assert.match(result.stdout, /^\{/, `the job's output: ${result.stdout} ${result.stderr}`);
      const outcome = JSON.parse(result.stdout) as { second: string; first: string };
      assert.equal(outcome.second, 'error ECONNRESET', result.stdout);
      assert.equal(outcome.first, 'received 5 bytes', result.stdout);
      const event = await world.decision((e) => e.reason === 'at-capacity' && e.mode === mode, 5000);
      assert.ok(event, 'an at-capacity decision');
      assert.deepEqual(
        [event.kind, event.host, event.ip, event.port, event.decision, event.rule],
        ['transparent', NET.allowed, NET.allowed, HALF_CLOSE_PORTS.plain, 'blocked', null],
      );
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
