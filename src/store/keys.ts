// The cluster key layout, in one place. Every key weft writes starts with
// /weft/v1/ so that a future layout can live beside this one during an upgrade.
//
//   hosts/<host>                 {address, version, startedAt, instance}  under the host's lease
//   subnets                      {<poolKey>: <subnet>}                guard: every pool creation or deletion CASes it,
//                                                                      so two hosts never create overlapping pools
//   pools/<poolKey>              PoolRecord                           one per subnet
//   addrs/<poolKey>/<ip>         AddressRecord                        created only if absent
//   networks/<clusterId>         NetworkRecord
//   bindings/<clusterId>/<host>  {localId}                            the Docker network id of the network on that host
//   vnis/<vni>                   {network, at?}                       created only if absent, with the network record
//   endpoints/<clusterId>/<id>   EndpointRecord
//   names/<clusterId>/<id>       NameRecord                           under the lease of the endpoint's host (DNS, src/dns)
//   askers/<host>/<ip>           AskerRecord                          under the host's lease: who may ask for which names
//   tunnels/<ip>                 TunnelRecord                         [wireguard] a host's WireGuard tunnel address, created
//                                                                      only if absent; kept across restarts, released by host rm

export const ROOT = '/weft/v1/';

export const keys = {
  host: (host: string) => `${ROOT}hosts/${host}`,
  hosts: () => `${ROOT}hosts/`,
  subnets: () => `${ROOT}subnets`,
  pool: (poolKey: string) => `${ROOT}pools/${poolKey}`,
  pools: () => `${ROOT}pools/`,
  addr: (poolKey: string, ip: string) => `${ROOT}addrs/${poolKey}/${ip}`,
  addrs: (poolKey: string) => `${ROOT}addrs/${poolKey}/`,
  allAddrs: () => `${ROOT}addrs/`,
  network: (clusterId: string) => `${ROOT}networks/${clusterId}`,
  networks: () => `${ROOT}networks/`,
  binding: (clusterId: string, host: string) => `${ROOT}bindings/${clusterId}/${host}`,
  bindingsOf: (clusterId: string) => `${ROOT}bindings/${clusterId}/`,
  bindings: () => `${ROOT}bindings/`,
  vni: (vni: number) => `${ROOT}vnis/${vni}`,
  vnis: () => `${ROOT}vnis/`,
  endpoint: (clusterId: string, endpointId: string) => `${ROOT}endpoints/${clusterId}/${endpointId}`,
  endpointsOf: (clusterId: string) => `${ROOT}endpoints/${clusterId}/`,
  endpoints: () => `${ROOT}endpoints/`,
  name: (clusterId: string, endpointId: string) => `${ROOT}names/${clusterId}/${endpointId}`,
  names: () => `${ROOT}names/`,
  asker: (host: string, ip: string) => `${ROOT}askers/${host}/${ip}`,
  askersOf: (host: string) => `${ROOT}askers/${host}/`,
  askers: () => `${ROOT}askers/`,
  // [wireguard] encrypted networks (src/wireguard)
  tunnel: (ip: string) => `${ROOT}tunnels/${ip}`,
  tunnels: () => `${ROOT}tunnels/`,
};

/** Last path segment of a key. */
export const leaf = (key: string) => key.slice(key.lastIndexOf('/') + 1);

/** What a key of the layout above names: the one place keys are taken apart. */
export type ParsedKey =
  | { kind: 'host'; host: string }
  | { kind: 'subnets' }
  | { kind: 'pool'; pool: string }
  | { kind: 'addr'; pool: string; ip: string }
  | { kind: 'network'; network: string }
  | { kind: 'binding'; network: string; host: string }
  | { kind: 'vni'; vni: string }
  | { kind: 'endpoint'; network: string; endpoint: string }
  | { kind: 'name'; network: string; endpoint: string }
  | { kind: 'asker'; host: string; ip: string }
  | { kind: 'tunnel'; ip: string };

/**
 * Parses a key of the layout; undefined for anything else (another layout's
 * keys, a key of a newer weft, a key written by hand with the wrong shape),
 * which every reader skips.
 */
export function parseKey(key: string): ParsedKey | undefined {
  if (!key.startsWith(ROOT)) return undefined;
  const p = key.slice(ROOT.length).split('/');
  if (p.some((x) => x === '')) return undefined;
  switch (p[0]) {
    case 'hosts': return p.length === 2 ? { kind: 'host', host: p[1] } : undefined;
    case 'subnets': return p.length === 1 ? { kind: 'subnets' } : undefined;
    case 'pools': return p.length === 2 ? { kind: 'pool', pool: p[1] } : undefined;
    case 'addrs': return p.length === 3 ? { kind: 'addr', pool: p[1], ip: p[2] } : undefined;
    case 'networks': return p.length === 2 ? { kind: 'network', network: p[1] } : undefined;
    case 'bindings': return p.length === 3 ? { kind: 'binding', network: p[1], host: p[2] } : undefined;
    case 'vnis': return p.length === 2 ? { kind: 'vni', vni: p[1] } : undefined;
    case 'endpoints': return p.length === 3 ? { kind: 'endpoint', network: p[1], endpoint: p[2] } : undefined;
    case 'names': return p.length === 3 ? { kind: 'name', network: p[1], endpoint: p[2] } : undefined;
    case 'askers': return p.length === 3 ? { kind: 'asker', host: p[1], ip: p[2] } : undefined;
    case 'tunnels': return p.length === 2 ? { kind: 'tunnel', ip: p[1] } : undefined;
    default: return undefined;
  }
}

