// The plugin API through Fastify's inject (no socket): wire format, schemas,
// error mapping and CNM call sequences, over the real embedded store. The
// kernel is replaced by a recording data plane: this is a pure-logic test.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { buildServer } from '../../src/api/server';
import { DataPlaneApi, EndpointSpec, NetworkSpec, PeerState } from '../../src/dataplane/types';
import { Driver } from '../../src/driver/driver';
import { Ipam } from '../../src/ipam/ipam';
import { FileStore } from '../../src/store/file-store';
import { keys } from '../../src/store/keys';

class RecordingDataPlane implements DataPlaneApi {
  networks = new Map<string, NetworkSpec>();
  endpoints = new Map<string, EndpointSpec>();
  failEnsure = false;
  failEndpoint = false;
  async ensureNetwork(spec: NetworkSpec) {
    if (this.failEnsure) throw new Error('Request rejected: EPERM');
    this.networks.set(spec.nsPath, spec);
  }
  async deleteNetwork(spec: NetworkSpec) { this.networks.delete(spec.nsPath); }
  async createEndpoint(_n: NetworkSpec, ep: EndpointSpec) {
    if (this.failEndpoint) throw new Error('Request rejected: EEXIST');
    this.endpoints.set(ep.hostIf, ep);
  }
  async deleteEndpoint(_n: NetworkSpec, ep: EndpointSpec) { this.endpoints.delete(ep.hostIf); }
  async programPeers() { return { added: 0, removed: 0 }; }
  announced: string[] = [];
  async announce(_n: NetworkSpec, ip: string, mac: string) { this.announced.push(`${ip} ${mac}`); }
  async readPeers(): Promise<PeerState> { return { endpoints: [], floodVteps: [] }; }
  async listNetworkIds() { return [...this.networks.values()].map((n) => n.id); }
  close() {}
}

const NET = 'a'.repeat(64);
const EP = 'b'.repeat(64);
let dir: string;
let store: FileStore;
let dp: RecordingDataPlane;
let app: FastifyInstance;

function build(cluster = false) {
  const logger = pino({ level: 'silent' });
  const ipam = new Ipam(store, { host: 'h1', defaultPool: '10.213.0.0/16', defaultPoolSize: 24 });
  const driver = new Driver(store, ipam, dp, {
    host: 'h1', cluster, advertiseAddr: cluster ? '192.0.2.1' : undefined, runDir: path.join(dir, 'run'),
    defaultMtu: 1450, vxlanPort: 4789, driverName: 'weft', logger,
  });
  return buildServer({ driver, ipam }, { bodyLimit: 64 * 1024, logger });
}

