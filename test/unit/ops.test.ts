// Operator commands, without a cluster: tables and JSON, the cluster view,
// argument parsing, drift, doctor's MTU verdict, the metrics exposition,
// /healthz and the probe's wire format.
import * as os from 'os';
import * as fs from 'fs';
import * as path from 'path';
import { afterEach, describe, expect, it } from 'vitest';
import { comparePeers } from '../../src/ops/admin';
import { ClusterView } from '../../src/ops/cluster';
import { OpsError, parseArgs } from '../../src/ops/context';
import { mtuCheck, renderDoctor, routedCheck } from '../../src/ops/doctor';
import { endpointsJson, renderEndpoints } from '../../src/ops/endpoints';
import { ago, duration, table } from '../../src/ops/format';
import { renderHosts } from '../../src/ops/hosts';
import { InstrumentedStore } from '../../src/ops/instrumented-store';
import { Registry, WeftMetrics } from '../../src/ops/metrics';
import { checkHealth, parseHostPort } from '../../src/ops/metrics-server';
import { renderNetworks } from '../../src/ops/networks';
import { parseRequest, vxlanProbePacket } from '../../src/ops/probe';
import { renderStatus } from '../../src/ops/status';
import { RUNTIME, runtimeWarning } from '../../src/version';
import type { StatusReport } from '../../src/ops/types';
import { ConfigError } from '../../src/config';
import { FileStore } from '../../src/store/file-store';
import { areaOf, keys } from '../../src/store/keys';
import type { Store } from '../../src/store/store';
import { StoreUnavailableError } from '../../src/store/store';
import { parsePromText, promSum } from './prom-text';

const CID = 'a1b2c3d4e5f6a1b2c3d4e5f6a1b2c3d4e5f6a1b2c3d4e5f6a1b2c3d4e5f6a1b2';
const CID2 = 'f0e1d2c3b4a5f0e1d2c3b4a5f0e1d2c3b4a5f0e1d2c3b4a5f0e1d2c3b4a5f0e1';
const EP = (n: number) => `${String(n).repeat(12)}${'0'.repeat(52)}`;

function kvs(): { key: string; value: string }[] {
  const j = (o: unknown) => JSON.stringify(o);
  return [
    { key: keys.host('h1'), value: j({ address: '192.0.2.11', version: '0.1.0', startedAt: '2026-01-01T00:00:00.000Z' }) },
    { key: keys.host('h2'), value: j({ address: '192.0.2.12', version: '0.1.0', startedAt: '2026-01-01T00:00:00.000Z' }) },
    { key: keys.network(CID), value: j({ name: 'app', subnet: '10.80.0.0/24', poolId: '10.80.0.0_24', gateway: '10.80.0.1', vni: 5000, mtu: 1450, options: {}, internal: false, createdBy: 'h1', createdAt: '2026-01-01T00:00:00.000Z' }) },
    { key: keys.network(CID2), value: j({ subnet: '10.81.0.0/24', vni: 5001, mtu: 1400, options: { mtu: '1400' }, internal: false, createdBy: 'h2', createdAt: '2026-01-01T00:00:00.000Z', deleting: true }) },
    { key: keys.binding(CID, 'h1'), value: j({ localId: 'l1' }) },
    { key: keys.binding(CID, 'h2'), value: j({ localId: 'l2' }) },
    { key: keys.binding(CID, 'h3'), value: j({ localId: 'l3' }) },
    { key: keys.endpoint(CID, EP(1)), value: j({ host: 'h1', vtep: '192.0.2.11', ip: '10.80.0.2', mac: '02:42:0a:50:00:02', localNetwork: 'l1', container: 'web' }) },
    { key: keys.endpoint(CID, EP(2)), value: j({ host: 'h2', vtep: '192.0.2.12', ip: '10.80.0.10', mac: '02:42:0a:50:00:0a', localNetwork: 'l2' }) },
    { key: keys.endpoint(CID, EP(3)), value: j({ host: 'h3', vtep: '192.0.2.13', ip: '10.80.0.3', mac: '02:42:0a:50:00:03', localNetwork: 'l3' }) },
    { key: keys.addr('10.80.0.0_24', '10.80.0.2'), value: j({ host: 'h1', kind: 'endpoint' }) },
    { key: keys.addr('10.80.0.0_24', '10.80.0.3'), value: j({ host: 'h3', kind: 'endpoint' }) },
    { key: keys.addr('10.80.0.0_24', '10.80.0.9'), value: j({ host: 'h3', kind: 'endpoint' }) },
    { key: keys.addr('10.80.0.0_24', '10.80.0.10'), value: j({ host: 'h2', kind: 'endpoint' }) },
    { key: keys.addr('10.80.0.0_24', '10.80.0.200'), value: j({ host: 'h1', kind: 'aux' }) },
    { key: keys.endpoint(CID, 'broken'), value: '{not json' },
    { key: keys.name(CID, EP(2)), value: j({ name: 'api', aliases: [], ip: '10.80.0.10', host: 'h2', network: 'app', container: 'c0ffee' }) },
  ];
}

