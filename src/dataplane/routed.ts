// [routed] The kernel side of routed networks (-o mode=routed), used by
// dataplane.ts. Inside the network's namespace:
//   - the gateway address on the bridge, and proxy ARP there: a container
//     asking for a remote address of the segment gets the bridge's MAC, and
//     the namespace routes the packet;
//   - the routed link rt-<id>: a private-mode macvlan on the host's underlay
//     link (the one holding --advertise-addr), created straight into the
//     namespace, with a MAC every peer derives (names.ts routedMac);
//   - per remote endpoint of the segment, a /32 route via its host's address
//     (onlink, protocol WEFT_ROUTE_PROTOCOL) on the routed link, and per such
//     host a permanent neighbour: its address at its routed link's MAC.
// Frames between the routed links of two hosts never enter either host
// namespace: Docker's FORWARD policy, its firewall rules and the host's
// routing table play no part, and weft opens nothing there.
import type { NetworkSpec, PeerState, UnderlayInfo } from './types';
import { LinkInfo, Rtnl, WEFT_ROUTE_PROTOCOL } from './netlink';
import { setSysctlIn, withNsFd } from './netns';

/** A routed network's tables: /32 routes ip -> next hop, and next hops (permanent neighbours on the routed link) ip -> mac. */
export interface RoutedTables {
  routes: Map<string, string>;
  hops: Map<string, string>;
}

export function routedTablesOf(p: PeerState): RoutedTables {
  return {
    routes: new Map((p.routed?.routes ?? []).map((r) => [r.ip, r.via])),
    hops: new Map((p.routed?.nexthops ?? []).map((h) => [h.ip, h.mac.toLowerCase()])),
  };
}

export const isEmpty = (t: RoutedTables): boolean => t.routes.size === 0 && t.hops.size === 0;

/**
 * Namespace-wide settings of a routed network, set before its links exist:
 * forwarding on; no ICMP redirects (a container's packet to an address that
 * moved to the VXLAN path goes back out the bridge it came from); proxy ARP
 * answers at once (the default delays answers to broadcast requests).
 */
export const ROUTED_SYSCTLS: [string, string][] = [
  ['net.ipv4.ip_forward', '1'], ['net.ipv4.conf.all.send_redirects', '0'], ['net.ipv4.conf.default.send_redirects', '0'],
  ['net.ipv4.neigh.default.proxy_delay', '0'],
];

export function setRoutedSysctls(nsPath: string): void {
  for (const [key, value] of ROUTED_SYSCTLS) {
    try {
      setSysctlIn(nsPath, key, value);
    } catch (e) {
      throw new Error(`a routed network needs ${key}=${value} in its namespace: ${(e as Error).message}` +
        (((e as Error).cause as NodeJS.ErrnoException | undefined)?.code === 'EROFS' ? ' (/proc/sys is read-only: run weft as a plain service, not a managed plugin, for routed networks)' : ''), { cause: e });
    }
  }
}

