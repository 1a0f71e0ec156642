import v8 from 'node:v8';

/**
 * How large V8's young generation may grow in the proxy (setting `young-generation`).
 *
 * Under a steady load V8 doubles each of the young generation's two semi-spaces from 1 MiB up to 16 MiB, and the
 * pages it touched stay resident: about 30 MiB of the RSS egress-guard reaches under load (docs/benchmark.md,
 * "Memory"). `--max-semi-space-size` would cap that, but node reads it only from its own command line or
 * NODE_OPTIONS, which every way of starting egress-guard would have to repeat. The growth factor, however, is read
 * by V8 each time it grows the young generation, so setting it to 1 here, before any load, keeps the semi-spaces at
 * their starting size. The price is more frequent scavenges: 2-5% more instructions per operation in the benchmark.
 */
export type YoungGeneration = 'fixed' | 'grow';

export function useYoungGeneration(mode: YoungGeneration): void {
  // `grow` is V8's own default (factor 2), set explicitly so that a reload of the setting in one process is exact.
  v8.setFlagsFromString(`--semi-space-growth-factor=${mode === 'fixed' ? 1 : 2}`);
}
