/**
 * A simulated GitHub-hosted runner for the action's end-to-end test: inside the World's runner network
 * namespace, a private mount namespace (held open by one process) with its own copy of /etc, where a `runner`
 * user has passwordless sudo and is in the docker group, as on GitHub's images (and, when asked, a private Docker
 * engine); tmpfs over /home, /var/lib and /run. Nothing it creates (users, sudoers, /var/lib/egress-guard) reaches this machine's own files. Steps run
 * as `runner` with the groups fixed when the job started, as the runner's worker process passes them on. The action's
 * main and post run with the node its action.yml names (`runs.using`), from the runner's own externals/ under
 * runner's home, as GitHub's runner runs them: Node 24 (runner-node.ts), not the node running the tests.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { chownSync, cpSync, mkdirSync, readFileSync, readlinkSync, readdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse as parseYaml } from 'yaml';
import type { World } from './harness.js';
import { must, run, type CommandResult } from './netns.js';
import { node24Dir } from './runner-node.js';

const here = path.dirname(fileURLToPath(import.meta.url));
/** The checkout: action.yml and action-dist/ as committed (what `uses:` downloads). */
const repository = path.resolve(here, '../../..');
const PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
/** The runner's Docker engine: its socket, its default bridge (documentation addresses), the image the tests run. */
export const DOCKER_SOCKET = '/run/docker.sock';
export const DOCKER_BRIDGE_ADDRESS = '203.0.113.225/27';
export const TOOLS_IMAGE = 'egact/tools:1';
/** The runner's own nodes, one per `runs.using` it accepts (as actions/runner's externals/node24), bound read-only. */
const EXTERNALS = '/home/runner/actions-runner/externals';

const SETUP = `set -euo pipefail
etc=$1
cp -a /etc/. "$etc"/
mount --bind "$etc" /etc
# The host's resolver would be in the copy: the runner's is the fake internet's.
rm -f /etc/resolv.conf
printf 'nameserver %s\noptions attempts:1 timeout:2\n' "$3" >/etc/resolv.conf
mount -t tmpfs egact-home /home
mount -t tmpfs egact-varlib /var/lib
mount -t tmpfs egact-run /run
# As on a fresh GitHub image: no egress-guard user (main creates it), the host name in /etc/hosts.
! getent passwd egress-guard >/dev/null || userdel --force egress-guard
printf '127.0.1.1 %s\n' "$(hostname)" >>/etc/hosts
getent group docker >/dev/null || groupadd --system docker
useradd --create-home --shell /bin/bash --groups docker runner
printf 'runner ALL=(ALL) NOPASSWD:ALL\\n' >/etc/sudoers.d/runner
chmod 0440 /etc/sudoers.d/runner
# The runner's node, in its home as on GitHub's images (main copies it for egress-guard, which cannot count on
# entering another user's home).
install -d -o runner -g runner /home/runner/actions-runner /home/runner/actions-runner/externals
mkdir ${EXTERNALS}/node24
mount --bind -o ro "$4" ${EXTERNALS}/node24
if [ "$2" = systemd-resolved ]; then
  # As on ubuntu runners: /etc/resolv.conf is a symlink to resolved's stub, the real upstreams are in /run (no
  # resolved daemon runs here: nothing may look a name up through the stub before the action's main).
  mkdir -p /run/systemd/resolve
  printf 'nameserver 127.0.0.53\noptions edns0 trust-ad\n' >/run/systemd/resolve/stub-resolv.conf
  grep '^nameserver' /etc/resolv.conf >/run/systemd/resolve/resolv.conf
  ln -sfn ../run/systemd/resolve/stub-resolv.conf /etc/resolv.conf
fi
echo ready
exec sleep 900
`;

export const RESOLVED_STUB = '../run/systemd/resolve/stub-resolv.conf';

/** name<<DELIMITER / value / DELIMITER entries of a GITHUB_STATE or GITHUB_OUTPUT file. */
export function parseCommandFile(text: string): Map<string, string> {
  const values = new Map<string, string>();
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const m = /^([^<=]+)<<(.+)$/.exec(lines[i]!);
    if (m) {
      const end = lines.indexOf(m[2]!, i + 1);
      values.set(m[1]!, lines.slice(i + 1, end).join('\n'));
      i = end;
    } else if (lines[i]!.includes('=')) values.set(lines[i]!.slice(0, lines[i]!.indexOf('=')), lines[i]!.slice(lines[i]!.indexOf('=') + 1));
  }
  return values;
}

export interface Job {
  dir: string;
  files: { state: string; output: string; env: string; summary: string };
  env: NodeJS.ProcessEnv;
}

export class SimulatedRunner {
  private constructor(
    private readonly holder: ChildProcess,
    readonly dir: string,
    readonly user: { uid: number; gid: number; groups: number[] },
  ) {}

