// weft's DNS server: UDP and TCP on one address (--dns-addr), answering from
// the NameTable, forwarding or refusing the rest. Each query is handled
// synchronously from memory except forwarding (async, bounded) and a short,
// bounded wait for a container weft has not learned yet. Nothing here grows
// with the number of queries: counters only, a fixed cap on parked queries,
// on forwarded queries, on replies waiting to be sent and on TCP connections.
// It shares the event loop with the plugin API, so the per-query work is kept
// to map lookups; floods are absorbed by the kernel's socket buffer.

import * as dgram from 'dgram';
import * as net from 'net';
import type { Logger } from 'pino';
import {
  aRecord, aaaaRecord, ptrRecord, buildResponse, CLASS_ANY, CLASS_IN, DnsFormatError, errorResponse, parseQuery, Query, RCODE, TYPE, udpLimit,
} from './codec';
import type { Forwarder } from './forward';
import type { Lookup, NameTable } from './table';

export interface DnsServerOptions {
  host: string;
  port: number;
  table: NameTable;
  /** Where other names go; undefined: they are REFUSED (--dns-forward off). */
  forwarder?: Forwarder;
  logger: Logger;
  /** Told when a query comes from a source weft does not know yet (typically a container that just started). */
  onUnknownAsker?: (ip: string) => void;
  /** TTL of answers, in seconds. */
  ttl?: number;
  /** How long a query from an unknown source waits for weft to learn it (default 1500 ms; Docker's resolver waits 4 s). */
  parkMs?: number;
  maxParked?: number;
}

export interface DnsStats {
  queries: number;
  answered: number;
  nxdomain: number;
  forwarded: number;
  refused: number;
  servfail: number;
  malformed: number;
  truncated: number;
  dropped: number;
  parked: number;
  tcpConnections: number;
}

interface Parked {
  src: string;
  done: () => void;
}

const MAX_PENDING_SENDS = 1024;
/** Sources that stayed unknown after a wait are not waited for again for this long (a bridge-only container, the host). */
const UNKNOWN_TTL_MS = 30_000;
const MAX_UNKNOWN = 1024;
const MAX_TCP_CONNECTIONS = 64;
const TCP_IDLE_MS = 10_000;
const TCP_MAX_PER_CONNECTION = 16;

export class DnsBindError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DnsBindError';
  }
}

export class DnsServer {
  readonly stats: DnsStats = {
    queries: 0, answered: 0, nxdomain: 0, forwarded: 0, refused: 0, servfail: 0, malformed: 0, truncated: 0, dropped: 0, parked: 0, tcpConnections: 0,
  };
  private udp?: dgram.Socket;
  private tcp?: net.Server;
  private readonly tcpSockets = new Set<net.Socket>();
  private readonly parked = new Set<Parked>();
  /** Source -> until when it is known to be unknown (insertion order = age). */
  private readonly unknown = new Map<string, number>();
  private pendingSends = 0;
  private readonly ttl: number;
  private readonly parkMs: number;
  private readonly maxParked: number;
  private unsubscribe?: () => void;
  private lastMalformedLog = 0;
  private malformedSinceLog = 0;

  constructor(private readonly o: DnsServerOptions) {
    this.ttl = o.ttl ?? 5;
    this.parkMs = o.parkMs ?? 1500;
    this.maxParked = o.maxParked ?? 256;
    this.unsubscribe = o.table.onChange(() => this.wakeParked());
  }

  /** Binds UDP and TCP. Throws DnsBindError saying what to do when the address cannot be used. */
  async start(): Promise<void> {
    const { host, port } = this.o;
    // A larger receive buffer absorbs bursts (the kernel caps it at net.core.rmem_max).
    const udp = dgram.createSocket({ type: 'udp4', recvBufferSize: 1 << 20 });
    try {
      await new Promise<void>((resolve, reject) => {
        udp.once('error', reject);
        udp.bind({ address: host, port, exclusive: true }, () => {
          udp.removeListener('error', reject);
          resolve();
        });
      });
    } catch (e) {
      try { udp.close(); } catch { /* not open */ }
      throw bindError(e as NodeJS.ErrnoException, host, port, 'UDP');
    }
    udp.on('error', (err) => this.o.logger.warn({ err: err.message }, 'DNS UDP socket error'));
    udp.on('message', (msg, rinfo) => this.onUdp(msg, rinfo));
    const tcp = net.createServer({ pauseOnConnect: false }, (s) => this.onTcp(s));
    tcp.maxConnections = MAX_TCP_CONNECTIONS;
    try {
      await new Promise<void>((resolve, reject) => {
        tcp.once('error', reject);
        tcp.listen({ host, port: udp.address().port, exclusive: true }, () => {
          tcp.removeListener('error', reject);
          resolve();
        });
      });
    } catch (e) {
      udp.close();
      throw bindError(e as NodeJS.ErrnoException, host, port, 'TCP');
    }
    tcp.on('error', (err) => this.o.logger.warn({ err: err.message }, 'DNS TCP listener error'));
    this.udp = udp;
    this.tcp = tcp;
  }

