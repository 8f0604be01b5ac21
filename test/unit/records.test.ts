// Reading store records at the edge: what is valid, why not, and that fields
// from other weft versions are kept (rolling upgrades).
import { describe, expect, it } from 'vitest';
import { InvalidRecords, readBinding, readEndpoint, readHost, readNetwork } from '../../src/store/records';

describe('record readers', () => {
  it('accept what every weft version writes, keep fields they do not know, and say why a record is refused', () => {
    // 0.1.0 wrote no instance; a newer one may add fields
    expect(readHost('{"address":"192.0.2.11","version":"0.1.0","startedAt":"x"}').ok).toBe(true);
    const h = readHost('{"address":"192.0.2.11","version":"9.0.0","startedAt":"x","instance":"ab","zone":"eu-1"}');
    expect(h.ok && (h.value as unknown as { zone: string }).zone).toBe('eu-1');
    expect(readHost('{"address":"192.0.2.300"}')).toEqual({ ok: false, why: 'address "192.0.2.300" is not an IPv4 or IPv6 address' });

    const n = readNetwork('{"vni":5000,"mtu":1450,"createdBy":"h1","createdAt":"x","futureField":{"a":1}}');
    expect(n.ok && n.value).toMatchObject({ vni: 5000, options: {}, internal: false, futureField: { a: 1 } });
    expect(readNetwork('{"vni":"x","mtu":1450}')).toEqual({ ok: false, why: 'vni "x" is not a VXLAN network identifier' });
    expect(readNetwork('[1]')).toEqual({ ok: false, why: 'not a JSON object' });

    const e = readEndpoint('{"host":"h2","vtep":"192.0.2.12","ip":"10.40.0.2","mac":"02:42:0A:28:00:02","localNetwork":"l","tag":"x"}');
    expect(e.ok && e.value).toMatchObject({ mac: '02:42:0a:28:00:02', tag: 'x' });
    expect(readEndpoint('{"host":"h2","ip":"10.40.0.2","mac":"02:42:0a:28:00:02"}').ok).toBe(true); // embedded store: no vtep
    expect(readEndpoint('{"host":"h2","ip":"10.40.0.2","mac":"01:00:5e:00:00:01"}')).toEqual({ ok: false, why: 'mac "01:00:5e:00:00:01" is not a unicast MAC address' });
    expect(readEndpoint('{"host":"","ip":"10.40.0.2","mac":"02:42:0a:28:00:02"}').ok).toBe(false);
    expect(readEndpoint('not json')).toEqual({ ok: false, why: 'not JSON' });
    expect(readBinding('{"localId":"abc123"}').ok).toBe(true);
    expect(readBinding('{"localId":"../x"}').ok).toBe(false);
  });

  it('counts and logs an invalid value once per key and value', () => {
    const logged: string[] = [];
    const inv = new InvalidRecords((o, msg) => logged.push(msg));
    inv.skip('endpoint', '/k', 'a', 'why');
    inv.skip('endpoint', '/k', 'a', 'why');
    inv.skip('endpoint', '/k', 'b', 'why');
    inv.clear('/k');
    inv.skip('endpoint', '/k', 'b', 'why');
    expect(logged.length).toBe(3);
    expect(inv.total).toBe(3);
    expect(logged[0]).toContain('etcdctl del /k');
  });
});
