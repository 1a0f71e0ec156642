import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { must } from './netns.js';

const here = path.dirname(fileURLToPath(import.meta.url));

/**
 * The batched-UDP e2e tests' parts: test/helpers/udp-batch-late-echo.ts started in network namespace `ns` (`args`: its
 * bind address, and `v6only`): the process and the port it listens on.
 */
export async function startLateEcho(ns: string, args: readonly string[] = []): Promise<{ child: ChildProcess; port: number; output: () => string }> {
  const child = spawn('ip', ['netns', 'exec', ns, process.execPath, path.join(here, '../helpers/udp-batch-late-echo.js'), ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
  let output = '';
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the echo server did not start: ${output}`)), 10_000);
    child.stdout!.on('data', (chunk: Buffer) => {
      output += chunk.toString();
      const ready = /ready (\d+)/.exec(output);
      if (ready) {
        clearTimeout(timer);
        resolve(Number(ready[1]));
      }
    });
    child.once('exit', (code) => reject(new Error(`the echo server exited (${code}): ${output}`)));
  });
  return { child, port, output: () => output };
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
