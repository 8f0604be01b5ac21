// The FileStore log format: lines written by earlier wefts must still decode,
// and new lines must be byte for byte what earlier wefts wrote.
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { FileStore } from '../../src/store/file-store';
import { decodeRecord, encodeRecord, LogRecord } from '../../src/store/file-store/codec';

/** The CRC-32 that wrote every log before zlib.crc32 replaced it (table-driven, IEEE polynomial). */
function oldCrc32(buf: Uint8Array): number {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  let c = 0xffffffff;
  for (let i = 0; i < buf.length; i++) c = table[(c ^ buf[i]!) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/** Lines of store.log as written by FileStore with the hand-written CRC (commit 0e65896). */
const OLD_LINES = [
  'd37f8eb9 {"t":"txn","rev":1,"c":[["p","/weft/v1/hosts/h1","{\\"addr\\":\\"192.0.2.11\\"}"]]}',
  '252986bb {"t":"txn","rev":2,"c":[["p","/weft/v1/names/ü","naïve 😀"],["p","/weft/v1/x",""]]}',
  '30b2ce5d {"t":"txn","rev":3,"c":[["d","/weft/v1/x"]]}',
  'd683b355 {"t":"snap","v":1,"rev":4,"kvs":[["/weft/v1/hosts/h1","{\\"addr\\":\\"192.0.2.11\\"}",1,1],["/weft/v1/names/ü","naïve 😀",2,2],["/weft/v1/y","1",4,4]]}',
  '3f6c9d7b {"t":"txn","rev":1,"c":[["p","/weft/v1/hosts/h2","up","ab2e3bfd06c2dc1e"]]}',
  '655d84a6 {"t":"snap","v":1,"rev":1,"kvs":[["/weft/v1/hosts/h3","up",1,1,"fab247ca2e9cda7f"]]}',
];

const tmpDirs: string[] = [];
afterAll(() => {
  for (const d of tmpDirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

function randomString(): string {
  // ASCII, Latin-1, BMP and astral characters, so that UTF-8 lengths vary.
  const pool = ['a', '/', '"', '\\', '\n', 'é', 'ü', '€', '\u{ffff}', '😀', '\u0000'];
  let s = '';
  for (let i = randomBytes(1)[0]! % 24; i > 0; i--) s += pool[randomBytes(1)[0]! % pool.length];
  return s;
}

describe('FileStore log codec', () => {
  it('decodes lines written by the old code, and encodes them back to the same bytes', () => {
    for (const line of OLD_LINES) {
      const buf = Buffer.from(line, 'utf8');
      expect(parseInt(line.slice(0, 8), 16)).toBe(oldCrc32(buf.subarray(9)));
      const rec = decodeRecord(buf);
      expect(rec).toEqual(JSON.parse(line.slice(9)));
      expect(encodeRecord(rec!).equals(Buffer.concat([buf, Buffer.from('\n')]))).toBe(true);
    }
  });

  it('checksums every record as the old CRC-32 did', () => {
    for (let i = 0; i < 2000; i++) {
      const rec: LogRecord =
        i % 2 === 0
          ? { t: 'txn', rev: i, c: [['p', randomString(), randomString()], ['d', randomString()], ['p', randomString(), randomString(), randomString()]] }
          : { t: 'snap', v: 1, rev: i, kvs: [[randomString(), randomString(), 1, i], [randomString(), randomString(), 2, i, randomString()]] };
      const line = encodeRecord(rec);
      const body = line.subarray(9, line.length - 1);
      expect(line.subarray(0, 9).toString('ascii')).toBe(oldCrc32(body).toString(16).padStart(8, '0') + ' ');
      expect(decodeRecord(line.subarray(0, line.length - 1))).toEqual(rec);
    }
  });

  it('refuses a line with a changed byte, a bad checksum field or a wrong shape', () => {
    const good = Buffer.from(OLD_LINES[0]!, 'utf8');
    for (let i = 9; i < good.length; i++) {
      const bad = Buffer.from(good);
      bad[i] = bad[i]! ^ 0x01;
      expect(decodeRecord(bad)).toBeUndefined();
    }
    expect(decodeRecord(Buffer.from('D37F8EB9' + OLD_LINES[0]!.slice(8)))).toBeUndefined();
    expect(decodeRecord(Buffer.from(OLD_LINES[0]!.replace(' ', '\t')))).toBeUndefined();
    const wrongShape = '{"t":"txn","rev":1,"c":[["p","k"]]}';
    const sum = oldCrc32(Buffer.from(wrongShape)).toString(16).padStart(8, '0');
    expect(decodeRecord(Buffer.from(`${sum} ${wrongShape}`))).toBeUndefined();
  });

  it('opens a store whose log the old code wrote', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'weft-codec-'));
    tmpDirs.push(dir);
    fs.writeFileSync(path.join(dir, 'store.log'), OLD_LINES.slice(0, 3).map((l) => l + '\n').join(''));
    let s = await FileStore.open(dir);
    expect(s.revision).toBe(3);
    expect((await s.list('/weft/v1/')).kvs.map((kv) => [kv.key, kv.value, kv.createRevision, kv.modRevision])).toEqual([
      ['/weft/v1/hosts/h1', '{"addr":"192.0.2.11"}', 1, 1],
      ['/weft/v1/names/ü', 'naïve 😀', 2, 2],
    ]);
    await s.close();

    fs.writeFileSync(path.join(dir, 'store.log'), OLD_LINES[3] + '\n');
    s = await FileStore.open(dir);
    expect(s.revision).toBe(4);
    expect((await s.list('/weft/v1/')).kvs.map((kv) => kv.key)).toEqual(['/weft/v1/hosts/h1', '/weft/v1/names/ü', '/weft/v1/y']);
    await s.close();
  });
});
