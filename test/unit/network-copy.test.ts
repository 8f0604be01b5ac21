// A network's copy on another host (CreateNetwork with weft.network, made by
// the agent): Docker lists the copy as soon as CreateNetwork returns, so the
// copy's kernel objects are made after the answer, and Join waits for them.
// The host that creates the network still makes them before answering (an
// error there is the user's to see).
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { DataPlaneApi, NetworkSpec, PeerState } from '../../src/dataplane/types';
import { Driver } from '../../src/driver/driver';
import { Ipam } from '../../src/ipam/ipam';
import { FileStore } from '../../src/store/file-store';
import { keys } from '../../src/store/keys';

const log = pino({ level: 'silent' });
const L1 = '1'.repeat(64);
const L2 = '2'.repeat(64);
const EP = 'e'.repeat(64);
const SUBNET = '10.71.0.0/24';

/** ensureNetwork waits until released; createEndpoint records when it ran. */
class SlowKernel implements DataPlaneApi {
  release: () => void = () => undefined;
  private gate = new Promise<void>((r) => { this.release = r; });
  made: string[] = [];
  endpoints: string[] = [];
  constructor(private readonly slow: boolean) {}
  async ensureNetwork(spec: NetworkSpec) { if (this.slow) await this.gate; this.made.push(spec.id); return true; }
  async deleteNetwork() {}
  async createEndpoint(_n: NetworkSpec, ep: { hostIf: string }) { this.endpoints.push(`${ep.hostIf} after ${this.made.length} networks made`); }
  async deleteEndpoint() {}
  async programPeers() { return { added: 0, removed: 0 }; }
  async changePeers() { return { added: 0, removed: 0 }; }
  peerOps() { return { fdb: 0, neighbour: 0, route: 0 }; }
  async announce() {}
  async announceRouted() {}
  async readPeers(): Promise<PeerState> { return { endpoints: [], floodVteps: [] }; }
  async underlayOf() { return undefined; }
  async listNetworkIds() { return []; }
  close() {}
}

let dir: string;
let store: FileStore;

function driverOn(host: string, dp: DataPlaneApi): Driver {
  return new Driver(store, new Ipam(store, { host, defaultPool: '10.213.0.0/16', defaultPoolSize: 24 }), dp, {
    host, cluster: true, advertiseAddr: '192.0.2.1', runDir: path.join(dir, host), defaultMtu: 1450, vxlanPort: 4789, driverName: 'weft', logger: log,
  });
}

beforeEach(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'weft-copy-'));
  store = await FileStore.open(path.join(dir, 'state'));
  for (const h of ['h1', 'h2']) await store.put(keys.host(h), JSON.stringify({ address: '192.0.2.1', version: 'x', startedAt: 'x' }));
  await new Ipam(store, { host: 'h1', defaultPool: '10.213.0.0/16', defaultPoolSize: 24 }).requestPool({ pool: SUBNET });
});
afterEach(async () => {
  await store.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('a network copy on another host', () => {
  it('answers CreateNetwork before its kernel objects are made; Join waits for them', async () => {
    await driverOn('h1', new SlowKernel(false)).createNetwork(L1, {}, [{ AddressSpace: 'weft', Pool: SUBNET, Gateway: '10.71.0.1/24' }], []);
    const dp = new SlowKernel(true);
    const h2 = driverOn('h2', dp);
    const created = h2.createNetwork(L2, { 'com.docker.network.generic': { 'weft.network': L1 } }, [{ AddressSpace: 'weft', Pool: SUBNET, Gateway: '10.71.0.1/24' }], []);
    const answered = await Promise.race([created.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 2_000))]);
    expect(answered, 'CreateNetwork of the copy answered while the kernel objects were still being made').toBe(true);
    expect(dp.made).toEqual([]);
    await h2.createEndpoint(L2, EP, { Address: '10.71.0.5/24' }, {});
    const joined = h2.join(L2, EP);
    await new Promise((r) => setTimeout(r, 50));
    expect(dp.endpoints, 'Join waits for the kernel objects').toEqual([]);
    dp.release();
    await joined;
    expect(dp.made).toEqual([L1.slice(0, 10)]);
    expect(dp.endpoints).toHaveLength(1);
    expect(dp.endpoints[0]).toMatch(/after 1 networks made$/);
  });

  it('the host that creates the network makes them before answering', async () => {
    const dp = new SlowKernel(true);
    const created = driverOn('h1', dp).createNetwork(L1, {}, [{ AddressSpace: 'weft', Pool: SUBNET, Gateway: '10.71.0.1/24' }], []);
    const answered = await Promise.race([created.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 300))]);
    expect(answered).toBe(false);
    dp.release();
    await created;
    expect(dp.made).toEqual([L1.slice(0, 10)]);
  });
});
