// The collector and what a CreateNetwork leaves when it stops after its
// transaction applied: a network record no host has, and its VNI claim.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { DockerClient } from '../../src/agent/docker';
import { collectGarbage } from '../../src/agent/gc';
import type { DataPlaneApi, PeerState } from '../../src/dataplane/types';
import { Driver } from '../../src/driver/driver';
import { Ipam } from '../../src/ipam/ipam';
import { FileStore } from '../../src/store/file-store';
import { keys } from '../../src/store/keys';

const quiet: DataPlaneApi = {
  async ensureNetwork() {}, async deleteNetwork() {}, async createEndpoint() {}, async deleteEndpoint() {},
  async programPeers() { return { added: 0, removed: 0 }; }, async announce() {},
  async readPeers(): Promise<PeerState> { return { endpoints: [], floodVteps: [] }; }, async listNetworkIds() { return []; }, close() {},
};
const log = pino({ level: 'silent' });
const HALF = 'a'.repeat(64);
const NAMED = 'b'.repeat(64);
const GONE = 'c'.repeat(64);

let dir: string;
let store: FileStore;

beforeEach(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'weft-gcnet-'));
  store = await FileStore.open(path.join(dir, 'state'));
});
afterEach(async () => {
  await store.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('collector: half-made networks', () => {
  it('removes a network no host has (with its VNI and pool) and VNI claims whose network is gone; leaves the rest', async () => {
    const ipam = new Ipam(store, { host: 'h1', defaultPool: '10.213.0.0/16', defaultPoolSize: 24 });
    const driver = new Driver(store, ipam, quiet, {
      host: 'h1', cluster: true, advertiseAddr: '192.0.2.1', runDir: path.join(dir, 'run'), defaultMtu: 1450, vxlanPort: 4789, driverName: 'weft', logger: log,
    });
    const old = '2020-01-01T00:00:00.000Z';
    const net = (extra: object) => JSON.stringify({ vni: 0, mtu: 1450, options: {}, internal: false, createdBy: 'h1', createdAt: old, ...extra });
    // what a CreateNetwork killed after its transaction leaves: record + VNI + a pool bound to it, no binding
    const pool = await ipam.requestPool({ pool: '10.71.0.0/24' });
    await ipam.bindPool(pool.poolId, HALF, async () => 'x');
    await store.put(keys.network(HALF), net({ vni: 5001, subnet: '10.71.0.0/24', poolId: pool.poolId }));
    await store.put(keys.vni(5001), JSON.stringify({ network: HALF }));
    // a network in use: named, bound
    await store.put(keys.network(NAMED), net({ vni: 5002, name: 'app' }));
    await store.put(keys.vni(5002), JSON.stringify({ network: NAMED }));
    await store.put(keys.binding(NAMED, 'h1'), JSON.stringify({ localId: 'f'.repeat(64) }));
    // a VNI claim left by a rollback that removed only the network record
    await store.put(keys.vni(5003), JSON.stringify({ network: GONE }));
    // a young half-made network: maybe still being created
    await store.put(keys.network('d'.repeat(64)), net({ vni: 5004, createdAt: new Date().toISOString() }));
    await store.put(keys.vni(5004), JSON.stringify({ network: 'd'.repeat(64) }));

    const docker = {} as DockerClient; // no local network: Docker is not asked
    const released = await collectGarbage({ store, networks: driver.networks, ipam, docker, host: 'h1', graceMs: 60_000, logger: log });
    expect(released).toBeGreaterThanOrEqual(2);
    expect(await store.get(keys.network(HALF))).toBeUndefined();
    expect(await store.get(keys.vni(5001))).toBeUndefined();
    expect(await store.get(keys.pool(pool.poolId))).toBeUndefined();
    expect(await store.get(keys.vni(5003))).toBeUndefined();
    expect(await store.get(keys.network(NAMED))).toBeDefined();
    expect(await store.get(keys.vni(5002))).toBeDefined();
    expect(await store.get(keys.network('d'.repeat(64)))).toBeDefined();
    expect(await store.get(keys.vni(5004))).toBeDefined();
  });

  it('a CreateNetwork whose record transaction applied but then failed removes its VNI with the record', async () => {
    const ipam = new Ipam(store, { host: 'h1', defaultPool: '10.213.0.0/16', defaultPoolSize: 24 });
    // The transaction applies, and then the store "times out" on the way back (as etcd can).
    let failNextTxn = true;
    const flaky = new Proxy(store, {
      get(t, prop, recv) {
        if (prop === 'txn') {
          return async (...a: Parameters<FileStore['txn']>) => {
            const r = await t.txn(...a);
            if (failNextTxn && a[1].some((op) => op.type === 'put' && op.key.startsWith(keys.vnis()))) {
              failNextTxn = false;
              throw new Error('etcd store unavailable: txn got no answer within 5000 ms');
            }
            return r;
          };
        }
        const v = Reflect.get(t, prop, recv);
        return typeof v === 'function' ? v.bind(t) : v;
      },
    });
    const driver = new Driver(flaky, new Ipam(flaky, { host: 'h1', defaultPool: '10.213.0.0/16', defaultPoolSize: 24 }), quiet, {
      host: 'h1', cluster: true, advertiseAddr: '192.0.2.1', runDir: path.join(dir, 'run'), defaultMtu: 1450, vxlanPort: 4789, driverName: 'weft', logger: log,
    });
    await ipam.requestPool({ pool: '10.72.0.0/24' });
    await expect(driver.createNetwork(HALF, {}, [{ AddressSpace: 'weft', Pool: '10.72.0.0/24', Gateway: '10.72.0.1/24' }], [])).rejects.toThrow(/no answer/);
    expect((await store.list(keys.vnis())).kvs).toEqual([]);
    expect(await store.get(keys.network(HALF))).toBeUndefined();
  });
});
