import { createRequire } from 'node:module';

/**
 * Loads one of the N-API addons in native/ (built by node-gyp at `npm ci`, package script "install"). Node has
 * no getsockopt/setsockopt for these options, and no well-kept package exposes them.
 */
export function loadAddon<T>(name: 'original_dst' | 'socket_mark'): T {
  const require = createRequire(import.meta.url);
  // Compiled to dist/native/; node-gyp builds into native/build/ at the package root.
  const file = `../../native/build/Release/${name}.node`;
  try {
    return require(file) as T;
  } catch (err) {
    throw new Error(`the ${name} addon is not built (run \`npm ci\` or \`npm run install\`): ${file}: ${(err as Error).message.split('\n')[0]}`);
  }
}
