// The agent's peer decisions, on the embedded store with a recording data
// plane (no kernel): which remote endpoints each network programs when the
// store holds invalid records, and when a host's registration is gone while
// the host itself still answers over the underlay (or does not).
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { Agent } from '../../src/agent/agent';
import { loadConfig } from '../../src/config';
import { DataPlaneApi, EndpointSpec, NetworkSpec, PeerState } from '../../src/dataplane/types';
import { Driver } from '../../src/driver/driver';
import { Ipam } from '../../src/ipam/ipam';
import { FileStore } from '../../src/store/file-store';
import { HostRecord, keys } from '../../src/store/keys';
import type { WireGuard } from '../../src/wireguard';

const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;
const MAC = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;

/** Records what it is asked to program; like the kernel, it refuses an entry it cannot program (and with it the whole call). */
class StrictDataPlane implements DataPlaneApi {
  programmed = new Map<string, PeerState>();
  calls = 0;
  /** What the next full compare "finds" wrong in the kernel and repairs. */
  repair = 0;
  /** Like the kernel after the first time: the objects are there, nothing made anew. */
  async ensureNetwork() { return false; }
  async deleteNetwork() {}
  async createEndpoint(_n: NetworkSpec, _e: EndpointSpec) {}
  async deleteEndpoint() {}
  async programPeers(net: NetworkSpec, desired: PeerState) {
    this.calls++;
    for (const ep of desired.endpoints) {
      if (!IPV4.test(ep.ip) || !IPV4.test(ep.vtep) || !MAC.test(String(ep.mac).toLowerCase())) throw new Error(`invalid remote endpoint ${JSON.stringify(ep)}`);
    }
    this.programmed.set(net.id, { endpoints: [...desired.endpoints], floodVteps: [...desired.floodVteps] });
    const added = this.repair;
    this.repair = 0;
    return { added, removed: 0 };
  }
  changes = 0;
  ops = { fdb: 0, neighbour: 0 };
  async changePeers(net: NetworkSpec, from: PeerState, to: PeerState) {
    this.changes++;
    for (const ep of to.endpoints) {
      if (!IPV4.test(ep.ip) || !IPV4.test(ep.vtep) || !MAC.test(String(ep.mac).toLowerCase())) throw new Error(`invalid remote endpoint ${JSON.stringify(ep)}`);
    }
    // what the kernel would be asked: entries of `to` not in `from`, and the reverse
    const fdb = (p: PeerState) => new Set([...p.endpoints.map((e) => `${e.mac}|${e.vtep}`), ...p.floodVteps.map((v) => `0|${v}`)]);
    const neigh = (p: PeerState) => new Set(p.endpoints.map((e) => `${e.ip}|${e.mac}`));
    const moved = (a: Set<string>, b: Set<string>) => [...a].filter((k) => !b.has(k)).length + [...b].filter((k) => !a.has(k)).length;
    this.ops.fdb += moved(fdb(from), fdb(to));
    this.ops.neighbour += moved(neigh(from), neigh(to));
    this.programmed.set(net.id, { endpoints: [...to.endpoints], floodVteps: [...to.floodVteps] });
    return { added: 0, removed: 0 };
  }
  peerOps() { return { ...this.ops, route: 0 }; }
  async announce() {}
  async readPeers(): Promise<PeerState> { return { endpoints: [], floodVteps: [] }; }
  async underlayOf() { return undefined; }
  async listNetworkIds() { return []; }
  close() {}
}

const NET = 'c'.repeat(64);
const ep = (n: number) => n.toString(16).padStart(64, '0');
const log = pino({ level: 'silent' });

let dir: string;
let store: FileStore;
let dp: StrictDataPlane;
let driver: Driver;
let agent: Agent | undefined;
let answers: Map<string, string>;

