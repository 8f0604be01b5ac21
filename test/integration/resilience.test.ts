// Restarts and outages on a two-host cluster over a three-member etcd:
// a plugin killed with SIGKILL, dockerd restarted several times, an etcd
// member lost, the whole etcd cluster unreachable. Then TLS with client
// certificates and a password, with no secret in the logs.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { execFileSync } from 'child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startEtcd, type EtcdHandle } from '../lab/etcd';
import { keepLogs } from '../lab/logs';
import {
  cleanupLabLeftovers, createUnderlay, ensureBusyboxImage, run, startHost, startWeft, waitFor,
  type LabHost, type Underlay, type WeftProcess,
} from '../lab/host';

const PREFIX = 'wrs-';
let ul: Underlay;
const members: EtcdHandle[] = [];
const hosts: LabHost[] = [];
const wefts: WeftProcess[] = [];
let endpoints = '';

const ipOf = (h: LabHost) => h.underlay!.ports.get(h.name)!.address.split('/')[0];
const args = (h: LabHost) => [
  '--store', `etcd://${endpoints}`, '--advertise-addr', ipOf(h), '--store-timeout', '2000',
  '--lease-ttl', '3', '--reconcile-interval', '1', '--gc-grace', '3', '--metrics-addr', '127.0.0.1:9464',
];

beforeAll(async () => {
  await cleanupLabLeftovers(PREFIX);
  ul = await createUnderlay(`${PREFIX}ul`, '198.51.100.0/24');
  const ip = ul.bridgeAddress.split('/')[0];
  const ports = [[23791, 23801], [23792, 23802], [23793, 23803]];
  const initialCluster = ports.map(([, p], i) => `wrs${i}=http://${ip}:${p}`).join(',');
  members.push(...await Promise.all(ports.map(([c, p], i) => startEtcd({
    name: `wrs${i}`, netns: ul.name, clientHost: ip, clientPort: c, peerPort: p, initialCluster, initialClusterToken: 'wrs',
  }))));
  endpoints = ports.map(([c]) => `${ip}:${c}`).join(',');
  for (let i = 1; i <= 2; i++) {
    const h = await startHost({ name: `${PREFIX}h${i}`, underlay: ul });
    hosts.push(h);
    await ensureBusyboxImage(h);
    wefts.push(await startWeft(h, { args: args(h) }));
  }
  await hosts[0].dockerOk(['network', 'create', '-d', 'weft', '--ipam-driver', 'weft', '--subnet', '10.46.0.0/24', 'app']);
  await waitFor(async () => (await hosts[1].docker(['network', 'inspect', 'app'])).code === 0, { timeoutMs: 15_000, what: 'app on host 2' });
  await hosts[0].dockerOk(['run', '-d', '--name', 'c1', '--network', 'app', 'busybox:local', 'sleep', '3600']);
  await hosts[1].dockerOk(['run', '-d', '--restart', 'always', '--name', 'c2', '--network', 'app', 'busybox:local', 'sleep', '3600']);
}, 300_000);

afterAll(async () => {
  keepLogs(hosts);
  for (const h of hosts) await h.destroy().catch(() => undefined);
  for (const m of members) await m.stop().catch(() => undefined);
  await ul?.destroy().catch(() => undefined);
  await cleanupLabLeftovers(PREFIX);
}, 180_000);

const ipIn = async (h: LabHost, c: string) =>
  (await h.dockerOk(['inspect', '-f', '{{(index .NetworkSettings.Networks "app").IPAddress}}', c])).stdout.trim();

/** Keys under a prefix, read with etcdctl from inside the underlay namespace. */
async function etcdKeys(prefix: string): Promise<string[]> {
  const r = await run('ip', ['netns', 'exec', ul.name, 'etcdctl', `--endpoints=${endpoints}`, 'get', '--prefix', '--keys-only', prefix], { env: { ETCDCTL_API: '3' } });
  if (r.code !== 0) throw new Error(`etcdctl: ${r.stderr}`);
  return r.stdout.split('\n').filter(Boolean).sort();
}

