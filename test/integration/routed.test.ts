// Routed mode (-o mode=routed) across two underlay segments: hosts 1 and 2 on
// 192.0.2.0/24, host 3 on 198.51.100.0/24, a router namespace between the
// two (etcd sits on the first). A routed network carries traffic among all
// three; a capture on the first segment shows which path each pair took
// (the containers' own frames between hosts 1 and 2, VXLAN between host 1
// and host 3). Each container's interface is a macvlan on its host's underlay
// link. Then: what one new container costs each host, isolation from another
// Docker network on the same host, weft killed and restarted (traffic kept
// while it is down, drift repaired), a dockerd restart, a host's death. One
// cluster for the whole file.
import { spawn, type ChildProcess } from 'child_process';
import * as fs from 'fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startEtcd } from '../lab/etcd';
import { keepLogs } from '../lab/logs';
import {
  cleanupLabLeftovers, createUnderlay, ensureBusyboxImage, hostHttpGet, LAB_ROOT, run, runOk, startHost, startWeft, waitFor,
  type LabHost, type Underlay, type WeftProcess,
} from '../lab/host';
import { WEFT_CLI } from '../lab/weft';
import { parsePromText, promSum } from '../unit/prom-text';
import type { StatusReport } from '../../src/ops/types';

const PREFIX = 'w15r-';
const SUBNET = '10.77.0.0/24';
const ROUTER = `${PREFIX}rt`;
let ulA: Underlay;
let ulB: Underlay;
let etcd: Awaited<ReturnType<typeof startEtcd>>;
const hosts: LabHost[] = [];
const wefts: WeftProcess[] = [];
let etcdUrl = '';
let cid = '';
const ips: string[] = [];

const ipOf = (h: LabHost) => h.ip!;

const METRICS_PORT = 9477;

function weftArgs(h: LabHost, i: number): string[] {
  return ['--store', etcdUrl, '--advertise-addr', ipOf(h), '--lease-ttl', '3', '--reconcile-interval', '2', '--peer-audit-interval', '2', '--gc-grace', '5',
    '--metrics-addr', `${ipOf(h)}:${METRICS_PORT}`];
}

/** Host i's kernel operations on forwarding tables so far, by table. */
async function peerOps(i: number): Promise<Record<string, number>> {
  const r = await hostHttpGet(hosts[i], `http://${ipOf(hosts[i])}:${METRICS_PORT}/metrics`);
  expect(r.code, r.stderr).toBe(0);
  const p = parsePromText(r.stdout);
  const out: Record<string, number> = {};
  for (const table of ['fdb', 'neighbour', 'route']) out[table] = promSum(p, 'weft_peer_operations_total', { table });
  return out;
}

beforeAll(async () => {
  await cleanupLabLeftovers(PREFIX);
  ulA = await createUnderlay(`${PREFIX}ua`, '192.0.2.0/24');
  ulB = await createUnderlay(`${PREFIX}ub`, '198.51.100.0/24');
  // The router: a bare namespace on both segments, forwarding between them.
  await runOk('ip', ['netns', 'add', ROUTER]);
  await ulA.addHost(ROUTER, { address: '192.0.2.254/24' });
  await ulB.addHost(ROUTER, { address: '198.51.100.254/24' });
  await runOk('ip', ['netns', 'exec', ROUTER, 'sysctl', '-qw', 'net.ipv4.ip_forward=1']);
  await runOk('ip', ['-n', ulA.name, 'route', 'add', '198.51.100.0/24', 'via', '192.0.2.254']);
  const etcdIp = ulA.bridgeAddress.split('/')[0];
  etcd = await startEtcd({ name: 'w15r', netns: ulA.name, clientHost: etcdIp });
  etcdUrl = `etcd://${etcdIp}:${new URL(etcd.endpoint).port}`;
  for (const [i, ul] of [ulA, ulA, ulB].entries()) {
    const h = await startHost({ name: `${PREFIX}h${i + 1}`, underlay: ul });
    const other = ul === ulA ? ['198.51.100.0/24', '192.0.2.254'] : ['192.0.2.0/24', '198.51.100.254'];
    await runOk('ip', ['-n', h.name, 'route', 'add', other[0], 'via', other[1]]);
    hosts.push(h);
  }
  await Promise.all(hosts.map((h) => ensureBusyboxImage(h)));
  wefts.push(...await Promise.all(hosts.map((h, i) => startWeft(h, { args: weftArgs(h, i) }))));
}, 300_000);

