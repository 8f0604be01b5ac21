import { describe, it, expect } from 'vitest';
import { networkNames, endpointNames, shortId, networkIdFromNetnsName, MAX_IFNAME } from '../../src/dataplane/names';

const dockerId = 'a3f9c2e1b07d4c5e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e';

describe('names', () => {
  it('takes the first 10 hex digits of a hex id, lower-cased', () => {
    expect(shortId(dockerId)).toBe('a3f9c2e1b0');
    expect(shortId(dockerId.toUpperCase())).toBe('a3f9c2e1b0');
  });

  it('hashes ids that are not hex, or too short, into 10 hex digits', () => {
    for (const id of ['net-app', 'abc', '3f2a1b4c-9d8e-4f00-a1b2-c3d4e5f60718', 'ünïcödé']) {
      expect(shortId(id)).toMatch(/^[0-9a-f]{10}$/);
    }
    expect(() => shortId('')).toThrow(/empty/);
  });

  it('keeps every interface name within the kernel limit', () => {
    for (const id of [dockerId, 'x', 'some/long name with spaces and more'.repeat(5)]) {
      const n = networkNames(id, '/run/weft');
      const e = endpointNames(id);
      for (const name of [n.bridge, n.vxlan, e.hostIf, e.bridgeIf, `weft-${n.id}`]) {
        expect(name.length).toBeLessThanOrEqual(MAX_IFNAME);
        expect(name).toMatch(/^[a-z0-9-]+$/);
      }
    }
  });

  it('is deterministic', () => {
    expect(networkNames(dockerId, '/run/weft')).toEqual(networkNames(dockerId, '/run/weft'));
    expect(endpointNames('ep-1')).toEqual(endpointNames('ep-1'));
    expect(networkNames(dockerId, '/run/weft')).toEqual({
      id: 'a3f9c2e1b0', nsPath: '/run/weft/netns/weft-a3f9c2e1b0', bridge: 'br-a3f9c2e1b0', vxlan: 'vx-a3f9c2e1b0', routed: 'rt-a3f9c2e1b0',
    });
    expect(endpointNames(dockerId)).toEqual({ hostIf: 'wfta3f9c2e1b0', bridgeIf: 'wfba3f9c2e1b0' });
  });

  it('gives different ids different names', () => {
    const seen = new Set<string>();
    for (let i = 0; i < 2000; i++) {
      const e = endpointNames(`endpoint-${i}`);
      expect(e.hostIf).not.toBe(e.bridgeIf);
      seen.add(e.hostIf);
    }
    expect(seen.size).toBe(2000);
    expect(networkNames('a'.repeat(64), '/r').id).not.toBe(networkNames('b'.repeat(64), '/r').id);
  });

  it('maps a namespace file name back to the network id, and ignores foreign files', () => {
    const n = networkNames(dockerId, '/run/weft');
    expect(networkIdFromNetnsName(`weft-${n.id}`)).toBe(n.id);
    expect(networkIdFromNetnsName('weft-xyz')).toBeUndefined();
    expect(networkIdFromNetnsName('other')).toBeUndefined();
  });
});
