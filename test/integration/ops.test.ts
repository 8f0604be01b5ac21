// The operator commands on a three-host lab cluster with etcd (plus a fourth,
// bare host with a too-small underlay MTU for `weft doctor`). Every command
// runs inside a host's network namespace with the same flags as that host's
// weft, as an operator would run it there. Runs in order; each test builds on
// the state before it.
import * as fs from 'fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startEtcd } from '../lab/etcd';
import {
  cleanupLabLeftovers, createUnderlay, ensureBusyboxImage, hostHttpGet, run, startHost, startWeft, waitFor,
  type LabHost, type RunResult, type Underlay, type WeftProcess,
} from '../lab/host';
import { WEFT_CLI } from '../lab/weft';
import { parsePromText, promSum } from '../unit/prom-text';
import type { StatusReport } from '../../src/ops/types';

const PREFIX = 'wop-';
const SUBNET = '10.80.0.0/24';
const METRICS_PORT = 9464;
const DRIFT_HOST = 1; // index of the host with a long reconcile interval
const OUT_DIR = '/tmp/weft-test-logs/ops';

let ul: Underlay;
let etcd: Awaited<ReturnType<typeof startEtcd>>;
let etcdIp = '';
let etcdUrl = '';
const hosts: LabHost[] = [];
const wefts: WeftProcess[] = [];
let bare: LabHost; // no dockerd, no weft, underlay MTU 1400

const ipOf = (h: LabHost) => h.ip!;

function weftArgs(i: number, h: LabHost): string[] {
  return [
    '--store', etcdUrl, '--advertise-addr', ipOf(h), '--lease-ttl', '3', '--gc-grace', '5',
    // host 2 reconciles rarely, so that drift stays visible long enough to be seen
    '--reconcile-interval', i === DRIFT_HOST ? '30' : '2', '--peer-audit-interval', i === DRIFT_HOST ? '30' : '2',
    ...(i === 0 ? ['--metrics-addr', `${ipOf(h)}:${METRICS_PORT}`] : []),
  ];
}

/** The flags `weft serve` got on host i, for the CLI run on that host. */
function hostFlags(i: number): string[] {
  const h = hosts[i];
  const w = wefts[i];
  return [
    '--socket', w.socket, '--state-dir', w.stateDir, '--run-dir', w.runDir, '--host-name', h.name,
    '--docker-host', h.dockerHost, '--store', etcdUrl, '--advertise-addr', ipOf(h),
  ];
}

/** `weft <args>` inside host i's network namespace with that host's flags (later flags override them). */
async function weft(i: number, args: string[], extra: string[] = []): Promise<RunResult> {
  const r = await run('ip', ['netns', 'exec', hosts[i].name, process.execPath, WEFT_CLI, ...args, ...hostFlags(i), ...extra], { timeoutMs: 60_000 });
  fs.appendFileSync(`${OUT_DIR}/commands.txt`, `\n$ [${hosts[i].name}] weft ${[...args, ...extra].join(' ')}\n(exit ${r.code})\n${r.stdout}${r.stderr}`);
  return r;
}

async function weftJson<T>(i: number, args: string[]): Promise<T> {
  const r = await weft(i, [...args, '--json']);
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout) as T;
}

async function status(i: number): Promise<StatusReport> {
  return weftJson<StatusReport>(i, ['status']);
}

async function scrape(): Promise<ReturnType<typeof parsePromText>> {
  const r = await hostHttpGet(hosts[0], `http://${ipOf(hosts[0])}:${METRICS_PORT}/metrics`);
  expect(r.code, r.stderr).toBe(0);
  return parsePromText(r.stdout);
}

async function inspect(h: LabHost, name: string): Promise<{ endpoint: string; ip: string; mac: string }> {
  const r = await h.dockerOk(['inspect', '-f', '{{with index .NetworkSettings.Networks "app"}}{{.EndpointID}} {{.IPAddress}} {{.MacAddress}}{{end}}', name]);
  const [endpoint, ip, mac] = r.stdout.trim().split(' ');
  return { endpoint, ip, mac };
}

/** Endpoint addresses held by a host, counted in etcd itself (etcdctl in the underlay namespace). */
async function addressesInEtcd(host: string): Promise<number> {
  const r = await run('ip', ['netns', 'exec', ul.name, 'etcdctl', '--endpoints', `http://${etcdIp}:${new URL(etcd.endpoint).port}`,
    'get', '--prefix', '/weft/v1/addrs/', '--print-value-only']);
  expect(r.code, r.stderr).toBe(0);
  return r.stdout.split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l) as { host: string; kind: string })
    .filter((a) => a.kind === 'endpoint' && a.host === host).length;
}

