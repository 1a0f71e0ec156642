import type http from 'node:http';

/**
 * Let an HTTP server answer a client that has half-closed: node's default aborts the request in flight when
 * the client's FIN arrives (`httpAllowHalfOpen` false), so a client that sends its request, shuts down its
 * sending side and reads the reply (HTTP/1.0 clients, `nc -N`) would get nothing. With it on, the response
 * in progress is written and the connection ends after it. (A public property of http.Server since node
 * 0.x, absent from @types/node.)
 */
export function answerHalfClosedClients(server: http.Server): void {
  (server as http.Server & { httpAllowHalfOpen: boolean }).httpAllowHalfOpen = true;
}
