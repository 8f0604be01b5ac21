// What the operator commands show of WireGuard, without a device: weft
// status's lines, weft hosts' and weft networks' columns, weft doctor's
// verdicts and the metrics.
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config';
import { parseNetworkOptions } from '../../src/driver/options';
import { ClusterView } from '../../src/ops/cluster';
import { renderHosts } from '../../src/ops/hosts';
import { Registry } from '../../src/ops/metrics';
import { renderNetworks } from '../../src/ops/networks';
import { renderStatus } from '../../src/ops/status';
import type { StatusReport } from '../../src/ops/types';
import { keys } from '../../src/store/keys';
import type { WireGuard, WireGuardStatus } from '../../src/wireguard';
import { generatePrivateKey } from '../../src/wireguard/keys';
import { hostEncryption, registerWireGuardMetrics, wireguardChecks } from '../../src/wireguard/ops';
import { wireguardLinkMtu } from '../../src/wireguard/serve-hooks';
import { parsePromText, promSum } from './prom-text';

const now = Date.parse('2026-01-01T00:03:00.000Z');
const K1 = generatePrivateKey().publicKey();
const K2 = generatePrivateKey().publicKey();
const K3 = generatePrivateKey().publicKey();
const KX = generatePrivateKey().publicKey();

function wg(over: Partial<WireGuardStatus> = {}): WireGuardStatus {
  return {
    ready: true, kind: 'userspace', implementation: 'wireguard-go v0.0.20220316 (userspace)', pid: 77, interface: 'wg-weft',
    netns: '/run/weft/wireguard/netns', listenPort: 51820, endpoint: '192.0.2.11:51820', tunnel: '198.51.100.7', subnet: '198.51.100.0/24',
    linkMtu: 1440, publicKey: K1, keyFile: '/var/lib/weft/wireguard/private.key', keyFileMode: '600',
    peers: [
      { host: 'h2', publicKey: K2, endpoint: '192.0.2.12:51820', tunnel: '198.51.100.8', lastHandshake: '2026-01-01T00:02:48.000Z', handshakeAgeSeconds: 12, up: true, rxBytes: 1536, txBytes: 3 * 1024 * 1024, expected: true },
      { publicKey: KX, up: false, rxBytes: 0, txBytes: 0, expected: false },
    ],
    missing: [{ host: 'h3', publicKey: K3 }],
    skipped: [],
    ...over,
  };
}

function report(): StatusReport {
  const peers = { programmed: 2, expected: 2, missing: [], extra: [], drift: 0 };
  return {
    host: 'h1', version: '0.3.0', pid: 42, startedAt: '2026-01-01T00:00:00.000Z', cluster: true, advertiseAddr: '192.0.2.11',
    store: { description: 'etcd://192.0.2.1:2379', reachable: true, latencyMs: 1.25 },
    lease: { alive: true, ttlSeconds: 10 },
    agent: { corrections: 0, peersProgrammed: 2, storeErrors: 0, synced: true, lastReconcile: '2026-01-01T00:02:50.000Z', reconcileMs: 12 },
    reconcileIntervalSeconds: 10,
    networks: [
      { clusterId: 'a'.repeat(64), localId: 'l1', name: 'sec', vni: 5000, subnet: '10.61.0.0/24', gateway: '10.61.0.1', mtu: 1390, encrypted: true, endpoints: [], peers },
      { clusterId: 'b'.repeat(64), localId: 'l2', name: 'plain', vni: 5001, subnet: '10.62.0.0/24', gateway: '10.62.0.1', mtu: 1450, endpoints: [], peers },
    ],
    drift: 0,
    wireguard: wg(),
  };
}