describe('format', () => {
  it('aligns tables, marks empty cells and leaves no trailing blanks', () => {
    expect(table(['A', 'LONGER', 'C'], [['x', '', 3], ['yyyy', 'z', undefined]])).toBe(
      'A     LONGER  C\n' +
      'x     -       3\n' +
      'yyyy  z       -\n');
  });
  it('says durations the short way', () => {
    expect(duration(850)).toBe('850 ms');
    expect(duration(12_400)).toBe('12 s');
    expect(duration(4 * 60_000)).toBe('4 min');
    expect(duration(5 * 3600_000)).toBe('5 h');
    expect(ago('2026-01-01T00:00:00.000Z', Date.parse('2026-01-01T00:00:30.000Z'))).toBe('30 s ago');
    expect(ago(undefined)).toBe('-');
  });
});

describe('cluster view', () => {
  const view = new ClusterView(kvs());

  it('lists registered hosts as up and hosts that only hold records as down', () => {
    const hosts = view.hosts();
    expect(hosts.map((h) => [h.name, h.alive, h.address, h.networks, h.endpoints, h.addresses])).toEqual([
      ['h1', true, '192.0.2.11', 1, 1, 1],
      ['h2', true, '192.0.2.12', 1, 1, 1],
      ['h3', false, '192.0.2.13', 1, 1, 2],
    ]);
    expect(view.unreadable).toBe(1);
    const text = renderHosts(hosts, Date.parse('2026-01-01T00:05:00.000Z'));
    expect(text.split('\n')[0]).toBe('HOST  STATE  ADDRESS     VERSION  STARTED    NETWORKS  ENDPOINTS  ADDRESSES');
    expect(text).toContain('h1    up     192.0.2.11  0.1.0    5 min ago  1         1          1');
    expect(text).toContain('h3    down   192.0.2.13  -        -          1         1          2');
    expect(renderHosts(hosts, Date.now(), false)).toContain('h3    local');
  });

  it('lists networks with VNI, subnet, hosts and state', () => {
    const text = renderNetworks(view.networks());
    expect(text.split('\n')[0]).toMatch(/^NAME\s+ID\s+VNI\s+SUBNET\s+GATEWAY\s+MTU\s+HOSTS\s+ENDPOINTS\s+STATE$/);
    expect(text).toMatch(/^app\s+a1b2c3d4e5f6\s+5000\s+10\.80\.0\.0\/24\s+10\.80\.0\.1\s+1450\s+h1,h2,h3\s+3\s+ok$/m);
    expect(text).toMatch(/^\(unnamed\)\s+f0e1d2c3b4a5\s+5001\s+10\.81\.0\.0\/24\s+-\s+1400\s+-\s+0\s+deleting$/m);
  });

  it('finds a network by name, full id or unambiguous id prefix', () => {
    expect(view.findNetwork('app')).toBe(CID);
    expect(view.findNetwork(CID2)).toBe(CID2);
    expect(view.findNetwork('a1b2c3')).toBe(CID);
    expect(view.findNetwork('nope')).toBeUndefined();
  });

  it('lists endpoints sorted by address, with the container name or the short endpoint id', () => {
    const eps = view.endpoints(CID);
    expect(eps.map((e) => e.ip)).toEqual(['10.80.0.2', '10.80.0.3', '10.80.0.10']);
    const text = renderEndpoints(eps);
    expect(text.split('\n')[0]).toMatch(/^NETWORK\s+HOST\s+CONTAINER\s+IP\s+MAC\s+ENDPOINT$/);
    expect(text).toMatch(/^app\s+h1\s+web\s+10\.80\.0\.2\s+02:42:0a:50:00:02\s+111111111111$/m);
    expect(text).toMatch(/^app\s+h3 \(down\)\s+333333333333\s+10\.80\.0\.3\s+/m);
    const js = endpointsJson(eps) as Record<string, unknown>[];
    expect(js[0]).toEqual({
      network: 'app', networkId: CID, host: 'h1', hostAlive: true, container: 'web', endpoint: EP(1), ip: '10.80.0.2', mac: '02:42:0a:50:00:02', vtep: '192.0.2.11',
    });
    expect(js[1]).toMatchObject({ host: 'h3', hostAlive: false, container: null });
    // names learned by the host's agent (for DNS) show for remote endpoints too
    expect(js[2]).toMatchObject({ host: 'h2', container: 'api' });
    expect(JSON.parse(JSON.stringify(js))).toEqual(js);
  });
});

