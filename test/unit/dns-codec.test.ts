// The DNS wire codec: round trips, EDNS, truncation, and hostile packets
// (truncated headers and names, compression pointer loops, oversized labels,
// random bytes): parseQuery either returns or throws DnsFormatError, nothing else.
import { describe, expect, it } from 'vitest';
import {
  aRecord, buildResponse, DnsFormatError, encodeName, errorResponse, parseQuery, RCODE, readHeader, readName, TYPE, udpLimit,
} from '../../src/dns/codec';
import { makeQuery } from './dns-helpers';

function header(fields: { id?: number; flags?: number; qd?: number; an?: number; ns?: number; ar?: number }): Buffer {
  const h = Buffer.alloc(12);
  h.writeUInt16BE(fields.id ?? 7, 0);
  h.writeUInt16BE(fields.flags ?? 0x0100, 2);
  h.writeUInt16BE(fields.qd ?? 1, 4);
  h.writeUInt16BE(fields.an ?? 0, 6);
  h.writeUInt16BE(fields.ns ?? 0, 8);
  h.writeUInt16BE(fields.ar ?? 0, 10);
  return h;
}

function formatError(buf: Buffer): DnsFormatError {
  try {
    parseQuery(buf);
  } catch (e) {
    expect(e).toBeInstanceOf(DnsFormatError);
    return e as DnsFormatError;
  }
  throw new Error('parseQuery accepted the packet');
}