describe('weft status', () => {
  it('says which WireGuard runs, and per peer its handshake, bytes and state', () => {
    const text = renderStatus(report(), now);
    expect(text).toContain('wireguard  up: wireguard-go v0.0.20220316 (userspace), pid 77, interface wg-weft (tunnel 198.51.100.7, UDP 51820), key ');
    expect(text).toMatch(/1 peer, 1 with a live session; 1 missing \(h3\)\n/);
    expect(text).toMatch(/^NETWORK\s+ID\s+VNI\s+SUBNET\s+GATEWAY\s+MTU\s+ENDPOINTS\s+PEERS\s+EXPECTED\s+DRIFT\s+ENCRYPTED$/m);
    expect(text).toMatch(/^sec\s+a{12}\s+5000\s+10\.61\.0\.0\/24\s+10\.61\.0\.1\s+1390\s+0\s+2\s+2\s+0\s+yes$/m);
    expect(text).toMatch(/^plain\s+.*\s+no$/m);
    expect(text).toMatch(/^HOST\s+ENDPOINT\s+TUNNEL\s+HANDSHAKE\s+RX\s+TX\s+STATE$/m);
    expect(text).toMatch(/^h2\s+192\.0\.2\.12:51820\s+198\.51\.100\.8\s+12 s ago\s+1\.5 KiB\s+3\.0 MiB\s+up$/m);
    expect(text).toMatch(/^\(unknown \S+\.\.\.\)\s+-\s+-\s+never\s+0 B\s+0 B\s+stale$/m);
    expect(text).toMatch(/^h3\s+-\s+-\s+never\s+-\s+-\s+missing$/m);
    expect(text).not.toContain('private');
  });

  it('says so when WireGuard is down', () => {
    const r = report();
    r.wireguard = wg({ ready: false, error: 'wireguard-go exited (signal SIGKILL)' });
    expect(renderStatus(r, now)).toContain('wireguard  DOWN: wireguard-go exited (signal SIGKILL); ');
  });

  it('shows no encryption column where no network is encrypted', () => {
    const r = report();
    r.networks = r.networks.filter((n) => !n.encrypted);
    delete r.wireguard;
    const text = renderStatus(r, now);
    expect(text).not.toContain('ENCRYPTED');
    expect(text).not.toContain('wireguard');
  });
});

describe('weft hosts and weft networks', () => {
  const j = (o: unknown) => JSON.stringify(o);
  const rec = (i: number, key?: string) => j({ address: `192.0.2.1${i}`, version: '0.3.0', startedAt: '2026-01-01T00:00:00.000Z',
    ...(key ? { wg: { publicKey: key, endpoint: `192.0.2.1${i}:51820`, tunnel: `198.51.100.${i}`, implementation: 'userspace' } } : {}) });
  const view = new ClusterView([
    { key: keys.host('h1'), value: rec(1, K1) }, { key: keys.host('h2'), value: rec(2, K2) }, { key: keys.host('h3'), value: rec(3, K3) }, { key: keys.host('h4'), value: rec(4) },
    { key: keys.network('c'.repeat(64)), value: j({ name: 'sec', vni: 7, mtu: 1390, options: { encrypted: 'true' }, internal: false, createdBy: 'h1', createdAt: '2026-01-01T00:00:00Z', encrypted: true }) },
    { key: keys.network('d'.repeat(64)), value: j({ name: 'plain', vni: 8, mtu: 1450, options: {}, internal: false, createdBy: 'h1', createdAt: '2026-01-01T00:00:00Z' }) },
  ]);

  it('hosts: encryption per host as this host sees it', () => {
    const hosts = view.hosts().map((h) => ({ ...h, encryption: hostEncryption(h.name, view.hostRecords.get(h.name), 'h1', wg()) }));
    const text = renderHosts(hosts, now);
    expect(text.split('\n')[0]).toMatch(/^HOST\s+STATE\s+ADDRESS\s+VERSION\s+STARTED\s+NETWORKS\s+ENDPOINTS\s+ADDRESSES\s+ENCRYPTION\s+HANDSHAKE\s+RX\s+TX$/);
    expect(text).toMatch(/^h1\s+up\s+.*\s+this host\s+-\s+-\s+-$/m);
    expect(text).toMatch(/^h2\s+up\s+.*\s+up\s+12 s ago\s+1\.5 KiB\s+3\.0 MiB$/m);
    expect(text).toMatch(/^h3\s+up\s+.*\s+published\s+-\s+-\s+-$/m);
    expect(text).toMatch(/^h4\s+up\s+.*\s+none\s+-\s+-\s+-$/m);
    // without any WireGuard in the cluster, the table is as before
    const plain = renderHosts(view.hosts().map((h) => ({ ...h, encryption: { state: 'none' as const } })), now);
    expect(plain.split('\n')[0]).toBe('HOST  STATE  ADDRESS     VERSION  STARTED    NETWORKS  ENDPOINTS  ADDRESSES');
  });

  it('networks: an ENCRYPTED column when some network is', () => {
    const text = renderNetworks(view.networks());
    expect(text.split('\n')[0]).toMatch(/^NAME\s+ID\s+VNI\s+SUBNET\s+GATEWAY\s+MTU\s+HOSTS\s+ENDPOINTS\s+ENCRYPTED\s+STATE$/);
    expect(text).toMatch(/^sec\s+c{12}\s+7\s+-\s+-\s+1390\s+-\s+0\s+yes\s+ok$/m);
    expect(text).toMatch(/^plain\s+d{12}\s+8\s+-\s+-\s+1450\s+-\s+0\s+no\s+ok$/m);
  });
});

