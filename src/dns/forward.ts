// Forwarding of names that are not weft's to the host's own resolvers (the
// nameservers of /etc/resolv.conf, minus weft's own address and Docker's
// 127.0.0.11). Bounded: at most maxInFlight queries are out at once (past
// that the client gets SERVFAIL and Docker's resolver tries its next server),
// each waits at most timeoutMs per upstream, and each uses a fresh socket
// (random source port) and a fresh random id, so a reply can only come from
// the upstream it was sent to.

import * as dgram from 'dgram';
import * as fs from 'fs';
import * as net from 'net';
import { randomInt } from 'crypto';
import { readHeader } from './codec';

/** Nameservers listed in a resolv.conf text, in order, without the excluded ones. */
export function parseResolvConf(text: string, exclude: string[] = []): string[] {
  const out: string[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.replace(/[#;].*$/, '').trim();
    const m = /^nameserver\s+(\S+)$/.exec(line);
    if (!m) continue;
    const ip = m[1];
    if (!net.isIP(ip.replace(/%.*$/, '')) || exclude.includes(ip) || out.includes(ip)) continue;
    out.push(ip);
  }
  return out.slice(0, 3); // like the C library: the first three
}

/**
 * Whether a datagram's source address is the upstream's: compared as
 * addresses, not strings (an IPv6 upstream may be written in another form,
 * with a zone, and an IPv4 one may arrive IPv4-mapped).
 */
export function sameAddress(from: string, server: string): boolean {
  const norm = (a: string): string => {
    let x = a.replace(/%.*$/, '').toLowerCase();
    if (x.startsWith('::ffff:') && net.isIPv4(x.slice(7))) x = x.slice(7);
    if (net.isIPv6(x)) {
      const sl = new net.SocketAddress({ address: x, family: 'ipv6' });
      return sl.address;
    }
    return x;
  };
  return norm(from) === norm(server);
}

export interface ForwarderOptions {
  /** resolv.conf to read the upstreams from; re-read when it changes. */
  resolvConf: string;
  /** Addresses never forwarded to (weft's own DNS address, Docker's 127.0.0.11). */
  exclude: string[];
  maxInFlight?: number;
  timeoutMs?: number;
  port?: number;
}

export class Forwarder {
  private inFlight = 0;
  private cached: { at: number; mtimeMs: number; servers: string[] } = { at: 0, mtimeMs: -1, servers: [] };
  private readonly maxInFlight: number;
  private readonly timeoutMs: number;
  private readonly port: number;
  private readonly sockets = new Set<dgram.Socket | net.Socket>();
  private closed = false;

  constructor(private readonly o: ForwarderOptions) {
    this.maxInFlight = o.maxInFlight ?? 256;
    this.timeoutMs = o.timeoutMs ?? 2000;
    this.port = o.port ?? 53;
  }

  /** The upstreams now (resolv.conf is looked at again at most once a second). */
  upstreams(): string[] {
    const now = Date.now();
    if (now - this.cached.at < 1000) return this.cached.servers;
    this.cached.at = now;
    try {
      const st = fs.statSync(this.o.resolvConf);
      if (st.mtimeMs !== this.cached.mtimeMs) {
        this.cached.servers = parseResolvConf(fs.readFileSync(this.o.resolvConf, 'utf8'), this.o.exclude);
        this.cached.mtimeMs = st.mtimeMs;
      }
    } catch {
      this.cached.servers = [];
      this.cached.mtimeMs = -1;
    }
    return this.cached.servers;
  }

  busy(): boolean {
    return this.inFlight >= this.maxInFlight;
  }

  /**
   * Sends `query` (a whole DNS message, which is not modified) to each upstream
   * in turn until one answers; returns the answer with the client's id, or
   * undefined (no upstream, all silent, or too many queries out already).
   */
  async forward(query: Buffer, questionEnd: number, tcp: boolean): Promise<Buffer | undefined> {
    const servers = this.upstreams();
    if (!servers.length || this.closed || this.busy()) return undefined;
    this.inFlight++;
    try {
      for (const server of servers) {
        const id = randomInt(0, 0x10000);
        const out = Buffer.from(query);
        out.writeUInt16BE(id, 0);
        const reply = await (tcp ? this.tcpExchange(server, out) : this.udpExchange(server, out, id, query.subarray(12, questionEnd)));
        if (!reply) continue;
        const h = readHeader(reply);
        if (!h || h.id !== id || !h.qr) continue;
        reply.writeUInt16BE(query.readUInt16BE(0), 0);
        return reply;
      }
      return undefined;
    } finally {
      this.inFlight--;
    }
  }

  close(): void {
    this.closed = true;
    for (const s of this.sockets) {
      try {
        if (s instanceof net.Socket) s.destroy();
        else s.close();
      } catch {
        // already closed
      }
    }
    this.sockets.clear();
  }

  private udpExchange(server: string, msg: Buffer, id: number, question: Buffer): Promise<Buffer | undefined> {
    return new Promise((resolve) => {
      const family = net.isIPv6(server.replace(/%.*$/, '')) ? 'udp6' : 'udp4';
      const s = dgram.createSocket(family);
      this.sockets.add(s);
      let done = false;
      const finish = (r: Buffer | undefined) => {
        if (done) return;
        done = true;
        clearTimeout(t);
        this.sockets.delete(s);
        try {
          s.close();
        } catch {
          // already closed
        }
        resolve(r);
      };
      const t = setTimeout(() => finish(undefined), this.timeoutMs);
      s.on('error', () => finish(undefined));
      s.on('message', (m, rinfo) => {
        // Only the upstream's own reply to this very question counts: from its
        // address and port, with our id and question. Anything else is ignored.
        if (!sameAddress(rinfo.address, server) || rinfo.port !== this.port) return;
        if (m.length < 12 + question.length || m.readUInt16BE(0) !== id) return;
        if (!m.subarray(12, 12 + question.length).equals(question)) return;
        finish(m);
      });
      s.send(msg, this.port, server, (err) => { if (err) finish(undefined); });
    });
  }

  private tcpExchange(server: string, msg: Buffer): Promise<Buffer | undefined> {
    return new Promise((resolve) => {
      const s = net.connect({ host: server.replace(/%.*$/, ''), port: this.port });
      this.sockets.add(s);
      let buf: Buffer = Buffer.alloc(0);
      let done = false;
      const finish = (r: Buffer | undefined) => {
        if (done) return;
        done = true;
        clearTimeout(t);
        this.sockets.delete(s);
        s.destroy();
        resolve(r);
      };
      const t = setTimeout(() => finish(undefined), this.timeoutMs);
      s.on('error', () => finish(undefined));
      s.on('close', () => finish(undefined));
      s.on('connect', () => {
        const len = Buffer.alloc(2);
        len.writeUInt16BE(msg.length);
        s.write(Buffer.concat([len, msg]));
      });
      s.on('data', (d: Buffer) => {
        buf = Buffer.concat([buf, d]);
        if (buf.length > 65537) return finish(undefined);
        if (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) finish(buf.subarray(2, 2 + buf.readUInt16BE(0)));
      });
    });
  }
}