  /**
   * `dns`: plain (resolv.conf names `resolver`) or systemd-resolved (its stub, as on ubuntu runners). Entered with
   * nsenter rather than `ip netns exec`, which mounts a sysfs of its own: a Docker engine needs the cgroups under /sys.
   */
  static async start(world: World, name: string, resolver: string, dns: 'plain' | 'systemd-resolved' = 'plain'): Promise<SimulatedRunner> {
    const dir = path.join(world.dir, `runner-${name}`);
    mkdirSync(path.join(dir, 'etc'), { recursive: true });
    const netns = `--net=/run/netns/${world.runnerNs}`;
    const node24 = await node24Dir();
    const holder = spawn('unshare', ['--mount', '--propagation', 'private', 'nsenter', netns, 'bash', '-c', SETUP, 'setup', path.join(dir, 'etc'), dns, resolver, node24], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const output: string[] = [];
    holder.stdout!.on('data', (d: Buffer) => output.push(d.toString()));
    holder.stderr!.on('data', (d: Buffer) => output.push(d.toString()));
    const deadline = Date.now() + 20_000;
    while (!output.join('').includes('ready')) {
      if (holder.exitCode !== null || Date.now() > deadline) {
        holder.kill('SIGKILL');
        throw new Error(`simulated runner did not start: ${output.join('')}`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    const inside = (args: string[]) => must('nsenter', ['-t', String(holder.pid), '-m', '-n', '--', ...args]);
    const user = {
      uid: Number((await inside(['id', '-u', 'runner'])).trim()),
      gid: Number((await inside(['id', '-g', 'runner'])).trim()),
      groups: (await inside(['id', '-G', 'runner'])).trim().split(/\s+/).map(Number),
    };
    return new SimulatedRunner(holder, dir, user);
  }

  /** As root, inside the runner (its mount and network namespaces). */
  asRoot(command: string, args: readonly string[], options: { env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<CommandResult> {
    return run('nsenter', ['-t', String(this.holder.pid), '-m', '-n', '--', command, ...args], {
      env: { PATH, LANG: 'C', ...options.env },
      timeoutMs: options.timeoutMs ?? 30_000,
    });
  }

  /** As `runner`, with the groups it had when the job started (a job step). */
  step(command: string, args: readonly string[], options: { env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<CommandResult> {
    const { uid, gid, groups } = this.user;
    return this.asRoot('setpriv', [`--reuid=${uid}`, `--regid=${gid}`, `--groups=${groups.join(',')}`, '--', command, ...args], {
      env: { HOME: '/home/runner', USER: 'runner', ...options.env },
      timeoutMs: options.timeoutMs,
    });
  }

  /**
   * A private Docker engine inside the runner, as GitHub's images have one: its socket root:docker 0660 at
   * /run/docker.sock, its bridge on documentation addresses, containers resolving through `resolver` (Docker's
   * own fallback would be a public resolver).
   */
  async startDockerd(resolver: string): Promise<void> {
    const child = spawn(
      'nsenter',
      [
        '-t',
        String(this.holder.pid),
        '-m',
        '-n',
        '--',
        'dockerd',
        '--host',
        `unix://${DOCKER_SOCKET}`,
        '--group',
        'docker',
        '--bip',
        DOCKER_BRIDGE_ADDRESS,
        '--dns',
        resolver,
        '--ip6tables=false',
      ],
      { stdio: 'ignore', env: { PATH } },
    );
    const deadline = Date.now() + 60_000;
    while ((await this.asRoot('docker', ['-H', `unix://${DOCKER_SOCKET}`, 'info'])).code !== 0) {
      if (child.exitCode !== null || Date.now() > deadline) throw new Error(`dockerd did not start (${child.exitCode ?? 'timeout'})`);
      await new Promise((r) => setTimeout(r, 300));
    }
  }

  /** An image from this machine's own binaries (curl, dig, node and their libraries): no registry is reachable. */
  async importToolsImage(): Promise<string> {
    const rootfs = path.join(this.dir, 'tools-rootfs');
    const script = `set -euo pipefail
rootfs=$1
mkdir -p "$rootfs/tmp"
for bin in /usr/bin/curl /usr/bin/dig "$2"; do
  mkdir -p "$rootfs$(dirname "$bin")"
  cp -L "$bin" "$rootfs$bin"
  for lib in $(ldd "$bin" | grep -o '/[^ ]*'); do mkdir -p "$rootfs$(dirname "$lib")"; cp -Ln "$lib" "$rootfs$lib"; done
done
tar -C "$rootfs" -c . | docker -H unix://${DOCKER_SOCKET} import - ${TOOLS_IMAGE} >/dev/null`;
    const result = await this.asRoot('bash', ['-c', script, 'import', rootfs, process.execPath], { timeoutMs: 120_000 });
    if (result.code !== 0) throw new Error(`tools image: ${result.stderr}`);
    return TOOLS_IMAGE;
  }

  /**
   * A job: the action checked out as `uses:` downloads it, GITHUB_* files, and the INPUT_* variables GitHub sets
   * (every input of action.yml, its default unless `with` sets it).
   */
  newJob(name: string, withInputs: Record<string, string>): Job {
    const dir = path.join(this.dir, `job-${name}`);
    const actionDir = path.join(dir, '_actions', 'egress-guard');
    mkdirSync(actionDir, { recursive: true });
    cpSync(path.join(repository, 'action.yml'), path.join(actionDir, 'action.yml'));
    cpSync(path.join(repository, 'action-dist'), path.join(actionDir, 'action-dist'), { recursive: true });
    const files = { state: 'state', output: 'output', env: 'env', summary: 'step-summary.md' };
    for (const sub of ['temp', 'workspace']) mkdirSync(path.join(dir, sub), { recursive: true });
    for (const file of Object.values(files)) writeFileSync(path.join(dir, file), '');
    for (const entry of ['', 'temp', 'workspace', ...Object.values(files)]) chownSync(path.join(dir, entry), this.user.uid, this.user.gid);
    const action = parseYaml(readFileSync(path.join(actionDir, 'action.yml'), 'utf8')) as { inputs: Record<string, { default?: string }> };
    const inputs: NodeJS.ProcessEnv = {};
    for (const [input, spec] of Object.entries(action.inputs)) inputs[`INPUT_${input.toUpperCase()}`] = withInputs[input] ?? spec.default ?? '';
    for (const input of Object.keys(withInputs)) if (!(input in action.inputs)) throw new Error(`action.yml has no input ${input}`);
    const abs = Object.fromEntries(Object.entries(files).map(([k, v]) => [k, path.join(dir, v)])) as Job['files'];
    return {
      dir,
      files: abs,
      env: {
        ...inputs,
        GITHUB_ACTIONS: 'true',
        GITHUB_REPOSITORY: 'octo-org/webapp',
        GITHUB_RUN_ID: '4242',
        GITHUB_JOB: name,
        GITHUB_ACTION_PATH: actionDir,
        GITHUB_WORKSPACE: path.join(dir, 'workspace'),
        RUNNER_TEMP: path.join(dir, 'temp'),
        GITHUB_STATE: abs.state,
        GITHUB_OUTPUT: abs.output,
        GITHUB_ENV: abs.env,
        GITHUB_STEP_SUMMARY: abs.summary,
      },
    };
  }

  /**
   * `runs.main` or `runs.post` of the job's action.yml, as runner, with the STATE_* the runner passes to post, on the
   * runner's node that `runs.using` names (a `using` it has no node for fails, as on GitHub).
   */
  runAction(job: Job, which: 'main' | 'post'): Promise<CommandResult> {
    const actionDir = job.env.GITHUB_ACTION_PATH!;
    const action = parseYaml(readFileSync(path.join(actionDir, 'action.yml'), 'utf8')) as { runs: Record<string, string> };
    if (action.runs.using !== 'node24') throw new Error(`the simulated runner has no node for runs.using ${action.runs.using} (only node24)`);
    const node = `${EXTERNALS}/${action.runs.using}/bin/node`;
    const state = which === 'post' ? Object.fromEntries([...parseCommandFile(readFileSync(job.files.state, 'utf8'))].map(([k, v]) => [`STATE_${k}`, v])) : {};
    return this.step(node, [path.join(actionDir, action.runs[which]!)], { env: { ...job.env, ...state }, timeoutMs: 90_000 });
  }

  /** The processes in this runner's mount namespace (the holder, and whatever the action left running). */
  private processes(): number[] {
    const own = readlinkSync(`/proc/${this.holder.pid}/ns/mnt`);
    const pids: number[] = [];
    for (const entry of readdirSync('/proc')) {
      if (!/^\d+$/.test(entry)) continue;
      try {
        if (readlinkSync(`/proc/${entry}/ns/mnt`) === own) pids.push(Number(entry));
      } catch {
        // gone, or not ours to read
      }
    }
    return pids;
  }

  /** Remove the redirect rules from the namespace and end every process of this runner, by PID. */
  async stop(): Promise<void> {
    if (this.holder.exitCode !== null) return;
    // Containers have namespaces of their own: removed through their engine, which then stops (its pid file).
    const docker = ['-H', `unix://${DOCKER_SOCKET}`];
    const containers = await this.asRoot('docker', [...docker, 'ps', '-aq']);
    const ids = containers.code === 0 ? containers.stdout.split(/\s+/).filter(Boolean) : [];
    if (ids.length > 0) await this.asRoot('docker', [...docker, 'rm', '-f', ...ids]);
    await this.asRoot('sh', [
      '-c',
      'pid=$(cat /run/docker.pid 2>/dev/null) || exit 0; kill -TERM "$pid"; for i in $(seq 1 75); do kill -0 "$pid" 2>/dev/null || exit 0; sleep 0.2; done',
    ]);
    await this.asRoot(process.execPath, [path.join(repository, 'dist/egress-guard.js'), 'rules', 'remove']);
    for (const pid of this.processes()) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  }
}
