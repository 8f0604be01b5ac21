// What the data plane is told to program. The data plane turns this desired
// state into kernel state through netlink and reads kernel state back for the
// reconcile. It never reads the cluster store: the agent and the driver decide
// what each host should have.
//
// Layout in the kernel (the same as Docker's own overlay driver):
//   - per network, a network namespace of its own, pinned at
//     <runDir>/netns/<nsName>, holding a bridge (no IP address) and, in cluster
//     mode, a VXLAN device enslaved to it. A namespace of its own keeps bridged
//     traffic out of the host's iptables (dockerd sets FORWARD to DROP and
//     br_netfilter sends bridged frames through it).
//   - per endpoint, a veth pair: one end on the bridge inside the network
//     namespace, the other end in the host namespace, handed to Docker in Join
//     (Docker moves it into the container and renames it ethN). Routed
//     networks give the container a macvlan on the underlay link instead.

export interface VxlanSpec {
  /** Device name inside the network namespace, at most 15 characters. */
  name: string;
  vni: number;
  /**
   * This host's advertise (underlay) address: the VTEP's source address. IPv4,
   * or IPv6 for VXLAN over IPv6 (then every FDB destination is IPv6 too).
   */
  local: string;
  /** UDP destination port, 4789 by default. */
  port: number;
  /** MTU of the VXLAN device: underlay MTU minus 50 (minus 70 over an IPv6 underlay). */
  mtu: number;
  /**
   * [wireguard] Encrypted networks: the namespace the VXLAN device's UDP socket
   * lives in (WireGuard's, where `local` is this host's tunnel address), instead
   * of the host namespace.
   */
  socketNetns?: string;
}

/**
 * Routed mode (`-o mode=routed`): every container's interface is a macvlan on
 * this host's underlay link, so containers of hosts on one underlay segment
 * reach each other straight over it, with no host in between. For hosts on
 * other segments, the network's namespace routes: its routed link (a macvlan
 * on the same underlay link) answers ARP for their addresses (proxy entries)
 * to this host's containers only, and sends their packets through the VXLAN
 * device, to the bridge MAC of the host that has them.
 */
export interface RoutedSpec {
  /** macvlan name inside the network namespace (rt-<id>). */
  name: string;
  /** This host's advertise address: the macvlans go on the host-namespace link that holds it. */
  local: string;
  /** The routed link's MAC, derived from (advertise address, VNI) (names.ts routedMac). */
  mac: string;
  /**
   * The MAC of the namespace's bridge, derived from (advertise address, VNI)
   * (names.ts routedBridgeMac): peers on other segments send this host's
   * containers' packets, through VXLAN, to it.
   */
  bridgeMac: string;
  /** The network's gateway address, put on the bridge: the namespace's connected route to the subnet. */
  gateway: string;
  /** The subnet's prefix length. */
  prefixLen: number;
}

export interface NetworkSpec {
  /** Short stable id of the cluster network (10 hex digits), used to derive every name. */
  id: string;
  /** Path of the bind mount that pins the network namespace. */
  nsPath: string;
  /** Bridge name inside the network namespace. */
  bridge: string;
  /** MTU of every link of this network (bridge, veths, VXLAN). */
  mtu: number;
  /** Present in cluster mode. */
  vxlan?: VxlanSpec;
  /** Present for routed networks in cluster mode (the VXLAN device stays, for peers on other segments). */
  routed?: RoutedSpec;
}

export interface EndpointSpec {
  /** Name of the end handed to Docker (host namespace), at most 15 characters. */
  hostIf: string;
  /** Name of the end on the bridge (network namespace), at most 15 characters. */
  bridgeIf: string;
  /** MAC of the container's interface, "02:42:0a:28:00:02". */
  mac: string;
  mtu: number;
  /** [routed] The endpoint's IPv4 address: announced on the underlay segment from its new interface. */
  ip?: string;
}

