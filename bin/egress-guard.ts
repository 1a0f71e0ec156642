#!/usr/bin/env node
import { processIo } from '../cli/args.js';
import { CA_USAGE, caCommand } from '../cli/ca-command.js';
import { COLLECTOR_USAGE, collectorCommand } from '../cli/collector-command.js';
import { decideCommand } from '../cli/decide-command.js';
import { ENV_USAGE, envCommand } from '../cli/env-command.js';
import { POLICY_USAGE, policyCommand } from '../cli/policy-command.js';
import { REPORT_USAGE, reportCommand } from '../cli/report-command.js';
import { rulesCommand } from '../cli/rules-command.js';
import { runCommand } from '../cli/run-command.js';
import { SETTINGS } from '../config/settings.js';
import { exitCodeFor, invoke, type Command } from './exit-code.js';

/** `usage`: printed after a usage error of that command. */
const COMMANDS: Record<string, { run: Command; help: string; usage?: string }> = {
  run: { run: runCommand, help: 'start the sidecar (proxy; DNS and transparent listeners when configured)' },
  decide: { run: decideCommand, help: 'decide HOST[:PORT] against a policy: prints JSON, exit 0 allowed, 1 blocked, 2 bad policy' },
  rules: { run: rulesCommand, help: 'apply|remove|print the iptables/ip6tables redirect rules (transparent mode)' },
  collector: { run: collectorCommand, usage: COLLECTOR_USAGE, help: 'run the self-hosted collector (API, web page; SQLite or PostgreSQL)' },
  report: { run: reportCommand, usage: REPORT_USAGE, help: 'what a job connected to, from an events file or a collector (table, markdown, json)' },
  policy: { run: policyCommand, usage: POLICY_USAGE, help: 'suggest EVENTS: the smallest allowlist for an audit run; replay --policy FILE EVENTS: what it would block' },
  env: { run: envCommand, usage: ENV_USAGE, help: 'print shell exports that make common tools use the proxy (--trust-ca: and trust the inspection CA)' },
  ca: { run: caCommand, usage: CA_USAGE, help: 'print|install|uninstall the TLS inspection CA (install: the system trust store, Debian/Ubuntu)' },
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
  return invoke(command.run, argv, processIo(), command.usage);
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.exitCode = exitCodeFor(err, process.stderr);
  },
);
