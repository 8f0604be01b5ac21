// DNS resolution logic: the name table (what an asker may see), the server's
// answers (A, NODATA, NXDOMAIN, REFUSED, forwarding, FORMERR, truncation over
// UDP and the TCP retry), and the learner (Docker -> store records), with a
// fake Docker engine and the embedded store.
import * as dgram from 'dgram';
import * as fs from 'fs';
import * as net from 'net';
import * as os from 'os';
import * as path from 'path';
import pino from 'pino';
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { DockerContainer } from '../../src/agent/docker';
import { DockerError } from '../../src/agent/docker';
import { readHeader, RCODE, TYPE } from '../../src/dns/codec';
import { Forwarder, parseResolvConf, sameAddress } from '../../src/dns/forward';
import { NameLearner, recordsOf } from '../../src/dns/learner';
import { DnsServer } from '../../src/dns/server';
import { NameTable } from '../../src/dns/table';
import { FileStore } from '../../src/store/file-store';
import { AskerRecord, keys, NameRecord } from '../../src/store/keys';
import type { WatchEvent } from '../../src/store/store';
import { makeQuery } from './dns-helpers';

const log = pino({ level: 'silent' });
const A = 'a'.repeat(64);
const B = 'b'.repeat(64);
const ep = (n: number) => n.toString(16).padStart(64, '0');

function put(key: string, value: unknown): WatchEvent {
  return { type: 'put', key, value: JSON.stringify(value), revision: 1 };
}
function del(key: string): WatchEvent {
  return { type: 'delete', key, revision: 1 };
}
function name(rec: Partial<NameRecord> & { name: string; ip: string }): NameRecord {
  return { aliases: [], host: 'h1', network: 'neta', container: 'c', ...rec };
}

/** A cluster: db and cache on network A (host h1), web on network B; asker 172.18.0.2 on A, 172.18.0.3 on B, both on host h2. */
function cluster(me = 'h2'): NameTable {
  const t = new NameTable(me);
  t.apply(put(keys.network(A), { name: 'neta' }));
  t.apply(put(keys.network(B), { name: 'net.b' }));
  t.apply(put(keys.endpoint(A, ep(1)), { ip: '10.85.0.2' }));
  t.apply(put(keys.name(A, ep(1)), name({ name: 'db', ip: '10.85.0.2', aliases: ['database', '0123456789ab'] })));
  t.apply(put(keys.endpoint(A, ep(2)), { ip: '10.85.0.3' }));
  t.apply(put(keys.name(A, ep(2)), name({ name: 'cache', ip: '10.85.0.3', host: 'h3', aliases: ['database'] })));
  t.apply(put(keys.endpoint(B, ep(3)), { ip: '10.85.1.2' }));
  t.apply(put(keys.name(B, ep(3)), name({ name: 'web', ip: '10.85.1.2', network: 'net.b' })));
  t.apply(put(keys.asker(me, '172.18.0.2'), { networks: [A], container: 'x', name: 'client' }));
  t.apply(put(keys.asker(me, '172.18.0.3'), { networks: [B], container: 'y', name: 'other' }));
  t.apply(put(keys.asker('h9', '172.18.0.9'), { networks: [A, B], container: 'z', name: 'elsewhere' }));
  return t;
}