/** A remote endpoint on another host: programs an FDB entry (mac -> vtep) and a permanent neighbour (ip -> mac). */
export interface RemoteEndpoint {
  /** IPv4 address; empty for an endpoint of an IPv6-only network. */
  ip: string;
  /** IPv6 address: a permanent IPv6 neighbour too (neighbour solicitations answered by the VXLAN device). */
  ip6?: string;
  mac: string;
  vtep: string;
}

/** Everything a network's VXLAN device should forward to. */
export interface PeerState {
  endpoints: RemoteEndpoint[];
  /** Underlay addresses of every other host with endpoints on the network: all-zero FDB entries for broadcast and multicast. */
  floodVteps: string[];
  /** Routed networks: this host's containers and the addresses its routed link answers for (see RoutedPeers). */
  routed?: RoutedPeers;
}

/**
 * [routed] What a routed network's namespace holds besides the VXLAN tables.
 * Containers of hosts on this host's segment need nothing: they are reached
 * straight on the underlay.
 */
export interface RoutedPeers {
  /** This host's containers: a /32 route each on the routed link (packets that came through VXLAN go to them). */
  local: string[];
  /** Containers of hosts on other segments: a proxy entry each on the routed link (this host's containers send them to it). */
  proxies: string[];
}

/** What programPeers changed: the reconcile counts these as corrections. */
export interface PeerDiff {
  added: number;
  removed: number;
}

/**
 * Kernel operations on a network's forwarding tables since the data plane
 * started, by table: what a change costs (counted, not timed).
 */
export interface PeerOpCounts {
  fdb: number;
  neighbour: number;
  /** Routed networks: /32 route operations (their proxy entries count as neighbour operations). */
  route: number;
}

/** This host's underlay as the data plane finds it: the link holding the advertise address, and its on-link prefix. */
export interface UnderlayInfo {
  link: string;
  /** e.g. "192.0.2.0/24": hosts with the same value are on one segment (routed mode goes unencapsulated between them). */
  cidr: string;
  mtu: number;
}

/** The data plane as the driver and the agent use it (implemented by DataPlane in dataplane.ts). */
export interface DataPlaneApi {
  /**
   * Makes the network's namespace, bridge and VXLAN device match the spec.
   * Resolves true when the namespace or the VXLAN device was made anew (its
   * forwarding tables are empty: what was programmed before is gone), false
   * when they were there; an implementation that cannot tell resolves
   * undefined, taken as true.
   */
  ensureNetwork(spec: NetworkSpec): Promise<boolean | void>;
  deleteNetwork(spec: NetworkSpec): Promise<void>;
  createEndpoint(net: NetworkSpec, ep: EndpointSpec): Promise<void>;
  deleteEndpoint(net: NetworkSpec, ep: EndpointSpec): Promise<void>;
  /** Reads the kernel's tables and makes them `desired` (restart, reconcile): costs a dump of both tables. */
  programPeers(net: NetworkSpec, desired: PeerState): Promise<PeerDiff>;
  /**
   * Moves the tables from `from` (what was last programmed, as the caller
   * remembers it) to `to` without reading the kernel: one FDB and one
   * neighbour operation per endpoint that changed (moby's peerdb way).
   */
  changePeers(net: NetworkSpec, from: PeerState, to: PeerState): Promise<PeerDiff>;
  /** Operations on forwarding tables so far. */
  peerOps(): PeerOpCounts;
  /** Gratuitous ARP (IPv4) or unsolicited neighbour advertisement (IPv6) for ip at mac on the network's bridge. */
  announce(net: NetworkSpec, ip: string, mac: string): Promise<void>;
  /** [routed] "ip is at the routed link's MAC", to each of this host's containers `to` (their MACs): a remote address now behind a proxy entry. */
  announceRouted(net: NetworkSpec, ip: string, to: string[]): Promise<void>;
  readPeers(net: NetworkSpec): Promise<PeerState>;
  /** The host-namespace link that holds `address` and its on-link prefix; undefined when no link holds it. */
  underlayOf(address: string): Promise<UnderlayInfo | undefined>;
  listNetworkIds(): Promise<string[]>;
  close(): Promise<void> | void;
}
