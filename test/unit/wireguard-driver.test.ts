// -o encrypted through the plugin API (Fastify inject, real embedded store, a
// recording data plane, a stand-in for this host's WireGuard): what the
// network record and the data plane's spec get, and the refusals.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { buildServer } from '../../src/api/server';
import type { DataPlaneApi, EndpointSpec, NetworkSpec, PeerState } from '../../src/dataplane/types';
import { Driver, EncryptedPath } from '../../src/driver/driver';
import { Ipam } from '../../src/ipam/ipam';
import { FileStore } from '../../src/store/file-store';
import { keys, NetworkRecord } from '../../src/store/keys';

class RecordingDataPlane implements DataPlaneApi {
  networks = new Map<string, NetworkSpec>();
  async ensureNetwork(spec: NetworkSpec) { this.networks.set(spec.nsPath, spec); }
  async deleteNetwork(spec: NetworkSpec) { this.networks.delete(spec.nsPath); }
  async createEndpoint(_n: NetworkSpec, _ep: EndpointSpec) {}
  async deleteEndpoint() {}
  async programPeers() { return { added: 0, removed: 0 }; }
  async announce() {}
  async readPeers(): Promise<PeerState> { return { endpoints: [], floodVteps: [] }; }
  async listNetworkIds() { return []; }
  close() {}
}

const NET = 'a'.repeat(64);
let dir: string;
let store: FileStore;
let dp: RecordingDataPlane;
let app: FastifyInstance | undefined;
const wg = { ready: true, tunnel: '198.51.100.7' as string | undefined };

function build(mode: EncryptedPath['mode'], cluster = true, withWireguard = true) {
  const logger = pino({ level: 'silent' });
  const ipam = new Ipam(store, { host: 'h1', defaultPool: '10.213.0.0/16', defaultPoolSize: 24 });
  const encryption: EncryptedPath = {
    mode, mtuOverhead: 60,
    ...(withWireguard ? {
      wireguard: {
        isReady: () => wg.ready, notReadyReason: () => 'wireguard-go is not installed', tunnelAddress: () => wg.tunnel,
        cryptoNetns: path.join(dir, 'run', 'wireguard', 'netns'),
      },
    } : {}),
  };
  const driver = new Driver(store, ipam, dp, {
    host: 'h1', cluster, advertiseAddr: cluster ? '192.0.2.11' : undefined, runDir: path.join(dir, 'run'),
    defaultMtu: 1450, vxlanPort: 4789, driverName: 'weft', logger, encryption,
  });
  app = buildServer({ driver, ipam }, { bodyLimit: 64 * 1024, logger });
}

