// The DNS wire format (RFC 1035, EDNS0 of RFC 6891): just enough to read one
// question and write an answer of A records, and to check an upstream's reply.
// Everything that arrives is hostile until checked: every read is bounds-checked,
// compression pointers must point backwards (so they cannot loop) and may be
// followed at most MAX_JUMPS times, names are at most 255 bytes, labels at most
// 63. A packet that breaks a rule throws DnsFormatError; nothing else is thrown.

import { toNumber } from '../ipam/cidr';

export const TYPE = { A: 1, NS: 2, CNAME: 5, SOA: 6, PTR: 12, MX: 15, TXT: 16, AAAA: 28, OPT: 41, ANY: 255 } as const;
export const CLASS_IN = 1;
export const CLASS_ANY = 255;
export const RCODE = { NOERROR: 0, FORMERR: 1, SERVFAIL: 2, NXDOMAIN: 3, NOTIMP: 4, REFUSED: 5 } as const;

export const HEADER_LEN = 12;
/** Largest answer over UDP to a client that sent no EDNS OPT record. */
export const CLASSIC_UDP_MAX = 512;
/** The EDNS payload size weft advertises and honours at most (the DNS flag day 2020 value: no IP fragmentation). */
export const EDNS_UDP_MAX = 1232;
const MAX_NAME = 255;
const MAX_LABEL = 63;
const MAX_JUMPS = 32;
/** Additional records read at most (a query has one OPT; anything more is junk). */
const MAX_ADDITIONAL = 8;

const FLAG_QR = 0x8000;
const FLAG_AA = 0x0400;
const FLAG_TC = 0x0200;
const FLAG_RD = 0x0100;
const FLAG_RA = 0x0080;

export class DnsFormatError extends Error {
  constructor(message: string, readonly id?: number) {
    super(message);
    this.name = 'DnsFormatError';
  }
}

export interface Question {
  /** Lower-cased, dot-separated, no trailing dot; '' for the root. Labels with '.' or bytes outside printable ASCII are escaped (\\. and \\ddd), so they never equal a real name. */
  name: string;
  /** The labels as sent (case kept: the answer echoes them, clients using 0x20 case randomisation check it). */
  labels: Buffer[];
  type: number;
  cls: number;
}

export interface Query {
  id: number;
  opcode: number;
  rd: boolean;
  /** Undefined when the packet has no question (answered with FORMERR). */
  question?: Question;
  /** Set when the query carried an EDNS OPT record. */
  edns?: { udpSize: number; version: number };
  /** Byte range of the question section in the packet (for comparing an upstream's reply). */
  questionEnd: number;
}

/** Reads a possibly compressed name at `offset`. Returns its labels and the offset just after it in the packet. */
export function readName(buf: Buffer, offset: number): { labels: Buffer[]; next: number } {
  const labels: Buffer[] = [];
  let pos = offset;
  let next = -1;
  let jumps = 0;
  let total = 1;
  // Pointers must go strictly backwards from the lowest position read so far: no loop is possible.
  let floor = offset;
  for (;;) {
    if (pos >= buf.length) throw new DnsFormatError('name runs past the end of the packet');
    const len = buf[pos];
    const kind = len & 0xc0;
    if (kind === 0xc0) {
      if (pos + 1 >= buf.length) throw new DnsFormatError('compression pointer runs past the end of the packet');
      const target = ((len & 0x3f) << 8) | buf[pos + 1];
      if (next < 0) next = pos + 2;
      if (++jumps > MAX_JUMPS) throw new DnsFormatError('too many compression pointers in one name');
      if (target >= floor) throw new DnsFormatError('compression pointer does not point backwards (a loop?)');
      if (target < HEADER_LEN) throw new DnsFormatError('compression pointer into the header');
      floor = target;
      pos = target;
      continue;
    }
    if (kind !== 0) throw new DnsFormatError(`unsupported label type 0x${kind.toString(16)}`);
    if (len === 0) {
      if (next < 0) next = pos + 1;
      return { labels, next };
    }
    if (len > MAX_LABEL) throw new DnsFormatError('label longer than 63 bytes');
    if (pos + 1 + len > buf.length) throw new DnsFormatError('label runs past the end of the packet');
    total += len + 1;
    if (total > MAX_NAME) throw new DnsFormatError('name longer than 255 bytes');
    labels.push(buf.subarray(pos + 1, pos + 1 + len));
    pos += 1 + len;
  }
}

