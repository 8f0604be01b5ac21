// The kernel's WireGuard, configured over generic netlink (the "wireguard"
// family, WG_CMD_GET_DEVICE / WG_CMD_SET_DEVICE), through the `netlink`
// package's WireGuard socket. The same WgDevice model as the UAPI transport
// (uapi.ts): the manager (index.ts) does not know which one it drives.
//
// NOT TESTED on the project's machine: its kernel has no WireGuard module.
// The tests exercise the userspace path (wireguard-go over UAPI) only; see the
// README ("Encrypted networks", what is and is not tested).
import { createGenericNetlink, FlagsGet, genl, WireGuardSocket, wg } from 'netlink';
import { withNetns } from '../dataplane/netns';
import type { WgChange, WgDevice, WgDeviceState, WgPeerState } from './model';
import { parseKey } from './keys';
import { hostPort, ipBytes, ipFromBytes, splitHostPort } from '../util/ip';

const AF_INET = 2;
const AF_INET6 = 10;

/** struct sockaddr_in for IPv4:port, struct sockaddr_in6 for [IPv6]:port (an IPv6 underlay). */
export function sockaddrIn(endpoint: string): Buffer {
  const hp = splitHostPort(endpoint);
  const addr = hp && ipBytes(hp.host);
  if (!hp || !addr) throw new Error(`invalid WireGuard endpoint "${endpoint}" (IPv4:port or [IPv6]:port)`);
  if (addr.length === 4) {
    const b = Buffer.alloc(16);
    b.writeUInt16LE(AF_INET, 0);
    b.writeUInt16BE(hp.port, 2);
    addr.copy(b, 4);
    return b;
  }
  const b = Buffer.alloc(28); // family, port, flowinfo, address, scope id
  b.writeUInt16LE(AF_INET6, 0);
  b.writeUInt16BE(hp.port, 2);
  addr.copy(b, 8);
  return b;
}

export function endpointOf(b: Buffer | undefined): string | undefined {
  if (!b || b.length < 8) return undefined;
  const family = b.readUInt16LE(0);
  if (family === AF_INET) return `${[...b.subarray(4, 8)].join('.')}:${b.readUInt16BE(2)}`;
  if (family === AF_INET6 && b.length >= 24) {
    const ip = ipFromBytes(b.subarray(8, 24));
    return ip ? hostPort(ip, b.readUInt16BE(2)) : undefined;
  }
  return undefined;
}

function cidr(a: wg.AllowedIp): string | undefined {
  if (a.family !== AF_INET || !a.ipaddr || a.ipaddr.length !== 4) return undefined;
  return `${[...a.ipaddr].join('.')}/${a.cidrMask ?? 32}`;
}

function allowedIp(c: string): wg.AllowedIp {
  const [ip, len] = c.split('/');
  return { family: AF_INET, ipaddr: Buffer.from(ip.split('.').map(Number)), cidrMask: Number(len) };
}

function key(b64: string): Buffer {
  const k = parseKey(b64);
  if (!k) throw new Error('invalid WireGuard public key');
  return k;
}

/** A kernel WireGuard device named `ifname` in the network namespace at netnsPath. */
export class KernelDevice implements WgDevice {
  readonly kind = 'kernel' as const;
  readonly implementation = 'kernel module (generic netlink)';
  private sock?: Promise<WireGuardSocket>;

  constructor(private readonly ifname: string, private readonly netnsPath: string, private readonly timeoutMs = 5_000) {}

  private socket(): Promise<WireGuardSocket> {
    this.sock ??= (async () => {
      // The device is looked up by name in the namespace of the socket.
      const g = withNetns(this.netnsPath, () => createGenericNetlink());
      const families = await g.ctrlRequest(genl.Commands.GET_FAMILY, {}, { flags: FlagsGet.DUMP, timeout: this.timeoutMs });
      const family = families.find((f) => f.familyName === 'wireguard');
      if (!family) {
        g.socket.socket.close();
        throw new Error('the kernel has no WireGuard (no "wireguard" generic netlink family): load the module (modprobe wireguard) or use --wireguard userspace');
      }
      return new WireGuardSocket(g, family);
    })().catch((e) => {
      this.sock = undefined;
      throw e;
    });
    return this.sock;
  }

  async get(): Promise<WgDeviceState> {
    const parts = await (await this.socket()).getDevice(this.ifname, { timeout: this.timeoutMs });
    const out: WgDeviceState = { listenPort: 0, peers: [] };
    const byKey = new Map<string, WgPeerState>();
    for (const d of parts) {
      // A device with many peers arrives in several messages; a peer may continue in the next one.
      if (d.publicKey && !/^0+$/.test(d.publicKey.toString('hex'))) out.publicKey = d.publicKey.toString('base64');
      if (d.listenPort !== undefined) out.listenPort = d.listenPort;
      for (const p of d.peers ?? []) {
        if (!p.publicKey) continue;
        const pk = p.publicKey.toString('base64');
        let s = byKey.get(pk);
        if (!s) {
          s = { publicKey: pk, allowedIps: [], keepalive: 0, rxBytes: 0, txBytes: 0 };
          byKey.set(pk, s);
          out.peers.push(s);
        }
        const ep = endpointOf(p.endpoint);
        if (ep) s.endpoint = ep;
        if (p.persistentKeepaliveInterval !== undefined) s.keepalive = p.persistentKeepaliveInterval;
        if (p.rxBytes !== undefined) s.rxBytes = Number(p.rxBytes);
        if (p.txBytes !== undefined) s.txBytes = Number(p.txBytes);
        if (p.lastHandshakeTime && p.lastHandshakeTime.length >= 16) {
          const sec = Number(p.lastHandshakeTime.readBigInt64LE(0));
          const nsec = Number(p.lastHandshakeTime.readBigInt64LE(8));
          if (sec > 0 || nsec > 0) s.lastHandshakeMs = sec * 1000 + Math.floor(nsec / 1e6);
        }
        for (const a of p.allowedIps ?? []) {
          const c = cidr(a);
          if (c) s.allowedIps.push(c);
        }
      }
    }
    for (const p of out.peers) p.allowedIps.sort();
    return out;
  }

  async set(c: WgChange): Promise<void> {
    const dev: wg.Device = {};
    if (c.privateKey) dev.privateKey = c.privateKey.reveal();
    if (c.listenPort !== undefined) dev.listenPort = c.listenPort;
    dev.peers = c.peers.map((p): wg.Peer => {
      if (p.remove) return { publicKey: key(p.publicKey), flags: { removeMe: true } };
      const peer: wg.Peer = { publicKey: key(p.publicKey) };
      const flags: wg.PeerFlags = {};
      if (p.updateOnly) flags.updateOnly = true;
      if (p.endpoint !== undefined) peer.endpoint = sockaddrIn(p.endpoint);
      if (p.keepalive !== undefined) peer.persistentKeepaliveInterval = p.keepalive;
      if (p.allowedIps !== undefined) {
        flags.replaceAllowedIps = true;
        peer.allowedIps = p.allowedIps.map(allowedIp);
      }
      if (Object.keys(flags).length) peer.flags = flags;
      return peer;
    });
    await (await this.socket()).setDevice(this.ifname, dev, { timeout: this.timeoutMs });
  }

  close(): void {
    void this.sock?.then((s) => s.socket.socket.socket.close(), () => undefined);
    this.sock = undefined;
  }
}
