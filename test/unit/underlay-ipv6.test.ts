// An IPv6 underlay (issue 14): --advertise-addr parsing and validation, the
// canonical text of underlay addresses (what the kernel gives back must
// compare equal to what the store holds), HOST:PORT with brackets, the MTU
// that follows the underlay's family, records with IPv6 VTEPs, and the rule
// of one address family per cluster.
import { describe, expect, it } from 'vitest';
import { ConfigError, DEFAULT_MTU_IPV4, DEFAULT_MTU_IPV6, loadConfig, vxlanOverhead } from '../../src/config';
import { canonicalIp, hostPort, ipBytes, ipFamily, ipFromBytes, splitHostPort, underlayAddressProblem } from '../../src/util/ip';
import { readEndpoint, readHost } from '../../src/store/records';
import { checkUnderlayFamily, sameFamily, UnderlayFamilyError } from '../../src/agent/underlay';
import { mtuCheck } from '../../src/ops/doctor';
import { recordProblem } from '../../src/wireguard/peers';
import { wireguardLinkMtu } from '../../src/wireguard/serve-hooks';
import { endpointOf, sockaddrIn } from '../../src/wireguard/kernel';
import { parseStoreUrl } from '../../src/store';
import { FileStore } from '../../src/store/file-store';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

const etcd = ['--store', 'etcd://[2001:db8:14::1]:2379'];

describe('underlay addresses', () => {
  it('parse IPv4 and IPv6 to bytes and back, IPv6 in RFC 5952 form', () => {
    expect(ipBytes('192.0.2.1')).toEqual(Buffer.from([192, 0, 2, 1]));
    expect(ipBytes('2001:db8::1')!.toString('hex')).toBe('20010db8000000000000000000000001');
    expect(ipBytes('::ffff:192.0.2.1')!.toString('hex')).toBe('00000000000000000000ffffc0000201');
    expect(canonicalIp('2001:0DB8:0000:0000:0000:0000:0000:000B')).toBe('2001:db8::b');
    expect(canonicalIp('2001:db8:0:0:1:0:0:1')).toBe('2001:db8::1:0:0:1'); // the first of two equal runs
    expect(canonicalIp('2001:db8:0:1:1:1:1:1')).toBe('2001:db8:0:1:1:1:1:1'); // one zero group stays
    expect(canonicalIp('::')).toBe('::');
    expect(canonicalIp('fd00::')).toBe('fd00::');
    expect(canonicalIp('::2')).toBe('::2');
    for (const bad of ['2001:db8::1::2', '2001:db8:1:2:3:4:5:6:7', '12345::', 'g::1', '192.0.2.256', '192.0.2', '', ':', '1:2:3:4:5:6:7']) {
      expect(ipBytes(bad), bad).toBeUndefined();
    }
    expect(ipFromBytes(Buffer.alloc(5))).toBeUndefined();
    expect(ipFamily('2001:db8::1')).toBe(6);
    expect(ipFamily('192.0.2.1')).toBe(4);
    expect(ipFamily('x')).toBeUndefined();
  });

  it('HOST:PORT brackets an IPv6 host, and reads both forms back', () => {
    expect(hostPort('2001:db8::1', 51820)).toBe('[2001:db8::1]:51820');
    expect(hostPort('192.0.2.1', 51820)).toBe('192.0.2.1:51820');
    expect(splitHostPort('[2001:db8::1]:51820')).toEqual({ host: '2001:db8::1', port: 51820 });
    expect(splitHostPort('192.0.2.1:4790')).toEqual({ host: '192.0.2.1', port: 4790 });
    expect(splitHostPort('2001:db8::1:51820')).toBeUndefined(); // ambiguous without brackets
    expect(splitHostPort('[192.0.2.1]:1')).toBeUndefined();
    expect(splitHostPort('[2001:db8::1]:0')).toBeUndefined();
  });

  it('an underlay address must be one other hosts can reach', () => {
    expect(underlayAddressProblem('2001:db8::10')).toBeUndefined();
    expect(underlayAddressProblem('fd00:1::10')).toBeUndefined();
    expect(underlayAddressProblem('192.0.2.10')).toBeUndefined();
    expect(underlayAddressProblem('fe80::1')).toMatch(/link-local .*global or unique-local/);
    expect(underlayAddressProblem('fe80::1%eth0')).toMatch(/zone/);
    expect(underlayAddressProblem('::1')).toBeUndefined(); // as 127.0.0.1: several wefts on one machine
    expect(underlayAddressProblem('::')).toMatch(/not a host address/);
    expect(underlayAddressProblem('ff02::1')).toMatch(/multicast/);
    expect(underlayAddressProblem('::ffff:192.0.2.1')).toMatch(/IPv4-mapped.*192\.0\.2\.1/);
    expect(underlayAddressProblem('2001:db8::1/64')).toMatch(/without a \/prefix/);
    expect(underlayAddressProblem('host.example')).toMatch(/neither an IPv4 address .* nor an IPv6 address/);
  });
});

