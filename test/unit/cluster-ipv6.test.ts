// Dual-stack networks in the cluster layer, against the embedded store: the
// collector frees IPv6 addresses that no endpoint uses (a container lost to a
// crash) and keeps those of live endpoints, as it does for IPv4; a network
// whose IPv6 subnet is taken is refused and leaves nothing bound.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import pino from 'pino';
import { afterEach, beforeEach, expect, it } from 'vitest';
import type { DockerClient } from '../../src/agent/docker';
import { collectGarbage } from '../../src/agent/gc';
import type { DataPlaneApi, PeerState } from '../../src/dataplane/types';
import { Driver } from '../../src/driver/driver';
import { Ipam } from '../../src/ipam/ipam';
import { FileStore } from '../../src/store/file-store';
import { keys } from '../../src/store/keys';

const quiet: DataPlaneApi = {
  async ensureNetwork() {}, async deleteNetwork() {}, async createEndpoint() {}, async deleteEndpoint() {},
  async programPeers() { return { added: 0, removed: 0 }; }, async changePeers() { return { added: 0, removed: 0 }; }, peerOps: () => ({ fdb: 0, neighbour: 0 }),
  async announce() {}, async readPeers(): Promise<PeerState> { return { endpoints: [], floodVteps: [] }; }, async listNetworkIds() { return []; }, close() {},
};
const log = pino({ level: 'silent' });
const NET = 'a'.repeat(64);
const LIVE = 'b'.repeat(64);
let dir: string;
let store: FileStore;

beforeEach(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'weft-gc6-'));
  store = await FileStore.open(path.join(dir, 'state'));
});
afterEach(async () => {
  await store.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

it('releases an old IPv6 address no endpoint uses, keeps the live endpoint\'s IPv6 and IPv4 addresses', async () => {
  const ipam = new Ipam(store, { host: 'h1', defaultPool: '10.213.0.0/16', defaultPoolSize: 24 });
  const driver = new Driver(store, ipam, quiet, {
    host: 'h1', cluster: true, advertiseAddr: '192.0.2.1', runDir: path.join(dir, 'run'), defaultMtu: 1450, vxlanPort: 4789, driverName: 'weft', logger: log,
  });
  const p4 = await ipam.requestPool({ pool: '10.72.0.0/24' });
  const p6 = await ipam.requestPool({ pool: 'fd00:72::/64', v6: true });
  await driver.createNetwork(NET, { 'com.docker.network.enable_ipv6': true },
    [{ AddressSpace: 'weft', Pool: '10.72.0.0/24' }], [{ AddressSpace: 'weft', Pool: 'fd00:72::/64' }]);
  const a4 = await ipam.requestAddress(p4.poolId, { mac: '02:42:0a:48:00:02' });
  const a6 = await ipam.requestAddress(p6.poolId, { mac: '02:42:0a:48:00:02' });
  await driver.createEndpoint(NET, LIVE, { Address: a4, AddressIPv6: a6, MacAddress: '02:42:0a:48:00:02' }, {});
  // the endpoint is old enough for the collector, and so is a leaked IPv6 address
  const old = '2020-01-01T00:00:00.000Z';
  const epKey = keys.endpoint(NET, LIVE);
  await store.put(epKey, JSON.stringify({ ...JSON.parse((await store.get(epKey))!.value), createdAt: old }));
  for (const [pool, ip] of [[p4.poolId, a4.split('/')[0]], [p6.poolId, a6.split('/')[0]]]) {
    await store.put(keys.addr(pool, ip), JSON.stringify({ host: 'h1', kind: 'endpoint', at: old }));
  }
  await store.put(keys.addr(p6.poolId, 'fd00:72::99'), JSON.stringify({ host: 'h1', kind: 'endpoint', at: old }));
  const docker = { inspectNetwork: async () => ({ Id: NET, Name: 'ds', Driver: 'weft', Containers: { c: { EndpointID: LIVE } } }) } as unknown as DockerClient;

  const released = await collectGarbage({ store, networks: driver.networks, ipam, docker, host: 'h1', graceMs: 60_000, logger: log });
  expect(released).toBe(1);
  expect(await store.get(keys.addr(p6.poolId, 'fd00:72::99'))).toBeUndefined();
  expect(await store.get(keys.addr(p6.poolId, a6.split('/')[0]))).toBeDefined();
  expect(await store.get(keys.addr(p4.poolId, a4.split('/')[0]))).toBeDefined();
});

it('a second network on a taken IPv6 subnet is refused, naming the owner, and leaves its IPv4 pool unbound (ReleasePool frees it)', async () => {
  const ipam = new Ipam(store, { host: 'h1', defaultPool: '10.213.0.0/16', defaultPoolSize: 24 });
  const driver = new Driver(store, ipam, quiet, {
    host: 'h1', cluster: true, advertiseAddr: '192.0.2.1', runDir: path.join(dir, 'run'), defaultMtu: 1450, vxlanPort: 4789, driverName: 'weft', logger: log,
  });
  await ipam.requestPool({ pool: '10.73.0.0/24' });
  await ipam.requestPool({ pool: 'fd00:73::/64', v6: true });
  await driver.createNetwork(NET, { 'com.docker.network.enable_ipv6': true },
    [{ AddressSpace: 'weft', Pool: '10.73.0.0/24' }], [{ AddressSpace: 'weft', Pool: 'fd00:73::/64' }]);
  const p4 = await ipam.requestPool({ pool: '10.74.0.0/24' });
  await expect(driver.createNetwork(LIVE, { 'com.docker.network.enable_ipv6': true },
    [{ AddressSpace: 'weft', Pool: '10.74.0.0/24' }], [{ AddressSpace: 'weft', Pool: 'fd00:73::/64' }])).rejects.toThrow(/subnet fd00:73::\/64 is already used by weft network/);
  expect(await store.get(keys.network(LIVE))).toBeUndefined();
  expect(JSON.parse((await store.get(keys.pool(p4.poolId)))!.value).network).toBeUndefined();
  await ipam.releasePool(p4.poolId);
  expect(await store.get(keys.pool(p4.poolId))).toBeUndefined();
  // the first network keeps both pools
  expect(JSON.parse((await store.get(keys.pool('fd00:73::_64')))!.value).network).toBe(NET);
});

it('a routed network with IPv6 is refused before anything is claimed (routes carry IPv4 only)', async () => {
  const ipam = new Ipam(store, { host: 'h1', defaultPool: '10.213.0.0/16', defaultPoolSize: 24 });
  const driver = new Driver(store, ipam, quiet, {
    host: 'h1', cluster: true, advertiseAddr: '192.0.2.1', runDir: path.join(dir, 'run'), defaultMtu: 1450, vxlanPort: 4789, driverName: 'weft', logger: log,
  });
  await ipam.requestPool({ pool: '10.75.0.0/24' });
  await ipam.requestPool({ pool: 'fd00:75::/64', v6: true });
  const err = await driver.createNetwork(NET, { 'com.docker.network.enable_ipv6': true, 'com.docker.network.generic': { mode: 'routed' } },
    [{ AddressSpace: 'weft', Pool: '10.75.0.0/24', Gateway: '10.75.0.1/24' }], [{ AddressSpace: 'weft', Pool: 'fd00:75::/64' }]).catch((e: Error & { code?: string }) => e);
  expect((err as Error & { code?: string }).code).toBe('WEFT_ROUTED_IPV6');
  expect(await store.get(keys.network(NET))).toBeUndefined();
  expect(JSON.parse((await store.get(keys.pool('fd00:75::_64')))!.value).network).toBeUndefined();
});
