// The WireGuard manager (src/wireguard) against real wireguard-go processes,
// without Docker: three "hosts" are network namespaces on a lab underlay, each
// with its own manager (in this process, hostNetns pointing at its namespace)
// and its own wireguard-go; one FileStore stands in for the cluster's store.
// Checks the crypto namespace, peers from host records, key reuse, restart of
// a killed wireguard-go, fail-closed routing, rotation, removal, and that a
// WireGuard speaking with an unknown key reaches nothing.
import { spawn } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FileStore } from '../../src/store/file-store';
import type { HostRecord } from '../../src/store/keys';
import { WireGuard } from '../../src/wireguard';
import { generatePrivateKey } from '../../src/wireguard/keys';
import { cleanupLabLeftovers, createUnderlay, LAB_ROOT, run, runOk, waitFor, type Underlay } from '../lab/host';
import { killAndWaitSync, pidsInNetns } from '../lab/cleanup';

const PREFIX = 'w13w-';
const TUNNELS = '198.51.100.0/24';
let ul: Underlay;
let store: FileStore;
const logs: string[] = [];
const logger = pino({ level: 'debug' }, { write: (s: string) => { logs.push(s); } });

interface TestHost { name: string; netns: string; ip: string; ifname: string; dir: string; wg: WireGuard }
const hosts: TestHost[] = [];

function manager(name: string, netns: string, ip: string, ifname: string, dir: string): WireGuard {
  return new WireGuard({
    mode: 'auto', ifname, listenPort: 51820, subnet: TUNNELS, wireguardGo: 'wireguard-go',
    stateDir: path.join(dir, 'state'), runDir: path.join(dir, 'run'), hostName: name, advertiseAddr: ip,
    linkMtu: 1440, store, logger: logger.child({ host: name }), hostNetns: netns, checkIntervalSeconds: 1,
  });
}

function record(h: TestHost): HostRecord {
  return { address: h.ip, version: 'test', startedAt: new Date().toISOString(), ...(h.wg.hostInfo() ? { wg: h.wg.hostInfo()! } : {}) };
}

async function publishAll(): Promise<void> {
  const recs = new Map(hosts.map((h) => [h.name, record(h)]));
  for (const h of hosts) await h.wg.setHosts(recs);
}

/** `wg show IF dump` (tests may run wg): the interface line, then one line per peer. */
async function dump(h: TestHost): Promise<{ publicKey: string; peers: { key: string; endpoint: string; allowed: string }[] }> {
  const r = await runOk('wg', ['show', h.ifname, 'dump']);
  const [iface, ...peers] = r.stdout.trim().split('\n').map((l) => l.split('\t'));
  return { publicKey: iface[1], peers: peers.filter((p) => p.length > 3).map((p) => ({ key: p[0], endpoint: p[2], allowed: p[3] })) };
}

const inCrypto = (h: TestHost, cmd: string[]) => run('nsenter', [`--net=${h.wg.cryptoNetns}`, ...cmd], { timeoutMs: 20_000 });
const ping = (from: TestHost, to: TestHost, n = 2) => inCrypto(from, ['ping', '-c', String(n), '-W', '2', '-i', '0.2', to.wg.tunnelAddress()!]);

function killAll(): void {
  for (let i = 1; i <= 4; i++) killAndWaitSync(pidsInNetns(`${PREFIX}h${i}`));
  for (let i = 1; i <= 4; i++) fs.rmSync(`/var/run/wireguard/w13wg${i}.sock`, { force: true });
}

beforeAll(async () => {
  killAll();
  await cleanupLabLeftovers(PREFIX);
  ul = await createUnderlay(`${PREFIX}ul`, '192.0.2.0/24');
  store = await FileStore.open(path.join(LAB_ROOT, `${PREFIX}store`));
  for (let i = 1; i <= 3; i++) {
    const name = `${PREFIX}h${i}`;
    await runOk('ip', ['netns', 'add', name]);
    await runOk('ip', ['-n', name, 'link', 'set', 'lo', 'up']);
    const port = await ul.addHost(name);
    const dir = path.join(LAB_ROOT, name);
    fs.mkdirSync(dir, { recursive: true });
    const ip = port.address.split('/')[0];
    const netns = `/run/netns/${name}`;
    hosts.push({ name, netns, ip, ifname: `w13wg${i}`, dir, wg: manager(name, netns, ip, `w13wg${i}`, dir) });
  }
}, 120_000);

afterAll(async () => {
  for (const h of hosts) h.wg.close();
  await store?.close().catch(() => undefined);
  killAll();
  await ul?.destroy().catch(() => undefined);
  await cleanupLabLeftovers(PREFIX);
}, 60_000);

