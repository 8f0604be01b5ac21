// `weft host rm`, against a real FileStore in a temporary directory: it
// refuses while the host's lease is alive, releases every address, endpoint
// and binding the host holds (and nothing of anyone else), works in bounded
// transactions, and starts over when the records change under it.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Ipam } from '../../src/ipam/ipam';
import { executeHostRemoval, HostAliveError, describePlan, isEmptyPlan, planHostRemoval } from '../../src/ops/host-rm';
import { FileStore } from '../../src/store/file-store';
import { keys, ROOT } from '../../src/store/keys';

const NET = 'a1b2c3d4e5f6a1b2c3d4e5f6a1b2c3d4e5f6a1b2c3d4e5f6a1b2c3d4e5f6a1b2';
const GONE = 'f0e1d2c3b4a5f0e1d2c3b4a5f0e1d2c3b4a5f0e1d2c3b4a5f0e1d2c3b4a5f0e1';
const ep = (n: number) => n.toString(16).padStart(64, 'e');
const mac = (n: number) => `02:42:00:00:${((n >> 8) & 255).toString(16).padStart(2, '0')}:${(n & 255).toString(16).padStart(2, '0')}`;

let dir: string;
let store: FileStore;
const ipamOf = (host: string) => new Ipam(store, { host, defaultPool: '10.213.0.0/16', defaultPoolSize: 24 });

async function addNetwork(cid: string, subnet: string, vni: number, hosts: string[], extra: Record<string, unknown> = {}): Promise<string> {
  const { poolId } = await ipamOf(hosts[0]).requestPool({ pool: subnet });
  await ipamOf(hosts[0]).bindPool(poolId, cid, async () => cid);
  await store.put(keys.network(cid), JSON.stringify({ name: `n${vni}`, subnet, poolId, vni, mtu: 1450, options: {}, internal: false, createdBy: hosts[0], createdAt: new Date().toISOString(), ...extra }));
  await store.put(keys.vni(vni), JSON.stringify({ network: cid }));
  for (const h of hosts) await store.put(keys.binding(cid, h), JSON.stringify({ localId: `${h}-${cid.slice(0, 6)}` }));
  return poolId;
}

async function addEndpoint(cid: string, poolId: string, host: string, n: number): Promise<string> {
  const addr = await ipamOf(host).requestAddress(poolId, { mac: mac(n) });
  const ip = addr.split('/')[0];
  await store.put(keys.endpoint(cid, ep(n)), JSON.stringify({ host, vtep: `192.0.2.${host === 'h1' ? 11 : 13}`, ip, mac: mac(n), localNetwork: `${host}-x` }));
  return ip;
}

const countAddrs = async (host: string) => (await ipamOf('h1').addressesOfHost(host)).length;
const countKeys = async (prefix: string, host: string) =>
  (await store.list(prefix)).kvs.filter((kv) => kv.key.endsWith(`/${host}`) || (JSON.parse(kv.value) as { host?: string }).host === host).length;

beforeEach(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'weft-hostrm-'));
  store = await FileStore.open(dir);
});

