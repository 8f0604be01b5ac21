// Wire types of Docker's remote NetworkDriver and IpamDriver plugin APIs, as
// the daemon sends them (Go struct names, PascalCase, no JSON tags). Kept apart
// from logic, like libnetwork's drivers/remote/api. See
// ../shared/docs/cnm-plugin-api.md for when each call is made.


// ---- Plugin ----
export interface ActivateResponse { Implements: string[] }

// ---- NetworkDriver ----
export interface NetworkCapabilities { Scope: 'local' | 'global'; ConnectivityScope: 'local' | 'global' }

export interface IPAMData {
  AddressSpace?: string;
  Pool: string;
  Gateway?: string;
  AuxAddresses?: Record<string, string>;
}

export interface CreateNetworkRequest {
  NetworkID: string;
  Options?: Options | null;
  IPv4Data?: IPAMData[] | null;
  IPv6Data?: IPAMData[] | null;
}

export interface NetworkRequest { NetworkID: string }

export interface EndpointInterface { Address?: string; AddressIPv6?: string; MacAddress?: string }

export interface CreateEndpointRequest {
  NetworkID: string;
  EndpointID: string;
  Interface?: EndpointInterface | null;
  Options?: Options | null;
}
export interface CreateEndpointResponse { Interface: EndpointInterface | null }

export interface EndpointRequest { NetworkID: string; EndpointID: string }
export interface EndpointOperInfoResponse { Value: Record<string, unknown> }

export interface JoinRequest { NetworkID: string; EndpointID: string; SandboxKey: string; Options?: Options | null }
export interface JoinResponse {
  InterfaceName: { SrcName: string; DstPrefix: string };
  Gateway?: string;
  GatewayIPv6?: string;
  StaticRoutes?: { Destination: string; RouteType: number; NextHop?: string }[];
  DisableGatewayService?: boolean;
}

// ---- IpamDriver ----
export interface IpamCapabilities { RequiresMACAddress: boolean; RequiresRequestReplay: boolean }
export interface AddressSpacesResponse { LocalDefaultAddressSpace: string; GlobalDefaultAddressSpace: string }

export interface RequestPoolRequest {
  AddressSpace?: string;
  Pool?: string;
  SubPool?: string;
  Options?: Record<string, string> | null;
  V6?: boolean;
}
export interface RequestPoolResponse { PoolID: string; Pool: string; Data: Record<string, string> }
export interface ReleasePoolRequest { PoolID: string }

export interface RequestAddressRequest { PoolID: string; Address?: string; Options?: Record<string, string> | null }
export interface RequestAddressResponse { Address: string; Data: Record<string, string> }
export interface ReleaseAddressRequest { PoolID: string; Address: string }

import type { Options } from '../driver/labels';

// Option keys and the options map live with the driver, which interprets them.
export { Label, type Options } from '../driver/labels';