describe('NameTable', () => {
  it('answers NAME, ALIAS, NAME.NETWORK, ALIAS.NETWORK, in any case, on the asker\'s networks', () => {
    const t = cluster();
    expect(t.lookup('172.18.0.2', 'db')).toEqual({ kind: 'found', ips: ['10.85.0.2'], ips6: [] });
    expect(t.lookup('172.18.0.2', 'db.neta')).toEqual({ kind: 'found', ips: ['10.85.0.2'], ips6: [] });
    expect(t.lookup('172.18.0.2', 'database')).toEqual({ kind: 'found', ips: ['10.85.0.2', '10.85.0.3'], ips6: [] });
    expect(t.lookup('172.18.0.2', 'database.neta')).toEqual({ kind: 'found', ips: ['10.85.0.2', '10.85.0.3'], ips6: [] });
    expect(t.lookup('172.18.0.2', '0123456789ab')).toEqual({ kind: 'found', ips: ['10.85.0.2'], ips6: [] });
    expect(t.lookup('172.18.0.3', 'web.net.b')).toEqual({ kind: 'found', ips: ['10.85.1.2'], ips6: [] });
  });

  it('gives NXDOMAIN, never an address, for names on networks the asker is not on', () => {
    const t = cluster();
    expect(t.lookup('172.18.0.3', 'db')).toEqual({ kind: 'nxdomain' });
    expect(t.lookup('172.18.0.3', 'db.neta')).toEqual({ kind: 'nxdomain' });
    expect(t.lookup('172.18.0.2', 'web')).toEqual({ kind: 'nxdomain' });
    expect(t.lookup('172.18.0.2', 'web.net.b')).toEqual({ kind: 'nxdomain' });
  });

  it('gives an unknown asker (or another host\'s asker) NXDOMAIN for every weft name', () => {
    const t = cluster();
    for (const src of ['172.18.0.99', '172.18.0.9', '169.254.53.53']) {
      expect(t.lookup(src, 'db')).toEqual({ kind: 'nxdomain' });
      expect(t.lookup(src, 'web.net.b')).toEqual({ kind: 'nxdomain' });
    }
  });

  it('NXDOMAIN for single labels and NAME.NETWORK nobody holds; other names are not weft\'s', () => {
    const t = cluster();
    expect(t.lookup('172.18.0.2', 'nothere')).toEqual({ kind: 'nxdomain' });
    expect(t.lookup('172.18.0.2', 'nothere.neta')).toEqual({ kind: 'nxdomain' });
    expect(t.lookup('172.18.0.2', 'example.com')).toEqual({ kind: 'other' });
    expect(t.lookup('172.18.0.2', 'db.example.com')).toEqual({ kind: 'other' });
    expect(t.lookup('172.18.0.2', '')).toEqual({ kind: 'other' });
  });

  it('forgets a name as soon as its endpoint is deleted, and on a re-list', () => {
    const t = cluster();
    t.apply(del(keys.endpoint(A, ep(1))));
    expect(t.lookup('172.18.0.2', 'db')).toEqual({ kind: 'nxdomain' });
    expect(t.lookup('172.18.0.2', 'database')).toEqual({ kind: 'found', ips: ['10.85.0.3'], ips6: [] });
    t.apply(del(keys.name(A, ep(2))));
    expect(t.lookup('172.18.0.2', 'database')).toEqual({ kind: 'nxdomain' });
    t.reset();
    expect(t.lookup('172.18.0.3', 'web')).toEqual({ kind: 'nxdomain' });
    expect(t.asker('172.18.0.3')).toBeUndefined();
  });

  it('follows a container that moves: new endpoint, new address', () => {
    const t = cluster();
    t.apply(del(keys.endpoint(A, ep(1))));
    t.apply(del(keys.name(A, ep(1))));
    t.apply(put(keys.endpoint(A, ep(7)), { ip: '10.85.0.77' }));
    t.apply(put(keys.name(A, ep(7)), name({ name: 'db', ip: '10.85.0.77', host: 'h3' })));
    expect(t.lookup('172.18.0.2', 'db')).toEqual({ kind: 'found', ips: ['10.85.0.77'], ips6: [] });
  });

  it('prefers the learner\'s askers (ahead of the store) and ignores unreadable records', () => {
    const t = cluster();
    t.setLocalAskers(new Map<string, AskerRecord>([['172.18.0.50', { networks: [B], container: 'n', name: 'new' }]]));
    expect(t.lookup('172.18.0.50', 'web')).toEqual({ kind: 'found', ips: ['10.85.1.2'], ips6: [] });
    t.apply({ type: 'put', key: keys.name(A, ep(9)), value: '{not json', revision: 2 });
    t.apply({ type: 'put', key: keys.asker('h2', '172.18.0.51'), value: '{"networks": 3}', revision: 2 });
    expect(t.asker('172.18.0.51')).toBeUndefined();
    expect(t.sizes().names).toBe(3);
  });

  it('gives no A record for an address written with leading zeros (the one IPv4 check the whole code base uses)', () => {
    const t = cluster();
    t.apply(put(keys.endpoint(A, ep(7)), { ip: '010.85.0.7' }));
    t.apply(put(keys.name(A, ep(7)), name({ name: 'zeros', ip: '010.85.0.7' })));
    expect(t.lookup('172.18.0.2', 'zeros').kind).toBe('nxdomain');
  });
});