describe('arguments', () => {
  const spec = { name: 'endpoints', flags: ['json'], args: ['[NETWORK]'] };
  it('separates the command\'s flags and arguments from the settings of weft serve', () => {
    const a = parseArgs(['app', '--json', '--store', 'etcd://192.0.2.1:2379', '--host-name=h1'], spec, {});
    expect(a.positional).toEqual(['app']);
    expect([...a.flags]).toEqual(['json']);
    expect(a.cfg.store).toBe('etcd://192.0.2.1:2379');
    expect(a.cfg.hostName).toBe('h1');
    // no --advertise-addr needed for operator commands
    expect(a.cfg.advertiseAddr).toBe('');
  });
  it('reads the environment like weft serve', () => {
    expect(parseArgs([], spec, { WEFT_STORE: 'etcd://192.0.2.9:2379' }).cfg.store).toBe('etcd://192.0.2.9:2379');
  });
  it('refuses unknown flags and extra arguments with a usage line', () => {
    expect(() => parseArgs(['--yes'], spec, {})).toThrow(/unknown flag --yes for weft endpoints/);
    expect(() => parseArgs(['a', 'b'], spec, {})).toThrow(/usage: weft endpoints \[NETWORK\] \[--json\]/);
    expect(() => parseArgs([], { name: 'host rm', flags: ['yes'], args: ['NAME'] }, {})).toThrow(ConfigError);
    expect([...parseArgs(['h3', '-y'], { name: 'host rm', flags: ['yes'], args: ['NAME'] }, {}).flags]).toEqual(['yes']);
    expect(() => parseArgs(['--store'], spec, {})).toThrow(/needs a value/);
  });
  it('OpsError carries an exit code', () => {
    expect(new OpsError('x', 2).exitCode).toBe(2);
  });
});

describe('drift', () => {
  const want = { endpoints: [{ ip: '10.80.0.3', mac: '02:42:0a:50:00:03', vtep: '192.0.2.12' }, { ip: '10.80.0.4', mac: '02:42:0a:50:00:04', vtep: '192.0.2.13' }], floodVteps: ['192.0.2.12', '192.0.2.13'] };
  it('is zero when the kernel matches the store', () => {
    expect(comparePeers(want, want)).toEqual({ programmed: 4, expected: 4, missing: [], extra: [], drift: 0 });
  });
  it('names a lost FDB entry as one missing half, and stale entries as extra', () => {
    const have = {
      endpoints: [{ ip: '10.80.0.3', mac: '02:42:0a:50:00:03', vtep: '192.0.2.12' }, { ip: '10.80.0.4', mac: '02:42:0a:50:00:04', vtep: '' }, { ip: '10.80.0.9', mac: '02:42:0a:50:00:09', vtep: '192.0.2.14' }],
      floodVteps: ['192.0.2.12'],
    };
    const r = comparePeers(have, want);
    expect(r.missing).toEqual([
      { kind: 'flood', vtep: '192.0.2.13' },
      { kind: 'endpoint', ip: '10.80.0.4', mac: '02:42:0a:50:00:04', vtep: '192.0.2.13', part: 'fdb' },
    ]);
    expect(r.extra).toEqual([{ kind: 'endpoint', ip: '10.80.0.9', mac: '02:42:0a:50:00:09', vtep: '192.0.2.14' }]);
    expect(r.drift).toBe(3);
    expect(r.programmed).toBe(3); // the half-programmed endpoint is not counted
    expect(r.expected).toBe(4);
  });
});

