// VXLAN reachability probe between hosts, for `weft doctor`.
//
// A firewall that drops UDP 4789 breaks the overlay silently: containers on
// one host just cannot reach the others. The check has to send real VXLAN
// packets to the real port, but the port belongs to the kernel's VXLAN
// socket, so no program can listen on it. Instead:
//
//   1. `weft doctor` on host A makes a throwaway namespace holding one VXLAN
//      device per peer, each with its own VNI below 4096 (weft's networks use
//      4096 and up), created from A's namespace like weft's own devices, so
//      it shares the kernel's UDP socket on --vxlan-port;
//   2. it sends a small JSON request over UDP to each peer's weft on
//      --probe-port (4790): {t: "weft-probe", id, vni};
//   3. the peer's weft sends one VXLAN packet (that VNI, a broadcast frame of
//      the local experimental EtherType 0x88B5) from its advertise address to
//      A's address at --vxlan-port, then answers the request;
//   4. A reads the receive counter of the probe device for that VNI: if it
//      moved, a VXLAN packet from that peer crossed every firewall on the way
//      into A on UDP 4789.
//
// Each host thus checks its inbound direction; run `weft doctor` on every
// host to cover every pair. The responder only ever sends to the address the
// request came from, at most one packet of about the request's size per
// request, rate-limited, and only with VNIs weft never uses for networks.
import * as dgram from 'dgram';
import { randomBytes } from 'crypto';
import type { Logger } from 'pino';

export const PROBE_VNI_MAX = 4095;
/**
 * The VNI of liveness probes between wefts (Agent: is a host whose lease
 * expired still there?). weft doctor never picks it (its VNIs stay below
 * PROBE_VNI_MAX - 1), and no network uses it, so the VXLAN packet the peer
 * sends back is dropped by the kernel. Liveness uses the doctor's request
 * because every weft since the probe responder exists answers it.
 */
export const LIVENESS_VNI = PROBE_VNI_MAX;
const MAX_REQUEST = 512;

/** A UDP socket of the family of the address it binds to (an IPv6 underlay: udp6, IPv6 only). */
function udpSocketFor(address: string): dgram.Socket {
  return address.includes(':') ? dgram.createSocket({ type: 'udp6', ipv6Only: true }) : dgram.createSocket({ type: 'udp4' });
}
const ETHERTYPE_EXPERIMENTAL = 0x88b5;

export interface ProbeRequest { t: 'weft-probe'; v: 1; id: string; vni: number }
export interface ProbeReply {
  t: 'weft-probe-reply'; v: 1; id: string; host: string; vxlanPort: number; sent: boolean; error?: string;
  /** Added later (older wefts leave them out): this weft process's random id and start time. */
  instance?: string; startedAt?: string;
}

/** A VXLAN packet (RFC 7348 header + an Ethernet frame) for the given VNI. */
export function vxlanProbePacket(vni: number, id: string): Buffer {
  const header = Buffer.alloc(8);
  header[0] = 0x08; // I flag: the VNI is valid
  header.writeUIntBE(vni, 4, 3);
  const eth = Buffer.alloc(14);
  Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff, 0xff]).copy(eth, 0);
  // locally administered unicast source ("wefp" + 2 random bytes)
  Buffer.from([0x02, 0x77, 0x65, 0x66, ...randomBytes(2)]).copy(eth, 6);
  eth.writeUInt16BE(ETHERTYPE_EXPERIMENTAL, 12);
  const payload = Buffer.alloc(46);
  Buffer.from(`weft-probe ${id}`.slice(0, 46)).copy(payload);
  return Buffer.concat([header, eth, payload]);
}

export function parseRequest(msg: Buffer): ProbeRequest | undefined {
  if (msg.length > MAX_REQUEST) return undefined;
  try {
    const r = JSON.parse(msg.toString('utf8')) as Partial<ProbeRequest>;
    if (r.t !== 'weft-probe' || r.v !== 1) return undefined;
    if (typeof r.id !== 'string' || !/^[A-Za-z0-9_-]{1,64}$/.test(r.id)) return undefined;
    if (typeof r.vni !== 'number' || !Number.isInteger(r.vni) || r.vni < 1 || r.vni > PROBE_VNI_MAX) return undefined;
    return r as ProbeRequest;
  } catch {
    return undefined;
  }
}

