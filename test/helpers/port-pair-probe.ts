/**
 * Run inside a network namespace whose ephemeral port range is two ports (PORT_A, PORT_A + 1) and
 * where TCP PORT_A is taken: each server started with port 0 must end up on the pair's free port for
 * UDP and TCP alike. Prints one JSON line: the ports each start got.
 */
import { spawnSync } from 'node:child_process';
import net from 'node:net';
import { EventLog } from '../../events/event-log.js';
import { buildPolicy } from '../../policy/index.js';
import { AddressBook } from '../../decision/address-book.js';
import { startDnsServer } from '../../dns/server.js';
import { startZoneServer } from './dns-zone-server.js';

const takenPort = Number(process.argv[2]);
const blocker = net.createServer();
await new Promise<void>((resolve) => {
  blocker.once('error', (err) => {
    // In a namespace of its own nothing should hold this port (seen once in CI, 2026-12-02, not reproduced): say
    // who does, so the next occurrence can be explained, rather than crash on an unhandled 'error'.
    const holders = spawnSync('ss', ['-tuanpe'], { encoding: 'utf8', timeout: 5000 }).stdout;
    process.stderr.write(`port-pair-probe: the blocker could not listen on 127.0.0.1:${takenPort}: ${err.message}\n${holders}\n`);
    process.exit(2);
  });
  blocker.listen(takenPort, '127.0.0.1', resolve);
});

const origin = { file: 'probe', line: 1 };
const policy = buildPolicy({ mode: { value: 'block', origin }, 'allowed-endpoints': { value: 'allowed.test', origin } });
const events = new EventLog({ stdout: false });
const result: { zone: number[]; dns: Array<[number, number]> } = { zone: [], dns: [] };
for (let i = 0; i < 4; i++) {
  const zone = await startZoneServer({});
  result.zone.push(zone.port);
  await zone.close();
  const dns = await startDnsServer({
    listen: { host: '127.0.0.1', port: 0 },
    upstreams: ['127.0.0.1:9'],
    policy: () => policy,
    events,
    addressBook: new AddressBook(),
  });
  result.dns.push([dns.udpAddress.port, dns.tcpAddress.port]);
  await dns.close();
}
blocker.close();
console.log(JSON.stringify(result));