afterAll(async () => {
  keepLogs(hosts);
  for (const h of hosts) await h.destroy().catch(() => undefined);
  await etcd?.stop().catch(() => undefined);
  await ulA?.destroy().catch(() => undefined);
  await ulB?.destroy().catch(() => undefined);
  await run('ip', ['netns', 'del', ROUTER]);
  await cleanupLabLeftovers(PREFIX);
}, 180_000);

async function containerIp(h: LabHost, name: string): Promise<string> {
  return (await h.dockerOk(['inspect', '-f', '{{(index .NetworkSettings.Networks "rnet").IPAddress}}', name])).stdout.trim();
}

/** A command inside weft's namespace of the routed network on host i. */
function inNet(i: number, cmd: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return run('nsenter', [`--net=${wefts[i].runDir}/netns/weft-${cid.slice(0, 10)}`, ...cmd]);
}

const routes = async (i: number) => (await inNet(i, ['ip', 'route', 'show', 'dev', `rt-${cid.slice(0, 10)}`])).stdout;
const proxies = async (i: number) => (await inNet(i, ['ip', 'neigh', 'show', 'proxy', 'dev', `rt-${cid.slice(0, 10)}`])).stdout;
const vxNeigh = async (i: number) => (await inNet(i, ['ip', 'neigh', 'show', 'dev', `vx-${cid.slice(0, 10)}`])).stdout;

async function ping(i: number, ip: string, count = 1): Promise<{ code: number; out: string }> {
  const r = await hosts[i].docker(['exec', `c${i + 1}`, 'ping', '-c', String(count), '-W', '2', ip]);
  return { code: r.code, out: r.stdout + r.stderr };
}

async function status(i: number): Promise<StatusReport> {
  const h = hosts[i];
  const w = wefts[i];
  const r = await run('ip', ['netns', 'exec', h.name, process.execPath, WEFT_CLI, 'status', '--json', '--socket', w.socket, '--state-dir', w.stateDir,
    '--run-dir', w.runDir, '--host-name', h.name, '--docker-host', h.dockerHost, '--store', etcdUrl, '--advertise-addr', ipOf(h)], { timeoutMs: 60_000 });
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout) as StatusReport;
}