  /** The UDP port actually bound (differs from the option when that was 0). */
  port(): number | undefined {
    return this.udp?.address().port;
  }

  async close(): Promise<void> {
    this.unsubscribe?.();
    for (const p of [...this.parked]) p.done();
    try {
      this.udp?.close();
    } catch {
      // already closed
    }
    for (const s of this.tcpSockets) s.destroy();
    await new Promise<void>((r) => (this.tcp ? this.tcp.close(() => r()) : r()));
    this.udp = undefined;
    this.tcp = undefined;
  }

  /** The answer to one DNS message from `src` (undefined: send nothing). Exposed for tests. */
  async answer(msg: Buffer, src: string, overTcp: boolean): Promise<Buffer | undefined> {
    this.stats.queries++;
    let q: Query;
    try {
      q = parseQuery(msg);
    } catch (e) {
      this.noteMalformed(src, e as Error);
      if (e instanceof DnsFormatError && e.id !== undefined) {
        const flags = msg.readUInt16BE(2);
        return errorResponse(e.id, (flags >> 11) & 0xf, (flags & 0x0100) !== 0, RCODE.FORMERR);
      }
      if (!(e instanceof DnsFormatError)) this.o.logger.error({ err: (e as Error).message }, 'DNS: unexpected error reading a query');
      return undefined;
    }
    if (q.opcode !== 0 || !q.question) {
      this.stats.refused++;
      return errorResponse(q.id, q.opcode, q.rd, RCODE.NOTIMP);
    }
    const maxSize = overTcp ? 65535 : udpLimit(q);
    const recursion = this.o.forwarder !== undefined;
    const { name, type, cls } = q.question;
    // PTR of a weft container's address (IPv4 or IPv6): its NAME.NETWORK, with the isolation of A and AAAA.
    const ask = (): Lookup & { names?: string[] } => {
      if (cls !== CLASS_IN && cls !== CLASS_ANY) return { kind: 'other' };
      if (type === TYPE.PTR) {
        const r = this.o.table.reverse(src, name);
        return r.kind === 'found' ? { kind: 'found', ips: [], ips6: [], names: r.names } : r;
      }
      return this.o.table.lookup(src, name);
    };
    let res: Lookup & { names?: string[] } = ask();
    if (res.kind === 'nxdomain' && !this.o.table.asker(src) && this.mayPark(src)) {
      // A container that just started asks before weft has learned it from Docker: wait a little.
      this.o.onUnknownAsker?.(src);
      await this.park(src);
      res = ask();
      if (!this.o.table.asker(src)) this.rememberUnknown(src);
    }
    if (res.kind === 'found') {
      const answers = [
        ...(type === TYPE.A || type === TYPE.ANY ? res.ips.map((ip) => aRecord(ip, this.ttl)) : []),
        ...(type === TYPE.AAAA || type === TYPE.ANY ? res.ips6.map((ip) => aaaaRecord(ip, this.ttl)) : []),
        ...(type === TYPE.PTR ? (res.names ?? []).map((n) => ptrRecord(n, this.ttl)) : []),
      ];
      const out = buildResponse(q, { rcode: RCODE.NOERROR, answers, authoritative: true, recursion, maxSize });
      if (answers.length && out.readUInt16BE(6) === 0) this.stats.truncated++;
      this.stats.answered++;
      return out;
    }
    if (res.kind === 'nxdomain') {
      this.stats.nxdomain++;
      // Not authoritative: Docker's resolver then asks its next server (RFC 8020 lets it stop on an authoritative one).
      return buildResponse(q, { rcode: RCODE.NXDOMAIN, recursion, maxSize });
    }
    if (!this.o.forwarder) {
      this.stats.refused++;
      return buildResponse(q, { rcode: RCODE.REFUSED, recursion, maxSize });
    }
    const reply = await this.o.forwarder.forward(msg, q.questionEnd, overTcp);
    if (!reply) {
      this.stats.servfail++;
      return buildResponse(q, { rcode: RCODE.SERVFAIL, recursion, maxSize });
    }
    this.stats.forwarded++;
    return reply;
  }

