// `docker network rm` on one host racing `docker run` (an endpoint) or a
// network copy (a binding) on another: two drivers (two hosts) on one store.
// The remover's store pauses right after it reads the endpoints or bindings,
// and the other host's call runs to its end in that pause. Whatever the
// order, no endpoint or binding may outlive its network record, and a call
// that succeeded must find its record still there.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { DataPlaneApi, PeerState } from '../../src/dataplane/types';
import { Driver } from '../../src/driver/driver';
import { Ipam } from '../../src/ipam/ipam';
import { FileStore } from '../../src/store/file-store';
import { keys } from '../../src/store/keys';
import type { ListResult, Store } from '../../src/store/store';

const quiet: DataPlaneApi = {
  async ensureNetwork() {}, async deleteNetwork() {}, async createEndpoint() {}, async deleteEndpoint() {},
  async programPeers() { return { added: 0, removed: 0 }; }, async announce() {},
  async readPeers(): Promise<PeerState> { return { endpoints: [], floodVteps: [] }; }, async listNetworkIds() { return []; }, close() {},
};
const log = pino({ level: 'silent' });
const L1 = '1'.repeat(64);
const L2 = '2'.repeat(64);
const EP = 'e'.repeat(64);
const SUBNET = '10.70.0.0/24';

let dir: string;
let store: FileStore;

/** The store as host 1 sees it: after the `nth` list of a prefix starting with `prefix`, `during` runs to its end. */
function pausing(s: Store, prefix: string, nth: number, during: () => Promise<void>): Store {
  let n = 0;
  return new Proxy(s, {
    get(target, prop, recv) {
      if (prop === 'list') {
        return async (p: string): Promise<ListResult> => {
          const r = await target.list(p);
          if (p.startsWith(prefix) && ++n === nth) await during();
          return r;
        };
      }
      const v = Reflect.get(target, prop, recv);
      return typeof v === 'function' ? v.bind(target) : v;
    },
  });
}

function driverOn(s: Store, host: string, addr: string): Driver {
  return new Driver(s, new Ipam(s, { host, defaultPool: '10.213.0.0/16', defaultPoolSize: 24 }), quiet, {
    host, cluster: true, advertiseAddr: addr, runDir: path.join(dir, host), defaultMtu: 1450, vxlanPort: 4789, driverName: 'weft', logger: log,
  });
}

async function registered(...hosts: string[]): Promise<void> {
  for (const h of hosts) await store.put(keys.host(h), JSON.stringify({ address: '192.0.2.1', version: 'x', startedAt: 'x' }));
}

async function createOn(d: Driver, localId: string, clusterId?: string): Promise<void> {
  await d.createNetwork(localId, clusterId ? { 'com.docker.network.generic': { 'weft.network': clusterId } } : {},
    [{ AddressSpace: 'weft', Pool: SUBNET, Gateway: '10.70.0.1/24' }], []);
}

/** Every endpoint and binding in the store belongs to a network record that exists. */
async function noOrphans(): Promise<void> {
  const nets = new Set((await store.list(keys.networks())).kvs.map((kv) => kv.key.slice(keys.networks().length)));
  for (const kv of (await store.list(keys.endpoints())).kvs) expect(nets.has(kv.key.split('/')[4]), `${kv.key} without its network`).toBe(true);
  for (const kv of (await store.list(keys.bindings())).kvs) expect(nets.has(kv.key.split('/')[4]), `${kv.key} without its network`).toBe(true);
}

beforeEach(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'weft-race-'));
  store = await FileStore.open(path.join(dir, 'state'));
  await registered('h1', 'h2');
  await new Ipam(store, { host: 'h1', defaultPool: '10.213.0.0/16', defaultPoolSize: 24 }).requestPool({ pool: SUBNET });
});
afterEach(async () => {
  await store.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('network rm on host 1 while host 2 creates an endpoint', () => {
  for (const nth of [1, 2]) {
    it(`host 2's CreateEndpoint lands after host 1's read number ${nth} of the endpoints`, async () => {
      const h2 = driverOn(store, 'h2', '192.0.2.2');
      let created: boolean | undefined;
      let refusal = '';
      const h1 = driverOn(pausing(store, keys.endpointsOf(L1), nth, async () => {
        try {
          await h2.createEndpoint(L2, EP, { Address: '10.70.0.5/24', MacAddress: '02:42:0a:46:00:05' }, {});
          created = true;
        } catch (e) {
          created = false;
          refusal = (e as Error).message;
        }
      }), 'h1', '192.0.2.1');
      await createOn(h1, L1);
      await createOn(h2, L2, L1);
      await store.delete(keys.binding(L1, 'h2')); // host 2's copy is gone from the cluster's view, so host 1 would be the last one
      const removed = await h1.deleteNetwork(L1).then(() => 'removed', (e: Error) => e.message);
      expect(created).toBeDefined();
      if (created) {
        // the endpoint won: it keeps the network
        expect(await store.get(keys.endpoint(L1, EP))).toBeDefined();
        expect(await store.get(keys.network(L1))).toBeDefined();
        expect(removed).toMatch(/still has containers on h2/);
      } else {
        expect(refusal).toMatch(/is being removed/);
        expect(await store.get(keys.network(L1))).toBeUndefined();
      }
      await noOrphans();
    });
  }
});

describe('network rm on host 1 while host 2 makes its copy of the network', () => {
  // host 1 reads the endpoints (before it marks the network) and then the bindings (after)
  for (const [what, prefix] of [['endpoints', keys.endpointsOf(L1)], ['bindings', keys.bindingsOf(L1)]]) {
    it(`host 2's binding lands after host 1 read the ${what}`, async () => {
      const h2 = driverOn(store, 'h2', '192.0.2.2');
      let refusal = '';
      let ran = false;
      const h1 = driverOn(pausing(store, prefix, 1, async () => {
        ran = true;
        await createOn(h2, L2, L1).catch((e: Error) => { refusal = e.message; });
      }), 'h1', '192.0.2.1');
      await createOn(h1, L1);
      await h1.deleteNetwork(L1);
      expect(ran).toBe(true);
      const net = await store.get(keys.network(L1));
      if (refusal) {
        expect(refusal).toMatch(/is being removed/);
        expect(await store.get(keys.binding(L1, 'h2'))).toBeUndefined();
      } else {
        // host 2's copy came first: the network stays (marked deleting) until host 2 removes its copy
        expect(net).toBeDefined();
        expect(JSON.parse(net!.value).deleting).toBe(true);
      }
      await noOrphans();
    });
  }
});
