import { execFile } from 'node:child_process';
import { applyCommands, binaryOf, chainArgs, jumpArgs, OWN_CHAINS, type Family, type RuleCommand, type RuleOptions } from './iptables-rules.js';

export interface CommandResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** `input`, when given, is written to the command's standard input (`nft -f -`). */
export type CommandRunner = (binary: string, args: readonly string[], input?: string) => Promise<CommandResult>;

/** Run iptables/ip6tables without a shell. */
export const execRunner: CommandRunner = (binary, args, input) =>
  new Promise((resolve) => {
    const child = execFile(binary, [...args], { timeout: 30_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as NodeJS.ErrnoException & { code?: unknown }).code === 'number' ? (err as unknown as { code: number }).code : 127) : 0;
      resolve({ code, stdout: String(stdout), stderr: err && !stderr ? err.message : String(stderr) });
    });
    // A command that exits before reading it all (or never starts) must not make the write an unhandled error.
    child.stdin?.on('error', () => undefined);
    child.stdin?.end(input);
  });

export class RulesError extends Error {}

/**
 * The default routes of both families, every table (`ip -o -4|-6 route show table all default`: policy routing,
 * VRFs), as docker-bridges.ts reads them; the first read that failed instead, when one did.
 */
export async function readDefaultRoutes(run: CommandRunner = execRunner): Promise<{ routes: string } | { unread: CommandResult }> {
  const reads = await Promise.all(([4, 6] as const).map((family) => run('ip', ['-o', `-${family}`, 'route', 'show', 'table', 'all', 'default'])));
  const unread = reads.find((r) => r.code !== 0);
  return unread ? { unread } : { routes: reads.map((r) => r.stdout).join('\n') };
}

/** Run one iptables/ip6tables (or nft) command; a non-zero exit is a RulesError naming the command and its stderr. */
export async function must(run: CommandRunner, command: { binary: string; args: readonly string[] }): Promise<void> {
  const result = await run(command.binary, command.args);
  if (result.code !== 0) {
    throw new RulesError(`${command.binary} ${command.args.join(' ')} failed (exit ${result.code}): ${result.stderr.trim()}`);
  }
}

/** iptables' exit status when it could not take the xtables lock within its wait (RESOURCE_PROBLEM). */
const XTABLES_LOCK_HELD = 4;

/**
 * Whether a rule (`-C`) or chain (`-S`) is there. Exit 0: yes; any other answer but one (no such rule, chain or table;
 * a binary or table this machine lacks): no. The xtables lock held past the wait answers nothing: a RulesError, as
 * a failed removal is, not "absent" (until 2026-12-02 a teardown under the lock left every rule in place and said
 * it had removed them).
 */
export async function present(run: CommandRunner, binary: string, args: readonly string[]): Promise<boolean> {
  const result = await run(binary, args);
  if (result.code === XTABLES_LOCK_HELD) throw new RulesError(`${binary} ${args.join(' ')} could not tell (exit ${result.code}): ${result.stderr.trim()}`);
  return result.code === 0;
}

/**
 * Delete our jumps from nat/filter OUTPUT (every copy), then flush and delete our chains. Touches nothing
 * else; absent chains are fine (remove is idempotent).
 */
export async function removeRules(run: CommandRunner = execRunner, families: readonly Family[] = [4, 6]): Promise<string[]> {
  const removed: string[] = [];
  for (const family of families) {
    const binary = binaryOf(family);
    for (const own of OWN_CHAINS) {
      for (let i = 0; i < 16 && (await present(run, binary, jumpArgs('-C', own))); i++) {
        await must(run, { binary, args: jumpArgs('-D', own) });
        removed.push(`${binary} ${own.table} OUTPUT -j ${own.chain}`);
      }
    }
    for (const own of OWN_CHAINS) {
      if (!(await present(run, binary, chainArgs('-S', own)))) continue;
      await must(run, { binary, args: chainArgs('-F', own) });
      await must(run, { binary, args: chainArgs('-X', own) });
      removed.push(`${binary} ${own.table} ${own.chain}`);
    }
  }
  return removed;
}

/** Replace any earlier copy of our rules with a fresh one; on failure, remove what was added and throw. */
export async function applyRules(options: RuleOptions, run: CommandRunner = execRunner): Promise<void> {
  const families = options.families ?? [4, 6];
  await removeRules(run, families);
  try {
    for (const command of applyCommands(options)) await must(run, command);
  } catch (err) {
    await removeRules(run, families).catch(() => undefined);
    throw err;
  }
}
