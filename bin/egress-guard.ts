#!/usr/bin/env node
import { processIo } from '../cli/args.js';
import { SETTINGS } from '../config/settings.js';
import { exitCodeFor, invoke, type Command } from './exit-code.js';

/**
 * Each command's module is loaded when it runs: `run` never loads the collector's database drivers or the
 * report code (idle memory and start time of the sidecar, docs/benchmark.md). `usage`: printed after a usage
 * error of that command.
 */
type Loaded = { run: Command; usage?: string };
const lazy =
  <M>(load: () => Promise<M>, pick: (m: M) => Loaded) =>
  async (): Promise<Loaded> =>
    pick(await load());
const COMMANDS: Record<string, { load: () => Promise<Loaded>; help: string }> = {
  run: {
    load: lazy(
      () => import('../cli/run-command.js'),
      (m) => ({ run: m.runCommand }),
    ),
    help: 'start the sidecar (proxy; DNS and transparent listeners when configured)',
  },
  decide: {
    load: lazy(
      () => import('../cli/decide-command.js'),
      (m) => ({ run: m.decideCommand }),
    ),
    help: 'decide HOST[:PORT] against a policy: prints JSON, exit 0 allowed, 1 blocked, 2 bad policy',
  },
  rules: {
    load: lazy(
      () => import('../cli/rules-command.js'),
      (m) => ({ run: m.rulesCommand }),
    ),
    help: 'apply|remove|print the iptables/ip6tables redirect rules (transparent mode)',
  },
  collector: {
    load: lazy(
      () => import('../cli/collector-command.js'),
      (m) => ({ run: m.collectorCommand, usage: m.COLLECTOR_USAGE }),
    ),
    help: 'run the self-hosted collector (API, web page; SQLite or PostgreSQL)',
  },
  report: {
    load: lazy(
      () => import('../cli/report-command.js'),
      (m) => ({ run: m.reportCommand, usage: m.REPORT_USAGE }),
    ),
    help: 'what a job connected to, from an events file or a collector (table, markdown, json)',
  },
  policy: {
    load: lazy(
      () => import('../cli/policy-command.js'),
      (m) => ({ run: m.policyCommand, usage: m.POLICY_USAGE }),
    ),
    help: 'suggest EVENTS: the smallest allowlist for an audit run; replay --policy FILE EVENTS: what it would block',
  },
  env: {
    load: lazy(
      () => import('../cli/env-command.js'),
      (m) => ({ run: m.envCommand, usage: m.ENV_USAGE }),
    ),
    help: 'print shell exports that make common tools use the proxy (--trust-ca: and trust the inspection CA)',
  },
  ca: {
    load: lazy(
      () => import('../cli/ca-command.js'),
      (m) => ({ run: m.caCommand, usage: m.CA_USAGE }),
    ),
    help: 'print|install|uninstall the TLS inspection CA (install: the system trust store, Debian/Ubuntu)',
  },
};

function usage(): string {
  const commands = Object.entries(COMMANDS)
    .map(([name, c]) => `  ${name.padEnd(10)} ${c.help}`)
    .join('\n');
  const settings = SETTINGS.map((s) => `  --${s.key.padEnd(20)} ${s.env.padEnd(26)} ${s.help}${s.default !== undefined ? ` (default ${s.default})` : ''}`).join('\n');
  return `usage: egress-guard <command> [options]\n\ncommands:\n${commands}\n\nsettings (flag, environment variable; also keys of the policy file):\n${settings}\n`;
}

async function main(): Promise<number> {
  const [name, ...argv] = process.argv.slice(2);
  if (!name || name === '--help' || name === 'help') {
    process.stdout.write(usage());
    return name ? 0 : 2;
  }
  const command = COMMANDS[name];
  if (!command) {
    process.stderr.write(`egress-guard: unknown command "${name}"\n${usage()}`);
    return 2;
  }
  if (argv.includes('--help')) {
    process.stdout.write(usage());
    return 0;
  }
  const { run, usage: commandUsage } = await command.load();
  return invoke(run, argv, processIo(), commandUsage);
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.exitCode = exitCodeFor(err, process.stderr);
  },
);
