// The data plane: desired state in (types.ts), kernel state out, through
// netlink only. Every method is idempotent, because restart recovery and
// Docker's replays call them again on state that may already be there.
//
// Where things live (the "host" namespace is the process's own unless
// hostNetns says otherwise, so tests can run several hosts in one process):
//   - the network namespace, pinned at spec.nsPath: lo, the bridge, the VXLAN
//     device, the bridge ends of the veths, the FDB and neighbour entries;
//   - the host namespace: the host ends of the veths until Docker moves them,
//     and the VXLAN device's UDP socket. The device is created from the host
//     namespace with IFLA_NET_NS_FD pointing at the network namespace: the
//     kernel opens a VXLAN socket in the namespace the device was created
//     from (its link-netns), not the one it sits in, so the socket binds next
//     to the underlay address while the device sits on the private bridge.
import * as fs from 'fs';
import * as path from 'path';
import type { NetworkSpec, EndpointSpec, PeerState, PeerDiff, RemoteEndpoint, DataPlaneApi, UnderlayInfo, RoutedPeers } from './types';
import { Rtnl, LinkInfo, errorCode } from './netlink';
import { ensureRoutedLink, findUnderlay, isEmpty, readRoutedTables, routedChanges, routedTablesOf, setRoutedSysctls, type RoutedTables } from './routed';
import { socketIn, forgetSocket, ensureNetns, removeNetns, isPinnedNetns, withNsFd, setSysctlIn, withNetns } from './netns';
import { native } from '../native';
import { MAX_IFNAME, networkIdFromNetnsName } from './names';
import { isIPv6, toNumber } from '../ipam/cidr';
import { canonicalIp, ipFamily, isIPv4 } from '../util/ip';