function report(drift: boolean): StatusReport {
  const peers = drift
    ? { programmed: 3, expected: 4, missing: [{ kind: 'endpoint' as const, ip: '10.80.0.4', mac: '02:42:0a:50:00:04', vtep: '192.0.2.13', part: 'fdb' as const }], extra: [], drift: 1 }
    : { programmed: 4, expected: 4, missing: [], extra: [], drift: 0 };
  return {
    host: 'h1', version: '0.1.0', pid: 42, startedAt: '2026-01-01T00:00:00.000Z', cluster: true, advertiseAddr: '192.0.2.11',
    store: { description: 'etcd://192.0.2.1:2379', reachable: true, latencyMs: 1.25 },
    lease: { alive: true, ttlSeconds: 10 },
    agent: { corrections: 2, peersProgrammed: 8, storeErrors: 0, synced: true, lastReconcile: '2026-01-01T00:02:50.000Z', reconcileMs: 12 },
    reconcileIntervalSeconds: 10,
    networks: [{
      clusterId: CID, localId: 'l1', name: 'app', vni: 5000, subnet: '10.80.0.0/24', gateway: '10.80.0.1', mtu: 1450,
      endpoints: [{ id: EP(1), container: 'web', ip: '10.80.0.2', mac: '02:42:0a:50:00:02' }], peers,
    }],
    drift: drift ? 1 : 0,
  };
}

describe('status', () => {
  const now = Date.parse('2026-01-01T00:03:00.000Z');
  it('shows the Node.js runtime weft runs on, and warns at start on one older than 24', () => {
    const text = renderStatus({ ...report(false), runtime: 'node 24.22.3' }, now);
    expect(text).toContain('host       h1 (192.0.2.11): weft 0.1.0 on node 24.22.3, pid 42, up 3 min\n');
    expect(RUNTIME).toBe(`node ${process.versions.node}`);
    expect(runtimeWarning('20.20.2')).toMatch(/Node\.js 24 LTS; this is Node\.js 20\.20\.2/);
    expect(runtimeWarning('24.22.3')).toBeUndefined();
    expect(runtimeWarning('26.1.0')).toBeUndefined();
  });

  it('shows the store, lease, reconcile, networks and local endpoints', () => {
    const text = renderStatus(report(false), now);
    expect(text).toContain('host       h1 (192.0.2.11): weft 0.1.0, pid 42, up 3 min\n');
    expect(text).toContain('store      etcd://192.0.2.1:2379: reachable, answered in 1.25 ms\n');
    expect(text).toContain('lease      alive (ttl 10 s)\n');
    expect(text).toContain('reconcile  last 10 s ago (took 12 ms, every 10 s); 2 corrections since start\n');
    expect(text).toContain('peers      in sync with the store on 1 network\n');
    expect(text).toMatch(/^app\s+a1b2c3d4e5f6\s+5000\s+10\.80\.0\.0\/24\s+10\.80\.0\.1\s+1450\s+1\s+4\s+4\s+0$/m);
    expect(text).toMatch(/^app\s+web\s+10\.80\.0\.2\s+02:42:0a:50:00:02\s+111111111111$/m);
    expect(text).not.toContain('DRIFT (kernel against store)');
  });
  it('shows drift and each drifted entry', () => {
    const text = renderStatus(report(true), now);
    expect(text).toContain('peers      DRIFT on 1 network: 1 missing, 0 extra');
    expect(text).toMatch(/^app\s+missing\s+FDB entry of 10\.80\.0\.4 02:42:0a:50:00:04 via 192\.0\.2\.13$/m);
  });
  it('a routed network: its mode, the path to each peer, and drifted routes', () => {
    const r = report(false);
    r.networks[0] = {
      ...r.networks[0], mode: 'routed',
      paths: [{ host: 'h2', address: '192.0.2.12', path: 'routed', underlay: '192.0.2.0/24' }, { host: 'h3', address: '198.51.100.13', path: 'vxlan', underlay: '198.51.100.0/24' }],
      peers: { ...r.networks[0].peers, missing: [{ kind: 'route', ip: '10.80.0.3', vtep: '' }, { kind: 'proxy', ip: '10.80.0.9', vtep: '' }], drift: 2 },
    };
    const text = renderStatus(r, now);
    expect(text).toMatch(/^NETWORK\s+ID\s+MODE\s+VNI/m);
    expect(text).toMatch(/^app\s+a1b2c3d4e5f6\s+routed\s+5000\s/m);
    expect(text).toMatch(/^app\s+h2\s+192\.0\.2\.12\s+192\.0\.2\.0\/24\s+routed \(unencapsulated\)$/m);
    expect(text).toMatch(/^app\s+h3\s+198\.51\.100\.13\s+198\.51\.100\.0\/24\s+vxlan$/m);
    expect(text).toContain('broadcast and multicast stay on this segment');
    expect(text).toMatch(/^app\s+missing\s+route 10\.80\.0\.3\/32 to a container of this host \(routed\)$/m);
    expect(text).toMatch(/^app\s+missing\s+proxy entry 10\.80\.0\.9, a container of another segment \(routed\)$/m);
  });
  it('says when the store or the lease is gone', () => {
    const r = report(false);
    r.store = { description: 'etcd://192.0.2.1:2379', reachable: false, error: 'etcd store unavailable: ...' };
    r.lease = { alive: false, ttlSeconds: 10, detail: 'unknown: the store does not answer' };
    const text = renderStatus(r, now);
    expect(text).toContain('store      etcd://192.0.2.1:2379: UNREACHABLE: etcd store unavailable: ...');
    expect(text).toContain('lease      NOT ALIVE: unknown: the store does not answer');
  });
});

