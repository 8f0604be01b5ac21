// Three hosts on an IPv6-only underlay (2001:db8:14::/64: the hosts have no
// IPv4 address between them), etcd listening on IPv6, each weft started with
// an IPv6 --advertise-addr: VXLAN over IPv6 carries the containers' IPv4
// (issue 14, "the data plane honours an IPv6 underlay"). One cluster for the
// whole file; the tests run in order.
import * as fs from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startLabCluster, underlayIp, type LabCluster } from '../lab/cluster';
import {
  run, waitFor,
  type LabHost, type RunResult, type Underlay, type WeftProcess,
} from '../lab/host';
import { WEFT_CLI } from '../lab/weft';
import type { StatusReport } from '../../src/ops/types';

const PREFIX = 'w14u-';
const UNDERLAY = '2001:db8:14::/64';
const SUBNET = '10.140.0.0/24';
const SEC = '10.141.0.0/24';
let lab: LabCluster | undefined;
let ul: Underlay;
let etcd: LabCluster['etcd'];
let etcdUrl = '';
const hosts: LabHost[] = [];
const wefts: WeftProcess[] = [];

const ipOf = underlayIp;

function weftArgs(h: LabHost): string[] {
  return ['--store', etcdUrl, '--advertise-addr', ipOf(h), '--lease-ttl', '3', '--reconcile-interval', '2', '--gc-grace', '5', '--dns-forward', 'off'];
}

function hostFlags(i: number): string[] {
  const w = wefts[i]!;
  const a = w.argv;
  const wg = a.indexOf('--wg-interface');
  return [
    '--socket', w.socket, '--state-dir', w.stateDir, '--run-dir', w.runDir, '--host-name', hosts[i]!.name,
    '--docker-host', hosts[i]!.dockerHost, '--store', etcdUrl, '--advertise-addr', ipOf(hosts[i]!),
    ...(wg >= 0 ? ['--wg-interface', a[wg + 1]!, '--wg-subnet', a[a.indexOf('--wg-subnet') + 1]!] : []),
  ];
}

/** A weft command run in host i's namespace, with that host's settings. */
async function weft(i: number, args: string[]): Promise<RunResult> {
  return run('ip', ['netns', 'exec', hosts[i]!.name, process.execPath, WEFT_CLI, ...args, ...hostFlags(i)], { timeoutMs: 60_000 });
}

async function status(i: number): Promise<StatusReport> {
  const r = await weft(i, ['status', '--json']);
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout) as StatusReport;
}

beforeAll(async () => {
  // The store URL form for an IPv6 etcd: the address in brackets (startLabCluster makes it).
  lab = await startLabCluster({ prefix: PREFIX, hosts: 3, cidr: UNDERLAY, weftArgs: (url, _address, h) => { etcdUrl = url; return weftArgs(h); } });
  ({ ul, etcd } = lab);
  hosts.push(...lab.hosts);
  wefts.push(...lab.wefts);
}, 300_000);

afterAll(async () => {
  await lab?.destroy();
}, 180_000);

async function containerIp(h: LabHost, name: string, network: string): Promise<string> {
  return (await h.dockerOk(['inspect', '-f', `{{(index .NetworkSettings.Networks "${network}").IPAddress}}`, name])).stdout.trim();
}

async function pid(h: LabHost, name: string): Promise<number> {
  return Number((await h.dockerOk(['inspect', '-f', '{{.State.Pid}}', name])).stdout.trim());
}

async function createNetwork(name: string, args: string[]): Promise<string> {
  await hosts[0]!.dockerOk(['network', 'create', '-d', 'weft', '--ipam-driver', 'weft', ...args, name]);
  for (const h of hosts.slice(1)) {
    await waitFor(async () => (await h.docker(['network', 'inspect', name])).code === 0, { timeoutMs: 15_000, what: `network ${name} on ${h.name}` });
  }
  return (await hosts[0]!.dockerOk(['network', 'inspect', '-f', '{{.Id}}', name])).stdout.trim();
}