beforeAll(async () => {
  fs.rmSync(OUT_DIR, { recursive: true, force: true });
  fs.mkdirSync(OUT_DIR, { recursive: true });
  await cleanupLabLeftovers(PREFIX);
  ul = await createUnderlay(`${PREFIX}ul`, '192.0.2.0/24');
  etcdIp = ul.bridgeAddress.split('/')[0];
  etcd = await startEtcd({ name: 'wop', netns: ul.name, clientHost: etcdIp });
  etcdUrl = `etcd://${etcdIp}:${new URL(etcd.endpoint).port}`;
  for (let i = 0; i < 3; i++) {
    const h = await startHost({ name: `${PREFIX}h${i + 1}`, underlay: ul });
    hosts.push(h);
    await ensureBusyboxImage(h);
    wefts.push(await startWeft(h, { args: weftArgs(i, h) }));
  }
  bare = await startHost({ name: `${PREFIX}h4`, underlay: ul, mtu: 1400, dockerd: false });
  await hosts[0].dockerOk(['network', 'create', '-d', 'weft', '--ipam-driver', 'weft', '--subnet', SUBNET, 'app']);
  for (const h of hosts.slice(1)) {
    await waitFor(async () => (await h.docker(['network', 'inspect', 'app'])).code === 0, { timeoutMs: 20_000, what: `network app on ${h.name}` });
  }
}, 300_000);

afterAll(async () => {
  for (const h of [...hosts, bare]) {
    if (!h) continue;
    fs.mkdirSync(`/tmp/weft-test-logs/${h.name}`, { recursive: true });
    for (const f of ['weft.log', 'dockerd.log']) {
      try {
        fs.copyFileSync(`${h.dir}/${f}`, `/tmp/weft-test-logs/${h.name}/${f}`);
      } catch {
        // not started
      }
    }
  }
  for (const h of [...hosts, bare]) await h?.destroy().catch(() => undefined);
  await etcd?.stop().catch(() => undefined);
  await ul?.destroy().catch(() => undefined);
  await cleanupLabLeftovers(PREFIX);
}, 180_000);

