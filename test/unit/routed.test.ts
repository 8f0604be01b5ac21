// Routed mode's decisions without a kernel: the option, the refusals, the
// MACs every peer derives, and which peers a routed network reaches straight
// (hosts publishing this host's underlay segment: nothing to program) and
// which through VXLAN (a proxy entry, and a neighbour at their host's bridge).
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Agent } from '../../src/agent/agent';
import { loadConfig } from '../../src/config';
import { routedBridgeMac, routedMac } from '../../src/dataplane/names';
import type { DataPlaneApi, NetworkSpec, PeerState } from '../../src/dataplane/types';
import { Driver } from '../../src/driver/driver';
import { networkMode, parseNetworkOptions } from '../../src/driver/options';
import { Ipam } from '../../src/ipam/ipam';
import { FileStore } from '../../src/store/file-store';
import { keys } from '../../src/store/keys';
import { readHost } from '../../src/store/records';

/** Records the specs and the peers it is asked to program. */
class RecordingDataPlane implements DataPlaneApi {
  specs = new Map<string, NetworkSpec>();
  programmed = new Map<string, PeerState>();
  async ensureNetwork(spec: NetworkSpec) { this.specs.set(spec.id, spec); }
  async deleteNetwork() {}
  async createEndpoint() {}
  async deleteEndpoint() {}
  async programPeers(net: NetworkSpec, desired: PeerState) { this.programmed.set(net.id, desired); return { added: 0, removed: 0 }; }
  async changePeers(net: NetworkSpec, _from: PeerState, to: PeerState) { this.programmed.set(net.id, to); return { added: 0, removed: 0 }; }
  peerOps() { return { fdb: 0, neighbour: 0, route: 0 }; }
  announced: string[] = [];
  async announce(_n: NetworkSpec, ip: string, mac: string) { this.announced.push(`${ip} at ${mac}`); }
  async announceRouted(_n: NetworkSpec, ip: string, to: string[]) { this.announced.push(`${ip} at the routed link, to ${to.join(' ')}`); }
  async readPeers(): Promise<PeerState> { return { endpoints: [], floodVteps: [] }; }
  async underlayOf(address: string) { return address === '192.0.2.1' ? { link: 'eth0', cidr: '192.0.2.0/24', mtu: 1500 } : undefined; }
  async listNetworkIds() { return []; }
  close() {}
}

const NET = 'd'.repeat(64);
const log = pino({ level: 'silent' });
const ep = (n: number) => n.toString(16).padStart(64, '0');
let dir: string;
let store: FileStore;
let dp: RecordingDataPlane;
let driver: Driver;
let agent: Agent | undefined;

function newDriver(opts: { cluster?: boolean } = {}): Driver {
  const ipam = new Ipam(store, { host: 'h1', defaultPool: '10.213.0.0/16', defaultPoolSize: 24 });
  return new Driver(store, ipam, dp, {
    host: 'h1', cluster: opts.cluster ?? true, advertiseAddr: '192.0.2.1', runDir: path.join(dir, 'run'),
    defaultMtu: 1450, vxlanPort: 4789, driverName: 'weft', logger: log,
  });
}