describe('DnsServer answers', () => {
  const servers: DnsServer[] = [];
  afterEach(async () => {
    for (const s of servers.splice(0)) await s.close();
  });

  function server(o: Partial<ConstructorParameters<typeof DnsServer>[0]> = {}): DnsServer {
    const s = new DnsServer({ host: '127.0.0.1', port: 0, table: cluster(), logger: log, parkMs: 200, ...o });
    servers.push(s);
    return s;
  }

  it('A records for a visible name; NODATA for its other types; NXDOMAIN not authoritative', async () => {
    const s = server();
    const a = (await s.answer(makeQuery('DB', TYPE.A, { id: 5 }), '172.18.0.2', false))!;
    expect(readHeader(a)).toMatchObject({ id: 5, rcode: RCODE.NOERROR });
    expect(a.readUInt16BE(6)).toBe(1);
    expect([...a.subarray(a.length - 4)]).toEqual([10, 85, 0, 2]);
    const aaaa = (await s.answer(makeQuery('db', TYPE.AAAA), '172.18.0.2', false))!;
    expect(readHeader(aaaa)!.rcode).toBe(RCODE.NOERROR);
    expect(aaaa.readUInt16BE(6)).toBe(0);
    const nx = (await s.answer(makeQuery('db'), '172.18.0.3', false))!;
    expect(readHeader(nx)!.rcode).toBe(RCODE.NXDOMAIN);
    expect(nx.readUInt16BE(2) & 0x0400).toBe(0); // AA clear: Docker's resolver moves on
  });

  it('REFUSED for other names when forwarding is off; FORMERR or silence for garbage; NOTIMP for other opcodes', async () => {
    const s = server();
    expect(readHeader((await s.answer(makeQuery('example.com'), '172.18.0.2', false))!)!.rcode).toBe(RCODE.REFUSED);
    expect(await s.answer(Buffer.from([1, 2, 3]), '172.18.0.2', false)).toBeUndefined();
    const resp = makeQuery('db');
    resp[2] |= 0x80;
    expect(await s.answer(resp, '172.18.0.2', false)).toBeUndefined();
    const twoQ = makeQuery('db');
    twoQ.writeUInt16BE(2, 4);
    expect(readHeader((await s.answer(twoQ, '172.18.0.2', false))!)).toMatchObject({ id: 0x1234, rcode: RCODE.FORMERR });
    const notify = makeQuery('db');
    notify[2] |= 4 << 3;
    expect(readHeader((await s.answer(notify, '172.18.0.2', false))!)!.rcode).toBe(RCODE.NOTIMP);
    expect(s.stats.malformed).toBe(2 + 0 + 1);
  });

  it('an unknown source waits (bounded) for the learner, then gets its answer', async () => {
    const table = cluster();
    let asked = '';
    const s = server({ table, parkMs: 5000, onUnknownAsker: (ip) => { asked = ip; } });
    const pending = s.answer(makeQuery('db'), '172.18.0.60', false);
    await new Promise((r) => setTimeout(r, 20));
    expect(asked).toBe('172.18.0.60');
    table.setLocalAskers(new Map([['172.18.0.60', { networks: [A], container: 'n', name: 'new' }]]));
    const a = (await pending)!;
    expect(readHeader(a)!.rcode).toBe(RCODE.NOERROR);
    expect(a.readUInt16BE(6)).toBe(1);
    // and one that never becomes known gets NXDOMAIN after the wait
    const s2 = server({ parkMs: 50 });
    expect(readHeader((await s2.answer(makeQuery('db'), '172.18.0.61', false))!)!.rcode).toBe(RCODE.NXDOMAIN);
    // the host itself never waits, nor does a source that stayed unknown a moment ago
    expect(readHeader((await s2.answer(makeQuery('db'), '127.0.0.1', false))!)!.rcode).toBe(RCODE.NXDOMAIN);
    expect(readHeader((await s2.answer(makeQuery('db'), '172.18.0.61', false))!)!.rcode).toBe(RCODE.NXDOMAIN);
    expect(s2.stats.parked).toBe(1);
  });

  it('over real sockets: UDP answers, TC for a big answer, and the TCP retry gets it all', async () => {
    const table = cluster();
    for (let i = 0; i < 80; i++) {
      table.apply(put(keys.endpoint(A, ep(100 + i)), { ip: `10.85.2.${i}` }));
      table.apply(put(keys.name(A, ep(100 + i)), name({ name: `w${i}`, ip: `10.85.2.${i}`, aliases: ['pool'] })));
    }
    table.apply(put(keys.asker('h2', '127.0.0.1'), { networks: [A], container: 'x', name: 'client' }));
    const s = server({ table });
    await s.start();
    const port = s.port()!;
    const udpAsk = (msg: Buffer) => new Promise<Buffer>((resolve, reject) => {
      const c = dgram.createSocket('udp4');
      const t = setTimeout(() => { c.close(); reject(new Error('no UDP answer')); }, 3000);
      c.on('message', (m) => { clearTimeout(t); c.close(); resolve(m); });
      c.send(msg, port, '127.0.0.1');
    });
    const one = await udpAsk(makeQuery('db'));
    expect(one.readUInt16BE(6)).toBe(1);
    const big = await udpAsk(makeQuery('pool'));
    expect(readHeader(big)!.tc).toBe(true);
    expect(big.length).toBeLessThanOrEqual(512);
    const viaTcp = await new Promise<Buffer>((resolve, reject) => {
      const c = net.connect(port, '127.0.0.1');
      let buf = Buffer.alloc(0);
      const q = makeQuery('pool');
      const len = Buffer.alloc(2);
      len.writeUInt16BE(q.length);
      c.on('connect', () => c.write(Buffer.concat([len, q])));
      c.on('data', (d) => {
        buf = Buffer.concat([buf, d]);
        if (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) { c.destroy(); resolve(buf.subarray(2)); }
      });
      c.on('error', reject);
      setTimeout(() => { c.destroy(); reject(new Error('no TCP answer')); }, 3000);
    });
    expect(readHeader(viaTcp)!.tc).toBe(false);
    expect(viaTcp.readUInt16BE(6)).toBe(80);
  });

  it('forwards other names to the upstream and hands back its answer with the client\'s id; SERVFAIL when it is silent', async () => {
    // A fake upstream on loopback: answers every query with NOERROR and no answers.
    const up = dgram.createSocket('udp4');
    await new Promise<void>((r) => up.bind(0, '127.0.0.1', () => r()));
    let seen = 0;
    up.on('message', (m, rinfo) => {
      seen++;
      if (m.subarray(12).includes(Buffer.from('silent'))) return;
      const r = Buffer.from(m);
      r[2] |= 0x80;
      up.send(r, rinfo.port, rinfo.address);
    });
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'weft-dns-'));
    try {
      const rc = path.join(dir, 'resolv.conf');
      fs.writeFileSync(rc, '# test\nnameserver 127.0.0.11\nnameserver 169.254.53.53\nnameserver 127.0.0.1\nsearch example\n');
      const fwd = new Forwarder({ resolvConf: rc, exclude: ['169.254.53.53', '127.0.0.11'], port: up.address().port, timeoutMs: 300 });
      expect(fwd.upstreams()).toEqual(['127.0.0.1']);
      const s = server({ forwarder: fwd });
      const r = (await s.answer(makeQuery('example.com', TYPE.A, { id: 777 }), '172.18.0.2', false))!;
      expect(readHeader(r)).toMatchObject({ id: 777, qr: true, rcode: RCODE.NOERROR });
      expect(r.readUInt16BE(2) & 0x0080).toBe(0); // the upstream's flags, untouched (it set no RA)
      const f = (await s.answer(makeQuery('silent.example.com'), '172.18.0.2', false))!;
      expect(readHeader(f)!.rcode).toBe(RCODE.SERVFAIL);
      // weft names never go upstream, even from unknown askers
      const before = seen;
      expect(readHeader((await s.answer(makeQuery('db'), '127.0.0.5', false))!)!.rcode).toBe(RCODE.NXDOMAIN);
      expect(seen).toBe(before);
      expect(s.stats.forwarded).toBe(1);
      fwd.close();
    } finally {
      up.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('ignores a reply from another address, even with the upstream\'s port, id and question', async () => {
    // The upstream on 127.0.0.1 never answers; a spoofer on 127.0.0.2 with the
    // same port sees the query (the upstream hands it over) and answers it
    // with a forged NXDOMAIN carrying the right id and question.
    const up = dgram.createSocket('udp4');
    await new Promise<void>((r) => up.bind(0, '127.0.0.1', () => r()));
    const spoofer = dgram.createSocket('udp4');
    await new Promise<void>((r) => spoofer.bind(up.address().port, '127.0.0.2', () => r()));
    let forged = 0;
    up.on('message', (m, rinfo) => {
      const r = Buffer.from(m);
      r[2] |= 0x80;
      r[3] = (r[3] & 0xf0) | RCODE.NXDOMAIN;
      spoofer.send(r, rinfo.port, rinfo.address, () => { forged++; });
    });
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'weft-dns-'));
    try {
      const rc = path.join(dir, 'resolv.conf');
      fs.writeFileSync(rc, 'nameserver 127.0.0.1\n');
      const fwd = new Forwarder({ resolvConf: rc, exclude: [], port: up.address().port, timeoutMs: 300 });
      const reply = await fwd.forward(makeQuery('example.com', TYPE.A, { id: 99 }), 12 + 'example.com'.length + 2 + 4, false);
      expect(forged).toBe(1);
      expect(reply).toBeUndefined();
      fwd.close();
    } finally {
      up.close();
      spoofer.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('compares upstream addresses as addresses', () => {
    expect(sameAddress('127.0.0.1', '127.0.0.1')).toBe(true);
    expect(sameAddress('::ffff:127.0.0.1', '127.0.0.1')).toBe(true);
    expect(sameAddress('fe80::1', 'FE80:0:0::1%eth0')).toBe(true);
    expect(sameAddress('127.0.0.2', '127.0.0.1')).toBe(false);
    expect(sameAddress('::2', '::1')).toBe(false);
  });

  it('forwards a TCP query over TCP to the upstream', async () => {
    const srv = net.createServer((c) => {
      let buf = Buffer.alloc(0);
      c.on('data', (d) => {
        buf = Buffer.concat([buf, d]);
        if (buf.length < 2 || buf.length < 2 + buf.readUInt16BE(0)) return;
        const r = Buffer.from(buf.subarray(2, 2 + buf.readUInt16BE(0)));
        r[2] |= 0x80;
        r[3] = (r[3] & 0xf0) | RCODE.NXDOMAIN;
        const len = Buffer.alloc(2);
        len.writeUInt16BE(r.length);
        c.end(Buffer.concat([len, r]));
      });
    });
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'weft-dns-'));
    try {
      const rc = path.join(dir, 'resolv.conf');
      fs.writeFileSync(rc, 'nameserver 127.0.0.1\n');
      const fwd = new Forwarder({ resolvConf: rc, exclude: [], port: (srv.address() as net.AddressInfo).port, timeoutMs: 1000 });
      const s = server({ forwarder: fwd });
      const r = (await s.answer(makeQuery('big.example.com', TYPE.A, { id: 4321 }), '172.18.0.2', true))!;
      expect(readHeader(r)).toMatchObject({ id: 4321, qr: true, rcode: RCODE.NXDOMAIN });
      fwd.close();
    } finally {
      srv.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('parses resolv.conf like the C library (first three, comments, scoped IPv6)', () => {
    expect(parseResolvConf('nameserver 10.0.0.1 # x\n;c\nnameserver fe80::1%eth0\nnameserver bogus\nnameserver 10.0.0.2\nnameserver 10.0.0.3\n', []))
      .toEqual(['10.0.0.1', 'fe80::1%eth0', '10.0.0.2']);
  });
});

describe('NameLearner', () => {
  const WEFT_LOCAL = 'f'.repeat(64);
  const BRIDGE = 'e'.repeat(64);
  const nets = new Map([[WEFT_LOCAL, A]]);
  function container(id: string, o: { name: string; running?: boolean; ip?: string; endpoint?: string; aliases?: string[]; bridgeIp?: string }): DockerContainer {
    return {
      Id: id, Name: `/${o.name}`, State: { Running: o.running ?? true },
      NetworkSettings: {
        Networks: {
          app: { NetworkID: WEFT_LOCAL, EndpointID: o.endpoint ?? ep(1), IPAddress: o.ip ?? '10.85.0.2', Aliases: o.aliases ?? [id.slice(0, 12)] },
          ...(o.bridgeIp ? { br: { NetworkID: BRIDGE, EndpointID: ep(50), IPAddress: o.bridgeIp, Aliases: null } } : {}),
        },
      },
    };
  }

  it('recordsOf: a name record per weft network, an asker record per gwbridge or other-network address', () => {
    const recs = recordsOf(container('c1', { name: 'db', aliases: ['c1', 'database', 'db'], bridgeIp: '172.20.0.5' }), '172.18.0.4', nets, 'h1');
    expect(JSON.parse(recs.get(keys.name(A, ep(1)))!)).toEqual({ name: 'db', aliases: ['c1', 'database'], ip: '10.85.0.2', host: 'h1', network: 'app', container: 'c1' });
    expect(JSON.parse(recs.get(keys.asker('h1', '172.18.0.4'))!)).toEqual({ networks: [A], container: 'c1', name: 'db' });
    expect(recs.has(keys.asker('h1', '172.20.0.5'))).toBe(true);
    expect(recs.size).toBe(3);
    expect(recordsOf(container('c1', { name: 'db', running: false }), '172.18.0.4', nets, 'h1').size).toBe(0);
    expect(recordsOf(undefined, undefined, nets, 'h1').size).toBe(0);
    expect(recordsOf(container('c1', { name: 'db' }), undefined, new Map(), 'h1').size).toBe(0);
  });

  describe('with the embedded store and a fake Docker engine', () => {
    let dir: string;
    let store: FileStore;
    beforeEach(async () => {
      dir = fs.mkdtempSync(path.join(os.tmpdir(), 'weft-learner-'));
      store = await FileStore.open(dir);
    });
    afterEach(async () => {
      await store.close();
      fs.rmSync(dir, { recursive: true, force: true });
    });
    afterAll(() => undefined);

    it('writes nothing until this host\'s networks are known (so a restart never drops its records)', async () => {
      await store.put(keys.name(A, ep(1)), JSON.stringify(name({ name: 'db', ip: '10.85.0.2', host: 'h1' })));
      let ready = false;
      let nets: { localId: string; clusterId: string; record: never }[] = [];
      const docker = {
        listContainers: async () => [{ Id: 'c1' }],
        inspectContainer: async () => container('c1', { name: 'db' }),
        inspectNetwork: async () => ({ Id: 'gw', Name: 'docker_gwbridge', Driver: 'bridge', Containers: { c1: { IPv4Address: '172.18.0.2/16' } } }),
        streamEvents: () => ({ close: () => undefined }),
      };
      const learner = new NameLearner({
        store, localNetworks: () => nets, docker: docker as never, host: 'h1', cluster: false, table: new NameTable('h1'), logger: log, ready: () => ready,
      });
      learner.start();
      try {
        await new Promise((r) => setTimeout(r, 100));
        await learner.idle();
        expect(await store.get(keys.name(A, ep(1)))).toBeDefined();
        expect(await store.get(keys.asker('h1', '172.18.0.2'))).toBeUndefined();
        nets = [{ localId: WEFT_LOCAL, clusterId: A, record: {} as never }];
        ready = true;
        for (let i = 0; i < 300 && !(await store.get(keys.asker('h1', '172.18.0.2'))); i++) await new Promise((r) => setTimeout(r, 10));
        expect(await store.get(keys.asker('h1', '172.18.0.2'))).toBeDefined();
        expect(await store.get(keys.name(A, ep(1)))).toBeDefined();
      } finally {
        learner.stop();
        await learner.idle();
      }
    });

    it('writes names and askers at start, follows events, and removes what a previous run left', async () => {
      const containers = new Map<string, DockerContainer>([['c1', container('c1', { name: 'db' })]]);
      const gw = new Map([['c1', '172.18.0.2'], ['c2', '172.18.0.3']]);
      let emit: (ev: { Type: string; Action: string; Actor: { ID: string } }) => void = () => undefined;
      const docker = {
        listContainers: async () => [...containers.keys()].map((Id) => ({ Id })),
        inspectContainer: async (id: string) => {
          const c = containers.get(id);
          if (!c) throw new DockerError('no such container', 404);
          return c;
        },
        inspectNetwork: async () => ({ Id: 'gw', Name: 'docker_gwbridge', Driver: 'bridge', Containers: Object.fromEntries([...gw].map(([id, ip]) => [id, { IPv4Address: `${ip}/16` }])) }),
        streamEvents: (_f: unknown, onEvent: typeof emit) => { emit = onEvent; return { close: () => undefined }; },
      };
      // left by a previous run on this host (and one of another host's, which stays)
      await store.put(keys.name(A, ep(99)), JSON.stringify(name({ name: 'gone', ip: '10.85.0.99', host: 'h1' })));
      await store.put(keys.name(A, ep(98)), JSON.stringify(name({ name: 'theirs', ip: '10.85.0.98', host: 'h2' })));
      await store.put(keys.asker('h1', '172.18.0.99'), JSON.stringify({ networks: [A], container: 'old', name: 'old' }));
      const table = new NameTable('h1');
      const learner = new NameLearner({
        store, localNetworks: () => [{ localId: WEFT_LOCAL, clusterId: A, record: {} as never }], docker: docker as never,
        host: 'h1', cluster: false, table, logger: log,
      });
      learner.start();
      try {
        const until = async (what: string, ok: () => Promise<boolean>) => {
          for (let i = 0; i < 200; i++) {
            await learner.idle();
            if (await ok()) return;
            await new Promise((r) => setTimeout(r, 10));
          }
          throw new Error(`learner: ${what}`);
        };
        await until('first sync', async () => (await store.get(keys.name(A, ep(1)))) !== undefined);
        expect(await store.get(keys.name(A, ep(99)))).toBeUndefined();
        expect(await store.get(keys.asker('h1', '172.18.0.99'))).toBeUndefined();
        expect(await store.get(keys.name(A, ep(98)))).toBeDefined();
        expect(table.asker('172.18.0.2')?.networks).toEqual([A]);

        containers.set('c2', container('c2', { name: 'web', endpoint: ep(2), ip: '10.85.0.3', aliases: ['c2', 'www'] }));
        emit({ Type: 'container', Action: 'start', Actor: { ID: 'c2' } });
        await until('c2 learned', async () => (await store.get(keys.asker('h1', '172.18.0.3'))) !== undefined);
        expect(JSON.parse((await store.get(keys.name(A, ep(2))))!.value).aliases).toEqual(['c2', 'www']);

        containers.delete('c1');
        emit({ Type: 'container', Action: 'destroy', Actor: { ID: 'c1' } });
        await until('c1 forgotten', async () => (await store.get(keys.name(A, ep(1)))) === undefined);
        expect(await store.get(keys.asker('h1', '172.18.0.2'))).toBeUndefined();
        expect(table.asker('172.18.0.2')).toBeUndefined();
        expect(learner.stats.errors).toBe(0);
      } finally {
        learner.stop();
        await learner.idle();
      }
    });
  });
});
