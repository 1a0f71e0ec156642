import { createRequire as __bundleCreateRequire } from 'node:module';
const require = __bundleCreateRequire(import.meta.url);

// action/network-teardown.ts
import { lstatSync } from "node:fs";

// rules/iptables-rules.ts
var NAT_CHAIN = "EGRESS_GUARD_NAT";
var FILTER_CHAIN = "EGRESS_GUARD_FILTER";
function binaryOf(family) {
  return family === 4 ? "iptables" : "ip6tables";
}
var WAIT = ["-w", "5"];
var OWN_CHAINS = [
  { table: "nat", chain: NAT_CHAIN },
  { table: "filter", chain: FILTER_CHAIN }
];
function jumpArgs(op, own) {
  return [...WAIT, "-t", own.table, op, "OUTPUT", "-j", own.chain];
}
function chainArgs(op, own) {
  return [...WAIT, "-t", own.table, op, own.chain];
}

// rules/container-rules.ts
var CONTAINER_NAT_CHAIN = "EGRESS_GUARD_CTR_NAT";
var CONTAINER_FORWARD_CHAIN = "EGRESS_GUARD_CTR_FWD";
var CONTAINER_INPUT_CHAIN = "EGRESS_GUARD_CTR_IN";
var DOCKER_BRIDGES = ["docker0", "br-+"];
var WAIT2 = ["-w", "5"];
function containerHooks(o) {
  return [
    { table: "filter", chain: "INPUT", rule: ["-j", CONTAINER_INPUT_CHAIN] },
    { table: "filter", chain: o.forwardHook, rule: ["-j", CONTAINER_FORWARD_CHAIN] },
    ...(o.bridges ?? DOCKER_BRIDGES).map((bridge) => ({ table: "nat", chain: "PREROUTING", rule: ["-i", bridge, "-j", CONTAINER_NAT_CHAIN] }))
  ];
}
var CONTAINER_CHAINS = [
  { table: "nat", chain: CONTAINER_NAT_CHAIN },
  { table: "filter", chain: CONTAINER_FORWARD_CHAIN },
  { table: "filter", chain: CONTAINER_INPUT_CHAIN }
];
function containerHookArgs(op, hook) {
  return [...WAIT2, "-t", hook.table, op, hook.chain, ...hook.rule];
}

// rules/run-rules.ts
import { execFile } from "node:child_process";
var execRunner = (binary, args) => new Promise((resolve) => {
  execFile(binary, [...args], { timeout: 3e4 }, (err, stdout, stderr) => {
    const code = err ? typeof err.code === "number" ? err.code : 127 : 0;
    resolve({ code, stdout: String(stdout), stderr: err && !stderr ? err.message : String(stderr) });
  });
});
var RulesError = class extends Error {
};
async function must(run, command) {
  const result = await run(command.binary, command.args);
  if (result.code !== 0) {
    throw new RulesError(`${command.binary} ${command.args.join(" ")} failed (exit ${result.code}): ${result.stderr.trim()}`);
  }
}
async function removeRules(run = execRunner, families = [4, 6]) {
  const removed = [];
  for (const family of families) {
    const binary = binaryOf(family);
    for (const own of OWN_CHAINS) {
      for (let i = 0; i < 16 && (await run(binary, jumpArgs("-C", own))).code === 0; i++) {
        await must(run, { binary, args: jumpArgs("-D", own) });
        removed.push(`${binary} ${own.table} OUTPUT -j ${own.chain}`);
      }
    }
    for (const own of OWN_CHAINS) {
      if ((await run(binary, chainArgs("-S", own))).code !== 0) continue;
      await must(run, { binary, args: chainArgs("-F", own) });
      await must(run, { binary, args: chainArgs("-X", own) });
      removed.push(`${binary} ${own.table} ${own.chain}`);
    }
  }
  return removed;
}