async function kernelState(i: number): Promise<string> {
  const ns = (await run('ls', [`${wefts[i].runDir}/netns`])).stdout.trim().split('\n');
  const parts: string[] = [];
  for (const n of ns) {
    const p = `${wefts[i].runDir}/netns/${n}`;
    parts.push((await run('nsenter', [`--net=${p}`, 'ip', '-o', 'link'])).stdout.replace(/^\d+: /gm, '').replace(/ link-netnsid \d+/g, ''));
    parts.push((await run('nsenter', [`--net=${p}`, 'bridge', 'fdb', 'show', 'dev', `vx-${n.slice(5)}`])).stdout);
    parts.push((await run('nsenter', [`--net=${p}`, 'ip', 'neigh'])).stdout);
  }
  return parts.join('\n').split('\n').filter((l) => !/ master br-\w+ $|^\S+ dev \S+ master br-\w+ permanent$/.test(l)).sort().join('\n');
}

describe('resilience', () => {
  it('losing one etcd member changes nothing visible', { timeout: 120_000 }, async () => {
    await members[2].stop();
    await hosts[0].dockerOk(['network', 'create', '-d', 'weft', '--ipam-driver', 'weft', '--subnet', '10.47.0.0/24', 'two']);
    await waitFor(async () => (await hosts[1].docker(['network', 'inspect', 'two'])).code === 0, { timeoutMs: 15_000, what: 'network two on host 2' });
    await hosts[1].dockerOk(['run', '-d', '--name', 't2', '--network', 'two', 'busybox:local', 'sleep', '3600']);
    const ip = (await hosts[1].dockerOk(['inspect', '-f', '{{(index .NetworkSettings.Networks "two").IPAddress}}', 't2'])).stdout.trim();
    await waitFor(async () => (await hosts[0].docker(['run', '--rm', '--network', 'two', 'busybox:local', 'ping', '-c', '1', '-W', '2', ip])).code === 0,
      { timeoutMs: 20_000, what: 'a container on host 1 to reach t2 on host 2' });
    await hosts[1].dockerOk(['rm', '-f', 't2']);
  });

  it('a plugin killed with SIGKILL: traffic keeps flowing, the restart duplicates and leaks nothing, new containers work', { timeout: 120_000 }, async () => {
    const ip2 = await ipIn(hosts[1], 'c2');
    const kernelBefore = await kernelState(0);
    const addrsBefore = await etcdKeys('/weft/v1/addrs/10.46.0.0_24/');
    // 60 pings 100 ms apart across hosts, while weft on host 1 dies and comes back
    const ping = hosts[0].docker(['exec', 'c1', 'ping', '-c', '60', '-i', '0.1', '-W', '1', ip2], { timeoutMs: 60_000 });
    await new Promise((r) => setTimeout(r, 1000));
    wefts[0].kill('SIGKILL');
    expect(await wefts[0].waitExit(10_000)).toBe(true);
    await new Promise((r) => setTimeout(r, 1000));
    await wefts[0].start();
    const res = await ping;
    expect(res.stdout, res.stdout).toMatch(/60 packets transmitted, 60 packets received/);
    // after a reconcile period, the same links and forwarding entries, no more, no fewer
    await new Promise((r) => setTimeout(r, 2500));
    expect(await kernelState(0)).toBe(kernelBefore);
    expect(await etcdKeys('/weft/v1/addrs/10.46.0.0_24/')).toEqual(addrsBefore);
    await hosts[0].dockerOk(['run', '-d', '--name', 'n1', '--network', 'app', 'busybox:local', 'sleep', '3600']);
    const r = await hosts[0].docker(['exec', 'n1', 'ping', '-c', '1', '-W', '3', ip2]);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    await hosts[0].dockerOk(['rm', '-f', 'n1']);
  });

  it('dockerd restarted three times: containers come back, replays succeed, no address leaks', { timeout: 240_000 }, async () => {
    const count = async () => (await etcdKeys('/weft/v1/addrs/10.46.0.0_24/')).length;
    await waitFor(async () => (await count()) === 2 || undefined, { timeoutMs: 20_000, what: 'two addresses (c1, c2) in the store' });
    for (let cycle = 1; cycle <= 3; cycle++) {
      const logFrom = fs.statSync(wefts[1].logFile).size;
      await hosts[1].restartDockerd();
      const ip2 = await waitFor(async () => {
        const r = await hosts[1].docker(['inspect', '-f', '{{.State.Running}} {{(index .NetworkSettings.Networks "app").IPAddress}}', 'c2']);
        const [running, ip] = r.stdout.trim().split(' ');
        return running === 'true' && ip ? ip : undefined;
      }, { timeoutMs: 60_000, what: `c2 running again (cycle ${cycle})` });
      await waitFor(async () => (await hosts[0].docker(['exec', 'c1', 'ping', '-c', '1', '-W', '1', ip2])).code === 0,
        { timeoutMs: 20_000, what: `c1 to reach c2 again (cycle ${cycle})` });
      // the IPAM replay at daemon start (RequestPool, RequestAddress) all answered 200
      const log = fs.readFileSync(wefts[1].logFile, 'utf8').slice(logFrom);
      const replays = log.split('\n').filter((l) => /"call":"IpamDriver\.Request(Pool|Address)"/.test(l));
      expect(replays.length).toBeGreaterThan(0);
      expect(replays.filter((l) => !/"status":200/.test(l))).toEqual([]);
      // dockerd found the plugin at once
      expect(hosts[1].dockerdLogTail(400)).not.toMatch(/Unable to locate plugin: weft|plugin not found/);
      // once the collector's grace period is over, the same number of addresses as before
      await waitFor(async () => (await count()) === 2 || undefined, { timeoutMs: 20_000, what: `two addresses in the store after cycle ${cycle}` });
    }
  });

  it('etcd unreachable: driver calls fail fast and clearly, traffic flows, weft resumes by itself', { timeout: 180_000 }, async () => {
    const ip2 = await ipIn(hosts[1], 'c2');
    for (const m of members.slice(0, 2)) m.pause();
    try {
      const r = await hosts[0].docker(['run', '-d', '--name', 'during', '--network', 'app', 'busybox:local', 'sleep', '3600'], { timeoutMs: 90_000 });
      expect(r.code).not.toBe(0);
      expect(r.stderr).toMatch(/store is unavailable/);
      const p = await hosts[0].docker(['exec', 'c1', 'ping', '-c', '3', '-i', '0.2', '-W', '1', ip2]);
      expect(p.stdout).toMatch(/3 packets received/);
      // a supervisor sees it: /healthz turns 503 and says why
      const health = await waitFor(async () => {
        const r = await hosts[0].exec(['curl', '-s', '-w', '\n%{http_code}', 'http://127.0.0.1:9464/healthz']);
        return r.stdout.trim().endsWith('503') ? r.stdout : undefined;
      }, { timeoutMs: 45_000, what: '/healthz to report the store' });
      expect(health).toMatch(/check that etcd is running and reachable/);
    } finally {
      for (const m of members.slice(0, 2)) m.resume();
    }
    await hosts[0].docker(['rm', '-f', 'during']);
    // no restart of weft: the next container works and is reachable from the other host
    await waitFor(async () => (await hosts[1].docker(['run', '-d', '--name', 'after', '--network', 'app', 'busybox:local', 'sleep', '3600'])).code === 0
      || (await hosts[1].docker(['rm', '-f', 'after']), undefined), { timeoutMs: 60_000, what: 'a container to start after etcd is back' });
    const ip = await ipIn(hosts[1], 'after');
    await waitFor(async () => (await hosts[0].exec(['curl', '-s', '-o', '/dev/null', '-w', '%{http_code}', 'http://127.0.0.1:9464/healthz'])).stdout === '200',
      { timeoutMs: 30_000, what: '/healthz to be 200 again' });
    await waitFor(async () => (await hosts[0].docker(['exec', 'c1', 'ping', '-c', '1', '-W', '1', ip])).code === 0,
      { timeoutMs: 20_000, what: 'c1 to reach the new container' });
    expect(wefts[0].running() && wefts[1].running()).toBe(true);
  });
});

