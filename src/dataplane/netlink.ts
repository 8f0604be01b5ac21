// The one module that talks to the `netlink` package (pinned 0.3.0). It hides
// the package's defects (docs/netlink-notes.md §6): every socket gets a 4 MiB
// receive buffer (an overflow aborts the process), every request a timeout
// (requests on a dead socket never settle), a bound on requests in flight, and
// an 'error' listener that retires the socket so the next call opens a new one.
// Errors become NetlinkError with an errno-style code and the operation named.
import { createRtNetlink, RtNetlinkSocket, AttrStream, StreamData, FlagsNew, rt, ifla } from 'netlink';
import { ipBytes, ipFromBytes } from '../util/ip';

const AF_INET = 2;
const AF_INET6 = 10;
const AF_BRIDGE = 7;
const RECV_BUFFER = 4 << 20;

export class NetlinkError extends Error {
  /** errno name from the kernel ('EEXIST', 'ENODEV', …), 'ETIMEDOUT' or 'ESOCKET' (socket died). */
  readonly code: string;
  constructor(op: string, code: string, cause: unknown) {
    super(`${op}: ${code === 'ESOCKET' || code === 'ETIMEDOUT' ? (cause as Error)?.message ?? code : code}`, { cause });
    this.name = 'NetlinkError';
    this.code = code;
  }
}

/** 'EEXIST' for `Request rejected: EEXIST` (the package carries no errno), the code of a NetlinkError, or undefined. */
export function errorCode(e: unknown): string | undefined {
  if (e instanceof NetlinkError) return e.code;
  const msg = e instanceof Error ? e.message : String(e);
  const m = /Request rejected: (\w+)/.exec(msg);
  if (m) return m[1];
  if (/Timeout has been reached/.test(msg)) return 'ETIMEDOUT';
  return undefined;
}

/**
 * FDB and neighbour requests this process sent to the kernel, by table and
 * kind, and the entries its dumps read back: what one endpoint change costs
 * each host (weft_netlink_requests_total, weft_netlink_dump_entries_total).
 * Counted when a request is sent, whatever its answer.
 */
export const peerRequestCounts = {
  fdb: { add: 0, del: 0, dump: 0, dumpEntries: 0 },
  neigh: { add: 0, del: 0, dump: 0, dumpEntries: 0 },
  route: { add: 0, del: 0, dump: 0, dumpEntries: 0 },
};

/** rtm_protocol of the routes weft programs (routed networks): tells them apart from any other route. */
export const WEFT_ROUTE_PROTOCOL = 0x77;
const RT_TABLE_MAIN = 254;
const MACVLAN_MODE_PRIVATE = 1;
/** IFLA_MACVLAN_MODE of bridge mode (LinkInfo.macvlanMode). */
export const MACVLAN_MODE_BRIDGE = 4;
const RT_SCOPE_LINK = 253;

/** A route of the main IPv4 table, as weft reads it back. */
export interface RouteEntry { dst: string; dstLen: number; via?: string; oif?: number; protocol: number }

const enc = (sd: StreamData): Buffer => { const s = new AttrStream(); s.emit(sd); return Buffer.concat(s.bufs); };
const ip4 = (s: string): Buffer => Buffer.from(s.split('.').map(Number));
const mac = (s: string): Buffer => Buffer.from(s.split(':').map((h) => parseInt(h, 16)));
const be16 = (n: number): Buffer => { const b = Buffer.alloc(2); b.writeUInt16BE(n); return b; };
/** 4 or 16 bytes of an underlay address (a VTEP): IPv4 or IPv6. */
const vtepBytes = (s: string): Buffer => {
  const b = ipBytes(s);
  if (!b) throw new Error(`"${s}" is not an IPv4 or IPv6 address`);
  return b;
};
const linkinfo = (kind: string, data?: Buffer): Buffer => enc(ifla.formatInfo(data ? { kind, data } : { kind }));
export const macString = (b: Buffer): string => [...b].map((x) => x.toString(16).padStart(2, '0')).join(':');
export const ip4String = (b: Buffer): string => [...b].join('.');
/** 16 bytes of an IPv6 address from its text (any valid spelling). */
const ip6 = (s: string): Buffer => {
  const b = ipBytes(s);
  if (!b || b.length !== 16) throw new Error(`not an IPv6 address: ${s}`);
  return b;
};
const isV6 = (s: string) => s.includes(':');
const UP = { change: { up: true as const }, flags: { up: true as const } };
const CREATE_EXCL = { flags: FlagsNew.CREATE | FlagsNew.EXCL };

