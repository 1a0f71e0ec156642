import { runProcess } from './egress-guard-process.js';

/**
 * Two requests in one curl run, so the second reuses the first's connection: for each, its status and the new
 * connections it needed ("200 1", then "403 0" when the second went over the same connection). `args` name the
 * proxy and anything else the requests need (--cacert).
 */
export async function curlTwoOnOneConnection(args: string[], first: string, second: string): Promise<string[]> {
  const result = await runProcess('curl', ['-sS', '--max-time', '10', ...args, '-o', '/dev/null', '-o', '/dev/null', '-w', '%{http_code} %{num_connects}\\n', first, second]);
  return result.stdout.trim().split('\n');
}