// rules/run-container-rules.ts
var WAIT3 = ["-w", "5"];
async function iptables(run, args) {
  const result = await run("iptables", args);
  if (result.code !== 0) throw new RulesError(`iptables ${args.join(" ")} failed (exit ${result.code}): ${result.stderr.trim()}`);
}
async function removeContainerRules(run = execRunner, bridges) {
  const removed = [];
  const dockerUser = { table: "filter", chain: "DOCKER-USER", rule: ["-j", CONTAINER_FORWARD_CHAIN] };
  for (const hook of [...containerHooks({ forwardHook: "FORWARD", bridges }), dockerUser]) {
    for (let i = 0; i < 16 && (await run("iptables", containerHookArgs("-C", hook))).code === 0; i++) {
      await iptables(run, containerHookArgs("-D", hook));
      removed.push(`iptables ${hook.table} ${hook.chain} ${hook.rule.join(" ")}`);
    }
  }
  for (const own of CONTAINER_CHAINS) {
    if ((await run("iptables", [...WAIT3, "-t", own.table, "-S", own.chain])).code !== 0) continue;
    await iptables(run, [...WAIT3, "-t", own.table, "-F", own.chain]);
    await iptables(run, [...WAIT3, "-t", own.table, "-X", own.chain]);
    removed.push(`iptables ${own.table} ${own.chain}`);
  }
  return removed;
}

// action/job-dns.ts
var RESOLV_CONF = "/etc/resolv.conf";
async function restoreResolvConf(root, saved) {
  await root.must("cp", ["-a", "--remove-destination", saved, RESOLV_CONF]);
}

// action/network-teardown.ts
async function restoreNetwork(root, layout) {
  const done = [...await removeRules(), ...await removeContainerRules()];
  if (lstatSync(layout.savedResolvConf, { throwIfNoEntry: false })) {
    await restoreResolvConf(root, layout.savedResolvConf);
    await root.must("rm", ["-f", layout.savedResolvConf]);
    done.push("/etc/resolv.conf restored");
  }
  return done;
}

// action/layout.ts
import path from "node:path";
function actionLayout(env) {
  const stateDir = "/var/lib/egress-guard";
  const appDir = path.join(stateDir, "app");
  const workDir = path.join(env.RUNNER_TEMP ?? "/tmp", "egress-guard");
  return {
    stateDir,
    appDir,
    node: path.join(appDir, "node"),
    entry: path.join(appDir, "egress-guard.js"),
    teardown: path.join(appDir, "teardown.js"),
    eventsFile: path.join(stateDir, "events.ndjson"),
    policyFile: path.join(stateDir, "policy.yaml"),
    savedResolvConf: path.join(stateDir, "resolv.conf.saved"),
    spoolDir: path.join(stateDir, "spool"),
    netlogDir: path.join(stateDir, "netlog"),
    workDir,
    logFile: path.join(workDir, "egress-guard.log")
  };
}

// action/privileged.ts
import { execFile as execFile2 } from "node:child_process";
function execCommand(command, args, options = {}) {
  return new Promise((resolve) => {
    const child = execFile2(command, [...args], { env: options.env ?? process.env, timeout: 6e4, maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      const e = err;
      const code = !e ? 0 : typeof e.code === "number" ? e.code : 127;
      resolve({ code, stdout: String(stdout), stderr: String(stderr) || (e && typeof e.code !== "number" ? e.message : "") });
    });
    child.stdin?.on("error", () => void 0);
    child.stdin?.end(options.input ?? "");
  });
}
function privileged(isRoot = process.getuid?.() === 0) {
  const argv = (command, args, env = {}) => {
    const names = Object.keys(env);
    if (isRoot) return [command, ...args];
    return ["sudo", "-n", ...names.length > 0 ? [`--preserve-env=${names.join(",")}`] : [], command, ...args];
  };
  const run = (command, args, options = {}) => {
    const [binary, ...rest] = argv(command, args);
    return execCommand(binary, rest, { input: options.input });
  };
  return {
    argv,
    run,
    async must(command, args, options) {
      const result = await run(command, args, options);
      if (result.code !== 0) throw new Error(`${argv(command, args).join(" ")} failed (exit ${result.code}): ${result.stderr.trim()}`);
      return result.stdout;
    }
  };
}

// action/teardown.ts
restoreNetwork(privileged(true), actionLayout(process.env)).then(
  (done) => process.stdout.write(`egress-guard: ${done.length > 0 ? done.join("; ") : "nothing to undo"}
`),
  (err) => {
    process.stderr.write(`egress-guard teardown: ${err instanceof Error ? err.message : String(err)}
`);
    process.exitCode = 1;
  }
);