/** A label as text: lower-cased; '.', '\\' and bytes outside printable ASCII escaped. */
function labelText(l: Buffer): string {
  let s = '';
  for (const b of l) {
    if (b === 0x2e || b === 0x5c) s += '\\' + String.fromCharCode(b);
    else if (b > 0x20 && b < 0x7f) s += String.fromCharCode(b >= 0x41 && b <= 0x5a ? b + 32 : b);
    else s += '\\' + String(b).padStart(3, '0');
  }
  return s;
}

export function nameText(labels: Buffer[]): string {
  return labels.map(labelText).join('.');
}

/** Encodes a dotted name (no escapes, no compression). Throws DnsFormatError when a label or the name is too long. */
export function encodeName(name: string): Buffer {
  const labels = name.replace(/\.$/, '').split('.').filter((l) => l.length > 0).map((l) => Buffer.from(l, 'latin1'));
  return encodeLabels(labels);
}

function encodeLabels(labels: Buffer[]): Buffer {
  const parts: Buffer[] = [];
  let total = 1;
  for (const l of labels) {
    if (l.length === 0 || l.length > MAX_LABEL) throw new DnsFormatError('label empty or longer than 63 bytes');
    total += l.length + 1;
    parts.push(Buffer.from([l.length]), l);
  }
  if (total > MAX_NAME) throw new DnsFormatError('name longer than 255 bytes');
  parts.push(Buffer.from([0]));
  return Buffer.concat(parts);
}

/**
 * Parses a query. Throws DnsFormatError for what must not be answered at all
 * (shorter than a header, or a response: answering responses invites loops);
 * its `id` is set when the header could be read, and the caller answers FORMERR.
 */
export function parseQuery(buf: Buffer): Query {
  if (buf.length < HEADER_LEN) throw new DnsFormatError(`packet of ${buf.length} bytes is shorter than a DNS header`);
  const id = buf.readUInt16BE(0);
  const flags = buf.readUInt16BE(2);
  if (flags & FLAG_QR) throw new DnsFormatError('packet is a response, not a query');
  const opcode = (flags >> 11) & 0xf;
  const rd = (flags & FLAG_RD) !== 0;
  const qd = buf.readUInt16BE(4);
  const an = buf.readUInt16BE(6);
  const ns = buf.readUInt16BE(8);
  const ar = buf.readUInt16BE(10);
  const q: Query = { id, opcode, rd, questionEnd: HEADER_LEN };
  if (opcode !== 0) return q;
  if (qd !== 1) throw new DnsFormatError(`query has ${qd} questions (one is required)`, id);
  if (an !== 0 || ns !== 0) throw new DnsFormatError('query carries answer or authority records', id);
  if (ar > MAX_ADDITIONAL) throw new DnsFormatError(`query carries ${ar} additional records`, id);
  let pos = HEADER_LEN;
  try {
    const { labels, next } = readName(buf, pos);
    if (next + 4 > buf.length) throw new DnsFormatError('question runs past the end of the packet');
    q.question = { name: nameText(labels), labels, type: buf.readUInt16BE(next), cls: buf.readUInt16BE(next + 2) };
    pos = next + 4;
    q.questionEnd = pos;
    for (let i = 0; i < ar; i++) {
      const rr = readName(buf, pos);
      if (rr.next + 10 > buf.length) throw new DnsFormatError('additional record runs past the end of the packet');
      const type = buf.readUInt16BE(rr.next);
      const cls = buf.readUInt16BE(rr.next + 2);
      const ttl = buf.readUInt32BE(rr.next + 4);
      const rdlen = buf.readUInt16BE(rr.next + 8);
      const end = rr.next + 10 + rdlen;
      if (end > buf.length) throw new DnsFormatError('additional record data runs past the end of the packet');
      if (type === TYPE.OPT) {
        if (q.edns) throw new DnsFormatError('more than one OPT record');
        if (rr.labels.length !== 0) throw new DnsFormatError('OPT record with a name other than the root');
        q.edns = { udpSize: cls, version: (ttl >>> 16) & 0xff };
      }
      pos = end;
    }
  } catch (e) {
    if (e instanceof DnsFormatError) throw new DnsFormatError(e.message, id);
    throw e;
  }
  return q;
}

export interface Answer {
  type: number;
  ttl: number;
  data: Buffer;
}

export interface ResponseOptions {
  rcode: number;
  answers?: Answer[];
  authoritative?: boolean;
  /** Recursion available: set when weft forwards other names. */
  recursion?: boolean;
  /** Largest message the transport allows: udpLimit(query) for UDP, 65535 for TCP. */
  maxSize: number;
}

