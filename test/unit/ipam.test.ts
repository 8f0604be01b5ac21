// IPAM against the real embedded store in a temp dir (no kernel, no Docker).
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { WeftError } from '../../src/errors';
import { Ipam } from '../../src/ipam/ipam';
import { FileStore } from '../../src/store/file-store';
import { keys } from '../../src/store/keys';

let dir: string;
let store: FileStore;
const ipamFor = (host: string) => new Ipam(store, { host, defaultPool: '10.213.0.0/16', defaultPoolSize: 24 });

beforeEach(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'weft-ipam-'));
  store = await FileStore.open(dir);
});
afterEach(async () => {
  await store.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

async function code(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    expect(e).toBeInstanceOf(WeftError);
    return (e as WeftError).code;
  }
  throw new Error('expected an error');
}

describe('pools', () => {
  it('returns the same PoolID for the same subnet (replay, other hosts)', async () => {
    const ipam = ipamFor('h1');
    const a = await ipam.requestPool({ pool: '10.40.0.0/24' });
    const b = await ipamFor('h2').requestPool({ pool: '10.40.0.0/24' });
    expect(a).toEqual({ poolId: '10.40.0.0_24', pool: '10.40.0.0/24' });
    expect(b).toEqual(a);
  });

  it('refuses a subnet overlapping an existing pool, naming it', async () => {
    const ipam = ipamFor('h1');
    await ipam.requestPool({ pool: '10.40.0.0/24' });
    await expect(ipam.requestPool({ pool: '10.40.0.0/25' })).rejects.toThrow(/10\.40\.0\.0\/25 overlaps 10\.40\.0\.0\/24/);
    await expect(ipam.requestPool({ pool: '10.0.0.0/8' })).rejects.toThrow(/overlaps/);
  });

  it('rejects malformed subnets with a message naming the value', async () => {
    const ipam = ipamFor('h1');
    await expect(ipam.requestPool({ pool: '10.40.0.5/24' })).rejects.toThrow(/host bits are set; did you mean 10\.40\.0\.0\/24/);
    expect(await code(ipam.requestPool({ pool: 'banana' }))).toBe('WEFT_BAD_SUBNET');
    expect(await code(ipam.requestPool({ pool: '10.40.0.0/33' }))).toBe('WEFT_BAD_SUBNET');
    expect(await code(ipam.requestPool({ pool: '300.1.1.0/24' }))).toBe('WEFT_BAD_SUBNET');
    expect(await code(ipam.requestPool({ pool: '10.40.0.0/31' }))).toBe('WEFT_BAD_SUBNET');
    expect(await code(ipam.requestPool({ pool: '10.40.0.0/24', subPool: '10.41.0.0/25' }))).toBe('WEFT_BAD_IP_RANGE');
    expect(await code(ipam.requestPool({ pool: '10.40.0.0/24', v6: true }))).toBe('WEFT_BAD_SUBNET');
  });

  it('carves distinct default subnets, skipping used ones', async () => {
    const ipam = ipamFor('h1');
    await ipam.requestPool({ pool: '10.213.1.0/24' });
    const a = await ipam.requestPool({});
    const b = await ipam.requestPool({});
    const c = await ipam.requestPool({});
    expect(a.pool).toBe('10.213.0.0/24');
    expect(b.pool).toBe('10.213.2.0/24');
    expect(c.pool).toBe('10.213.3.0/24');
  });

  it('reports an exhausted default range', async () => {
    const ipam = new Ipam(store, { host: 'h1', defaultPool: '10.213.0.0/23', defaultPoolSize: 24 });
    await ipam.requestPool({});
    await ipam.requestPool({});
    expect(await code(ipam.requestPool({}))).toBe('WEFT_NO_FREE_SUBNET');
  });

  it('releases an unbound pool, keeps a bound one until deletePool', async () => {
    const ipam = ipamFor('h1');
    const { poolId } = await ipam.requestPool({ pool: '10.40.0.0/24' });
    await ipam.releasePool(poolId);
    expect(await store.get(keys.pool(poolId))).toBeUndefined();
    await ipam.requestPool({ pool: '10.40.0.0/24' });
    await ipam.bindPool(poolId, 'net1', async (o) => o);
    await ipam.releasePool(poolId);
    expect(await store.get(keys.pool(poolId))).toBeDefined();
    await expect(ipam.bindPool(poolId, 'net2', async () => 'app')).rejects.toThrow(/already used by weft network app/);
    await ipam.deletePool(poolId);
    expect(await store.get(keys.pool(poolId))).toBeUndefined();
    // the subnet is free again
    await ipam.requestPool({ pool: '10.40.0.0/25' });
  });
});

describe('addresses', () => {
  it('hands out the gateway first, then consecutive addresses', async () => {
    const ipam = ipamFor('h1');
    const { poolId } = await ipam.requestPool({ pool: '10.40.0.0/24' });
    expect(await ipam.requestAddress(poolId, { gateway: true })).toBe('10.40.0.1/24');
    // every host repeats the gateway request: same answer
    expect(await ipamFor('h2').requestAddress(poolId, { gateway: true })).toBe('10.40.0.1/24');
    expect(await ipam.requestAddress(poolId, { mac: '02:00:00:00:00:01' })).toBe('10.40.0.2/24');
    expect(await ipam.requestAddress(poolId, { mac: '02:00:00:00:00:02' })).toBe('10.40.0.3/24');
  });

  it('honours --gateway and refuses a different one later', async () => {
    const ipam = ipamFor('h1');
    const { poolId } = await ipam.requestPool({ pool: '10.40.0.0/24' });
    expect(await ipam.requestAddress(poolId, { gateway: true, address: '10.40.0.254' })).toBe('10.40.0.254/24');
    expect(await code(ipam.requestAddress(poolId, { gateway: true, address: '10.40.0.253' }))).toBe('WEFT_GATEWAY_MISMATCH');
    expect(await ipam.requestAddress(poolId, { mac: '02:00:00:00:00:01' })).toBe('10.40.0.1/24');
  });

  it('static addresses: outside, in use, replay, reserved', async () => {
    const ipam = ipamFor('h1');
    const { poolId } = await ipam.requestPool({ pool: '10.40.0.0/24' });
    await ipam.requestAddress(poolId, { gateway: true });
    expect(await ipam.requestAddress(poolId, { address: '10.40.0.50', mac: '02:00:00:00:00:50' })).toBe('10.40.0.50/24');
    await expect(ipam.requestAddress(poolId, { address: '10.99.0.5', mac: '02:00:00:00:00:51' })).rejects.toThrow(/10\.99\.0\.5 is outside the network's subnet 10\.40\.0\.0\/24/);
    await expect(ipam.requestAddress(poolId, { address: '10.40.0.50', mac: '02:00:00:00:00:52' })).rejects.toThrow(/10\.40\.0\.50 in 10\.40\.0\.0\/24 is already in use/);
    // replay after a daemon restart: same address, same MAC, same host
    expect(await ipam.requestAddress(poolId, { address: '10.40.0.50', mac: '02:00:00:00:00:50' })).toBe('10.40.0.50/24');
    // dockerd 20.10 replays without the MAC
    expect(await ipam.requestAddress(poolId, { address: '10.40.0.50' })).toBe('10.40.0.50/24');
    // the same request from another host is a conflict
    expect(await code(ipamFor('h2').requestAddress(poolId, { address: '10.40.0.50', mac: '02:00:00:00:00:50' }))).toBe('WEFT_ADDRESS_IN_USE');
    expect(await code(ipam.requestAddress(poolId, { address: '10.40.0.1', mac: '02:00:00:00:00:53' }))).toBe('WEFT_ADDRESS_RESERVED');
    expect(await code(ipam.requestAddress(poolId, { address: '10.40.0.255', mac: '02:00:00:00:00:53' }))).toBe('WEFT_ADDRESS_RESERVED');
    expect(await code(ipam.requestAddress(poolId, { address: '10.40.0.x', mac: '02:00:00:00:00:53' }))).toBe('WEFT_BAD_ADDRESS');
    expect(await code(ipam.requestAddress('nope', {}))).toBe('WEFT_UNKNOWN_POOL');
  });

  it('aux addresses are reserved idempotently and never given to containers', async () => {
    const ipam = ipamFor('h1');
    const { poolId } = await ipam.requestPool({ pool: '10.40.0.0/29' });
    await ipam.requestAddress(poolId, { gateway: true });
    expect(await ipam.requestAddress(poolId, { address: '10.40.0.2' })).toBe('10.40.0.2/29');
    expect(await ipamFor('h2').requestAddress(poolId, { address: '10.40.0.2' })).toBe('10.40.0.2/29');
    await ipam.releaseAddress(poolId, '10.40.0.2');
    expect(await ipam.requestAddress(poolId, { mac: '02:00:00:00:00:01' })).toBe('10.40.0.3/29');
  });

  it('reports exhaustion, and reuses released addresses', async () => {
    const ipam = ipamFor('h1');
    const { poolId } = await ipam.requestPool({ pool: '10.41.0.0/29' });
    await ipam.requestAddress(poolId, { gateway: true });
    const got: string[] = [];
    for (let i = 0; i < 5; i++) got.push(await ipam.requestAddress(poolId, { mac: `02:00:00:00:00:0${i}` }));
    expect(got).toEqual(['10.41.0.2/29', '10.41.0.3/29', '10.41.0.4/29', '10.41.0.5/29', '10.41.0.6/29']);
    await expect(ipam.requestAddress(poolId, { mac: '02:00:00:00:00:09' })).rejects.toThrow(/no free address left in 10\.41\.0\.0\/29/);
    await ipam.releaseAddress(poolId, '10.41.0.4');
    await ipam.releaseAddress(poolId, '10.41.0.4'); // idempotent
    await ipam.releaseAddress(poolId, '10.41.0.200'); // unknown: fine
    expect(await ipam.requestAddress(poolId, { mac: '02:00:00:00:00:09' })).toBe('10.41.0.4/29');
  });

  it('only allocates inside --ip-range', async () => {
    const ipam = ipamFor('h1');
    const { poolId } = await ipam.requestPool({ pool: '10.40.0.0/24', subPool: '10.40.0.128/30' });
    await ipam.requestAddress(poolId, { gateway: true });
    const a = await ipam.requestAddress(poolId, { mac: '02:00:00:00:00:01' });
    expect(a).toBe('10.40.0.128/24');
    for (let i = 0; i < 3; i++) await ipam.requestAddress(poolId, { mac: `02:00:00:00:01:0${i}` });
    await expect(ipam.requestAddress(poolId, { mac: '02:00:00:00:00:09' })).rejects.toThrow(/10\.40\.0\.128\/30/);
  });

  it('never hands out one address twice under concurrency from several hosts', async () => {
    const hosts = [ipamFor('h1'), ipamFor('h2'), ipamFor('h3')];
    const { poolId } = await hosts[0].requestPool({ pool: '10.42.0.0/22' });
    await hosts[0].requestAddress(poolId, { gateway: true });
    const all = await Promise.all(Array.from({ length: 300 }, (_, i) => hosts[i % 3].requestAddress(poolId, { mac: `02:00:00:00:${(i >> 8).toString(16).padStart(2, '0')}:${(i & 255).toString(16).padStart(2, '0')}` })));
    expect(new Set(all).size).toBe(300);
    const listed = await store.list(keys.addrs(poolId));
    expect(listed.kvs.length).toBe(300);
  });
});

describe('records that are not valid', () => {
  it('an address record that is not JSON stops neither the listing of a host\'s addresses nor a release; the pool it sits in is kept', async () => {
    const ipam = ipamFor('h1');
    const { poolId } = await ipam.requestPool({ pool: '10.41.0.0/24' });
    const a = await ipam.requestAddress(poolId, { mac: '02:42:0a:29:00:02' });
    await store.put(keys.addr(poolId, '10.41.0.77'), '{"kind": "endpoint", "host": ');
    expect((await ipam.addressesOfHost('h1')).map((x) => x.ip)).toEqual([a.split('/')[0]]);
    await ipam.releaseAddress(poolId, '10.41.0.77'); // not weft's: left alone, no throw
    expect(await store.get(keys.addr(poolId, '10.41.0.77'))).toBeDefined();
    await ipam.releaseAddress(poolId, a.split('/')[0]);
    await ipam.releasePool(poolId);
    expect(await store.get(keys.pool(poolId))).toBeDefined();
  });
});