async function setUp(): Promise<void> {
  const ipam = new Ipam(store, { host: 'h1', defaultPool: '10.213.0.0/16', defaultPoolSize: 24 });
  driver = new Driver(store, ipam, dp, {
    host: 'h1', cluster: true, advertiseAddr: '192.0.2.1', runDir: path.join(dir, 'run'),
    defaultMtu: 1450, vxlanPort: 4789, driverName: 'weft', logger: log,
  });
  await ipam.requestPool({ pool: '10.40.0.0/24' });
  await driver.createNetwork(NET, {}, [{ AddressSpace: 'weft', Pool: '10.40.0.0/24', Gateway: '10.40.0.1/24' }], []);
}

function startAgent(extra: string[] = [], wireguard?: WireGuard): Agent {
  const cfg = loadConfig(['--store', 'etcd://127.0.0.1:1', '--host-name', 'h1', '--advertise-addr', '192.0.2.1',
    '--docker-host', 'unix:///nonexistent/docker.sock', '--peer-timeout', '1', '--run-dir', path.join(dir, 'run'), ...extra], {});
  const a = new Agent({
    store, networks: driver.networks, ipam: new Ipam(store, { host: 'h1', defaultPool: '10.213.0.0/16', defaultPoolSize: 24 }), dataplane: dp, cfg, logger: log,
    // A fake underlay: the weft at an address answers with the host name in `answers`, or not at all.
    ask: async (address) => (answers.has(address) ? { host: answers.get(address)! } : undefined),
    ...(wireguard ? { wireguard } : {}),
  });
  // The mirror only (list + watch), without registration or the periodic reconcile.
  void (a as unknown as { sync(): Promise<void> }).sync();
  agent = a;
  return a;
}

let watched = NET;
const programmedIps = () => (dp.programmed.get(watched.slice(0, 10))?.endpoints ?? []).map((e) => e.ip).sort();

const BIG = 'b'.repeat(64);
/** A second network, 10.41.0.0/16, with 5,000 endpoints of host h2 (written in transactions of 100). */
async function setUpBig(): Promise<void> {
  const ipam = new Ipam(store, { host: 'h1', defaultPool: '10.213.0.0/16', defaultPoolSize: 24 });
  await ipam.requestPool({ pool: '10.41.0.0/16' });
  await driver.createNetwork(BIG, {}, [{ AddressSpace: 'weft', Pool: '10.41.0.0/16', Gateway: '10.41.0.1/16' }], []);
  for (let b = 0; b < 50; b++) {
    const ops = [];
    for (let i = 0; i < 100; i++) {
      const n = b * 100 + i + 2;
      const mac = `02:42:0a:29:${(n >> 8).toString(16).padStart(2, '0')}:${(n & 255).toString(16).padStart(2, '0')}`;
      ops.push({ type: 'put' as const, key: keys.endpoint(BIG, ep(n)), value: JSON.stringify({ host: 'h2', vtep: '192.0.2.2', ip: `10.41.${n >> 8}.${n & 255}`, mac, localNetwork: 'l' }) });
    }
    await store.txn([], ops);
  }
  watched = BIG;
}

