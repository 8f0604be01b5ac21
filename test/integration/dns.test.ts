// Names across hosts (issue 7), on three lab hosts with etcd. Every lab dockerd
// has the one setting a user adds ({"dns": ["169.254.53.53"]} in daemon.json),
// and each weft serves DNS on 169.254.53.53 inside its host's namespace.
// Forwarding goes to a fake upstream on 127.0.0.53 inside host 2 (the lab has
// no way out), named by a resolv.conf of the test's own.
// Runs in order; every sub-test builds on the state before it.
import { spawn, type ChildProcess } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startEtcd } from '../lab/etcd';
import { keepLogs } from '../lab/logs';
import {
  cleanupLabLeftovers, createUnderlay, ensureBusyboxImage, startHost, startWeft, waitFor,
  type LabHost, type Underlay, type WeftProcess,
} from '../lab/host';

const PREFIX = 'wdn-';
const DNS = '169.254.53.53';
const APP = '10.85.0.0/24';
const OTHER = '10.85.1.0/24';
let ul: Underlay;
let etcd: Awaited<ReturnType<typeof startEtcd>>;
const hosts: LabHost[] = [];
const wefts: WeftProcess[] = [];
let etcdUrl = '';
let upstream: ChildProcess | undefined;
let resolvConf = '';

const ipOf = (h: LabHost) => h.underlay!.ports.get(h.name)!.address.split('/')[0];

function weftArgs(h: LabHost): string[] {
  return [
    '--store', etcdUrl, '--advertise-addr', ipOf(h), '--lease-ttl', '3', '--reconcile-interval', '2', '--gc-grace', '5',
    '--dns-resolv-conf', resolvConf, '--metrics-addr', '127.0.0.1:9464',
  ];
}

/** A fake upstream resolver in host 2's namespace: example.test is 198.51.100.7, everything else NXDOMAIN. */
const UPSTREAM_JS = `
const s = require('dgram').createSocket('udp4');
s.on('message', (m, r) => {
  if (m.length < 12) return;
  let p = 12;
  const labels = [];
  while (p < m.length && m[p] !== 0) { labels.push(m.subarray(p + 1, p + 1 + m[p]).toString().toLowerCase()); p += m[p] + 1; }
  const qend = p + 5;
  if (qend > m.length) return;
  const hit = labels.join('.') === 'example.test' && m.readUInt16BE(p + 1) === 1;
  const h = Buffer.from(m.subarray(0, 12));
  h.writeUInt16BE(hit ? 0x8180 : 0x8183, 2);
  h.writeUInt16BE(1, 4); h.writeUInt16BE(hit ? 1 : 0, 6); h.writeUInt16BE(0, 8); h.writeUInt16BE(0, 10);
  const ans = hit ? Buffer.from([0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 198, 51, 100, 7]) : Buffer.alloc(0);
  s.send(Buffer.concat([h, m.subarray(12, qend), ans]), r.port, r.address);
});
s.bind(53, '127.0.0.53', () => console.log('ready'));
setTimeout(() => process.exit(0), 1800000).unref();
process.stdin.on('end', () => process.exit(0)); process.stdin.resume();
`;