describe('DNS codec', () => {
  it('reads a query: id, name lower-cased, labels as sent, type, class', () => {
    const q = parseQuery(makeQuery('Db.App', TYPE.AAAA, { id: 42 }));
    expect(q.id).toBe(42);
    expect(q.rd).toBe(true);
    expect(q.question?.name).toBe('db.app');
    expect(q.question?.labels.map((l) => l.toString())).toEqual(['Db', 'App']);
    expect(q.question?.type).toBe(TYPE.AAAA);
    expect(q.question?.cls).toBe(1);
    expect(q.edns).toBeUndefined();
  });

  it('reads EDNS and bounds the UDP answer size to [512, 1232]', () => {
    expect(udpLimit(parseQuery(makeQuery('db')))).toBe(512);
    expect(parseQuery(makeQuery('db', TYPE.A, { edns: 4096 })).edns).toEqual({ udpSize: 4096, version: 0 });
    expect(udpLimit(parseQuery(makeQuery('db', TYPE.A, { edns: 4096 })))).toBe(1232);
    expect(udpLimit(parseQuery(makeQuery('db', TYPE.A, { edns: 100 })))).toBe(512);
  });

  it('answers with the question echoed (case kept) and answers that point to it', () => {
    const q = parseQuery(makeQuery('Db', TYPE.A, { id: 9 }));
    const r = buildResponse(q, { rcode: RCODE.NOERROR, answers: [aRecord('10.85.0.2', 5), aRecord('10.85.1.3', 5)], authoritative: true, maxSize: 512 });
    const h = readHeader(r)!;
    expect(h).toMatchObject({ id: 9, qr: true, tc: false, rcode: 0, qd: 1 });
    expect(r.readUInt16BE(6)).toBe(2);
    expect(r.readUInt16BE(2) & 0x0400).toBe(0x0400); // AA
    expect(r.readUInt16BE(2) & 0x0100).toBe(0x0100); // RD copied
    expect(r.subarray(12, 16).toString('latin1')).toBe('\x02Db\x00');
    // first answer: pointer to offset 12, type A, class IN, ttl 5, 4 bytes of address
    const a = 12 + 4 + 4;
    expect(r.readUInt16BE(a)).toBe(0xc00c);
    expect(readName(r, a).labels.map((l) => l.toString())).toEqual(['Db']);
    expect(r.readUInt16BE(a + 2)).toBe(TYPE.A);
    expect(r.readUInt32BE(a + 6)).toBe(5);
    expect([...r.subarray(a + 12, a + 16)]).toEqual([10, 85, 0, 2]);
    expect(r.length).toBe(a + 32);
  });

  it('adds an OPT record when the query had one; BADVERS for EDNS versions other than 0', () => {
    const r = buildResponse(parseQuery(makeQuery('db', TYPE.A, { edns: 1232 })), { rcode: RCODE.NXDOMAIN, maxSize: 1232 });
    expect(r.readUInt16BE(10)).toBe(1);
    expect(readHeader(r)!.rcode).toBe(RCODE.NXDOMAIN);
    const bad = buildResponse(parseQuery(makeQuery('db', TYPE.A, { edns: 1232, ednsVersion: 1 })), { rcode: RCODE.NOERROR, maxSize: 1232 });
    expect(readHeader(bad)!.rcode).toBe(0);
    expect(bad[bad.length - 6]).toBe(1); // extended rcode 1 << 4 = 16 = BADVERS
  });

  it('truncates (TC, no answers) what does not fit, and fits what does', () => {
    const many = Array.from({ length: 100 }, (_, i) => aRecord(`10.85.${i >> 8}.${i & 255}`, 5));
    const q = parseQuery(makeQuery('busy'));
    const udp = buildResponse(q, { rcode: 0, answers: many, maxSize: udpLimit(q) });
    expect(readHeader(udp)!.tc).toBe(true);
    expect(udp.readUInt16BE(6)).toBe(0);
    expect(udp.length).toBeLessThanOrEqual(512);
    const tcp = buildResponse(q, { rcode: 0, answers: many, maxSize: 65535 });
    expect(readHeader(tcp)!.tc).toBe(false);
    expect(tcp.readUInt16BE(6)).toBe(100);
    const qe = parseQuery(makeQuery('busy', TYPE.A, { edns: 4096 }));
    const fits = buildResponse(qe, { rcode: 0, answers: many.slice(0, 60), maxSize: udpLimit(qe) });
    expect(readHeader(fits)!.tc).toBe(false);
    expect(fits.length).toBeLessThanOrEqual(1232);
  });

  it('drops what must not be answered: short packets and responses', () => {
    expect(formatError(Buffer.alloc(0)).id).toBeUndefined();
    expect(formatError(Buffer.alloc(11)).id).toBeUndefined();
    const resp = makeQuery('db');
    resp.writeUInt16BE(0x8100, 2);
    expect(formatError(resp).id).toBeUndefined();
  });

  it('rejects broken questions with the id known (answered FORMERR)', () => {
    const cases: Buffer[] = [
      header({ qd: 0 }),
      header({ qd: 2 }),
      header({ an: 1 }),
      header({ ar: 200 }),
      header({}), // question missing
      Buffer.concat([header({}), Buffer.from([5, 0x61, 0x62])]), // label past the end
      Buffer.concat([header({}), Buffer.from([2, 0x61, 0x62, 0])]), // type and class missing
      Buffer.concat([header({}), Buffer.from([64, ...Buffer.alloc(64, 0x61), 0, 0, 1, 0, 1])]), // 0x40: extended label type
      Buffer.concat([header({}), Buffer.from([0x80, 0, 0, 1, 0, 1])]), // 0x80: reserved label type
      Buffer.concat([header({}), ...Array.from({ length: 5 }, () => Buffer.from([63, ...Buffer.alloc(63, 0x61)])), Buffer.from([0, 0, 1, 0, 1])]), // 320-byte name
      Buffer.concat([header({ ar: 1 }), encodeName('db'), Buffer.from([0, 1, 0, 1]), Buffer.from([0, 0, 41, 4, 0])]), // OPT past the end
      Buffer.concat([header({ ar: 1 }), encodeName('db'), Buffer.from([0, 1, 0, 1]), Buffer.from([0, 0, 41, 4, 0, 0, 0, 0, 0, 0, 9, 1])]), // rdata past the end
      Buffer.concat([header({ ar: 2 }), encodeName('db'), Buffer.from([0, 1, 0, 1]), ...[1, 2].map(() => Buffer.from([0, 0, 41, 4, 0, 0, 0, 0, 0, 0, 0]))]), // two OPTs
    ];
    for (const c of cases) {
      const e = formatError(c);
      expect(e.id, e.message).toBe(7);
      const r = errorResponse(e.id!, 0, true, RCODE.FORMERR);
      expect(readHeader(r)).toMatchObject({ id: 7, qr: true, rcode: RCODE.FORMERR, qd: 0 });
    }
  });

  it('never follows a compression pointer loop', () => {
    // pointer to itself
    expect(formatError(Buffer.concat([header({}), Buffer.from([0xc0, 12, 0, 1, 0, 1])])).message).toMatch(/backwards/);
    // pointer forwards to a pointer back to the first
    expect(formatError(Buffer.concat([header({}), Buffer.from([0xc0, 14, 0xc0, 12, 0, 1, 0, 1])])).message).toMatch(/backwards/);
    // a label, then a pointer back to that label: a loop through a label
    expect(formatError(Buffer.concat([header({}), Buffer.from([1, 0x61, 0xc0, 12, 0, 1, 0, 1])])).message).toMatch(/backwards/);
    // pointer into the header
    expect(() => readName(Buffer.from([...Buffer.alloc(12), 0xc0, 4]), 12)).toThrow(/into the header/);
    // pointer byte at the very end
    expect(formatError(Buffer.concat([header({}), Buffer.from([0xc0])])).message).toMatch(/past the end/);
  });

  it('follows a legitimate compressed name, and caps the number of jumps', () => {
    // "b" at 0, then "a" + pointer to 0 at 3: a.b
    const ok = Buffer.concat([Buffer.alloc(12), Buffer.from([1, 0x62, 0, 1, 0x61, 0xc0, 12])]);
    expect(readName(ok, 15)).toEqual({ labels: [Buffer.from('a'), Buffer.from('b')], next: 19 });
    // a chain of 40 pointers, each to the previous one (all backwards): refused past 32 jumps
    const bytes = [...Buffer.alloc(12), 0];
    for (let i = 1; i <= 40; i++) bytes.push(0xc0, i === 1 ? 12 : bytes.length - 2);
    const buf = Buffer.from(bytes);
    expect(readName(buf, 13).labels).toEqual([]);
    expect(() => readName(buf, buf.length - 2)).toThrow(/too many compression pointers/);
  });

  it('escapes odd bytes in names so they never equal a real name', () => {
    const q = parseQuery(Buffer.concat([header({}), Buffer.from([4, 0x64, 0x2e, 0x62, 0x00, 0]), Buffer.from([0, 1, 0, 1])]));
    expect(q.question?.name).toBe('d\\.b\\000');
  });

  it('survives 20,000 random and mutated packets: a query or DnsFormatError, nothing else', () => {
    let seed = 12345;
    const rnd = () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
    const base = makeQuery('db.app', TYPE.A, { edns: 1232 });
    let parsed = 0;
    for (let i = 0; i < 20_000; i++) {
      let buf: Buffer;
      if (i % 2) {
        buf = Buffer.from(base);
        for (let k = 0; k < 1 + Math.floor(rnd() * 4); k++) buf[Math.floor(rnd() * buf.length)] = Math.floor(rnd() * 256);
        buf[2] &= 0x7f; // keep it a query so the parser goes deep
        if (rnd() < 0.3) buf = buf.subarray(0, Math.floor(rnd() * buf.length));
      } else {
        buf = Buffer.from(Array.from({ length: Math.floor(rnd() * 80) }, () => Math.floor(rnd() * 256)));
      }
      try {
        const q = parseQuery(buf);
        parsed++;
        if (q.question) buildResponse(q, { rcode: 0, answers: [aRecord('10.85.0.1', 5)], maxSize: udpLimit(q) });
      } catch (e) {
        expect(e).toBeInstanceOf(DnsFormatError);
      }
    }
    expect(parsed).toBeGreaterThan(0);
  });
});