beforeEach(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'weft-api-'));
  store = await FileStore.open(path.join(dir, 'state'));
  dp = new RecordingDataPlane();
  app = build();
});
afterEach(async () => {
  await app.close();
  await store.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

// Docker sends no Content-Type header.
async function call(method: string, body?: unknown, raw?: string) {
  const res = await app.inject({ method: 'POST', url: `/${method}`, payload: raw ?? (body === undefined ? '' : JSON.stringify(body)) });
  return { status: res.statusCode, body: res.body ? JSON.parse(res.body) : undefined };
}

async function createNetwork(subnet = '10.40.0.0/24', generic: Record<string, string> = {}) {
  const pool = await call('IpamDriver.RequestPool', { AddressSpace: 'weft', Pool: subnet, SubPool: '', Options: {}, V6: false });
  expect(pool.status).toBe(200);
  const gw = await call('IpamDriver.RequestAddress', { PoolID: pool.body.PoolID, Address: '', Options: { RequestAddressType: 'com.docker.network.gateway' } });
  expect(gw.status).toBe(200);
  const res = await call('NetworkDriver.CreateNetwork', {
    NetworkID: NET, Options: { 'com.docker.network.generic': generic, 'com.docker.network.enable_ipv6': false },
    IPv4Data: [{ AddressSpace: 'weft', Pool: subnet, Gateway: gw.body.Address }], IPv6Data: [],
  });
  return { pool: pool.body.PoolID as string, gateway: gw.body.Address as string, res };
}

describe('handshake', () => {
  it('answers Activate and capabilities with empty bodies and no Content-Type', async () => {
    expect(await call('Plugin.Activate')).toEqual({ status: 200, body: { Implements: ['NetworkDriver', 'IpamDriver'] } });
    expect((await call('NetworkDriver.GetCapabilities')).body).toEqual({ Scope: 'local', ConnectivityScope: 'global' });
    expect((await call('IpamDriver.GetCapabilities')).body).toEqual({ RequiresMACAddress: true, RequiresRequestReplay: true });
    expect((await call('IpamDriver.GetDefaultAddressSpaces')).body).toEqual({ LocalDefaultAddressSpace: 'weft', GlobalDefaultAddressSpace: 'weft' });
    expect((await call('NetworkDriver.ProgramExternalConnectivity', { NetworkID: NET, EndpointID: EP })).body).toEqual({});
  });

  it('answers unknown methods with a 404 and an Err body', async () => {
    const r = await call('NetworkDriver.Frobnicate', {});
    expect(r.status).toBe(404);
    expect(r.body.Err).toMatch(/does not implement/);
  });
});

describe('bad input', () => {
  it('gives a well-formed error for malformed bodies', async () => {
    for (const raw of ['{', 'null x', '[]', '5', '"s"', '{"NetworkID": 5}', '{"NetworkID": "../../etc"}', '{}']) {
      const r = await call('NetworkDriver.DeleteNetwork', undefined, raw);
      expect(r.status, raw).toBe(400);
      expect(typeof r.body.Err, raw).toBe('string');
      expect(r.body.Err, raw).toMatch(/malformed/);
    }
  });

  it('refuses bodies that poison prototypes (__proto__, constructor.prototype), as Fastify\'s own parser does', async () => {
    const bodies = [
      '{"__proto__": {"polluted": true}}',
      '{"NetworkID": "' + 'a'.repeat(64) + '", "Options": {"__proto__": {"com.docker.network.generic": {}}}}',
      '{"constructor": {"prototype": {"polluted": true}}}',
    ];
    for (const raw of bodies) {
      for (const method of ['Plugin.Activate', 'NetworkDriver.CreateNetwork', 'IpamDriver.RequestPool']) {
        const r = await call(method, undefined, raw);
        expect(r.status, `${method} ${raw}`).toBe(400);
        expect(r.body.Err, raw).toMatch(/prototype poisoning/);
      }
    }
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    // a "constructor" key without "prototype" is plain data
    expect((await call('Plugin.Activate', undefined, '{"constructor": 1}')).status).toBe(200);
  });

  it('limits the body size', async () => {
    const r = await call('IpamDriver.RequestPool', undefined, JSON.stringify({ Pool: 'x'.repeat(100_000) }));
    expect(r.status).toBe(400);
    expect(r.body.Err).toMatch(/larger than/);
  });

  it('refuses an invalid mtu and unknown options, leaving the store without the network', async () => {
    const r = await createNetwork('10.40.0.0/24', { mtu: 'abc' });
    expect(r.res.status).toBe(400);
    expect(r.res.body.Err).toMatch(/-o mtu=abc/);
    expect(await store.get(keys.network(NET))).toBeUndefined();
    const r2 = await call('NetworkDriver.CreateNetwork', { NetworkID: NET, Options: { 'com.docker.network.generic': { colour: 'red' } }, IPv4Data: [{ AddressSpace: 'weft', Pool: '10.40.0.0/24' }] });
    expect(r2.body.Err).toMatch(/unknown option -o colour/);
    for (const bad of ['0', '100', '70000', '-5', '1e3']) {
      const r3 = await call('NetworkDriver.CreateNetwork', { NetworkID: NET, Options: { 'com.docker.network.generic': { mtu: bad } }, IPv4Data: [{ AddressSpace: 'weft', Pool: '10.40.0.0/24' }] });
      expect(r3.status, bad).toBe(400);
    }
  });

  it('errors for unknown networks on create/join, success for deletes', async () => {
    const ce = await call('NetworkDriver.CreateEndpoint', { NetworkID: NET, EndpointID: EP, Interface: { Address: '10.40.0.2/24' } });
    expect(ce.body.Err).toMatch(/not known to weft/);
    expect((await call('NetworkDriver.Join', { NetworkID: NET, EndpointID: EP, SandboxKey: '/x' })).body.Err).toMatch(/not known/);
    expect(await call('NetworkDriver.DeleteEndpoint', { NetworkID: NET, EndpointID: EP })).toEqual({ status: 200, body: {} });
    expect(await call('NetworkDriver.Leave', { NetworkID: NET, EndpointID: EP })).toEqual({ status: 200, body: {} });
    expect(await call('NetworkDriver.DeleteNetwork', { NetworkID: NET })).toEqual({ status: 200, body: {} });
    expect(await call('IpamDriver.ReleaseAddress', { PoolID: 'nope', Address: '1.2.3.4' })).toEqual({ status: 200, body: {} });
    expect(await call('IpamDriver.ReleasePool', { PoolID: 'nope' })).toEqual({ status: 200, body: {} });
  });

  it('refuses Docker\'s default IPAM in cluster mode, saying what to type', async () => {
    await app.close();
    app = build(true);
    const r = await call('NetworkDriver.CreateNetwork', { NetworkID: NET, Options: {}, IPv4Data: [{ AddressSpace: 'LocalDefault', Pool: '172.20.0.0/16' }] });
    expect(r.status).toBe(400);
    expect(r.body.Err).toMatch(/--ipam-driver weft/);
  });
});

describe('what Docker 23 to 29 changed on the wire', () => {
  it('serves requests whose Host header is plugin.moby.localhost (20.10.26 and later)', async () => {
    const res = await app.inject({ method: 'POST', url: '/Plugin.Activate', headers: { host: 'plugin.moby.localhost' }, payload: '' });
    expect(res.statusCode).toBe(200);
    expect(JSON.parse(res.body)).toEqual({ Implements: ['NetworkDriver', 'IpamDriver'] });
  });

  it('does not declare GwAllocChecker, and a GwAllocCheck (28) keeps both gateways', async () => {
    expect((await call('NetworkDriver.GetCapabilities')).body.GwAllocChecker).toBeUndefined();
    const r = await call('NetworkDriver.GwAllocCheck', { Options: { 'com.docker.network.generic': {} } });
    expect(r).toEqual({ status: 200, body: { SkipIPv4: false, SkipIPv6: false } });
  });

  it('takes com.docker.network.enable_ipv4=true (28), and makes an IPv6-only network of enable_ipv4=false', async () => {
    const pool = await call('IpamDriver.RequestPool', { AddressSpace: 'weft', Pool: '10.40.0.0/24', SubPool: '', Options: {}, V6: false });
    const ok = await call('NetworkDriver.CreateNetwork', {
      NetworkID: NET, Options: { 'com.docker.network.enable_ipv4': true, 'com.docker.network.enable_ipv6': false },
      IPv4Data: [{ AddressSpace: 'weft', Pool: '10.40.0.0/24' }], IPv6Data: [],
    });
    expect(ok).toEqual({ status: 200, body: {} });
    expect(pool.status).toBe(200);
    const other = 'c'.repeat(64);
    // Docker 28 sends only the IPv6 pool request for such a network
    const v6pool = await call('IpamDriver.RequestPool', { AddressSpace: 'weft', Pool: 'fd00:40::/64', SubPool: '', Options: {}, V6: true });
    expect(v6pool.body).toEqual({ PoolID: 'fd00:40::_64', Pool: 'fd00:40::/64', Data: {} });
    await call('IpamDriver.RequestAddress', { PoolID: 'fd00:40::_64', Address: '', Options: { RequestAddressType: 'com.docker.network.gateway' } });
    const v6only = await call('NetworkDriver.CreateNetwork', {
      NetworkID: other, Options: { 'com.docker.network.enable_ipv4': false, 'com.docker.network.enable_ipv6': true },
      IPv4Data: [], IPv6Data: [{ AddressSpace: 'weft', Pool: 'fd00:40::/64', Gateway: 'fd00:40::1/64' }],
    });
    expect(v6only).toEqual({ status: 200, body: {} });
    const rec = JSON.parse((await store.get(keys.network(other)))!.value);
    expect(rec).toMatchObject({ subnet6: 'fd00:40::/64', poolId6: 'fd00:40::_64', gateway6: 'fd00:40::1', ipv4: false });
    expect(rec.subnet).toBeUndefined();
    const addr = await call('IpamDriver.RequestAddress', { PoolID: 'fd00:40::_64', Address: '', Options: {} });
    const ep = await call('NetworkDriver.CreateEndpoint', { NetworkID: other, EndpointID: EP, Interface: { Address: '', AddressIPv6: addr.body.Address }, Options: {} });
    expect(ep.status).toBe(200);
    const epRec = JSON.parse((await store.get(keys.endpoint(other, EP)))!.value);
    expect(epRec).toMatchObject({ ip: '', ip6: 'fd00:40::2' });
    // a MAC of its own from the IPv6 address, returned since Docker left it empty
    expect(ep.body.Interface.MacAddress).toBe('02:42:00:00:00:02');
  });

  it('dual-stack: the endpoint record carries both addresses, and Join returns no gateway of either family (docker_gwbridge stays)', async () => {
    const pool = await call('IpamDriver.RequestPool', { AddressSpace: 'weft', Pool: '10.40.0.0/24', SubPool: '', Options: {}, V6: false });
    const pool6 = await call('IpamDriver.RequestPool', { AddressSpace: 'weft', Pool: '', SubPool: '', Options: {}, V6: true });
    expect(pool6.body.Pool).toBe('fd77:eef0:77::/64');
    const gw6 = await call('IpamDriver.RequestAddress', { PoolID: pool6.body.PoolID, Address: '', Options: { RequestAddressType: 'com.docker.network.gateway' } });
    const res = await call('NetworkDriver.CreateNetwork', {
      NetworkID: NET, Options: { 'com.docker.network.enable_ipv6': true },
      IPv4Data: [{ AddressSpace: 'weft', Pool: pool.body.Pool }], IPv6Data: [{ AddressSpace: 'weft', Pool: pool6.body.Pool, Gateway: gw6.body.Address }],
    });
    expect(res).toEqual({ status: 200, body: {} });
    const a4 = await call('IpamDriver.RequestAddress', { PoolID: pool.body.PoolID, Address: '', Options: {} });
    const a6 = await call('IpamDriver.RequestAddress', { PoolID: pool6.body.PoolID, Address: '', Options: {} });
    expect(a6.body.Address).toBe('fd77:eef0:77::2/64');
    await call('NetworkDriver.CreateEndpoint', { NetworkID: NET, EndpointID: EP, Interface: { Address: a4.body.Address, AddressIPv6: a6.body.Address }, Options: {} });
    expect(JSON.parse((await store.get(keys.endpoint(NET, EP)))!.value)).toMatchObject({ ip: '10.40.0.1', ip6: 'fd77:eef0:77::2' });
    const join = await call('NetworkDriver.Join', { NetworkID: NET, EndpointID: EP, SandboxKey: '/var/run/docker/netns/x', Options: {} });
    expect(join.status).toBe(200);
    expect(join.body.Gateway).toBeUndefined();
    expect(join.body.GatewayIPv6).toBeUndefined();
    expect(join.body.StaticRoutes).toBeUndefined();
    // an IPv6 address outside the network's IPv6 subnet is refused with the --ip6 message
    const bad = await call('NetworkDriver.CreateEndpoint', { NetworkID: NET, EndpointID: 'd'.repeat(64), Interface: { Address: '10.40.0.9/24', AddressIPv6: 'fd00:99::5/64' }, Options: {} });
    expect(bad.body.Err).toMatch(/fd00:99::5 is outside the network's subnet fd77:eef0:77::\/64: pick an --ip6/);
  });

  it('Leave, DeleteEndpoint and ReleaseAddress for a container that died are idempotent (27 sends them at boot)', async () => {
    const { pool } = await createNetwork();
    const addr = await call('IpamDriver.RequestAddress', { PoolID: pool, Address: '', Options: {} });
    await call('NetworkDriver.CreateEndpoint', { NetworkID: NET, EndpointID: EP, Interface: { Address: addr.body.Address }, Options: {} });
    await call('NetworkDriver.Join', { NetworkID: NET, EndpointID: EP, SandboxKey: '/var/run/docker/netns/x', Options: {} });
    const ip = (addr.body.Address as string).split('/')[0];
    for (let i = 0; i < 2; i++) {
      expect((await call('NetworkDriver.Leave', { NetworkID: NET, EndpointID: EP })).status).toBe(200);
      expect((await call('NetworkDriver.DeleteEndpoint', { NetworkID: NET, EndpointID: EP })).status).toBe(200);
      expect((await call('IpamDriver.ReleaseAddress', { PoolID: pool, Address: ip })).status).toBe(200);
    }
    expect(dp.endpoints.size).toBe(0);
    expect(await store.get(keys.endpoint(NET, EP))).toBeUndefined();
    // and the address is free again
    expect((await call('IpamDriver.RequestAddress', { PoolID: pool, Address: ip, Options: {} })).status).toBe(200);
  });
});

describe('a container\'s life', () => {
  it('create, join, leave, delete, release: state follows and is cleaned up', async () => {
    const { pool, gateway } = await createNetwork();
    expect(gateway).toBe('10.40.0.1/24');
    expect(dp.networks.size).toBe(1);
    const addr = await call('IpamDriver.RequestAddress', { PoolID: pool, Address: '', Options: { 'com.docker.network.endpoint.macaddress': '02:42:0a:28:00:02' } });
    expect(addr.body.Address).toBe('10.40.0.2/24');
    const ce = await call('NetworkDriver.CreateEndpoint', { NetworkID: NET, EndpointID: EP, Interface: { Address: addr.body.Address, AddressIPv6: '', MacAddress: '02:42:0a:28:00:02' }, Options: {} });
    expect(ce).toEqual({ status: 200, body: { Interface: null } });
    const join = await call('NetworkDriver.Join', { NetworkID: NET, EndpointID: EP, SandboxKey: '/var/run/docker/netns/x', Options: {} });
    expect(join.status).toBe(200);
    expect(join.body.InterfaceName).toEqual({ SrcName: 'wftbbbbbbbbbb', DstPrefix: 'eth' });
    expect(join.body.Gateway).toBeUndefined();
    expect(dp.endpoints.get('wftbbbbbbbbbb')?.mac).toBe('02:42:0a:28:00:02');
    expect(dp.endpoints.get('wftbbbbbbbbbb')?.mtu).toBe(1450);
    expect(dp.announced).toEqual(['10.40.0.2 02:42:0a:28:00:02']);
    expect((await call('NetworkDriver.EndpointOperInfo', { NetworkID: NET, EndpointID: EP })).body.Value.ip).toBe('10.40.0.2');
    expect((await call('NetworkDriver.Leave', { NetworkID: NET, EndpointID: EP })).status).toBe(200);
    expect((await call('NetworkDriver.DeleteEndpoint', { NetworkID: NET, EndpointID: EP })).status).toBe(200);
    expect(dp.endpoints.size).toBe(0);
    expect(await store.get(keys.endpoint(NET, EP))).toBeUndefined();
    expect((await call('IpamDriver.ReleaseAddress', { PoolID: pool, Address: '10.40.0.2' })).status).toBe(200);
    expect((await call('IpamDriver.ReleaseAddress', { PoolID: pool, Address: '10.40.0.1' })).status).toBe(200);
    expect((await call('IpamDriver.ReleasePool', { PoolID: pool })).status).toBe(200);
    expect((await call('NetworkDriver.DeleteNetwork', { NetworkID: NET })).status).toBe(200);
    expect(dp.networks.size).toBe(0);
    const left = await store.list('/weft/v1/');
    expect(left.kvs.map((k) => k.key)).toEqual(['/weft/v1/subnets']);
  });

  it('CreateEndpoint checks the address at the edge: IPv4, inside the network\'s subnet; nothing is stored otherwise', async () => {
    await createNetwork();
    for (const [address, why] of [['10.99.0.5/24', /outside the network's subnet 10.40.0.0\/24/], ['10.40.0.300/24', /invalid IPv4 address/], ['banana', /invalid IPv4 address/]] as const) {
      const r = await call('NetworkDriver.CreateEndpoint', { NetworkID: NET, EndpointID: EP, Interface: { Address: address, AddressIPv6: '', MacAddress: '02:42:0a:28:00:02' }, Options: {} });
      expect(r.status, address).toBe(400);
      expect(r.body.Err, address).toMatch(why);
    }
    expect(await store.get(keys.endpoint(NET, EP))).toBeUndefined();
  });

  it('generates a MAC when Docker gives none and returns only that field', async () => {
    await createNetwork();
    const ce = await call('NetworkDriver.CreateEndpoint', { NetworkID: NET, EndpointID: EP, Interface: { Address: '10.40.0.9/24' } });
    expect(ce.body).toEqual({ Interface: { MacAddress: '02:42:0a:28:00:09' } });
  });

  it('a second network on the same subnet is refused and does not free the first one\'s pool', async () => {
    const { pool } = await createNetwork();
    await store.put(keys.network(NET), JSON.stringify({ ...JSON.parse((await store.get(keys.network(NET)))!.value), name: 'app' }));
    const again = await call('IpamDriver.RequestPool', { AddressSpace: 'weft', Pool: '10.40.0.0/24' });
    expect(again.body.PoolID).toBe(pool);
    const r = await call('NetworkDriver.CreateNetwork', { NetworkID: 'c'.repeat(64), Options: {}, IPv4Data: [{ AddressSpace: 'weft', Pool: '10.40.0.0/24', Gateway: '10.40.0.1/24' }] });
    expect(r.body.Err).toMatch(/already used by weft network app/);
    // Docker's rollback
    await call('IpamDriver.ReleaseAddress', { PoolID: pool, Address: '10.40.0.1' });
    await call('IpamDriver.ReleasePool', { PoolID: pool });
    expect(await store.get(keys.pool(pool))).toBeDefined();
    expect((await call('IpamDriver.RequestAddress', { PoolID: pool, Options: { RequestAddressType: 'com.docker.network.gateway' } })).body.Address).toBe('10.40.0.1/24');
  });

  it('checks a hand-typed -o weft.network: the subnet must match and one copy per host', async () => {
    await createNetwork();
    const other = 'd'.repeat(64);
    const wrong = await call('NetworkDriver.CreateNetwork', { NetworkID: other, Options: { 'com.docker.network.generic': { 'weft.network': NET } }, IPv4Data: [{ AddressSpace: 'weft', Pool: '10.41.0.0/24' }] });
    expect(wrong.body.Err).toMatch(/subnet is 10\.40\.0\.0\/24, not 10\.41\.0\.0\/24/);
    const twice = await call('NetworkDriver.CreateNetwork', { NetworkID: other, Options: { 'com.docker.network.generic': { 'weft.network': NET } }, IPv4Data: [{ AddressSpace: 'weft', Pool: '10.40.0.0/24' }] });
    expect(twice.body.Err).toMatch(/already has that cluster network/);
  });

  it('rolls back CreateNetwork when the kernel refuses', async () => {
    dp.failEnsure = true;
    const { res } = await createNetwork();
    expect(res.status).toBe(500);
    expect(res.body.Err).toMatch(/EPERM/);
    expect(await store.get(keys.network(NET))).toBeUndefined();
    expect(await store.get(keys.binding(NET, 'h1'))).toBeUndefined();
  });

  it('a failed Join leaves the endpoint record for Docker\'s DeleteEndpoint and no interface', async () => {
    await createNetwork();
    await call('NetworkDriver.CreateEndpoint', { NetworkID: NET, EndpointID: EP, Interface: { Address: '10.40.0.2/24', MacAddress: '02:42:0a:28:00:02' } });
    dp.failEndpoint = true;
    const join = await call('NetworkDriver.Join', { NetworkID: NET, EndpointID: EP, SandboxKey: '/x' });
    expect(join.status).toBe(500);
    expect(join.body.Err).toMatch(/EEXIST/);
    expect(dp.endpoints.size).toBe(0);
  });

  it('finds its networks again after a restart (CreateNetwork is never replayed)', async () => {
    await createNetwork();
    await app.close();
    app = build();
    const ce = await call('NetworkDriver.CreateEndpoint', { NetworkID: NET, EndpointID: EP, Interface: { Address: '10.40.0.2/24', MacAddress: '02:42:0a:28:00:02' } });
    expect(ce.status).toBe(200);
    expect((await call('NetworkDriver.Join', { NetworkID: NET, EndpointID: EP, SandboxKey: '/x' })).status).toBe(200);
  });
});