/** tcpdump on the first segment's bridge (every frame of hosts 1 and 2 crosses it), into a pcap file. */
async function capture(): Promise<{ file: string; stop: () => Promise<void> }> {
  const file = `${LAB_ROOT}/${PREFIX}segment-a.pcap`;
  fs.mkdirSync(LAB_ROOT, { recursive: true });
  const p: ChildProcess = spawn('ip', ['netns', 'exec', ulA.name, 'tcpdump', '-i', 'br0', '-nn', '-U', '-w', file], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  p.stderr!.on('data', (d) => (err += d.toString()));
  await waitFor(async () => err.includes('listening on'), { timeoutMs: 10_000, what: `tcpdump listening (${err})` });
  return {
    file,
    stop: async () => {
      const exited = new Promise((r) => p.once('exit', r));
      p.kill('SIGINT');
      await exited;
    },
  };
}

/** Packets of the capture that match a BPF filter. */
async function count(file: string, filter: string): Promise<number> {
  const r = await runOk('tcpdump', ['-r', file, '-nn', filter]);
  return r.stdout.split('\n').filter((l) => l.trim()).length;
}

describe('routed mode', () => {
  it('refuses an unknown mode, saying which modes there are', async () => {
    const r = await hosts[0].docker(['network', 'create', '-d', 'weft', '--ipam-driver', 'weft', '--subnet', '10.78.0.0/24', '-o', 'mode=host-gw', 'bad']);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/-o mode=host-gw: expected vxlan .* or routed/);
  });

  it('a routed network carries traffic among three hosts: unencapsulated on one segment, VXLAN to the other', async () => {
    await hosts[0].dockerOk(['network', 'create', '-d', 'weft', '--ipam-driver', 'weft', '--subnet', SUBNET, '-o', 'mode=routed', 'rnet']);
    cid = (await hosts[0].dockerOk(['network', 'inspect', '-f', '{{.Id}}', 'rnet'])).stdout.trim();
    for (const h of hosts.slice(1)) {
      await waitFor(async () => (await h.docker(['network', 'ls', '--format', '{{.Name}}'])).stdout.split('\n').includes('rnet'),
        { timeoutMs: 15_000, what: `network rnet on ${h.name}` });
    }
    for (let i = 0; i < 3; i++) {
      // --stop-timeout 1: sleep ignores SIGTERM, and the dockerd restart below need not wait 10 s for it.
      await hosts[i].dockerOk(['run', '-d', '--name', `c${i + 1}`, '--network', 'rnet', '--restart', 'always', '--stop-timeout', '1', 'busybox:local', 'sleep', '3600']);
      ips.push(await containerIp(hosts[i], `c${i + 1}`));
    }
    expect(new Set(ips).size).toBe(3);
    // Before any traffic, as the store says: each host a route to its own container on the routed link; for host 3's
    // container (another segment) a proxy entry and a VXLAN neighbour on hosts 1 and 2, and the reverse on host 3;
    // nothing at all between hosts 1 and 2.
    await waitFor(async () => (await routes(0)).includes(`${ips[0]} proto`) && (await proxies(0)).includes(ips[2]) && (await vxNeigh(0)).includes(ips[2]),
      { timeoutMs: 15_000, what: 'host 1: a route to c1, a proxy entry and a VXLAN neighbour for c3' });
    for (const t of [await routes(0), await proxies(0), await vxNeigh(0)]) expect(t).not.toContain(ips[1]);
    await waitFor(async () => (await routes(1)).includes(`${ips[1]} proto`) && (await proxies(1)).includes(ips[2]),
      { timeoutMs: 15_000, what: 'host 2: a route to c2, a proxy entry for c3' });
    for (const t of [await routes(1), await proxies(1), await vxNeigh(1)]) expect(t).not.toContain(ips[0]);
    await waitFor(async () => (await vxNeigh(2)).includes(ips[0]) && (await vxNeigh(2)).includes(ips[1]) &&
      (await proxies(2)).includes(ips[0]) && (await proxies(2)).includes(ips[1]) && (await routes(2)).includes(`${ips[2]} proto`),
    { timeoutMs: 15_000, what: 'host 3: VXLAN neighbours and proxy entries for c1 and c2, a route to c3' });
    // Each container's interface: a macvlan (bridge mode) on its host's underlay link.
    for (let i = 0; i < 3; i++) {
      const pid = (await hosts[i].dockerOk(['inspect', '-f', '{{.State.Pid}}', `c${i + 1}`])).stdout.trim();
      const link = (await runOk('nsenter', [`--net=/proc/${pid}/ns/net`, 'ip', '-d', 'link', 'show', 'eth0'])).stdout;
      expect(link, `c${i + 1}'s eth0`).toMatch(/macvlan mode bridge/);
    }

    const cap = await capture();
    try {
      for (let i = 0; i < 3; i++) {
        for (let j = 0; j < 3; j++) {
          if (i === j) continue;
          const r = await ping(i, ips[j], 2);
          expect(r.code, `c${i + 1} -> c${j + 1} (${ips[j]}): ${r.out}`).toBe(0);
        }
      }
    } finally {
      await cap.stop();
    }
    const [a1, a2, a3] = hosts.map(ipOf);
    // Hosts 1 and 2: the containers' own packets on the wire, no VXLAN between the two hosts.
    expect(await count(cap.file, `icmp and host ${ips[0]} and host ${ips[1]}`)).toBeGreaterThanOrEqual(8);
    expect(await count(cap.file, `udp port 4789 and host ${a1} and host ${a2}`)).toBe(0);
    // Hosts 1 and 2 to host 3: VXLAN to and from its address, never a container's packet in the clear.
    expect(await count(cap.file, `udp port 4789 and host ${a1} and host ${a3}`)).toBeGreaterThanOrEqual(8);
    expect(await count(cap.file, `udp port 4789 and host ${a2} and host ${a3}`)).toBeGreaterThanOrEqual(8);
    expect(await count(cap.file, `icmp and host ${ips[2]}`)).toBe(0);
    // Routed through weft's namespaces only: the hosts' own namespaces kept Docker's FORWARD policy (DROP), got no
    // rule of weft's, and have no route to the network.
    for (const h of hosts) {
      expect((await h.execOk(['iptables', '-S', 'FORWARD'])).stdout).toContain('-P FORWARD DROP');
      expect((await h.execOk(['iptables-save'])).stdout).not.toMatch(/weft|10\.77\./);
      expect((await h.execOk(['ip', '-4', 'route', 'show'])).stdout).not.toContain('10.77.');
    }
  });

  it('weft status shows the mode and the path to each peer, in sync', async () => {
    const s = await status(0);
    const n = s.networks.find((x) => x.name === 'rnet')!;
    expect(n.mode).toBe('routed');
    expect(n.paths).toEqual([
      { host: hosts[1].name, address: ipOf(hosts[1]), path: 'routed', underlay: '192.0.2.0/24' },
      { host: hosts[2].name, address: ipOf(hosts[2]), path: 'vxlan', underlay: '198.51.100.0/24' },
    ]);
    expect(n.peers.drift).toBe(0);
  });

  it('a new container on host 2 costs host 1 (same segment) no kernel operation, and host 3 one proxy entry and one neighbour', async () => {
    const before = [await peerOps(0), await peerOps(2)];
    await hosts[1].dockerOk(['run', '-d', '--name', 'c4', '--network', 'rnet', 'busybox:local', 'sleep', '3600']);
    const ip4 = await containerIp(hosts[1], 'c4');
    await waitFor(async () => (await proxies(2)).includes(ip4) && (await vxNeigh(2)).includes(ip4), { timeoutMs: 15_000, what: 'host 3: a proxy entry and a neighbour for c4' });
    expect((await ping(0, ip4)).code).toBe(0);
    expect((await ping(2, ip4)).code).toBe(0);
    const after = [await peerOps(0), await peerOps(2)];
    expect(after[0]).toEqual(before[0]);
    expect(after[1].neighbour - before[1].neighbour).toBe(2);
    expect(after[1].fdb - before[1].fdb).toBe(0); // host 2's bridge is in host 3's FDB already, for c2
    expect(after[1].route - before[1].route).toBe(0);
    for (const t of [await routes(0), await proxies(0), await vxNeigh(0)]) expect(t).not.toContain(ip4);
    await hosts[1].dockerOk(['rm', '-f', 'c4']);
    await waitFor(async () => !(await proxies(2)).includes(ip4) && !(await vxNeigh(2)).includes(ip4), { timeoutMs: 15_000, what: 'host 3: c4\'s entries gone' });
    expect(await peerOps(0)).toEqual(before[0]);
    expect((await peerOps(2)).neighbour - after[1].neighbour).toBe(2);
  });

  it('a container on another Docker network of the same host cannot reach the routed containers', async () => {
    await hosts[0].dockerOk(['network', 'create', 'w15r-other']);
    await hosts[0].dockerOk(['run', '-d', '--name', 'o1', '--network', 'w15r-other', 'busybox:local', 'sleep', '3600']);
    for (const ip of ips) {
      const r = await hosts[0].docker(['exec', 'o1', 'ping', '-c', '1', '-W', '1', ip]);
      expect(r.code, `o1 -> ${ip}: ${r.stdout}`).not.toBe(0);
    }
    // ...while c1 still reaches them all (the failure above is isolation, not a broken network).
    for (const ip of ips.slice(1)) expect((await ping(0, ip)).code).toBe(0);
    await hosts[0].dockerOk(['rm', '-f', 'o1']);
    await hosts[0].dockerOk(['network', 'rm', 'w15r-other']);
  });

  it('weft killed: traffic goes on, straight and through VXLAN; restarted, it repairs drift made meanwhile, and later drift too', async () => {
    const rt = `rt-${cid.slice(0, 10)}`;
    wefts[0].kill('SIGKILL');
    expect(await wefts[0].waitExit(10_000)).toBe(true);
    expect((await ping(0, ips[1], 3)).code).toBe(0);
    expect((await ping(0, ips[2], 3)).code).toBe(0);
    // Drift while weft is down: c1's route gone, and with it the way back from host 3 (c2 is reached straight, unaffected).
    await inNet(0, ['ip', 'route', 'del', `${ips[0]}/32`]);
    expect(await routes(0)).not.toContain(ips[0]);
    expect((await ping(0, ips[2])).code).not.toBe(0);
    expect((await ping(0, ips[1])).code).toBe(0);
    await wefts[0].start();
    await waitFor(async () => (await routes(0)).includes(`${ips[0]} proto`), { timeoutMs: 20_000, what: 'c1\'s route back after the restart' });
    expect((await ping(0, ips[2], 2)).code).toBe(0);
    // Drift while weft runs: the proxy entry for c3 and c1's route, both repaired by the reconcile.
    await inNet(0, ['ip', 'neigh', 'del', 'proxy', ips[2], 'dev', rt]);
    await inNet(0, ['ip', 'route', 'del', `${ips[0]}/32`]);
    await waitFor(async () => (await routes(0)).includes(`${ips[0]} proto`) && (await proxies(0)).includes(ips[2]),
      { timeoutMs: 20_000, what: 'route and proxy entry repaired by the reconcile' });
    expect((await ping(0, ips[2], 2)).code).toBe(0);
    // The routed link itself deleted (its routes and proxy entries go with it): made again, with them.
    await inNet(0, ['ip', 'link', 'del', rt]);
    await waitFor(async () => (await routes(0)).includes(`${ips[0]} proto`) && (await proxies(0)).includes(ips[2]),
      { timeoutMs: 20_000, what: 'routed link, its route and proxy entry made again' });
    await waitFor(async () => (await ping(0, ips[2])).code === 0, { timeoutMs: 10_000, what: 'c1 -> c3 over the new routed link' });
  });

  it('a routed link in private mode (as an older weft made it) is replaced by one in bridge mode, and host 3 is reached again', async () => {
    const rt = `rt-${cid.slice(0, 10)}`;
    const mac = /link\/ether ([0-9a-f:]{17})/.exec((await inNet(0, ['ip', '-o', 'link', 'show', 'dev', rt])).stdout)?.[1];
    expect(mac, 'the routed link\'s MAC').toBeDefined();
    await inNet(0, ['ip', 'link', 'del', rt]);
    await hosts[0].execOk(['ip', 'link', 'add', rt, 'link', hosts[0].underlayIf!, 'address', mac!, 'type', 'macvlan', 'mode', 'private']);
    await hosts[0].execOk(['ip', 'link', 'set', rt, 'netns', `${wefts[0].runDir}/netns/weft-${cid.slice(0, 10)}`]);
    await waitFor(async () => (await inNet(0, ['ip', '-d', 'link', 'show', rt])).stdout.includes('macvlan mode bridge') && (await proxies(0)).includes(ips[2]),
      { timeoutMs: 20_000, what: 'the routed link in bridge mode again, with its proxy entries' });
    await waitFor(async () => (await ping(0, ips[2])).code === 0, { timeoutMs: 10_000, what: 'c1 -> c3 through the new routed link' });
  });

  it('a dockerd restart on host 2: its container comes back and is reached by route again', async () => {
    await hosts[1].restartDockerd();
    await waitFor(async () => (await hosts[1].docker(['inspect', '-f', '{{.State.Running}}', 'c2'])).stdout.trim() === 'true',
      { timeoutMs: 60_000, what: 'c2 running again' });
    const ip2 = await containerIp(hosts[1], 'c2');
    await waitFor(async () => (await routes(1)).includes(`${ip2} proto`), { timeoutMs: 20_000, what: 'host 2: the route to c2' });
    await waitFor(async () => (await ping(0, ip2)).code === 0, { timeoutMs: 20_000, what: 'c1 -> c2 after the dockerd restart' });
    expect((await ping(2, ip2)).code).toBe(0);
    expect((await hosts[1].docker(['exec', 'c2', 'ping', '-c', '1', '-W', '2', ips[0]])).code).toBe(0);
    expect((await hosts[1].docker(['exec', 'c2', 'ping', '-c', '1', '-W', '2', ips[2]])).code).toBe(0);
  });

  it('a routed network removed: its namespace and routed link go on every host', async () => {
    await hosts[0].dockerOk(['network', 'create', '-d', 'weft', '--ipam-driver', 'weft', '--subnet', '10.79.0.0/24', '-o', 'mode=routed', 'rnet2']);
    const id2 = (await hosts[0].dockerOk(['network', 'inspect', '-f', '{{.Id}}', 'rnet2'])).stdout.trim().slice(0, 10);
    const ns = (i: number) => `${wefts[i].runDir}/netns/weft-${id2}`;
    for (let i = 0; i < 3; i++) {
      await waitFor(async () => (await run('nsenter', [`--net=${ns(i)}`, 'ip', '-d', 'link', 'show', `rt-${id2}`])).stdout.includes('macvlan mode bridge'),
        { timeoutMs: 20_000, what: `routed link of rnet2 on ${hosts[i].name}` });
    }
    await hosts[0].dockerOk(['network', 'rm', 'rnet2']);
    for (let i = 0; i < 3; i++) {
      await waitFor(async () => !fs.existsSync(ns(i)), { timeoutMs: 20_000, what: `rnet2 gone on ${hosts[i].name}` });
    }
  });

  it('host 2 dies (unplugged): its entries leave host 3, the others still talk', async () => {
    const ip2 = await containerIp(hosts[1], 'c2');
    await ulA.removeHost(hosts[1].name);
    await waitFor(async () => !(await proxies(2)).includes(ip2) && !(await vxNeigh(2)).includes(ip2),
      { timeoutMs: 30_000, what: 'c2 out of host 3\'s proxy entries and neighbours' });
    expect((await ping(0, ips[2])).code).toBe(0);
    expect((await ping(2, ips[0])).code).toBe(0);
  });
});
