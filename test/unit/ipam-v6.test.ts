// IPv6 pools and addresses against the real embedded store in a temp dir (no kernel, no Docker).
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { WeftError } from '../../src/errors';
import { canonicalIPv6, formatIPv6, parseSubnet6, subnetFromPoolKey, toNumber } from '../../src/ipam/cidr';
import { Ipam } from '../../src/ipam/ipam';
import { FileStore } from '../../src/store/file-store';
import { keys } from '../../src/store/keys';

let dir: string;
let store: FileStore;
const ipamFor = (host: string, defaultPoolV6?: string) =>
  new Ipam(store, { host, defaultPool: '10.213.0.0/16', defaultPoolSize: 24, ...(defaultPoolV6 ? { defaultPoolV6 } : {}) });

beforeEach(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'weft-ipam6-'));
  store = await FileStore.open(dir);
});
afterEach(async () => {
  await store.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

async function failure(p: Promise<unknown>): Promise<WeftError> {
  try {
    await p;
  } catch (e) {
    expect(e).toBeInstanceOf(WeftError);
    return e as WeftError;
  }
  throw new Error('expected an error');
}

describe('IPv6 address text', () => {
  it('is canonical (RFC 5952), so one address is one store key', () => {
    expect(canonicalIPv6('FD00:0040:0000:0000:0000:0000:0000:0005')).toBe('fd00:40::5');
    expect(canonicalIPv6('fd00:40:0:0:1:0:0:5')).toBe('fd00:40::1:0:0:5');
    expect(canonicalIPv6('2001:db8:0:1:1:1:1:1')).toBe('2001:db8:0:1:1:1:1:1');
    expect(formatIPv6(0n)).toBe('::');
    expect(formatIPv6(1n)).toBe('::1');
    expect(parseSubnet6('fd00:0040::/64').cidr).toBe('fd00:40::/64');
  });

  it('parses subnets and refuses bad ones with what to do', () => {
    expect(() => parseSubnet6('fd00:40::5/64')).toThrow(/host bits are set; did you mean fd00:40::\/64/);
    expect(() => parseSubnet6('fd00:40::/129')).toThrow(/at most 128/);
    expect(() => parseSubnet6('10.0.0.0/8')).toThrow(/expected IPv6 CIDR/);
    expect(subnetFromPoolKey('fd00:40::_64')?.cidr).toBe('fd00:40::/64');
    expect(subnetFromPoolKey('fd00:0040::_64')).toBeUndefined();
  });
});

describe('IPv6 pools', () => {
  it('gives the same PoolID for the same subnet on every host, and refuses overlaps within the family only', async () => {
    const a = await ipamFor('h1').requestPool({ pool: 'fd00:40::/64', v6: true });
    const b = await ipamFor('h2').requestPool({ pool: 'fd00:0040::/64', v6: true });
    expect(a).toEqual({ poolId: 'fd00:40::_64', pool: 'fd00:40::/64' });
    expect(b).toEqual(a);
    await expect(ipamFor('h1').requestPool({ pool: 'fd00::/16', v6: true })).rejects.toThrow(/fd00::\/16 overlaps fd00:40::\/64/);
    // an IPv4 pool whose numbers would overlap as integers is another family
    await ipamFor('h1').requestPool({ pool: '10.40.0.0/24' });
    await ipamFor('h1').requestPool({ pool: '::/96', v6: true });
  });

  it('carves free /64s from the default ULA range, skipping used ones, and says which setting to widen', async () => {
    const ipam = ipamFor('h1');
    await ipam.requestPool({ pool: 'fd77:eef0:77:1::/64', v6: true });
    expect((await ipam.requestPool({ v6: true })).pool).toBe('fd77:eef0:77::/64');
    expect((await ipam.requestPool({ v6: true })).pool).toBe('fd77:eef0:77:2::/64');
    const small = ipamFor('h1', 'fd11:2233:4455:6600::/63');
    expect((await small.requestPool({ v6: true })).pool).toBe('fd11:2233:4455:6600::/64');
    expect((await small.requestPool({ v6: true })).pool).toBe('fd11:2233:4455:6601::/64');
    const e = await failure(small.requestPool({ v6: true }));
    expect(e.code).toBe('WEFT_NO_FREE_SUBNET');
    expect(e.message).toMatch(/--default-pool-v6/);
    // an IPv4 default pool is unaffected by the IPv6 ones
    expect((await ipam.requestPool({})).pool).toBe('10.213.0.0/24');
  });

  it('refuses a subnet too small for containers, an IPv4 subnet, and an --ip-range outside', async () => {
    const ipam = ipamFor('h1');
    expect((await failure(ipam.requestPool({ pool: 'fd00:40::/127', v6: true }))).code).toBe('WEFT_BAD_SUBNET');
    expect((await failure(ipam.requestPool({ pool: '10.40.0.0/24', v6: true }))).code).toBe('WEFT_BAD_SUBNET');
    expect((await failure(ipam.requestPool({ pool: 'fd00:40::/64', subPool: 'fd00:41::/80', v6: true }))).code).toBe('WEFT_BAD_IP_RANGE');
  });
});

describe('IPv6 addresses', () => {
  it('hands out the gateway first, then consecutive addresses; the subnet-router anycast address never', async () => {
    const ipam = ipamFor('h1');
    const { poolId } = await ipam.requestPool({ pool: 'fd00:40::/64', v6: true });
    expect(await ipam.requestAddress(poolId, { gateway: true })).toBe('fd00:40::1/64');
    expect(await ipamFor('h2').requestAddress(poolId, { gateway: true })).toBe('fd00:40::1/64');
    expect(await ipam.requestAddress(poolId, { mac: '02:42:00:00:00:01' })).toBe('fd00:40::2/64');
    expect(await ipam.requestAddress(poolId, { mac: '02:42:00:00:00:02' })).toBe('fd00:40::3/64');
    const e = await failure(ipam.requestAddress(poolId, { address: 'fd00:40::', mac: '02:42:00:00:00:03' }));
    expect(e.message).toMatch(/subnet-router anycast address.*--ip6/);
  });

  it('--ip6: outside, in use (in any spelling), bad, gateway: each with its --ip6 message', async () => {
    const ipam = ipamFor('h1');
    const { poolId } = await ipam.requestPool({ pool: 'fd00:40::/64', v6: true });
    await ipam.requestAddress(poolId, { gateway: true });
    expect(await ipam.requestAddress(poolId, { address: 'fd00:40::10', mac: '02:42:00:00:00:01' })).toBe('fd00:40::10/64');
    const inUse = await failure(ipamFor('h2').requestAddress(poolId, { address: 'FD00:40:0::0010', mac: '02:42:00:00:00:02' }));
    expect(inUse.code).toBe('WEFT_ADDRESS_IN_USE');
    expect(inUse.message).toMatch(/address fd00:40::10 in fd00:40::\/64 is already in use \(held by a container on host h1\): pick another --ip6/);
    const outside = await failure(ipam.requestAddress(poolId, { address: 'fd00:41::10', mac: '02:42:00:00:00:02' }));
    expect(outside.code).toBe('WEFT_ADDRESS_OUTSIDE_SUBNET');
    expect(outside.message).toMatch(/pick an --ip6 inside fd00:40::\/64/);
    expect((await failure(ipam.requestAddress(poolId, { address: '10.40.0.5', mac: '02:42:00:00:00:02' }))).message).toMatch(/invalid IPv6 address "10\.40\.0\.5"/);
    expect((await failure(ipam.requestAddress(poolId, { address: 'fd00:40::1', mac: '02:42:00:00:00:02' }))).message).toMatch(/gateway.*--ip6/);
    // a replay from the holder is the same address again
    expect(await ipam.requestAddress(poolId, { address: 'fd00:40::10', mac: '02:42:00:00:00:01' })).toBe('fd00:40::10/64');
  });

  it('--ip-range and --aux-address; exhaustion; release (in any spelling) frees for reuse', async () => {
    const ipam = ipamFor('h1');
    const { poolId } = await ipam.requestPool({ pool: 'fd00:40::/64', subPool: 'fd00:40::100/126', v6: true });
    await ipam.requestAddress(poolId, { gateway: true });
    expect(await ipam.requestAddress(poolId, { address: 'fd00:40::101' })).toBe('fd00:40::101/64'); // aux
    const got = [];
    for (let i = 0; i < 3; i++) got.push(await ipam.requestAddress(poolId, { mac: `02:42:00:00:00:0${i}` }));
    expect(got).toEqual(['fd00:40::100/64', 'fd00:40::102/64', 'fd00:40::103/64']);
    const e = await failure(ipam.requestAddress(poolId, { mac: '02:42:00:00:00:09' }));
    expect(e.code).toBe('WEFT_POOL_EXHAUSTED');
    expect(e.message).toMatch(/no free address left in fd00:40::100\/126/);
    await ipam.releaseAddress(poolId, 'FD00:40::0102');
    expect(await store.get(keys.addr(poolId, 'fd00:40::102'))).toBeUndefined();
    expect(await ipam.requestAddress(poolId, { mac: '02:42:00:00:00:09' })).toBe('fd00:40::102/64');
    // the aux address is never released by ReleaseAddress
    await ipam.releaseAddress(poolId, 'fd00:40::101');
    expect(await store.get(keys.addr(poolId, 'fd00:40::101'))).toBeDefined();
  });

  it('never hands out one address twice under concurrency from several hosts, with IPv4 and IPv6 in the same store', async () => {
    const hosts = ['h1', 'h2', 'h3'].map((h) => ipamFor(h));
    const { poolId } = await hosts[0].requestPool({ pool: 'fd00:40::/64', v6: true });
    const v4 = await hosts[0].requestPool({ pool: '10.40.0.0/24' });
    const all = await Promise.all(Array.from({ length: 150 }, (_, i) =>
      hosts[i % 3].requestAddress(i % 2 ? poolId : v4.poolId, { mac: `02:42:00:00:${(i >> 8).toString(16).padStart(2, '0')}:${(i & 255).toString(16).padStart(2, '0')}` })));
    expect(new Set(all).size).toBe(150);
    const v6 = all.filter((a) => a.includes(':'));
    expect(v6.length).toBe(75);
    // hosts that collide pick at random, but among the low addresses of the /64: short to read and type
    for (const a of v6) expect(toNumber(a.split('/')[0]) - toNumber('fd00:40::')).toBeLessThan(4096n + 4n * 75n);
    expect((await store.list(keys.addrs(poolId))).kvs.length).toBe(75);
    const mine = await hosts[1].addressesOfHost('h2');
    expect(mine.length).toBe(50);
  });
});
