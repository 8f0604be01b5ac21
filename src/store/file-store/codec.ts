// The on-disk format of the FileStore log, `<dir>/store.log`: one line per
// record,
//
//     <crc32 as 8 hex digits> <JSON record>\n
//
// where the checksum covers the JSON bytes. It is zlib's CRC-32 (IEEE
// polynomial) through Node's own `zlib.crc32`; logs written before that used
// a table-driven copy of the same function and read unchanged
// (test/unit/file-store-codec.test.ts holds lines they wrote).
//
// A record is either one committed transaction or a snapshot of the whole key
// space, which compaction writes as the log's only record. Changing anything
// here changes what older and newer wefts can read: bump FORMAT_VERSION
// (checked when a snapshot is replayed) when the format changes.
import { crc32 } from 'node:zlib';
import type { LeaseId } from '../store';

export const FORMAT_VERSION = 1;

/** A change as logged: put (key, value, lease?) or delete (key). */
export type Change = ['p', string, string] | ['p', string, string, LeaseId] | ['d', string];

export interface TxnRecord {
  t: 'txn';
  rev: number;
  c: Change[];
}

/** [key, value, createRevision, modRevision, lease?] */
export type SnapKv = [string, string, number, number] | [string, string, number, number, LeaseId];

export interface SnapRecord {
  t: 'snap';
  v: number;
  rev: number;
  kvs: SnapKv[];
}

export type LogRecord = TxnRecord | SnapRecord;

/** One log line, newline included. */
export function encodeRecord(rec: LogRecord): Buffer {
  const body = Buffer.from(JSON.stringify(rec), 'utf8');
  const head = Buffer.from(crc32(body).toString(16).padStart(8, '0') + ' ', 'ascii');
  return Buffer.concat([head, body, Buffer.from('\n')]);
}

/** Decodes one line (without its newline); undefined when the checksum or shape is wrong. */
export function decodeRecord(line: Buffer): LogRecord | undefined {
  if (line.length < 10 || line[8] !== 0x20) return undefined;
  const sum = line.subarray(0, 8).toString('ascii');
  if (!/^[0-9a-f]{8}$/.test(sum)) return undefined;
  const body = line.subarray(9);
  if (parseInt(sum, 16) !== crc32(body)) return undefined;
  let rec: unknown;
  try {
    rec = JSON.parse(body.toString('utf8'));
  } catch {
    return undefined;
  }
  return isRecord(rec) ? rec : undefined;
}

/** The shape of a record, checked before replay trusts any field of it. */
function isRecord(x: unknown): x is LogRecord {
  if (typeof x !== 'object' || x === null) return false;
  const r = x as Record<string, unknown>;
  if (typeof r.rev !== 'number' || !Number.isSafeInteger(r.rev) || r.rev < 0) return false;
  if (r.t === 'txn') {
    return (
      Array.isArray(r.c) &&
      r.c.every(
        (c: unknown) =>
          Array.isArray(c) &&
          ((c[0] === 'd' && c.length === 2 && typeof c[1] === 'string') ||
            (c[0] === 'p' &&
              (c.length === 3 || c.length === 4) &&
              c.slice(1).every((s: unknown) => typeof s === 'string'))),
      )
    );
  }
  if (r.t === 'snap') {
    return (
      typeof r.v === 'number' &&
      Array.isArray(r.kvs) &&
      r.kvs.every(
        (k: unknown) =>
          Array.isArray(k) &&
          (k.length === 4 || k.length === 5) &&
          typeof k[0] === 'string' &&
          typeof k[1] === 'string' &&
          typeof k[2] === 'number' &&
          typeof k[3] === 'number' &&
          (k.length === 4 || typeof k[4] === 'string'),
      )
    );
  }
  return false;
}
