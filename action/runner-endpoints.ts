/**
 * What the runner itself needs while the job runs, allowed whatever the policy says: the runner process runs as
 * the same user as the job's steps, so the rules cannot tell them apart, and without these it stops reporting
 * to GitHub (logs, step results, cancellation; the job then hangs or fails). The same entries are in the
 * embedded default policy (config/default-policy.ts).
 */
export const RUNNER_ENDPOINTS: readonly string[] = ['*.actions.githubusercontent.com:443', 'productionresultssa*.blob.core.windows.net:443'];

/** The policy's allowed-endpoints (as written) and the runner's own, each once. */
export function withRunnerEndpoints(endpoints: readonly string[]): string[] {
  return [...endpoints, ...RUNNER_ENDPOINTS.filter((entry) => !endpoints.includes(entry))];
}