export interface VxlanInfo { vni?: number; local?: string; port?: number; learning?: boolean; proxy?: boolean }
export interface LinkInfo {
  index: number;
  name: string;
  kind?: string;
  mtu?: number;
  master?: number;
  up: boolean;
  mac?: string;
  /** Set when the link's other side (veth peer, VXLAN socket) lives in another namespace. */
  linkNetnsid?: number;
  vxlan?: VxlanInfo;
  /** A macvlan's mode (1 private, 2 vepa, 4 bridge, 8 passthru, 16 source). */
  macvlanMode?: number;
}
export interface NeighEntry { ifindex: number; ip?: string; mac?: string; permanent: boolean; self: boolean }

export interface PeerEnd { name: string; mtu?: number; mac?: string; nsFd?: number }
export interface LinkChange { mtu?: number; master?: number; mac?: string; name?: string; nsFd?: number; up?: boolean }

function parseLink(m: rt.LinkMessage): LinkInfo {
  const info = m.attrs.linkinfo ? ifla.parseInfo(m.attrs.linkinfo) : undefined;
  const out: LinkInfo = { index: m.data.index ?? 0, name: m.attrs.ifname ?? '', up: !!m.data.flags?.up };
  if (info?.kind) out.kind = info.kind;
  if (m.attrs.mtu !== undefined) out.mtu = m.attrs.mtu;
  if (m.attrs.master) out.master = m.attrs.master;
  if (m.attrs.address) out.mac = macString(m.attrs.address);
  if (m.attrs.linkNetnsid !== undefined) out.linkNetnsid = m.attrs.linkNetnsid;
  if (info?.kind === 'macvlan' && info.data) {
    const mode = ifla.parseMacvlan(info.data).mode;
    if (typeof mode === 'number') out.macvlanMode = mode;
  }
  if (info?.kind === 'vxlan' && info.data) {
    const v = ifla.parseVxlan(info.data);
    out.vxlan = {
      ...(v.id !== undefined ? { vni: v.id } : {}),
      ...(v.local ? { local: ip4String(v.local) } : v.local6 ? { local: ipFromBytes(v.local6) } : {}),
      ...(v.port ? { port: v.port.readUInt16BE(0) } : {}),
      learning: !!v.learning,
      proxy: !!v.proxy,
    };
  }
  return out;
}

function parseNeigh(m: rt.NeighborMessage): NeighEntry {
  const e: NeighEntry = { ifindex: m.data.ifindex ?? 0, permanent: !!m.data.state?.permanent, self: !!m.data.flags?.self };
  // An FDB entry's destination (a VTEP) is IPv4 or IPv6.
  const ip = ipFromBytes(m.attrs.dst);
  if (ip) e.ip = ip;
  if (m.attrs.lladdr && m.attrs.lladdr.length === 6) e.mac = macString(m.attrs.lladdr);
  return e;
}

/** A fresh rtnetlink socket in the calling thread's current namespace, with the receive buffer raised. */
export function openRtnetlink(): RtNetlinkSocket {
  const s = createRtNetlink();
  // Capped by net.core.rmem_max (SO_RCVBUF, not FORCE); bounded in-flight requests keep us safe below it.
  s.socket.setRecvBufferSize(RECV_BUFFER);
  return s;
}

export interface RtnlOptions {
  /** Shown in every error: which namespace the socket lives in. */
  label: string;
  /** Opens the underlying socket (in the right namespace); called again after the socket dies. */
  open: () => RtNetlinkSocket;
  timeoutMs?: number;
  maxInFlight?: number;
}

