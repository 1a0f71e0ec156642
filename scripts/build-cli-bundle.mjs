// Bundles the CLI (bin/egress-guard.ts) into dist/egress-guard.js and its chunks in dist/chunks/, what `egress-guard`
// runs (package.json "bin", the container image, the Kubernetes manifests). Why a bundle: node's ES module loader
// spends most of a start resolving, linking and (for CommonJS packages) lexing some hundreds of files; from a few
// chunks `egress-guard run` is ready in less than half the CPU time (docs/benchmark.md, issue 14: "What changed").
// `tsc` still compiles every module to dist/ (the tests import them); this runs after it in `npm run build`.
import { build } from 'esbuild';
import { chmodSync, rmSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { NODE_BUNDLE_OPTIONS } from './esbuild-node.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const outfile = path.join(root, 'dist', 'egress-guard.js');

rmSync(path.join(root, 'dist', 'chunks'), { recursive: true, force: true });
await build({
  absWorkingDir: root,
  // The collector's view thread (collector/view-thread.ts) starts `./view-worker.js` beside its own module, which the
  // bundle puts in a chunk: so the worker's entry goes to chunks/ too.
  entryPoints: { 'egress-guard': 'bin/egress-guard.ts', 'chunks/view-worker': 'collector/view-worker.ts' },
  outdir: path.dirname(outfile),
  ...NODE_BUNDLE_OPTIONS,
  // Each command's code (bin/egress-guard.ts imports it when the command runs) is a chunk of its own, loaded then:
  // `run` never reads the collector's, the report's or their packages' code, nor loads their packages (an
  // external package's import is a static import of the chunk that uses it).
  splitting: true,
  chunkNames: 'chunks/[name]-[hash]',
  // better-sqlite3 stays a package: it finds its compiled addon relative to its own files. pg's optional native
  // binding is never installed.
  external: ['better-sqlite3', 'pg-native'],
});
chmodSync(outfile, 0o755);
