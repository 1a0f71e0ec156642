import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { ENV_USAGE, envCommand } from '../../cli/env-command.js';
import { runCaptured, type CommandResult } from '../helpers/capture-io.js';

const COMMANDS = fileURLToPath(new URL('../../cli/env-command.js', import.meta.url));

function env(argv: string[], environment: NodeJS.ProcessEnv = {}): Promise<CommandResult> {
  return runCaptured(envCommand, argv, environment, ENV_USAGE);
}

function sh(script: string, environment: NodeJS.ProcessEnv, timeoutMs = 60_000): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve) => {
    const child = spawn('sh', ['-c', script], { env: environment, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (c: Buffer) => (output += c));
    child.stderr.on('data', (c: Buffer) => (output += c));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, output });
    });
  });
}

describe('egress-guard env', () => {
  it('prints exports for the configured listen address, keeping existing NO_PROXY, JAVA_TOOL_OPTIONS and git config', async () => {
    const { code, stdout } = await env(['--listen', '127.0.0.1:4128'], {
      NO_PROXY: 'internal.test',
      JAVA_TOOL_OPTIONS: '-Xmx512m -Dhttp.proxyHost=old',
      GIT_CONFIG_COUNT: '1',
      GIT_CONFIG_KEY_0: 'core.autocrlf',
      GIT_CONFIG_VALUE_0: 'false',
    });
    assert.equal(code, 0);
    const vars = Object.fromEntries(
      stdout
        .trim()
        .split('\n')
        .map((l) => {
          const m = /^export ([A-Za-z_0-9]+)='(.*)'$/.exec(l);
          assert.ok(m, l);
          return [m[1], m[2]];
        }),
    );
    const url = 'http://127.0.0.1:4128';
    for (const name of ['HTTP_PROXY', 'HTTPS_PROXY', 'http_proxy', 'https_proxy', 'npm_config_proxy', 'npm_config_https_proxy', 'PIP_PROXY', 'GIT_CONFIG_VALUE_1'])
      assert.equal(vars[name], url, name);
    assert.equal(vars.NO_PROXY, 'localhost,127.0.0.1,::1,internal.test');
    assert.equal(vars.no_proxy, vars.NO_PROXY);
    assert.equal(vars.NODE_USE_ENV_PROXY, '1');
    assert.equal(vars.GIT_CONFIG_COUNT, '2');
    assert.equal(vars.GIT_CONFIG_KEY_1, 'http.proxy');
    assert.equal(vars.JAVA_TOOL_OPTIONS, '-Xmx512m -Dhttp.proxyHost=127.0.0.1 -Dhttp.proxyPort=4128 -Dhttps.proxyHost=127.0.0.1 -Dhttps.proxyPort=4128');
  });

  it('takes EGRESS_LISTEN, maps wildcard addresses to loopback, and writes $GITHUB_ENV lines', async () => {
    const github = await env(['--format', 'github'], { EGRESS_LISTEN: '0.0.0.0:3999' });
    assert.match(github.stdout, /^HTTPS_PROXY=http:\/\/127\.0\.0\.1:3999$/m);
    assert.ok(
      github.stdout
        .split('\n')
        .filter(Boolean)
        .every((l) => /^[A-Za-z_0-9]+=[^\n]*$/.test(l)),
    );
    const v6 = await env(['--listen', '[::1]:3128']);
    assert.match(v6.stdout, /^export HTTP_PROXY='http:\/\/\[::1\]:3128'$/m);
    assert.match(v6.stdout, /-Dhttp\.proxyHost=::1 /);
    const bad = await env(['--listen', 'nonsense']);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /listen: "nonsense" is not host:port/);
  });

  describe('real clients follow the exports', () => {
    let server: http.Server;
    let port: number;
    let home: string;
    const seen: string[] = [];
    before(async () => {
      home = mkdtempSync(join(tmpdir(), 'egress-env-'));
      // Stands where the proxy listens: records what each client asks for, answers 404 (403 to CONNECT).
      server = http.createServer((req, res) => {
        seen.push(`${req.method} ${req.url}`);
        res.writeHead(404, { 'content-type': 'text/plain', connection: 'close' });
        res.end('not here\n');
      });
      server.on('connect', (req, socket) => {
        seen.push(`CONNECT ${req.url}`);
        socket.end('HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n');
      });
      await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
      port = (server.address() as AddressInfo).port;
    });
    after(async () => {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
      rmSync(home, { recursive: true, force: true });
    });

    it('curl, git, npm, pip and java send their requests to the proxy; loopback goes direct', async () => {
      writeFileSync(
        join(home, 'Fetch.java'),
        `public class Fetch { public static void main(String[] a) throws Exception {
        var c = (java.net.HttpURLConnection) new java.net.URL("http://maven.example.test/repo/x.pom").openConnection();
        System.out.println("java status " + c.getResponseCode()); } }`,
      );
      const envLine = `eval "$(${process.execPath} --input-type=module -e "const m = await import('${COMMANDS}'); process.exitCode = await m.envCommand(['--listen', '127.0.0.1:${port}'], {stdout: process.stdout, stderr: process.stderr, env: process.env});")"`;
      const script = [
        'set -u',
        envLine,
        'curl -s -o /dev/null -w "curl %{http_code}\\n" --max-time 10 http://curl.example.test/path',
        'git ls-remote http://git.example.test/repo.git 2>/dev/null; echo "git done"',
        'npm view some-package --registry http://npm.example.test/ --fetch-retries=0 --fetch-timeout=10000 >/dev/null 2>&1; echo "npm done"',
        'python3 -m pip download --no-deps --disable-pip-version-check --retries 0 --timeout 10 -d "$HOME/pip" --trusted-host pypi.example.test --index-url http://pypi.example.test/simple/ nothing-here >/dev/null 2>&1; echo "pip done"',
        'java Fetch.java',
        `curl -s -o /dev/null -w "direct %{http_code}\\n" --max-time 10 http://127.0.0.1:${port}/direct`,
      ].join('\n');
      const environment = { PATH: process.env.PATH, HOME: home, npm_config_update_notifier: 'false', npm_config_cache: join(home, 'npm-cache') };
      const result = await sh(`cd ${home} && ${script}`, environment, 120_000);
      assert.equal(result.code, 0, result.output);
      assert.match(result.output, /curl 404/);
      assert.match(result.output, /java status 404/);
      assert.match(result.output, /direct 404/);
      assert.ok(seen.includes('GET http://curl.example.test/path'), seen.join('\n'));
      assert.ok(
        seen.some((s) => s.startsWith('GET http://git.example.test/repo.git/info/refs')),
        seen.join('\n'),
      );
      assert.ok(
        seen.some((s) => s.startsWith('GET http://npm.example.test/some-package')),
        seen.join('\n'),
      );
      assert.ok(
        seen.some((s) => s.startsWith('GET http://pypi.example.test/simple/nothing-here')),
        seen.join('\n'),
      );
      assert.ok(seen.includes('GET http://maven.example.test/repo/x.pom'), seen.join('\n'));
      assert.ok(seen.includes('GET /direct'), 'NO_PROXY: loopback is reached directly, not through the proxy');
    });
  });
});
