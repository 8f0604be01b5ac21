// [routed] The kernel side of routed networks (-o mode=routed), used by
// dataplane.ts.
//   - Each container's interface is a macvlan (bridge mode) on the host's
//     underlay link (the one holding --advertise-addr), made in the host
//     namespace and handed to Docker. Containers of hosts on one segment talk
//     straight over the underlay: no host namespace, no network namespace, no
//     route, no table entry on the way (as fast as the underlay itself).
//   - Inside the network's namespace, the routed link rt-<id>: a macvlan
//     (bridge mode) on the same underlay link, so it reaches this host's
//     containers without the wire. It holds a proxy entry for each container
//     of a host on another segment (this host's containers ARP for it and get
//     the routed link's MAC) and a /32 route for each container of this host
//     (packets from other segments, decapsulated here, go on to them). Strict
//     reverse-path filtering on it makes it answer only this host's
//     containers: another host's container asking is not routed back here.
//   - Containers of other segments are reached through the VXLAN device, at
//     the bridge MAC of their host (names.ts routedBridgeMac): one FDB entry
//     per host, a neighbour entry per container.
// Docker's FORWARD policy, its firewall rules and the host's routing table
// play no part, and weft opens nothing in the host namespace.
import type { NetworkSpec, PeerState, UnderlayInfo } from './types';
import { LinkInfo, MACVLAN_MODE_BRIDGE, Rtnl, WEFT_ROUTE_PROTOCOL } from './netlink';
import { setSysctlIn, withNsFd } from './netns';

/** A routed network's tables on the routed link: /32 routes to this host's containers, proxy entries for other segments' containers. */
export interface RoutedTables {
  local: Set<string>;
  proxies: Set<string>;
}

export function routedTablesOf(p: PeerState): RoutedTables {
  return { local: new Set(p.routed?.local ?? []), proxies: new Set(p.routed?.proxies ?? []) };
}

export const isEmpty = (t: RoutedTables): boolean => t.local.size === 0 && t.proxies.size === 0;

/**
 * Namespace-wide settings of a routed network, set before its links exist:
 * forwarding on; no ICMP redirects (a container's packet for another
 * segment goes back out the link it came in on, toward VXLAN's bridge).
 */
export const ROUTED_SYSCTLS: [string, string][] = [
  ['net.ipv4.ip_forward', '1'], ['net.ipv4.conf.all.send_redirects', '0'], ['net.ipv4.conf.default.send_redirects', '0'],
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
 * The gateway address on the bridge (the namespace's connected route to the
 * subnet, toward VXLAN), the bridge's derived MAC, and the routed link. True
 * when the routed link was made anew (its routes and proxy entries are then
 * gone).
 */
export async function ensureRoutedLink(c: RoutedLinkContext): Promise<boolean> {
  const { spec, ns, br, log } = c;
  const r = spec.routed!;
  if (!/^\d{1,3}(\.\d{1,3}){3}$/.test(r.gateway) || !(r.prefixLen >= 1 && r.prefixLen <= 30)) {
    throw new Error(`routed mode needs a gateway address and a prefix length (got ${r.gateway}/${r.prefixLen})`);
  }
  if (await ns.addAddress(br.index, r.gateway, r.prefixLen)) log.info({ network: spec.id, address: `${r.gateway}/${r.prefixLen}` }, 'gateway address put on the bridge (routed)');
  await c.fixLink(ns, br, { mac: r.bridgeMac });
  let mv = c.links.get(r.name);
  let made = false;
  // Bridge mode, or this host's containers (macvlans of the same link) cannot reach it: an older weft made it private.
  if (mv && (mv.kind !== 'macvlan' || (mv.macvlanMode !== undefined && mv.macvlanMode !== MACVLAN_MODE_BRIDGE))) {
    log.warn({ network: spec.id, link: mv.name, kind: mv.kind, mode: mv.macvlanMode }, 'replacing a link that is not a macvlan in bridge mode');
    await ns.delLink(mv.index);
    mv = undefined;
  }
  if (!mv) {
    const under = await findUnderlay(c.host, r.local);
    if (!under) {
      // No container of this network can start here either (createEndpoint says why): say so, do not fail the network.
      log.warn({ network: spec.id, address: r.local }, 'routed network: no link in the host namespace holds the advertise address; its containers cannot start on this host');
      return false;
    }
    await withNsFd(spec.nsPath, (nsFd) => c.host.createMacvlan({ name: r.name, lower: under.index, mac: r.mac, mtu: under.mtu, nsFd, mode: 'bridge' }));
    mv = await c.mustGet(ns, r.name);
    log.info({ network: spec.id, link: r.name, lower: under.link, mac: r.mac }, 'routed link created');
    made = true;
  }
  await c.fixLink(ns, mv, { mac: r.mac, up: true });
  for (const [key, value] of ROUTED_LINK_SYSCTLS) setSysctlIn(spec.nsPath, key.replace('LINK', r.name), value);
  return made;
}

/**
 * The routed link's settings: it has no address, so it never answers ARP
 * for one of its own; proxy answers go out at once (the default delays those
 * to broadcast requests); strict reverse-path filtering, so that it answers
 * (and forwards for) this host's containers only, the addresses it has a
 * route back to on this link.
 */
export const ROUTED_LINK_SYSCTLS: [string, string][] = [
  ['net.ipv4.conf.LINK.arp_ignore', '8'], ['net.ipv4.neigh.LINK.proxy_delay', '0'], ['net.ipv4.conf.LINK.rp_filter', '1'],
];

/** weft's /32 routes (no gateway) and proxy entries on the routed link `mv`. */
export async function readRoutedTables(ns: Rtnl, mv: number): Promise<RoutedTables> {
  const local = new Set<string>();
  for (const r of await ns.listRoutes()) {
    if (r.oif === mv && r.protocol === WEFT_ROUTE_PROTOCOL && r.dstLen === 32 && !r.via) local.add(r.dst);
  }
  const proxies = new Set<string>();
  for (const e of await ns.listProxies()) if (e.ifindex === mv) proxies.add(e.ip);
  return { local, proxies };
}

/** What moves the tables from `have` to `want`: one operation per address that came or went. */
export function routedChanges(have: RoutedTables, want: RoutedTables): { routeDel: string[]; routeAdd: string[]; proxyDel: string[]; proxyAdd: string[] } {
  return {
    routeDel: [...have.local].filter((ip) => !want.local.has(ip)),
    routeAdd: [...want.local].filter((ip) => !have.local.has(ip)),
    proxyDel: [...have.proxies].filter((ip) => !want.proxies.has(ip)),
    proxyAdd: [...want.proxies].filter((ip) => !have.proxies.has(ip)),
  };
}