export interface DataPlaneLogger {
  debug(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
}

export interface DataPlaneOptions {
  /** weft's runtime directory; network namespaces are pinned under <runDir>/netns. */
  runDir: string;
  /** Path of the namespace that plays the host (default: this process's namespace). */
  hostNetns?: string;
  logger?: DataPlaneLogger;
}

const ZERO_MAC = '00:00:00:00:00:00';
const MAC = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;
const silent: DataPlaneLogger = { debug() {}, info() {}, warn() {} };

/** A network's forwarding tables as sets: FDB "mac|vtep" (all-zero MAC for flood entries), neighbours ip -> mac. */
interface PeerTables {
  fdb: Set<string>;
  neigh: Map<string, string>;
}

const addDiffs = (a: PeerDiff, b: PeerDiff): PeerDiff => ({ added: a.added + b.added, removed: a.removed + b.removed });

function tablesOf(p: PeerState): PeerTables {
  const fdb = new Set<string>();
  for (const ep of p.endpoints) fdb.add(`${ep.mac.toLowerCase()}|${ep.vtep}`);
  for (const v of p.floodVteps) fdb.add(`${ZERO_MAC}|${v}`);
  // IPv4 entries answer ARP, IPv6 ones neighbour solicitations: the VXLAN device (proxy mode) does both locally.
  const neigh = new Map<string, string>();
  for (const ep of p.endpoints) {
    if (ep.ip) neigh.set(ep.ip, ep.mac.toLowerCase());
    if (ep.ip6) neigh.set(ep.ip6, ep.mac.toLowerCase());
  }
  return { fdb, neigh };
}

function checkName(kind: string, name: string): void {
  if (!name || name.length > MAX_IFNAME || /[\s/:]/.test(name)) {
    throw new Error(`invalid ${kind} name "${name}": 1 to ${MAX_IFNAME} characters, no spaces, '/' or ':'`);
  }
}

function wrap(what: string, e: unknown): Error {
  const err = new Error(`${what}: ${(e as Error)?.message ?? String(e)}`, { cause: e });
  const code = errorCode(e);
  if (code) (err as Error & { code?: string }).code = code;
  return err;
}

/** Like Promise.all, but waits for every request to finish before failing, so none outlives the network's lock. */
async function settle(ps: Promise<unknown>[]): Promise<void> {
  const failed = (await Promise.allSettled(ps)).filter((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed.length === 1) throw failed[0].reason;
  if (failed.length > 1) {
    const first = failed[0].reason as Error;
    const err = new Error(`${first?.message ?? String(first)} (and ${failed.length - 1} more failures)`, { cause: first });
    const code = errorCode(first);
    if (code) (err as Error & { code?: string }).code = code;
    throw err;
  }
}

export class DataPlane implements DataPlaneApi {
  private readonly runDir: string;
  private readonly hostNetns: string | undefined;
  private readonly log: DataPlaneLogger;
  // Operations on one network run one at a time: a create racing a delete
  // or a peer reconcile on the same namespace would see half-made state.
  private readonly locks = new Map<string, Promise<unknown>>();
  /** One packet socket per network namespace, for gratuitous ARP (see announce). */
  private readonly packetSockets = new Map<string, number>();
  /** [routed] The host-namespace link holding each advertise address (the lower link of routed containers' macvlans). */
  private readonly underlayIndex = new Map<string, number>();
  private readonly used = new Set<string>();
  private closed = false;
  private warnedReadOnlySysctl = false;
  private readonly ops = { fdb: 0, neighbour: 0, route: 0 };

  constructor(opts: DataPlaneOptions) {
    this.runDir = opts.runDir;
    this.hostNetns = opts.hostNetns;
    this.log = opts.logger ?? silent;
  }

  private get netnsDir(): string {
    return path.join(this.runDir, 'netns');
  }

  private host(): Rtnl {
    if (this.closed) throw new Error('the data plane is closed');
    return socketIn(this.hostNetns);
  }

  private netSocket(net: NetworkSpec): Rtnl {
    if (this.closed) throw new Error('the data plane is closed');
    if (!isPinnedNetns(net.nsPath)) {
      throw new Error(`network ${net.id}: namespace ${net.nsPath} does not exist (ensureNetwork first)`);
    }
    this.used.add(net.nsPath);
    return socketIn(net.nsPath);
  }

  private serial<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.locks.get(key) ?? Promise.resolve();
    const run = prev.then(fn, fn);
    const tail = run.catch(() => undefined);
    this.locks.set(key, tail);
    void tail.then(() => { if (this.locks.get(key) === tail) this.locks.delete(key); });
    return run;
  }

  // ---- networks

  async ensureNetwork(spec: NetworkSpec): Promise<boolean> {
    checkName('bridge', spec.bridge);
    if (spec.vxlan) checkName('vxlan', spec.vxlan.name);
    return this.serial(spec.nsPath, async () => {
      try {
        return await this.ensureNetworkLocked(spec);
      } catch (e) {
        throw wrap(`ensureNetwork ${spec.id} (netns ${spec.nsPath})`, e);
      }
    });
  }

  /** True when the namespace or the VXLAN device was made anew (its forwarding tables are then empty). */
  private async ensureNetworkLocked(spec: NetworkSpec): Promise<boolean> {
    fs.mkdirSync(path.dirname(spec.nsPath), { recursive: true, mode: 0o755 });
    let made = false;
    if (ensureNetns(spec.nsPath)) {
      made = true;
      this.log.info({ network: spec.id, netns: spec.nsPath }, 'network namespace created');
    }
    // The namespace only switches frames:
    //  - with IPv6 on, every port would get a link-local address and send DAD,
    //    router solicitations and MLD reports that the VXLAN floods to every
    //    other host (the containers' own IPv6 traffic is still bridged);
    //  - br_netfilter would send every bridged frame through this namespace's
    //    (empty) netfilter hooks: turning that off here (the setting is per
    //    namespace) took 10 % off the overlay's RTT in the benchmark.
    // Set before links exist so they inherit it. A managed plugin sees
    // /proc/sys read-only (Docker mounts it so in every plugin): there weft
    // goes on with the defaults, and says so once.
    const sysctls: [string, string][] = [
      ['net.ipv6.conf.default.disable_ipv6', '1'], ['net.ipv6.conf.all.disable_ipv6', '1'],
      ['net.bridge.bridge-nf-call-iptables', '0'], ['net.bridge.bridge-nf-call-ip6tables', '0'], ['net.bridge.bridge-nf-call-arptables', '0'],
    ];
    if (spec.routed) setRoutedSysctls(spec.nsPath); // [routed]
    for (const [key, value] of sysctls) {
      try {
        setSysctlIn(spec.nsPath, key, value);
      } catch (e) {
        if (((e as Error).cause as NodeJS.ErrnoException | undefined)?.code !== 'EROFS') throw e;
        if (!this.warnedReadOnlySysctl) {
          this.warnedReadOnlySysctl = true;
          this.log.warn({ network: spec.id, err: (e as Error).message },
            '/proc/sys is read-only here (managed plugin): network namespaces keep IPv6 (link-local addresses) and bridge netfilter on');
        }
      }
    }
    const ns = this.netSocket(spec);
    const links = new Map((await ns.listLinks()).map((l) => [l.name, l]));

    const lo = links.get('lo');
    if (lo && !lo.up) await ns.setLink(lo.index, 'lo', { up: true });

    let br = links.get(spec.bridge);
    if (br && br.kind !== 'bridge') {
      this.log.warn({ network: spec.id, link: br.name, kind: br.kind }, 'replacing a link that is not a bridge');
      await ns.delLink(br.index);
      br = undefined;
    }
    if (!br) {
      await ns.createBridge(spec.bridge, spec.mtu);
      br = await this.mustGet(ns, spec.bridge);
      this.log.info({ network: spec.id, bridge: spec.bridge }, 'bridge created');
    } else {
      await this.fixLink(ns, br, { mtu: spec.mtu, up: true });
    }

    const vx = spec.vxlan;
    for (const l of links.values()) {
      // A VXLAN device that is not the one the spec names (or none is wanted): its VNI would still be claimed.
      if (l.kind === 'vxlan' && l.name !== vx?.name) {
        this.log.warn({ network: spec.id, link: l.name }, 'removing a VXLAN device not in the spec');
        await ns.delLink(l.index);
      }
      // [routed] Likewise a routed link not in the spec: its MAC stays claimed on the underlay.
      if (l.kind === 'macvlan' && l.name !== spec.routed?.name) {
        this.log.warn({ network: spec.id, link: l.name }, 'removing a routed link not in the spec');
        await ns.delLink(l.index);
      }
    }
    if (!vx) {
      if (spec.routed && await this.ensureRouted(spec, ns, br, links)) made = true;
      return made;
    }
    let v = links.get(vx.name);
    if (v) {
      const got = v.vxlan;
      const wrong = v.kind !== 'vxlan' || !got || got.vni !== vx.vni || got.local !== (canonicalIp(vx.local) ?? vx.local) ||
        got.port !== vx.port || got.learning || !got.proxy || v.linkNetnsid === undefined;
      if (wrong) {
        this.log.warn({ network: spec.id, link: v.name, kind: v.kind, got, linkNetnsid: v.linkNetnsid, want: vx },
          'VXLAN device differs from the spec: recreating it');
        await ns.delLink(v.index);
        v = undefined;
      }
    }
    if (!v) {
      // [wireguard] An encrypted network's socket goes into WireGuard's namespace (never the host's).
      if (vx.socketNetns !== undefined && !isPinnedNetns(vx.socketNetns)) {
        throw new Error(`the WireGuard namespace ${vx.socketNetns || '(none)'} does not exist: an encrypted network needs WireGuard up on this host`);
      }
      const hostSock = vx.socketNetns !== undefined ? socketIn(vx.socketNetns) : this.host();
      const { socketNetns: _sn, ...dev } = vx;
      await withNsFd(spec.nsPath, (nsFd) => hostSock.createVxlan({ ...dev, nsFd }));
      v = await this.mustGet(ns, vx.name);
      this.log.info({ network: spec.id, vxlan: vx.name, vni: vx.vni, local: vx.local }, 'VXLAN device created');
      made = true;
    }
    this.enableIPv6Neighbours(spec, vx.name);
    await this.fixLink(ns, v, { mtu: vx.mtu, master: br.index, up: true });
    if (spec.routed && await this.ensureRouted(spec, ns, br, links)) made = true;
    return made;
  }

  /**
   * The namespace has IPv6 off (see ensureNetworkLocked), and the kernel keeps
   * no IPv6 neighbour on a device with IPv6 off. The VXLAN device holds the
   * IPv6 neighbours of remote endpoints (proxy mode answers neighbour
   * solicitations from them), so IPv6 is on there, with no address of its own
   * (addr_gen_mode none: no link-local address, hence no DAD and no router
   * solicitation). Frames it receives go to the bridge, never to IPv6.
   */
  private enableIPv6Neighbours(spec: NetworkSpec, vxName: string): void {
    for (const [key, value] of [[`net.ipv6.conf.${vxName}.addr_gen_mode`, '1'], [`net.ipv6.conf.${vxName}.disable_ipv6`, '0']]) {
      try {
        setSysctlIn(spec.nsPath, key, value);
      } catch (e) {
        // read-only /proc/sys (managed plugin): IPv6 is on everywhere there already
        if (((e as Error).cause as NodeJS.ErrnoException | undefined)?.code !== 'EROFS') throw e;
      }
    }
  }

  /** [routed] See routed.ts. */
  private ensureRouted(spec: NetworkSpec, ns: Rtnl, br: LinkInfo, links: Map<string, LinkInfo>): Promise<boolean> {
    checkName('routed link', spec.routed!.name);
    return ensureRoutedLink({
      spec, ns, br, links, host: this.host(), log: this.log,
      mustGet: (n, name) => this.mustGet(n, name), fixLink: (n, l, want) => this.fixLink(n, l, want),
    });
  }

  async underlayOf(address: string): Promise<UnderlayInfo | undefined> {
    if (!isIPv4(address)) return undefined;
    const u = await findUnderlay(this.host(), address);
    return u ? { link: u.link, cidr: u.cidr, mtu: u.mtu } : undefined;
  }

  private async mustGet(ns: Rtnl, name: string): Promise<LinkInfo> {
    const l = await ns.getLink(name);
    if (!l) throw new Error(`link ${name} vanished right after it was created in ${ns.label}`);
    return l;
  }

  /** One setLink with only what differs. */
  private async fixLink(ns: Rtnl, l: LinkInfo, want: { mtu?: number; master?: number; up?: boolean; mac?: string }): Promise<boolean> {
    const c: { mtu?: number; master?: number; up?: boolean; mac?: string } = {};
    if (want.mtu !== undefined && l.mtu !== want.mtu) c.mtu = want.mtu;
    if (want.master !== undefined && l.master !== want.master) c.master = want.master;
    if (want.up !== undefined && l.up !== want.up) c.up = want.up;
    if (want.mac !== undefined && l.mac !== want.mac.toLowerCase()) c.mac = want.mac;
    if (Object.keys(c).length === 0) return false;
    await ns.setLink(l.index, l.name, c);
    this.log.info({ link: l.name, netns: ns.label, change: c }, 'link brought back to spec');
    return true;
  }

  async deleteNetwork(spec: NetworkSpec): Promise<void> {
    return this.serial(spec.nsPath, async () => {
      this.closePacketSocket(spec.nsPath);
      try {
        if (isPinnedNetns(spec.nsPath)) {
          const ns = socketIn(spec.nsPath);
          // The kernel tears a dropped namespace down asynchronously. Deleting the
          // veths and the VXLAN device now frees their host ends and the VNI at
          // once, so the same network can be created again straight away.
          for (const l of await ns.listLinks()) {
            if (l.kind === 'veth' || l.kind === 'vxlan' || l.kind === 'macvlan') await ns.delLink(l.index);
          }
        }
        this.used.delete(spec.nsPath);
        removeNetns(spec.nsPath);
        this.log.info({ network: spec.id, netns: spec.nsPath }, 'network removed');
      } catch (e) {
        throw wrap(`deleteNetwork ${spec.id} (netns ${spec.nsPath})`, e);
      }
    });
  }

  async listNetworkIds(): Promise<string[]> {
    let names: string[];
    try {
      names = await fs.promises.readdir(this.netnsDir);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw wrap(`listing ${this.netnsDir}`, e);
    }
    return names.map(networkIdFromNetnsName).filter((x): x is string => x !== undefined).sort();
  }

  // ---- endpoints

  async createEndpoint(net: NetworkSpec, ep: EndpointSpec): Promise<void> {
    checkName('host interface', ep.hostIf);
    checkName('bridge interface', ep.bridgeIf);
    if (!MAC.test(ep.mac.toLowerCase())) throw new Error(`createEndpoint ${ep.hostIf}: invalid MAC "${ep.mac}"`);
    if (net.routed) return this.createRoutedEndpoint(net, ep);
    return this.serial(net.nsPath, async () => {
      const what = `createEndpoint ${ep.bridgeIf}/${ep.hostIf} on network ${net.id} (netns ${net.nsPath})`;
      let ns: Rtnl;
      let br: LinkInfo | undefined;
      let existing: LinkInfo | undefined;
      try {
        ns = this.netSocket(net);
        br = await ns.getLink(net.bridge);
        if (!br) throw new Error(`bridge ${net.bridge} is missing (ensureNetwork first)`);
        existing = await ns.getLink(ep.bridgeIf);
        if (existing && existing.kind !== 'veth') throw new Error(`${ep.bridgeIf} exists and is a ${existing.kind ?? 'device'}, not a veth`);
        if (existing) {
          await this.fixLink(ns, existing, { mtu: ep.mtu, master: br.index, up: true });
          // Still here only until Docker moves it: then it is no longer ours to fix.
          const h = await this.host().getLink(ep.hostIf);
          if (h && h.kind === 'veth') await this.fixLink(this.host(), h, { mtu: ep.mtu, mac: ep.mac });
          return;
        }
      } catch (e) {
        throw wrap(what, e);
      }
      const bridgeIndex = br.index;
      try {
        // One request: the kernel creates both ends (the host end straight in the
        // host namespace), enslaves and raises the bridge end, or does nothing.
        await withNsFd(this.hostNetns, (hostFd) => ns.createVeth(
          { name: ep.bridgeIf, mtu: ep.mtu, master: bridgeIndex, up: true },
          { name: ep.hostIf, mtu: ep.mtu, mac: ep.mac, nsFd: hostFd }));
      } catch (e) {
        // Only a lost reply (timeout, dead socket) can leave the pair behind; it did not exist before this call.
        try {
          if (await ns.delLink(ep.bridgeIf)) this.log.warn({ link: ep.bridgeIf, netns: net.nsPath }, 'rolled back a half-made endpoint');
        } catch (re) {
          this.log.warn({ link: ep.bridgeIf, netns: net.nsPath, err: (re as Error).message }, 'rollback failed');
        }
        throw wrap(what, e);
      }
    });
  }

  /**
   * [routed] The container's interface: a macvlan (bridge mode) on the
   * underlay link, in the host namespace, where Docker takes it. Then, for an
   * IPv4 address, a gratuitous ARP from it: containers of the segment that
   * cached the address at another MAC (a container before a restart, or this
   * host's routed link while the address was on another segment) take the
   * new one at once.
   */
  private createRoutedEndpoint(net: NetworkSpec, ep: EndpointSpec): Promise<void> {
    return this.serial(net.nsPath, async () => {
      const what = `createEndpoint ${ep.hostIf} on routed network ${net.id}`;
      const host = this.host();
      try {
        let link = await host.getLink(ep.hostIf);
        if (link && link.kind !== 'macvlan') throw new Error(`${ep.hostIf} exists and is a ${link.kind ?? 'device'}, not a macvlan`);
        if (!link) {
          const make = async (lower: number) => host.createMacvlan({ name: ep.hostIf, lower, mac: ep.mac, mtu: ep.mtu, mode: 'bridge' });
          const cached = this.underlayIndex.get(net.routed!.local);
          // The underlay link found once (two dumps) serves every Join; a link made anew since is found again.
          if (cached === undefined || !(await make(cached).then(() => true, () => false))) await make(await this.findUnderlayIndex(net.routed!.local));
          link = await this.mustGet(host, ep.hostIf);
        }
        await this.fixLink(host, link, { mtu: ep.mtu, mac: ep.mac, up: true });
        if (ep.ip && isIPv4(ep.ip)) {
          try {
            native().sendFrame(this.packetSocket(this.hostNetns), link.index, garp(ep.ip, ep.mac));
          } catch (e) {
            this.log.warn({ link: ep.hostIf, ip: ep.ip, err: (e as Error).message }, 'gratuitous ARP from a routed container\'s interface failed');
          }
        }
      } catch (e) {
        throw wrap(what, e);
      }
    });
  }

  /** [routed] The index of the host-namespace link holding `address` (remembered for the next Join); an error saying what to do when none does. */
  private async findUnderlayIndex(address: string): Promise<number> {
    this.underlayIndex.delete(address);
    const under = await findUnderlay(this.host(), address);
    if (!under) {
      throw new Error(`no link of this host holds --advertise-addr ${address}, and a routed network's containers get a macvlan on that link: ` +
        'give weft an --advertise-addr of this host\'s own underlay link, or use a VXLAN network (leave out -o mode=routed)');
    }
    this.underlayIndex.set(address, under.index);
    return under.index;
  }

  /**
   * Gratuitous ARP: "ip is at mac", broadcast on the network's bridge. Docker
   * gives a restarted container a new random MAC but often the same IP; peers
   * that cached the old MAC would send to it for up to a minute (until their
   * neighbour entry goes stale). The broadcast reaches the containers of this
   * host directly and those of other hosts through the VXLAN flood entries, and
   * Linux updates an existing neighbour entry from a gratuitous ARP. For an
   * IPv6 address it sends an unsolicited neighbour advertisement instead.
   */
  async announce(net: NetworkSpec, ip: string, mac: string): Promise<void> {
    if (!(isIPv4(ip) || isIPv6(ip)) || !MAC.test(mac.toLowerCase())) throw new Error(`announce: invalid address ${ip} / ${mac}`);
    return this.sendGarp(net, ip, mac);
  }

  /**
   * [routed] "ip is at the routed link's MAC", to each of this host's
   * containers `to` (unicast: macvlan siblings get it without the wire, and
   * no other host's container hears it): a remote address that moved to
   * another segment, now behind the routed link's proxy entry. Containers
   * that cached the old container's MAC would otherwise send to it until
   * their neighbour entry expired.
   */
  async announceRouted(net: NetworkSpec, ip: string, to: string[]): Promise<void> {
    if (!isIPv4(ip) || !net.routed) throw new Error(`announceRouted: invalid address ${ip}, or not a routed network`);
    return this.serial(net.nsPath, async () => {
      const rt = await this.netSocket(net).getLink(net.routed!.name);
      if (!rt?.mac) throw new Error(`announce on network ${net.id}: routed link ${net.routed!.name} is missing`);
      const fd = this.packetSocket(net.nsPath);
      for (const dst of to) if (MAC.test(dst.toLowerCase())) native().sendFrame(fd, rt.index, garp(ip, rt.mac, dst));
    });
  }

  private sendGarp(net: NetworkSpec, ip: string, mac: string): Promise<void> {
    return this.serial(net.nsPath, async () => {
      const br = await this.netSocket(net).getLink(net.bridge);
      if (!br) throw new Error(`announce on network ${net.id}: bridge ${net.bridge} is missing`);
      // IPv6: an unsolicited neighbour advertisement with the override flag (RFC 4861 §7.2.6), the gratuitous ARP of IPv6.
      const frame = isIPv6(ip) ? unsolicitedNa(ip, mac) : garp(ip, mac);
      native().sendFrame(this.packetSocket(net.nsPath), br.index, frame);
    });
  }

  async deleteEndpoint(net: NetworkSpec, ep: EndpointSpec): Promise<void> {
    return this.serial(net.nsPath, async () => {
      try {
        // The bridge end is always ours to find; deleting it takes the peer with it, wherever Docker put it.
        // [routed] A container's macvlan: back in the host namespace (Docker moves it there at leave), or gone with the container's namespace.
        if (!net.routed && isPinnedNetns(net.nsPath)) await this.netSocket(net).delLink(ep.bridgeIf);
        await this.host().delLink(ep.hostIf);
      } catch (e) {
        throw wrap(`deleteEndpoint ${ep.bridgeIf}/${ep.hostIf} on network ${net.id}`, e);
      }
    });
  }

  // ---- peers

  /** Entries that cannot be programmed are left out (and logged): one bad record must not stop the others. */
  private programmable(net: NetworkSpec, wanted: PeerState): PeerState {
    const bad: unknown[] = [];
    // A VTEP is the other host's underlay address, of the family of this device's local address
    // (VXLAN over IPv4 or over IPv6); in the canonical form the kernel gives back, so the sets compare.
    const family = net.vxlan ? ipFamily(net.vxlan.local) : 4;
    const vtep = (v: unknown): string | undefined =>
      typeof v === 'string' && ipFamily(v) === family ? canonicalIp(v) : undefined;
    const out: PeerState = {
      endpoints: wanted.endpoints.flatMap((ep) => {
        const v = vtep(ep.vtep);
        const v6ok = ep.ip6 === undefined || (typeof ep.ip6 === 'string' && isIPv6(ep.ip6));
        const v4ok = typeof ep.ip === 'string' && (isIPv4(ep.ip) || (ep.ip === '' && ep.ip6 !== undefined));
        const ok = v4ok && v6ok && typeof ep.mac === 'string' && v !== undefined && MAC.test(ep.mac.toLowerCase());
        if (!ok) bad.push(ep);
        return ok ? [{ ...ep, vtep: v }] : [];
      }),
      floodVteps: wanted.floodVteps.flatMap((f) => {
        const v = vtep(f);
        if (v === undefined) bad.push(f);
        return v === undefined ? [] : [v];
      }),
    };
    if (wanted.routed) {
      const v4 = (ip: unknown) => {
        const ok = typeof ip === 'string' && isIPv4(ip);
        if (!ok) bad.push(ip);
        return ok;
      };
      out.routed = { local: wanted.routed.local.filter(v4), proxies: wanted.routed.proxies.filter(v4) };
    }
    if (bad.length) this.log.warn({ network: net.id, skipped: bad.slice(0, 5), count: bad.length }, 'left out peer entries that cannot be programmed');
    return out;
  }

  async programPeers(net: NetworkSpec, wanted: PeerState): Promise<PeerDiff> {
    // The agent validates records before they get here; this is the last line.
    const desired = this.programmable(net, wanted);
    if (!net.vxlan) {
      if (desired.endpoints.length || desired.floodVteps.length) throw new Error(`programPeers ${net.id}: the network has no VXLAN device`);
      return { added: 0, removed: 0 };
    }
    this.checkRouted(net, desired, 'programPeers');
    const vxName = net.vxlan.name;
    return this.serial(net.nsPath, async () => {
      try {
        const { ns, vx, fdb, neigh } = await this.readKernelPeers(net, vxName);
        const d = await this.applyTables(net, ns, vx, { fdb, neigh }, tablesOf(desired));
        if (!net.routed) return d;
        const want = routedTablesOf(desired);
        const link = await ns.getLink(net.routed.name);
        if (!link && isEmpty(want)) return d;
        if (!link) throw new Error(`routed link ${net.routed.name} is missing (ensureNetwork first)`);
        return addDiffs(d, await this.applyRouted(net, ns, link.index, await readRoutedTables(ns, link.index), want));
      } catch (e) {
        throw wrap(`programPeers ${net.id} (netns ${net.nsPath})`, e);
      }
    });
  }

  async changePeers(net: NetworkSpec, from: PeerState, to: PeerState): Promise<PeerDiff> {
    const desired = this.programmable(net, to);
    if (!net.vxlan) {
      if (desired.endpoints.length || desired.floodVteps.length) throw new Error(`changePeers ${net.id}: the network has no VXLAN device`);
      return { added: 0, removed: 0 };
    }
    this.checkRouted(net, desired, 'changePeers');
    const vxName = net.vxlan.name;
    return this.serial(net.nsPath, async () => {
      try {
        const ns = this.netSocket(net);
        const vx = await ns.getLink(vxName);
        if (!vx) throw new Error(`VXLAN device ${vxName} is missing`);
        const before = this.programmable(net, from);
        const d = await this.applyTables(net, ns, vx.index, tablesOf(before), tablesOf(desired));
        if (!net.routed) return d;
        const have = routedTablesOf(before);
        const want = routedTablesOf(desired);
        if (isEmpty(have) && isEmpty(want)) return d;
        const mv = await ns.getLink(net.routed.name);
        if (!mv) throw new Error(`routed link ${net.routed.name} is missing`);
        return addDiffs(d, await this.applyRouted(net, ns, mv.index, have, want));
      } catch (e) {
        throw wrap(`changePeers ${net.id} (netns ${net.nsPath})`, e);
      }
    });
  }

  peerOps(): { fdb: number; neighbour: number; route: number } {
    return { ...this.ops };
  }

  private checkRouted(net: NetworkSpec, desired: PeerState, what: string): void {
    const n = (desired.routed?.local.length ?? 0) + (desired.routed?.proxies.length ?? 0);
    if (n && !net.routed) throw new Error(`${what} ${net.id}: routed entries for a network that is not routed`);
  }

  /** [routed] Moves the /32 routes and proxy entries on the routed link from `have` to `want` (see routedChanges). */
  private async applyRouted(net: NetworkSpec, ns: Rtnl, mv: number, have: RoutedTables, want: RoutedTables): Promise<PeerDiff> {
    const { routeDel, routeAdd, proxyDel, proxyAdd } = routedChanges(have, want);
    const gone = (e: unknown) => { const c = errorCode(e); if (c !== 'ENOENT' && c !== 'ESRCH') throw e; };
    this.ops.route += routeDel.length + routeAdd.length;
    this.ops.neighbour += proxyDel.length + proxyAdd.length;
    await settle([...routeDel.map((ip) => ns.delRoute(ip, mv).catch(gone)), ...proxyDel.map((ip) => ns.delProxy(mv, ip).catch(gone))]);
    await settle([...routeAdd.map((ip) => ns.replaceLinkRoute(ip, mv)), ...proxyAdd.map((ip) => ns.addProxy(mv, ip))]);
    const diff = { added: routeAdd.length + proxyAdd.length, removed: routeDel.length + proxyDel.length };
    if (diff.added || diff.removed) this.log.info({ network: net.id, ...diff }, 'routes and proxy entries programmed');
    return diff;
  }

  /** Moves the tables from `have` to `want`: removals first, so a MAC that moved never has two destinations at once. */
  private async applyTables(net: NetworkSpec, ns: Rtnl, vx: number, have: PeerTables, want: PeerTables): Promise<PeerDiff> {
    const fdbDel = [...have.fdb].filter((k) => !want.fdb.has(k));
    const fdbAdd = [...want.fdb].filter((k) => !have.fdb.has(k));
    const neighDel = [...have.neigh.keys()].filter((ip) => !want.neigh.has(ip));
    const neighSet = [...want.neigh].filter(([ip, m]) => have.neigh.get(ip) !== m);
    // A neighbour with the wrong MAC is replaced in place: one removal plus one addition.
    const replaced = neighSet.filter(([ip]) => have.neigh.has(ip)).length;
    const gone = (e: unknown) => { if (errorCode(e) !== 'ENOENT') throw e; };
    const there = (e: unknown) => { if (errorCode(e) !== 'EEXIST') throw e; };
    this.ops.fdb += fdbDel.length + fdbAdd.length;
    this.ops.neighbour += neighDel.length + neighSet.length;
    await settle([
      ...fdbDel.map((k) => { const [m, d] = k.split('|'); return ns.fdbDel(vx, m, d).catch(gone); }),
      ...neighDel.map((ip) => ns.delNeighbour(vx, ip).catch(gone)),
    ]);
    await settle([
      ...fdbAdd.map((k) => { const [m, d] = k.split('|'); return ns.fdbAppend(vx, m, d).catch(there); }),
      ...neighSet.map(([ip, m]) => ns.addNeighbour(vx, ip, m)),
    ]);
    const diff = { added: fdbAdd.length + neighSet.length, removed: fdbDel.length + neighDel.length + replaced };
    if (diff.added || diff.removed) this.log.info({ network: net.id, ...diff }, 'peers programmed');
    return diff;
  }

  async readPeers(net: NetworkSpec): Promise<PeerState> {
    if (!net.vxlan) return { endpoints: [], floodVteps: [] };
    const vxName = net.vxlan.name;
    return this.serial(net.nsPath, async () => {
      try {
        const { fdb, neigh } = await this.readKernelPeers(net, vxName);
        const macToVtep = new Map<string, string>();
        const floodVteps: string[] = [];
        for (const k of fdb) {
          const [m, d] = k.split('|');
          if (m === ZERO_MAC) floodVteps.push(d);
          else macToVtep.set(m, d);
        }
        // Entries programmed in halves (FDB without neighbour or the reverse) show with an empty ip or vtep.
        // An endpoint's IPv4 and IPv6 neighbours share its MAC: one endpoint.
        const byMac = new Map<string, RemoteEndpoint>();
        const endpoints: RemoteEndpoint[] = [];
        for (const [ip, m] of [...neigh].sort(([a], [b]) => Number(a.includes(':')) - Number(b.includes(':')))) {
          const v6 = ip.includes(':');
          const had = byMac.get(m);
          if (had && (v6 ? had.ip6 === undefined : had.ip === '')) {
            if (v6) had.ip6 = ip;
            else had.ip = ip;
            continue;
          }
          const ep: RemoteEndpoint = v6 ? { ip: '', ip6: ip, mac: m, vtep: macToVtep.get(m) ?? '' } : { ip, mac: m, vtep: macToVtep.get(m) ?? '' };
          byMac.set(m, ep);
          endpoints.push(ep);
        }
        const withIp = new Set(neigh.values());
        for (const [m, d] of macToVtep) if (!withIp.has(m)) endpoints.push({ ip: '', mac: m, vtep: d });
        endpoints.sort((a, b) => (a.ip + (a.ip6 ?? '') + a.mac).localeCompare(b.ip + (b.ip6 ?? '') + b.mac));
        const out: PeerState = { endpoints, floodVteps: floodVteps.sort() };
        const rt = net.routed ? await this.netSocket(net).getLink(net.routed.name) : undefined;
        if (rt) {
          const tables = await readRoutedTables(this.netSocket(net), rt.index);
          const routed: RoutedPeers = { local: [...tables.local].sort(), proxies: [...tables.proxies].sort() };
          out.routed = routed;
        }
        return out;
      } catch (e) {
        throw wrap(`readPeers ${net.id} (netns ${net.nsPath})`, e);
      }
    });
  }

  /** The entries weft manages: permanent FDB entries with a destination, and permanent neighbours, on the VXLAN device. */
  private async readKernelPeers(net: NetworkSpec, vxName: string): Promise<{ ns: Rtnl; vx: number; fdb: Set<string>; neigh: Map<string, string> }> {
    const ns = this.netSocket(net);
    const link = await ns.getLink(vxName);
    if (!link) throw new Error(`VXLAN device ${vxName} is missing (ensureNetwork first)`);
    const vx = link.index;
    const [fdbDump, neighDump] = await Promise.all([ns.listFdb(), ns.listNeighbours()]);
    const fdb = new Set<string>();
    for (const e of fdbDump) if (e.ifindex === vx && e.self && e.permanent && e.mac && e.ip) fdb.add(`${e.mac}|${e.ip}`);
    const neigh = new Map<string, string>();
    for (const e of neighDump) if (e.ifindex === vx && e.permanent && e.ip && e.mac) neigh.set(e.ip, e.mac);
    return { ns, vx, fdb, neigh };
  }

  /** The packet socket of a namespace (the host's, weft's own unless hostNetns says otherwise, when nsPath is undefined), opened once. */
  private packetSocket(nsPath: string | undefined): number {
    const key = nsPath ?? '';
    let fd = this.packetSockets.get(key);
    if (fd === undefined) {
      fd = nsPath ? withNetns(nsPath, () => native().packetSocket()) : native().packetSocket();
      this.packetSockets.set(key, fd);
    }
    return fd;
  }

  private closePacketSocket(nsPath: string): void {
    const fd = this.packetSockets.get(nsPath);
    if (fd === undefined) return;
    this.packetSockets.delete(nsPath);
    native().closeFd(fd);
  }

  /** Closes the sockets of every namespace this instance used. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const p of [...this.packetSockets.keys()]) this.closePacketSocket(p);
    for (const p of this.used) forgetSocket(p);
    this.used.clear();
    forgetSocket(this.hostNetns);
  }
}

/** An ARP request announcing ip at mac (sender and target address both ip), to the broadcast address. */
function garp(ip: string, mac: string, to?: string): Buffer {
  const m = Buffer.from(mac.split(':').map((h) => parseInt(h, 16)));
  const a = Buffer.from(ip.split('.').map(Number));
  return Buffer.concat([
    // Ethernet: broadcast (or unicast to `to`), from mac, ARP
    to ? Buffer.from(to.split(':').map((h) => parseInt(h, 16))) : Buffer.alloc(6, 0xff), m, Buffer.from([0x08, 0x06]),
    Buffer.from([0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x01]), // Ethernet/IPv4, request
    m, a, Buffer.alloc(6, 0), a,
  ]);
}

/**
 * An unsolicited neighbour advertisement (RFC 4861 §4.4, §7.2.6): "ip is at
 * mac", override flag set, from ip to all-nodes (ff02::1), with the target
 * link-layer address option. Hop limit 255, as receivers require.
 */
export function unsolicitedNa(ip: string, mac: string): Buffer {
  const m = Buffer.from(mac.split(':').map((h) => parseInt(h, 16)));
  const src = Buffer.from(toNumber(ip).toString(16).padStart(32, '0'), 'hex');
  const dst = Buffer.from('ff020000000000000000000000000001', 'hex');
  // ICMPv6: type 136, code 0, checksum, flags (O), reserved, target, option 2 (target link-layer address, 8 bytes)
  const icmp = Buffer.concat([Buffer.from([136, 0, 0, 0, 0x20, 0, 0, 0]), src, Buffer.from([2, 1]), m]);
  const pseudo = Buffer.concat([src, dst, Buffer.from([0, 0, (icmp.length >> 8) & 0xff, icmp.length & 0xff, 0, 0, 0, 58])]);
  let sum = 0;
  const all = Buffer.concat([pseudo, icmp]);
  for (let i = 0; i < all.length; i += 2) sum += (all[i] << 8) + (i + 1 < all.length ? all[i + 1] : 0);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >> 16);
  const csum = ~sum & 0xffff;
  icmp[2] = csum >> 8;
  icmp[3] = csum & 0xff;
  const ipHdr = Buffer.concat([
    Buffer.from([0x60, 0, 0, 0, (icmp.length >> 8) & 0xff, icmp.length & 0xff, 58, 255]), src, dst,
  ]);
  return Buffer.concat([Buffer.from([0x33, 0x33, 0, 0, 0, 1]), m, Buffer.from([0x86, 0xdd]), ipHdr, icmp]);
}
