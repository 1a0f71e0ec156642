// The esbuild options every bundle of ours for Node.js shares (the GitHub Action's, scripts/build-action.mjs, and
// the CLI's, scripts/build-cli-bundle.mjs): one ES module file per entry point, with the packages it imports inlined.
export const NODE_BUNDLE_OPTIONS = {
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'esm',
  // CommonJS packages inside an ES module bundle still call require().
  banner: { js: "import { createRequire as __bundleCreateRequire } from 'node:module';\nconst require = __bundleCreateRequire(import.meta.url);" },
  // The licence comments go to NAME.js.LEGAL.txt beside each bundle: one of them has a character beyond Latin-1, and
  // one such character makes V8 keep the whole source as UTF-16 (twice the memory). Comments and indentation go too
  // (minifyWhitespace; names are kept, so stack traces still name functions): less to read and to keep at start.
  legalComments: 'external',
  minifyWhitespace: true,
  logLevel: 'warning',
};