beforeAll(async () => {
  await cleanupLabLeftovers(PREFIX);
  ul = await createUnderlay(`${PREFIX}ul`, '192.0.2.0/24');
  const etcdIp = ul.bridgeAddress.split('/')[0];
  etcd = await startEtcd({ name: 'wdn', netns: ul.name, clientHost: etcdIp });
  etcdUrl = `etcd://${etcdIp}:${new URL(etcd.endpoint).port}`;
  for (let i = 1; i <= 3; i++) {
    // the one setting a user adds: containers' external DNS is weft's address
    const h = await startHost({ name: `${PREFIX}h${i}`, underlay: ul, daemonConfig: { dns: [DNS] } });
    hosts.push(h);
    if (i === 1) {
      resolvConf = path.join(h.dir, '..', `${PREFIX}resolv.conf`);
      fs.writeFileSync(resolvConf, `# weft's upstreams in the DNS test\nnameserver ${DNS}\nnameserver 127.0.0.11\nnameserver 127.0.0.53\n`);
    }
    await ensureBusyboxImage(h);
    wefts.push(await startWeft(h, { args: weftArgs(h) }));
  }
  upstream = spawn('ip', ['netns', 'exec', hosts[1].name, process.execPath, '-e', UPSTREAM_JS], { stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  upstream.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  upstream.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  await waitFor(() => out.includes('ready'), { timeoutMs: 15_000, what: `the fake upstream (${out})` });
}, 300_000);

afterAll(async () => {
  keepLogs(hosts);
  upstream?.stdin?.end();
  upstream?.kill('SIGKILL');
  for (const h of hosts) await h.destroy().catch(() => undefined);
  await etcd?.stop().catch(() => undefined);
  await ul?.destroy().catch(() => undefined);
  if (resolvConf) fs.rmSync(resolvConf, { force: true });
  await cleanupLabLeftovers(PREFIX);
}, 180_000);

async function containerIp(h: LabHost, name: string, network = 'app'): Promise<string> {
  return (await h.dockerOk(['inspect', '-f', `{{(index .NetworkSettings.Networks "${network}").IPAddress}}`, name])).stdout.trim();
}

/** Datagrams the kernel dropped at weft's DNS socket (169.254.53.53:53) in a host's namespace: /proc/net/udp's last column. */
async function udpDrops(h: LabHost): Promise<number> {
  const r = await h.exec(['cat', '/proc/net/udp']);
  let n = 0;
  for (const line of r.stdout.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f[1] === '3535FEA9:0035') n += Number(f[f.length - 1]);
  }
  return n;
}

interface Lookup { ips: string[]; nxdomain: boolean; out: string }

/** `nslookup NAME` inside a container (through Docker's embedded resolver, which forwards to weft). */
async function nslookup(h: LabHost, container: string, name: string): Promise<Lookup> {
  const r = await h.docker(['exec', container, 'nslookup', '-type=a', name], { timeoutMs: 30_000 });
  const out = r.stdout + r.stderr;
  const ips = [...out.matchAll(/Name:\s*\S+\s*\nAddress(?: \d+)?:\s*([\d.]+)/g)].map((m) => m[1]).sort();
  return { ips, nxdomain: /NXDOMAIN/.test(out), out };
}

/** Waits (bounded) until NAME resolves to exactly `ips` in the container; returns the last lookup on timeout as an error. */
async function resolvesTo(h: LabHost, container: string, name: string, ips: string[], timeoutMs = 20_000): Promise<void> {
  let last: Lookup | undefined;
  await waitFor(async () => {
    last = await nslookup(h, container, name);
    // "resolves to nothing" means an NXDOMAIN answer, not a lookup that failed some other way
    return last.ips.join(',') === [...ips].sort().join(',') && (ips.length > 0 || last.nxdomain);
  }, { timeoutMs, intervalMs: 300, what: `${name} -> ${ips.join(',') || 'nothing'} in ${container} on ${h.name}` }).catch((e: Error) => {
    throw new Error(`${e.message}\nlast nslookup:\n${last?.out}\nweft log:\n${wefts[hosts.indexOf(h)].logTail(30)}`);
  });
}

async function ping(h: LabHost, container: string, target: string): Promise<void> {
  const r = await h.docker(['exec', container, 'ping', '-c', '1', '-W', '3', target], { timeoutMs: 30_000 });
  expect(r.code, `${container} on ${h.name}: ping ${target}: ${r.stdout}${r.stderr}`).toBe(0);
}

function rssKiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : 0;
}

