// Bundles the CLI (bin/egress-guard.ts) into dist/egress-guard.js, the file `egress-guard` runs (package.json "bin",
// the container image, the Kubernetes manifests). Why a bundle: node's ES module loader spends most of a start
// resolving, linking and (for CommonJS packages) lexing some hundreds of files; from one file `egress-guard run`
// is ready in about half the CPU time (docs/benchmark.md, issue 14: "What changed").
// `tsc` still compiles every module to dist/ (the tests import them); this runs after it in `npm run build`.
import { build } from 'esbuild';
import { chmodSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { NODE_BUNDLE_OPTIONS } from './esbuild-node.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const outfile = path.join(root, 'dist', 'egress-guard.js');

await build({
  absWorkingDir: root,
  entryPoints: ['bin/egress-guard.ts'],
  outfile,
  ...NODE_BUNDLE_OPTIONS,
  // The collector's database drivers stay packages: better-sqlite3 finds its compiled addon relative to its own
  // files, and neither is loaded by `run`. pg's optional native binding is never installed.
  external: ['better-sqlite3', 'pg', 'pg-native'],
});
chmodSync(outfile, 0o755);
