import { DOCKER_BRIDGES, uplinksNamedLikeBridges } from '../rules/docker-bridges.js';
import { binaryOf } from '../rules/iptables-rules.js';
import { applyContainerGuard, applyContainerRules } from '../rules/run-container-rules.js';
import { readDefaultRoutes, type CommandRunner } from '../rules/run-rules.js';
import { PORTS, type ActionLayout } from './layout.js';
import type { Privileged } from './privileged.js';
import type { SidecarUser } from './sidecar-user.js';

export interface RedirectOutcome {
  /** What was applied, for the log. */
  applied: string[];
  /** What could not be applied (audit mode goes on without it, and says so; block mode throws instead), and what is weaker than it could be. */
  warnings: string[];
}

/**
 * The job's traffic to egress-guard: `egress-guard rules apply` (every user but egress-guard's, IPv4 and IPv6),
 * then the rules for containers on Docker bridges (IPv4 and IPv6). Block mode never runs unenforced: a failure throws.
 */
export async function applyRedirectRules(root: Privileged, layout: ActionLayout, user: SidecarUser, mode: 'audit' | 'block'): Promise<RedirectOutcome> {
  const outcome: RedirectOutcome = { applied: [], warnings: [] };
  const refuse = (why: string) => {
    if (mode === 'block') throw new Error(why);
    outcome.warnings.push(`${why}; audit mode goes on`);
  };
  const host = await root.run(layout.node, [
    layout.entry,
    'rules',
    'apply',
    '--uid',
    String(user.uid),
    '--mode',
    mode,
    '--transparent-port',
    String(PORTS.transparent),
    '--dns-port',
    String(PORTS.dns),
  ]);
  if (host.code !== 0) {
    refuse(`the redirect rules could not be applied: ${host.stderr.trim() || host.stdout.trim()}; only clients that use the proxy variables are filtered`);
    return outcome;
  }
  outcome.applied.push(host.stdout.trim());
  const asRoot: CommandRunner = (binary, args) => root.run(binary, args);
  // Routes that cannot be read leave the uplinks unknown: the rules for containers are then not counted on (until
  // 2026-12-02 a failed `ip` read as "no such uplink").
  const defaultRoutes = await readDefaultRoutes(asRoot);
  const unread = 'unread' in defaultRoutes ? defaultRoutes.unread : undefined;
  const bridgeLike = 'routes' in defaultRoutes ? uplinksNamedLikeBridges(defaultRoutes.routes) : [];
  const options = { mode, transparentPort: PORTS.containerTransparent, dnsPort: PORTS.containerDns };
  try {
    if (unread !== undefined) {
      throw new Error(
        `the runner's default routes could not be read (ip route: exit ${unread.code}: ${unread.stderr.trim()}), so whether its uplink is named like a Docker bridge (${DOCKER_BRIDGES.join(', ')}) is unknown`,
      );
    }
    if (bridgeLike.length > 0) {
      throw new Error(
        `the runner's uplink ${bridgeLike.join(', ')} is named like a Docker bridge (${DOCKER_BRIDGES.join(', ')}): they would take what a container sends out of it for traffic between bridges, and pass it (rename the uplink)`,
      );
    }
    const applied = await applyContainerRules(options, asRoot);
    const made = applied.madeDockerUser.map(binaryOf);
    outcome.applied.push(
      `containers on ${DOCKER_BRIDGES.join(', ')} redirected too (IPv4 and IPv6; forwarded traffic filtered first in DOCKER-USER${made.length > 0 ? ` (made in ${made.join(' and ')}, where Docker had not made it yet)` : ''}; ` +
        (applied.staysOnBridges === 'route'
          ? 'connections between containers told by their route, every other destination decided by the policy)'
          : 'connections to private addresses are not redirected: nftables could not look routes up)'),
    );
    if (applied.noRouteLookup !== undefined) {
      outcome.warnings.push(
        `nftables could not look a container's routes up (${applied.noRouteLookup.trim()}): a container's connections to private addresses (10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7) are not redirected, and ${mode === 'block' ? 'are refused' : 'are reported'} unless they stay on the bridges, whatever the policy says`,
      );
    }
  } catch (err) {
    refuse(`the rules for containers could not be applied: ${(err as Error).message}; containers on Docker bridges go unfiltered and unreported`);
    // Audit mode goes on: at least nobody but redirected containers (none now) reaches their listeners.
    const guarded = await applyContainerGuard(options, asRoot);
    outcome.warnings.push(
      (guarded.length === 2
        ? `egress-guard's listeners for containers (ports ${options.transparentPort}, ${options.dnsPort}) are closed to everyone instead`
        : `egress-guard's listeners for containers (ports ${options.transparentPort}, ${options.dnsPort}) could not be closed${guarded.length === 1 ? ` for IPv${guarded[0] === 4 ? 6 : 4}` : ''}: the runner's network reaches them`) +
        '; audit mode goes on',
    );
  }
  return outcome;
}
