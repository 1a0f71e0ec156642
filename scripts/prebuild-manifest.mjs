// The manifest of action-dist/prebuilds: which native sources the prebuilt addons were compiled from, and what
// each addon exports. `write` records it after scripts/build-prebuilds.sh; `check` fails (exit 1) when the
// sources changed since, a prebuild is missing or of the wrong architecture, or an x64 prebuild does not load
// or exports other functions. A byte-for-byte rebuild is not compared: compilers differ between machines.
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const prebuilds = path.join(root, 'action-dist/prebuilds');
const manifestFile = path.join(prebuilds, 'manifest.json');
/** ELF e_machine of each architecture. */
const MACHINES = { x64: 62, arm64: 183 };

function sourceHashes() {
  const native = path.join(root, 'native');
  const files = readdirSync(native)
    .filter((f) => f === 'binding.gyp' || /\.(c|h|cc)$/.test(f))
    .sort();
  return Object.fromEntries(
    files.map((f) => [
      f,
      createHash('sha256')
        .update(readFileSync(path.join(native, f)))
        .digest('hex'),
    ]),
  );
}

/** Every target_name of binding.gyp (a JSON-compatible file here). */
function targets() {
  return JSON.parse(readFileSync(path.join(root, 'native/binding.gyp'), 'utf8'))
    .targets.map((t) => t.target_name)
    .sort();
}

function exportsOf(file) {
  return Object.keys(createRequire(import.meta.url)(file)).sort();
}

function elfMachine(file) {
  const header = readFileSync(file).subarray(0, 20);
  if (header.readUInt32BE(0) !== 0x7f454c46) return undefined;
  return header.readUInt16LE(18);
}

function write() {
  const addons = Object.fromEntries(targets().map((name) => [name, exportsOf(path.join(prebuilds, `linux-${process.arch}`, `${name}.node`))]));
  const manifest = { sources: sourceHashes(), platforms: Object.keys(MACHINES).map((a) => `linux-${a}`), addons };
  writeFileSync(manifestFile, `${JSON.stringify(manifest, null, 2)}\n`);
  console.log(`prebuild-manifest: wrote ${path.relative(root, manifestFile)}`);
}

function check() {
  const problems = [];
  if (!existsSync(manifestFile)) problems.push('action-dist/prebuilds/manifest.json is missing: run npm run build:prebuilds');
  else {
    const manifest = JSON.parse(readFileSync(manifestFile, 'utf8'));
    if (JSON.stringify(manifest.sources) !== JSON.stringify(sourceHashes())) problems.push('native/ changed since the prebuilds were made: run npm run build:prebuilds');
    const names = targets();
    if (JSON.stringify(Object.keys(manifest.addons).sort()) !== JSON.stringify(names))
      problems.push(`the prebuilds are of ${Object.keys(manifest.addons)} but binding.gyp builds ${names}`);
    for (const [arch, machine] of Object.entries(MACHINES)) {
      for (const name of names) {
        const file = path.join(prebuilds, `linux-${arch}`, `${name}.node`);
        if (!existsSync(file)) problems.push(`${path.relative(root, file)} is missing`);
        else if (elfMachine(file) !== machine) problems.push(`${path.relative(root, file)} is not an ELF ${arch} file`);
        else if (arch === process.arch) {
          try {
            const found = exportsOf(file);
            if (JSON.stringify(found) !== JSON.stringify(manifest.addons[name]))
              problems.push(`${path.relative(root, file)} exports ${found}, the manifest says ${manifest.addons[name]}`);
          } catch (err) {
            problems.push(`${path.relative(root, file)} does not load: ${err.message}`);
          }
        }
      }
    }
  }
  for (const p of problems) console.error(`prebuild-manifest: ${p}`);
  if (problems.length === 0) console.log('prebuild-manifest: prebuilds match native/ (sources hashed, x64 loaded, arm64 checked as ELF aarch64)');
  return problems.length === 0;
}

const command = process.argv[2];
if (command === 'write') write();
else if (command === 'check') process.exitCode = check() ? 0 : 1;
else {
  console.error('usage: node scripts/prebuild-manifest.mjs write|check');
  process.exitCode = 2;
}
