// Issue 12 on three real hosts (network namespaces, each with its own dockerd
// and weft) over one etcd: a host cut off from etcd keeps its traffic, a
// record written by hand into etcd stops nothing but itself, a second host
// with a live host's name is refused, a weft in a private mount namespace
// says what will happen, and a host killed outright still leaves every table
// within the bound the README states. Runs in order.
import { spawn } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startEtcd } from '../lab/etcd';
import { keepLogs } from '../lab/logs';
import {
  cleanupLabLeftovers, createUnderlay, ensureBusyboxImage, run, startHost, startWeft, waitFor,
  type LabHost, type Underlay, type WeftProcess,
} from '../lab/host';
import { WEFT_CLI } from '../lab/weft';

const PREFIX = 'w12p-';
const SUBNET = '10.60.0.0/24';
const LEASE_TTL = 3;
const PEER_TIMEOUT = 3;
const PARTITION_SECONDS = 60;
let ul: Underlay;
let etcd: Awaited<ReturnType<typeof startEtcd>>;
const hosts: LabHost[] = [];
const wefts: WeftProcess[] = [];
let etcdUrl = '';
let etcdIp = '';
let cid = '';
const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'w12p-'));

const ipOf = (h: LabHost) => h.underlay!.ports.get(h.name)!.address.split('/')[0];
const weftArgs = (h: LabHost) => ['--store', etcdUrl, '--advertise-addr', ipOf(h), '--lease-ttl', String(LEASE_TTL),
  '--peer-timeout', String(PEER_TIMEOUT), '--reconcile-interval', '2', '--gc-grace', '5', '--store-timeout', '2000'];

beforeAll(async () => {
  await cleanupLabLeftovers(PREFIX);
  ul = await createUnderlay(`${PREFIX}ul`, '192.0.2.0/24');
  etcdIp = ul.bridgeAddress.split('/')[0];
  etcd = await startEtcd({ name: 'w12p', netns: ul.name, clientHost: etcdIp });
  etcdUrl = `etcd://${etcdIp}:${new URL(etcd.endpoint).port}`;
  for (let i = 1; i <= 3; i++) {
    const h = await startHost({ name: `${PREFIX}h${i}`, underlay: ul });
    hosts.push(h);
    await ensureBusyboxImage(h);
    wefts.push(await startWeft(h, { args: weftArgs(h) }));
  }
}, 300_000);

afterAll(async () => {
  keepLogs(hosts);
  await hosts[2]?.exec(['ip', 'route', 'del', 'blackhole', `${etcdIp}/32`]).catch(() => undefined);
  for (const h of hosts) await h.destroy().catch(() => undefined);
  await etcd?.stop().catch(() => undefined);
  await ul?.destroy().catch(() => undefined);
  await cleanupLabLeftovers(PREFIX);
  fs.rmSync(scratch, { recursive: true, force: true });
}, 180_000);

