// Fails (exit 1) when the committed action-dist/ is not what the sources build: the bundles are rebuilt into a
// scratch directory and compared byte for byte; the prebuilt addons are checked against their manifest
// (scripts/prebuild-manifest.mjs). Part of `npm test`.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const committed = path.join(root, 'action-dist');
const scratch = mkdtempSync(path.join(tmpdir(), 'egress-guard-action-build-'));
let ok = true;
try {
  execFileSync(process.execPath, [path.join(root, 'scripts/build-action.mjs'), scratch], { stdio: ['ignore', 'ignore', 'inherit'] });
  const bundled = (f) => f.endsWith('.js') || f.endsWith('.LEGAL.txt');
  const built = readdirSync(scratch).filter(bundled);
  const present = existsSync(committed) ? readdirSync(committed).filter(bundled) : [];
  for (const file of new Set([...built, ...present])) {
    const want = path.join(scratch, file);
    const have = path.join(committed, file);
    if (!existsSync(have)) console.error(`check-action-bundle: action-dist/${file} is missing`);
    else if (!existsSync(want)) console.error(`check-action-bundle: action-dist/${file} is not built by scripts/build-action.mjs any more`);
    else if (!readFileSync(want).equals(readFileSync(have))) console.error(`check-action-bundle: action-dist/${file} differs from what the sources build`);
    else continue;
    ok = false;
  }
} finally {
  rmSync(scratch, { recursive: true, force: true });
}
if (!ok) console.error('check-action-bundle: run `npm run build:action` and commit action-dist/');
else console.log('check-action-bundle: action-dist/ (bundles and their licence files) is what the sources build');
try {
  execFileSync(process.execPath, [path.join(root, 'scripts/prebuild-manifest.mjs'), 'check'], { stdio: 'inherit' });
} catch {
  ok = false;
}
process.exitCode = ok ? 0 : 1;
