import type net from 'node:net';
import { startEgressGuard, type EgressGuardProcess } from './egress-guard-process.js';

/**
 * Listen `upstream` (a raw server a test writes answers with) on loopback, and start egress-guard in block mode in
 * front of it: the authority to ask for (`allowed.test:<port>`) and the running proxy.
 */
export async function guardInFrontOf(upstream: net.Server, env: Record<string, string> = {}): Promise<{ authority: string; guard: EgressGuardProcess }> {
  await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve));
  const authority = `allowed.test:${(upstream.address() as net.AddressInfo).port}`;
  const guard = await startEgressGuard(['--resolve', 'allowed.test=127.0.0.1'], {
    EGRESS_MODE: 'block',
    EGRESS_ALLOWED_ENDPOINTS: 'allowed.test:*',
    EGRESS_TRUSTED_RANGES: '127.0.0.0/8',
    ...env,
  });
  return { authority, guard };
}