// `fail` holds the reject functions of the requests in flight on this socket:
// a dead socket fails them at once. (Racing every request against one
// long-lived "died" promise instead would attach a reaction to it per request,
// each keeping that request's result alive until the socket dies.)
interface Generation { s: RtNetlinkSocket; dead: boolean; fail: Set<(e: Error) => void> }

/** One rtnetlink socket in one namespace, used through typed operations. */
export class Rtnl {
  readonly label: string;
  private gen?: Generation;
  private readonly timeoutMs: number;
  private readonly maxInFlight: number;
  private inFlight = 0;
  private dumping = false;
  private readonly waiters: { exclusive: boolean; go: () => void }[] = [];
  private closed = false;

  constructor(private readonly opts: RtnlOptions) {
    this.label = opts.label;
    this.timeoutMs = opts.timeoutMs ?? 10_000;
    this.maxInFlight = opts.maxInFlight ?? 32;
  }

  private socket(): Generation {
    if (this.closed) throw new NetlinkError(`netlink socket in ${this.label}`, 'ESOCKET', new Error('socket closed'));
    if (this.gen && !this.gen.dead) return this.gen;
    const s = this.opts.open();
    const g: Generation = { s, dead: false, fail: new Set() };
    s.socket.on('error', (e) => this.retire(g, e));
    this.gen = g;
    return g;
  }

  private retire(g: Generation, e: Error): void {
    if (g.dead) return;
    g.dead = true;
    const err = new Error(`netlink socket in ${this.label} failed: ${e.message}`);
    for (const fail of g.fail) fail(err);
    g.fail.clear();
    try { g.s.socket.close(); } catch { /* already closed */ }
  }

  // A dump's reply is several messages, and the package drops a dump whose
  // parts arrive interleaved with any other reply ("Multipart message not
  // terminated properly"). So a dump has the socket to itself; other requests
  // (one reply each) share it, up to maxInFlight at a time.
  private acquire(exclusive: boolean): Promise<void> | void {
    const free = exclusive ? this.inFlight === 0 : !this.dumping && this.inFlight < this.maxInFlight;
    if (free && this.waiters.length === 0) return this.take(exclusive);
    return new Promise<void>((resolve) => this.waiters.push({ exclusive, go: () => { this.take(exclusive); resolve(); } }));
  }

  private take(exclusive: boolean): void {
    this.inFlight++;
    if (exclusive) this.dumping = true;
  }

  private release(exclusive: boolean): void {
    this.inFlight--;
    if (exclusive) this.dumping = false;
    // Strict FIFO: a waiting dump is not starved by a stream of small requests.
    while (this.waiters.length) {
      const w = this.waiters[0];
      const free = w.exclusive ? this.inFlight === 0 : !this.dumping && this.inFlight < this.maxInFlight;
      if (!free) break;
      this.waiters.shift();
      w.go();
    }
  }

  private async call<T>(op: string, fn: (s: RtNetlinkSocket, o: { timeout: number }) => Promise<T>, dump = false): Promise<T> {
    await this.acquire(dump);
    try {
      const g = this.socket();
      let timer: NodeJS.Timeout | undefined;
      let fail!: (e: Error) => void;
      // Our own timer as well as the package's: a request must settle even if
      // the package loses track of it; and at once if the socket dies.
      const stopped = new Promise<never>((_, reject) => {
        fail = reject;
        timer = setTimeout(() => reject(new Error(`Timeout has been reached (${this.timeoutMs} ms)`)), this.timeoutMs);
      });
      g.fail.add(fail);
      try {
        return await Promise.race([fn(g.s, { timeout: this.timeoutMs }), stopped]);
      } catch (e) {
        const rejected = /Request rejected: \w+/.test((e as Error)?.message ?? '');
        // Anything but a kernel answer (a lost reply, a mangled dump) leaves the
        // package's per-socket state in doubt: start over on a new socket.
        if (!rejected) this.retire(g, e as Error);
        throw new NetlinkError(`${op} in ${this.label}`, errorCode(e) ?? 'ESOCKET', e);
      } finally {
        clearTimeout(timer);
        g.fail.delete(fail);
      }
    } finally {
      this.release(dump);
    }
  }

