import { Worker } from 'node:worker_threads';
import { createCertificateAuthority, issueLeafCertificate } from '../certs/certificates.js';

export const BENCH_HOST = 'bench.test';

/** Where the origin servers listen, and what a TLS client needs to trust them. */
export interface BenchServers {
  /** TLS server for bench.test: GET /1k, GET /bytes/N. */
  httpsPort: number;
  /** Plain HTTP keep-alive server: GET /1k, GET /bytes/N. */
  httpPort: number;
  caPem: string;
  serverName: string;
  close(): Promise<void>;
}

/** Start the HTTPS and HTTP origin servers on 127.0.0.1 in a worker thread. */
export async function startBenchServers(): Promise<BenchServers> {
  const ca = createCertificateAuthority('egress-guard bench CA');
  const leaf = issueLeafCertificate(ca, [BENCH_HOST]);
  const worker = new Worker(new URL('./server-worker.js', import.meta.url), { workerData: { keyPem: leaf.keyPem, certPem: leaf.certPem } });
  const ports = await new Promise<{ httpsPort: number; httpPort: number }>((resolve, reject) => {
    worker.once('message', resolve);
    worker.once('error', reject);
    worker.once('exit', (code) => reject(new Error(`bench server worker exited with ${code}`)));
  });
  worker.on('error', () => undefined);
  return {
    ...ports,
    caPem: ca.certPem,
    serverName: BENCH_HOST,
    close: async () => {
      await worker.terminate();
    },
  };
}
