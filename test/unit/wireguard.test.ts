// WireGuard pieces that need no device: keys and the key file, the UAPI
// codec, peer planning and tunnel address claims (on a real FileStore).
import { execFileSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { inspect } from 'util';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FileStore } from '../../src/store/file-store';
import { HostRecord, keys } from '../../src/store/keys';
import { generatePrivateKey, hexToKey, isPublicKey, KeyFile, keyToHex, parseKey, PrivateKey, publicKeyOf } from '../../src/wireguard/keys';
import { desiredPeers, planPeerChanges } from '../../src/wireguard/peers';
import { claimTunnelAddress, parseTunnelSubnet, releaseOtherTunnels } from '../../src/wireguard/tunnel';
import { encodeSet, errnoOf, parseGet } from '../../src/wireguard/uapi';

let dir: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'w13-unit-'));
});
afterEach(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

const hasWg = (() => {
  try {
    execFileSync('wg', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();

describe('keys', () => {
  it('derives the public key as wg(8) does', { skip: !hasWg }, () => {
    for (let i = 0; i < 3; i++) {
      const k = generatePrivateKey();
      const b64 = k.reveal().toString('base64');
      expect(execFileSync('wg', ['pubkey'], { input: `${b64}\n` }).toString().trim()).toBe(k.publicKey());
    }
    const fromWg = execFileSync('wg', ['genkey']).toString().trim();
    expect(publicKeyOf(parseKey(fromWg)!)).toBe(execFileSync('wg', ['pubkey'], { input: `${fromWg}\n` }).toString().trim());
  });

  it('a private key never prints itself', () => {
    const k = generatePrivateKey();
    const secret = k.reveal().toString('base64');
    const shown = [JSON.stringify({ k }), inspect(k), inspect({ nested: { k } }), String(k), `${k}`];
    for (const s of shown) expect(s).not.toContain(secret);
    expect(JSON.stringify({ k })).toBe('{"k":"[private key]"}');
  });

  it('parses only 32-byte base64 keys; hex round trip', () => {
    const pub = generatePrivateKey().publicKey();
    expect(isPublicKey(pub)).toBe(true);
    expect(isPublicKey(pub.slice(1))).toBe(false);
    expect(isPublicKey('not a key')).toBe(false);
    expect(parseKey(`${'A'.repeat(42)}B=`)).toBeUndefined(); // non-canonical last character
    expect(hexToKey(keyToHex(pub))).toBe(pub);
  });

  it('the key file is created 0600 whatever the umask, reused, and refused when others can read it', () => {
    const old = process.umask(0);
    let first: string;
    try {
      const f = new KeyFile(path.join(dir, 'wireguard'));
      const a = f.loadOrCreate();
      expect(a.created).toBe(true);
      first = a.key.publicKey();
      expect(fs.statSync(f.path).mode & 0o777).toBe(0o600);
      expect(fs.statSync(f.dir).mode & 0o777).toBe(0o700);
      expect(fs.readFileSync(f.path, 'utf8')).toMatch(/^[A-Za-z0-9+/]{43}=\n$/);
      const b = new KeyFile(path.join(dir, 'wireguard')).loadOrCreate();
      expect(b.created).toBe(false);
      expect(b.key.publicKey()).toBe(first);
      fs.chmodSync(f.path, 0o644);
      expect(() => f.loadOrCreate()).toThrow(/mode 644.*readable by root only.*chmod 600/);
      fs.chmodSync(f.path, 0o600);
      // rotation: atomic replacement, still 0600, no temporary file left
      const next = generatePrivateKey();
      f.write(next);
      expect(f.load().publicKey()).toBe(next.publicKey());
      expect(fs.statSync(f.path).mode & 0o777).toBe(0o600);
      expect(fs.readdirSync(f.dir)).toEqual(['private.key']);
    } finally {
      process.umask(old);
    }
  });

  it('a file that is not a key is refused with what to do', () => {
    const f = new KeyFile(path.join(dir, 'wg'));
    fs.mkdirSync(f.dir, { mode: 0o700 });
    fs.writeFileSync(f.path, 'garbage\n', { mode: 0o600 });
    expect(() => f.loadOrCreate()).toThrow(/does not hold a WireGuard private key.*move it away/);
  });
});

describe('UAPI codec', () => {
  const peerA = generatePrivateKey().publicKey();
  const peerB = generatePrivateKey().publicKey();

  it('encodes a set request: private key, port, removals, additions (keepalive after the endpoint)', () => {
    const k = new PrivateKey(Buffer.alloc(32, 7));
    const text = encodeSet({
      privateKey: k, listenPort: 51820,
      peers: [
        { publicKey: peerA, remove: true },
        { publicKey: peerB, endpoint: '192.0.2.12:51820', allowedIps: ['198.51.100.12/32'], keepalive: 25 },
        { publicKey: peerA, updateOnly: true, endpoint: '192.0.2.13:51820' },
      ],
    });
    expect(text).toBe([
      'set=1', `private_key=${'07'.repeat(32)}`, 'listen_port=51820',
      `public_key=${keyToHex(peerA)}`, 'remove=true',
      `public_key=${keyToHex(peerB)}`, 'endpoint=192.0.2.12:51820', 'replace_allowed_ips=true', 'allowed_ip=198.51.100.12/32', 'persistent_keepalive_interval=25',
      `public_key=${keyToHex(peerA)}`, 'update_only=true', 'endpoint=192.0.2.13:51820',
      '', '',
    ].join('\n'));
    expect(() => encodeSet({ peers: [{ publicKey: peerA, endpoint: 'nowhere' }] })).toThrow(/invalid WireGuard endpoint/);
    expect(() => encodeSet({ peers: [{ publicKey: peerA, allowedIps: ['10.0.0.1'] }] })).toThrow(/invalid allowed IP/);
  });

  it('parses a get answer; the private key becomes its public key and is kept nowhere', () => {
    const priv = generatePrivateKey();
    const hex = priv.reveal().toString('hex');
    const text = [
      `private_key=${hex}`, 'listen_port=51820',
      `public_key=${keyToHex(peerA)}`, `preshared_key=${'0'.repeat(64)}`, 'protocol_version=1', 'endpoint=192.0.2.12:51820',
      'last_handshake_time_sec=1700000000', 'last_handshake_time_nsec=250000000', 'tx_bytes=564', 'rx_bytes=476',
      'persistent_keepalive_interval=25', 'allowed_ip=198.51.100.12/32',
      `public_key=${keyToHex(peerB)}`, 'last_handshake_time_sec=0', 'last_handshake_time_nsec=0', 'tx_bytes=0', 'rx_bytes=0',
      'persistent_keepalive_interval=0',
      'errno=0', '', '',
    ].join('\n');
    const st = parseGet(text);
    expect(errnoOf(text)).toBe(0);
    expect(st.publicKey).toBe(priv.publicKey());
    expect(st.listenPort).toBe(51820);
    expect(st.peers).toEqual([
      { publicKey: peerA, endpoint: '192.0.2.12:51820', allowedIps: ['198.51.100.12/32'], keepalive: 25, rxBytes: 476, txBytes: 564, lastHandshakeMs: 1700000000250 },
      { publicKey: peerB, allowedIps: [], keepalive: 0, rxBytes: 0, txBytes: 0 },
    ]);
    const dump = JSON.stringify(st);
    expect(dump).not.toContain(hex);
    expect(dump).not.toContain(priv.reveal().toString('base64'));
    expect(parseGet('listen_port=0\nerrno=0\n\n').publicKey).toBeUndefined();
    expect(errnoOf('errno=-22\n\n')).toBe(-22);
  });
});

const host = (i: number, wg?: Partial<HostRecord['wg']>): HostRecord => ({
  address: `192.0.2.${10 + i}`, version: '0.3.0', startedAt: '2026-01-01T00:00:00Z',
  ...(wg === undefined ? {} : { wg: { publicKey: '', endpoint: `192.0.2.${10 + i}:51820`, tunnel: `198.51.100.${10 + i}`, implementation: 'userspace', ...wg } }),
});

describe('peer planning', () => {
  const keysOf = [0, 1, 2, 3, 4].map(() => generatePrivateKey().publicKey());

  it('every other live host with valid WireGuard is a peer; the rest are skipped with a reason', () => {
    const hosts = new Map<string, HostRecord>([
      ['h1', host(1, { publicKey: keysOf[1] })],
      ['h2', host(2, { publicKey: keysOf[2] })],
      ['h3', host(3)], // an older weft: no WireGuard
      ['h4', host(4, { publicKey: 'bogus' })],
      ['h5', host(5, { publicKey: keysOf[2] })], // same key as h2
    ]);
    const plan = desiredPeers(hosts, 'h1', 25, keysOf[1]);
    expect([...plan.peers.values()].map((p) => [p.host, p.allowedIps, p.endpoint, p.keepalive])).toEqual([
      ['h2', ['198.51.100.12/32'], '192.0.2.12:51820', 25],
    ]);
    expect(plan.skipped.map((s) => [s.host, s.why.split(' ').slice(0, 4).join(' ')])).toEqual([
      ['h3', 'publishes no WireGuard'],
      ['h4', 'publishes an invalid WireGuard'],
      ['h5', 'publishes the same public'],
    ]);
  });

  it('plans removals, additions and updates; leaves a roamed endpoint alone', () => {
    const desired = new Map([
      [keysOf[1], { publicKey: keysOf[1], endpoint: '192.0.2.11:51820', allowedIps: ['198.51.100.11/32'], keepalive: 25 }],
      [keysOf[2], { publicKey: keysOf[2], endpoint: '192.0.2.12:51820', allowedIps: ['198.51.100.12/32'], keepalive: 25 }],
      [keysOf[3], { publicKey: keysOf[3], endpoint: '192.0.2.13:51820', allowedIps: ['198.51.100.13/32'], keepalive: 25 }],
    ]);
    const device = {
      listenPort: 51820,
      peers: [
        { publicKey: keysOf[0], endpoint: '192.0.2.10:51820', allowedIps: ['198.51.100.10/32'], keepalive: 25, rxBytes: 0, txBytes: 0 }, // stale key
        { publicKey: keysOf[1], endpoint: '192.0.2.99:51820', allowedIps: ['198.51.100.11/32'], keepalive: 25, rxBytes: 0, txBytes: 0 }, // roamed
        { publicKey: keysOf[2], endpoint: '192.0.2.12:51820', allowedIps: ['198.51.100.99/32'], keepalive: 0, rxBytes: 0, txBytes: 0 },
      ],
    };
    const set = new Map([[keysOf[1], '192.0.2.11:51820']]);
    expect(planPeerChanges(device, desired, set)).toEqual([
      { publicKey: keysOf[0], remove: true },
      { publicKey: keysOf[2], updateOnly: true, allowedIps: ['198.51.100.12/32'], keepalive: 25 },
      { publicKey: keysOf[3], endpoint: '192.0.2.13:51820', allowedIps: ['198.51.100.13/32'], keepalive: 25 },
    ]);
    // without the memory (a restarted weft), the endpoint from the store wins once
    expect(planPeerChanges(device, desired, new Map())[1]).toEqual({ publicKey: keysOf[1], updateOnly: true, endpoint: '192.0.2.11:51820' });
    // in sync: nothing
    const synced = { listenPort: 51820, peers: [...desired.values()].map((p) => ({ ...p, rxBytes: 0, txBytes: 0 })) };
    expect(planPeerChanges(synced, desired, new Map())).toEqual([]);
  });
});

describe('tunnel addresses', () => {
  it('claims one address per host, stable across calls, distinct between hosts, and falls back to the cache', async () => {
    const store = await FileStore.open(path.join(dir, 'store'));
    try {
      const cache = (h: string) => path.join(dir, `${h}.json`);
      const a = await claimTunnelAddress(store, 'h1', '198.51.100.0/29', cache('h1'));
      expect(a.claimed).toBe(true);
      expect(await claimTunnelAddress(store, 'h1', '198.51.100.0/29', cache('h1'))).toEqual({ address: a.address, claimed: false, fromCache: false });
      const got = new Set([a.address]);
      for (const h of ['h2', 'h3', 'h4', 'h5', 'h6']) got.add((await claimTunnelAddress(store, h, '198.51.100.0/29', cache(h))).address);
      expect(got.size).toBe(6); // a /29 has 6 host addresses
      await expect(claimTunnelAddress(store, 'h7', '198.51.100.0/29', cache('h7'))).rejects.toThrow(/no free tunnel address left.*widen --wg-subnet.*weft host rm/);
      // a new subnet: a new claim, and the old one released
      const b = await claimTunnelAddress(store, 'h1', '203.0.113.0/24', cache('h1'));
      expect(b.address).toMatch(/^203\.0\.113\./);
      expect(await releaseOtherTunnels(store, 'h1', b.address)).toBe(1);
      expect(await store.get(keys.tunnel(a.address))).toBeUndefined();
      // the store unreachable: the cached address of the same subnet
      const broken = { list: () => Promise.reject(new Error('unreachable')) } as unknown as FileStore;
      expect(await claimTunnelAddress(broken, 'h1', '203.0.113.0/24', cache('h1'))).toEqual({ address: b.address, claimed: false, fromCache: true });
      await expect(claimTunnelAddress(broken, 'h9', '203.0.113.0/24', cache('h9'))).rejects.toThrow(/unreachable/);
    } finally {
      await store.close();
    }
  });

  it('refuses unusable subnets', () => {
    expect(() => parseTunnelSubnet('198.51.100.0/30')).toThrow(/from \/8 to \/29/);
    expect(() => parseTunnelSubnet('198.51.100.1/24')).toThrow(/host bits set: did you mean 198\.51\.100\.0\/24/);
    expect(parseTunnelSubnet('100.64.0.0/16').size).toBe(65536);
  });
});