  close(): void {
    this.closed = true;
    if (this.gen) this.retire(this.gen, new Error('closed'));
  }

  // ---- links

  /** The link by name, or undefined if there is none. */
  async getLink(name: string): Promise<LinkInfo | undefined> {
    try {
      const r = await this.call(`get link ${name}`, (s, o) => s.getLink({}, { ifname: name }, o));
      return r[0] ? parseLink(r[0]) : undefined;
    } catch (e) {
      if (errorCode(e) === 'ENODEV') return undefined;
      throw e;
    }
  }

  /** Packet counters of a link (IFLA_STATS64), or undefined if there is no such link. Used by `weft doctor`. */
  async linkStats(name: string): Promise<{ rxPackets: number; txPackets: number; rxDropped: number } | undefined> {
    try {
      const r = await this.call(`get link ${name}`, (s, o) => s.getLink({}, { ifname: name }, o));
      const st = r[0]?.attrs.stats64;
      if (!r[0]) return undefined;
      return { rxPackets: Number(st?.rxPackets ?? 0n), txPackets: Number(st?.txPackets ?? 0n), rxDropped: Number(st?.rxDropped ?? 0n) };
    } catch (e) {
      if (errorCode(e) === 'ENODEV') return undefined;
      throw e;
    }
  }

  async listLinks(): Promise<LinkInfo[]> {
    return (await this.call('dump links', (s, o) => s.getLinks({}, {}, o), true)).map(parseLink);
  }

  async createBridge(name: string, mtu: number): Promise<void> {
    await this.call(`create bridge ${name}`, (s, o) =>
      s.newLink(UP, { ifname: name, mtu, linkinfo: linkinfo('bridge') }, { ...CREATE_EXCL, ...o }));
  }

  /** A veth pair in one request (atomic: the kernel creates both ends, enslaves and raises this end, or nothing). */
  async createVeth(a: { name: string; mtu: number; master?: number; up?: boolean; nsFd?: number }, peer: PeerEnd): Promise<void> {
    const peerAttrs: ifla.LinkAttrs = { ifname: peer.name };
    if (peer.mtu !== undefined) peerAttrs.mtu = peer.mtu;
    if (peer.mac !== undefined) peerAttrs.address = mac(peer.mac);
    if (peer.nsFd !== undefined) peerAttrs.netNsFd = peer.nsFd;
    const peerPayload = Buffer.concat([rt.formatLink({}), enc(ifla.formatLinkAttrs(peerAttrs))]);
    const attrs: ifla.LinkAttrs = { ifname: a.name, mtu: a.mtu, linkinfo: linkinfo('veth', enc(ifla.formatVethInfo({ peer: peerPayload }))) };
    if (a.master !== undefined) attrs.master = a.master;
    if (a.nsFd !== undefined) attrs.netNsFd = a.nsFd;
    await this.call(`create veth ${a.name}/${peer.name}`, (s, o) => s.newLink(a.up ? UP : {}, attrs, { ...CREATE_EXCL, ...o }));
  }

  /**
   * A VXLAN device without learning, with proxy ARP (ARP requests answered from the neighbour table).
   * Its UDP socket lives in the namespace of this socket even when nsFd puts the device elsewhere.
   * An IPv6 `local` (IFLA_VXLAN_LOCAL6) makes it VXLAN over IPv6: the kernel then opens an IPv6
   * socket only, and every FDB destination must be IPv6 too. UDP checksums are on either way
   * (IPv6 requires them; udp6zerocsumtx stays off).
   */
  async createVxlan(v: { name: string; vni: number; local: string; port: number; mtu: number; nsFd?: number }): Promise<void> {
    const local = vtepBytes(v.local);
    const data = enc(ifla.formatVxlan({
      id: v.vni, ...(local.length === 4 ? { local } : { local6: local }), port: be16(v.port), learning: 0, proxy: 1, udpCsum: 1,
    }));
    const attrs: ifla.LinkAttrs = { ifname: v.name, mtu: v.mtu, linkinfo: linkinfo('vxlan', data) };
    if (v.nsFd !== undefined) attrs.netNsFd = v.nsFd;
    await this.call(`create vxlan ${v.name} (vni ${v.vni}, local ${v.local})`, (s, o) => s.newLink({}, attrs, { ...CREATE_EXCL, ...o }));
  }