afterEach(async () => {
  await store.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('weft host rm', () => {
  it('refuses while the host is registered under a live lease', async () => {
    const pool = await addNetwork(NET, '10.80.0.0/24', 5000, ['h1', 'h3']);
    await addEndpoint(NET, pool, 'h3', 1);
    const lease = await store.grantLease(5);
    await store.put(keys.host('h3'), JSON.stringify({ address: '192.0.2.13', version: '0.1.0', startedAt: '2026-01-01T00:00:00.000Z' }), lease.id);
    const err = await planHostRemoval(store, 'h3').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(HostAliveError);
    expect((err as Error).message).toContain('host h3 is alive: its weft (at 192.0.2.13, started 2026-01-01T00:00:00.000Z) keeps its lease');
    expect((err as Error).message).toContain('stop weft on h3 first and wait --lease-ttl seconds');
    expect(await countAddrs('h3')).toBe(1);
    // The lease goes (weft stopped, TTL passed): now it may be removed.
    await lease.revoke();
    expect(isEmptyPlan(await planHostRemoval(store, 'h3'))).toBe(false);
  });

  it('releases every address, endpoint and binding of the host, and nothing else', async () => {
    const pool = await addNetwork(NET, '10.80.0.0/24', 5000, ['h1', 'h3']);
    await ipamOf('h1').requestAddress(pool, { address: '10.80.0.200' }); // an --aux-address: belongs to the pool
    const keep = await addEndpoint(NET, pool, 'h1', 1);
    for (let n = 2; n <= 6; n++) await addEndpoint(NET, pool, 'h3', n);
    // an address without an endpoint (allocated, endpoint never made)
    await ipamOf('h3').requestAddress(pool, { mac: mac(99) });
    expect(await countAddrs('h3')).toBe(6);

    const plan = await planHostRemoval(store, 'h3');
    expect(plan.addresses).toHaveLength(6);
    expect(plan.endpoints).toHaveLength(5);
    expect(plan.bindings).toHaveLength(1);
    expect(describePlan(plan)).toBe('host h3 holds 6 addresses, 5 endpoints, 1 network binding (on 1 network)');

    const r = await executeHostRemoval(store, ipamOf('h1'), plan);
    expect(r).toMatchObject({ host: 'h3', addresses: 6, endpoints: 5, bindings: 1, networksRemoved: 0, transactions: 1 });
    expect(await countAddrs('h3')).toBe(0);
    expect(await countKeys(keys.endpoints(), 'h3')).toBe(0);
    expect(await countKeys(keys.bindings(), 'h3')).toBe(0);
    // h1's things stay
    expect((await ipamOf('h1').addressesOfHost('h1')).map((a) => a.ip)).toEqual([keep]);
    expect(await countKeys(keys.endpoints(), 'h1')).toBe(1);
    expect(await store.get(keys.binding(NET, 'h1'))).toBeDefined();
    expect(await store.get(keys.addr(pool, '10.80.0.200'))).toBeDefined();
    expect(await store.get(keys.network(NET))).toBeDefined();
    expect(isEmptyPlan(await planHostRemoval(store, 'h3'))).toBe(true);
  });

  it('finishes removing a network that waited only for this host', async () => {
    const p1 = await addNetwork(NET, '10.80.0.0/24', 5000, ['h1', 'h3']);
    const p2 = await addNetwork(GONE, '10.81.0.0/24', 5001, ['h3'], { deleting: true });
    await addEndpoint(GONE, p2, 'h3', 7);
    const plan = await planHostRemoval(store, 'h3');
    expect(plan.finishNetworks.map((n) => n.clusterId)).toEqual([GONE]);
    expect(describePlan(plan)).toContain('network n5001, removed elsewhere and kept only for this host, will be removed from the cluster');
    const r = await executeHostRemoval(store, ipamOf('h1'), plan);
    expect(r.networksRemoved).toBe(1);
    expect(await store.get(keys.network(GONE))).toBeUndefined();
    expect(await store.get(keys.vni(5001))).toBeUndefined();
    expect(await store.get(keys.pool(p2))).toBeUndefined();
    const subnets = JSON.parse((await store.get(keys.subnets()))!.value) as Record<string, string>;
    expect(subnets).toEqual({ [p1]: '10.80.0.0/24' });
    expect(await store.get(keys.network(NET))).toBeDefined();
  });

  it('works in transactions of at most 100 operations', async () => {
    const pool = await addNetwork(NET, '10.80.0.0/23', 5000, ['h1', 'h3']);
    for (let n = 1; n <= 130; n++) await addEndpoint(NET, pool, 'h3', n);
    const r = await executeHostRemoval(store, ipamOf('h1'), await planHostRemoval(store, 'h3'));
    // 130 addresses + 130 endpoints + 1 binding = 261 deletions
    expect(r).toMatchObject({ addresses: 130, endpoints: 130, bindings: 1, transactions: 3 });
    expect(await countAddrs('h3')).toBe(0);
    expect((await store.list(ROOT)).kvs.filter((kv) => kv.value.includes('"h3"'))).toEqual([]);
  });

  it('reads the plan again when a record changed after it was read', async () => {
    const pool = await addNetwork(NET, '10.80.0.0/24', 5000, ['h1', 'h3']);
    for (let n = 1; n <= 3; n++) await addEndpoint(NET, pool, 'h3', n);
    const plan = await planHostRemoval(store, 'h3');
    // a late write of the host (its weft flushed one more record before dying)
    const late = await addEndpoint(NET, pool, 'h3', 4);
    const kv = (await store.get(keys.endpoint(NET, ep(1))))!;
    await store.put(kv.key, kv.value);
    const r = await executeHostRemoval(store, ipamOf('h1'), plan);
    expect(r.transactions).toBe(2);
    expect(r.addresses).toBe(4);
    expect(await countAddrs('h3')).toBe(0);
    expect(await store.get(keys.addr(pool, late))).toBeUndefined();
  });

  it('stops when the host comes back in the meantime', async () => {
    const pool = await addNetwork(NET, '10.80.0.0/24', 5000, ['h1', 'h3']);
    await addEndpoint(NET, pool, 'h3', 1);
    const plan = await planHostRemoval(store, 'h3');
    await store.put(keys.host('h3'), JSON.stringify({ address: '192.0.2.13' }));
    await expect(executeHostRemoval(store, ipamOf('h1'), plan)).rejects.toBeInstanceOf(HostAliveError);
    expect(await countAddrs('h3')).toBe(1);
  });
});