beforeEach(async () => {
  watched = NET;
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'weft-agent-'));
  store = await FileStore.open(path.join(dir, 'state'));
  dp = new StrictDataPlane();
  answers = new Map();
  await setUp();
});
afterEach(async () => {
  await agent?.stop();
  agent = undefined;
  await store.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('agent: peers programmed per change', () => {
  it('a new endpoint in a network of 5,000 is one FDB and one neighbour operation, with no read of the kernel', async () => {
    await store.put(keys.host('h2'), JSON.stringify({ address: '192.0.2.2', version: '0.1.0', startedAt: 'x' }));
    await setUpBig();
    const a = startAgent(['--peer-audit-interval', '1']);
    await vi.waitFor(() => expect(programmedIps().length).toBe(5000), { timeout: 20_000 });
    const full = dp.calls;
    const before = dp.peerOps();
    await store.put(keys.endpoint(BIG, ep(99999)), JSON.stringify({ host: 'h2', vtep: '192.0.2.2', ip: '10.41.200.1', mac: '02:42:0a:29:c8:01', localNetwork: 'l' }));
    await vi.waitFor(() => expect(programmedIps().length).toBe(5001), { timeout: 10_000 });
    expect(dp.calls).toBe(full); // no full compare (a dump of the kernel's tables)
    expect(dp.peerOps()).toEqual({ fdb: before.fdb + 1, neighbour: before.neighbour + 1, route: 0 });
    await store.delete(keys.endpoint(BIG, ep(99999)));
    await vi.waitFor(() => expect(programmedIps().length).toBe(5000), { timeout: 10_000 });
    expect(dp.peerOps()).toEqual({ fdb: before.fdb + 2, neighbour: before.neighbour + 2, route: 0 });
    expect(dp.calls).toBe(full);
    // the reconcile compares with the kernel, once --peer-audit-interval has passed
    await new Promise((r) => setTimeout(r, 1100));
    await a.reconcile().catch(() => undefined);
    expect(dp.calls).toBeGreaterThan(full);
  }, 60_000);
});

describe('agent: what /metrics reports of the peers', () => {
  it('programmed and expected from its bookkeeping, drift from what the last full compare repaired', async () => {
    await store.put(keys.host('h2'), JSON.stringify({ address: '192.0.2.2', version: '0.1.0', startedAt: 'x' }));
    await store.put(keys.endpoint(NET, ep(7)), JSON.stringify({ host: 'h2', vtep: '192.0.2.2', ip: '10.40.0.7', mac: '02:42:0a:28:00:07', localNetwork: 'l' }));
    const a = startAgent(['--peer-audit-interval', '1']);
    await vi.waitFor(() => expect(programmedIps()).toEqual(['10.40.0.7']), { timeout: 10_000 });
    // one endpoint and one flood entry
    expect(a.peerReport()).toEqual([{ clusterId: NET, programmed: 2, expected: 2, drift: 0 }]);
    dp.repair = 3;
    const waitAudit = () => new Promise((r) => setTimeout(r, 1100));
    await waitAudit();
    await a.reconcile().catch(() => undefined);
    expect(a.peerReport()).toEqual([{ clusterId: NET, programmed: 2, expected: 2, drift: 3 }]);
    await waitAudit();
    await a.reconcile().catch(() => undefined);
    expect(a.peerReport()[0]!.drift).toBe(0);
  }, 30_000);

  it('reads the tables back from the kernel only every --peer-audit-interval; reconciles in between program from memory', async () => {
    await store.put(keys.host('h2'), JSON.stringify({ address: '192.0.2.2', version: '0.1.0', startedAt: 'x' }));
    await store.put(keys.endpoint(NET, ep(7)), JSON.stringify({ host: 'h2', vtep: '192.0.2.2', ip: '10.40.0.7', mac: '02:42:0a:28:00:07', localNetwork: 'l' }));
    const a = startAgent(['--peer-audit-interval', '3600']);
    await vi.waitFor(() => expect(programmedIps()).toEqual(['10.40.0.7']), { timeout: 10_000 });
    const reads = dp.calls;
    for (let i = 0; i < 3; i++) await a.reconcile().catch(() => undefined);
    expect(dp.calls).toBe(reads);
    expect(programmedIps()).toEqual(['10.40.0.7']);
  }, 30_000);
});

describe('agent: invalid records', () => {
  it('skips (and counts once) every invalid endpoint record; the valid ones are programmed', async () => {
    await store.put(keys.host('h2'), JSON.stringify({ address: '192.0.2.2', version: '0.1.0', startedAt: 'x' }));
    const good = (ip: string, mac: string) => JSON.stringify({ host: 'h2', vtep: '192.0.2.2', ip, mac, localNetwork: 'l' });
    await store.put(keys.endpoint(NET, ep(1)), good('10.40.0.2', '02:42:0a:28:00:02'));
    await store.put(keys.endpoint(NET, ep(2)), good('10.40.0.3', '02:42:0a:28:00:03'));
    // what etcdctl put can write
    await store.put(keys.endpoint(NET, ep(3)), good('not-an-ip', '02:42:0a:28:00:04'));
    await store.put(keys.endpoint(NET, ep(4)), good('2001:db8::1', '02:42:0a:28:00:05'));
    await store.put(keys.endpoint(NET, ep(5)), good('10.99.0.5', '02:42:0a:28:00:06')); // outside 10.40.0.0/24
    await store.put(keys.endpoint(NET, ep(6)), good('10.40.0.7', 'zz:zz'));
    await store.put(keys.endpoint(NET, ep(7)), '{"host": "h2", "ip": ');
    await store.put(keys.endpoint(NET, ep(8)), JSON.stringify({ host: 'h2', vtep: 'nowhere', ip: '10.40.0.9', mac: '02:42:0a:28:00:09' }));
    const a = startAgent();
    await vi.waitFor(() => expect(programmedIps()).toEqual(['10.40.0.2', '10.40.0.3']), { timeout: 10_000 });
    expect(a.stats.invalidRecords).toBe(6);
    // a new valid endpoint still gets programmed next to them; the bad ones are not counted again
    await store.put(keys.endpoint(NET, ep(9)), good('10.40.0.10', '02:42:0a:28:00:0a'));
    await vi.waitFor(() => expect(programmedIps()).toEqual(['10.40.0.10', '10.40.0.2', '10.40.0.3']), { timeout: 10_000 });
    expect(a.stats.invalidRecords).toBe(6);
    // an unreadable host record: the host is not taken for registered with a bogus address
    await store.put(keys.host('h2'), '{"address": 42}');
    answers.set('192.0.2.2', 'h2');
    await vi.waitFor(() => expect(a.stats.invalidRecords).toBe(7), { timeout: 10_000 });
    expect(dp.programmed.get(NET.slice(0, 10))!.floodVteps).toEqual(['192.0.2.2']);
  });

  it('an unreadable network record neither stops the agent nor counts as a removed network', async () => {
    await store.put(keys.network(NET), '{"vni": "many"}');
    const a = startAgent();
    await vi.waitFor(() => expect(a.stats.invalidRecords).toBe(1), { timeout: 10_000 });
    expect(a.stats.synced).toBe(true);
  });
});

describe('agent: a host whose registration is gone', () => {
  async function twoHosts(): Promise<Agent> {
    await store.put(keys.host('h2'), JSON.stringify({ address: '192.0.2.2', version: '0.1.0', startedAt: 'x' }));
    await store.put(keys.host('h3'), JSON.stringify({ address: '192.0.2.3', version: '0.1.0', startedAt: 'x' }));
    await store.put(keys.endpoint(NET, ep(1)), JSON.stringify({ host: 'h2', vtep: '192.0.2.2', ip: '10.40.0.2', mac: '02:42:0a:28:00:02' }));
    await store.put(keys.endpoint(NET, ep(2)), JSON.stringify({ host: 'h3', vtep: '192.0.2.3', ip: '10.40.0.3', mac: '02:42:0a:28:00:03' }));
    const a = startAgent();
    await vi.waitFor(() => expect(programmedIps()).toEqual(['10.40.0.2', '10.40.0.3']), { timeout: 10_000 });
    return a;
  }

  it('stays in the tables while it answers probes over the underlay, as itself', async () => {
    const a = await twoHosts();
    answers.set('192.0.2.3', 'h3');
    await store.delete(keys.host('h3')); // its lease expired: cut off from the store
    await vi.waitFor(() => expect(a.liveness.report().some((s) => s.host === 'h3' && s.lastAnswer)).toBe(true), { timeout: 10_000 });
    // until it has been without registration for twice --peer-timeout (1 s), answering all along
    await vi.waitFor(() => {
      const s = a.liveness.report().find((x) => x.host === 'h3');
      expect(s?.lastAnswer && Date.parse(s.lastAnswer) - Date.parse(s.since)).toBeGreaterThan(2000);
    }, { timeout: 15_000 });
    expect(a.liveness.keeps('h3')).toBe(true);
    expect(programmedIps()).toEqual(['10.40.0.2', '10.40.0.3']);
    expect(dp.programmed.get(NET.slice(0, 10))!.floodVteps).toEqual(['192.0.2.2', '192.0.2.3']);
    // it comes back to the store: no longer a suspect
    await store.put(keys.host('h3'), JSON.stringify({ address: '192.0.2.3', version: '0.1.0', startedAt: 'y' }));
    await vi.waitFor(() => expect(a.liveness.report()).toEqual([]), { timeout: 10_000 });
    expect(programmedIps()).toEqual(['10.40.0.2', '10.40.0.3']);
  });

  it("[wireguard] its peer stays on the device all along while it answers (never taken out and put back at its lease's expiry), and leaves once it is gone", async () => {
    // WireGuard's side of the agent: the hosts it is told to keep peers with, call by call
    const told: string[][] = [];
    const wg = { setHosts: async (h: Map<string, HostRecord>) => { told.push([...h.keys()].sort()); return 0; } } as unknown as WireGuard;
    await store.put(keys.host('h2'), JSON.stringify({ address: '192.0.2.2', version: '0.1.0', startedAt: 'x' }));
    await store.put(keys.host('h3'), JSON.stringify({ address: '192.0.2.3', version: '0.1.0', startedAt: 'x' }));
    await store.put(keys.endpoint(NET, ep(1)), JSON.stringify({ host: 'h2', vtep: '192.0.2.2', ip: '10.40.0.2', mac: '02:42:0a:28:00:02' }));
    await store.put(keys.endpoint(NET, ep(2)), JSON.stringify({ host: 'h3', vtep: '192.0.2.3', ip: '10.40.0.3', mac: '02:42:0a:28:00:03' }));
    const a = startAgent([], wg);
    await vi.waitFor(() => expect(told.at(-1)).toEqual(['h2', 'h3']), { timeout: 10_000 });
    const before = told.length;
    answers.set('192.0.2.3', 'h3');
    await store.delete(keys.host('h3')); // its lease expired: cut off from the store, still there
    await vi.waitFor(() => expect(a.liveness.report().some((s) => s.host === 'h3' && s.lastAnswer)).toBe(true), { timeout: 10_000 });
    expect(told.length).toBeGreaterThan(before); // the change was seen and WireGuard told
    expect(told.slice(before).filter((h) => !h.includes('h3'))).toEqual([]);
    // it stops answering: gone after --peer-timeout, and then out of WireGuard's peers
    answers.delete('192.0.2.3');
    await vi.waitFor(() => expect(a.liveness.goneHosts()).toEqual(['h3']), { timeout: 15_000 });
    await vi.waitFor(() => expect(told.at(-1)).toEqual(['h2']), { timeout: 10_000 });
  });

  it('leaves the tables once it has not answered for --peer-timeout; an answer from another host name does not count', async () => {
    const a = await twoHosts();
    answers.set('192.0.2.3', 'someone-else'); // its address now belongs to another weft
    await store.delete(keys.host('h3'));
    await vi.waitFor(() => expect(programmedIps()).toEqual(['10.40.0.2']), { timeout: 15_000 });
    expect(a.liveness.goneHosts()).toEqual(['h3']);
    expect(dp.programmed.get(NET.slice(0, 10))!.floodVteps).toEqual(['192.0.2.2']);
    // registered again: back in
    await store.put(keys.host('h3'), JSON.stringify({ address: '192.0.2.3', version: '0.1.0', startedAt: 'y' }));
    await vi.waitFor(() => expect(programmedIps()).toEqual(['10.40.0.2', '10.40.0.3']), { timeout: 10_000 });
    expect(a.liveness.goneHosts()).toEqual([]);
  });
});