  /**
   * A macvlan on the link `lower` of this socket's namespace, created straight
   * into the namespace nsFd when given (`ip link add NAME link LOWER netns NS
   * address MAC type macvlan mode bridge|private`). Bridge mode (the default):
   * macvlans of one lower link reach each other without the wire.
   */
  async createMacvlan(v: { name: string; lower: number; mac: string; mtu: number; nsFd?: number; mode?: 'bridge' | 'private' }): Promise<void> {
    const lower = Buffer.alloc(4);
    lower.writeUInt32LE(v.lower);
    const data = enc(ifla.formatMacvlan({ mode: v.mode === 'private' ? MACVLAN_MODE_PRIVATE : MACVLAN_MODE_BRIDGE }));
    const attrs: ifla.LinkAttrs = { ifname: v.name, mtu: v.mtu, link: lower, address: mac(v.mac), linkinfo: linkinfo('macvlan', data) };
    if (v.nsFd !== undefined) attrs.netNsFd = v.nsFd;
    await this.call(`create macvlan ${v.name} on ${v.lower}`, (s, o) => s.newLink({}, attrs, { ...CREATE_EXCL, ...o }));
  }

  /** [wireguard] A link of a kind with no attributes of its own (the kernel's 'wireguard'), down. */
  async createPlainLink(name: string, kind: string, mtu?: number): Promise<void> {
    const attrs: ifla.LinkAttrs = { ifname: name, linkinfo: linkinfo(kind) };
    if (mtu !== undefined) attrs.mtu = mtu;
    await this.call(`create ${kind} link ${name}`, (s, o) => s.newLink({}, attrs, { ...CREATE_EXCL, ...o }));
  }

  async setLink(index: number, what: string, c: LinkChange): Promise<void> {
    const attrs: ifla.LinkAttrs = {};
    if (c.mtu !== undefined) attrs.mtu = c.mtu;
    if (c.master !== undefined) attrs.master = c.master;
    if (c.mac !== undefined) attrs.address = mac(c.mac);
    if (c.name !== undefined) attrs.ifname = c.name;
    if (c.nsFd !== undefined) attrs.netNsFd = c.nsFd;
    const data: rt.Link = { index };
    if (c.up !== undefined) { data.change = { up: true }; data.flags = c.up ? { up: true } : {}; }
    await this.call(`set link ${what} ${JSON.stringify({ ...c, nsFd: undefined })}`, (s, o) => s.setLink(data, attrs, o));
  }

  /** Deletes by index or name; false if it was not there. */
  async delLink(link: number | string): Promise<boolean> {
    try {
      await this.call(`delete link ${link}`, (s, o) =>
        typeof link === 'number' ? s.delLink({ index: link }, {}, o) : s.delLink({}, { ifname: link }, o));
      return true;
    } catch (e) {
      if (errorCode(e) === 'ENODEV') return false;
      throw e;
    }
  }

  // ---- IPv4 addresses (ip addr …); used for the DNS address on lo

  /** IPv4 addresses of every link, or of one link. */
  async listAddresses(index?: number): Promise<{ index: number; ip: string; prefixLen: number }[]> {
    const r = await this.call('dump addresses', (s, o) => s.getAddresses({ family: AF_INET }, {}, o), true);
    const out: { index: number; ip: string; prefixLen: number }[] = [];
    for (const m of r) {
      const a = m.attrs.local ?? m.attrs.address;
      if (m.data.family !== AF_INET || !a || a.length !== 4) continue;
      if (index !== undefined && m.data.index !== index) continue;
      out.push({ index: m.data.index ?? 0, ip: ip4String(a), prefixLen: m.data.prefixlen ?? 32 });
    }
    return out;
  }

