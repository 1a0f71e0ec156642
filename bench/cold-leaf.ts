import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import forge from 'node-forge';
import { loadCertificateAuthority, type CertificateAuthority } from '../certs/ca-store.js';
import { LEAF_KEY_TYPES, newKeyPair, signedCertificatePem, toBeSigned, unsignedLeafCertificate } from '../certs/certificates.js';
import { LeafIssuer } from '../certs/leaf-issuer.js';
import { percentile, round } from './stats.js';

/**
 * `node dist/bench/cold-leaf.js [COUNT]`: what a host seen for the first time costs TLS inspection. Issues COUNT
 * leaves for new hosts one after another and prints the cold-leaf latency and how long the event loop was held
 * meanwhile (perf_hooks.monitorEventLoopDelay): LeafIssuer with its shared key and with a key per host, for each
 * key type (rows `shared ecdsa`, `per-host rsa`, ...), and, for comparison, node-forge signing the leaf itself (the
 * design LeafIssuer does not use). docs/inspection.md quotes it; bench/inspection-bench reads the `shared` rows.
 */
type IssueOne = (host: string) => Promise<unknown>;

async function measure(name: string, count: number, issue: IssueOne): Promise<string> {
  await issue('warm-up.bench.test'); // JIT, and the shared key: "cold" means a new host, not a new process
  const histogram = monitorEventLoopDelay({ resolution: 1 });
  const latencies: number[] = [];
  histogram.enable();
  for (let i = 0; i < count; i++) {
    const start = performance.now();
    await issue(`host-${i}.bench.test`);
    latencies.push(performance.now() - start);
    await sleep(5); // the loop runs between hosts, as it does between connections: the histogram sees each stall
  }
  histogram.disable();
  const ms = (ns: number) => round(ns / 1e6, 1);
  return `${name.padEnd(22)}${String(round(percentile(latencies, 50), 1)).padStart(9)}${String(round(percentile(latencies, 99), 1)).padStart(9)}${String(ms(histogram.percentile(99))).padStart(12)}${String(ms(histogram.max)).padStart(11)}`;
}

function forgeSigned(ca: CertificateAuthority): IssueOne {
  const caKey = forge.pki.privateKeyFromPem(ca.key.export({ type: 'pkcs8', format: 'pem' }).toString()) as forge.pki.rsa.PrivateKey;
  const leafKey = newKeyPair('rsa');
  return async (host) => {
    const now = Date.now();
    const tbs = toBeSigned(unsignedLeafCertificate(ca.certificate, leafKey.publicKeyDer, [host], new Date(now - 3_600_000), new Date(now + 7 * 86_400_000)), ca.key);
    const digest = forge.md.sha256.create().update(tbs.der.toString('binary'));
    return signedCertificatePem(tbs, Buffer.from(caKey.sign(digest), 'binary'));
  };
}

async function main(): Promise<void> {
  const count = Number(process.argv[2] ?? 200);
  const dir = mkdtempSync(join(tmpdir(), 'egress-cold-leaf-'));
  try {
    const ca = loadCertificateAuthority({ stateDir: dir });
    const lines = [`${count} cold leaves, one after another (ms)`, 'issuer                 p50 lat  p99 lat  loop p99 delay  loop max'];
    lines.push(await measure('baseline (no leaf)', count, async () => undefined)); // the machine's own noise
    for (const keyType of LEAF_KEY_TYPES) {
      const shared = new LeafIssuer(ca, { keyType });
      lines.push(await measure(`shared ${keyType}`, count, (h) => shared.leafFor(h)));
    }
    for (const keyType of LEAF_KEY_TYPES) {
      const perHost = new LeafIssuer(ca, { keyType, leafKeys: 'per-host' });
      lines.push(await measure(`per-host ${keyType}`, Math.min(count, 50), (h) => perHost.leafFor(h)));
    }
    lines.push(await measure('forge signs (not used)', Math.min(count, 50), forgeSigned(ca)));
    process.stdout.write(`${lines.join('\n')}\n`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