describe('names across hosts', () => {
  it('weft serves DNS on 169.254.53.53, added to lo on every host', async () => {
    for (const h of hosts) {
      await waitFor(async () => (await h.exec(['ip', '-4', 'addr', 'show', 'dev', 'lo'])).stdout.includes(`${DNS}/32`),
        { timeoutMs: 15_000, what: `${DNS}/32 on lo of ${h.name}` });
      await waitFor(async () => (await h.exec(['ss', '-lnu'])).stdout.includes(`${DNS}:53`),
        { timeoutMs: 15_000, what: `weft listening on ${DNS}:53 in ${h.name}` });
    }
  });

  it('a container on host 2 resolves and pings db (host 1) by NAME and NAME.NETWORK, and an alias of a container on host 3', async () => {
    await hosts[0].dockerOk(['network', 'create', '-d', 'weft', '--ipam-driver', 'weft', '--subnet', APP, 'app']);
    await hosts[0].dockerOk(['network', 'create', '-d', 'weft', '--ipam-driver', 'weft', '--subnet', OTHER, 'other']);
    for (const h of hosts.slice(1)) {
      for (const n of ['app', 'other']) {
        await waitFor(async () => (await h.docker(['network', 'inspect', n])).code === 0, { timeoutMs: 20_000, what: `network ${n} on ${h.name}` });
      }
    }
    await hosts[0].dockerOk(['run', '-d', '--name', 'db', '--network', 'app', 'busybox:local', 'sleep', '3600']);
    await hosts[2].dockerOk(['run', '-d', '--name', 'cache', '--network', 'app', '--network-alias', 'store', 'busybox:local', 'sleep', '3600']);
    for (let i = 0; i < 3; i++) await hosts[i].dockerOk(['run', '-d', '--name', `cl${i + 1}`, '--network', 'app', 'busybox:local', 'sleep', '3600']);
    const dbIp = await containerIp(hosts[0], 'db');
    const cacheIp = await containerIp(hosts[2], 'cache');
    await resolvesTo(hosts[1], 'cl2', 'db', [dbIp]);
    expect((await nslookup(hosts[1], 'cl2', 'db.app')).ips).toEqual([dbIp]);
    expect((await nslookup(hosts[1], 'cl2', 'DB.App')).ips).toEqual([dbIp]);
    await resolvesTo(hosts[1], 'cl2', 'store', [cacheIp]);
    expect((await nslookup(hosts[1], 'cl2', 'store.app')).ips).toEqual([cacheIp]);
    await ping(hosts[1], 'cl2', 'db');
    await ping(hosts[1], 'cl2', 'db.app');
    await ping(hosts[1], 'cl2', 'store');
    // and from the other hosts too (host 3 to db on host 1; host 1 to the alias on host 3)
    await resolvesTo(hosts[2], 'cl3', 'db', [dbIp]);
    await resolvesTo(hosts[0], 'cl1', 'store', [cacheIp]);
  });

  it('a container attached only to network B gets NXDOMAIN for names that exist only on network A', async () => {
    await hosts[2].dockerOk(['run', '-d', '--name', 'web', '--network', 'other', 'busybox:local', 'sleep', '3600']);
    await hosts[1].dockerOk(['run', '-d', '--name', 'ob2', '--network', 'other', 'busybox:local', 'sleep', '3600']);
    const webIp = await containerIp(hosts[2], 'web', 'other');
    // positive control: ob2 resolves its own network's names, so weft knows it as an asker
    await resolvesTo(hosts[1], 'ob2', 'web', [webIp]);
    for (const name of ['db', 'db.app', 'store', 'cache', 'cl1']) {
      const r = await nslookup(hosts[1], 'ob2', name);
      expect(r.ips, `${name} from ob2: ${r.out}`).toEqual([]);
      expect(r.nxdomain, `${name} from ob2: ${r.out}`).toBe(true);
    }
    // and the other way round
    const r = await nslookup(hosts[1], 'cl2', 'web');
    expect(r.ips, r.out).toEqual([]);
    expect(r.nxdomain, r.out).toBe(true);
  });

  it('other names go to the host\'s resolvers (a fake upstream here); unknown weft-style names get NXDOMAIN', async () => {
    const r = await nslookup(hosts[1], 'cl2', 'example.test');
    expect(r.ips, r.out).toEqual(['198.51.100.7']);
    const nx = await nslookup(hosts[1], 'cl2', 'nosuchcontainer');
    expect(nx.nxdomain, nx.out).toBe(true);
  });

  it('after db is removed the name stops resolving on every host; started again on host 3 it resolves to its new address', { timeout: 180_000 }, async () => {
    await hosts[0].dockerOk(['rm', '-f', 'db']);
    for (let i = 0; i < 3; i++) await resolvesTo(hosts[i], `cl${i + 1}`, 'db', []);
    const newIp = '10.85.0.200';
    await hosts[2].dockerOk(['run', '-d', '--name', 'db', '--network', 'app', '--ip', newIp, 'busybox:local', 'sleep', '3600']);
    for (let i = 0; i < 3; i++) await resolvesTo(hosts[i], `cl${i + 1}`, 'db', [newIp]);
    await ping(hosts[1], 'cl2', 'db');
  });

  it('a host whose lease expires takes its names along; registered again, it writes them back', { timeout: 180_000 }, async () => {
    const cacheIp = await containerIp(hosts[2], 'cache');
    wefts[2].kill('SIGKILL');
    await wefts[2].waitExit(10_000);
    // lease TTL 3 s: the alias of cache (host 3) disappears everywhere else
    await resolvesTo(hosts[1], 'cl2', 'store', [], 30_000);
    await wefts[2].start();
    await resolvesTo(hosts[1], 'cl2', 'store', [cacheIp], 30_000);
  });

  it('malformed packets and a flood of 20,000 queries neither crash weft nor grow its memory without bound', { timeout: 240_000 }, async () => {
    const h = hosts[1];
    const w = wefts[1];
    const before = rssKiB(w.pid);
    const dropsBefore = await udpDrops(h);
    // Run inside host 2's namespace: UDP and TCP garbage, then floods in bounded bursts, all to 169.254.53.53 only.
    const script = `
      const dgram = require('dgram'), net = require('net');
      const DNS = '${DNS}';
      const q = (name, id) => {
        const labels = name.split('.').map((l) => Buffer.concat([Buffer.from([l.length]), Buffer.from(l)]));
        const h = Buffer.alloc(12); h.writeUInt16BE(id & 0xffff, 0); h.writeUInt16BE(0x0100, 2); h.writeUInt16BE(1, 4);
        return Buffer.concat([h, ...labels, Buffer.from([0, 0, 1, 0, 1])]);
      };
      const hdr = (qd, flags = 0x0100) => { const h = Buffer.alloc(12); h.writeUInt16BE(7, 0); h.writeUInt16BE(flags, 2); h.writeUInt16BE(qd, 4); return h; };
      const malformed = [
        Buffer.alloc(0), Buffer.from([1]), hdr(1), hdr(0), hdr(65535),
        Buffer.concat([hdr(1), Buffer.from([0xc0, 12, 0, 1, 0, 1])]),
        Buffer.concat([hdr(1), Buffer.from([0xc0, 14, 0xc0, 12, 0, 1, 0, 1])]),
        Buffer.concat([hdr(1), Buffer.from([63])]),
        Buffer.concat([hdr(1, 0x8180), Buffer.from([2, 100, 98, 0, 0, 1, 0, 1])]),
        Buffer.concat([hdr(1), Buffer.alloc(300, 63)]),
      ];
      let seed = 1; const rnd = () => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff;
      for (let i = 0; i < 1000; i++) malformed.push(Buffer.from(Array.from({ length: Math.floor(rnd() * 600) }, () => Math.floor(rnd() * 256))));
      const sock = dgram.createSocket('udp4');
      let replies = 0;
      sock.on('message', () => replies++);
      const sendAll = (bufs) => new Promise((r) => { let n = bufs.length; if (!n) return r(); for (const b of bufs) sock.send(b, 53, DNS, () => { if (--n === 0) r(); }); });
      const pause = (ms) => new Promise((r) => setTimeout(r, ms));
      const tcpJunk = (payload) => new Promise((r) => {
        const c = net.connect(53, DNS); const t = setTimeout(() => { c.destroy(); r(); }, 3000);
        c.on('connect', () => { c.write(payload); setTimeout(() => c.end(), 100); });
        c.on('error', () => {}); c.on('close', () => { clearTimeout(t); r(); });
      });
      (async () => {
        sock.bind(0, '0.0.0.0');
        await new Promise((r) => sock.once('listening', r));
        await sendAll(malformed);
        await tcpJunk(Buffer.from([0xff, 0xff, 1, 2, 3]));
        await tcpJunk(Buffer.concat([Buffer.from([0, 17]), hdr(1), Buffer.from([0xc0, 12, 0, 1, 0])]));
        await tcpJunk(Buffer.alloc(70000, 0));
        let sent = 0;
        const results = [];
        for (let round = 0; round < 2; round++) {
          for (let b = 0; b < 20; b++) {
            const burst = [];
            for (let i = 0; i < 500; i++, sent++) burst.push(q(i % 3 === 0 ? 'db' : i % 3 === 1 ? 'db.app' : 'n' + sent + '.app', sent));
            await sendAll(burst);
            await pause(20);
          }
          await pause(500);
          results.push({ sent, replies });
        }
        console.log(JSON.stringify({ results }));
        sock.close();
      })();
    `;
    const flood = h.exec([process.execPath, '-e', script], { timeoutMs: 180_000 });
    // Meanwhile the plugin API (same process) keeps answering: DNS never stands in front of a driver call.
    let floodDone = false;
    void flood.finally(() => { floodDone = true; });
    const calls: number[] = [];
    for (let i = 0; i < 200 && !floodDone; i++) {
      calls.push((await w.call('NetworkDriver.GetCapabilities', {}, 30_000)).status);
      await new Promise((res) => setTimeout(res, 20));
    }
    const r = await flood;
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(calls.length).toBeGreaterThan(0);
    expect(calls.every((c) => c === 200), JSON.stringify(calls)).toBe(true);
    const { results } = JSON.parse(r.stdout.trim().split('\n').pop()!) as { results: { sent: number; replies: number }[] };
    expect(results[1].sent).toBe(20_000);
    expect(results[1].replies).toBeGreaterThan(0);
    expect(w.running(), w.logTail(40)).toBe(true);
    const after = rssKiB(w.pid);
    console.log(`DNS flood: ${JSON.stringify(results)}; weft RSS ${before} kB -> ${after} kB; ${calls.length} plugin calls answered meanwhile`);
    // 20,000 queries must not leave weft holding memory per query: allow the heap some room to grow, not more.
    expect(after - before, `RSS ${before} kB -> ${after} kB`).toBeLessThan(96 * 1024);
    // and it still answers
    const dbIp = await containerIp(hosts[2], 'db');
    await resolvesTo(h, 'cl2', 'db', [dbIp]);
    // the flood is visible in the metrics
    const metrics = await h.exec(['curl', '-sf', 'http://127.0.0.1:9464/metrics']);
    const queries = Number(/^weft_dns_events_total\{event="queries"\} (\d+)$/m.exec(metrics.stdout)?.[1] ?? -1);
    // (every reply the flood got is a query weft counted; on a loaded machine the
    // kernel may drop some of the 20,000 at the socket before weft sees them)
    // Every one of the 20,000 was counted by weft, or dropped by the kernel at
    // weft's socket before weft could read it (a loaded machine): none vanished.
    const dropped = (await udpDrops(h)) - dropsBefore;
    expect(queries + dropped, `${queries} counted, ${dropped} dropped at the socket`).toBeGreaterThanOrEqual(20_000);
  });
});
