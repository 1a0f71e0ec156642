// Container HEALTHCHECK: exit 0 when egress-guard answers, 1 otherwise. Plain ESM JS (the package is "type": "module";
// this file is not compiled), no dependencies.
// EGRESS_HEALTHCHECK overrides the target: "http://host:port/path" (expects 2xx) or "host:port" (TCP connect).
// Otherwise: the admin /healthz when EGRESS_ADMIN_LISTEN is set, else a TCP connect to the proxy (EGRESS_LISTEN).
import http from 'node:http';
import net from 'node:net';

function hostPort(address, fallbackPort) {
  const m = /^\[?([^\]]*?)\]?(?::(\d+))?$/.exec(address.trim());
  let host = m && m[1] ? m[1] : '127.0.0.1';
  if (host === '0.0.0.0') host = '127.0.0.1';
  if (host === '::') host = '::1';
  return { host, port: Number(m && m[2] ? m[2] : fallbackPort) };
}

function done(ok, why) {
  if (!ok) process.stderr.write(`unhealthy: ${why}\n`);
  process.exit(ok ? 0 : 1);
}

setTimeout(() => done(false, 'timeout'), 2500).unref();
const override = process.env.EGRESS_HEALTHCHECK;
const admin = process.env.EGRESS_ADMIN_LISTEN;
const target = override || (admin && admin !== 'off' ? `http://${admin.replace(/^0\.0\.0\.0/, '127.0.0.1')}/healthz` : process.env.EGRESS_LISTEN || '127.0.0.1:3128');
if (/^https?:\/\//.test(target)) {
  http
    .get(target, (res) => {
      res.resume();
      done(res.statusCode >= 200 && res.statusCode < 300, `HTTP ${res.statusCode}`);
    })
    .on('error', (err) => done(false, err.message));
} else {
  const { host, port } = hostPort(target, 3128);
  const socket = net.connect({ host, port }, () => {
    socket.destroy();
    done(true);
  });
  socket.on('error', (err) => done(false, err.message));
}
