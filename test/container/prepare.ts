/**
 * Writes the fixture folder of the container test (test/container/run.sh): a CA and a leaf certificate for the
 * `.test` hosts, and the configuration files of the two internet containers, which run the end-to-end suite's
 * internet fixture (test/e2e/internet-fixture.ts). Usage: node prepare.js FIXTURE_DIR
 * The registry package tarball (pkg.tgz) and the malicious package are made by run.sh with tar/npm pack.
 */
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { createCertificateAuthority, issueLeafCertificate } from '../../certs/certificates.js';
import type { InternetConfig } from '../e2e/internet-fixture.js';

/** Addresses on the compose network `inet` (203.0.113.0/24, documentation range). Keep in sync with compose.yml. */
export const ADDRESSES = { egressGuard: '203.0.113.2', internet: '203.0.113.10', attacker: '203.0.113.66', collector: '203.0.113.80' } as const;
export const PACKAGE = { name: 'left-pad-lite', version: '1.0.0' } as const;

const dir = process.argv[2];
if (!dir) {
  process.stderr.write('usage: node prepare.js FIXTURE_DIR\n');
  process.exit(2);
}
const ca = createCertificateAuthority('egress-guard container test CA');
const leaf = issueLeafCertificate(ca, ['allowed.test', 'registry.test', 'attacker.test', '*.attacker.test', ADDRESSES.attacker, ADDRESSES.internet]);
writeFileSync(path.join(dir, 'ca.pem'), ca.certPem);

const zone: InternetConfig['zone'] = {
  'allowed.test': { a: [ADDRESSES.internet], aaaa: [] },
  'registry.test': { a: [ADDRESSES.internet], aaaa: [] },
  'attacker.test': { a: [ADDRESSES.attacker], aaaa: [] },
  '*.attacker.test': { a: [ADDRESSES.attacker], aaaa: [] },
};
const common = { keyPem: leaf.keyPem, certPem: leaf.certPem, zone, tcpRecorderPorts: [], registry: { ...PACKAGE, tarball: '/fixture/pkg.tgz' } };
const internet: InternetConfig = { ...common, logFile: '/records/internet.ndjson', dnsAddresses: [ADDRESSES.internet], udpRecorderPorts: [] };
// The attacker also listens for UDP on 4444 (exfiltration over an arbitrary UDP port).
const attacker: InternetConfig = { ...common, logFile: '/records/attacker.ndjson', dnsAddresses: [], udpRecorderPorts: [4444] };
writeFileSync(path.join(dir, 'internet.json'), JSON.stringify(internet, null, 2));
writeFileSync(path.join(dir, 'attacker.json'), JSON.stringify(attacker, null, 2));
process.stdout.write(`fixture written to ${dir}\n`);
