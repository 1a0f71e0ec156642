import { readFileSync } from 'node:fs';
import type { ConfigSources } from '../config/load-config.js';

export function configSources(flags: Map<string, string[]>, env: NodeJS.ProcessEnv): ConfigSources {
  return { flags, env, readFile: (path) => readFileSync(path, 'utf8') };
}
