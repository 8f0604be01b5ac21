// Shared by the DNS unit tests.
import { encodeName, TYPE } from '../../src/dns/codec';

/** A query as a stub resolver sends it. */
export function makeQuery(name: string, type: number = TYPE.A, o: { id?: number; edns?: number; ednsVersion?: number; rd?: boolean } = {}): Buffer {
  const h = Buffer.alloc(12);
  h.writeUInt16BE(o.id ?? 0x1234, 0);
  h.writeUInt16BE(o.rd === false ? 0 : 0x0100, 2);
  h.writeUInt16BE(1, 4);
  h.writeUInt16BE(o.edns ? 1 : 0, 10);
  const q = Buffer.concat([encodeName(name), Buffer.from([type >> 8, type & 255, 0, 1])]);
  const opt = o.edns ? Buffer.from([0, 0, 41, o.edns >> 8, o.edns & 255, 0, o.ednsVersion ?? 0, 0, 0, 0, 0]) : Buffer.alloc(0);
  return Buffer.concat([h, q, opt]);
}