async function etcdctl(args: string[]): Promise<string> {
  const r = await run('ip', ['netns', 'exec', ul.name, 'etcdctl', `--endpoints=${etcd.endpoint}`, ...args], { env: { ETCDCTL_API: '3' } });
  if (r.code !== 0) throw new Error(`etcdctl ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}
const etcdKeys = async (prefix: string) => (await etcdctl(['get', '--prefix', '--keys-only', prefix])).split('\n').filter(Boolean);

async function inspect(h: LabHost, name: string): Promise<{ ip: string; mac: string; pid: number }> {
  const r = await h.dockerOk(['inspect', '-f', '{{(index .NetworkSettings.Networks "app").IPAddress}} {{(index .NetworkSettings.Networks "app").MacAddress}} {{.State.Pid}}', name]);
  const [ip, mac, pid] = r.stdout.trim().split(' ');
  return { ip, mac, pid: Number(pid) };
}

/** `bridge fdb` and `ip neigh` of app's VXLAN device on host i, read in weft's per-network namespace. */
async function vxlanState(i: number): Promise<{ fdb: string; neigh: string }> {
  const id = cid.slice(0, 10);
  const ns = `${wefts[i].runDir}/netns/weft-${id}`;
  const fdb = await run('nsenter', [`--net=${ns}`, 'bridge', 'fdb', 'show', 'dev', `vx-${id}`]);
  const neigh = await run('nsenter', [`--net=${ns}`, 'ip', 'neigh', 'show', 'dev', `vx-${id}`]);
  return { fdb: fdb.stdout, neigh: neigh.stdout };
}

/** Whether host i has a container's FDB and neighbour entries, pointing at host j. */
async function programs(i: number, c: { ip: string; mac: string }, j: number): Promise<boolean> {
  const s = await vxlanState(i);
  return s.fdb.includes(`${c.mac} dst ${ipOf(hosts[j])} `) && s.neigh.includes(`${c.ip} lladdr ${c.mac} `);
}

async function ping(h: LabHost, from: string, to: string): Promise<boolean> {
  return (await h.docker(['exec', from, 'ping', '-c', '1', '-W', '3', to])).code === 0;
}

/** iputils ping inside a container's namespace, every `interval` s for `count` probes; resolves with what it counted. */
function pingStream(pid: number, to: string, count: number, interval: number): Promise<{ sent: number; received: number; out: string }> {
  return new Promise((resolve) => {
    const c = spawn('nsenter', [`--net=/proc/${pid}/ns/net`, 'ping', '-n', '-c', String(count), '-i', String(interval), '-W', '2', to], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    c.stdout.on('data', (d) => (out += d));
    c.stderr.on('data', (d) => (out += d));
    // 'close', not 'exit': the summary may still be in the pipe when the process exits
    c.on('close', () => {
      const m = /(\d+) packets transmitted, (\d+) received/.exec(out);
      resolve({ sent: m ? Number(m[1]) : -1, received: m ? Number(m[2]) : -1, out: out.split('\n').filter((l) => !/bytes from|^$/.test(l)).join('\n') });
    });
  });
}

describe('issue 12: partitions, bad records, host names', () => {
  const c: { ip: string; mac: string; pid: number }[] = [];

  it('three hosts, a network, a container on each, reaching each other', async () => {
    await hosts[0].dockerOk(['network', 'create', '-d', 'weft', '--ipam-driver', 'weft', '--subnet', SUBNET, 'app']);
    cid = (await hosts[0].dockerOk(['network', 'inspect', '-f', '{{.Id}}', 'app'])).stdout.trim();
    for (const h of hosts.slice(1)) {
      await waitFor(async () => (await h.docker(['network', 'inspect', 'app'])).code === 0, { timeoutMs: 20_000, what: `app on ${h.name}` });
    }
    for (let i = 0; i < 3; i++) {
      await hosts[i].dockerOk(['run', '-d', '--name', `c${i + 1}`, '--network', 'app', 'busybox:local', 'sleep', '3600']);
      c.push(await inspect(hosts[i], `c${i + 1}`));
    }
    for (let i = 0; i < 3; i++) {
      for (let j = 0; j < 3; j++) if (i !== j) expect(await ping(hosts[i], `c${i + 1}`, c[j].ip), `c${i + 1} -> c${j + 1}`).toBe(true);
    }
  });

  it('invalid endpoint records put straight into etcd stop nothing else: every other endpoint stays programmed on every host, a new container reaches the others', async () => {
    const h2 = ipOf(hosts[1]);
    const bad: Record<string, string> = {
      [`/weft/v1/endpoints/${cid}/${'e1'.repeat(32)}`]: JSON.stringify({ host: hosts[1].name, vtep: h2, ip: '10.60.0.999', mac: '02:42:0a:3c:00:63', localNetwork: 'x' }),
      [`/weft/v1/endpoints/${cid}/${'e2'.repeat(32)}`]: JSON.stringify({ host: hosts[1].name, vtep: h2, ip: '2001:db8::5', mac: '02:42:0a:3c:00:64', localNetwork: 'x' }),
      [`/weft/v1/endpoints/${cid}/${'e3'.repeat(32)}`]: JSON.stringify({ host: hosts[1].name, vtep: h2, ip: '10.99.0.5', mac: '02:42:0a:63:00:05', localNetwork: 'x' }),
      [`/weft/v1/endpoints/${cid}/${'e4'.repeat(32)}`]: JSON.stringify({ host: hosts[1].name, vtep: h2, ip: '10.60.0.77', mac: 'ff:ff:ff:ff:ff:ff', localNetwork: 'x' }),
      [`/weft/v1/endpoints/${cid}/${'e5'.repeat(32)}`]: '{"host": "nobody", "ip": ',
    };
    for (const [k, v] of Object.entries(bad)) await etcdctl(['put', k, v]);
    await hosts[0].dockerOk(['run', '-d', '--name', 'v1', '--network', 'app', 'busybox:local', 'sleep', '3600']);
    const v1 = await inspect(hosts[0], 'v1');
    // every valid endpoint is (still) programmed on every other host
    for (let i = 0; i < 3; i++) {
      for (let j = 0; j < 3; j++) {
        if (i === j) continue;
        await waitFor(() => programs(i, c[j], j), { timeoutMs: 15_000, what: `c${j + 1} programmed on ${hosts[i].name}` });
      }
      if (i !== 0) await waitFor(() => programs(i, v1, 0), { timeoutMs: 15_000, what: `v1 programmed on ${hosts[i].name}` });
    }
    expect(await ping(hosts[0], 'v1', c[1].ip)).toBe(true);
    expect(await ping(hosts[0], 'v1', c[2].ip)).toBe(true);
    expect(await ping(hosts[2], 'c3', v1.ip)).toBe(true);
    // the kernel holds none of the bad ones, and each weft said once what it skipped
    for (let i = 0; i < 3; i++) {
      const s = await vxlanState(i);
      expect(s.neigh).not.toMatch(/10\.99\.0\.5|10\.60\.0\.77/);
      const log = fs.readFileSync(wefts[i].logFile, 'utf8');
      expect(log).toContain('ignoring an invalid endpoint record in the store');
      const times = (id: string) => log.split('\n').filter((l) => l.includes('ignoring an invalid endpoint record') && l.includes(id)).length;
      expect(times('e1e1e1')).toBe(1);
      // e3 names host 2: the other hosts check it against the subnet when they program it, once
      if (i !== 1) expect(times('e3e3e3')).toBe(1);
    }
    for (const k of Object.keys(bad)) await etcdctl(['del', k]);
    await hosts[0].dockerOk(['rm', '-f', 'v1']);
  });

  it('a second host started with a live host\'s name is refused, naming the holder; the holder\'s record stays', async () => {
    const before = await etcdctl(['get', '--print-value-only', `/weft/v1/hosts/${hosts[0].name}`]);
    const dir = path.join(scratch, 'dup');
    fs.mkdirSync(dir, { recursive: true });
    const r = await run('nsenter', [`--net=${hosts[1].netns}`, process.execPath, WEFT_CLI, 'serve',
      '--socket', path.join(dir, 'weft.sock'), '--state-dir', dir, '--run-dir', path.join(dir, 'run'),
      '--host-name', hosts[0].name, '--docker-host', 'unix:///nonexistent/docker.sock', '--dns-addr', 'off',
      ...weftArgs(hosts[1])], { timeoutMs: 30_000 });
    expect(r.code, r.stdout + r.stderr).toBe(1);
    expect(r.stderr).toContain(`host name ${hosts[0].name} is already in use by a live host: a weft at ${ipOf(hosts[0])}`);
    expect(r.stderr).toContain('--host-name');
    expect(fs.existsSync(path.join(dir, 'weft.sock'))).toBe(false);
    expect(await etcdctl(['get', '--print-value-only', `/weft/v1/hosts/${hosts[0].name}`])).toBe(before);
  });

  it('weft started in a private mount namespace (ip netns exec) warns at start what will happen and how to run it', async () => {
    const dir = path.join(scratch, 'mnt');
    fs.mkdirSync(dir, { recursive: true });
    const child = spawn('ip', ['netns', 'exec', hosts[1].name, process.execPath, WEFT_CLI, 'serve',
      '--socket', path.join(dir, 'weft.sock'), '--state-dir', dir, '--run-dir', path.join(dir, 'run'), '--host-name', 'w12p-mnt',
      '--docker-host', 'unix:///nonexistent/docker.sock', '--dns-addr', 'off', '--probe-port', '0'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    try {
      await waitFor(() => out.includes('serving the plugin API'), { timeoutMs: 20_000, what: `weft to serve; output: ${out}` });
      expect(out).toContain('weft runs in a mount namespace of its own');
      expect(out).toContain('when this weft exits, the kernel deletes them');
      expect(out).toContain('nsenter --net=');
    } finally {
      child.kill('SIGTERM');
      await new Promise((r) => child.on('exit', r));
    }
    // the lab's wefts run with nsenter --net, in the host's mount namespace: no warning
    for (const w of wefts) expect(fs.readFileSync(w.logFile, 'utf8')).not.toContain('mount namespace of its own');
  });

  it(`host 3 cut off from etcd for ${PARTITION_SECONDS} s: not one ping lost either way; new containers on hosts 1 and 2 work; the cluster converges after`, { timeout: 300_000 }, async () => {
    const interval = 0.5;
    const count = Math.ceil((PARTITION_SECONDS + 20) / interval);
    const streams = [
      pingStream(c[0].pid, c[2].ip, count, interval), // host 1 -> host 3
      pingStream(c[1].pid, c[2].ip, count, interval), // host 2 -> host 3
      pingStream(c[2].pid, c[0].ip, count, interval), // host 3 -> host 1
      pingStream(c[2].pid, c[1].ip, count, interval), // host 3 -> host 2
    ];
    await waitFor(async () => (await etcdKeys('/weft/v1/hosts/')).length === 3, { timeoutMs: 10_000, what: 'three registered hosts' });
    await hosts[2].execOk(['ip', 'route', 'add', 'blackhole', `${etcdIp}/32`]);
    const cutAt = Date.now();
    // its lease expires: hosts 1 and 2 no longer see it in the store
    await waitFor(async () => !(await etcdKeys('/weft/v1/hosts/')).includes(`/weft/v1/hosts/${hosts[2].name}`),
      { timeoutMs: 60_000, what: "host 3's lease to expire" });
    // new containers on hosts 1 and 2, while host 3 is cut off
    await hosts[0].dockerOk(['run', '-d', '--name', 'n1', '--network', 'app', 'busybox:local', 'sleep', '3600']);
    await hosts[1].dockerOk(['run', '-d', '--name', 'n2', '--network', 'app', 'busybox:local', 'sleep', '3600']);
    const n1 = await inspect(hosts[0], 'n1');
    const n2 = await inspect(hosts[1], 'n2');
    expect(await ping(hosts[0], 'n1', n2.ip)).toBe(true);
    expect(await ping(hosts[1], 'n2', c[0].ip)).toBe(true);
    expect(await ping(hosts[0], 'n1', c[1].ip)).toBe(true);
    // weft host rm does not take a host that only lost the store for a dead one
    const rm = await run('nsenter', [`--net=${hosts[0].netns}`, process.execPath, WEFT_CLI, 'host', 'rm', hosts[2].name, '--yes',
      '--store', etcdUrl, '--advertise-addr', ipOf(hosts[0])], { timeoutMs: 30_000 });
    expect(rm.code, rm.stdout + rm.stderr).toBe(1);
    expect(rm.stderr).toContain(`host ${hosts[2].name} has no registration in the store, but its weft answers at ${ipOf(hosts[2])}`);
    expect((await etcdKeys(`/weft/v1/endpoints/${cid}/`)).length).toBeGreaterThanOrEqual(5);
    // well past lease TTL + peer timeout, hosts 1 and 2 still hold host 3's entries, and host 3 its own
    for (const i of [0, 1]) expect(await programs(i, c[2], 2), `c3 on ${hosts[i].name}`).toBe(true);
    for (const j of [0, 1]) expect(await programs(2, c[j], j), `c${j + 1} on host 3`).toBe(true);
    const left = PARTITION_SECONDS * 1000 - (Date.now() - cutAt);
    if (left > 0) await new Promise((r) => setTimeout(r, left));
    for (const i of [0, 1]) expect(await programs(i, c[2], 2), `c3 on ${hosts[i].name} at the end`).toBe(true);
    expect(fs.readFileSync(wefts[0].logFile, 'utf8')).toContain('answers over the underlay: its entries stay');
    await hosts[2].execOk(['ip', 'route', 'del', 'blackhole', `${etcdIp}/32`]);

    const results = await Promise.all(streams);
    for (const [k, r] of results.entries()) {
      expect(r.sent, `stream ${k}: ${r.out}`).toBe(count);
      expect(r.received, `stream ${k}: ${r.out}`).toBe(r.sent);
    }

    // healed: host 3 registers again and learns what happened meanwhile
    await waitFor(async () => (await etcdKeys('/weft/v1/hosts/')).includes(`/weft/v1/hosts/${hosts[2].name}`),
      { timeoutMs: 30_000, what: 'host 3 to register again' });
    await waitFor(() => programs(2, n1, 0), { timeoutMs: 30_000, what: 'n1 programmed on host 3' });
    await waitFor(() => programs(2, n2, 1), { timeoutMs: 30_000, what: 'n2 programmed on host 3' });
    expect(await ping(hosts[2], 'c3', n1.ip)).toBe(true);
    expect(await ping(hosts[0], 'n1', c[2].ip)).toBe(true);
    // no duplicate and no leaked address: the store holds exactly the five containers' addresses (the gateway is the pool's)
    const ips = [c[0].ip, c[1].ip, c[2].ip, n1.ip, n2.ip];
    expect(new Set(ips).size).toBe(5);
    const want = JSON.stringify([...ips].sort());
    await waitFor(async () => {
      const addrs = JSON.stringify((await etcdKeys('/weft/v1/addrs/10.60.0.0_24/')).map((k) => k.split('/').pop()).sort());
      if (addrs !== want) throw new Error(`address records ${addrs}, want ${want}`);
      return true;
    }, { timeoutMs: 30_000, what: 'the address records to be exactly the five containers\' addresses' });
    expect((await etcdKeys(`/weft/v1/endpoints/${cid}/`)).length).toBe(5);
  });

  it('a host killed outright leaves every table within lease TTL + peer timeout + 2 s (README)', { timeout: 120_000 }, async () => {
    const bound = (LEASE_TTL + PEER_TIMEOUT + 2) * 1000;
    for (const i of [0, 1]) expect(await programs(i, c[2], 2)).toBe(true);
    wefts[2].kill('SIGKILL');
    await hosts[2].killDockerd();
    const killedAt = Date.now();
    const took: number[] = [];
    for (const i of [0, 1]) {
      // slack over the bound: the lab's two cores also run three dockerds and an etcd
      await waitFor(async () => !(await vxlanState(i)).fdb.includes(`dst ${ipOf(hosts[2])}`),
        { timeoutMs: bound + 5_000, intervalMs: 100, what: `host 3's entries to leave ${hosts[i].name}` });
      took.push(Date.now() - killedAt);
      expect((await vxlanState(i)).neigh).not.toContain(`${c[2].ip} lladdr`);
    }
    process.stdout.write(`[w12p] killed host left the tables after ${took.join(' and ')} ms (README bound ${bound} ms)\n`);
    expect(Math.max(...took)).toBeLessThanOrEqual(bound + 5_000);
    expect(fs.readFileSync(wefts[0].logFile, 'utf8')).toContain('has not answered probes for --peer-timeout');
  });
});