  /** Adds ip/prefixLen (scope global) to a link; false when the link already had it. */
  async addAddress(index: number, ip: string, prefixLen: number): Promise<boolean> {
    try {
      await this.call(`add address ${ip}/${prefixLen} on ${index}`, (s, o) =>
        s.newAddress({ family: AF_INET, prefixlen: prefixLen, index }, { local: ip4(ip), address: ip4(ip) }, { ...CREATE_EXCL, ...o }));
      return true;
    } catch (e) {
      if (errorCode(e) === 'EEXIST') return false;
      throw e;
    }
  }

  /** [wireguard] Removes ip/prefixLen from a link; false when it did not have it. */
  async delAddress(index: number, ip: string, prefixLen: number): Promise<boolean> {
    try {
      await this.call(`delete address ${ip}/${prefixLen} on ${index}`, (s, o) =>
        s.delAddress({ family: AF_INET, prefixlen: prefixLen, index }, { local: ip4(ip) }, o));
      return true;
    } catch (e) {
      if (errorCode(e) === 'EADDRNOTAVAIL' || errorCode(e) === 'ENOENT') return false;
      throw e;
    }
  }

  // ---- IPv4 and IPv6 neighbours (ip [-6] neigh … nud permanent); the family follows the address

  async listNeighbours(): Promise<NeighEntry[]> {
    peerRequestCounts.neigh.dump++;
    const r = await this.call('dump neighbours', (s, o) => s.getNeighbors({ family: AF_INET }, {}, o), true);
    const r6 = await this.call('dump IPv6 neighbours', (s, o) => s.getNeighbors({ family: AF_INET6 }, {}, o), true);
    peerRequestCounts.neigh.dumpEntries += r.length + r6.length;
    return [...r, ...r6].map(parseNeigh);
  }

  async addNeighbour(ifindex: number, ip: string, lladdr: string): Promise<void> {
    peerRequestCounts.neigh.add++;
    const family = isV6(ip) ? AF_INET6 : AF_INET;
    await this.call(`add neighbour ${ip} -> ${lladdr} on ${ifindex}`, (s, o) =>
      s.newNeighbor({ family, ifindex, state: { permanent: true } }, { dst: isV6(ip) ? ip6(ip) : ip4(ip), lladdr: mac(lladdr) },
        { flags: FlagsNew.CREATE | FlagsNew.REPLACE, ...o }));
  }

  async delNeighbour(ifindex: number, ip: string): Promise<void> {
    peerRequestCounts.neigh.del++;
    const family = isV6(ip) ? AF_INET6 : AF_INET;
    await this.call(`delete neighbour ${ip} on ${ifindex}`, (s, o) => s.delNeighbor({ family, ifindex }, { dst: isV6(ip) ? ip6(ip) : ip4(ip) }, o));
  }

  // ---- IPv4 proxy entries (ip neigh add proxy IP dev DEV): the link answers ARP for IP

  /** The proxy entries of every link, IPv4 (a dump of the kernel's proxy table: ndm_flags = NTF_PROXY). */
  async listProxies(): Promise<{ ifindex: number; ip: string }[]> {
    peerRequestCounts.neigh.dump++;
    const r = await this.call('dump proxy entries', (s, o) => s.getNeighbors({ family: AF_INET, flags: { proxy: true } }, {}, o), true);
    peerRequestCounts.neigh.dumpEntries += r.length;
    const out: { ifindex: number; ip: string }[] = [];
    for (const m of r) {
      const ip = ipFromBytes(m.attrs.dst);
      if (m.data.flags?.proxy && ip && !ip.includes(':')) out.push({ ifindex: m.data.ifindex ?? 0, ip });
    }
    return out;
  }

  async addProxy(ifindex: number, ip: string): Promise<void> {
    peerRequestCounts.neigh.add++;
    await this.call(`add proxy entry ${ip} on ${ifindex}`, (s, o) =>
      s.newNeighbor({ family: AF_INET, ifindex, flags: { proxy: true } }, { dst: ip4(ip) }, { flags: FlagsNew.CREATE | FlagsNew.REPLACE, ...o }));
  }

