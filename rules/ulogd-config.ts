import { NFLOG_GROUP } from './iptables-rules.js';

/**
 * The configuration of ulogd (Debian's ulogd2 + ulogd2-json) that reads the rules' NFLOG group and writes each
 * packet as one JSON line: the small root process that holds the netlink socket, so egress-guard itself needs
 * no capability to read what the rules refused (it reads the JSON file, netlog/).
 */
export interface UlogdConfigOptions {
  /** Where ulogd writes JSON lines (egress-guard's netfilter-log setting). */
  jsonFile: string;
  /** ulogd's own log. */
  logFile: string;
  /** The directory holding ulogd_inppkt_NFLOG.so and the other plugins. */
  pluginDir: string;
  group?: number;
}

const PLUGINS = ['ulogd_inppkt_NFLOG.so', 'ulogd_raw2packet_BASE.so', 'ulogd_filter_IP2STR.so', 'ulogd_output_JSON.so'];

function quoted(value: string): string {
  if (/["\n]/.test(value)) throw new Error(`a path with a quote or newline cannot go into ulogd's configuration: ${value}`);
  return `"${value}"`;
}

export function ulogdConfig(o: UlogdConfigOptions): string {
  return [
    '# Written by `egress-guard rules log-config`: NFLOG group -> JSON lines for egress-guard (netfilter-log).',
    '[global]',
    `logfile=${quoted(o.logFile)}`,
    'loglevel=5',
    ...PLUGINS.map((p) => `plugin=${quoted(`${o.pluginDir}/${p}`)}`),
    'stack=log1:NFLOG,base1:BASE,ip2str1:IP2STR,json1:JSON',
    '',
    '[log1]',
    `group=${o.group ?? NFLOG_GROUP}`,
    '',
    '[json1]',
    // One line per packet, flushed at once: the events are as current as the packets.
    'sync=1',
    `file=${quoted(o.jsonFile)}`,
    '',
  ].join('\n');
}

/** Where Debian and others install ulogd's plugins; the first that holds the NFLOG input plugin. */
export const ULOGD_PLUGIN_DIRS = [
  '/usr/lib/x86_64-linux-gnu/ulogd',
  '/usr/lib/aarch64-linux-gnu/ulogd',
  '/usr/lib/arm-linux-gnueabihf/ulogd',
  '/usr/lib64/ulogd',
  '/usr/lib/ulogd',
];
export const NFLOG_PLUGIN = PLUGINS[0]!;
