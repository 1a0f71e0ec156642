import { parentPort } from 'node:worker_threads';
import { TEST_ZONE } from '../test/helpers/dns-fixture.js';
import { startZoneServer } from '../test/helpers/dns-zone-server.js';

// The benchmark's authoritative server in its own thread: it serves egress-guard and dnsmasq alike
// without sharing egress-guard's event loop. Posts its port; closes on any message.
const zone = await startZoneServer(TEST_ZONE);
parentPort?.postMessage(zone.port);
parentPort?.once('message', () => {
  void zone.close().then(() => parentPort?.close());
});