/** The size limit of a UDP answer to this query: 512, or the client's EDNS size within [512, 1232]. */
export function udpLimit(q: Pick<Query, 'edns'>): number {
  if (!q.edns) return CLASSIC_UDP_MAX;
  return Math.min(EDNS_UDP_MAX, Math.max(CLASSIC_UDP_MAX, q.edns.udpSize));
}

/**
 * Builds the answer to a query: the question echoed (case kept), answers
 * named by a pointer to it, an OPT record when the query had one. When it
 * does not fit in maxSize the answers are dropped and TC is set, so the
 * client retries over TCP.
 */
export function buildResponse(q: Query, o: ResponseOptions): Buffer {
  const answers = o.answers ?? [];
  let rcode = o.rcode;
  let extRcode = 0;
  if (q.edns && q.edns.version !== 0) {
    // BADVERS (16): only EDNS version 0 exists.
    rcode = 0;
    extRcode = 1;
  }
  const question = q.question ? Buffer.concat([encodeLabels(q.question.labels), u16(q.question.type), u16(q.question.cls)]) : Buffer.alloc(0);
  const opt = q.edns ? Buffer.concat([Buffer.from([0]), u16(TYPE.OPT), u16(EDNS_UDP_MAX), Buffer.from([extRcode, 0, 0, 0]), u16(0)]) : Buffer.alloc(0);
  const rrs = answers.map((a) => Buffer.concat([u16(0xc000 | HEADER_LEN), u16(a.type), u16(CLASS_IN), u32(a.ttl), u16(a.data.length), a.data]));
  let size = HEADER_LEN + question.length + opt.length;
  for (const r of rrs) size += r.length;
  const truncated = size > o.maxSize;
  const body = truncated ? [] : rrs;
  if (truncated && HEADER_LEN + question.length + opt.length > o.maxSize) {
    // Not even the question fits (cannot happen for maxSize >= 512): header only.
    return header(q, rcode, 0, 0, true, o);
  }
  return Buffer.concat([header(q, rcode, q.question ? 1 : 0, body.length, truncated, o, q.edns ? 1 : 0), question, ...body, opt]);
}

function header(q: Query, rcode: number, qd: number, an: number, tc: boolean, o: ResponseOptions, ar = 0): Buffer {
  let flags = FLAG_QR | ((q.opcode & 0xf) << 11) | (rcode & 0xf);
  if (o.authoritative) flags |= FLAG_AA;
  if (tc) flags |= FLAG_TC;
  if (q.rd) flags |= FLAG_RD;
  if (o.recursion) flags |= FLAG_RA;
  const b = Buffer.alloc(HEADER_LEN);
  b.writeUInt16BE(q.id, 0);
  b.writeUInt16BE(flags, 2);
  b.writeUInt16BE(qd, 4);
  b.writeUInt16BE(an, 6);
  b.writeUInt16BE(0, 8);
  b.writeUInt16BE(ar, 10);
  return b;
}

/** A minimal error answer from the header alone (FORMERR to a packet whose question could not be read). */
export function errorResponse(id: number, opcode: number, rd: boolean, rcode: number): Buffer {
  return header({ id, opcode, rd, questionEnd: HEADER_LEN }, rcode, 0, 0, false, { rcode, maxSize: CLASSIC_UDP_MAX });
}

export function aRecord(ip: string, ttl: number): Answer {
  return { type: TYPE.A, ttl, data: Buffer.from(ip.split('.').map(Number)) };
}

/** An AAAA record: 16 bytes of the IPv6 address. */
export function aaaaRecord(ip6: string, ttl: number): Answer {
  return { type: TYPE.AAAA, ttl, data: Buffer.from(toNumber(ip6).toString(16).padStart(32, '0'), 'hex') };
}

/** A PTR record naming `name` (uncompressed). */
export function ptrRecord(name: string, ttl: number): Answer {
  return { type: TYPE.PTR, ttl, data: encodeName(name) };
}

/** Flags and rcode of a DNS message header (for checking an upstream's reply), or undefined when it is shorter than a header. */
export function readHeader(buf: Buffer): { id: number; qr: boolean; tc: boolean; rcode: number; qd: number } | undefined {
  if (buf.length < HEADER_LEN) return undefined;
  const flags = buf.readUInt16BE(2);
  return { id: buf.readUInt16BE(0), qr: (flags & FLAG_QR) !== 0, tc: (flags & FLAG_TC) !== 0, rcode: flags & 0xf, qd: buf.readUInt16BE(4) };
}

function u16(n: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(n & 0xffff);
  return b;
}

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0);
  return b;
}
