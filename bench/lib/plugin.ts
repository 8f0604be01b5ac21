// Plugin API calls as Docker makes them (POST, no Content-Type), failing loudly.
import { randomBytes } from 'node:crypto';
import { pluginCall } from '../../test/lab/weft';

export async function call<T = Record<string, unknown>>(socket: string, method: string, body: unknown, timeoutMs = 30_000): Promise<T> {
  const r = await pluginCall(socket, method, body, timeoutMs);
  const j = r.json as { Err?: string } | undefined;
  if (r.status !== 200 || !j || j.Err) throw new Error(`${method}: ${r.status} ${r.text.slice(0, 300)}`);
  return j as T;
}

/** A Docker-style 64-hex id. */
export const dockerId = (): string => randomBytes(32).toString('hex');

/** A random locally administered unicast MAC, as libnetwork generates one. */
export function randomMac(): string {
  const b = randomBytes(6);
  b[0] = 0x02;
  b[1] = 0x42;
  return [...b].map((x) => x.toString(16).padStart(2, '0')).join(':');
}

export const GATEWAY_OPTS = { RequestAddressType: 'com.docker.network.gateway' };
export const macOpts = (mac: string) => ({ 'com.docker.network.endpoint.macaddress': mac });

export interface PluginNetwork {
  socket: string;
  poolId: string;
  subnet: string;
  gateway: string;
  networkId: string;
}

/** RequestPool, RequestAddress (gateway), CreateNetwork: what `docker network create` makes the plugin do. */
export async function createNetworkViaPlugin(socket: string, subnet: string, mtu?: number): Promise<PluginNetwork> {
  const pool = await call<{ PoolID: string; Pool: string }>(socket, 'IpamDriver.RequestPool', { AddressSpace: 'weft', Pool: subnet, SubPool: '', Options: {}, V6: false });
  const gw = await call<{ Address: string }>(socket, 'IpamDriver.RequestAddress', { PoolID: pool.PoolID, Address: '', Options: GATEWAY_OPTS });
  const networkId = dockerId();
  await call(socket, 'NetworkDriver.CreateNetwork', {
    NetworkID: networkId,
    Options: { 'com.docker.network.enable_ipv6': false, 'com.docker.network.generic': mtu ? { mtu: String(mtu) } : {} },
    IPv4Data: [{ AddressSpace: 'weft', Pool: pool.Pool, Gateway: gw.Address }],
    IPv6Data: [],
  });
  return { socket, poolId: pool.PoolID, subnet: pool.Pool, gateway: gw.Address, networkId };
}

export async function deleteNetworkViaPlugin(n: PluginNetwork): Promise<void> {
  await call(n.socket, 'NetworkDriver.DeleteNetwork', { NetworkID: n.networkId });
  await call(n.socket, 'IpamDriver.ReleaseAddress', { PoolID: n.poolId, Address: n.gateway.split('/')[0] });
  await call(n.socket, 'IpamDriver.ReleasePool', { PoolID: n.poolId });
}

export interface PluginEndpoint {
  endpointId: string;
  address: string;
  mac: string;
}

/** RequestAddress + CreateEndpoint (+ Join): what the plugin sees for one `docker run`. */
export async function addEndpoint(n: PluginNetwork, socket: string, networkId: string, join: boolean): Promise<PluginEndpoint> {
  const mac = randomMac();
  const a = await call<{ Address: string }>(socket, 'IpamDriver.RequestAddress', { PoolID: n.poolId, Address: '', Options: macOpts(mac) });
  const endpointId = dockerId();
  await call(socket, 'NetworkDriver.CreateEndpoint', {
    NetworkID: networkId, EndpointID: endpointId, Interface: { Address: a.Address, AddressIPv6: '', MacAddress: mac }, Options: macOpts(mac),
  });
  if (join) await call(socket, 'NetworkDriver.Join', { NetworkID: networkId, EndpointID: endpointId, SandboxKey: `/var/run/docker/netns/${endpointId.slice(0, 12)}`, Options: {} });
  return { endpointId, address: a.Address, mac };
}

/** Leave + DeleteEndpoint + ReleaseAddress. */
export async function removeEndpoint(n: PluginNetwork, socket: string, networkId: string, ep: PluginEndpoint, leave: boolean): Promise<void> {
  if (leave) await call(socket, 'NetworkDriver.Leave', { NetworkID: networkId, EndpointID: ep.endpointId });
  await call(socket, 'NetworkDriver.DeleteEndpoint', { NetworkID: networkId, EndpointID: ep.endpointId });
  await call(socket, 'IpamDriver.ReleaseAddress', { PoolID: n.poolId, Address: ep.address.split('/')[0] });
}
