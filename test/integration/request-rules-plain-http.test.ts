/**
 * Method and path rules on plain HTTP through the explicit proxy (issue 13), with curl against a real server on
 * loopback: each request on a keep-alive connection is decided on its own method and path, a refused one gets a
 * readable 403 and never reaches the server, and its event names method, path (no query) and reason.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { curlTwoOnOneConnection } from '../helpers/curl-keep-alive.js';
import { runProcess, startEgressGuard, type EgressGuardProcess } from '../helpers/egress-guard-process.js';

const ALLOWED = 'one.test:*/my-org/** GET,HEAD npm.test:* GET,HEAD,POST form.test:*/api/**';
const DENIED = 'POST one.test:*/my-org/secret';

for (const mode of ['block', 'audit'] as const) {
  describe(`${mode} mode: method and path rules on plain HTTP`, () => {
    let server: http.Server;
    let port: number;
    let guard: EgressGuardProcess;
    const seen: string[] = [];
    /** The body bytes the server read, by request target. */
    const received = new Map<string, number>();
    let bigBody: string;

    before(async () => {
      server = http.createServer((req, res) => {
        seen.push(`${req.method} ${req.url}`);
        let bytes = 0;
        req.on('data', (chunk: Buffer) => (bytes += chunk.length));
        req.on('end', () => {
          received.set(req.url ?? '', bytes);
          res.end(`ok ${req.method} ${req.url}\n`);
        });
      });
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      port = (server.address() as AddressInfo).port;
      // A form one byte past what egress-guard reads for a `_method` field (1 MiB), the field at its end.
      bigBody = path.join(await mkdtemp(path.join(tmpdir(), 'eg-form-')), 'big-form');
      await writeFile(bigBody, `pad=${'a'.repeat(1024 * 1024 - 'pad=&_method=DELETE'.length + 1)}&_method=DELETE`);
      guard = await startEgressGuard(['--resolve', 'one.test=127.0.0.1', '--resolve', 'npm.test=127.0.0.1', '--resolve', 'form.test=127.0.0.1'], {
        EGRESS_MODE: mode,
        EGRESS_ALLOWED_ENDPOINTS: ALLOWED,
        EGRESS_DENIED_ENDPOINTS: DENIED,
        EGRESS_TRUSTED_RANGES: '127.0.0.0/8',
      });
    });
    after(async () => {
      await guard?.stop();
      server?.close();
      if (bigBody) await rm(path.dirname(bigBody), { recursive: true, force: true });
    });

    const curl = (args: string[]) => runProcess('curl', ['-sS', '--max-time', '10', '-x', guard.proxyUrl, '-o', '/dev/null', '-w', '%{http_code} %{header_json}\\n', ...args]);
    /** curl through a CONNECT tunnel (-p): the inspected path; its stdout is the status. */
    const curlTunnelled = (args: string[]) => runProcess('curl', ['-sS', '--max-time', '10', '-p', '-x', guard.proxyUrl, '-o', '/dev/null', '-w', '%{http_code}', ...args]);
    const status = (stdout: string) => Number(stdout.split(' ')[0]);
    const reasonHeader = (stdout: string) => (JSON.parse(stdout.slice(stdout.indexOf(' ') + 1)) as Record<string, string[]>)['x-egress-guard-reason']?.[0];

    test('a path under the allowed prefix passes, with its query; the event keeps the path only', async () => {
      const result = await curl([`http://one.test:${port}/my-org/app/info/refs?service=git-upload-pack&token=s3cret`]);
      assert.equal(status(result.stdout), 200, result.stderr);
      assert.ok(seen.includes('GET /my-org/app/info/refs?service=git-upload-pack&token=s3cret'));
      const event = await guard.waitFor((l) => l.event === 'decision' && l.path === '/my-org/app/info/refs');
      assert.equal(event.method, 'GET');
      assert.equal(event.decision, 'allowed');
      assert.ok(!JSON.stringify(guard.lines).includes('s3cret'), 'the query string is not logged');
    });

    test('a path outside the prefix: 403 with the reason in block mode, relayed as would-block in audit mode', async () => {
      const result = await curl(['-X', 'POST', '-d', 'stolen=1', `http://one.test:${port}/attacker/loot`]);
      const event = await guard.waitFor((l) => l.event === 'decision' && l.path === '/attacker/loot');
      assert.equal(event.reason, 'path-not-allowed');
      assert.equal(event.method, 'POST');
      if (mode === 'block') {
        assert.equal(status(result.stdout), 403);
        assert.match(reasonHeader(result.stdout) ?? '', /the path is not allowed/);
        assert.ok(!seen.some((s) => s.includes('/attacker/')), 'nothing reached the server');
        assert.equal(event.decision, 'blocked');
      } else {
        assert.equal(status(result.stdout), 200);
        assert.equal(event.decision, 'would-block');
      }
    });

    test('dot-segments and encodings do not get past the prefix', async () => {
      const result = await curl(['--path-as-is', `http://one.test:${port}/my-org/%2e%2e/attacker/dotdot`]);
      const event = await guard.waitFor((l) => l.event === 'decision' && typeof l.path === 'string' && l.path.includes('dotdot'));
      assert.equal(event.reason, 'path-not-allowed');
      if (mode === 'block') {
        assert.equal(status(result.stdout), 403);
        assert.ok(!seen.some((s) => s.includes('dotdot')));
      }
    });

    test('methods: GET passes, PUT (a publish) does not', async () => {
      assert.equal(status((await curl([`http://npm.test:${port}/left-pad`])).stdout), 200);
      const put = await curl(['-X', 'PUT', '-d', '{}', `http://npm.test:${port}/left-pad-evil`]);
      const event = await guard.waitFor((l) => l.event === 'decision' && l.path === '/left-pad-evil');
      assert.equal(event.reason, 'method-not-allowed');
      if (mode === 'block') {
        assert.equal(status(put.stdout), 403);
        assert.ok(!seen.some((s) => s.includes('left-pad-evil')));
      }
    });

    test('keep-alive: the second request on one connection is decided on its own', async () => {
      const [first, second] = await curlTwoOnOneConnection(['-x', guard.proxyUrl], `http://one.test:${port}/my-org/first`, `http://one.test:${port}/other-org/second`);
      assert.equal(first, '200 1');
      assert.equal(second, mode === 'block' ? '403 0' : '200 0', 'the same connection, decided again');
      const event = await guard.waitFor((l) => l.event === 'decision' && l.path === '/other-org/second');
      assert.equal(event.reason, 'path-not-allowed');
    });

    test('a denied entry wins over the allowing prefix', async () => {
      const result = await curl(['-X', 'POST', '-d', 'x', `http://one.test:${port}/my-org/secret`]);
      const event = await guard.waitFor((l) => l.event === 'decision' && l.path === '/my-org/secret');
      assert.equal(event.reason, 'denied-endpoint');
      if (mode === 'block') assert.equal(status(result.stdout), 403);
    });

    test('a method override header is judged as the method is: denied, or not allowed, as the method it names', async () => {
      // PUT is allowed under /my-org/ (any method), POST to /my-org/secret is denied: a server honouring the header takes a POST.
      const denied = await curl(['-X', 'PUT', '-H', 'X-HTTP-Method-Override: POST', '-d', 'x', `http://one.test:${port}/my-org/secret`]);
      const deniedEvent = await guard.waitFor((l) => l.event === 'decision' && l.path === '/my-org/secret' && l.method === 'PUT');
      assert.equal(deniedEvent.reason, 'denied-endpoint');
      // GET,HEAD only: a GET that asks to be taken as a PUT (a publish) is not allowed.
      const put = await curl(['-H', 'X-HTTP-Method: put', `http://npm.test:${port}/left-pad-override`]);
      const putEvent = await guard.waitFor((l) => l.event === 'decision' && l.path === '/left-pad-override');
      assert.equal(putEvent.reason, 'method-not-allowed');
      assert.match(String(putEvent.message), /method override header/);
      // Inside a CONNECT tunnel (the inspected path) too.
      const tunnelled = await curlTunnelled(['-H', 'X-Method-Override: DELETE', `http://npm.test:${port}/left-pad-tunnelled`]);
      const tunnelledEvent = await guard.waitFor((l) => l.event === 'decision' && l.path === '/left-pad-tunnelled');
      assert.equal(tunnelledEvent.reason, 'method-not-allowed');
      if (mode === 'block') {
        assert.equal(status(denied.stdout), 403);
        assert.equal(status(put.stdout), 403);
        assert.equal(tunnelled.stdout, '403');
        assert.ok(!seen.some((s) => s.includes('/my-org/secret') || s.includes('left-pad-override') || s.includes('left-pad-tunnelled')), 'nothing reached the server');
      }
      // A method the entries allow may be named.
      assert.equal(status((await curl(['-H', 'X-HTTP-Method-Override: HEAD', `http://npm.test:${port}/left-pad-head`])).stdout), 200);
    });

    test('a `_method` query parameter is judged as an override header is: GET,HEAD refuses GET ?_method=DELETE and POST ?_method=PUT (hunt2)', async () => {
      // PHP cuts a parameter's name at a NUL (php_register_variable_ex: strlen): `_method%00junk` is `_method` to Laravel and Symfony.
      const targets = ['/lp-query-delete?_method=DELETE', '/lp-query-encoded?%5Fmethod=put', '/lp-query-php?a=1&.method=PATCH', '/lp-query-nul?_method%00junk=DELETE'];
      const results = await Promise.all(targets.map((target) => curl([`http://npm.test:${port}${target}`])));
      const posted = await curl(['-X', 'POST', '-d', 'x', `http://npm.test:${port}/lp-query-post?_method=PUT`]);
      // Inside a CONNECT tunnel (the inspected path) too.
      const tunnelled = await curlTunnelled([`http://npm.test:${port}/lp-query-tunnel?_method=DELETE`]);
      for (const path of ['/lp-query-delete', '/lp-query-encoded', '/lp-query-php', '/lp-query-nul', '/lp-query-tunnel']) {
        const event = await guard.waitFor((l) => l.event === 'decision' && l.path === path);
        assert.equal(event.reason, 'method-not-allowed', path);
        assert.match(String(event.message), /_method parameter/, path);
      }
      assert.equal((await guard.waitFor((l) => l.event === 'decision' && l.path === '/lp-query-post')).reason, 'method-not-allowed');
      if (mode === 'block') {
        assert.deepEqual([...results.map((r) => status(r.stdout)), status(posted.stdout), Number(tunnelled.stdout)], [403, 403, 403, 403, 403, 403]);
        assert.ok(!seen.some((s) => s.includes('lp-query-')), 'nothing reached the server');
      }
      // A method the entries allow may be named, and a parameter of another name is no override.
      assert.equal(status((await curl([`http://npm.test:${port}/lp-query-head?_method=HEAD&method=DELETE`])).stdout), 200);
    });

    test('a `_method` field in a POST body is judged as the method it names: form, multipart, JSON, in a tunnel too (issue 13)', async () => {
      const url = (name: string) => `http://form.test:${port}/api/${name}`;
      const asked = await Promise.all([
        curl(['-d', 'title=x&_method=DELETE', url('fm-form')]),
        curl(['-F', 'title=x', '-F', '_method=delete', url('fm-multipart')]),
        // Chunked, the field in PHP's spelling.
        curl(['-H', 'Transfer-Encoding: chunked', '-d', 'a=1&%5Fmethod=PUT', url('fm-chunked')]),
        curl(['-H', 'Content-Type: application/json', '-d', '{"title":"x","_method":"DELETE"}', url('fm-json')]),
        curlTunnelled(['-d', '_method=DELETE', url('fm-tunnelled')]),
      ]);
      for (const name of ['fm-form', 'fm-multipart', 'fm-chunked', 'fm-json', 'fm-tunnelled']) {
        const event = await guard.waitFor((l) => l.event === 'decision' && l.path === `/api/${name}`);
        assert.equal(event.reason, 'method-not-allowed', name);
        assert.equal(event.method, 'POST', name);
        assert.match(String(event.message), /_method parameter or body field/, name);
        assert.equal(event.decision, mode === 'block' ? 'blocked' : 'would-block', name);
      }
      if (mode === 'block') {
        assert.deepEqual([...asked.slice(0, 4).map((r) => status(r.stdout)), Number(asked[4]!.stdout)], [403, 403, 403, 403, 403]);
        assert.match(reasonHeader(asked[0]!.stdout) ?? '', /DELETE instead/);
        assert.ok(!seen.some((s) => s.includes('/api/fm-')), 'nothing reached the server');
      } else {
        // Audit mode breaks nothing: each is relayed with its body whole.
        assert.deepEqual([...asked.slice(0, 4).map((r) => status(r.stdout)), Number(asked[4]!.stdout)], [200, 200, 200, 200, 200]);
        assert.equal(received.get('/api/fm-form'), 'title=x&_method=DELETE'.length);
        assert.equal(received.get('/api/fm-chunked'), 'a=1&%5Fmethod=PUT'.length);
      }
    });

    test('a form without a `_method` field, or naming an allowed method, passes with its body whole', async () => {
      const url = (name: string) => `http://form.test:${port}/api/${name}`;
      const form = await curl(['-d', 'title=x&method=DELETE', url('fm-plain')]);
      const multipartForm = await curl(['-F', 'title=x', '-F', '_method=GET', url('fm-plain-multipart')]);
      const tunnelled = await curlTunnelled(['-d', 'title=x', url('fm-plain-tunnelled')]);
      assert.deepEqual([status(form.stdout), status(multipartForm.stdout), Number(tunnelled.stdout)], [200, 200, 200]);
      assert.equal(received.get('/api/fm-plain'), 'title=x&method=DELETE'.length);
      assert.ok(received.get('/api/fm-plain-multipart')! > 0);
      assert.equal(received.get('/api/fm-plain-tunnelled'), 'title=x'.length);
      for (const name of ['fm-plain', 'fm-plain-multipart', 'fm-plain-tunnelled']) {
        assert.equal((await guard.waitFor((l) => l.event === 'decision' && l.path === `/api/${name}`)).decision, 'allowed', name);
      }
    });

    test('a form larger than egress-guard reads for a `_method` field: refused in block mode, relayed as would-block in audit mode', async () => {
      const url = (name: string) => `http://form.test:${port}/api/${name}`;
      // Its Content-Length says so at once; chunked, it is found out as it comes.
      const sized = await curl(['--data-binary', `@${bigBody}`, url('fm-big')]);
      const chunked = await curl(['-H', 'Transfer-Encoding: chunked', '--data-binary', `@${bigBody}`, url('fm-big-chunked')]);
      for (const name of ['fm-big', 'fm-big-chunked']) {
        const event = await guard.waitFor((l) => l.event === 'decision' && l.path === `/api/${name}`);
        assert.equal(event.reason, 'method-not-allowed', name);
        assert.match(String(event.message), /larger than the 1 MiB egress-guard reads, so a _method field in it .* could not be judged/, name);
      }
      if (mode === 'block') {
        assert.deepEqual([status(sized.stdout), status(chunked.stdout)], [403, 403]);
        assert.match(reasonHeader(chunked.stdout) ?? '', /larger than the 1 MiB/);
        assert.ok(!seen.some((s) => s.includes('/api/fm-big')), 'nothing reached the server');
      } else {
        assert.deepEqual([status(sized.stdout), status(chunked.stdout)], [200, 200]);
        assert.equal(received.get('/api/fm-big'), 1024 * 1024 + 1);
        assert.equal(received.get('/api/fm-big-chunked'), 1024 * 1024 + 1);
      }
    });

    test('plain HTTP inside a CONNECT tunnel to a host with path rules is decided per request too', async () => {
      const tunnelled = (path: string) => curlTunnelled([`http://one.test:${port}${path}`]);
      assert.equal((await tunnelled('/my-org/tunnelled')).stdout, '200');
      assert.ok(seen.includes('GET /my-org/tunnelled'));
      const refused = await tunnelled('/attacker/tunnelled');
      const event = await guard.waitFor((l) => l.event === 'decision' && l.path === '/attacker/tunnelled');
      assert.equal(event.kind, 'connect');
      assert.equal(event.reason, 'path-not-allowed');
      assert.equal(refused.stdout, mode === 'block' ? '403' : '200');
      if (mode === 'block') assert.ok(!seen.some((s) => s.includes('/attacker/tunnelled')));
    });
  });
}
