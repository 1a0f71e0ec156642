import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { test } from 'node:test';
import { assertAdminPortFree } from '../../action/sidecar-process.js';

test("main refuses to start while something listens on egress-guard's admin port (an earlier job's egress-guard would answer /healthz for the new one)", async () => {
  const server = createServer((_req, res) => res.writeHead(200).end('ok\n'));
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  try {
    await assert.rejects(assertAdminPortFree(port), /already listens on 127\.0\.0\.1:\d+/);
  } finally {
    server.close();
  }
  await once(server, 'close');
  await assertAdminPortFree(port);
});
