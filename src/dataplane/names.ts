// Kernel names derived from ids, never stored: a restarted weft recomputes them
// and finds its links. Linux caps interface names at 15 characters.
//
//   network  id 10 hex          short id (below)
//            netns              <runDir>/netns/weft-<id>
//            bridge             br-<id>     (13 chars, inside the network's namespace)
//            vxlan              vx-<id>     (13 chars, inside the network's namespace)
//            routed link        rt-<id>     (13 chars, macvlan on the underlay, inside the network's namespace)
//   endpoint hostIf             wft<id>     (13 chars, host namespace, handed to Docker)
//            bridgeIf           wfb<id>     (13 chars, network namespace, on the bridge)
//
// The short id is the first 10 hex digits of the id when the id is hex (Docker
// and weft ids are 64 hex digits: 40 bits make a clash between two live ids
// of one host vanishingly unlikely), otherwise the first 10 hex digits of its
// SHA-256, so any string maps to a valid, stable name.
import { createHash } from 'crypto';
import * as path from 'path';

export const MAX_IFNAME = 15;
export const NETNS_PREFIX = 'weft-';
const SHORT = 10;

export function shortId(id: string): string {
  if (id.length === 0) throw new Error('cannot derive a name from an empty id');
  if (/^[0-9a-fA-F]+$/.test(id) && id.length >= SHORT) return id.slice(0, SHORT).toLowerCase();
  return createHash('sha256').update(id).digest('hex').slice(0, SHORT);
}

export interface NetworkNames {
  id: string;
  nsPath: string;
  bridge: string;
  vxlan: string;
  routed: string;
}

export function networkNames(clusterNetworkId: string, runDir: string): NetworkNames {
  const id = shortId(clusterNetworkId);
  return { id, nsPath: path.join(runDir, 'netns', NETNS_PREFIX + id), bridge: `br-${id}`, vxlan: `vx-${id}`, routed: `rt-${id}` };
}

/** The short network id from a namespace file name, or undefined if the name is not one of ours. */
export function networkIdFromNetnsName(name: string): string | undefined {
  const m = new RegExp(`^${NETNS_PREFIX}([0-9a-f]{${SHORT}})$`).exec(name);
  return m ? m[1] : undefined;
}

export interface EndpointNames {
  hostIf: string;
  bridgeIf: string;
}

export function endpointNames(endpointId: string): EndpointNames {
  const id = shortId(endpointId);
  return { hostIf: `wft${id}`, bridgeIf: `wfb${id}` };
}

/**
 * The MAC of a host's routed link (macvlan) on a routed network: derived from
 * the host's advertise address and the network's VNI, so every peer computes
 * it without asking. Locally administered, unicast (first octet 0x06), 40
 * bits of SHA-256: distinct for every (host, network) of a segment.
 */
export function routedMac(address: string, vni: number): string {
  const h = createHash('sha256').update(`weft-routed|${vni}|${address}`).digest();
  return ['06', ...[...h.subarray(0, 5)].map((b) => b.toString(16).padStart(2, '0'))].join(':');
}

/**
 * The MAC of a host's bridge in a routed network's namespace, derived like
 * routedMac (first octet 0x0a: another value than the routed link's): hosts
 * on other segments send, through VXLAN, the packets for this host's
 * containers to it, and the namespace routes them on.
 */
export function routedBridgeMac(address: string, vni: number): string {
  const h = createHash('sha256').update(`weft-routed-bridge|${vni}|${address}`).digest();
  return ['0a', ...[...h.subarray(0, 5)].map((b) => b.toString(16).padStart(2, '0'))].join(':');
}
