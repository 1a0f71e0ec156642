import type { ListenAddress } from '../config/load-config.js';
import { formatHostPort } from '../policy/index.js';

/** The proxy URL clients use for a listen address (wildcard addresses become loopback). */
export function proxyUrl(listen: ListenAddress): string {
  let host = listen.host;
  if (host === '0.0.0.0' || host === '') host = '127.0.0.1';
  if (host === '::' || host === '[::]') host = '::1';
  return `http://${formatHostPort(host, listen.port)}`;
}

const LOOPBACK = ['localhost', '127.0.0.1', '::1'];
const JAVA_PROXY_PROPERTY = /^-Dhttps?\.proxy(Host|Port)=/;

/**
 * Environment variables that make common tools send their traffic through the proxy: curl, wget,
 * Python, Go, Ruby (HTTP(S)_PROXY and lowercase), Node 24+ (NODE_USE_ENV_PROXY), npm, git, the JVM, pip.
 * Loopback is left out of proxying (NO_PROXY): the proxy would refuse it as a raw-IP destination.
 * Existing NO_PROXY entries, JAVA_TOOL_OPTIONS and GIT_CONFIG_* entries are kept.
 */
export function proxyEnvironment(listen: ListenAddress, env: NodeJS.ProcessEnv): Array<[string, string]> {
  const url = proxyUrl(listen);
  const { hostname, port } = new URL(url);
  const bareHost = hostname.replace(/^\[|\]$/g, '');
  const existingNoProxy = (env.NO_PROXY ?? env.no_proxy ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  const noProxy = [...new Set([...LOOPBACK, ...existingNoProxy])].join(',');

  const gitCount = Number.parseInt(env.GIT_CONFIG_COUNT ?? '0', 10) || 0;
  let gitIndex = gitCount;
  for (let i = 0; i < gitCount; i++) if (env[`GIT_CONFIG_KEY_${i}`] === 'http.proxy') gitIndex = i;

  const javaOptions = (env.JAVA_TOOL_OPTIONS ?? '').split(/\s+/).filter((o) => o && !JAVA_PROXY_PROPERTY.test(o));
  javaOptions.push(`-Dhttp.proxyHost=${bareHost}`, `-Dhttp.proxyPort=${port}`, `-Dhttps.proxyHost=${bareHost}`, `-Dhttps.proxyPort=${port}`);

  return [
    ['HTTP_PROXY', url],
    ['HTTPS_PROXY', url],
    ['http_proxy', url],
    ['https_proxy', url],
    ['NO_PROXY', noProxy],
    ['no_proxy', noProxy],
    ['NODE_USE_ENV_PROXY', '1'],
    ['npm_config_proxy', url],
    ['npm_config_https_proxy', url],
    ['GIT_CONFIG_COUNT', String(Math.max(gitCount, gitIndex + 1))],
    [`GIT_CONFIG_KEY_${gitIndex}`, 'http.proxy'],
    [`GIT_CONFIG_VALUE_${gitIndex}`, url],
    ['JAVA_TOOL_OPTIONS', javaOptions.join(' ')],
    ['PIP_PROXY', url],
  ];
}

function shellQuote(value: string): string {
  return `'${value.replace(/'/g, `'\\''`)}'`;
}

export function renderShellExports(vars: ReadonlyArray<[string, string]>): string {
  return vars.map(([name, value]) => `export ${name}=${shellQuote(value)}\n`).join('');
}

/** Lines for $GITHUB_ENV (multi-line values use the heredoc form). */
export function renderGithubEnv(vars: ReadonlyArray<[string, string]>): string {
  return vars.map(([name, value]) => (/[\r\n]/.test(value) ? `${name}<<EGRESS_GUARD_EOF\n${value}\nEGRESS_GUARD_EOF\n` : `${name}=${value}\n`)).join('');
}
