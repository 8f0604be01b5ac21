// What the ops commands show of IPv6 (issue 14): weft networks, endpoints
// and status grow IPv6 columns when some network has IPv6, and the drift
// report counts an endpoint's IPv6 neighbour like its IPv4 one.
import { describe, expect, it } from 'vitest';
import { comparePeers } from '../../src/ops/admin';
import { ClusterView } from '../../src/ops/cluster';
import { endpointsJson, renderEndpoints } from '../../src/ops/endpoints';
import { renderNetworks } from '../../src/ops/networks';
import { keys } from '../../src/store/keys';

const CID = 'a1b2c3d4e5f6a1b2c3d4e5f6a1b2c3d4e5f6a1b2c3d4e5f6a1b2c3d4e5f6a1b2';
const CID6 = 'f0e1d2c3b4a5f0e1d2c3b4a5f0e1d2c3b4a5f0e1d2c3b4a5f0e1d2c3b4a5f0e1';
const EP = (n: number) => `${String(n).repeat(12)}${'0'.repeat(52)}`;
const j = (o: unknown) => JSON.stringify(o);

const view = new ClusterView([
  { key: keys.host('h1'), value: j({ address: '192.0.2.11', version: '0.2.0', startedAt: '2026-01-01T00:00:00.000Z' }) },
  { key: keys.network(CID), value: j({ name: 'ds', subnet: '10.80.0.0/24', gateway: '10.80.0.1', subnet6: 'fd00:80::/64', gateway6: 'fd00:80::1', vni: 5000, mtu: 1450, options: {}, internal: false, createdBy: 'h1', createdAt: '2026-01-01T00:00:00.000Z' }) },
  { key: keys.network(CID6), value: j({ name: 'v6', subnet6: 'fd00:81::/64', ipv4: false, vni: 5001, mtu: 1450, options: {}, internal: false, createdBy: 'h1', createdAt: '2026-01-01T00:00:00.000Z' }) },
  { key: keys.binding(CID, 'h1'), value: j({ localId: 'l1' }) },
  { key: keys.endpoint(CID, EP(1)), value: j({ host: 'h1', vtep: '192.0.2.11', ip: '10.80.0.2', ip6: 'fd00:80::2', mac: '02:42:0a:50:00:02', localNetwork: 'l1', container: 'web' }) },
  { key: keys.endpoint(CID6, EP(2)), value: j({ host: 'h1', vtep: '192.0.2.11', ip: '', ip6: 'fd00:81::2', mac: '02:42:00:00:00:02', localNetwork: 'l2', container: 'only6' }) },
]);

describe('IPv6 in the ops commands', () => {
  it('weft networks: IPv6 subnet and gateway columns; an IPv6-only network has no IPv4 subnet', () => {
    const text = renderNetworks(view.networks());
    expect(text.split('\n')[0]).toMatch(/^NAME\s+ID\s+VNI\s+SUBNET\s+GATEWAY\s+IPV6 SUBNET\s+IPV6 GATEWAY\s+MTU/);
    expect(text).toMatch(/^ds\s+a1b2c3d4e5f6\s+5000\s+10\.80\.0\.0\/24\s+10\.80\.0\.1\s+fd00:80::\/64\s+fd00:80::1\s+1450/m);
    expect(text).toMatch(/^v6\s+f0e1d2c3b4a5\s+5001\s+-\s+-\s+fd00:81::\/64\s+-\s+1450/m);
  });

  it('weft endpoints: an IPV6 column and ip6 in JSON', () => {
    const eps = view.endpoints();
    const text = renderEndpoints(eps);
    expect(text.split('\n')[0]).toMatch(/^NETWORK\s+HOST\s+CONTAINER\s+IP\s+IPV6\s+MAC\s+ENDPOINT$/);
    expect(text).toMatch(/^ds\s+h1\s+web\s+10\.80\.0\.2\s+fd00:80::2\s+02:42:0a:50:00:02/m);
    expect(text).toMatch(/^v6\s+h1\s+only6\s+-\s+fd00:81::2\s+/m);
    expect(endpointsJson(eps)[0]).toMatchObject({ ip: '10.80.0.2', ip6: 'fd00:80::2' });
  });

  it('drift: a missing IPv6 neighbour is drift; both neighbours programmed is none', () => {
    const want = { endpoints: [{ ip: '10.80.0.2', ip6: 'fd00:80::2', mac: '02:42:0a:50:00:02', vtep: '192.0.2.11' }], floodVteps: ['192.0.2.11'] };
    expect(comparePeers(want, want).drift).toBe(0);
    const v4only = { ...want, endpoints: [{ ip: '10.80.0.2', mac: '02:42:0a:50:00:02', vtep: '192.0.2.11' }] };
    expect(comparePeers(v4only, want).drift).toBeGreaterThan(0);
    const only6 = { endpoints: [{ ip: '', ip6: 'fd00:81::2', mac: '02:42:00:00:00:02', vtep: '192.0.2.11' }], floodVteps: ['192.0.2.11'] };
    expect(comparePeers(only6, only6)).toMatchObject({ drift: 0, programmed: 2 });
  });
});
