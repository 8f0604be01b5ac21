// DNS for IPv6 (issue 14): AAAA answers from the endpoint records' IPv6
// addresses, PTR for IPv4 and IPv6 addresses of weft containers, both with
// the isolation of A records. The name table and the server, no network.
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { readHeader, RCODE, TYPE } from '../../src/dns/codec';
import { recordsOf } from '../../src/dns/learner';
import { DnsServer } from '../../src/dns/server';
import { addressOfReverseName, NameTable } from '../../src/dns/table';
import { keys } from '../../src/store/keys';
import type { WatchEvent } from '../../src/store/store';
import { makeQuery } from './dns-helpers';

const log = pino({ level: 'silent' });
const A = 'a'.repeat(64);
const B = 'b'.repeat(64);
const ep = (n: number) => n.toString(16).padStart(64, '0');
const put = (key: string, value: unknown): WatchEvent => ({ type: 'put', key, value: JSON.stringify(value), revision: 1 });

/** db (dual-stack) and v6 (IPv6 only) on network A; web (IPv4) on B; asker .2 on A, .3 on B. */
function cluster(): NameTable {
  const t = new NameTable('h2');
  t.apply(put(keys.network(A), { name: 'neta' }));
  t.apply(put(keys.network(B), { name: 'netb' }));
  t.apply(put(keys.endpoint(A, ep(1)), { ip: '10.85.0.2', ip6: 'fd00:85::2' }));
  t.apply(put(keys.name(A, ep(1)), { name: 'db', aliases: ['database'], ip: '10.85.0.2', host: 'h1', network: 'neta', container: 'c1' }));
  t.apply(put(keys.endpoint(A, ep(2)), { ip: '', ip6: 'fd00:85::3' }));
  t.apply(put(keys.name(A, ep(2)), { name: 'v6', aliases: ['database'], ip: '', ip6: 'fd00:85::3', host: 'h3', network: 'neta', container: 'c2' }));
  t.apply(put(keys.endpoint(B, ep(3)), { ip: '10.85.1.2' }));
  t.apply(put(keys.name(B, ep(3)), { name: 'web', aliases: [], ip: '10.85.1.2', host: 'h1', network: 'netb', container: 'c3' }));
  t.apply(put(keys.asker('h2', '172.18.0.2'), { networks: [A], container: 'x', name: 'client' }));
  t.apply(put(keys.asker('h2', '172.18.0.3'), { networks: [B], container: 'y', name: 'other' }));
  return t;
}

