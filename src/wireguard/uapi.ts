// The cross-platform configuration protocol of userspace WireGuard
// (https://www.wireguard.com/xplatform/): text lines "key=value" on a unix
// stream socket, /var/run/wireguard/<interface>.sock. "get=1" and an empty
// line read the device; "set=1", the changes and an empty line write it; the
// answer ends with "errno=N" and an empty line (0 = done).
//
// The device's answer to get=1 holds its private key. The parser turns it
// into the matching public key at once and keeps nothing else of it.
import * as net from 'net';
import { hexToKey, keyToHex, publicKeyOf } from './keys';
import type { WgChange, WgDevice, WgDeviceState, WgPeerState } from './model';

export const UAPI_DIR = '/var/run/wireguard';
export const uapiSocketPath = (ifname: string): string => `${UAPI_DIR}/${ifname}.sock`;

const ENDPOINT = /^(\d{1,3}(\.\d{1,3}){3}|\[[0-9a-fA-F:.]+\]):\d{1,5}$/;
const CIDR4 = /^\d{1,3}(\.\d{1,3}){3}\/\d{1,2}$/;

export class UapiError extends Error {
  constructor(message: string, readonly errno?: number) {
    super(message);
    this.name = 'UapiError';
  }
}

/** The text of a set=1 request (with the final empty line). */
export function encodeSet(c: WgChange): string {
  const lines = ['set=1'];
  if (c.privateKey) lines.push(`private_key=${c.privateKey.reveal().toString('hex')}`);
  if (c.listenPort !== undefined) lines.push(`listen_port=${c.listenPort}`);
  for (const p of c.peers) {
    lines.push(`public_key=${keyToHex(p.publicKey)}`);
    if (p.remove) {
      lines.push('remove=true');
      continue;
    }
    if (p.updateOnly) lines.push('update_only=true');
    if (p.endpoint !== undefined) {
      if (!ENDPOINT.test(p.endpoint)) throw new UapiError(`invalid WireGuard endpoint "${p.endpoint}"`);
      lines.push(`endpoint=${p.endpoint}`);
    }
    if (p.allowedIps !== undefined) {
      lines.push('replace_allowed_ips=true');
      for (const a of p.allowedIps) {
        if (!CIDR4.test(a)) throw new UapiError(`invalid allowed IP "${a}"`);
        lines.push(`allowed_ip=${a}`);
      }
    }
    // Last, after the endpoint: turning keepalive on for a running device sends
    // one at once, which starts the handshake (a new peer is up before traffic).
    if (p.keepalive !== undefined) lines.push(`persistent_keepalive_interval=${p.keepalive}`);
  }
  return `${lines.join('\n')}\n\n`;
}

/** Parses the answer to get=1 (without the errno line's meaning: see errnoOf). */
export function parseGet(text: string): WgDeviceState {
  const dev: WgDeviceState = { listenPort: 0, peers: [] };
  let peer: WgPeerState | undefined;
  let hsSec = 0;
  let hsNsec = 0;
  const closePeer = () => {
    if (!peer) return;
    if (hsSec > 0 || hsNsec > 0) peer.lastHandshakeMs = hsSec * 1000 + Math.floor(hsNsec / 1e6);
    dev.peers.push(peer);
    peer = undefined;
    hsSec = 0;
    hsNsec = 0;
  };
  for (const line of text.split('\n')) {
    if (line === '') continue;
    const eq = line.indexOf('=');
    if (eq <= 0) throw new UapiError(`unreadable line in the device's answer: "${line.slice(0, 40)}"`);
    const key = line.slice(0, eq);
    const value = line.slice(eq + 1);
    switch (key) {
      case 'private_key':
        if (peer) throw new UapiError('private_key after a peer in the device\'s answer');
        // Only its public half is kept. All zeros: no key set.
        if (!/^0+$/.test(value)) dev.publicKey = publicKeyOf(Buffer.from(value, 'hex'));
        break;
      case 'listen_port':
        dev.listenPort = Number(value);
        break;
      case 'public_key':
        closePeer();
        peer = { publicKey: hexToKey(value), allowedIps: [], keepalive: 0, rxBytes: 0, txBytes: 0 };
        break;
      case 'endpoint':
        if (peer) peer.endpoint = value;
        break;
      case 'allowed_ip':
        peer?.allowedIps.push(value);
        break;
      case 'persistent_keepalive_interval':
        if (peer) peer.keepalive = Number(value);
        break;
      case 'last_handshake_time_sec':
        hsSec = Number(value);
        break;
      case 'last_handshake_time_nsec':
        hsNsec = Number(value);
        break;
      case 'rx_bytes':
        if (peer) peer.rxBytes = Number(value);
        break;
      case 'tx_bytes':
        if (peer) peer.txBytes = Number(value);
        break;
      default:
        // fwmark, preshared_key, protocol_version, errno, and keys of later versions
        break;
    }
  }
  closePeer();
  for (const p of dev.peers) p.allowedIps.sort();
  return dev;
}

/** The errno of an answer ("errno=0" last), or undefined when the answer has none. */
export function errnoOf(text: string): number | undefined {
  const m = /(?:^|\n)errno=(-?\d+)\n/.exec(text);
  return m ? Number(m[1]) : undefined;
}

/** One request on the socket: writes `request`, reads until the answer's empty line. */
export function uapiExchange(socketPath: string, request: string, timeoutMs = 5_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const c = net.connect(socketPath);
    let data = '';
    let settled = false;
    const done = (err?: Error) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      c.destroy();
      if (err) reject(err);
      else resolve(data);
    };
    const timer = setTimeout(() => done(new UapiError(`no answer on ${socketPath} within ${timeoutMs} ms: is the WireGuard process hung?`)), timeoutMs);
    c.setEncoding('utf8');
    c.on('connect', () => c.write(request));
    c.on('data', (d: string) => {
      data += d;
      if (data.length > 4 << 20) done(new UapiError(`answer on ${socketPath} larger than 4 MiB`));
      else if (/(^|\n)errno=-?\d+\n\n$/.test(data)) done();
    });
    c.on('end', () => done(data.endsWith('\n\n') ? undefined : new UapiError(`${socketPath} closed the connection in the middle of its answer`)));
    c.on('error', (e: NodeJS.ErrnoException) => {
      const why = e.code === 'ENOENT' ? 'does not exist (the WireGuard process is not running)'
        : e.code === 'ECONNREFUSED' ? 'refuses connections (the WireGuard process died and left its socket)'
          : e.message;
      done(new UapiError(`WireGuard socket ${socketPath} ${why}`));
    });
  });
}

/** A device configured over its UAPI socket. */
export class UapiDevice implements WgDevice {
  readonly kind = 'userspace' as const;
  constructor(readonly socketPath: string, readonly implementation: string, private readonly timeoutMs = 5_000) {}

  async get(): Promise<WgDeviceState> {
    const text = await uapiExchange(this.socketPath, 'get=1\n\n', this.timeoutMs);
    const errno = errnoOf(text);
    if (errno !== 0) throw new UapiError(`reading the WireGuard device on ${this.socketPath} failed (errno ${errno ?? 'missing'})`, errno);
    return parseGet(text);
  }

  async set(change: WgChange): Promise<void> {
    const text = await uapiExchange(this.socketPath, encodeSet(change), this.timeoutMs);
    const errno = errnoOf(text);
    if (errno !== 0) {
      throw new UapiError(`configuring the WireGuard device on ${this.socketPath} failed (errno ${errno ?? 'missing'}): ` +
        'it refused the change (a key, endpoint or allowed IP it cannot use); see its log', errno);
    }
  }
}
