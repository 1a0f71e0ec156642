import { existsSync } from 'node:fs';
import type { Privileged } from './privileged.js';

/** Read after every other sudoers file (sudo uses the last rule that matches). No dot in the name: sudo would skip it. */
export const DENY_FILE = '/etc/sudoers.d/zzzz-egress-guard-disable-sudo';
export const DOCKER_SOCKETS = ['/var/run/docker.sock', '/run/docker.sock'];
const VISUDO = ['/usr/sbin/visudo', '/usr/bin/visudo', '/sbin/visudo'];

export function denyRule(user: string): string {
  return `# egress-guard action (disable-sudo: true): ${user} may no longer run anything as another user\n${user} ALL=(ALL:ALL) !ALL\n`;
}

/**
 * The last thing `main` does with root: from now on `user` cannot sudo, and cannot reach the Docker daemon
 * (a docker socket is root: `docker run --privileged --net host` undoes any rule). The group is dropped for
 * new logins and the socket handed to root:root, because the job's processes keep the groups they started with.
 */
export async function disableSudo(root: Privileged, user: string): Promise<string[]> {
  const done: string[] = [];
  const groups = await root.run('id', ['-nG', user]);
  if (groups.stdout.split(/\s+/).includes('docker')) {
    await root.must('gpasswd', ['-d', user, 'docker']);
    done.push(`removed ${user} from the docker group`);
  }
  for (const socket of DOCKER_SOCKETS) {
    if (!existsSync(socket)) continue;
    await root.must('chown', ['root:root', socket]);
    await root.must('chmod', ['0600', socket]);
    done.push(`${socket} is root's only`);
  }
  // sudo skips a name with a dot, so the rule takes effect only at the rename.
  const candidate = `${DENY_FILE}.new`;
  await root.must('tee', [candidate], { input: denyRule(user) });
  await root.must('chmod', ['0440', candidate]);
  // A broken sudoers file would break sudo for root's own use too: check before it takes effect.
  const visudo = VISUDO.find((file) => existsSync(file));
  const check = visudo ? await root.run(visudo, ['-cf', candidate]) : undefined;
  if (check && check.code !== 0) {
    await root.run('rm', ['-f', candidate]);
    throw new Error(`visudo rejected the deny rule: ${check.stderr.trim()}`);
  }
  // The last command run through sudo: after the rename, sudo refuses this user.
  await root.must('mv', [candidate, DENY_FILE]);
  done.push(`sudo denied to ${user} (${DENY_FILE})`);
  return done;
}