export interface ResponderOptions {
  /** This host's advertise address: requests arrive there, VXLAN packets leave from it. */
  address: string;
  port: number;
  vxlanPort: number;
  host: string;
  logger: Logger;
  /** Requests answered per second at most (default 50). */
  ratePerSecond?: number;
  /** This process's instance id and start time, in every reply. */
  instance?: string;
  startedAt?: string;
}

export interface Responder {
  close(): Promise<void>;
}

/** Liveness probes answered per second at most: each other host sends up to 2 a second per host it checks. */
export const LIVENESS_RATE = 500;

function bucket(rate: number): () => boolean {
  let tokens = rate;
  let refilled = Date.now();
  return () => {
    const now = Date.now();
    tokens = Math.min(rate, tokens + ((now - refilled) / 1000) * rate);
    refilled = now;
    if (tokens < 1) return false;
    tokens--;
    return true;
  };
}

export async function startProbeResponder(o: ResponderOptions): Promise<Responder> {
  const sock = udpSocketFor(o.address);
  const doctorToken = bucket(o.ratePerSecond ?? 50);
  const livenessToken = bucket(LIVENESS_RATE);
  sock.on('message', (msg, rinfo) => {
    const req = parseRequest(msg);
    if (!req) return;
    if (req.vni === LIVENESS_VNI) {
      // Another weft asks whether this host is there (its lease expired for
      // them): the reply says it, and no VXLAN packet is needed. A bucket of
      // its own, so that a partitioned host in a large cluster can answer all.
      if (!livenessToken()) return;
      const r: ProbeReply = {
        t: 'weft-probe-reply', v: 1, id: req.id, host: o.host, vxlanPort: o.vxlanPort, sent: false,
        ...(o.instance ? { instance: o.instance } : {}), ...(o.startedAt ? { startedAt: o.startedAt } : {}),
      };
      sock.send(JSON.stringify(r), rinfo.port, rinfo.address);
      return;
    }
    if (!doctorToken()) return;
    const reply = (sent: boolean, error?: string) => {
      const r: ProbeReply = {
        t: 'weft-probe-reply', v: 1, id: req.id, host: o.host, vxlanPort: o.vxlanPort, sent, ...(error ? { error } : {}),
        ...(o.instance ? { instance: o.instance } : {}), ...(o.startedAt ? { startedAt: o.startedAt } : {}),
      };
      sock.send(JSON.stringify(r), rinfo.port, rinfo.address);
    };
    // Sent from the same socket: its source is this host's advertise address, as with real VXLAN traffic.
    sock.send(vxlanProbePacket(req.vni, req.id), o.vxlanPort, rinfo.address, (err) => {
      if (err) o.logger.debug({ to: rinfo.address, err: err.message }, 'probe packet not sent');
      reply(!err, err?.message);
    });
    o.logger.debug({ from: rinfo.address, vni: req.vni }, 'answered a weft doctor probe');
  });
  await new Promise<void>((resolve, reject) => {
    sock.once('error', reject);
    sock.bind(o.port, o.address, () => {
      sock.removeListener('error', reject);
      resolve();
    });
  });
  sock.on('error', (err) => o.logger.warn({ err: err.message }, 'probe responder error'));
  o.logger.info({ address: o.address, port: o.port }, 'answering weft doctor probes');
  return { close: () => new Promise<void>((resolve) => sock.close(() => resolve())) };
}

export interface ProbeTarget { host: string; address: string; vni: number }

export interface ProbeResult { reply?: ProbeReply; error?: string }

/**
 * Sends a probe request to each target's responder (retrying a few times) and
 * collects the replies. Binds to `from` so that the peers send their VXLAN
 * packet to that address.
 */
