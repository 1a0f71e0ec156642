import type { SavedResolvConf } from './job-dns.js';
import type { NetfilterLog } from './netfilter-log.js';
import type { ProcessIdentity } from './process-identity.js';

/** What `main` leaves for `post` (the toolkit's saveState/getState: strings, here one JSON document). */
export interface ActionState {
  mode: 'audit' | 'block';
  /** The process main started for egress-guard: sudo, the audit supervisor, or egress-guard itself (main as root, block mode). */
  sidecarPid?: number;
  /** sidecarPid's start time (processStartTime): post tells it from a later process with its pid. */
  sidecarStart?: string;
  /** egress-guard's own process, below sidecarPid: whether it still runs is whether it exited during the job. */
  egressGuard?: ProcessIdentity;
  resolvConf?: SavedResolvConf;
  netfilterLog?: NetfilterLog;
  sudoDisabled: boolean;
}

export const STATE_KEY = 'egress-guard';

export function encodeState(state: ActionState): string {
  return JSON.stringify(state);
}

export function decodeState(text: string): ActionState | undefined {
  if (text.trim() === '') return undefined;
  const value = JSON.parse(text) as ActionState;
  if (value.mode !== 'audit' && value.mode !== 'block') throw new Error(`state ${STATE_KEY}: no mode in ${text}`);
  return value;
}
