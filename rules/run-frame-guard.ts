import { frameGuardRemoval, frameGuardScript, guardedDevices, type GuardedDevice } from './frame-guard.js';
import type { RulesMode } from './iptables-rules.js';
import { execRunner, must, type CommandRunner } from './run-rules.js';

/** What the guard against packet-socket frames covers, or why it could not be made. */
export type FrameGuardOutcome = { guarded: GuardedDevice[]; unquotable: string[] } | { unguarded: string };

/** Delete frame-guard.ts's tables where they are (a machine without nft has none). What was removed. */
export async function removeFrameGuard(run: CommandRunner = execRunner): Promise<string[]> {
  const removed: string[] = [];
  for (const { family, table } of frameGuardRemoval()) {
    if ((await run('nft', ['list', 'table', family, table])).code !== 0) continue;
    await must(run, { binary: 'nft', args: ['delete', 'table', family, table] });
    removed.push(`nft ${family} ${table}`);
  }
  return removed;
}

/** The devices the guard would cover now (frame-guard.ts guardedDevices), or why they could not be read. */
export async function readGuardedDevices(run: CommandRunner = execRunner): Promise<ReturnType<typeof guardedDevices> | { unread: string }> {
  const reads = await Promise.all([
    run('ip', ['-o', '-d', 'link', 'show']),
    run('ip', ['-o', '-4', 'route', 'show', 'table', 'all']),
    run('ip', ['-o', '-6', 'route', 'show', 'table', 'all']),
  ]);
  const unread = reads.find((r) => r.code !== 0);
  if (unread) return { unread: `the devices could not be read (ip: exit ${unread.code}: ${unread.stderr.trim()})` };
  return guardedDevices(reads[0]!.stdout, `${reads[1]!.stdout}\n${reads[2]!.stdout}`);
}

/**
 * Replace any earlier guard with a fresh one over the devices routed to now. Not made (and said why) where nft is
 * missing, the kernel has no netdev egress hook (before 5.16, or without CONFIG_NETFILTER_EGRESS) or no route realms
 * (CONFIG_IP_ROUTE_CLASSID), or no device is routed to; the redirect rules stand either way.
 */
export async function applyFrameGuard(options: { mode: RulesMode; nflogGroup?: number }, run: CommandRunner = execRunner): Promise<FrameGuardOutcome> {
  const read = await readGuardedDevices(run);
  if ('unread' in read) return { unguarded: read.unread };
  const { devices, unquotable } = read;
  // An earlier guard goes first, whatever comes of this one: left, it would guard devices of another time.
  try {
    await removeFrameGuard(run);
  } catch (err) {
    return { unguarded: (err as Error).message };
  }
  if (devices.length === 0) return { unguarded: 'no device is routed to' };
  // On nft's standard input: no temporary file (a Kubernetes init container's root is read-only).
  const made = await run('nft', ['-f', '-'], frameGuardScript({ ...options, devices }));
  // One transaction: a kernel that refuses the egress hook (or `meta rtclassid`: no CONFIG_IP_ROUTE_CLASSID) leaves nothing behind.
  if (made.code !== 0) return { unguarded: made.code === 127 ? 'nft is not installed' : `nft refused it (exit ${made.code}): ${made.stderr.trim()}` };
  return { guarded: devices, unquotable };
}

/** The outcome as the line `rules apply` prints. */
export function describeFrameGuard(outcome: FrameGuardOutcome, mode: RulesMode): string {
  if ('unguarded' in outcome) {
    return `frames written on packet sockets (AF_PACKET, a root job with CAP_NET_RAW) are NOT guarded: ${outcome.unguarded}; drop NET_RAW from the job`;
  }
  const skipped = outcome.unquotable.length > 0 ? `; not on ${outcome.unquotable.join(', ')} (names nft cannot be given)` : '';
  return `frames written on packet sockets (AF_PACKET) ${mode === 'block' ? 'refused' : 'reported'} on ${outcome.guarded.map((d) => d.name).join(', ')}${skipped}`;
}