describe('doctor', () => {
  it('routed networks: the path to each host, or a warning when this host publishes no segment', () => {
    const host = (address: string, underlay?: string) => ({ address, version: 'x', startedAt: 'x', ...(underlay ? { underlay } : {}) });
    const net = { name: 'fast', vni: 5000, mtu: 1450, options: { mode: 'routed' }, internal: false, createdBy: 'h1', createdAt: 'x' };
    const hosts = new Map([['h1', host('192.0.2.11', '192.0.2.0/24')], ['h2', host('192.0.2.12', '192.0.2.0/24')], ['h3', host('198.51.100.13', '198.51.100.0/24')], ['h4', host('192.0.2.14')]]);
    expect(routedCheck('h1', { hosts, networks: [{ ...net, options: {} }] })).toBeUndefined();
    const c = routedCheck('h1', { hosts, networks: [net] })!;
    expect(c.state).toBe('ok');
    expect(c.detail).toBe('routed network fast on segment 192.0.2.0/24: unencapsulated to h2 (192.0.2.12); VXLAN to h3 (198.51.100.13, 198.51.100.0/24), h4 (192.0.2.14, no segment published); broadcast and multicast stay on this segment');
    const w = routedCheck('h4', { hosts, networks: [net] })!;
    expect(w.state).toBe('warn');
    expect(w.detail).toMatch(/publishes no underlay segment, so containers of theirs cannot start here/);
  });
  it('passes an underlay MTU of overlay + 50 and fails a smaller one, saying what to do', () => {
    expect(mtuCheck('eth0', '192.0.2.11', 1500, [{ what: '--mtu', mtu: 1450 }]).state).toBe('ok');
    const c = mtuCheck('eth0', '192.0.2.14', 1400, [{ what: '--mtu', mtu: 1450 }, { what: 'network small', mtu: 1300 }]);
    expect(c.state).toBe('fail');
    expect(c.detail).toContain('eth0 (holding 192.0.2.14) has MTU 1400, too small for the overlay MTU (--mtu 1450)');
    expect(c.fix).toContain('ip link set dev eth0 mtu 1500');
    expect(c.fix).toContain('--mtu 1350');
    expect(mtuCheck('eth0', '192.0.2.11', 9000, [{ what: '--mtu', mtu: 1450 }, { what: 'network jumbo', mtu: 8950 }]).state).toBe('ok');
    expect(mtuCheck('eth0', '192.0.2.11', 1500, [{ what: '--mtu', mtu: 1450 }, { what: 'network jumbo', mtu: 8950 }]).detail).toContain('network jumbo 8950');
  });
  it('prints a fix line under each failure and counts problems', () => {
    const text = renderDoctor({
      host: 'h4', advertiseAddr: '192.0.2.14', ok: false,
      checks: [
        { name: 'kernel', state: 'ok', detail: 'fine' },
        { name: 'mtu', state: 'fail', detail: 'too small', fix: 'raise it' },
        { name: 'plugin', state: 'warn', detail: 'not running', fix: 'start it' },
      ],
    });
    expect(text).toBe(
      'weft doctor on h4 (192.0.2.14)\n' +
      'ok    kernel  fine\n' +
      'FAIL  mtu     too small\n' +
      '              fix: raise it\n' +
      'warn  plugin  not running\n' +
      '              fix: start it\n' +
      '1 problem found: see the fix lines above\n');
  });
});