describe('WireGuard between hosts (wireguard-go)', () => {
  it('each host comes up with wireguard-go, its key file 0600, its tunnel address, in its own namespace', async () => {
    for (const h of hosts) {
      await h.wg.start();
      expect(h.wg.isReady(), h.wg.notReadyReason()).toBe(true);
      const s = await h.wg.status();
      expect(s.kind).toBe('userspace');
      expect(s.implementation).toMatch(/^wireguard-go .*\(userspace\)$/);
      expect(s.keyFileMode).toBe('600');
      expect(s.tunnel).toMatch(/^198\.51\.100\.\d+$/);
      expect(s.pid).toBeGreaterThan(1);
      // the interface is in the crypto namespace, not in the host's; its address and route only there
      const inHost = await run('ip', ['-n', h.name, 'link', 'show', h.ifname]);
      expect(inHost.code).not.toBe(0);
      const addr = await inCrypto(h, ['ip', '-4', '-o', 'addr', 'show', 'dev', h.ifname]);
      expect(addr.stdout).toContain(`${s.tunnel}/24`);
      expect((await run('ip', ['-n', h.name, 'route'])).stdout).not.toContain('198.51.100.');
      expect((await dump(h)).publicKey).toBe(s.publicKey);
    }
    expect(new Set(hosts.map((h) => h.wg.tunnelAddress())).size).toBe(3);
    expect(logs.join('')).toMatch(/WireGuard up: wireguard-go/);
  });

  it('peers follow the host records; the tunnel addresses reach each other', async () => {
    await publishAll();
    for (const h of hosts) {
      const d = await dump(h);
      const others = hosts.filter((o) => o !== h);
      expect(d.peers.map((p) => p.key).sort()).toEqual(others.map((o) => o.wg.hostInfo()!.publicKey).sort());
      for (const o of others) {
        const p = d.peers.find((x) => x.key === o.wg.hostInfo()!.publicKey)!;
        expect(p.endpoint).toBe(`${o.ip}:51820`);
        expect(p.allowed).toBe(`${o.wg.tunnelAddress()}/32`);
      }
    }
    for (const [a, b] of [[0, 1], [1, 2], [2, 0]]) {
      const r = await ping(hosts[a], hosts[b]);
      expect(r.code, r.stdout + r.stderr).toBe(0);
    }
    // keepalives keep every pair's handshake fresh
    await waitFor(async () => (await hosts[0].wg.status()).peers.every((p) => p.up && p.expected), { timeoutMs: 15_000, what: 'handshakes with every peer' });
  });

  it('a WireGuard with a key the hosts do not know reaches nothing', async () => {
    const rogue = { name: `${PREFIX}h4`, ifname: 'w13wg4' };
    await runOk('ip', ['netns', 'add', rogue.name]);
    await runOk('ip', ['-n', rogue.name, 'link', 'set', 'lo', 'up']);
    const port = await ul.addHost(rogue.name);
    const keyFile = path.join(LAB_ROOT, `${PREFIX}rogue.key`);
    fs.writeFileSync(keyFile, `${generatePrivateKey().reveal().toString('base64')}\n`, { mode: 0o600 });
    const go = spawn('ip', ['netns', 'exec', rogue.name, 'wireguard-go', '-f', rogue.ifname], { stdio: 'ignore', env: { ...process.env, WG_PROCESS_FOREGROUND: '1' } });
    try {
      await waitFor(() => fs.existsSync(`/var/run/wireguard/${rogue.ifname}.sock`), { timeoutMs: 10_000, what: 'the rogue wireguard-go' });
      const target = hosts[1];
      // It pretends to be host 1: host 1's tunnel address, host 2 as its peer, with a key of its own.
      await runOk('ip', ['netns', 'exec', rogue.name, 'wg', 'set', rogue.ifname, 'private-key', keyFile, 'peer', target.wg.hostInfo()!.publicKey,
        'endpoint', `${target.ip}:51820`, 'allowed-ips', `${target.wg.tunnelAddress()}/32`, 'persistent-keepalive', '1']);
      await runOk('ip', ['-n', rogue.name, 'addr', 'add', `${hosts[0].wg.tunnelAddress()}/24`, 'dev', rogue.ifname]);
      await runOk('ip', ['-n', rogue.name, 'link', 'set', rogue.ifname, 'up']);
      const before = (await inCrypto(target, ['cat', `/sys/class/net/${target.ifname}/statistics/rx_packets`])).stdout.trim();
      const r = await run('ip', ['netns', 'exec', rogue.name, 'ping', '-c', '3', '-W', '1', '-i', '0.3', target.wg.tunnelAddress()!], { timeoutMs: 20_000 });
      expect(r.code).not.toBe(0);
      // the rogue never completed a handshake, and nothing it sent came out of the target's interface
      const rogueDump = await runOk('ip', ['netns', 'exec', rogue.name, 'wg', 'show', rogue.ifname, 'latest-handshakes']);
      expect(rogueDump.stdout.trim().split(/\s+/)[1]).toBe('0');
      const after = (await inCrypto(target, ['cat', `/sys/class/net/${target.ifname}/statistics/rx_packets`])).stdout.trim();
      // only keepalives of the real peers may have arrived meanwhile: none of the rogue's ICMP
      const st = await target.wg.status();
      expect(st.peers.every((p) => p.expected)).toBe(true);
      expect(Number(after) - Number(before)).toBeLessThan(3);
      expect(port.address).toMatch(/^192\.0\.2\./);
    } finally {
      go.kill('SIGKILL');
      killAndWaitSync(pidsInNetns(rogue.name));
      await ul.removeHost(rogue.name);
      await run('ip', ['netns', 'del', rogue.name]);
    }
  });

  it('a restarted manager reuses the key and the running wireguard-go', async () => {
    const h = hosts[0];
    const before = await h.wg.status();
    h.wg.close();
    h.wg = manager(h.name, h.netns, h.ip, h.ifname, h.dir);
    await h.wg.start();
    // it has not read the hosts yet: the device keeps its peers (the tunnels of running containers)
    expect((await dump(h)).peers.length).toBe(2);
    expect((await ping(h, hosts[1], 1)).code).toBe(0);
    const after = await h.wg.status();
    expect(after.publicKey).toBe(before.publicKey);
    expect(after.tunnel).toBe(before.tunnel);
    expect(after.pid).toBe(before.pid);
    expect(h.wg.stats.restarts).toBe(0);
    await publishAll();
    expect((await ping(h, hosts[1])).code).toBe(0);
  });

  it('a killed wireguard-go: no route out of the namespace (fail closed) until a manager starts it again', async () => {
    const h = hosts[1];
    h.wg.close(); // no manager watching: the state a crash of weft and wireguard-go together leaves
    const pid = (await h.wg.status()).pid!;
    process.kill(pid, 'SIGKILL');
    await waitFor(async () => !(await inCrypto(h, ['ip', 'link', 'show', h.ifname])).stdout.includes(h.ifname) || undefined,
      { timeoutMs: 10_000, what: 'the interface to vanish with its process' });
    expect((await inCrypto(h, ['ip', '-4', 'route'])).stdout.trim()).toBe('');
    const out = await inCrypto(h, ['ping', '-c', '1', '-W', '1', hosts[0].wg.tunnelAddress()!]);
    expect(out.code).not.toBe(0);
    expect(out.stderr + out.stdout).toMatch(/unreachable/i);
    h.wg = manager(h.name, h.netns, h.ip, h.ifname, h.dir);
    await h.wg.start();
    expect(h.wg.stats.restarts).toBe(1);
    await publishAll();
    await waitFor(async () => (await ping(hosts[0], h, 1)).code === 0, { timeoutMs: 20_000, what: 'traffic after the restart' });
  });

  it('a running manager restarts a wireguard-go that died', async () => {
    const h = hosts[1];
    const pid = (await h.wg.status()).pid!;
    process.kill(pid, 'SIGKILL');
    await waitFor(async () => (h.wg.stats.restarts >= 2 && h.wg.isReady()) || undefined, { timeoutMs: 20_000, what: 'wireguard-go to be restarted' });
    expect((await h.wg.status()).pid).not.toBe(pid);
    await waitFor(async () => (await ping(hosts[0], h, 1)).code === 0, { timeoutMs: 20_000, what: 'traffic after the restart' });
    expect(logs.join('')).toMatch(/wireguard-go exited: encrypted traffic stops \(fail closed\)/);
  });

  it('a rotated key replaces the old one on every peer, and traffic resumes', async () => {
    const h = hosts[2];
    const old = h.wg.hostInfo()!.publicKey;
    const r = await h.wg.rotateKey();
    expect(r.previous).toBe(old);
    expect(r.publicKey).not.toBe(old);
    expect(fs.readFileSync(h.wg.keyFile.path, 'utf8')).not.toContain(old);
    await publishAll();
    for (const o of hosts.filter((x) => x !== h)) {
      const keysThere = (await dump(o)).peers.map((p) => p.key);
      expect(keysThere).toContain(r.publicKey);
      expect(keysThere).not.toContain(old);
    }
    expect((await dump(h)).publicKey).toBe(r.publicKey);
    await waitFor(async () => (await ping(hosts[0], h, 1)).code === 0, { timeoutMs: 10_000, what: 'traffic after the rotation' });
  });

  it('a host that leaves is removed from every peer list', async () => {
    const gone = hosts[2];
    const recs = new Map(hosts.filter((h) => h !== gone).map((h) => [h.name, record(h)]));
    for (const h of hosts.slice(0, 2)) await h.wg.setHosts(recs);
    for (const h of hosts.slice(0, 2)) expect((await dump(h)).peers.map((p) => p.key)).not.toContain(gone.wg.hostInfo()!.publicKey);
    expect((await ping(hosts[0], gone, 1)).code).not.toBe(0);
  });

  it('no private key in any log line', () => {
    const text = logs.join('');
    for (const h of hosts) {
      const priv = fs.readFileSync(h.wg.keyFile.path, 'utf8').trim();
      expect(text).not.toContain(priv);
      expect(text).not.toContain(Buffer.from(priv, 'base64').toString('hex'));
    }
  });
});
