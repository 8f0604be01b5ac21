// What the local admin route GET /weft/v1/status answers, and `weft status`
// prints. Plain JSON: `weft status --json` passes it through unchanged.
import type { AgentStats } from '../agent/agent';
import type { WireGuardStatus } from '../wireguard';

export interface PeerEntry {
  /**
   * "endpoint": a remote container (FDB + neighbour entry); "flood": a host that gets broadcasts;
   * [routed] "route": this host's container's /32 route on the routed link; "proxy": the routed link answers ARP for a container of another segment.
   */
  kind: 'endpoint' | 'flood' | 'route' | 'proxy';
  ip?: string;
  /** Its IPv6 address (an IPv6 neighbour entry), on a network with IPv6. */
  ip6?: string;
  mac?: string;
  vtep: string;
  /** Only this half of an endpoint's entries is missing (the other is in the kernel). */
  part?: 'fdb' | 'neighbour';
}

export interface PeerReport {
  /** Remote endpoints (both FDB and neighbour entry present) plus flood entries in the kernel. */
  programmed: number;
  /** The same, as the store says they should be. */
  expected: number;
  missing: PeerEntry[];
  extra: PeerEntry[];
  /** missing + extra: 0 when the kernel matches the store. */
  drift: number;
  /** Set when the kernel could not be read (namespace or VXLAN device missing: the reconcile recreates it). */
  error?: string;
}

/** [routed] The path a routed network takes to one peer host. */
export interface PeerPath {
  host: string;
  address: string;
  /** 'routed': unencapsulated (same underlay segment); 'vxlan': the fallback (another segment, or the peer publishes none). */
  path: 'routed' | 'vxlan';
  /** The peer's published underlay segment, if any. */
  underlay?: string;
}

export interface LocalEndpointReport {
  id: string;
  /** Container name from this host's Docker engine, when it answered. */
  container?: string;
  ip: string;
  ip6?: string;
  mac: string;
}

export interface NetworkReport {
  clusterId: string;
  localId: string;
  name?: string;
  vni: number;
  subnet?: string;
  gateway?: string;
  subnet6?: string;
  gateway6?: string;
  mtu: number;
  deleting?: boolean;
  /** [wireguard] traffic between hosts goes through WireGuard */
  encrypted?: boolean;
  /** 'routed' for -o mode=routed (absent: vxlan). */
  mode?: 'routed';
  /** [routed] How this host reaches each other host with endpoints on the network. */
  paths?: PeerPath[];
  endpoints: LocalEndpointReport[];
  peers: PeerReport;
}

export interface StatusReport {
  host: string;
  version: string;
  /** the Node.js runtime, e.g. "node 24.22.3" (absent from weft before 0.2) */
  runtime?: string;
  pid: number;
  startedAt: string;
  /** true with etcd (VXLAN between hosts), false with the embedded store. */
  cluster: boolean;
  advertiseAddr?: string;
  store: { description: string; reachable: boolean; latencyMs?: number; error?: string };
  /** alive: null with the embedded store (no lease). */
  lease: { alive: boolean | null; ttlSeconds: number; detail?: string };
  agent: AgentStats;
  reconcileIntervalSeconds: number;
  docker?: { error: string };
  networks: NetworkReport[];
  /** Sum of every network's drift. */
  drift: number;
  /** [wireguard] This host's WireGuard (absent: --encryption off, or one host). */
  wireguard?: WireGuardStatus;
}