export async function sendProbes(from: string, port: number, targets: ProbeTarget[], timeoutMs = 3000): Promise<Map<string, ProbeResult>> {
  const out = new Map<string, ProbeResult>();
  if (targets.length === 0) return out;
  const sock = udpSocketFor(from);
  const ids = new Map<string, ProbeTarget>();
  for (const t of targets) ids.set(randomBytes(8).toString('hex'), t);
  try {
    await new Promise<void>((resolve, reject) => {
      sock.once('error', reject);
      sock.bind(0, from, () => { sock.removeListener('error', reject); resolve(); });
    });
    const errors = new Map<string, string>();
    sock.on('error', () => undefined);
    sock.on('message', (msg) => {
      try {
        const r = JSON.parse(msg.toString('utf8')) as ProbeReply;
        const t = r?.t === 'weft-probe-reply' ? ids.get(r.id) : undefined;
        if (t && !out.has(t.host)) out.set(t.host, { reply: r });
      } catch {
        // not ours
      }
    });
    const sendAll = () => {
      for (const [id, t] of ids) {
        if (out.has(t.host)) continue;
        const req: ProbeRequest = { t: 'weft-probe', v: 1, id, vni: t.vni };
        sock.send(JSON.stringify(req), port, t.address, (err) => { if (err) errors.set(t.host, err.message); });
      }
    };
    const deadline = Date.now() + timeoutMs;
    let nextSend = 0;
    while (Date.now() < deadline && out.size < targets.length) {
      if (Date.now() >= nextSend) {
        sendAll();
        nextSend = Date.now() + 500;
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    for (const t of targets) {
      if (!out.has(t.host)) out.set(t.host, { error: errors.get(t.host) ?? `no answer within ${timeoutMs} ms` });
    }
  } finally {
    sock.close();
  }
  return out;
}

export interface Answer {
  host: string;
  instance?: string;
  startedAt?: string;
}

/**
 * Asks the weft at an address whether it is there, over --probe-port, from
 * one socket bound to this host's advertise address (so that the request
 * takes the underlay like VXLAN traffic). ask() resolves with the reply, or
 * undefined when none came within the timeout; each request is sent twice
 * (at once and half-way) so that one lost datagram does not count as silence.
 */
export class Prober {
  private sock?: dgram.Socket;
  private opening?: Promise<dgram.Socket>;
  private readonly waiting = new Map<string, (a: Answer) => void>();
  private closed = false;

  constructor(private readonly from: string, private readonly port: number) {}

  private open(): Promise<dgram.Socket> {
    if (this.sock) return Promise.resolve(this.sock);
    if (!this.opening) {
      this.opening = new Promise<dgram.Socket>((resolve, reject) => {
        const s = udpSocketFor(this.from);
        s.once('error', (e) => { this.opening = undefined; s.close(); reject(e); });
        s.bind(0, this.from, () => {
          s.removeAllListeners('error');
          s.on('error', () => undefined);
          s.on('message', (msg) => {
            try {
              const r = JSON.parse(msg.toString('utf8')) as Partial<ProbeReply>;
              if (r?.t !== 'weft-probe-reply' || typeof r.id !== 'string' || typeof r.host !== 'string') return;
              this.waiting.get(r.id)?.({ host: r.host, ...(typeof r.instance === 'string' ? { instance: r.instance } : {}), ...(typeof r.startedAt === 'string' ? { startedAt: r.startedAt } : {}) });
            } catch {
              // not ours
            }
          });
          this.sock = s;
          resolve(s);
        });
      });
    }
    return this.opening;
  }

  async ask(address: string, timeoutMs: number): Promise<Answer | undefined> {
    if (this.closed || this.port <= 0) return undefined;
    const sock = await this.open();
    const id = randomBytes(8).toString('hex');
    const req = JSON.stringify({ t: 'weft-probe', v: 1, id, vni: LIVENESS_VNI } satisfies ProbeRequest);
    return new Promise<Answer | undefined>((resolve) => {
      const timers: NodeJS.Timeout[] = [];
      const done = (a: Answer | undefined) => {
        if (!this.waiting.has(id)) return;
        this.waiting.delete(id);
        for (const t of timers) clearTimeout(t);
        resolve(a);
      };
      this.waiting.set(id, done);
      const send = () => { if (this.waiting.has(id)) sock.send(req, this.port, address, () => undefined); };
      send();
      timers.push(setTimeout(send, timeoutMs / 2));
      timers.push(setTimeout(() => done(undefined), timeoutMs));
    });
  }

  close(): void {
    this.closed = true;
    for (const done of [...this.waiting.values()]) done(undefined as unknown as Answer);
    this.sock?.close();
    this.sock = undefined;
  }
}

