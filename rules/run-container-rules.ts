import { BRIDGE_ROUTES_TABLE, bridgeRoutesCommands } from './bridge-routes.js';
import {
  CONTAINER_CHAINS,
  CONTAINER_NAT_CHAIN,
  containerApplyCommands,
  containerGuardCommands,
  containerHookArgs,
  containerHooks,
  type ContainerRuleOptions,
  DOCKER_USER,
  MADE_DOCKER_USER_RULE,
  type StaysOnBridges,
} from './container-rules.js';
import { DOCKER_BRIDGES } from './docker-bridges.js';
import { binaryOf, type Family } from './iptables-rules.js';
import { execRunner, must, present, RulesError, type CommandRunner } from './run-rules.js';

const WAIT = ['-w', '5'];

const FAMILIES: readonly Family[] = [4, 6];

/**
 * Per family, whether DOCKER-USER is missing, to be made by applyContainerRules (container-rules.ts DOCKER_USER).
 * Docker makes it in ip6tables only with its IPv6 support on. The xtables lock held past its wait throws.
 */
async function dockerUserMissing(run: CommandRunner): Promise<Record<Family, boolean>> {
  const missing = async (family: Family): Promise<boolean> => !(await present(run, binaryOf(family), [...WAIT, '-t', 'filter', '-S', DOCKER_USER]));
  return { 4: await missing(4), 6: await missing(6) };
}

/**
 * Delete every copy of the hooks (from either forward hook), then flush and delete the chains, in the families
 * given (both by default); then bridge-routes.ts's table, once neither family's nat chain reads its mark.
 * Idempotent. A family that fails does not keep the other's rules in place; the first error is thrown at the end.
 */
export async function removeContainerRules(run: CommandRunner = execRunner, bridges?: readonly string[], families: readonly Family[] = FAMILIES): Promise<string[]> {
  const removed: string[] = [];
  let firstError: unknown;
  for (const family of families) {
    try {
      await removeFamily(run, family, bridges, removed);
    } catch (err) {
      firstError ??= err;
    }
  }
  try {
    // A chain that still reads the mark keeps the table (or its containers' connections to each other are redirected
    // meanwhile); the lock held past its wait throws, keeping it too.
    const natLeft = (family: Family) => present(run, binaryOf(family), [...WAIT, '-t', 'nat', '-S', CONTAINER_NAT_CHAIN]);
    let used = false;
    for (const family of FAMILIES) if (await natLeft(family)) used = true;
    if (!used) removed.push(...(await removeBridgeRoutes(run)));
  } catch (err) {
    firstError ??= err;
  }
  if (firstError !== undefined) throw firstError;
  return removed;
}

/** Delete bridge-routes.ts's table if it is there (a machine without nft has none). What was removed. */
async function removeBridgeRoutes(run: CommandRunner): Promise<string[]> {
  if ((await run('nft', ['list', 'table', 'inet', BRIDGE_ROUTES_TABLE])).code !== 0) return [];
  await must(run, { binary: 'nft', args: ['delete', 'table', 'inet', BRIDGE_ROUTES_TABLE] });
  return [`nft inet ${BRIDGE_ROUTES_TABLE}`];
}

/**
 * bridge-routes.ts's table, fresh. Why it could not be made (nft missing, a kernel without nf_tables or its fib
 * expression), with nothing of it left; undefined when it is in place.
 */
async function applyBridgeRoutes(bridges: readonly string[], run: CommandRunner): Promise<string | undefined> {
  try {
    for (const command of bridgeRoutesCommands(bridges)) await must(run, command);
    return undefined;
  } catch (err) {
    await removeBridgeRoutes(run).catch(() => undefined);
    return err instanceof Error ? err.message : String(err);
  }
}

async function removeFamily(run: CommandRunner, family: Family, bridges: readonly string[] | undefined, removed: string[]): Promise<void> {
  const binary = binaryOf(family);
  for (const hook of containerHooks({ bridges })) {
    for (let i = 0; i < 16 && (await present(run, binary, containerHookArgs('-C', hook))); i++) {
      await must(run, { binary, args: containerHookArgs('-D', hook) });
      removed.push(`${binary} ${hook.table} ${hook.chain} ${hook.rule.join(' ')}`);
    }
  }
  for (const own of CONTAINER_CHAINS) {
    if (!(await present(run, binary, [...WAIT, '-t', own.table, '-S', own.chain]))) continue;
    await must(run, { binary, args: [...WAIT, '-t', own.table, '-F', own.chain] });
    await must(run, { binary, args: [...WAIT, '-t', own.table, '-X', own.chain] });
    removed.push(`${binary} ${own.table} ${own.chain}`);
  }
  await removeMadeDockerUser(run, binary, removed);
}

/**
 * A DOCKER-USER made by applyContainerRules: its marker rule goes; the chain and its jump from FORWARD too, unless
 * Docker has adopted it since (a rule of its own in it, or Docker's filter chain there: Docker started meanwhile).
 */
