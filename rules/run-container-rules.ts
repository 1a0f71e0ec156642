import {
  CONTAINER_CHAINS,
  CONTAINER_FORWARD_CHAIN,
  containerApplyCommands,
  containerHookArgs,
  containerHooks,
  type ContainerHook,
  type ContainerRuleOptions,
} from './container-rules.js';
import { execRunner, RulesError, type CommandRunner } from './run-rules.js';

const WAIT = ['-w', '5'];

async function iptables(run: CommandRunner, args: readonly string[]): Promise<void> {
  const result = await run('iptables', args);
  if (result.code !== 0) throw new RulesError(`iptables ${args.join(' ')} failed (exit ${result.code}): ${result.stderr.trim()}`);
}

/** DOCKER-USER when Docker has made it (it is evaluated first in FORWARD and Docker never flushes it), else FORWARD. */
export async function forwardHook(run: CommandRunner = execRunner): Promise<ContainerRuleOptions['forwardHook']> {
  return (await run('iptables', [...WAIT, '-t', 'filter', '-S', 'DOCKER-USER'])).code === 0 ? 'DOCKER-USER' : 'FORWARD';
}

/** Delete every copy of the hooks (from either forward hook), then flush and delete the chains. Idempotent. */
export async function removeContainerRules(run: CommandRunner = execRunner, bridges?: readonly string[]): Promise<string[]> {
  const removed: string[] = [];
  const dockerUser: ContainerHook = { table: 'filter', chain: 'DOCKER-USER', rule: ['-j', CONTAINER_FORWARD_CHAIN] };
  for (const hook of [...containerHooks({ forwardHook: 'FORWARD', bridges }), dockerUser]) {
    for (let i = 0; i < 16 && (await run('iptables', containerHookArgs('-C', hook))).code === 0; i++) {
      await iptables(run, containerHookArgs('-D', hook));
      removed.push(`iptables ${hook.table} ${hook.chain} ${hook.rule.join(' ')}`);
    }
  }
  for (const own of CONTAINER_CHAINS) {
    if ((await run('iptables', [...WAIT, '-t', own.table, '-S', own.chain])).code !== 0) continue;
    await iptables(run, [...WAIT, '-t', own.table, '-F', own.chain]);
    await iptables(run, [...WAIT, '-t', own.table, '-X', own.chain]);
    removed.push(`iptables ${own.table} ${own.chain}`);
  }
  return removed;
}

/** Replace any earlier copy with a fresh one; on failure, remove what was added and throw. */
export async function applyContainerRules(options: ContainerRuleOptions, run: CommandRunner = execRunner): Promise<void> {
  await removeContainerRules(run, options.bridges);
  try {
    for (const command of containerApplyCommands(options)) await iptables(run, command.args);
  } catch (err) {
    await removeContainerRules(run, options.bridges).catch(() => undefined);
    throw err;
  }
}
