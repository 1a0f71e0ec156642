/**
 * A container as Docker wires one, without Docker: in the runner namespace a bridge `docker0`, IPv4 forwarding,
 * MASQUERADE for the bridge's subnet and an empty DOCKER-USER chain jumped to from FORWARD (what dockerd sets
 * up); a namespace of its own for the container, on a veth whose host end is a port of the bridge, with the
 * host's upstream resolver in its resolv.conf (what Docker gives a container when the host's is loopback).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import type { World } from './harness.js';
import { destroyNamespaceSync, must, run, type CommandResult } from './netns.js';

/** Documentation addresses (RFC 5737), off the World's hosts. */
export const BRIDGE = { gateway: '203.0.113.193', container: '203.0.113.194', subnet: '203.0.113.192/27', prefix: 27 } as const;

export class SimulatedContainer {
  private constructor(readonly ns: string) {}

  static async start(world: World, resolver: string): Promise<SimulatedContainer> {
    const ns = `egact-container-${process.pid}`;
    const inRunner = (args: string[]) => must('ip', ['netns', 'exec', world.runnerNs, ...args]);
    const inContainer = (args: string[]) => must('ip', ['netns', 'exec', ns, ...args]);
    await must('ip', ['netns', 'add', ns]);
    try {
      mkdirSync(`/etc/netns/${ns}`, { recursive: true });
      writeFileSync(`/etc/netns/${ns}/resolv.conf`, `nameserver ${resolver}\noptions attempts:1 timeout:3\n`);
      await inRunner(['ip', 'link', 'add', 'docker0', 'type', 'bridge']);
      await inRunner(['ip', 'addr', 'add', `${BRIDGE.gateway}/${BRIDGE.prefix}`, 'dev', 'docker0']);
      await inRunner(['ip', 'link', 'set', 'docker0', 'up']);
      // Created in the runner namespace, the container's end moved straight into the container's.
      await inRunner(['ip', 'link', 'add', 'vethc0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns]);
      await inRunner(['ip', 'link', 'set', 'vethc0', 'master', 'docker0', 'up']);
      await inContainer(['ip', 'link', 'set', 'lo', 'up']);
      await inContainer(['ip', 'addr', 'add', `${BRIDGE.container}/${BRIDGE.prefix}`, 'dev', 'eth0']);
      await inContainer(['ip', 'link', 'set', 'eth0', 'up']);
      await inContainer(['ip', 'route', 'add', 'default', 'via', BRIDGE.gateway]);
      await inRunner(['sysctl', '-q', '-w', 'net.ipv4.ip_forward=1']);
      await inRunner(['iptables', '-w', '5', '-t', 'nat', '-A', 'POSTROUTING', '-s', BRIDGE.subnet, '!', '-o', 'docker0', '-j', 'MASQUERADE']);
      await inRunner(['iptables', '-w', '5', '-N', 'DOCKER-USER']);
      await inRunner(['iptables', '-w', '5', '-A', 'FORWARD', '-j', 'DOCKER-USER']);
    } catch (err) {
      destroyNamespaceSync(ns);
      throw err;
    }
    return new SimulatedContainer(ns);
  }

  /** A process in the container (root, as in most images). */
  run(command: string, args: readonly string[], env: NodeJS.ProcessEnv = {}): Promise<CommandResult> {
    return run('ip', ['netns', 'exec', this.ns, command, ...args], { env: { PATH: process.env.PATH, LANG: 'C', HOME: '/tmp', ...env }, timeoutMs: 30_000 });
  }

  destroy(): void {
    destroyNamespaceSync(this.ns);
  }
}