  async delProxy(ifindex: number, ip: string): Promise<void> {
    peerRequestCounts.neigh.del++;
    await this.call(`delete proxy entry ${ip} on ${ifindex}`, (s, o) => s.delNeighbor({ family: AF_INET, ifindex, flags: { proxy: true } }, { dst: ip4(ip) }, o));
  }

  // ---- IPv4 routes of weft's own (routed networks: ip route replace IP/32 dev DEV proto 0x77)

  async listRoutes(): Promise<RouteEntry[]> {
    peerRequestCounts.route.dump++;
    const r = await this.call('dump routes', (s, o) => s.getRoutes({ family: AF_INET }, {}, o), true);
    peerRequestCounts.route.dumpEntries += r.length;
    const out: RouteEntry[] = [];
    for (const m of r) {
      if ((m.attrs.table ?? m.data.table) !== RT_TABLE_MAIN) continue;
      const proto = m.data.protocol;
      out.push({
        dst: m.attrs.dst && m.attrs.dst.length === 4 ? ip4String(m.attrs.dst) : '0.0.0.0',
        dstLen: m.data.dstLen ?? 0,
        ...(m.attrs.gateway && m.attrs.gateway.length === 4 ? { via: ip4String(m.attrs.gateway) } : {}),
        ...(m.attrs.oif !== undefined ? { oif: m.attrs.oif } : {}),
        protocol: typeof proto === 'number' ? proto : -1,
      });
    }
    return out;
  }

  /** Adds or replaces the /32 route to `ip` straight on link `oif` (scope link: `ip route replace IP/32 dev DEV proto 0x77`). */
  async replaceLinkRoute(ip: string, oif: number): Promise<void> {
    peerRequestCounts.route.add++;
    await this.call(`replace route ${ip}/32 dev ${oif}`, (s, o) =>
      s.newRoute({ family: AF_INET, dstLen: 32, table: RT_TABLE_MAIN, protocol: WEFT_ROUTE_PROTOCOL as never, scope: RT_SCOPE_LINK as never, type: 1 as never },
        { dst: ip4(ip), oif }, { flags: FlagsNew.CREATE | FlagsNew.REPLACE, ...o }));
  }

  async delRoute(ip: string, oif: number): Promise<void> {
    peerRequestCounts.route.del++;
    await this.call(`delete route ${ip}/32 dev ${oif}`, (s, o) =>
      s.delRoute({ family: AF_INET, dstLen: 32, table: RT_TABLE_MAIN, protocol: WEFT_ROUTE_PROTOCOL as never }, { dst: ip4(ip), oif }, o));
  }

  // ---- bridge FDB (bridge fdb append … dst … self permanent)

  async listFdb(): Promise<NeighEntry[]> {
    peerRequestCounts.fdb.dump++;
    const r = await this.call('dump fdb', (s, o) => s.getNeighbors({ family: AF_BRIDGE }, {}, o), true);
    peerRequestCounts.fdb.dumpEntries += r.length;
    return r.map(parseNeigh);
  }

  async fdbAppend(ifindex: number, lladdr: string, dst: string): Promise<void> {
    peerRequestCounts.fdb.add++;
    await this.call(`fdb append ${lladdr} dst ${dst} on ${ifindex}`, (s, o) =>
      s.newNeighbor({ family: AF_BRIDGE, ifindex, state: { permanent: true }, flags: { self: true } },
        { lladdr: mac(lladdr), dst: vtepBytes(dst) }, { flags: FlagsNew.CREATE | FlagsNew.APPEND, ...o }));
  }

  async fdbDel(ifindex: number, lladdr: string, dst: string): Promise<void> {
    peerRequestCounts.fdb.del++;
    await this.call(`fdb delete ${lladdr} dst ${dst} on ${ifindex}`, (s, o) =>
      s.delNeighbor({ family: AF_BRIDGE, ifindex, state: { permanent: true }, flags: { self: true } },
        { lladdr: mac(lladdr), dst: vtepBytes(dst) }, o));
  }
}