/** The host-namespace link holding `address`, and its on-link prefix. */
export async function findUnderlay(host: Rtnl, address: string): Promise<(UnderlayInfo & { index: number }) | undefined> {
  const a = (await host.listAddresses()).find((x) => x.ip === address);
  if (!a) return undefined;
  const link = (await host.listLinks()).find((l) => l.index === a.index);
  if (!link) return undefined;
  const mask = a.prefixLen === 0 ? 0 : (0xffffffff << (32 - a.prefixLen)) >>> 0;
  const n = (address.split('.').reduce((acc, o) => (acc << 8) + Number(o), 0) & mask) >>> 0;
  const net = [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
  return { link: link.name, index: link.index, cidr: `${net}/${a.prefixLen}`, mtu: link.mtu ?? 1500 };
}

export interface RoutedLinkContext {
  spec: NetworkSpec;
  /** Socket in the network's namespace, and in the host namespace. */
  ns: Rtnl;
  host: Rtnl;
  br: LinkInfo;
  links: Map<string, LinkInfo>;
  log: { info(o: object, m: string): void; warn(o: object, m: string): void };
  mustGet(ns: Rtnl, name: string): Promise<LinkInfo>;
  fixLink(ns: Rtnl, l: LinkInfo, want: { mac?: string; up?: boolean }): Promise<boolean>;
}

/**
 * The gateway address and proxy ARP on the bridge, and the routed link. True
 * when the routed link was made anew (its routes and next hops are then gone).
 */
export async function ensureRoutedLink(c: RoutedLinkContext): Promise<boolean> {
  const { spec, ns, br, log } = c;
  const r = spec.routed!;
  if (!/^\d{1,3}(\.\d{1,3}){3}$/.test(r.gateway) || !(r.prefixLen >= 1 && r.prefixLen <= 30)) {
    throw new Error(`routed mode needs a gateway address and a prefix length (got ${r.gateway}/${r.prefixLen})`);
  }
  if (await ns.addAddress(br.index, r.gateway, r.prefixLen)) log.info({ network: spec.id, address: `${r.gateway}/${r.prefixLen}` }, 'gateway address put on the bridge (routed)');
  let mv = c.links.get(r.name);
  let made = false;
  if (mv && mv.kind !== 'macvlan') {
    log.warn({ network: spec.id, link: mv.name, kind: mv.kind }, 'replacing a link that is not a macvlan');
    await ns.delLink(mv.index);
    mv = undefined;
  }
  if (!mv) {
    const under = await findUnderlay(c.host, r.local);
    if (!under) {
      // This host then reaches every peer through VXLAN (the agent finds no segment either): say so, do not fail the network.
      log.warn({ network: spec.id, address: r.local }, 'routed network: no link in the host namespace holds the advertise address; every peer goes through VXLAN');
      return false;
    }
    await withNsFd(spec.nsPath, (nsFd) => c.host.createMacvlan({ name: r.name, lower: under.index, mac: r.mac, mtu: under.mtu, nsFd }));
    mv = await c.mustGet(ns, r.name);
    log.info({ network: spec.id, link: r.name, lower: under.link, mac: r.mac }, 'routed link created');
    made = true;
  }
  await c.fixLink(ns, mv, { mac: r.mac, up: true });
  setSysctlIn(spec.nsPath, `net.ipv4.conf.${spec.bridge}.proxy_arp`, '1');
  setSysctlIn(spec.nsPath, `net.ipv4.neigh.${spec.bridge}.proxy_delay`, '0');
  // The routed link has no address: it never answers ARP from the underlay.
  setSysctlIn(spec.nsPath, `net.ipv4.conf.${r.name}.arp_ignore`, '8');
  return made;
}

/** weft's /32 routes and permanent next hops on the routed link `mv`. */
export async function readRoutedTables(ns: Rtnl, mv: number): Promise<RoutedTables> {
  const routes = new Map<string, string>();
  for (const r of await ns.listRoutes()) {
    if (r.oif === mv && r.protocol === WEFT_ROUTE_PROTOCOL && r.dstLen === 32 && r.via) routes.set(r.dst, r.via);
  }
  const hops = new Map<string, string>();
  for (const e of await ns.listNeighbours()) if (e.ifindex === mv && e.permanent && e.ip && e.mac) hops.set(e.ip, e.mac);
  return { routes, hops };
}

/** What moves the tables from `have` to `want`: one route operation per endpoint that changed (a moved one is a replace), one neighbour operation per next hop. */
export function routedChanges(have: RoutedTables, want: RoutedTables): { routeDel: string[]; routeSet: [string, string][]; hopDel: string[]; hopSet: [string, string][] } {
  return {
    routeDel: [...have.routes.keys()].filter((ip) => !want.routes.has(ip)),
    routeSet: [...want.routes].filter(([ip, via]) => have.routes.get(ip) !== via),
    hopDel: [...have.hops.keys()].filter((ip) => !want.hops.has(ip)),
    hopSet: [...want.hops].filter(([ip, m]) => have.hops.get(ip) !== m),
  };
}
