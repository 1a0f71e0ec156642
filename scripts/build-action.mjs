// Bundles the GitHub Action (action.yml runs action-dist/main.js and post.js; teardown.js runs as root) and the egress-guard CLI it starts
// (action-dist/egress-guard.js) into single files with every package inlined: a runner has no `npm install` at
// job start. `node scripts/build-action.mjs OUTDIR`; `npm run build:action` writes action-dist/, which is committed
// and compared with a fresh build by scripts/check-action-bundle.mjs. The native addons are prebuilt separately
// (scripts/build-prebuilds.sh) into action-dist/prebuilds/.
import { build } from 'esbuild';
import { NODE_BUNDLE_OPTIONS } from './esbuild-node.mjs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const outdir = path.resolve(process.argv[2] ?? path.join(root, 'action-dist'));

await build({
  absWorkingDir: root,
  entryPoints: { main: 'action/main.ts', post: 'action/post.ts', teardown: 'action/teardown.ts', 'egress-guard': 'bin/egress-guard.ts' },
  outdir,
  ...NODE_BUNDLE_OPTIONS,
  // pg's optional native binding is never installed; pg falls back to its JavaScript client.
  external: ['pg-native'],
});
console.log(`build-action: wrote ${path.relative(root, outdir) || '.'}/{main,post,teardown,egress-guard}.js`);