  private mayPark(src: string): boolean {
    // The host itself (weft's own address, loopback) is never a container: answer at once.
    if (src === this.o.host || src.startsWith('127.') || this.parked.size >= this.maxParked) return false;
    const until = this.unknown.get(src);
    if (until === undefined) return true;
    if (until > Date.now()) return false;
    this.unknown.delete(src);
    return true;
  }

  private rememberUnknown(src: string): void {
    this.unknown.delete(src);
    if (this.unknown.size >= MAX_UNKNOWN) this.unknown.delete(this.unknown.keys().next().value!);
    this.unknown.set(src, Date.now() + UNKNOWN_TTL_MS);
  }

  private park(src: string): Promise<void> {
    this.stats.parked++;
    return new Promise((resolve) => {
      const p: Parked = {
        src,
        done: () => {
          clearTimeout(t);
          if (this.parked.delete(p)) resolve();
        },
      };
      const t = setTimeout(p.done, this.parkMs);
      this.parked.add(p);
    });
  }

  private wakeParked(): void {
    for (const p of [...this.parked]) if (this.o.table.asker(p.src)) p.done();
  }

  private noteMalformed(src: string, e: Error): void {
    this.stats.malformed++;
    this.malformedSinceLog++;
    const now = Date.now();
    if (now - this.lastMalformedLog < 10_000) return;
    this.o.logger.warn({ from: src, err: e.message, count: this.malformedSinceLog }, 'DNS: ignoring malformed queries (logged at most every 10 s)');
    this.lastMalformedLog = now;
    this.malformedSinceLog = 0;
  }

  private onUdp(msg: Buffer, rinfo: dgram.RemoteInfo): void {
    if (rinfo.port === 0) return;
    this.answer(msg, rinfo.address, false).then((out) => {
      const udp = this.udp;
      if (!out || !udp) return;
      if (this.pendingSends >= MAX_PENDING_SENDS) {
        this.stats.dropped++;
        return;
      }
      this.pendingSends++;
      udp.send(out, rinfo.port, rinfo.address, () => { this.pendingSends--; });
    }).catch((err: Error) => this.o.logger.error({ err: err.message }, 'DNS: answering a query failed'));
  }

  private onTcp(s: net.Socket): void {
    this.stats.tcpConnections++;
    this.tcpSockets.add(s);
    s.setTimeout(TCP_IDLE_MS, () => s.destroy());
    s.on('error', () => s.destroy());
    s.on('close', () => this.tcpSockets.delete(s));
    let buf: Buffer = Buffer.alloc(0);
    let busy = 0;
    s.on('data', (d: Buffer) => {
      buf = buf.length ? Buffer.concat([buf, d]) : d;
      while (buf.length >= 2) {
        const len = buf.readUInt16BE(0);
        if (buf.length < 2 + len) break;
        const msg = buf.subarray(2, 2 + len);
        buf = buf.subarray(2 + len);
        if (++busy > TCP_MAX_PER_CONNECTION) {
          this.stats.dropped++;
          s.destroy();
          return;
        }
        this.answer(Buffer.from(msg), s.remoteAddress?.replace(/^::ffff:/, '') ?? '', true).then((out) => {
          busy--;
          if (!out || s.destroyed) return;
          const len2 = Buffer.alloc(2);
          len2.writeUInt16BE(out.length);
          s.write(Buffer.concat([len2, out]));
        }).catch(() => s.destroy());
      }
    });
  }
}

function bindError(e: NodeJS.ErrnoException, host: string, port: number, proto: string): DnsBindError {
  const where = `${host}:${port}/${proto.toLowerCase()}`;
  switch (e.code) {
    case 'EADDRINUSE':
      return new DnsBindError(`DNS: ${where} is already in use (another DNS server, perhaps bound to all addresses?): stop it, or give weft another --dns-addr`);
    case 'EADDRNOTAVAIL':
      return new DnsBindError(`DNS: ${host} is not an address of this host: weft adds it to lo at start; check that weft may (CAP_NET_ADMIN), or add it yourself (ip addr add ${host}/32 dev lo)`);
    case 'EACCES':
      return new DnsBindError(`DNS: no permission to listen on ${where}: run weft as root (or with CAP_NET_BIND_SERVICE), or pick a port above 1023 in --dns-addr`);
    default:
      return new DnsBindError(`DNS: cannot listen on ${where}: ${e.message}`);
  }
}
