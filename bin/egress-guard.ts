#!/usr/bin/env node
import { UsageError, type CommandIo } from '../cli/args.js';
import { decideCommand } from '../cli/decide-command.js';

import { rulesCommand } from '../cli/rules-command.js';
import { runCommand } from '../cli/run-command.js';
import { collectorCommand, envCommand, policyCommand, reportCommand } from '../cli/report-commands.js';
import { SETTINGS } from '../config/settings.js';

type Command = (argv: readonly string[], io: CommandIo) => Promise<number>;

const COMMANDS: Record<string, { run: Command; help: string }> = {
  run: { run: runCommand, help: 'start the sidecar (proxy; DNS and transparent listeners when configured)' },
  decide: { run: decideCommand, help: 'decide HOST[:PORT] against a policy: prints JSON, exit 0 allowed, 1 blocked, 2 bad policy' },
  rules: { run: rulesCommand, help: 'apply|remove|print the iptables/ip6tables redirect rules (transparent mode)' },
  collector: { run: (argv, io) => collectorCommand([...argv], io), help: 'run the self-hosted collector (API, web page; SQLite or PostgreSQL)' },
  report: { run: (argv, io) => reportCommand([...argv], io), help: 'what a job connected to, from an events file or a collector (table, markdown, json)' },
  policy: { run: (argv, io) => policyCommand([...argv], io), help: 'suggest EVENTS: the smallest allowlist for an audit run; replay --policy FILE EVENTS: what it would block' },
  env: { run: (argv, io) => envCommand([...argv], io), help: 'print shell exports that make common tools use the proxy' },
};

function usage(): string {
  const commands = Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(10)} ${c.help}`).join('\n');
  const settings = SETTINGS.map((s) => `  --${s.key.padEnd(20)} ${s.env.padEnd(26)} ${s.help}${s.default !== undefined ? ` (default ${s.default})` : ''}`).join('\n');
  return `usage: egress-guard <command> [options]\n\ncommands:\n${commands}\n\nsettings (flag, environment variable; also keys of the policy file):\n${settings}\n`;
}

async function main(): Promise<number> {
  const [name, ...argv] = process.argv.slice(2);
  const io: CommandIo = { stdout: process.stdout, stderr: process.stderr, env: process.env };
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
  try {
    return await command.run(argv, io);
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`egress-guard: ${err.message}\n`);
      return 2;
    }
    throw err;
  }
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (err: Error) => {
    process.stderr.write(`egress-guard: ${err.stack ?? err.message}\n`);
    process.exitCode = 1;
  },
);
