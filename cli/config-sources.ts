import { readFileSync } from 'node:fs';
import type { ConfigSources } from '../config/load-config.js';
import { SETTINGS } from '../config/settings.js';
import type { OptionSpecs } from './args.js';

export function configSources(flags: Map<string, string[]>, env: NodeJS.ProcessEnv): ConfigSources {
  return { flags, env, readFile: (path) => readFileSync(path, 'utf8') };
}

/** Every setting is also a flag (repeatable: list settings take each value, the others the last). */
export const SETTING_OPTIONS: OptionSpecs = Object.fromEntries(SETTINGS.map((s) => [s.key, { type: 'string', multiple: true }]));
