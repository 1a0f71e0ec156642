/**
 * Docker's bridges as iptables interface patterns: the default one and every user-defined network's (`br-` and the
 * network id), so a network created later in the job matches too. Read by the rules for containers
 * (container-rules.ts) and by the host's filter chain (iptables-rules.ts: neighbour discovery out through them).
 */
export const DOCKER_BRIDGES: readonly string[] = ['docker0', 'br-+'];

/** Whether an interface name matches an iptables interface pattern (`br-+`: any name starting `br-`). */
export function matchesInterface(name: string, pattern: string): boolean {
  return pattern.endsWith('+') ? name.startsWith(pattern.slice(0, -1)) : name === pattern;
}

/**
 * The devices default routes leave by, from `ip -o -4|-6 route show table all default` (readDefaultRoutes): every
 * `dev` of a line that is a default route (`default ...`, or with its type first, `unicast default`), so each nexthop
 * of a multipath route (one line, nexthops after `\` and a tab).
 */
export function defaultRouteDevices(routeOutput: string): string[] {
  const found = new Set<string>();
  for (const line of routeOutput.split('\n')) {
    const words = line.trim().split(/\s+/);
    if (words[0] !== 'default' && words[1] !== 'default') continue;
    for (let at = words.indexOf('dev'); at !== -1; at = words.indexOf('dev', at + 1)) if (words[at + 1]) found.add(words[at + 1]!);
  }
  return [...found];
}

/**
 * The bridge patterns no default route leaves by, given readDefaultRoutes' output (both families), or none where the
 * routes could not be read (undefined). The host's filter chain lets neighbour discovery out through
 * these to any address (iptables-rules.ts): through a pattern that also matches the runner's uplink (OpenStack's
 * `br-ex`) that would be to any address on the internet.
 */
export function bridgesOffTheUplinks(routeOutput: string | undefined, bridges: readonly string[] = DOCKER_BRIDGES): string[] {
  if (routeOutput === undefined) return [];
  const uplinks = defaultRouteDevices(routeOutput);
  return bridges.filter((pattern) => !uplinks.some((dev) => matchesInterface(dev, pattern)));
}

/**
 * The runner's uplinks (the devices of its default routes, as run-rules.ts readDefaultRoutes reads them: every
 * routing table, each nexthop of a multipath route) whose names match a bridge pattern, such as
 * OpenStack's `br-ex`. The rules take what a container sends out of such an uplink for bridge-to-bridge traffic and
 * pass it, so the action refuses to count on them there. Until 2026-12-02 only the first `dev` of a line counted
 * (a multipath default whose second nexthop was `br-ex` passed) and only the main table was read (the action asked
 * `ip -o route show default`). A route other than a default one out of such an interface is not looked for.
 */
export function uplinksNamedLikeBridges(routeOutput: string, bridges: readonly string[] = DOCKER_BRIDGES): string[] {
  return defaultRouteDevices(routeOutput).filter((dev) => bridges.some((pattern) => matchesInterface(dev, pattern)));
}