describe('TLS and secrets', () => {
  let h: LabHost;
  let etcd: EtcdHandle;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'wrs-tls-'));
  const f = (n: string) => path.join(dir, n);
  afterAll(async () => {
    await h?.destroy().catch(() => undefined);
    await etcd?.stop().catch(() => undefined);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('talks to etcd over TLS with a client certificate and a password, and logs no secret', { timeout: 120_000 }, async () => {
    const ssl = (...a: string[]) => execFileSync('openssl', a, { stdio: 'pipe' });
    ssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=wrs-ca', '-keyout', f('ca.key'), '-out', f('ca.crt'));
    for (const who of ['server', 'client']) {
      ssl('req', '-newkey', 'rsa:2048', '-nodes', '-subj', `/CN=wrs-${who}`, '-keyout', f(`${who}.key`), '-out', f(`${who}.csr`));
      fs.writeFileSync(f(`${who}.ext`), who === 'server' ? 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' : 'extendedKeyUsage=clientAuth\n');
      ssl('x509', '-req', '-in', f(`${who}.csr`), '-CA', f('ca.crt'), '-CAkey', f('ca.key'), '-CAcreateserial', '-days', '1', '-extfile', f(`${who}.ext`), '-out', f(`${who}.crt`));
    }
    h = await startHost({ name: `${PREFIX}tls`, dockerd: false });
    etcd = await startEtcd({
      name: 'wrstls', netns: h.name, clientHost: '127.0.0.1',
      tls: { certFile: f('server.crt'), keyFile: f('server.key'), caFile: f('ca.crt'), clientCertAuth: true, probeCertFile: f('client.crt'), probeKeyFile: f('client.key') },
    });
    const url = `127.0.0.1:${etcd.clientPort}`;
    const tlsArgs = ['--cacert', f('ca.crt'), '--cert', f('client.crt'), '--key', f('client.key')];
    const ctl = (...a: string[]) => run('ip', ['netns', 'exec', h.name, 'etcdctl', `--endpoints=https://${url}`, ...tlsArgs, ...a], { env: { ETCDCTL_API: '3' } });
    const SECRET = 'S3cr3t-Pw-7f2a';
    for (const cmd of [['user', 'add', `root:${SECRET}`], ['user', 'grant-role', 'root', 'root'], ['auth', 'enable']]) {
      const r = await ctl(...cmd);
      expect(r.code, r.stderr).toBe(0);
    }
    const w = await startWeft(h, {
      args: ['--store', `etcds://${url}`, '--advertise-addr', '198.51.100.200', '--etcd-ca', f('ca.crt'), '--etcd-cert', f('client.crt'), '--etcd-key', f('client.key'), '--etcd-user', 'root'],
      env: { WEFT_ETCD_PASSWORD: SECRET },
      logLevel: 'trace',
    });
    const pool = await w.call('IpamDriver.RequestPool', { AddressSpace: 'weft', Pool: '10.48.0.0/24', SubPool: '', Options: {}, V6: false });
    expect(pool.status, pool.text).toBe(200);
    const keys = await ctl('--user', `root:${SECRET}`, 'get', '--prefix', '--keys-only', '/weft/v1/pools/');
    expect(keys.stdout).toContain('/weft/v1/pools/10.48.0.0_24');
    await w.stop();
    expect(fs.readFileSync(w.logFile, 'utf8')).not.toContain(SECRET);
  });
});