describe('metrics exposition', () => {
  it('writes valid Prometheus text with escaped labels and cumulative buckets', async () => {
    const r = new Registry();
    const c = r.counter('t_total', 'A counter\nwith a newline', ['k']);
    c.inc({ k: 'a"b\\c\nd' });
    c.inc({ k: 'x' }, 2);
    const h = r.histogram('t_seconds', 'A histogram', ['op'], [0.1, 1]);
    h.observe({ op: 'get' }, 0.05);
    h.observe({ op: 'get' }, 0.5);
    h.observe({ op: 'get' }, 5);
    const g = r.gauge('t_gauge', 'A gauge');
    r.onCollect(() => g.set({}, 7));
    r.onCollect(() => { throw new Error('a broken collector does not break the rest'); });
    const text = await r.expose();
    const p = parsePromText(text);
    expect(p.samples.get('t_total{k="x"}')).toBe(2);
    expect(text).toContain('t_total{k="a\\"b\\\\c\\nd"} 1\n');
    expect(text).toContain('# HELP t_total A counter\\nwith a newline\n');
    expect(p.samples.get('t_seconds_bucket{op="get",le="0.1"}')).toBe(1);
    expect(p.samples.get('t_seconds_bucket{op="get",le="1"}')).toBe(2);
    expect(p.samples.get('t_seconds_bucket{op="get",le="+Inf"}')).toBe(3);
    expect(p.samples.get('t_seconds_count{op="get"}')).toBe(3);
    expect(p.samples.get('t_gauge')).toBe(7);
    expect(() => c.inc({ k: 'x' }, -1)).toThrow();
    expect(() => r.counter('t_total', 'again')).toThrow(/twice/);
  });

  it('counts plugin calls, latency and allocations, and leaves admin routes out', async () => {
    const m = new WeftMetrics();
    m.onCall('IpamDriver.RequestAddress', 'ok', 3);
    m.onCall('IpamDriver.RequestAddress', 'error', 1);
    m.onCall('NetworkDriver.Join', 'ok', 12);
    m.onCall('weft/v1/status', 'ok', 1);
    m.onCall('../../etc/passwd', 'error', 1);
    m.observeStore('get', true, 0.002);
    m.observeStore('txn', false, 5);
    const p = parsePromText(await m.registry.expose());
    expect(promSum(p, 'weft_plugin_calls_total', { method: 'IpamDriver.RequestAddress' })).toBe(2);
    expect(promSum(p, 'weft_plugin_calls_total', { method: 'unknown' })).toBe(1);
    expect(promSum(p, 'weft_plugin_calls_total')).toBe(4);
    expect(promSum(p, 'weft_plugin_call_duration_seconds_count', { method: 'NetworkDriver.Join', outcome: 'ok' })).toBe(1);
    expect(promSum(p, 'weft_address_allocations_total')).toBe(1);
    expect(promSum(p, 'weft_store_errors_total', { op: 'txn' })).toBe(1);
    expect(promSum(p, 'weft_store_request_duration_seconds_count')).toBe(2);
  });
});

