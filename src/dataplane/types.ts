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
//     (Docker moves it into the container and renames it ethN).

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
}

export interface EndpointSpec {
  /** Name of the end handed to Docker (host namespace), at most 15 characters. */
  hostIf: string;
  /** Name of the end on the bridge (network namespace), at most 15 characters. */
  bridgeIf: string;
  /** MAC of the container's interface, "02:42:0a:28:00:02". */
  mac: string;
  mtu: number;
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
  readPeers(net: NetworkSpec): Promise<PeerState>;
  listNetworkIds(): Promise<string[]>;
  close(): Promise<void> | void;
}