describe('operator commands on a three-host cluster', () => {
  it('the metrics listener serves valid Prometheus text whose counters move when a container starts', async () => {
    const before = await scrape();
    expect(before.families.get('weft_plugin_calls_total')?.type).toBe('counter');
    expect(before.families.get('weft_plugin_call_duration_seconds')?.type).toBe('histogram');
    await hosts[0].dockerOk(['run', '-d', '--name', 'c1', '--network', 'app', 'busybox:local', 'sleep', '3600']);
    const after = await scrape();
    const moved = (name: string, labels: Record<string, string> = {}) => promSum(after, name, labels) - promSum(before, name, labels);
    expect(moved('weft_plugin_calls_total', { method: 'NetworkDriver.CreateEndpoint', outcome: 'ok' })).toBe(1);
    expect(moved('weft_plugin_calls_total', { method: 'NetworkDriver.Join', outcome: 'ok' })).toBe(1);
    expect(moved('weft_plugin_call_duration_seconds_count', { method: 'NetworkDriver.Join', outcome: 'ok' })).toBe(1);
    expect(moved('weft_address_allocations_total')).toBeGreaterThanOrEqual(1);
    expect(moved('weft_store_requests_total')).toBeGreaterThan(0);
    expect(promSum(after, 'weft_build_info', { host: hosts[0].name })).toBe(1);
    expect(promSum(after, 'weft_lease_alive')).toBe(1);
    fs.writeFileSync(`${OUT_DIR}/metrics.txt`, (await hostHttpGet(hosts[0], `http://${ipOf(hosts[0])}:${METRICS_PORT}/metrics`)).stdout);

    const health = await hostHttpGet(hosts[0], `http://${ipOf(hosts[0])}:${METRICS_PORT}/healthz`);
    expect(health.code, health.stderr).toBe(0);
    expect(JSON.parse(health.stdout)).toMatchObject({ ok: true, socket: 'ok', store: 'ok' });
  });

  it('weft endpoints app --json on host 1 lists the containers of all three hosts with their addresses', async () => {
    await hosts[1].dockerOk(['run', '-d', '--name', 'c2', '--network', 'app', 'busybox:local', 'sleep', '3600']);
    await hosts[2].dockerOk(['run', '-d', '--name', 'c3', '--network', 'app', 'busybox:local', 'sleep', '3600']);
    await hosts[2].dockerOk(['run', '-d', '--name', 'c3b', '--network', 'app', 'busybox:local', 'sleep', '3600']);
    const containers = [
      { host: hosts[0].name, name: 'c1', ...(await inspect(hosts[0], 'c1')) },
      { host: hosts[1].name, name: 'c2', ...(await inspect(hosts[1], 'c2')) },
      { host: hosts[2].name, name: 'c3', ...(await inspect(hosts[2], 'c3')) },
      { host: hosts[2].name, name: 'c3b', ...(await inspect(hosts[2], 'c3b')) },
    ];
    const eps = await weftJson<{ host: string; endpoint: string; ip: string; mac: string; container: string | null; network: string; hostAlive: boolean }[]>(0, ['endpoints', 'app']);
    expect(eps).toHaveLength(4);
    for (const c of containers) {
      const e = eps.find((x) => x.endpoint === c.endpoint);
      expect(e, `${c.name} on ${c.host}`).toBeDefined();
      expect(e).toMatchObject({ host: c.host, ip: c.ip, mac: c.mac, network: 'app', hostAlive: true });
    }
    // This host's container names come from its Docker engine.
    expect(eps.find((x) => x.host === hosts[0].name)?.container).toBe('c1');
    const table = await weft(0, ['endpoints']);
    expect(table.code).toBe(0);
    for (const c of containers) expect(table.stdout).toMatch(new RegExp(`^app\\s+${c.host}\\s+\\S+\\s+${c.ip.replace(/\./g, '\\.')}\\s+${c.mac}\\s+${c.endpoint.slice(0, 12)}$`, 'm'));
    const unknown = await weft(0, ['endpoints', 'nosuchnet']);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toContain('no weft network "nosuchnet" in the store (weft networks: app): see weft networks');
  });

  it('weft status on each host reports no drift', async () => {
    // each host expects the other hosts' endpoints plus one flood entry per other host with endpoints
    const expected = [3 + 2, 3 + 2, 1 + 1 + 2];
    for (let i = 0; i < 3; i++) {
      const s = await waitFor(async () => {
        const st = await status(i);
        const app = st.networks.find((n) => n.name === 'app');
        return st.agent.synced && app && app.peers.expected === expected[i] && st.drift === 0 ? st : undefined;
      }, { timeoutMs: 30_000, what: `no drift on ${hosts[i].name}` });
      expect(s.store.reachable).toBe(true);
      expect(s.lease.alive).toBe(true);
      expect(s.version).toMatch(/^\d+\.\d+\.\d+/);
      const app = s.networks.find((n) => n.name === 'app')!;
      expect(app.subnet).toBe(SUBNET);
      expect(app.vni).toBeGreaterThanOrEqual(4096);
      expect(app.peers).toMatchObject({ programmed: expected[i], missing: [], extra: [], drift: 0 });
      expect(app.endpoints.length).toBe(i === 2 ? 2 : 1);
      const text = await weft(i, ['status']);
      expect(text.code).toBe(0);
      expect(text.stdout).toContain('peers      in sync with the store on 1 network');
      // the runtime npm ci pins (npm test runs weft on it)
      expect(s.runtime).toMatch(/^node 24\./);
      expect(text.stdout).toMatch(/^host\s+\S+ \(\S+\): weft \S+ on node 24\.\d+\.\d+, pid/m);
      expect(text.stdout).toMatch(/^lease\s+alive/m);
      expect(text.stdout).toMatch(new RegExp(`^app\\s+${app.clusterId.slice(0, 12)}\\s+${app.vni}\\s+10\\.80\\.0\\.0/24\\s`, 'm'));
    }
  });

  it('after an FDB entry is deleted by hand, weft status shows the drift until the reconcile repairs it', { timeout: 180_000 }, async () => {
    const i = DRIFT_HOST;
    const c1 = await inspect(hosts[0], 'c1');
    const s0 = await status(i);
    const app = s0.networks.find((n) => n.name === 'app')!;
    const id = app.clusterId.slice(0, 10);
    const ns = `${wefts[i].runDir}/netns/weft-${id}`;
    const fdbHas = async () => (await run('nsenter', [`--net=${ns}`, 'bridge', 'fdb', 'show', 'dev', `vx-${id}`])).stdout.includes(`${c1.mac} dst ${ipOf(hosts[0])}`);
    expect(await fdbHas()).toBe(true);

    // A reconcile may fall between the deletion and the look: then delete again.
    let seen: StatusReport | undefined;
    let text = '';
    for (let attempt = 0; attempt < 3 && !seen; attempt++) {
      const del = await run('nsenter', [`--net=${ns}`, 'bridge', 'fdb', 'del', c1.mac, 'dev', `vx-${id}`, 'dst', ipOf(hosts[0]), 'self']);
      expect(del.code, del.stderr).toBe(0);
      text = (await weft(i, ['status'])).stdout;
      const s = await status(i);
      if (s.drift > 0) seen = s;
    }
    expect(seen, 'drift seen by weft status').toBeDefined();
    const drifted = seen!.networks.find((n) => n.name === 'app')!.peers;
    expect(drifted.missing).toContainEqual({ kind: 'endpoint', ip: c1.ip, mac: c1.mac, vtep: ipOf(hosts[0]), part: 'fdb' });
    expect(drifted.drift).toBe(1);
    expect(text).toContain('peers      DRIFT on 1 network: 1 missing, 0 extra');
    expect(text).toMatch(new RegExp(`^app\\s+missing\\s+FDB entry of ${c1.ip.replace(/\./g, '\\.')} ${c1.mac} via ${ipOf(hosts[0]).replace(/\./g, '\\.')}$`, 'm'));

    // The reconcile (every 30 s on this host) puts the entry back; status follows.
    const repaired = await waitFor(async () => {
      const s = await status(i);
      return s.drift === 0 ? s : undefined;
    }, { timeoutMs: 120_000, what: 'the reconcile to repair the drift' });
    expect(repaired.agent.corrections).toBeGreaterThan(seen!.agent.corrections);
    expect(await fdbHas()).toBe(true);
    expect((await weft(i, ['status'])).stdout).toContain('peers      in sync with the store on 1 network');
  });

  it('weft hosts and weft networks show the cluster from any host', async () => {
    const h = await weft(1, ['hosts']);
    expect(h.code).toBe(0);
    // (the lab's wefts run WireGuard: weft hosts adds each host's encryption)
    expect(h.stdout.split('\n')[0]).toMatch(/^HOST\s+STATE\s+ADDRESS\s+VERSION\s+STARTED\s+NETWORKS\s+ENDPOINTS\s+ADDRESSES\s+ENCRYPTION\s+HANDSHAKE\s+RX\s+TX$/);
    for (let i = 0; i < 3; i++) expect(h.stdout).toMatch(new RegExp(`^${hosts[i].name}\\s+up\\s+${ipOf(hosts[i]).replace(/\./g, '\\.')}\\s`, 'm'));
    const n = await weft(2, ['networks']);
    expect(n.code).toBe(0);
    expect(n.stdout).toMatch(new RegExp(`^app\\s+[0-9a-f]{12}\\s+\\d+\\s+10\\.80\\.0\\.0/24\\s+10\\.80\\.0\\.1\\s+1450\\s+${hosts.map((x) => x.name).join(',')}\\s+4\\s+ok$`, 'm'));
    const nets = await weftJson<{ name: string; hosts: string[]; endpoints: number }[]>(0, ['networks']);
    expect(nets).toEqual([expect.objectContaining({ name: 'app', hosts: hosts.map((x) => x.name), endpoints: 4 })]);
  });

  it('weft doctor passes on a healthy host, and each peer reaches it on UDP 4789', async () => {
    const r = await weft(0, ['doctor']);
    expect(r.stdout).toContain('no problem found');
    expect(r.code).toBe(0);
    for (const i of [1, 2]) expect(r.stdout).toMatch(new RegExp(`^ok\\s+udp 4789\\s+${hosts[i].name} \\(${ipOf(hosts[i]).replace(/\./g, '\\.')}\\) reaches this host on UDP 4789`, 'm'));
  });

  it('weft doctor reports an underlay MTU too small for the overlay, and says what to do', async () => {
    const flags = ['--store', etcdUrl, '--advertise-addr', ipOf(bare), '--host-name', bare.name, '--run-dir', `${bare.dir}/weft-run`,
      '--socket', `${bare.dir}/weft.sock`, '--docker-host', `unix://${bare.dir}/docker.sock`];
    const r = await run('ip', ['netns', 'exec', bare.name, process.execPath, WEFT_CLI, 'doctor', ...flags], { timeoutMs: 60_000 });
    fs.appendFileSync(`${OUT_DIR}/commands.txt`, `\n$ [${bare.name}] weft doctor\n(exit ${r.code})\n${r.stdout}${r.stderr}`);
    expect(r.code).toBe(1);
    const ifname = bare.underlayIf!;
    expect(r.stdout).toMatch(new RegExp(`^FAIL\\s+mtu\\s+${ifname} \\(holding ${ipOf(bare).replace(/\./g, '\\.')}\\) has MTU 1400, too small for the overlay MTU \\(--mtu 1450\\)`, 'm'));
    expect(r.stdout).toContain(`fix: raise the MTU of ${ifname} (and of the network path between the hosts) to at least 1500: ip link set dev ${ifname} mtu 1500; or lower the overlay MTU to 1350`);
    // no Docker there either, and it says so
    expect(r.stdout).toMatch(/^FAIL\s+docker\s+no Docker engine answers at/m);
    // the rest of the cluster still reaches this host over VXLAN
    for (const h of hosts) expect(r.stdout).toMatch(new RegExp(`^ok\\s+udp 4789\\s+${h.name} .* reaches this host on UDP 4789`, 'm'));
    expect(r.stdout).toContain('problems found: see the fix lines above');
  });

  it('weft doctor reports an unreachable etcd, and says what to do', async () => {
    // Nothing listens on port 1 of the etcd host.
    const r = await weft(0, ['doctor'], ['--store', `etcd://${etcdIp}:1`, '--store-timeout', '1000']);
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/^FAIL\s+store\s+etcd store unavailable: .* got no answer from http:\/\/192\.0\.2\.\d+:1 within 1000 ms/m);
    expect(r.stdout).toContain(`fix: check that etcd runs and that this host reaches it at etcd://${etcdIp}:1`);
    expect(r.stdout).toMatch(/^skip\s+udp 4789\s+cannot list the other hosts: the store did not answer/m);
    // the other commands fail the same clear way
    const e = await weft(0, ['endpoints'], ['--store', `etcd://${etcdIp}:1`, '--store-timeout', '1000']);
    expect(e.code).toBe(1);
    expect(e.stderr).toMatch(/^weft: etcd store unavailable: .*Check that etcd is running and reachable/);
  });

  it('weft host rm refuses while the host is alive, and releases all its addresses once it is killed', { timeout: 120_000 }, async () => {
    const h3 = hosts[2].name;
    expect(await addressesInEtcd(h3)).toBe(2);
    const alive = await weft(0, ['host', 'rm', h3, '--yes']);
    expect(alive.code).toBe(1);
    expect(alive.stderr).toContain(`host ${h3} is alive`);
    expect(alive.stderr).toContain(`stop weft on ${h3} first and wait --lease-ttl seconds for its lease to expire`);
    expect(await addressesInEtcd(h3)).toBe(2);

    wefts[2].kill('SIGKILL');
    await hosts[2].killDockerd();
    await waitFor(async () => {
      const list = await weftJson<{ name: string; alive: boolean }[]>(0, ['hosts']);
      return list.find((h) => h.name === h3)?.alive === false || undefined;
    }, { timeoutMs: 30_000, what: `${h3}'s lease to expire` });
    expect((await weft(0, ['hosts'])).stdout).toMatch(new RegExp(`^${h3}\\s+down\\s`, 'm'));

    // Without a terminal and without --yes, nothing happens.
    const unconfirmed = await weft(0, ['host', 'rm', h3]);
    expect(unconfirmed.code).toBe(1);
    expect(unconfirmed.stderr).toContain(`host ${h3} holds 2 addresses, 2 endpoints, 1 network binding (on 1 network) and a WireGuard tunnel address. Refusing to remove it without confirmation: stdin is not a terminal, so pass --yes`);
    expect(await addressesInEtcd(h3)).toBe(2);

    const rm = await weft(0, ['host', 'rm', h3, '--yes']);
    expect(rm.code, rm.stderr).toBe(0);
    expect(rm.stdout).toContain(`removed host ${h3}: released 2 addresses, deleted 2 endpoints and 1 network binding`);
    expect(await addressesInEtcd(h3)).toBe(0);
    const eps = await weftJson<{ host: string }[]>(0, ['endpoints', 'app']);
    expect(eps.map((e) => e.host).sort()).toEqual([hosts[0].name, hosts[1].name]);
    expect((await weftJson<{ name: string }[]>(0, ['hosts'])).map((h) => h.name)).not.toContain(h3);
    const again = await weft(0, ['host', 'rm', h3, '--yes']);
    expect(again.code).toBe(0);
    expect(again.stdout).toContain(`host ${h3} holds nothing in the store`);
  });
});