describe('--advertise-addr', () => {
  it('takes an IPv6 address, kept in canonical form; the default MTU is then 1430 (VXLAN over IPv6 adds 70)', () => {
    const c = loadConfig([...etcd, '--advertise-addr', '2001:DB8:14:0::B'], {});
    expect(c.advertiseAddr).toBe('2001:db8:14::b');
    expect(c.mtu).toBe(DEFAULT_MTU_IPV6);
    expect(DEFAULT_MTU_IPV6).toBe(1430);
    expect(loadConfig([...etcd, '--advertise-addr', '192.0.2.11'], {}).mtu).toBe(DEFAULT_MTU_IPV4);
    // an MTU given in any way wins
    expect(loadConfig([...etcd, '--advertise-addr', '2001:db8::b', '--mtu', '1450'], {}).mtu).toBe(1450);
    expect(loadConfig([...etcd, '--advertise-addr', '2001:db8::b'], { WEFT_MTU: '9000' }).mtu).toBe(9000);
    expect(vxlanOverhead('2001:db8::b')).toBe(70);
    expect(vxlanOverhead('192.0.2.1')).toBe(50);
    expect(vxlanOverhead(undefined)).toBe(50);
  });

  it('refuses link-local, loopback and malformed addresses with a clear error', () => {
    const load = (a: string) => () => loadConfig([...etcd, '--advertise-addr', a], {});
    expect(load('fe80::1')).toThrow(ConfigError);
    expect(load('fe80::1')).toThrow(/advertise-addr "fe80::1" is not usable: an IPv6 link-local address/);
    expect(load('fe80::1%eth0')).toThrow(/zone/);
    expect(load('ff02::1')).toThrow(/multicast/);
    expect(load('2001:db8::1::2')).toThrow(/neither an IPv4 address/);
    expect(load('192.0.2.300')).toThrow(/neither an IPv4 address/);
    expect(() => loadConfig(etcd, {})).toThrow(/needs --advertise-addr \(this host's underlay IPv4 or IPv6 address/);
  });

  it('the store URL takes an IPv6 etcd in brackets', () => {
    expect(parseStoreUrl('etcd://[2001:db8:14::1]:2379,[2001:db8:14::2]', '/x')).toEqual({
      kind: 'etcd', secure: false, endpoints: ['http://[2001:db8:14::1]:2379', 'http://[2001:db8:14::2]:2379'],
    });
  });
});

describe('records and peers over an IPv6 underlay', () => {
  it('host and endpoint records take an IPv6 address, read back in canonical form', () => {
    const h = readHost('{"address":"2001:DB8::000B","version":"0.2.0","startedAt":"x"}');
    expect(h.ok && h.value.address).toBe('2001:db8::b');
    const e = readEndpoint('{"host":"h2","vtep":"2001:db8:0::c","ip":"10.40.0.2","mac":"02:42:0a:28:00:02"}');
    expect(e.ok && e.value.vtep).toBe('2001:db8::c');
    expect(readEndpoint('{"host":"h2","vtep":"fe80::1::2","ip":"10.40.0.2","mac":"02:42:0a:28:00:02"}'))
      .toEqual({ ok: false, why: 'vtep "fe80::1::2" is not an IPv4 or IPv6 address' });
  });

  it('WireGuard endpoints may be [IPv6]:port; the WireGuard MTU fills the underlay in either family', () => {
    const wg = { publicKey: Buffer.alloc(32, 1).toString('base64'), tunnel: '198.51.100.3', implementation: 'userspace' };
    expect(recordProblem({ address: '2001:db8::b', version: '', startedAt: '', wg: { ...wg, endpoint: '[2001:db8::b]:51820' } })).toBeUndefined();
    expect(recordProblem({ address: '2001:db8::b', version: '', startedAt: '', wg: { ...wg, endpoint: '2001:db8::b:51820' } })).toMatch(/invalid WireGuard endpoint/);
    // the kernel's WireGuard takes a struct sockaddr_in6 for an IPv6 endpoint
    const sa = sockaddrIn('[2001:db8::b]:51820');
    expect(sa.length).toBe(28);
    expect(sa.readUInt16LE(0)).toBe(10); // AF_INET6
    expect(sa.readUInt16BE(2)).toBe(51820);
    expect(sa.subarray(8, 24).toString('hex')).toBe('20010db800000000000000000000000b');
    expect(endpointOf(sa)).toBe('[2001:db8::b]:51820');
    expect(endpointOf(sockaddrIn('192.0.2.11:51820'))).toBe('192.0.2.11:51820');
    expect(() => sockaddrIn('2001:db8::b:51820')).toThrow(/IPv4:port or \[IPv6\]:port/);
    // --mtu 1430 over IPv6: WireGuard's link 1420, whose packets (+80) are 1500 on the underlay
    expect(wireguardLinkMtu({ mtu: 1430, advertiseAddr: '2001:db8::b' })).toBe(1420);
    expect(wireguardLinkMtu({ mtu: 1450, advertiseAddr: '192.0.2.11' })).toBe(1440);
  });

  it('weft doctor counts 70 bytes of VXLAN over an IPv6 underlay', () => {
    expect(mtuCheck('eth0', '2001:db8::b', 1500, [{ what: '--mtu', mtu: 1430 }])).toMatchObject({ state: 'ok', detail: expect.stringContaining('plus 70 bytes of VXLAN over IPv6') });
    const bad = mtuCheck('eth0', '2001:db8::b', 1500, [{ what: '--mtu', mtu: 1450 }]);
    expect(bad.state).toBe('fail');
    expect(bad.detail).toContain('VXLAN adds 70 bytes, so it needs 1520');
    expect(bad.fix).toContain('--mtu 1430');
    expect(mtuCheck('eth0', '192.0.2.11', 1500, [{ what: '--mtu', mtu: 1450 }]).state).toBe('ok');
  });

  it('one address family per cluster: a host of the other family is refused, and says which hosts differ', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'weft-u6-'));
    const store = await FileStore.open(dir);
    try {
      await store.put('/weft/v1/hosts/h1', JSON.stringify({ address: '2001:db8::b', version: '0.2.0', startedAt: 'x' }));
      await store.put('/weft/v1/hosts/h2', JSON.stringify({ address: '2001:db8::c', version: '0.2.0', startedAt: 'x' }));
      await expect(checkUnderlayFamily(store, 'h3', '2001:db8::d')).resolves.toBeUndefined();
      // its own (older) record does not count
      await expect(checkUnderlayFamily(store, 'h1', '2001:db8::b')).resolves.toBeUndefined();
      const err = await checkUnderlayFamily(store, 'h3', '192.0.2.13').catch((e: unknown) => e);
      expect(err).toBeInstanceOf(UnderlayFamilyError);
      expect((err as UnderlayFamilyError).code).toBe('WEFT_UNDERLAY_FAMILY_MISMATCH');
      expect((err as Error).message).toContain('--advertise-addr 192.0.2.13 is IPv4, but the cluster\'s hosts advertise IPv6 addresses: h1 (2001:db8::b), h2 (2001:db8::c)');
    } finally {
      await store.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
    expect(sameFamily('2001:db8::b', '2001:db8::c')).toBe(true);
    expect(sameFamily('2001:db8::b', '192.0.2.1')).toBe(false);
    expect(sameFamily(undefined, '192.0.2.1')).toBe(true);
  });
});