describe('AAAA and PTR in the name table', () => {
  it('a name has its IPv4 and IPv6 addresses; an IPv6-only container only IPv6 ones', () => {
    const t = cluster();
    expect(t.lookup('172.18.0.2', 'db')).toEqual({ kind: 'found', ips: ['10.85.0.2'], ips6: ['fd00:85::2'] });
    expect(t.lookup('172.18.0.2', 'v6.neta')).toEqual({ kind: 'found', ips: [], ips6: ['fd00:85::3'] });
    expect(t.lookup('172.18.0.2', 'database')).toEqual({ kind: 'found', ips: ['10.85.0.2'], ips6: ['fd00:85::2', 'fd00:85::3'] });
    // isolation: the asker on B sees none of them
    expect(t.lookup('172.18.0.3', 'v6')).toEqual({ kind: 'nxdomain' });
    expect(t.lookup('172.18.0.3', 'db')).toEqual({ kind: 'nxdomain' });
  });

  it('PTR: NAME.NETWORK for an asker on the network, NXDOMAIN for others, not weft\'s otherwise', () => {
    const t = cluster();
    expect(t.reverse('172.18.0.2', '2.0.85.10.in-addr.arpa')).toEqual({ kind: 'found', names: ['db.neta'] });
    const v6 = `${'3'}${'.0'.repeat(23)}.5.8.0.0.0.0.d.f.ip6.arpa`;
    expect(addressOfReverseName(v6)).toBe('fd00:85::3');
    expect(t.reverse('172.18.0.2', v6)).toEqual({ kind: 'found', names: ['v6.neta'] });
    expect(t.reverse('172.18.0.3', v6)).toEqual({ kind: 'nxdomain' });
    expect(t.reverse('172.18.0.3', '2.1.85.10.in-addr.arpa')).toEqual({ kind: 'found', names: ['web.netb'] });
    expect(t.reverse('172.18.0.2', '2.1.85.10.in-addr.arpa')).toEqual({ kind: 'nxdomain' });
    expect(t.reverse('172.18.0.2', '9.9.9.9.in-addr.arpa')).toEqual({ kind: 'other' });
    expect(addressOfReverseName('0.85.10.in-addr.arpa')).toBeUndefined();
    expect(addressOfReverseName('1.2.ip6.arpa')).toBeUndefined();
  });

  it('the learner writes both addresses of a dual-stack container and the IPv6 one of an IPv6-only one', () => {
    const out = recordsOf({
      Id: 'c1', Name: '/db', State: { Running: true },
      NetworkSettings: { Networks: {
        ds: { NetworkID: 'L1', EndpointID: ep(1), IPAddress: '10.85.0.2', GlobalIPv6Address: 'FD00:85:0::2', Aliases: [] },
        v6: { NetworkID: 'L2', EndpointID: ep(2), IPAddress: '', GlobalIPv6Address: 'fd00:86::2', Aliases: [] },
      } },
    } as never, '172.18.0.5', new Map([['L1', A], ['L2', B]]), 'h1');
    expect(JSON.parse(out.get(keys.name(A, ep(1)))!)).toMatchObject({ ip: '10.85.0.2', ip6: 'fd00:85::2' });
    expect(JSON.parse(out.get(keys.name(B, ep(2)))!)).toMatchObject({ ip: '', ip6: 'fd00:86::2' });
  });

  it('a container with IPv6 off gets no AAAA, even where Docker 20.10 reserved an IPv6 address for it', () => {
    const out = recordsOf({
      Id: 'c9', Name: '/nov6', State: { Running: true }, HostConfig: { Sysctls: { 'net.ipv6.conf.all.disable_ipv6': '1' } },
      NetworkSettings: { Networks: { ds: { NetworkID: 'L1', EndpointID: ep(9), IPAddress: '10.85.0.9', GlobalIPv6Address: 'fd00:85::9', Aliases: [] } } },
    } as never, '172.18.0.6', new Map([['L1', A]]), 'h1');
    const rec = JSON.parse(out.get(keys.name(A, ep(9)))!);
    expect(rec).toMatchObject({ ip: '10.85.0.9', ipv6Off: true });
    expect(rec.ip6).toBeUndefined();
    const t = cluster();
    t.apply(put(keys.endpoint(A, ep(9)), { ip: '10.85.0.9', ip6: 'fd00:85::9' }));
    t.apply(put(keys.name(A, ep(9)), rec));
    expect(t.lookup('172.18.0.2', 'nov6')).toEqual({ kind: 'found', ips: ['10.85.0.9'], ips6: [] });
    expect(t.reverse('172.18.0.2', `9${'.0'.repeat(23)}.5.8.0.0.0.0.d.f.ip6.arpa`)).toEqual({ kind: 'other' });
  });
});

describe('the server answers AAAA and PTR', () => {
  const servers: DnsServer[] = [];
  afterEach(async () => {
    for (const s of servers.splice(0)) await s.close();
  });
  const server = () => {
    const s = new DnsServer({ host: '127.0.0.1', port: 0, table: cluster(), logger: log, parkMs: 200 });
    servers.push(s);
    return s;
  };

  it('AAAA: the 16 bytes of the address; A of an IPv6-only name is NODATA; other networks NXDOMAIN', async () => {
    const s = server();
    const aaaa = (await s.answer(makeQuery('db', TYPE.AAAA), '172.18.0.2', false))!;
    expect(readHeader(aaaa)!.rcode).toBe(RCODE.NOERROR);
    expect(aaaa.readUInt16BE(6)).toBe(1);
    expect(aaaa.subarray(aaaa.length - 16).toString('hex')).toBe('fd000085000000000000000000000002');
    const a = (await s.answer(makeQuery('v6', TYPE.A), '172.18.0.2', false))!;
    expect(readHeader(a)!.rcode).toBe(RCODE.NOERROR);
    expect(a.readUInt16BE(6)).toBe(0);
    expect(readHeader((await s.answer(makeQuery('db', TYPE.AAAA), '172.18.0.3', false))!)!.rcode).toBe(RCODE.NXDOMAIN);
  });

  it('PTR: the name, for IPv4 and IPv6 addresses', async () => {
    const s = server();
    const p4 = (await s.answer(makeQuery('2.0.85.10.in-addr.arpa', TYPE.PTR), '172.18.0.2', false))!;
    expect(p4.readUInt16BE(6)).toBe(1);
    expect(p4.subarray(p4.length - 9).toString('latin1')).toBe('\x02db\x04neta\x00');
    const p6 = (await s.answer(makeQuery(`3${'.0'.repeat(23)}.5.8.0.0.0.0.d.f.ip6.arpa`, TYPE.PTR), '172.18.0.2', false))!;
    expect(p6.subarray(p6.length - 9).toString('latin1')).toBe('\x02v6\x04neta\x00');
    expect(readHeader((await s.answer(makeQuery('2.0.85.10.in-addr.arpa', TYPE.PTR), '172.18.0.3', false))!)!.rcode).toBe(RCODE.NXDOMAIN);
  });
});
