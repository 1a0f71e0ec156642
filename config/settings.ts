/** Every setting is a flag, a key of the policy/config file and an environment variable. */
export interface SettingSpec {
  /** Key in the policy/config file and flag name (`--listen`). */
  key: string;
  env: string;
  /** List settings accept repeated flags, YAML lists, or one string of entries. */
  list?: boolean;
  secret?: boolean;
  /** Part of the policy (validated by policy/), else a process setting. */
  policy?: boolean;
  default?: string;
  help: string;
}

export const SETTINGS: readonly SettingSpec[] = [
  { key: 'mode', env: 'EGRESS_MODE', policy: true, help: 'audit (log what would be blocked) or block' },
  { key: 'dns', env: 'EGRESS_DNS', policy: true, help: 'policy (resolve allowed names only) or any' },
  {
    key: 'allowed-endpoints',
    env: 'EGRESS_ALLOWED_ENDPOINTS',
    policy: true,
    list: true,
    help: '[METHODS ]host[:port][/path] globs; no port means 443, :* any port; a method list (GET,HEAD) or a path (/my-org/**) makes the host inspected',
  },
  {
    key: 'denied-endpoints',
    env: 'EGRESS_DENIED_ENDPOINTS',
    policy: true,
    list: true,
    help: 'same syntax as allowed-endpoints; a match here wins over any allow (e.g. POST api.github.com/user/repos, * gist.github.com)',
  },
  { key: 'enforce-denied-in-audit', env: 'EGRESS_ENFORCE_DENIED_IN_AUDIT', policy: true, help: 'true: denied-endpoints are refused in audit mode too (default false)' },
  { key: 'log-query', env: 'EGRESS_LOG_QUERY', policy: true, help: 'true: events keep the query string of inspected requests (default false: path only)' },
  {
    key: 'encrypted-client-hello',
    env: 'EGRESS_ENCRYPTED_CLIENT_HELLO',
    policy: true,
    help: 'refuse (default): a TLS connection decided by its SNI whose ClientHello carries an encrypted inner one (ECH, its real server name unreadable) is refused (encrypted-client-hello); allow: decided on the outer SNI alone',
  },
  { key: 'allowed-ips', env: 'EGRESS_ALLOWED_IPS', policy: true, list: true, help: 'CIDRs allowed as raw-IP destinations' },
  { key: 'trusted-ranges', env: 'EGRESS_TRUSTED_RANGES', policy: true, list: true, help: 'CIDRs allowed names may resolve into (private, loopback, ...)' },
  { key: 'policy', env: 'EGRESS_POLICY_FILE', help: 'policy/config file (YAML)' },
  { key: 'listen', env: 'EGRESS_LISTEN', default: '127.0.0.1:3128', help: 'explicit HTTP/CONNECT proxy address' },
  { key: 'events-file', env: 'EGRESS_EVENTS_FILE', help: 'also append decision events (NDJSON) to this file' },
  {
    key: 'dns-listen',
    env: 'EGRESS_DNS_LISTEN',
    default: '127.0.0.1:53 [::1]:53',
    list: true,
    help: 'DNS server address(es) (UDP and TCP; the rules redirect IPv6 DNS to [::1]); off to disable. If one cannot bind, block mode stops, audit mode goes on (an IPv6 one where IPv6 is off is skipped)',
  },
  { key: 'dns-upstream', env: 'EGRESS_DNS_UPSTREAM', list: true, help: 'upstream resolvers (default: nameservers of /etc/resolv.conf at start)' },
  {
    key: 'dns-udp',
    env: 'EGRESS_DNS_UDP',
    default: 'batch',
    help: "how the DNS server reads and answers UDP: batch (many datagrams per recvmmsg/sendmmsg, a native addon, Linux; falls back to dgram where it is missing) or dgram (node's dgram, one system call per datagram)",
  },
  {
    key: 'transparent-listen',
    env: 'EGRESS_TRANSPARENT_LISTEN',
    default: 'off',
    list: true,
    help: 'listener(s) for redirected connections, e.g. 127.0.0.1:3129 [::1]:3129; off to disable',
  },
  {
    key: 'netfilter-log',
    env: 'EGRESS_NETFILTER_LOG',
    help: "ulogd's JSON file of what the redirect rules reported (rules log-config): UDP, ICMP and answers to outside hosts become events",
  },
  {
    key: 'socket-mark',
    env: 'EGRESS_SOCKET_MARK',
    secret: true,
    help: "mark (SO_MARK) every outbound socket of egress-guard's own with this number, 1 to 0xffffffff, or off; the rules then exempt its uid only with the mark (rules apply --socket-mark). Needs CAP_NET_ADMIN, or CAP_NET_RAW on Linux 5.17+",
  },
  {
    key: 'watch-policy',
    env: 'EGRESS_WATCH_POLICY',
    default: 'false',
    help: 'true: reload when the policy file changes (a mounted ConfigMap), with the same rules as SIGHUP',
  },
  { key: 'admin-listen', env: 'EGRESS_ADMIN_LISTEN', default: 'off', help: 'health and Prometheus /metrics address; off to disable' },
  { key: 'collector-url', env: 'EGRESS_COLLECTOR_URL', help: 'stream events to this collector' },
  { key: 'collector-token', env: 'EGRESS_COLLECTOR_TOKEN', secret: true, help: 'bearer token for the collector' },
  { key: 'spool-dir', env: 'EGRESS_SPOOL_DIR', help: 'on-disk spool for undelivered events' },
  { key: 'local-names', env: 'EGRESS_LOCAL_NAMES', list: true, help: "name=address pairs the DNS server answers itself (the job's own services)" },
  { key: 'resolve', env: 'EGRESS_RESOLVE', list: true, help: 'name=address overrides for the proxy resolver (tests, split horizon)' },
  { key: 'connect-timeout', env: 'EGRESS_CONNECT_TIMEOUT', default: '10000', help: 'upstream connect timeout, ms' },
  { key: 'idle-timeout', env: 'EGRESS_IDLE_TIMEOUT', default: '300000', help: 'close tunnels idle this long, ms' },
  {
    key: 'head-timeout',
    env: 'EGRESS_HEAD_TIMEOUT',
    default: '30000',
    help: "a request head the explicit proxy is still reading this long after it began is answered 408 (node's headersTimeout), ms",
  },
  {
    key: 'half-close-timeout',
    env: 'EGRESS_HALF_CLOSE_TIMEOUT',
    default: '60000',
    help: 'once one side of a tunnel has half-closed (FIN), close it when nothing moves this long; likewise an HTTP client that half-closed with answers due, when nothing is written to it this long, ms',
  },
  {
    key: 'relay',
    env: 'EGRESS_RELAY',
    default: 'kernel',
    help: 'how decided tunnels move their bytes: kernel (splice(2) on a native thread, Linux; falls back to js where the addon is missing) or js (node streams)',
  },
  {
    key: 'relay-hand-over-after',
    env: 'EGRESS_RELAY_HAND_OVER_AFTER',
    default: '0',
    help: 'with relay kernel: bytes (both ways together) a decided tunnel relays in JavaScript before the kernel relay takes it; 0: at once',
  },
  {
    key: 'relay-thread-after',
    env: 'EGRESS_RELAY_THREAD_AFTER',
    default: '65536',
    help: "with relay kernel: bytes (both ways together) the native relay moves on node's own event loop before its thread takes the tunnel and splices the rest (bulk); 0: on the thread at once",
  },
  {
    key: 'young-generation',
    env: 'EGRESS_YOUNG_GENERATION',
    default: 'fixed',
    help: "V8's young generation: fixed (kept at its starting 1 MiB semi-spaces: about 30 MiB less RSS under load for a few percent more CPU) or grow (V8's default, up to 16 MiB)",
  },
  { key: 'max-tunnels', env: 'EGRESS_MAX_TUNNELS', default: '2048', help: 'concurrent tunnels and requests beyond which clients get 503' },
  { key: 'drain-timeout', env: 'EGRESS_DRAIN_TIMEOUT', default: '10000', help: 'on SIGTERM, wait this long for open tunnels, ms' },
  {
    key: 'state-dir',
    env: 'EGRESS_STATE_DIR',
    help: 'where egress-guard keeps its generated CA and CA bundle (default: /var/lib/egress-guard as root or when it exists, else $XDG_STATE_HOME/egress-guard or ~/.local/state/egress-guard)',
  },
  { key: 'ca-cert', env: 'EGRESS_CA_CERT', help: 'PEM file of the CA certificate TLS inspection signs with (with ca-key; default: one generated in state-dir)' },
  { key: 'ca-key', env: 'EGRESS_CA_KEY', secret: true, help: "PEM file of that CA's private key (RSA, unencrypted)" },
  {
    key: 'leaf-key-type',
    env: 'EGRESS_LEAF_KEY_TYPE',
    default: 'ecdsa',
    help: 'key type of the leaf certificates TLS inspection presents: ecdsa (P-256, cheap handshakes) or rsa (2048; for clients that cannot verify ECDSA); the CA stays RSA either way',
  },
  { key: 'upstream-ca', env: 'EGRESS_UPSTREAM_CA', help: "PEM file of CAs trusted for inspected upstream servers in addition to node's and the system's roots (tests)" },
  { key: 'log-level', env: 'EGRESS_LOG_LEVEL', default: 'info', help: 'pino log level' },
  {
    key: 'stdout-events',
    env: 'EGRESS_STDOUT_EVENTS',
    default: 'auto',
    help: 'which events stdout shows beside the log: all; refused (decisions that block or would block; needs events-file, which keeps every event); auto: refused with an events file, else all. refused spares the proxy, and whatever reads its stdout (a container log driver), two lines per connection',
  },
];

export function settingSpec(key: string): SettingSpec | undefined {
  return SETTINGS.find((s) => s.key === key);
}