/** Every container pings every other one (by address), across hosts. */
async function fullMesh(names: string[], network: string): Promise<void> {
  const ips = await Promise.all(hosts.map((h, i) => containerIp(h, names[i]!, network)));
  expect(new Set(ips).size).toBe(3);
  for (let i = 0; i < 3; i++) {
    for (let j = 0; j < 3; j++) {
      if (i === j) continue;
      const r = await hosts[i]!.docker(['exec', names[i]!, 'ping', '-c', '1', '-W', '3', ips[j]!]);
      expect(r.code, `${names[i]} on ${hosts[i]!.name} -> ${ips[j]}: ${r.stdout}${r.stderr}`).toBe(0);
    }
  }
}

/** `ip -d link` and `bridge fdb` of a network's VXLAN device on host i, read inside weft's per-network namespace. */
async function vxlanState(i: number, cid: string): Promise<{ link: string; fdb: string }> {
  const id = cid.slice(0, 10);
  const ns = `${wefts[i]!.runDir}/netns/weft-${id}`;
  const link = await run('nsenter', [`--net=${ns}`, 'ip', '-d', 'link', 'show', `vx-${id}`]);
  const fdb = await run('nsenter', [`--net=${ns}`, 'bridge', 'fdb', 'show', 'dev', `vx-${id}`]);
  expect(link.code, link.stderr).toBe(0);
  return { link: link.stdout, fdb: fdb.stdout };
}

