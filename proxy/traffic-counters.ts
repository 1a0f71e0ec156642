import type { Socket } from 'node:net';

/** Live state shared by the listeners: open connections (limits, metrics) and tunnel sockets (drain on shutdown). */
export interface TrafficCounters {
  open: number;
  tunnels: Set<Socket>;
}

export function createTrafficCounters(): TrafficCounters {
  return { open: 0, tunnels: new Set() };
}
