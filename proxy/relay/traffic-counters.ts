import type { Socket } from 'node:net';

/** Live state shared by the listeners: open connections (limits, metrics) and tunnel sockets (drain on shutdown). */
export interface TrafficCounters {
  open: number;
  tunnels: Set<Socket>;
}

export function createTrafficCounters(): TrafficCounters {
  return { open: 0, tunnels: new Set() };
}

/** Count a client connection as open until it closes, and keep it for the drain at shutdown. */
export function trackConnection(counters: TrafficCounters, socket: Socket): void {
  counters.open++;
  counters.tunnels.add(socket);
  socket.once('close', () => {
    counters.open--;
    counters.tunnels.delete(socket);
  });
}