/** The first part of a key or prefix after /weft/v1/ ("endpoints", "addrs", ...), "all" for the whole tree, "other" outside it (the metrics' key areas). */
export function areaOf(key: string): string {
  if (!key.startsWith(ROOT)) return 'other';
  const rest = key.slice(ROOT.length);
  if (rest === '') return 'all';
  const slash = rest.indexOf('/');
  return slash < 0 ? rest : rest.slice(0, slash);
}

export interface HostRecord {
  address: string;
  version: string;
  startedAt: string;
  /** The registering weft process's random id (added in 0.2; older wefts leave it out). */
  instance?: string;
  /** [wireguard] How to reach this host encrypted. Absent when it has no WireGuard (older weft, --encryption off, not ready). */
  wg?: HostWireGuard;
  /**
   * [routed] The on-link prefix of `address` on this host ("192.0.2.0/24"):
   * hosts that publish the same one share an underlay segment, and routed
   * networks go unencapsulated between them. Absent (older weft, address on
   * no local link): every routed network reaches this host through VXLAN.
   */
  underlay?: string;
}

/** [wireguard] What a host publishes of its WireGuard: never more than public values. */
export interface HostWireGuard {
  /** base64 Curve25519 public key */
  publicKey: string;
  /** "underlay-ip:port" where its WireGuard listens */
  endpoint: string;
  /** its tunnel address (the VTEP of encrypted networks), inside --wg-subnet */
  tunnel: string;
  /** 'kernel' or 'userspace' */
  implementation: string;
}

/** [wireguard] The claim on a tunnel address. */
export interface TunnelRecord { host: string; at: string }

export interface PoolRecord {
  subnet: string;
  /** --ip-range: addresses for containers come only from here. */
  ipRange?: string;
  /** Set by the first gateway request; every host's repeat of it gets the same address. */
  gateway?: string;
  /** Cluster network that owns the pool; unset between RequestPool and CreateNetwork. An IPv6 pool (fd00:40::_64) is a pool like any other. */
  network?: string;
  createdBy: string;
  createdAt: string;
}

export interface AddressRecord {
  host: string;
  kind: 'endpoint' | 'aux';
  mac?: string;
  /** When it was allocated (ISO time): the garbage collector leaves young ones alone. */
  at?: string;
}

export interface NetworkRecord {
  /** Docker network name, learned from the Docker engine after creation (CreateNetwork does not carry it). */
  name?: string;
  subnet?: string;
  poolId?: string;
  gateway?: string;
  ipRange?: string;
  /** The IPv6 side of a dual-stack or IPv6-only network (--ipv6): subnet, pool, gateway, --ip-range. */
  subnet6?: string;
  poolId6?: string;
  gateway6?: string;
  ipRange6?: string;
  /** false for an IPv6-only network (Docker 28, --ipv4=false): no subnet, poolId, gateway. Absent: IPv4 on. */
  ipv4?: boolean;
  vni: number;
  mtu: number;
  /** The -o options the network was created with, replayed when it is created on other hosts. */
  options: Record<string, string>;
  internal: boolean;
  /**
   * What else `docker network inspect` shows of the original and Docker lets a
   * plugin's network carry, learned with its name and given to every copy (so
   * that `docker compose` on another host finds its own labels). Absent in
   * records written before weft 0.2.
   */
  labels?: Record<string, string>;
  attachable?: boolean;
  ipamOptions?: Record<string, string>;
  createdBy: string;
  createdAt: string;
  /** Set when the network was removed on some host: every host removes its copy, the last one deletes the record. */
  deleting?: boolean;
  /**
   * [wireguard] Traffic between hosts goes through WireGuard (-o encrypted, or --encryption all).
   * Set at creation, never changed. options.encrypted is set too, so that a weft
   * that predates encrypted networks (it refuses options it does not know) never makes a copy
   * of the network, which it would run unencrypted.
   */
  encrypted?: boolean;
}

export interface BindingRecord { localId: string }

export interface EndpointRecord {
  host: string;
  /** Underlay address of the endpoint's host: where VXLAN frames for its MAC go. */
  vtep: string;
  /** IPv4 address; empty on an IPv6-only network. */
  ip: string;
  /** IPv6 address (canonical), on a network with IPv6. */
  ip6?: string;
  mac: string;
  localNetwork: string;
  /** When it was created (ISO time): the garbage collector leaves young ones alone. */
  createdAt?: string;
}

/** A container's names on one weft network, for DNS (written by the agent of the container's host, from its Docker engine). */
export interface NameRecord {
  /** Container name, without Docker's leading '/'. */
  name: string;
  /** --network-alias values on this network (Docker adds the short container id too). */
  aliases: string[];
  /** IPv4 address; empty on an IPv6-only network. */
  ip: string;
  /** IPv6 address, on a network with IPv6: AAAA answers. */
  ip6?: string;
  /**
   * The container runs with IPv6 off (--sysctl net.ipv6.conf.all.disable_ipv6=1):
   * no AAAA for it, whatever address Docker 20.10 still reserved for it.
   */
  ipv6Off?: boolean;
  host: string;
  /** Docker name of the network (the same on every host). */
  network: string;
  /** Docker container id on that host. */
  container: string;
}

/**
 * A source address that DNS queries from a local container arrive with (its
 * docker_gwbridge address, or its address on another non-weft network), and
 * the weft networks (cluster ids) whose names that container may resolve.
 */
export interface AskerRecord {
  networks: string[];
  container: string;
  name: string;
}
