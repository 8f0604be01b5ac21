// What weft reads from and writes to a WireGuard device, whichever the
// implementation: the kernel module (configured over generic netlink,
// kernel.ts) or a userspace one such as wireguard-go (configured over the
// cross-platform UAPI socket, uapi.ts). Keys are base64 here.
import type { PrivateKey } from './keys';

export interface WgPeer {
  publicKey: string;
  /** "ip:port" */
  endpoint?: string;
  /** "a.b.c.d/len" */
  allowedIps: string[];
  /** Seconds; 0 = off. */
  keepalive: number;
}

export interface WgPeerState extends WgPeer {
  /** Unix time of the last completed handshake in ms, or undefined if none yet. */
  lastHandshakeMs?: number;
  rxBytes: number;
  txBytes: number;
}

export interface WgDeviceState {
  /** Public key of the private key the device holds (the private key itself is never read back out of the parser). */
  publicKey?: string;
  listenPort: number;
  peers: WgPeerState[];
}

/** One configuration transaction. Peers not named are left alone (never replace_peers: that would drop every session). */
export interface WgChange {
  privateKey?: PrivateKey;
  listenPort?: number;
  peers: WgPeerChange[];
}

export type WgPeerChange =
  | { publicKey: string; remove: true }
  /** Creates the peer or updates it; allowed IPs replace the old ones when given. */
  | { publicKey: string; remove?: false; updateOnly?: boolean; endpoint?: string; keepalive?: number; allowedIps?: string[] };

/** A WireGuard device as weft drives it. */
export interface WgDevice {
  /** 'kernel' or 'userspace' */
  readonly kind: 'kernel' | 'userspace';
  /** For logs, status and doctor: "wireguard-go 0.0.20220316 (userspace)" or "kernel module". */
  readonly implementation: string;
  get(): Promise<WgDeviceState>;
  set(change: WgChange): Promise<void>;
}

export function isEmptyChange(c: WgChange): boolean {
  return c.privateKey === undefined && c.listenPort === undefined && c.peers.length === 0;
}

/** "How the change reads in a log line": never the private key. */
export function describeChange(c: WgChange): Record<string, unknown> {
  return {
    ...(c.privateKey ? { privateKey: 'new' } : {}),
    ...(c.listenPort !== undefined ? { listenPort: c.listenPort } : {}),
    removed: c.peers.filter((p) => p.remove).map((p) => p.publicKey.slice(0, 8)),
    set: c.peers.filter((p) => !p.remove).map((p) => p.publicKey.slice(0, 8)),
  };
}