describe('store answer bytes', () => {
  let dir = '';
  let store: FileStore | undefined;
  afterEach(async () => {
    await store?.close();
    store = undefined;
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('counts the keys and values of get and list answers by key area', async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'weft-ops-'));
    store = await FileStore.open(dir);
    const m = new WeftMetrics();
    const s = new InstrumentedStore(store, m);
    const k1 = keys.endpoint(CID, 'e1');
    const k2 = keys.endpoint(CID, 'e2');
    await s.put(k1, 'abc');
    await s.put(k2, 'de');
    await s.list(keys.endpointsOf(CID));
    await s.get(k1);
    await s.get(keys.host('nobody'));
    await s.list('/weft/v1/');
    const p = parsePromText(await m.registry.expose());
    const both = k1.length + 3 + k2.length + 2;
    expect(promSum(p, 'weft_store_response_bytes_total', { op: 'list', area: 'endpoints' })).toBe(both);
    expect(promSum(p, 'weft_store_response_bytes_total', { op: 'get', area: 'endpoints' })).toBe(k1.length + 3);
    expect(promSum(p, 'weft_store_response_bytes_total', { op: 'get', area: 'hosts' })).toBe(0);
    expect(promSum(p, 'weft_store_response_bytes_total', { op: 'list', area: 'all' })).toBe(both);
    expect(areaOf('/elsewhere/x')).toBe('other');
    expect(areaOf(keys.subnets())).toBe('subnets');
  });
});

describe('/healthz', () => {
  let dir = '';
  let store: FileStore | undefined;
  afterEach(async () => {
    await store?.close();
    store = undefined;
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('is healthy when the store answers and unhealthy, with the reason, when the socket does not', async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'weft-ops-'));
    store = await FileStore.open(dir);
    const s = new InstrumentedStore(store);
    const h = await checkHealth({ socket: path.join(dir, 'none.sock'), store: s, hostName: 'h1', freshMs: 10_000, probeTimeoutMs: 500 });
    expect(h.ok).toBe(false);
    expect(h.store).toBe('ok');
    expect(h.socket).toBe('failing');
    expect(h.reason).toMatch(/plugin socket does not answer .*does not exist.*restart weft serve/);
  });

  it('reports a store that has not answered recently', async () => {
    const dead: Store = {
      description: 'etcd://192.0.2.1:2379',
      get: async () => { throw new StoreUnavailableError('etcd store unavailable: no answer'); },
      list: async () => { throw new Error('x'); }, txn: async () => { throw new Error('x'); }, put: async () => { throw new Error('x'); },
      delete: async () => { throw new Error('x'); }, watch: async () => { throw new Error('x'); }, grantLease: async () => { throw new Error('x'); },
      close: async () => undefined,
    };
    const h = await checkHealth({ socket: '/nonexistent.sock', store: new InstrumentedStore(dead), hostName: 'h1', freshMs: 10_000, probeTimeoutMs: 500 });
    expect(h.store).toBe('failing');
    expect(h.reason).toContain('the store etcd://192.0.2.1:2379 has not answered since weft started (etcd store unavailable: no answer): check that etcd is running');
  });

  it('parses --metrics-addr', () => {
    expect(parseHostPort('127.0.0.1:9464')).toEqual({ host: '127.0.0.1', port: 9464 });
    expect(parseHostPort('[::1]:9464')).toEqual({ host: '::1', port: 9464 });
    expect(() => parseHostPort('9464')).toThrow(/not HOST:PORT/);
  });
});

describe('probe', () => {
  it('builds a VXLAN packet with the I flag and the VNI', () => {
    const p = vxlanProbePacket(4095, 'abc');
    expect(p.length).toBe(8 + 14 + 46);
    expect(p[0]).toBe(0x08);
    expect(p.readUIntBE(4, 3)).toBe(4095);
    expect(p.subarray(8, 14).equals(Buffer.alloc(6, 0xff))).toBe(true);
    expect(p.readUInt16BE(20)).toBe(0x88b5);
  });
  it('accepts only well-formed requests for VNIs weft never uses for networks', () => {
    const req = (o: object) => Buffer.from(JSON.stringify(o));
    expect(parseRequest(req({ t: 'weft-probe', v: 1, id: 'ab12', vni: 77 }))).toEqual({ t: 'weft-probe', v: 1, id: 'ab12', vni: 77 });
    expect(parseRequest(req({ t: 'weft-probe', v: 1, id: 'ab12', vni: 4096 }))).toBeUndefined();
    expect(parseRequest(req({ t: 'weft-probe', v: 1, id: 'a b', vni: 7 }))).toBeUndefined();
    expect(parseRequest(Buffer.from('garbage'))).toBeUndefined();
    expect(parseRequest(Buffer.alloc(600, 0x20))).toBeUndefined();
  });
});