beforeEach(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'weft-routed-'));
  store = await FileStore.open(path.join(dir, 'state'));
  dp = new RecordingDataPlane();
  driver = newDriver();
});
afterEach(async () => {
  await agent?.stop();
  agent = undefined;
  await store.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

const routedOpts = { 'com.docker.network.generic': { mode: 'routed' } };
const pool = [{ AddressSpace: 'weft', Pool: '10.40.0.0/24', Gateway: '10.40.0.1/24' }];

describe('routed mode: the option', () => {
  it('takes vxlan (the default) or routed, and refuses anything else with the choices', () => {
    expect(parseNetworkOptions({}).mode).toBe('vxlan');
    expect(parseNetworkOptions({ 'com.docker.network.generic': { mode: 'ROUTED' } }).mode).toBe('routed');
    expect(parseNetworkOptions({ 'com.docker.network.generic': { mode: 'vxlan' } }).mode).toBe('vxlan');
    expect(() => parseNetworkOptions({ 'com.docker.network.generic': { mode: 'host-gw' } })).toThrow(/-o mode=host-gw: expected vxlan .* or routed/);
    expect(networkMode({ mode: 'routed' })).toBe('routed');
    expect(networkMode({})).toBe('vxlan');
  });

  it('a routed network keeps mode=routed in its options (copies on other hosts are routed too) and gets a routed link', async () => {
    await new Ipam(store, { host: 'h1', defaultPool: '10.213.0.0/16', defaultPoolSize: 24 }).requestPool({ pool: '10.40.0.0/24' });
    await driver.createNetwork(NET, routedOpts, pool, []);
    const rec = JSON.parse((await store.get(keys.network(NET)))!.value);
    expect(rec.options.mode).toBe('routed');
    const spec = dp.specs.get(NET.slice(0, 10))!;
    expect(spec.vxlan).toBeDefined();
    expect(spec.routed).toEqual({
      name: `rt-${NET.slice(0, 10)}`, local: '192.0.2.1', mac: routedMac('192.0.2.1', rec.vni), bridgeMac: routedBridgeMac('192.0.2.1', rec.vni),
      gateway: '10.40.0.1', prefixLen: 24,
    });
  });

  it('is refused with encryption and without a cluster store, before anything is claimed', async () => {
    await expect(driver.createNetwork(NET, { 'com.docker.network.generic': { mode: 'routed', encrypted: '' } }, pool, []))
      .rejects.toThrow(/encrypt/);
    await expect(newDriver({ cluster: false }).createNetwork(NET, routedOpts, [{ AddressSpace: 'weft', Pool: '10.40.0.0/24', Gateway: '10.40.0.1/24' }], []))
      .rejects.toThrow(/routed networks span hosts/);
    expect(await store.get(keys.network(NET))).toBeUndefined();
  });

  it('routedMac and routedBridgeMac are stable, locally administered unicast MACs, distinct per host, per network and from each other', () => {
    const m = routedMac('192.0.2.11', 5000);
    expect(m).toMatch(/^06(:[0-9a-f]{2}){5}$/);
    expect(routedMac('192.0.2.11', 5000)).toBe(m);
    expect(routedMac('192.0.2.12', 5000)).not.toBe(m);
    expect(routedMac('192.0.2.11', 5001)).not.toBe(m);
    const b = routedBridgeMac('192.0.2.11', 5000);
    expect(b).toMatch(/^0a(:[0-9a-f]{2}){5}$/);
    expect(routedBridgeMac('192.0.2.11', 5000)).toBe(b);
    expect(routedBridgeMac('192.0.2.12', 5000)).not.toBe(b);
    expect(routedBridgeMac('192.0.2.11', 5001)).not.toBe(b);
  });

  it('a host record carries its underlay segment, checked at the edge', () => {
    expect(readHost(JSON.stringify({ address: '192.0.2.2', underlay: '192.0.2.0/24' })).ok).toBe(true);
    expect(readHost(JSON.stringify({ address: '192.0.2.2', underlay: 'eth0' })).ok).toBe(false);
  });
});

describe('routed mode: the path to each peer', () => {
  it('hosts on this segment need nothing; others get a proxy entry and a VXLAN neighbour at their bridge; local containers a route; no flood entries', async () => {
    await new Ipam(store, { host: 'h1', defaultPool: '10.213.0.0/16', defaultPoolSize: 24 }).requestPool({ pool: '10.40.0.0/24' });
    await driver.createNetwork(NET, routedOpts, pool, []);
    const vni = JSON.parse((await store.get(keys.network(NET)))!.value).vni;
    // h2 on this host's segment; h3 on another; h4 on this subnet's numbers but publishing no segment (older weft).
    await store.put(keys.host('h1'), JSON.stringify({ address: '192.0.2.1', version: 'x', startedAt: 'x', underlay: '192.0.2.0/24' }));
    await store.put(keys.host('h2'), JSON.stringify({ address: '192.0.2.2', version: 'x', startedAt: 'x', underlay: '192.0.2.0/24' }));
    await store.put(keys.host('h3'), JSON.stringify({ address: '198.51.100.3', version: 'x', startedAt: 'x', underlay: '198.51.100.0/24' }));
    await store.put(keys.host('h4'), JSON.stringify({ address: '192.0.2.4', version: 'x', startedAt: 'x' }));
    const put = (n: number, host: string, vtep: string) => store.put(keys.endpoint(NET, ep(n)),
      JSON.stringify({ host, vtep, ip: `10.40.0.${n}`, mac: `02:42:0a:28:00:${n.toString(16).padStart(2, '0')}`, localNetwork: 'l' }));
    await put(2, 'h2', '192.0.2.2');
    await put(3, 'h3', '198.51.100.3');
    await put(4, 'h4', '192.0.2.4');
    await put(5, 'h1', '192.0.2.1');
    await put(6, 'h2', '192.0.2.2');

    const cfg = loadConfig(['--store', 'etcd://127.0.0.1:1', '--host-name', 'h1', '--advertise-addr', '192.0.2.1',
      '--docker-host', 'unix:///nonexistent/docker.sock', '--run-dir', path.join(dir, 'run')], {});
    const a = new Agent({ store, networks: driver.networks, ipam: new Ipam(store, { host: 'h1', defaultPool: '10.213.0.0/16', defaultPoolSize: 24 }), dataplane: dp, cfg, logger: log });
    agent = a;
    await (a as unknown as { findUnderlay(): Promise<void> }).findUnderlay();
    expect(a.underlaySegment()).toBe('192.0.2.0/24');
    await (a as unknown as { sync(): Promise<void> }).sync();
    for (let i = 0; i < 100 && !a.view.synced; i++) await new Promise((r) => setTimeout(r, 10));
    const want = a.desiredPeers(NET);
    expect(want.routed).toEqual({ local: ['10.40.0.5'], proxies: ['10.40.0.3', '10.40.0.4'] });
    expect(want.endpoints.map((e) => `${e.ip}@${e.vtep} ${e.mac}`).sort()).toEqual([
      `10.40.0.3@198.51.100.3 ${routedBridgeMac('198.51.100.3', vni)}`, `10.40.0.4@192.0.2.4 ${routedBridgeMac('192.0.2.4', vni)}`,
    ]);
    expect(want.floodVteps).toEqual([]);
    expect(a.pathTo('h2', a.view.hosts.get('h2'))).toBe('routed');
    expect(a.pathTo('h3', a.view.hosts.get('h3'))).toBe('vxlan');
  });

  it('a VXLAN network is unchanged: every peer on VXLAN, with flood entries', async () => {
    await new Ipam(store, { host: 'h1', defaultPool: '10.213.0.0/16', defaultPoolSize: 24 }).requestPool({ pool: '10.40.0.0/24' });
    await driver.createNetwork(NET, {}, pool, []);
    await store.put(keys.host('h2'), JSON.stringify({ address: '192.0.2.2', version: 'x', startedAt: 'x', underlay: '192.0.2.0/24' }));
    await store.put(keys.endpoint(NET, ep(2)), JSON.stringify({ host: 'h2', vtep: '192.0.2.2', ip: '10.40.0.2', mac: '02:42:0a:28:00:02', localNetwork: 'l' }));
    const cfg = loadConfig(['--store', 'etcd://127.0.0.1:1', '--host-name', 'h1', '--advertise-addr', '192.0.2.1',
      '--docker-host', 'unix:///nonexistent/docker.sock', '--run-dir', path.join(dir, 'run')], {});
    const a = new Agent({ store, networks: driver.networks, ipam: new Ipam(store, { host: 'h1', defaultPool: '10.213.0.0/16', defaultPoolSize: 24 }), dataplane: dp, cfg, logger: log });
    agent = a;
    await (a as unknown as { findUnderlay(): Promise<void> }).findUnderlay();
    await (a as unknown as { sync(): Promise<void> }).sync();
    for (let i = 0; i < 100 && !a.view.synced; i++) await new Promise((r) => setTimeout(r, 10));
    const want = a.desiredPeers(NET);
    expect(want.routed).toBeUndefined();
    expect(want.endpoints.map((e) => e.ip)).toEqual(['10.40.0.2']);
    expect(want.floodVteps).toEqual(['192.0.2.2']);
  });

  it('a peer that moves to another segment is announced at the routed link\'s MAC to each local container; one that comes back, not from here', async () => {
    await new Ipam(store, { host: 'h1', defaultPool: '10.213.0.0/16', defaultPoolSize: 24 }).requestPool({ pool: '10.40.0.0/24' });
    await driver.createNetwork(NET, routedOpts, pool, []);
    // h2 on this segment; a local container c5.
    await store.put(keys.host('h2'), JSON.stringify({ address: '192.0.2.2', version: 'x', startedAt: 'x', underlay: '192.0.2.0/24' }));
    await store.put(keys.endpoint(NET, ep(2)), JSON.stringify({ host: 'h2', vtep: '192.0.2.2', ip: '10.40.0.2', mac: '02:42:0a:28:00:02', localNetwork: 'l' }));
    await store.put(keys.endpoint(NET, ep(5)), JSON.stringify({ host: 'h1', vtep: '192.0.2.1', ip: '10.40.0.5', mac: '02:42:0a:28:00:05', localNetwork: 'l' }));
    const cfg = loadConfig(['--store', 'etcd://127.0.0.1:1', '--host-name', 'h1', '--advertise-addr', '192.0.2.1',
      '--docker-host', 'unix:///nonexistent/docker.sock', '--run-dir', path.join(dir, 'run')], {});
    const a = new Agent({ store, networks: driver.networks, ipam: new Ipam(store, { host: 'h1', defaultPool: '10.213.0.0/16', defaultPoolSize: 24 }), dataplane: dp, cfg, logger: log });
    agent = a;
    await (a as unknown as { findUnderlay(): Promise<void> }).findUnderlay();
    await (a as unknown as { sync(): Promise<void> }).sync();
    const id = NET.slice(0, 10);
    const until = async (what: string, ok: () => boolean) => {
      for (let i = 0; i < 300 && !ok(); i++) await new Promise((r) => setTimeout(r, 10));
      expect(ok(), what).toBe(true);
    };
    await until('c5 routed locally', () => dp.programmed.get(id)?.routed?.local.includes('10.40.0.5') === true);
    expect(dp.programmed.get(id)!.routed!.proxies).toEqual([]);
    expect(dp.programmed.get(id)!.endpoints).toEqual([]);
    expect(dp.announced).toEqual([]);
    // h2 moved to another segment: c2 is behind the routed link now, and c5 is told so.
    await store.put(keys.host('h2'), JSON.stringify({ address: '192.0.2.2', version: 'x', startedAt: 'x', underlay: '192.0.2.0/25' }));
    await until('c2 proxied', () => dp.programmed.get(id)?.routed?.proxies.includes('10.40.0.2') === true);
    expect(dp.announced).toEqual(['10.40.0.2 at the routed link, to 02:42:0a:28:00:05']);
    // And back: nothing to program, and no announcement from here (c2's own interface announces it when it is made).
    await store.put(keys.host('h2'), JSON.stringify({ address: '192.0.2.2', version: 'x', startedAt: 'x', underlay: '192.0.2.0/24' }));
    await until('c2 straight again', () => dp.programmed.get(id)?.routed?.proxies.length === 0);
    expect(dp.programmed.get(id)!.endpoints).toEqual([]);
    expect(dp.announced).toEqual(['10.40.0.2 at the routed link, to 02:42:0a:28:00:05']);
  });
});
