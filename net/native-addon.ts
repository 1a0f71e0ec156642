import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * Where a native addon (a target of native/binding.gyp) may be, searched from the directory of the module
 * that loads it upwards: a local node-gyp build (`native/build/Release/NAME.node` at the package root) first,
 * then a prebuild in the node-gyp-build layout (`prebuilds/PLATFORM-ARCH/NAME.node`), which is where the
 * GitHub Action's bundle (action-dist/) carries them. node-gyp-build itself loads one addon per package;
 * binding.gyp has more than one target, hence this search.
 */
export function addonCandidates(name: string, moduleUrl: string, platform: string = process.platform, arch: string = process.arch): string[] {
  const candidates: string[] = [];
  let dir = path.dirname(fileURLToPath(moduleUrl));
  for (;;) {
    candidates.push(path.join(dir, 'native', 'build', 'Release', `${name}.node`), path.join(dir, 'prebuilds', `${platform}-${arch}`, `${name}.node`));
    const parent = path.dirname(dir);
    if (parent === dir) return candidates;
    dir = parent;
  }
}

/** Load the first candidate that exists; throws naming where it looked. */
export function loadNativeAddon<T>(name: string, moduleUrl: string): T {
  const require = createRequire(moduleUrl);
  const candidates = addonCandidates(name, moduleUrl);
  const found = candidates.find((file) => existsSync(file));
  if (!found) throw new Error(`the ${name} addon is neither built (run \`npm ci\` or \`npm run install\`) nor prebuilt for ${process.platform}-${process.arch}`);
  return require(found) as T;
}

/** A Linux-only addon loaded at its first use: the addon, or null with the reason why not. */
export interface LazyAddon<T> {
  get(): T | null;
  /** Why get() is null (or will be); undefined once it has loaded. */
  unavailable(): string | undefined;
}

/**
 * Load `name` at the first get(), once: null where the platform is not Linux (`needs` names the Linux call it is
 * built on, for the reason) or the addon is neither built nor prebuilt. `init` runs once on the loaded addon; if it
 * throws, the addon counts as unavailable.
 */
export function lazyLinuxAddon<T>(name: string, moduleUrl: string, needs: string, init?: (addon: T) => void): LazyAddon<T> {
  let addon: T | null | undefined;
  let reason: string | undefined;
  const get = (): T | null => {
    if (addon !== undefined) return addon;
    if (process.platform !== 'linux') {
      reason = `${needs} is Linux only (this is ${process.platform})`;
      return (addon = null);
    }
    try {
      const native = loadNativeAddon<T>(name, moduleUrl);
      init?.(native);
      addon = native;
    } catch (err) {
      reason = (err as Error).message;
      addon = null;
    }
    return addon;
  };
  return {
    get,
    unavailable: () => (get() ? undefined : reason),
  };
}
