import { isIP } from 'node:net';
import {
  applyCommands,
  formatCommands,
  onLinkPrefixes,
  parseInboundPort,
  removalCommands,
  type Family,
  type InboundPort,
  type OnLinkPrefix,
  type RuleOptions,
  type RulesMode,
} from '../rules/iptables-rules.js';
import { existsSync, lstatSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { socketMark } from '../config/load-config.js';
import { NFLOG_GROUP_REFUSED_EXIT } from '../netlog/reader-exit.js';
import { bridgesOffTheUplinks } from '../rules/docker-bridges.js';
import { removeContainerRules } from '../rules/run-container-rules.js';
import { FRAME_GUARD_TABLE, frameGuardScript } from '../rules/frame-guard.js';
import { applyFrameGuard, describeFrameGuard, readGuardedDevices, removeFrameGuard } from '../rules/run-frame-guard.js';
import { applyRules, execRunner, readDefaultRoutes, removeRules, RulesError } from '../rules/run-rules.js';
import { NFLOG_PLUGIN, ULOGD_PLUGIN_DIRS, ulogdConfig } from '../rules/ulogd-config.js';
import { NFLOG_GROUP } from '../rules/iptables-rules.js';
import { startNflogReader } from '../netlog/nflog-reader.js';
import { uidOfUser } from '../rules/user-id.js';
import { parseArgs, takeOption, UsageError, type CommandIo, type OptionSpecs } from './args.js';

const USAGE =
  'egress-guard rules apply|remove|print [--uid UID | --user NAME] [--mode block|audit] [--transparent-port N] [--dns-port N] [--family 4|6|both] [--inbound-ports PORT[/tcp|udp]...] [--dhcp-server ADDRESS]... [--nflog-group N] [--socket-mark N] [--frame-guard on|off] | rules log-config --json-file FILE [--log-file FILE] [--nflog-group N] [--plugin-dir DIR] | rules log-reader --json-file FILE [--nflog-group N] [--pid-file FILE]';
const OPTIONS: OptionSpecs = {
  ...Object.fromEntries(
    ['uid', 'user', 'mode', 'transparent-port', 'dns-port', 'family', 'nflog-group', 'socket-mark', 'frame-guard', 'json-file', 'log-file', 'plugin-dir', 'pid-file'].map((key) => [
      key,
      { type: 'string' },
    ]),
  ),
  'inbound-ports': { type: 'string', multiple: true },
  'dhcp-server': { type: 'string', multiple: true },
};

/** Words of repeated flags, or of the environment variable when no flag is given (space or comma separated). */
function listOption(args: ReturnType<typeof parseArgs>, key: string, env: string | undefined): string[] {
  const values = args.flags.get(key) ?? (env ? [env] : []);
  args.flags.delete(key);
  return values.flatMap((v) => v.split(/[\s,]+/)).filter(Boolean);
}

function inboundPorts(words: string[]): InboundPort[] {
  return words.map((word) => {
    const inbound = parseInboundPort(word);
    if (!inbound) throw new UsageError(`--inbound-ports: "${word}" is not PORT, PORT/tcp or PORT/udp`);
    return inbound;
  });
}

function dhcpServers(words: string[]): string[] {
  for (const word of words) if (isIP(word) === 0) throw new UsageError(`--dhcp-server: "${word}" is not an address`);
  return words;
}

function familiesOf(family = 'both'): Family[] {
  const families: Family[] = family === '4' ? [4] : family === '6' ? [6] : family === 'both' ? [4, 6] : [];
  if (families.length === 0) throw new UsageError(`--family: "${family}" is not 4, 6 or both`);
  return families;
}

function nflogGroup(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  if (!/^\d{1,5}$/.test(value) || Number(value) > 65535) throw new UsageError(`--nflog-group: "${value}" is not 0-65535`);
  return Number(value);
}

/** `rules log-config`: the ulogd configuration that turns the rules' NFLOG reports into JSON lines. */
function logConfig(args: ReturnType<typeof parseArgs>): string {
  const jsonFile = takeOption(args, 'json-file');
  if (!jsonFile) throw new UsageError('log-config needs --json-file FILE (where ulogd writes, and egress-guard reads: netfilter-log)');
  const pluginDir = takeOption(args, 'plugin-dir') ?? ULOGD_PLUGIN_DIRS.find((dir) => existsSync(`${dir}/${NFLOG_PLUGIN}`));
  if (!pluginDir) throw new UsageError(`ulogd's plugins are not installed (apt-get install ulogd2 ulogd2-json), or give --plugin-dir; looked in ${ULOGD_PLUGIN_DIRS.join(', ')}`);
  const group = nflogGroup(takeOption(args, 'nflog-group'));
  return ulogdConfig({ jsonFile, logFile: takeOption(args, 'log-file') ?? `${jsonFile}.ulogd.log`, pluginDir, ...(group !== undefined && { group }) });
}

/**
 * `rules log-reader`: ulogd's part without ulogd (GitHub's runner images have none). As root, binds the rules' NFLOG
 * group and appends each report to --json-file as the JSON line ulogd would write; `run --netfilter-log FILE` reads
 * it. Writes --pid-file once the group is bound (a caller waits for it), runs until SIGTERM or SIGINT.
 */
async function logReader(args: ReturnType<typeof parseArgs>, io: CommandIo): Promise<number> {
  const jsonFile = takeOption(args, 'json-file');
  if (!jsonFile) throw new UsageError('log-reader needs --json-file FILE (where it writes, and egress-guard reads: netfilter-log)');
  const group = nflogGroup(takeOption(args, 'nflog-group')) ?? NFLOG_GROUP;
  const pidFile = takeOption(args, 'pid-file');
  let reader: ReturnType<typeof startNflogReader>;
  try {
    reader = startNflogReader({
      group,
      jsonFile,
      onLost: (count) => io.stderr.write(`egress-guard rules log-reader: the kernel dropped reports (${count}, the socket's queue overflowed)\n`),
      onRotateFailed: (message) => io.stderr.write(`egress-guard rules log-reader: rotation failed: ${message}\n`),
      onWriteFailed: (message) => io.stderr.write(`egress-guard rules log-reader: ${message}; counted as lost reports\n`),
      onResync: (total) =>
        io.stderr.write(
          `egress-guard rules log-reader: a report without a sequence number, or one going backwards (${total} so far): until the next numbered report, dropped reports count 1 per overflow of the queue\n`,
        ),
    });
  } catch (err) {
    io.stderr.write(`egress-guard rules log-reader: ${(err as Error).message}\n`);
    return (err as NodeJS.ErrnoException).code === 'EPERM' ? NFLOG_GROUP_REFUSED_EXIT : 1;
  }
  // Before the pid file: a caller that signals as soon as it sees the file finds the handlers in place.
  const stop = () => void reader.stop();
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
  try {
    if (pidFile) {
      try {
        writePidFile(pidFile);
      } catch (err) {
        io.stderr.write(`egress-guard rules log-reader: --pid-file ${pidFile}: ${(err as Error).message}\n`);
        await reader.stop().catch(() => undefined);
        return 1;
      }
    }
    io.stdout.write(`egress-guard rules log-reader: NFLOG group ${group} -> ${jsonFile}\n`);
    await reader.done;
    return 0;
  } catch (err) {
    io.stderr.write(`egress-guard rules log-reader: ${(err as Error).message}\n`);
    return 1;
  } finally {
    process.off('SIGTERM', stop);
    process.off('SIGINT', stop);
    if (pidFile) removeOwnPidFile(pidFile);
  }
}

/**
 * The pid file, made anew: one left by an earlier reader goes first, and the new one is created exclusively (a
 * symlink or a file put there in between is an error, never followed: the reader runs as root).
 */
function writePidFile(file: string): void {
  rmSync(file, { force: true });
  writeFileSync(file, `${process.pid}\n`, { flag: 'wx', mode: 0o644 });
}

/** Removed at the end only while it names this process (another reader may have taken the path since). */
function removeOwnPidFile(file: string): void {
  try {
    if (lstatSync(file).isFile() && readFileSync(file, 'utf8').trim() === String(process.pid)) rmSync(file, { force: true });
  } catch {
    // gone already
  }
}

/** The IPv6 prefixes on this namespace's links (neighbour discovery may reach them). */
async function onLinkV6(): Promise<OnLinkPrefix[]> {
  const routes = await execRunner('ip', ['-o', '-6', 'route', 'show']);
  return routes.code === 0 ? onLinkPrefixes(routes.stdout) : [];
}

/**
 * Docker's bridge patterns neighbour discovery may leave through to any address: those no default route of either
 * family leaves by (every table), none where the routes cannot be read (docker-bridges.ts).
 */
async function neighbourBridges(): Promise<string[]> {
  const routes = await readDefaultRoutes();
  return bridgesOffTheUplinks('routes' in routes ? routes.routes : undefined);
}

function markOption(value: string | undefined): number | undefined {
  try {
    return socketMark(value);
  } catch (err) {
    throw new UsageError(`--${(err as Error).message}`);
  }
}

function port(value: string | undefined, fallback: number, flag: string): number {
  if (value === undefined) return fallback;
  if (!/^\d{1,5}$/.test(value) || Number(value) < 1 || Number(value) > 65535) throw new UsageError(`--${flag}: "${value}" is not a port`);
  return Number(value);
}

function ruleOptions(args: ReturnType<typeof parseArgs>, env: NodeJS.ProcessEnv): RuleOptions {
  const uidFlag = takeOption(args, 'uid');
  const user = takeOption(args, 'user');
  if (uidFlag !== undefined && user !== undefined) throw new UsageError('give --uid or --user, not both');
  let uid: number;
  if (uidFlag !== undefined) {
    if (!/^\d+$/.test(uidFlag)) throw new UsageError(`--uid: "${uidFlag}" is not a number`);
    uid = Number(uidFlag);
  } else {
    const name = user ?? 'egress-guard';
    const found = uidOfUser(name);
    if (found === undefined)
      throw new UsageError(
        `user "${name}" does not exist: egress-guard must run as its own user, whose traffic the rules exempt (create it with \`useradd --system ${name}\`, or give --uid)`,
      );
    uid = found;
  }
  if (uid === 0) throw new UsageError('refusing to exempt uid 0: every root process (the job too) would bypass the rules; run egress-guard as its own user');
  const mode = takeOption(args, 'mode') ?? env.EGRESS_MODE ?? 'audit';
  if (mode !== 'block' && mode !== 'audit') throw new UsageError(`--mode: "${mode}" is not block or audit`);
  const families = familiesOf(takeOption(args, 'family'));
  return {
    uid,
    mode: mode as RulesMode,
    families,
    inboundPorts: inboundPorts(listOption(args, 'inbound-ports', env.EGRESS_INBOUND_PORTS)),
    dhcpServers: dhcpServers(listOption(args, 'dhcp-server', env.EGRESS_DHCP_SERVERS)),
    nflogGroup: nflogGroup(takeOption(args, 'nflog-group')),
    socketMark: markOption(takeOption(args, 'socket-mark') ?? env.EGRESS_SOCKET_MARK),
    transparentPort: port(takeOption(args, 'transparent-port'), 3129, 'transparent-port'),
    dnsPort: port(takeOption(args, 'dns-port'), 53, 'dns-port'),
  };
}

/**
 * `egress-guard rules apply|remove|print`: install, remove or show the iptables/ip6tables rules that
 * redirect the job's TCP and DNS to egress-guard in the current network namespace.
 */
export async function rulesCommand(argv: readonly string[], io: CommandIo): Promise<number> {
  const args = parseArgs(argv, OPTIONS);
  const action = args.positionals[0];
  if (args.positionals.length !== 1 || !['apply', 'remove', 'print', 'log-config', 'log-reader'].includes(action!)) throw new UsageError('', USAGE);
  if (action === 'log-config') {
    io.stdout.write(logConfig(args));
    return 0;
  }
  if (action === 'log-reader') return logReader(args, io);
  try {
    if (action === 'remove') {
      // Checked before anything is removed: a typo must not remove both families.
      const families = familiesOf(takeOption(args, 'family'));
      // The rules for containers too (the GitHub Action applies them): an admin cleaning up after a teardown that
      // could not finish gets everything of egress-guard's out of the tables with one command.
      // The frame guard is one table for both families: it goes with either.
      const removed = [...(await removeRules(undefined, families)), ...(await removeFrameGuard()), ...(await removeContainerRules(undefined, undefined, families))];
      io.stdout.write(removed.length > 0 ? `removed: ${removed.join(', ')}\n` : 'no egress-guard rules to remove\n');
      return 0;
    }
    // Checked before anything is applied, as every other option.
    const frameGuard = takeOption(args, 'frame-guard') ?? io.env.EGRESS_FRAME_GUARD ?? 'on';
    if (frameGuard !== 'on' && frameGuard !== 'off') throw new UsageError(`--frame-guard: "${frameGuard}" is not on or off`);
    const options: RuleOptions = { ...ruleOptions(args, io.env), onLink: { 6: await onLinkV6() }, neighbourBridges: await neighbourBridges() };
    if (action === 'print') {
      io.stdout.write(`# remove existing egress-guard rules first:\n${formatCommands(removalCommands(options.families))}# then:\n${formatCommands(applyCommands(options))}`);
      if (frameGuard === 'on') {
        // The guard over the devices routed to now (apply reads them again); nft -f - as rules apply gives it.
        const read = await readGuardedDevices();
        io.stdout.write(
          'unread' in read || read.devices.length === 0
            ? `# no guard against frames written on packet sockets: ${'unread' in read ? read.unread : 'no device is routed to'}\n`
            : `# and the guard against frames written on packet sockets (docs/transparent.md), where nft and Linux 5.16+ are there:\nnft delete table netdev ${FRAME_GUARD_TABLE} 2>/dev/null\nnft -f - <<'NFT'\n${frameGuardScript({ mode: options.mode, nflogGroup: options.nflogGroup, devices: read.devices })}NFT\n`,
        );
      }
      return 0;
    }
    await applyRules(options);
    // After the redirect rules, which stand whatever becomes of it (applyFrameGuard says why it could not be made).
    // Off where frames the host forwards without routing them leave through a guarded device (docs/transparent.md: a
    // macvlan parent of other namespaces' children, a VM's tap bridged without br_netfilter); an earlier guard is
    // removed then, so that off means off.
    const frames =
      frameGuard === 'off'
        ? describeFrameGuard({ unguarded: `--frame-guard off${(await removeFrameGuard()).length > 0 ? ' (the earlier guard removed)' : ''}` }, options.mode)
        : describeFrameGuard(await applyFrameGuard({ mode: options.mode, nflogGroup: options.nflogGroup }), options.mode);
    const inbound = options.inboundPorts?.length ? `, inbound ${options.inboundPorts.map((p) => `${p.port}/${p.protocol}`).join(' ')}` : '';
    io.stdout.write(
      `egress-guard rules applied (${options.mode} mode, uid ${options.uid}${options.socketMark === undefined ? '' : ' with its socket mark'} exempt, TCP -> :${options.transparentPort}, DNS -> :${options.dnsPort}${inbound})\n${frames}\n`,
    );
    return 0;
  } catch (err) {
    // iptables refusing is this command's own result (exit 1); usage errors go to bin's exit-code map.
    if (err instanceof RulesError) {
      io.stderr.write(`egress-guard: ${err.message}\n`);
      return 1;
    }
    throw err;
  }
}
