/**
 * Docker's bridges as iptables interface patterns: the default one and every user-defined network's (`br-` and the
 * network id), so a network created later in the job matches too. Read by the rules for containers
 * (container-rules.ts) and by the host's filter chain (iptables-rules.ts: neighbour discovery out through them).
 */
export const DOCKER_BRIDGES: readonly string[] = ['docker0', 'br-+'];
