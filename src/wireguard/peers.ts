// Which WireGuard peers this host should have, from the hosts' records in the
// store, and the smallest change that gets the device there. Pure functions:
// the manager (index.ts) reads the device and applies the change.
//
// Every other live host that publishes WireGuard is a peer: its public key,
// its endpoint (underlay address and port) and, as its only allowed IP, its
// tunnel address. A host whose lease expired has no record, so it leaves
// every peer list; a host that rotated its key shows up with the new key, and
// the old peer (old key) is removed in the same transaction.
import type { HostRecord } from '../store/keys';
import { isPublicKey } from './keys';
import { isIPv4, splitHostPort } from '../util/ip';
import type { WgDeviceState, WgPeer, WgPeerChange } from './model';

export interface DesiredPeer extends WgPeer {
  host: string;
  tunnel: string;
}


/** Why a host's WireGuard record cannot be used, or undefined if it can. */
export function recordProblem(rec: HostRecord): string | undefined {
  const w = rec.wg;
  if (!w) return 'publishes no WireGuard';
  if (!isPublicKey(w.publicKey)) return 'publishes an invalid WireGuard public key';
  // IPv4:port, or [IPv6]:port over an IPv6 underlay.
  if (typeof w.endpoint !== 'string' || !splitHostPort(w.endpoint)) return `publishes an invalid WireGuard endpoint "${String(w.endpoint).slice(0, 40)}"`;
  if (!isIPv4(w.tunnel ?? '')) return `publishes an invalid tunnel address "${String(w.tunnel).slice(0, 40)}"`;
  return undefined;
}

export interface PeerPlan {
  peers: Map<string, DesiredPeer>;
  /** Hosts left out, and why (for logs and status). */
  skipped: { host: string; why: string }[];
}

export function desiredPeers(hosts: Iterable<[string, HostRecord]>, me: string, keepalive: number, myPublicKey?: string): PeerPlan {
  const peers = new Map<string, DesiredPeer>();
  const skipped: PeerPlan['skipped'] = [];
  const tunnels = new Map<string, string>();
  for (const [host, rec] of [...hosts].sort(([a], [b]) => a.localeCompare(b))) {
    if (host === me) continue;
    const problem = recordProblem(rec);
    if (problem) {
      skipped.push({ host, why: problem });
      continue;
    }
    const w = rec.wg!;
    if (w.publicKey === myPublicKey) {
      skipped.push({ host, why: 'publishes this host\'s own public key (a copied state directory?): give it its own key with weft host rotate-key there' });
      continue;
    }
    const dup = peers.get(w.publicKey);
    if (dup) {
      skipped.push({ host, why: `publishes the same public key as ${dup.host} (a copied state directory?): rotate the key on one of them` });
      continue;
    }
    const other = tunnels.get(w.tunnel);
    if (other) {
      skipped.push({ host, why: `claims the tunnel address ${w.tunnel} of ${other}` });
      continue;
    }
    tunnels.set(w.tunnel, host);
    peers.set(w.publicKey, { host, publicKey: w.publicKey, endpoint: w.endpoint, allowedIps: [`${w.tunnel}/32`], keepalive, tunnel: w.tunnel });
  }
  return { peers, skipped };
}

const sameList = (a: string[], b: string[]) => a.length === b.length && [...a].sort().every((x, i) => x === [...b].sort()[i]);

/**
 * The peer changes that turn the device's peers into the desired ones.
 * `endpointsSet` remembers the endpoint weft last gave each peer: an endpoint
 * that differs only because the peer roamed (WireGuard follows a peer's
 * source address) is left alone until the store says something new.
 */
export function planPeerChanges(device: WgDeviceState, desired: Map<string, WgPeer>, endpointsSet: Map<string, string>): WgPeerChange[] {
  const out: WgPeerChange[] = [];
  const have = new Map(device.peers.map((p) => [p.publicKey, p]));
  for (const p of device.peers) if (!desired.has(p.publicKey)) out.push({ publicKey: p.publicKey, remove: true });
  for (const [pk, want] of desired) {
    const cur = have.get(pk);
    if (!cur) {
      out.push({ publicKey: pk, ...(want.endpoint ? { endpoint: want.endpoint } : {}), allowedIps: want.allowedIps, keepalive: want.keepalive });
      continue;
    }
    const change: WgPeerChange & { remove?: false } = { publicKey: pk, updateOnly: true };
    let changed = false;
    if (want.endpoint && cur.endpoint !== want.endpoint && endpointsSet.get(pk) !== want.endpoint) {
      change.endpoint = want.endpoint;
      changed = true;
    }
    if (!sameList(cur.allowedIps, want.allowedIps)) {
      change.allowedIps = want.allowedIps;
      changed = true;
    }
    if (cur.keepalive !== want.keepalive) {
      change.keepalive = want.keepalive;
      changed = true;
    }
    if (changed) out.push(change);
  }
  return out;
}