beforeEach(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'w13-drv-'));
  store = await FileStore.open(path.join(dir, 'state'));
  dp = new RecordingDataPlane();
  wg.ready = true;
  wg.tunnel = '198.51.100.7';
});
afterEach(async () => {
  await app?.close();
  app = undefined;
  await store.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

async function call(method: string, body?: unknown) {
  const res = await app!.inject({ method: 'POST', url: `/${method}`, payload: body === undefined ? '' : JSON.stringify(body) });
  return { status: res.statusCode, body: res.body ? JSON.parse(res.body) : undefined };
}

async function createNetwork(generic: Record<string, string>, id = NET, subnet = '10.40.0.0/24') {
  const pool = await call('IpamDriver.RequestPool', { AddressSpace: 'weft', Pool: subnet, SubPool: '', Options: {}, V6: false });
  expect(pool.status).toBe(200);
  return call('NetworkDriver.CreateNetwork', {
    NetworkID: id, Options: { 'com.docker.network.generic': generic }, IPv4Data: [{ AddressSpace: 'weft', Pool: subnet }], IPv6Data: [],
  });
}

const record = async (id = NET) => {
  const kv = await store.get(keys.network(id));
  return kv ? (JSON.parse(kv.value) as NetworkRecord) : undefined;
};

describe('-o encrypted', () => {
  it('an encrypted network: MTU --mtu - 60, the tunnel address as VTEP, the VXLAN socket in WireGuard\'s namespace', async () => {
    build('on-request');
    expect((await createNetwork({ encrypted: '' })).status).toBe(200);
    const rec = await record();
    expect(rec).toMatchObject({ encrypted: true, mtu: 1390, options: { encrypted: 'true' } });
    const spec = [...dp.networks.values()][0];
    expect(spec.vxlan).toMatchObject({ local: '198.51.100.7', socketNetns: path.join(dir, 'run', 'wireguard', 'netns'), mtu: 1390 });
    // a plain one keeps the underlay address and the host namespace
    expect((await createNetwork({}, 'b'.repeat(64), '10.41.0.0/24')).status).toBe(200);
    expect(await record('b'.repeat(64))).toMatchObject({ mtu: 1450 });
    expect((await record('b'.repeat(64)))?.encrypted).toBeUndefined();
    const plain = [...dp.networks.values()].find((s) => s.id === 'bbbbbbbbbb')!;
    expect(plain.vxlan).toMatchObject({ local: '192.0.2.11' });
    expect(plain.vxlan?.socketNetns).toBeUndefined();
  });

  it('-o mtu still wins', async () => {
    build('on-request');
    expect((await createNetwork({ encrypted: 'true', mtu: '1300' })).status).toBe(200);
    expect(await record()).toMatchObject({ encrypted: true, mtu: 1300 });
  });

  it('refused, with nothing claimed, while WireGuard is not working on this host', async () => {
    build('on-request');
    wg.ready = false;
    const r = await createNetwork({ encrypted: '' });
    expect(r.status).toBe(503);
    expect(r.body.Err).toMatch(/cannot create an encrypted network: WireGuard is not working on this host \(wireguard-go is not installed\); .*weft doctor/);
    expect(await record()).toBeUndefined();
    expect(dp.networks.size).toBe(0);
  });

  it('a copy of an encrypted network is not set up where WireGuard never came up (fail closed)', async () => {
    build('on-request');
    expect((await createNetwork({ encrypted: '' })).status).toBe(200);
    // this host's own copy again after a restart, without a tunnel address: no plain VXLAN in its place
    await app!.close();
    dp = new RecordingDataPlane();
    wg.tunnel = undefined;
    wg.ready = false;
    build('on-request');
    const ep = await call('NetworkDriver.CreateEndpoint', { NetworkID: NET, EndpointID: 'e'.repeat(64), Interface: { Address: '10.40.0.5/24' } });
    expect(ep.status).toBe(200);
    const join = await call('NetworkDriver.Join', { NetworkID: NET, EndpointID: 'e'.repeat(64), SandboxKey: '/x' });
    expect(join.status).toBe(503);
    expect(join.body.Err).toMatch(/setting up encrypted network .*: WireGuard is not working on this host/);
    expect(dp.networks.size).toBe(0);
  });

  it('--encryption all encrypts every new network and refuses -o encrypted=false; --encryption off refuses -o encrypted', async () => {
    build('all');
    expect((await createNetwork({})).status).toBe(200);
    expect(await record()).toMatchObject({ encrypted: true, mtu: 1390 });
    const no = await createNetwork({ encrypted: 'false' }, 'c'.repeat(64), '10.42.0.0/24');
    expect(no.status).toBe(400);
    expect(no.body.Err).toMatch(/--encryption all.*leave out -o encrypted=false/);
    await app!.close();
    build('off', true, false);
    const off = await createNetwork({ encrypted: '' }, 'd'.repeat(64), '10.43.0.0/24');
    expect(off.status).toBe(400);
    expect(off.body.Err).toMatch(/--encryption off/);
    expect(await record('d'.repeat(64))).toBeUndefined();
  });

  it('on one host (embedded store) the option is accepted and nothing changes', async () => {
    build('on-request', false, false);
    expect((await createNetwork({ encrypted: '' })).status).toBe(200);
    expect(await record()).toMatchObject({ encrypted: true, mtu: 1450 });
    expect([...dp.networks.values()][0].vxlan).toBeUndefined();
  });
});