async function removeMadeDockerUser(run: CommandRunner, binary: string, removed: string[]): Promise<void> {
  const marker = [...WAIT, '-t', 'filter', '-C', DOCKER_USER, ...MADE_DOCKER_USER_RULE];
  let markers = 0;
  for (; markers < 16 && (await present(run, binary, marker)); markers++) {
    await must(run, { binary, args: [...WAIT, '-t', 'filter', '-D', DOCKER_USER, ...MADE_DOCKER_USER_RULE] });
  }
  if (markers === 0) return;
  removed.push(`${binary} filter ${DOCKER_USER} ${MADE_DOCKER_USER_RULE.join(' ')}`);
  const listing = await run(binary, [...WAIT, '-t', 'filter', '-S', DOCKER_USER]);
  if (listing.code !== 0) throw new RulesError(`${binary} -S ${DOCKER_USER} failed (exit ${listing.code}): ${listing.stderr.trim()}`);
  const left = listing.stdout.split('\n').filter((line) => line.startsWith('-A '));
  const dockerRuns = await present(run, binary, [...WAIT, '-t', 'filter', '-S', 'DOCKER']);
  if (left.length > 0 || dockerRuns) return;
  const jump = [...WAIT, '-t', 'filter', '-C', 'FORWARD', '-j', DOCKER_USER];
  for (let i = 0; i < 16 && (await present(run, binary, jump)); i++) {
    await must(run, { binary, args: [...WAIT, '-t', 'filter', '-D', 'FORWARD', '-j', DOCKER_USER] });
  }
  await must(run, { binary, args: [...WAIT, '-t', 'filter', '-X', DOCKER_USER] });
  removed.push(`${binary} filter ${DOCKER_USER}`);
}

/** How applyContainerRules tells what stays on the bridges, and why not by route when it could not. */
export interface ContainerRulesApplied {
  staysOnBridges: StaysOnBridges;
  noRouteLookup?: string;
  /** The families whose DOCKER-USER was missing and was made (container-rules.ts DOCKER_USER). */
  madeDockerUser: Family[];
}

/** What applyContainerRules and applyContainerGuard are given: whether to make DOCKER-USER, and what stays on the bridges, they find out. */
export type ContainerApplyOptions = Omit<ContainerRuleOptions, 'staysOnBridges' | 'makeDockerUser'>;

/**
 * Replace any earlier copy with a fresh one, IPv4 and IPv6; on failure, remove what was added (both families) and
 * throw: a host whose ip6tables cannot take them does not get the IPv4 half alone, since a container's IPv6 would
 * then leave unfiltered. What stays on the bridges is told by route where nftables can (bridge-routes.ts), else by
 * the private ranges. Whether DOCKER-USER is missing is asked after the earlier copy is gone: a DOCKER-USER an
 * earlier apply made goes with it (until 2026-12-02 the caller asked before, found that chain, and the hook then went
 * into a chain no longer there: a second main in a job, or one after a post that never ran, failed in block mode and
 * left containers unfiltered in audit mode).
 */
export async function applyContainerRules(options: ContainerApplyOptions, run: CommandRunner = execRunner): Promise<ContainerRulesApplied> {
  await removeContainerRules(run, options.bridges);
  const noRouteLookup = await applyBridgeRoutes(options.bridges ?? DOCKER_BRIDGES, run);
  const staysOnBridges: StaysOnBridges = noRouteLookup === undefined ? 'route' : 'private-ranges';
  let madeDockerUser: Family[] = [];
  try {
    const makeDockerUser = await dockerUserMissing(run);
    madeDockerUser = FAMILIES.filter((family) => makeDockerUser[family]);
    for (const family of FAMILIES) for (const command of containerApplyCommands({ ...options, staysOnBridges, makeDockerUser }, family)) await must(run, command);
  } catch (err) {
    await removeContainerRules(run, options.bridges).catch(() => undefined);
    throw err;
  }
  return noRouteLookup === undefined ? { staysOnBridges, madeDockerUser } : { staysOnBridges, noRouteLookup, madeDockerUser };
}

/**
 * After applyContainerRules failed (audit mode goes on without them): the INPUT guard of the container listeners
 * alone, per family, so that what listens on 0.0.0.0 and [::] for containers is not open to the runner's network.
 * The families it could guard; a family that fails is left without any rule of ours.
 */
export async function applyContainerGuard(options: ContainerApplyOptions, run: CommandRunner = execRunner): Promise<Family[]> {
  const guarded: Family[] = [];
  for (const family of FAMILIES) {
    try {
      await removeContainerRules(run, options.bridges, [family]);
      for (const command of containerGuardCommands(options, family)) await must(run, command);
      guarded.push(family);
    } catch {
      await removeContainerRules(run, options.bridges, [family]).catch(() => undefined);
    }
  }
  return guarded;
}