describe('weft doctor: wireguard', () => {
  const cfg = loadConfig(['--store', 'etcd://192.0.2.1:2379', '--advertise-addr', '192.0.2.11', '--wireguard-go', '/nonexistent/wireguard-go'], {});

  it('reports the implementation, the key file, the encrypted MTU and every peer', async () => {
    const checks = await wireguardChecks(cfg, true, wg(), undefined, [{ name: 'sec', mtu: 1390 }]);
    const by = (n: string) => checks.filter((c) => c.name === n);
    expect(by('wireguard')[0]).toMatchObject({ state: 'ok' });
    expect(by('wireguard')[0].detail).toMatch(/^wireguard-go v0\.0\.20220316 \(userspace\) \(pid 77\): interface wg-weft up in \/run\/weft\/wireguard\/netns, tunnel 198\.51\.100\.7, UDP 51820/);
    expect(by('wg key')[0]).toMatchObject({ state: 'ok' });
    expect(by('wg mtu')[0].detail).toMatch(/default MTU 1390 \(--mtu 1450 minus 60 bytes of WireGuard over IPv4; 80 over IPv6\); WireGuard interface MTU 1440; underlay packets up to 1500 bytes/);
    expect(by('wg peer').map((c) => c.state)).toEqual(['ok', 'fail']);
    expect(by('wg peer')[1].detail).toMatch(/^h3 publishes key \S+ but is not on this host's WireGuard/);
  });

  it('fails a key file others can read, a peer without a session, WireGuard down, and no WireGuard at all', async () => {
    const bad = wg({ keyFileMode: '644', ready: false, error: 'wireguard-go exited', missing: [],
      peers: [{ host: 'h2', publicKey: K2, endpoint: '192.0.2.12:51820', up: false, rxBytes: 0, txBytes: 0, expected: true }] });
    const checks = await wireguardChecks(cfg, true, bad, undefined, [{ name: 'sec', mtu: 1390 }]);
    expect(checks.find((c) => c.name === 'wireguard')).toMatchObject({ state: 'fail' });
    expect(checks.find((c) => c.name === 'wg key')?.fix).toMatch(/chmod 600 .*weft host rotate-key/);
    expect(checks.find((c) => c.name === 'wg peer')?.fix).toMatch(/UDP 51820 must pass between this host and h2 in both directions/);
    const none = await wireguardChecks(cfg, true, new Error('cannot reach the local weft'), undefined, [{ name: 'sec', mtu: 1390 }]);
    expect(none[0]).toMatchObject({ state: 'fail' });
    expect(none[0].fix).toMatch(/apt-get install wireguard-go/);
    // no encrypted network in the cluster: only a warning
    expect((await wireguardChecks(cfg, true, new Error('cannot reach the local weft'), undefined, []))[0].state).toBe('warn');
    expect((await wireguardChecks(cfg, false, undefined, undefined, []))[0].state).toBe('skip');
    const off = loadConfig(['--store', 'etcd://192.0.2.1:2379', '--encryption', 'off'], {}, { requireAdvertiseAddr: false });
    expect((await wireguardChecks(off, true, undefined, undefined, [{ name: 'sec', mtu: 1390 }]))[0]).toMatchObject({ state: 'fail', fix: expect.stringMatching(/--encryption on-request/) });
  });
});

describe('settings and options', () => {
  it('the WireGuard interface MTU leaves room for WireGuard over an IPv4 underlay', () => {
    expect(wireguardLinkMtu({ mtu: 1450 })).toBe(1440);
    expect(wireguardLinkMtu({ mtu: 8950 })).toBe(8940);
  });

  it('refuses unusable settings with what to do', () => {
    const base = ['--store', 'etcd://192.0.2.1:2379', '--advertise-addr', '192.0.2.11'];
    expect(() => loadConfig([...base, '--encryption', 'maybe'], {})).toThrow(/encryption must be on-request, all or off/);
    expect(() => loadConfig([...base, '--wireguard', 'fast'], {})).toThrow(/wireguard must be auto, kernel or userspace/);
    expect(() => loadConfig([...base, '--wg-interface', 'a-name-far-too-long'], {})).toThrow(/1 to 15/);
    expect(() => loadConfig([...base, '--wg-subnet', '100.64.0.1/16'], {})).toThrow(/host bits set/);
    expect(() => loadConfig([...base, '--wg-port', '4789'], {})).toThrow(/wg-port 4789 is also --vxlan-port/);
    expect(loadConfig(base, {})).toMatchObject({ encryption: 'on-request', wireguard: 'auto', wgInterface: 'wg-weft', wgPort: 51820, wgSubnet: '100.64.0.0/16' });
  });

  it('-o encrypted as Docker spells it', () => {
    const o = (v: string) => parseNetworkOptions({ 'com.docker.network.generic': { encrypted: v } });
    expect(o('').encrypted).toBe(true);
    expect(o('true').encrypted).toBe(true);
    expect(o('false').encrypted).toBe(false);
    expect(parseNetworkOptions({}).encrypted).toBeUndefined();
    expect(() => o('sometimes')).toThrow(/invalid option -o encrypted=sometimes: expected nothing \(--opt encrypted\), true or false/);
  });
});

describe('metrics', () => {
  it('per peer: session, handshake age, bytes; the implementation', async () => {
    const registry = new Registry();
    const fake = { status: async () => wg(), stats: { restarts: 1, peerChanges: 0, corrections: 0 } } as unknown as WireGuard;
    registerWireGuardMetrics(registry, () => fake);
    const p = parsePromText(await registry.expose());
    expect(promSum(p, 'weft_wireguard_up')).toBe(1);
    expect(promSum(p, 'weft_wireguard_info', { implementation: 'wireguard-go v0.0.20220316 (userspace)', interface: 'wg-weft' })).toBe(1);
    expect(promSum(p, 'weft_wireguard_peer_up', { peer: 'h2' })).toBe(1);
    expect(promSum(p, 'weft_wireguard_peer_handshake_age_seconds', { peer: 'h2' })).toBe(12);
    expect(promSum(p, 'weft_wireguard_peer_bytes_total', { peer: 'h2', direction: 'tx' })).toBe(3 * 1024 * 1024);
    expect(promSum(p, 'weft_wireguard_restarts_total')).toBe(1);
  });
});
