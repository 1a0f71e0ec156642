import { execFile, execFileSync } from 'node:child_process';
import { rmSync } from 'node:fs';

export interface CommandResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Run a command without a shell; never throws (exit code 124 on timeout, 127 when it cannot start). */
export function run(command: string, args: readonly string[], options: { env?: NodeJS.ProcessEnv; input?: string; timeoutMs?: number; cwd?: string } = {}): Promise<CommandResult> {
  return new Promise((resolve) => {
    const child = execFile(
      command,
      [...args],
      { env: options.env ?? process.env, cwd: options.cwd, timeout: options.timeoutMs ?? 60_000, maxBuffer: 16 * 1024 * 1024, killSignal: 'SIGKILL' },
      (err, stdout, stderr) => {
        const e = err as (NodeJS.ErrnoException & { code?: number | string; killed?: boolean }) | null;
        const code = !e ? 0 : e.killed ? 124 : typeof e.code === 'number' ? e.code : 127;
        resolve({ code, stdout: String(stdout), stderr: String(stderr) || (e && typeof e.code !== 'number' ? e.message : '') });
      },
    );
    if (options.input !== undefined) child.stdin?.end(options.input);
    else child.stdin?.end();
  });
}

/** Run and throw with the command's stderr when it fails (set-up steps). */
export async function must(command: string, args: readonly string[], options: Parameters<typeof run>[2] = {}): Promise<string> {
  const result = await run(command, args, options);
  if (result.code !== 0) throw new Error(`${command} ${args.join(' ')} failed (exit ${result.code}): ${result.stderr.trim()}`);
  return result.stdout;
}

/**
 * `eg-` is the harness's World (and the containers of ways-out-containers), `egact-` the GitHub Action suite's, `ech-`
 * the encrypted-client-hello suite's.
 */
export const NAMESPACE_PATTERN = /^(eg|egact|ech)-(runner|internet|container)-(\d+)$/;

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Kill the processes left in a namespace (by PID) and delete it, with its /etc/netns directory. Synchronous for signal handlers. */
export function destroyNamespaceSync(name: string): void {
  try {
    const pids = execFileSync('ip', ['netns', 'pids', name], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] })
      .split(/\s+/)
      .filter(Boolean);
    for (const pid of pids) {
      try {
        process.kill(Number(pid), 'SIGKILL');
      } catch {
        // already gone
      }
    }
  } catch {
    // namespace already gone
  }
  try {
    execFileSync('ip', ['netns', 'del', name], { stdio: 'ignore' });
  } catch {
    // already gone
  }
  rmSync(`/etc/netns/${name}`, { recursive: true, force: true });
}

/**
 * Namespaces a suite of `prefix` left behind in an earlier run that crashed: that prefix, and the owning PID is dead.
 * Only its own prefix: another suite's namespaces are its own to clean.
 */
export function removeLeftoverNamespaces(prefix: string): string[] {
  const removed: string[] = [];
  let list = '';
  try {
    list = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' });
  } catch {
    return removed;
  }
  for (const line of list.split('\n')) {
    const name = line.split(' ')[0] ?? '';
    const m = NAMESPACE_PATTERN.exec(name);
    if (!m || m[1] !== prefix || Number(m[3]) === process.pid || alive(Number(m[3]))) continue;
    destroyNamespaceSync(name);
    removed.push(name);
  }
  return removed;
}

/**
 * Two new network namespaces, IPv6 on and without duplicate address detection, joined by a veth pair made inside
 * `server` (`serverDev`) whose peer (`clientDev`) goes straight into `client`; both ends up, no address given.
 */
export async function joinedNamespaces(server: string, client: string, serverDev: string, clientDev: string): Promise<void> {
  for (const ns of [server, client]) {
    await must('ip', ['netns', 'add', ns]);
    await must('ip', ['netns', 'exec', ns, 'sysctl', '-q', '-w', 'net.ipv6.conf.all.disable_ipv6=0', 'net.ipv6.conf.default.accept_dad=0', 'net.ipv6.conf.all.accept_dad=0']);
    await must('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
  }
  await must('ip', ['-n', server, 'link', 'add', serverDev, 'type', 'veth', 'peer', 'name', clientDev, 'netns', client]);
  await must('ip', ['-n', server, 'link', 'set', serverDev, 'up']);
  await must('ip', ['-n', client, 'link', 'set', clientDev, 'up']);
}
