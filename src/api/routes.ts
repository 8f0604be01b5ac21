// The route table: every NetworkDriver and IpamDriver call Docker makes, each
// a thin translation between wire types (wire.ts) and the driver or IPAM.

import type { FastifyInstance } from 'fastify';
import type { Driver } from '../driver/driver';
import { ADDRESS_SPACE, Ipam } from '../ipam/ipam';
import { schemas } from './schemas';
import {
  ActivateResponse, AddressSpacesResponse, CreateEndpointRequest, CreateEndpointResponse, CreateNetworkRequest,
  EndpointOperInfoResponse, EndpointRequest, IpamCapabilities, JoinRequest, JoinResponse, Label, NetworkCapabilities,
  NetworkRequest, ReleaseAddressRequest, ReleasePoolRequest, RequestAddressRequest, RequestAddressResponse,
  RequestPoolRequest, RequestPoolResponse,
} from './wire';

export interface Backend {
  driver: Driver;
  ipam: Ipam;
}

type Handler<Req, Res> = (body: Req) => Promise<Res> | Res;

export function registerRoutes(app: FastifyInstance, b: Backend): void {
  const route = <Req, Res>(path: string, schema: object | undefined, handler: Handler<Req, Res>) => {
    app.post(path, schema ? { schema: { body: schema } } : {}, async (req) => handler(req.body as Req));
  };

  // ---- handshake and capabilities
  route<unknown, ActivateResponse>('/Plugin.Activate', undefined, () => ({ Implements: ['NetworkDriver', 'IpamDriver'] }));
  // Scope must be "local": "global" makes a daemon outside swarm fail every
  // create with "This node is not a swarm manager" (design.md, fact 1).
  route<unknown, NetworkCapabilities>('/NetworkDriver.GetCapabilities', undefined, () => ({ Scope: 'local', ConnectivityScope: 'global' }));
  route<unknown, IpamCapabilities>('/IpamDriver.GetCapabilities', undefined, () => ({ RequiresMACAddress: true, RequiresRequestReplay: true }));
  route<unknown, AddressSpacesResponse>('/IpamDriver.GetDefaultAddressSpaces', undefined, () => ({
    LocalDefaultAddressSpace: ADDRESS_SPACE, GlobalDefaultAddressSpace: ADDRESS_SPACE,
  }));

  // ---- IPAM
  route<RequestPoolRequest, RequestPoolResponse>('/IpamDriver.RequestPool', schemas.RequestPool, async (r) => {
    const { poolId, pool } = await b.ipam.requestPool({ pool: r.Pool || undefined, subPool: r.SubPool || undefined, v6: r.V6 === true });
    return { PoolID: poolId, Pool: pool, Data: {} };
  });
  route<ReleasePoolRequest, object>('/IpamDriver.ReleasePool', schemas.ReleasePool, async (r) => {
    await b.ipam.releasePool(r.PoolID);
    return {};
  });
  route<RequestAddressRequest, RequestAddressResponse>('/IpamDriver.RequestAddress', schemas.RequestAddress, async (r) => {
    const o = r.Options ?? {};
    const address = await b.ipam.requestAddress(r.PoolID, {
      address: r.Address || undefined,
      gateway: o[Label.requestAddressType] === Label.gatewayType,
      mac: o[Label.endpointMac] || undefined,
    });
    return { Address: address, Data: {} };
  });
  route<ReleaseAddressRequest, object>('/IpamDriver.ReleaseAddress', schemas.ReleaseAddress, async (r) => {
    await b.ipam.releaseAddress(r.PoolID, r.Address);
    return {};
  });

  // ---- networks and endpoints
  route<CreateNetworkRequest, object>('/NetworkDriver.CreateNetwork', schemas.CreateNetwork, async (r) => {
    await b.driver.createNetwork(r.NetworkID, r.Options, r.IPv4Data, r.IPv6Data);
    return {};
  });
  route<NetworkRequest, object>('/NetworkDriver.DeleteNetwork', schemas.Network, async (r) => {
    await b.driver.deleteNetwork(r.NetworkID);
    return {};
  });
  route<CreateEndpointRequest, CreateEndpointResponse>('/NetworkDriver.CreateEndpoint', schemas.CreateEndpoint, async (r) => ({
    Interface: await b.driver.createEndpoint(r.NetworkID, r.EndpointID, r.Interface, r.Options),
  }));
  route<EndpointRequest, object>('/NetworkDriver.DeleteEndpoint', schemas.Endpoint, async (r) => {
    await b.driver.deleteEndpoint(r.NetworkID, r.EndpointID);
    return {};
  });
  route<EndpointRequest, EndpointOperInfoResponse>('/NetworkDriver.EndpointOperInfo', schemas.Endpoint, async (r) => ({
    Value: await b.driver.endpointInfo(r.NetworkID, r.EndpointID),
  }));
  route<JoinRequest, JoinResponse>('/NetworkDriver.Join', schemas.Join, async (r) => {
    const { SrcName, routes } = await b.driver.join(r.NetworkID, r.EndpointID, r.SandboxKey);
    // No Gateway: Docker then attaches docker_gwbridge, which gives the
    // container outbound NAT and -p publishing (design.md, fact 2).
    // RouteType 1: connected, on the interface itself.
    return {
      InterfaceName: { SrcName, DstPrefix: 'eth' }, DisableGatewayService: false,
      ...(routes.length ? { StaticRoutes: routes.map((Destination) => ({ Destination, RouteType: 1 })) } : {}),
    };
  });
  route<EndpointRequest, object>('/NetworkDriver.Leave', schemas.Endpoint, async (r) => {
    await b.driver.leave(r.NetworkID, r.EndpointID);
    return {};
  });

  // ---- optional calls: answered so Docker never logs an error for them
  route<unknown, object>('/NetworkDriver.ProgramExternalConnectivity', undefined, () => ({}));
  route<unknown, object>('/NetworkDriver.RevokeExternalConnectivity', undefined, () => ({}));
  route<unknown, object>('/NetworkDriver.DiscoverNew', undefined, () => ({}));
  route<unknown, object>('/NetworkDriver.DiscoverDelete', undefined, () => ({}));
  route<unknown, object>('/NetworkDriver.GwAllocCheck', undefined, () => ({ SkipIPv4: false, SkipIPv6: false }));
  // Only swarm managers call these, and only for global-scope drivers.
  route<unknown, object>('/NetworkDriver.AllocateNetwork', undefined, () => ({ Options: {} }));
  route<unknown, object>('/NetworkDriver.FreeNetwork', undefined, () => ({}));
}
