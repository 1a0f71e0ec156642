import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));

/**
 * The batched-UDP e2e tests' echo server: test/helpers/udp-batch-late-echo.ts started in network namespace `ns` (`args`: its
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
