// Runs `egress-guard rules ...` (cli/rules-command.ts) in whatever namespace it is started in (test helper).
import { UsageError } from '../../cli/args.js';
import { rulesCommand } from '../../cli/rules-command.js';

try {
  process.exitCode = await rulesCommand(process.argv.slice(2), { stdout: process.stdout, stderr: process.stderr, env: process.env });
} catch (err) {
  process.stderr.write(`${(err as Error).message}\n`);
  process.exitCode = err instanceof UsageError ? 2 : 1;
}
