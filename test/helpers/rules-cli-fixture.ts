// Runs `egress-guard rules ...` (cli/rules-command.ts) in whatever namespace it is started in (test helper).
import { invoke } from '../../bin/exit-code.js';
import { processIo } from '../../cli/args.js';
import { rulesCommand } from '../../cli/rules-command.js';

process.exitCode = await invoke(rulesCommand, process.argv.slice(2), processIo());