describe('VXLAN over an IPv6 underlay', () => {
  it('the hosts have no IPv4 address on the underlay; each registers its IPv6 address (weft hosts)', async () => {
    for (const h of hosts) {
      const r = await run('ip', ['-n', h.name, '-4', '-o', 'addr', 'show', 'dev', h.underlayIf!]);
      expect(r.stdout.trim()).toBe('');
      expect(ipOf(h)).toMatch(/^2001:db8:14::[0-9a-f]+$/);
    }
    await waitFor(async () => {
      const r = await weft(0, ['hosts', '--json']);
      if (r.code !== 0) return undefined;
      const list = JSON.parse(r.stdout) as { name: string; address: string; alive: boolean }[];
      return list.filter((x) => x.alive).length === 3 || undefined;
    }, { timeoutMs: 20_000, what: 'three live hosts' });
    const list = JSON.parse((await weft(0, ['hosts', '--json'])).stdout) as { name: string; address: string }[];
    expect(Object.fromEntries(list.map((x) => [x.name, x.address]))).toEqual(Object.fromEntries(hosts.map((h) => [h.name, ipOf(h)])));
    const table = (await weft(0, ['hosts'])).stdout;
    for (const h of hosts) expect(table).toMatch(new RegExp(`^${h.name}\\s+up\\s+${ipOf(h)}\\s`, 'm'));
  });

  let cid = '';
  it('containers on three hosts ping each other in every direction; a 1430-byte DF packet fits (MTU 1500 - 70)', async () => {
    cid = await createNetwork('app', ['--subnet', SUBNET]);
    // The default MTU follows the underlay: VXLAN over IPv6 adds 70 bytes, not 50.
    const mtu = (await status(0)).networks.find((n) => n.name === 'app')?.mtu;
    expect(mtu).toBe(1430);
    for (let i = 0; i < 3; i++) await hosts[i]!.dockerOk(['run', '-d', '--name', `c${i + 1}`, '--network', 'app', 'busybox:local', 'sleep', '3600']);
    await fullMesh(['c1', 'c2', 'c3'], 'app');
    // 1402 bytes of payload + 8 ICMP + 20 IP = 1430, not fragmented: on the underlay 1430 + 70 = 1500
    const ip2 = await containerIp(hosts[1]!, 'c2', 'app');
    const big = await run('nsenter', [`--net=/proc/${await pid(hosts[0]!, 'c1')}/ns/net`, 'ping', '-c', '1', '-W', '3', '-M', 'do', '-s', '1402', ip2]);
    expect(big.code, big.stdout + big.stderr).toBe(0);
  });

  it('the VXLAN device sends from the IPv6 advertise address, and its FDB points at the other hosts\' IPv6 addresses', async () => {
    for (let i = 0; i < 3; i++) {
      const { link, fdb } = await vxlanState(i, cid);
      expect(link).toMatch(new RegExp(`vxlan id \\d+ local ${ipOf(hosts[i]!)} `));
      expect(link).toMatch(/ mtu 1430 /);
      const others = hosts.filter((_, j) => j !== i).map(ipOf);
      for (const o of others) {
        // the flood entry (broadcast, ARP for unknown) and the remote container's MAC, both to the other host over IPv6
        expect(fdb).toMatch(new RegExp(`^00:00:00:00:00:00 dst ${o} (link-netnsid \\d+ )?self permanent`, 'm'));
        expect(fdb).toMatch(new RegExp(`^(?!00:00:00:00:00:00)[0-9a-f:]{17} dst ${o} (link-netnsid \\d+ )?self permanent`, 'm'));
      }
      expect(fdb).not.toMatch(/dst \d+\.\d+\.\d+\.\d+/);
    }
  });

  it('the kernel\'s IPv6 FDB entries read back equal to the store: no drift, and a full reconcile corrects nothing', async () => {
    for (let i = 0; i < 3; i++) {
      const s1 = await status(i);
      const app = s1.networks.find((n) => n.name === 'app')!;
      // two remote containers and two flood entries, as the store says
      expect(app.peers).toMatchObject({ programmed: 4, expected: 4, drift: 0, missing: [], extra: [] });
      // Reading back a different text for the same address would make every reconcile remove and re-add the entries.
      const s2 = await waitFor(async () => {
        const s = await status(i);
        return s.agent.lastReconcile !== s1.agent.lastReconcile ? s : undefined;
      }, { timeoutMs: 15_000, intervalMs: 500, what: `a reconcile on ${hosts[i]!.name}` });
      expect(s2.agent.corrections).toBe(s1.agent.corrections);
    }
  });

  it('weft doctor: each peer reaches this host on UDP 4789 over IPv6, and the MTU check counts 70 bytes', async () => {
    const r = await weft(0, ['doctor']);
    expect(r.stdout, r.stderr).toContain('no problem found');
    expect(r.code).toBe(0);
    for (const h of hosts.slice(1)) expect(r.stdout).toContain(`${h.name} (${ipOf(h)}) reaches this host on UDP 4789`);
    expect(r.stdout).toMatch(/^ok\s+mtu\s+eth0 \(holding 2001:db8:14::[0-9a-f]+\) has MTU 1500: enough for the overlay MTU 1430 \(--mtu\) plus 70 bytes of VXLAN over IPv6/m);
  });

  it('an encrypted network: WireGuard endpoints are [IPv6]:port, and containers ping each other through it', async () => {
    for (let i = 0; i < 3; i++) await waitFor(async () => (await status(i)).wireguard?.ready || undefined, { timeoutMs: 30_000, what: `WireGuard on ${hosts[i]!.name}` });
    const s = await status(0);
    expect(s.wireguard?.endpoint).toBe(`[${ipOf(hosts[0]!)}]:51820`);
    // WireGuard adds 80 bytes over IPv6: its interface takes 1430 - 10 = 1420, and its packets fill the 1500-byte underlay
    expect(s.wireguard?.linkMtu).toBe(1420);
    await createNetwork('sec', ['--opt', 'encrypted', '--subnet', SEC]);
    for (let i = 0; i < 3; i++) await hosts[i]!.dockerOk(['run', '-d', '--name', `s${i + 1}`, '--network', 'sec', 'busybox:local', 'sleep', '3600']);
    await fullMesh(['s1', 's2', 's3'], 'sec');
    // The peers of host 1's WireGuard are the other hosts at their IPv6 addresses.
    const peers = (await status(0)).wireguard?.peers ?? [];
    expect(peers.map((p) => p.endpoint).sort()).toEqual(hosts.slice(1).map((h) => `[${ipOf(h)}]:51820`).sort());
    const doctor = await weft(0, ['doctor']);
    expect(doctor.stdout).toMatch(/^ok\s+wg mtu\s+encrypted networks: default MTU 1370 .*WireGuard interface MTU 1420; underlay packets up to 1500 bytes over IPv6/m);
    for (const h of hosts.slice(1)) expect(doctor.stdout).toMatch(new RegExp(`^ok\\s+wg peer\\s+${h.name} \\(\\[${ipOf(h)}\\]:51820\\): handshake`, 'm'));
  });

  it('host 3 cut off from etcd: the others keep it while it answers liveness probes over IPv6; it registers again after', async () => {
    const etcdIp = ul.bridgeAddress.split('/')[0]!;
    const alive = async (): Promise<Record<string, boolean>> => {
      const r = await weft(0, ['hosts', '--json']);
      expect(r.code, r.stderr).toBe(0);
      return Object.fromEntries((JSON.parse(r.stdout) as { name: string; alive: boolean }[]).map((x) => [x.name, x.alive]));
    };
    const answered = () => fs.readFileSync(wefts[0]!.logFile, 'utf8').split('\n')
      .some((l) => l.includes('answers over the underlay: its entries stay') && l.includes(hosts[2]!.name));
    expect(answered()).toBe(false);
    await hosts[2]!.execOk(['ip', '-6', 'route', 'add', 'blackhole', `${etcdIp}/128`]);
    try {
      await waitFor(async () => (await alive())[hosts[2]!.name] === false || undefined, { timeoutMs: 30_000, intervalMs: 500, what: `${hosts[2]!.name}'s lease to expire` });
      // host 1 asked host 3 over the IPv6 underlay (--probe-port) and got its answer
      await waitFor(answered, { timeoutMs: 20_000, intervalMs: 250, what: `host 1 to probe ${hosts[2]!.name} over IPv6` });
      const ip3 = await containerIp(hosts[2]!, 'c3', 'app');
      const r = await hosts[0]!.docker(['exec', 'c1', 'ping', '-c', '1', '-W', '3', ip3]);
      expect(r.code, r.stdout + r.stderr).toBe(0);
      expect((await vxlanState(0, cid)).fdb).toMatch(new RegExp(`^00:00:00:00:00:00 dst ${ipOf(hosts[2]!)} `, 'm'));
    } finally {
      await hosts[2]!.exec(['ip', '-6', 'route', 'del', 'blackhole', `${etcdIp}/128`]);
    }
    await waitFor(async () => (await alive())[hosts[2]!.name] === true || undefined, { timeoutMs: 30_000, intervalMs: 500, what: `${hosts[2]!.name} to register again` });
  });

  it('a weft with an IPv4 --advertise-addr is refused in this IPv6 cluster, and says why', async () => {
    const h = hosts[2]!;
    const dir = fs.mkdtempSync(`/tmp/${PREFIX}mixed-`);
    try {
      const r = await run('ip', ['netns', 'exec', h.name, process.execPath, WEFT_CLI, 'serve',
        '--socket', `${dir}/weft.sock`, '--state-dir', `${dir}/state`, '--run-dir', `${dir}/run`, '--host-name', `${PREFIX}v4`,
        '--docker-host', h.dockerHost, '--store', etcdUrl, '--advertise-addr', '192.0.2.77', '--probe-port', '0',
        '--encryption', 'off', '--dns-addr', 'off', '--metrics-addr', ''], { timeoutMs: 30_000 });
      expect(r.code).not.toBe(0);
      expect(r.stderr).toContain('--advertise-addr 192.0.2.77 is IPv4, but the cluster\'s hosts advertise IPv6 addresses');
      expect(r.stdout + r.stderr).toContain('WEFT_UNDERLAY_FAMILY_MISMATCH');
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
    // and it never registered
    const list = JSON.parse((await weft(0, ['hosts', '--json'])).stdout) as { name: string }[];
    expect(list.map((x) => x.name)).not.toContain(`${PREFIX}v4`);
  });
});
