// The data plane against the real kernel, as root, in throwaway namespaces.
// Every namespace this file makes is named wdp-<run>-<role> and removed in
// afterAll, whatever happened; network namespaces pinned by DataPlane live
// under per-test temp runDirs, removed too. iproute2 here only sets up and
// inspects: everything under test goes through netlink.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { execFileSync, spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { EventEmitter } from 'events';
import type { RtNetlinkSocket } from 'netlink';
import { DataPlane } from '../../src/dataplane/dataplane';
import { Rtnl, openRtnetlink, errorCode } from '../../src/dataplane/netlink';
import { withNetns, socketIn, ensureNetns, removeNetns, isPinnedNetns } from '../../src/dataplane/netns';
import { networkNames, endpointNames } from '../../src/dataplane/names';
import { deleteNetns } from '../../src/native';
import type { NetworkSpec, EndpointSpec, PeerState } from '../../src/dataplane/types';

const RUN = `wdp-${process.pid.toString(36)}${Math.floor(Math.random() * 36 ** 2).toString(36)}`;
const namespaces: string[] = [];
const runDirs: string[] = [];
const planes: DataPlane[] = [];

function run(cmd: string, ...args: string[]): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (e) {
    const x = e as { stderr?: string; message: string };
    throw new Error(`${cmd} ${args.join(' ')}: ${x.stderr?.trim() || x.message}`);
  }
}
const succeeds = (cmd: string, ...args: string[]) => spawnSync(cmd, args, { stdio: 'ignore' }).status === 0;
const ip = (...args: string[]) => run('ip', ...args);
/** iproute2 inside a pinned network namespace (a path, not a name under /var/run/netns). */
const inNs = (nsPath: string, cmd: string, ...args: string[]) => run('nsenter', `--net=${nsPath}`, cmd, ...args);

function netns(role: string): { name: string; path: string } {
  const name = `${RUN}-${role}`;
  ip('netns', 'add', name);
  namespaces.push(name);
  ip('-n', name, 'link', 'set', 'lo', 'up');
  return { name, path: `/var/run/netns/${name}` };
}

function tempRunDir(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'wdp-run-'));
  runDirs.push(d);
  return d;
}

function plane(runDir: string, hostNetns: string): DataPlane {
  const dp = new DataPlane({ runDir, hostNetns });
  planes.push(dp);
  return dp;
}

function netSpec(clusterId: string, runDir: string, mtu: number, vxlan?: { vni: number; local: string }): NetworkSpec {
  const n = networkNames(clusterId, runDir);
  const spec: NetworkSpec = { id: n.id, nsPath: n.nsPath, bridge: n.bridge, mtu };
  if (vxlan) spec.vxlan = { name: n.vxlan, vni: vxlan.vni, local: vxlan.local, port: 4789, mtu };
  return spec;
}

function epSpec(endpointId: string, mac: string, mtu: number): EndpointSpec {
  return { ...endpointNames(endpointId), mac, mtu };
}

interface IpLink { ifname: string; ifindex: number; mtu: number; address: string; master?: string; flags: string[]; operstate: string;
  linkinfo?: { info_kind?: string; info_data?: Record<string, unknown> } }
const links = (json: string): IpLink[] => JSON.parse(json) as IpLink[];
const hostLinks = (ns: string) => links(ip('-j', '-d', '-n', ns, 'link', 'show'));
const netLinks = (nsPath: string) => links(inNs(nsPath, 'ip', '-j', '-d', 'link', 'show'));
const names = (ls: IpLink[]) => ls.map((l) => l.ifname).sort();

/** What Docker does at Join: move the host end into the sandbox, rename it, address it, bring it up. */
function plug(hostNs: string, hostIf: string, container: string, cidr: string): void {
  ip('-n', hostNs, 'link', 'set', hostIf, 'netns', container);
  ip('-n', container, 'link', 'set', hostIf, 'name', 'eth0');
  ip('-n', container, 'addr', 'add', cidr, 'dev', 'eth0');
  ip('-n', container, 'link', 'set', 'eth0', 'up');
}
const ping = (container: string, ...args: string[]) => succeeds('ip', 'netns', 'exec', container, 'ping', '-c', '1', '-W', '2', ...args);

afterAll(() => {
  for (const dp of planes) { try { dp.close(); } catch { /* best effort */ } }
  for (const d of runDirs) {
    const nsDir = path.join(d, 'netns');
    for (const f of fs.existsSync(nsDir) ? fs.readdirSync(nsDir) : []) {
      try { deleteNetns(path.join(nsDir, f)); } catch { /* best effort */ }
    }
    fs.rmSync(d, { recursive: true, force: true });
  }
  for (const n of namespaces) spawnSync('ip', ['netns', 'del', n], { stdio: 'ignore' });
});

describe('single host', () => {
  let h: { name: string; path: string };
  let c1: { name: string }, c2: { name: string };
  let runDir: string;
  let dp: DataPlane;
  let net: NetworkSpec;
  let ep1: EndpointSpec, ep2: EndpointSpec;

  beforeAll(() => {
    h = netns('h');
    c1 = netns('c1');
    c2 = netns('c2');
    runDir = tempRunDir();
    dp = plane(runDir, h.path);
    net = netSpec('single-host-net', runDir, 1500);
    ep1 = epSpec('endpoint-one', '02:42:0a:63:00:02', 1500);
    ep2 = epSpec('endpoint-two', '02:42:0a:63:00:03', 1500);
  });

  it('creates the network namespace with lo and the bridge, idempotently', async () => {
    // true: made anew (remembered forwarding tables are void); false: all there
    expect(await dp.ensureNetwork(net)).toBe(true);
    expect(await dp.ensureNetwork(net)).toBe(false);
    expect(fs.readdirSync(path.join(runDir, 'netns'))).toEqual([`weft-${net.id}`]);
    const ls = netLinks(net.nsPath);
    expect(names(ls)).toEqual(['br-' + net.id, 'lo'].sort());
    const br = ls.find((l) => l.ifname === net.bridge)!;
    expect(br.linkinfo?.info_kind).toBe('bridge');
    expect(br.mtu).toBe(1500);
    expect(br.flags).toContain('UP');
    expect(ls.find((l) => l.ifname === 'lo')!.flags).toContain('UP');
    expect(inNs(net.nsPath, 'ip', 'addr', 'show', 'dev', net.bridge)).not.toMatch(/inet/);
    expect(inNs(net.nsPath, 'sysctl', '-n', 'net.ipv6.conf.all.disable_ipv6').trim()).toBe('1');
    expect(inNs(net.nsPath, 'sysctl', '-n', 'net.bridge.bridge-nf-call-iptables').trim()).toBe('0');
    expect(run('ip', 'netns', 'exec', h.name, 'sysctl', '-n', 'net.ipv6.conf.all.disable_ipv6').trim()).toBe('0');
    expect(await dp.listNetworkIds()).toEqual([net.id]);
  });

  it('creates endpoints: host end down with the MAC and MTU, bridge end up on the bridge', async () => {
    await dp.createEndpoint(net, ep1);
    await dp.createEndpoint(net, ep2);
    const hl = hostLinks(h.name).find((l) => l.ifname === ep1.hostIf)!;
    expect(hl.address).toBe(ep1.mac);
    expect(hl.mtu).toBe(1500);
    expect(hl.flags).not.toContain('UP');
    const bl = netLinks(net.nsPath).find((l) => l.ifname === ep1.bridgeIf)!;
    expect(bl.master).toBe(net.bridge);
    expect(bl.flags).toContain('UP');
    expect(bl.mtu).toBe(1500);
    // Replay: nothing changes, nothing fails.
    await dp.createEndpoint(net, ep1);
    expect(names(netLinks(net.nsPath))).toEqual([ep1.bridgeIf, ep2.bridgeIf, net.bridge, 'lo'].sort());
  });

  it('connects two containers through the bridge', async () => {
    plug(h.name, ep1.hostIf, c1.name, '10.99.0.2/24');
    plug(h.name, ep2.hostIf, c2.name, '10.99.0.3/24');
    expect(ping(c1.name, '10.99.0.3')).toBe(true);
    expect(ping(c2.name, '10.99.0.2')).toBe(true);
    // Replay after Docker moved the host end away: still a no-op.
    await dp.createEndpoint(net, ep1);
    expect(ip('-n', c1.name, '-br', 'link', 'show', 'eth0')).toMatch(/UP/);
  });

  it('deletes endpoints through the bridge end, wherever the other end is, idempotently', async () => {
    await dp.deleteEndpoint(net, ep1);
    await dp.deleteEndpoint(net, ep1);
    expect(names(links(ip('-j', '-n', c1.name, 'link', 'show')))).toEqual(['lo']);
    expect(names(netLinks(net.nsPath))).not.toContain(ep1.bridgeIf);
    expect(ping(c2.name, '10.99.0.2')).toBe(false);
  });

  it('deletes the network and leaves nothing behind, idempotently', async () => {
    // An endpoint still attached, and one whose host end never left the host.
    const ep3 = epSpec('endpoint-three', '02:42:0a:63:00:04', 1500);
    await dp.createEndpoint(net, ep3);
    await dp.deleteNetwork(net);
    await dp.deleteNetwork(net);
    expect(fs.readdirSync(path.join(runDir, 'netns'))).toEqual([]);
    expect(names(hostLinks(h.name))).toEqual(['lo']);
    expect(names(links(ip('-j', '-n', c2.name, 'link', 'show')))).toEqual(['lo']);
    expect(await dp.listNetworkIds()).toEqual([]);
    await dp.deleteEndpoint(net, ep2); // the namespace is gone: still fine
  });
});

describe('two hosts over VXLAN', () => {
  let ul: { name: string };
  const hosts: { ns: { name: string; path: string }; c: { name: string }; dp: DataPlane; net: NetworkSpec; ep: EndpointSpec;
    vtep: string; ip: string }[] = [];

  beforeAll(async () => {
    ul = netns('ul');
    ip('-n', ul.name, 'link', 'add', 'ulbr', 'type', 'bridge');
    ip('-n', ul.name, 'link', 'set', 'ulbr', 'up');
    for (const i of [1, 2]) {
      const ns = netns(`h${i}`);
      const c = netns(`hc${i}`);
      const vtep = `192.0.2.${i}`;
      ip('-n', ul.name, 'link', 'add', `ul${i}`, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns.name);
      ip('-n', ul.name, 'link', 'set', `ul${i}`, 'master', 'ulbr', 'up');
      ip('-n', ns.name, 'addr', 'add', `${vtep}/24`, 'dev', 'eth0');
      ip('-n', ns.name, 'link', 'set', 'eth0', 'up');
      const runDir = tempRunDir();
      const dp = plane(runDir, ns.path);
      const net = netSpec('cluster-net-4242', runDir, 1450, { vni: 4242, local: vtep });
      const ep = epSpec(`remote-endpoint-${i}`, `02:42:0a:62:00:0${i + 1}`, 1450);
      hosts.push({ ns, c, dp, net, ep, vtep, ip: `10.98.0.${i + 1}` });
    }
    expect(ping(hosts[0].ns.name, '192.0.2.2')).toBe(true);
  });

  const desiredFor = (i: number): PeerState => {
    const o = hosts[1 - i];
    return { endpoints: [{ ip: o.ip, mac: o.ep.mac, vtep: o.vtep }], floodVteps: [o.vtep] };
  };

  it('creates the VXLAN device in the network namespace with its UDP socket in the host namespace', async () => {
    for (const x of hosts) {
      await x.dp.ensureNetwork(x.net);
      const vx = netLinks(x.net.nsPath).find((l) => l.ifname === x.net.vxlan!.name)!;
      expect(vx.linkinfo?.info_kind).toBe('vxlan');
      const d = vx.linkinfo!.info_data!;
      expect(d.id).toBe(4242);
      expect(d.local).toBe(x.vtep);
      expect(d.port).toBe(4789);
      expect(d.learning).toBe(false);
      expect(d.proxy).toBe(true);
      expect(vx.master).toBe(x.net.bridge);
      expect(vx.mtu).toBe(1450);
      expect(vx.flags).toContain('UP');
      expect(run('ip', 'netns', 'exec', x.ns.name, 'ss', '-Hlun')).toMatch(/:4789\b/);
      expect(inNs(x.net.nsPath, 'ss', '-Hlun')).not.toMatch(/:4789\b/);
      await x.dp.createEndpoint(x.net, x.ep);
      plug(x.ns.name, x.ep.hostIf, x.c.name, `${x.ip}/24`);
    }
    expect(ping(hosts[0].c.name, hosts[1].ip)).toBe(false);
  });

  it('programs peers and pings across hosts, full-size with DF', async () => {
    for (const [i, x] of hosts.entries()) {
      expect(await x.dp.programPeers(x.net, desiredFor(i))).toEqual({ added: 3, removed: 0 });
      expect(await x.dp.programPeers(x.net, desiredFor(i))).toEqual({ added: 0, removed: 0 });
      expect(await x.dp.readPeers(x.net)).toEqual(desiredFor(i));
    }
    expect(ping(hosts[0].c.name, hosts[1].ip)).toBe(true);
    expect(ping(hosts[1].c.name, hosts[0].ip)).toBe(true);
    // DF set, so nothing may fragment: 1400-byte IP packets, then exactly the
    // overlay MTU (1450 + 50 bytes of VXLAN encapsulation = the underlay's 1500).
    expect(ping(hosts[0].c.name, '-M', 'do', '-s', '1372', hosts[1].ip)).toBe(true);
    expect(ping(hosts[0].c.name, '-M', 'do', '-s', '1422', hosts[1].ip)).toBe(true);
    expect(ping(hosts[0].c.name, '-M', 'do', '-s', '1423', hosts[1].ip)).toBe(false);
    // ARP was answered from the neighbour table (proxy) with the remote endpoint's MAC.
    expect(ip('-n', hosts[0].c.name, 'neigh', 'show', hosts[1].ip)).toContain(hosts[1].ep.mac);
  });

  it('floods broadcast to the other host through the all-zero FDB entry', () => {
    run('ip', 'netns', 'exec', hosts[1].c.name, 'sysctl', '-qw', 'net.ipv4.icmp_echo_ignore_broadcasts=0');
    expect(ping(hosts[0].c.name, '-b', '10.98.0.255')).toBe(true);
  });

  it('restores entries removed by hand and removes entries added by hand', async () => {
    const [a, b] = hosts;
    const vx = a.net.vxlan!.name;
    inNs(a.net.nsPath, 'bridge', 'fdb', 'del', b.ep.mac, 'dev', vx, 'dst', b.vtep, 'self');
    expect(await a.dp.programPeers(a.net, desiredFor(0))).toEqual({ added: 1, removed: 0 });
    inNs(a.net.nsPath, 'ip', 'neigh', 'del', b.ip, 'dev', vx);
    expect(await a.dp.programPeers(a.net, desiredFor(0))).toEqual({ added: 1, removed: 0 });
    inNs(a.net.nsPath, 'bridge', 'fdb', 'del', '00:00:00:00:00:00', 'dev', vx, 'dst', b.vtep, 'self');
    expect(await a.dp.programPeers(a.net, desiredFor(0))).toEqual({ added: 1, removed: 0 });
    inNs(a.net.nsPath, 'bridge', 'fdb', 'append', '02:42:0a:62:00:99', 'dev', vx, 'dst', '192.0.2.77', 'self', 'permanent');
    inNs(a.net.nsPath, 'ip', 'neigh', 'replace', '10.98.0.99', 'lladdr', '02:42:0a:62:00:99', 'dev', vx, 'nud', 'permanent');
    inNs(a.net.nsPath, 'ip', 'neigh', 'replace', b.ip, 'lladdr', '02:42:0a:62:00:98', 'dev', vx, 'nud', 'permanent');
    expect(await a.dp.programPeers(a.net, desiredFor(0))).toEqual({ added: 1, removed: 3 });
    expect(await a.dp.readPeers(a.net)).toEqual(desiredFor(0));
    expect(ping(a.c.name, b.ip)).toBe(true);
  });

  it('a VTEP that changed moves the FDB entry', async () => {
    const [a, b] = hosts;
    const moved: PeerState = { endpoints: [{ ip: b.ip, mac: b.ep.mac, vtep: '192.0.2.9' }], floodVteps: [b.vtep] };
    expect(await a.dp.programPeers(a.net, moved)).toEqual({ added: 1, removed: 1 });
    expect(await a.dp.readPeers(a.net)).toEqual(moved);
    expect(await a.dp.programPeers(a.net, desiredFor(0))).toEqual({ added: 1, removed: 1 });
  });

  it('a change of one endpoint in a network of 5,000 costs one FDB and one neighbour operation (changePeers), with no dump', async () => {
    const [a] = hosts;
    const big: PeerState = { endpoints: [], floodVteps: ['192.0.2.2'] };
    for (let n = 0; n < 5000; n++) {
      const x = n + 256; // 10.97.1.0 onwards, in 10.97.0.0/16
      big.endpoints.push({ ip: `10.97.${x >> 8}.${x & 255}`, mac: `02:42:0a:61:${((x >> 8) & 255).toString(16).padStart(2, '0')}:${(x & 255).toString(16).padStart(2, '0')}`, vtep: '192.0.2.2' });
    }
    // from desiredFor(0): its flood entry stays, its endpoint's two entries go
    expect(await a.dp.programPeers(a.net, big)).toEqual({ added: 10000, removed: 2 });
    const one = { ip: '10.97.200.1', mac: '02:42:0a:61:c8:01', vtep: '192.0.2.2' };
    const grown: PeerState = { endpoints: [...big.endpoints, one], floodVteps: big.floodVteps };
    const before = a.dp.peerOps();
    expect(await a.dp.changePeers(a.net, big, grown)).toEqual({ added: 2, removed: 0 });
    const after = a.dp.peerOps();
    expect({ fdb: after.fdb - before.fdb, neighbour: after.neighbour - before.neighbour }).toEqual({ fdb: 1, neighbour: 1 });
    expect(inNs(a.net.nsPath, 'ip', 'neigh', 'show', one.ip, 'dev', a.net.vxlan!.name)).toContain(one.mac);
    // and back: one removal in each table
    expect(await a.dp.changePeers(a.net, grown, big)).toEqual({ added: 0, removed: 2 });
    const back = a.dp.peerOps();
    expect({ fdb: back.fdb - after.fdb, neighbour: back.neighbour - after.neighbour }).toEqual({ fdb: 1, neighbour: 1 });
    expect(inNs(a.net.nsPath, 'ip', 'neigh', 'show', one.ip, 'dev', a.net.vxlan!.name)).not.toContain(one.mac);
    // the full compare finds the kernel as changePeers left it
    expect(await a.dp.programPeers(a.net, big)).toEqual({ added: 0, removed: 0 });
    expect(await a.dp.programPeers(a.net, desiredFor(0))).toEqual({ added: 2, removed: 10000 });
  });

  it('an empty desired state removes every peer and cuts the path', async () => {
    const [a, b] = hosts;
    expect(await a.dp.programPeers(a.net, { endpoints: [], floodVteps: [] })).toEqual({ added: 0, removed: 3 });
    expect(await a.dp.readPeers(a.net)).toEqual({ endpoints: [], floodVteps: [] });
    ip('-n', a.c.name, 'neigh', 'flush', 'all');
    expect(ping(a.c.name, b.ip)).toBe(false);
    // Bridge-learned entries for local endpoints are not ours and survive.
    expect(inNs(a.net.nsPath, 'bridge', 'fdb', 'show', 'br', a.net.bridge)).toContain(a.ep.mac);
  });

  it('deleteNetwork removes the VXLAN device and frees its port and VNI at once', async () => {
    for (const x of hosts) {
      await x.dp.deleteNetwork(x.net);
      expect(run('ip', 'netns', 'exec', x.ns.name, 'ss', '-Hlun')).not.toMatch(/:4789\b/);
      expect(names(hostLinks(x.ns.name))).toEqual(['eth0', 'lo']);
      expect(names(links(ip('-j', '-n', x.c.name, 'link', 'show')))).toEqual(['lo']);
    }
    // Same VNI again straight away.
    await hosts[0].dp.ensureNetwork(hosts[0].net);
    await hosts[0].dp.deleteNetwork(hosts[0].net);
  });
});

describe('rollback', () => {
  let h: { name: string; path: string };
  let dp: DataPlane;
  let net: NetworkSpec;

  beforeAll(async () => {
    h = netns('rb');
    const runDir = tempRunDir();
    dp = plane(runDir, h.path);
    net = netSpec('rollback-net', runDir, 1500);
    await dp.ensureNetwork(net);
  });

  it('a name collision on the host end leaves no half-made link and the other link untouched', async () => {
    const ep = epSpec('collides', '02:42:0a:63:00:10', 1500);
    ip('-n', h.name, 'link', 'add', ep.hostIf, 'type', 'bridge');
    await expect(dp.createEndpoint(net, ep)).rejects.toMatchObject({ code: 'EEXIST', message: expect.stringContaining(ep.hostIf) });
    expect(names(netLinks(net.nsPath))).toEqual([net.bridge, 'lo'].sort());
    expect(hostLinks(h.name).find((l) => l.ifname === ep.hostIf)?.linkinfo?.info_kind).toBe('bridge');
    ip('-n', h.name, 'link', 'del', ep.hostIf);
  });

  it('an invalid MTU leaves no half-made link', async () => {
    for (const mtu of [70000, 10]) {
      const ep = epSpec(`bad-mtu-${mtu}`, '02:42:0a:63:00:11', mtu);
      await expect(dp.createEndpoint(net, ep)).rejects.toMatchObject({ code: 'EINVAL' });
      expect(names(netLinks(net.nsPath))).toEqual([net.bridge, 'lo'].sort());
      expect(names(hostLinks(h.name))).toEqual(['lo']);
    }
  });

  it('a missing network is an error that says what to do', async () => {
    const other = netSpec('never-created', path.dirname(path.dirname(net.nsPath)), 1500);
    await expect(dp.createEndpoint(other, epSpec('x', '02:42:0a:63:00:12', 1500))).rejects.toThrow(/ensureNetwork first/);
    expect(names(hostLinks(h.name))).toEqual(['lo']);
  });
});

describe('restart', () => {
  let h: { name: string; path: string };
  let runDir: string;
  let net: NetworkSpec;
  const ep = epSpec('survivor', '02:42:0a:63:00:20', 1450);
  const peers: PeerState = { endpoints: [{ ip: '10.97.0.9', mac: '02:42:0a:61:00:09', vtep: '192.0.2.9' }], floodVteps: ['192.0.2.9'] };

  beforeAll(async () => {
    h = netns('rs');
    runDir = tempRunDir();
    net = netSpec('restart-net', runDir, 1450, { vni: 4343, local: '192.0.2.1' });
    const first = plane(runDir, h.path);
    await first.ensureNetwork(net);
    await first.createEndpoint(net, ep);
    await first.programPeers(net, peers);
    first.close();
  });

  it('a new instance finds the network and changes nothing', async () => {
    const before = netLinks(net.nsPath).map((l) => `${l.ifindex}:${l.ifname}`).sort();
    const dp = plane(runDir, h.path);
    expect(await dp.listNetworkIds()).toEqual([net.id]);
    await dp.ensureNetwork(net);
    await dp.createEndpoint(net, ep);
    expect(netLinks(net.nsPath).map((l) => `${l.ifindex}:${l.ifname}`).sort()).toEqual(before);
    expect(names(hostLinks(h.name))).toEqual(['lo', ep.hostIf].sort());
    expect(await dp.programPeers(net, peers)).toEqual({ added: 0, removed: 0 });
  });

  it('brings drifted links back to spec and recreates a VXLAN device with the wrong VNI', async () => {
    const dp = plane(runDir, h.path);
    inNs(net.nsPath, 'ip', 'link', 'set', net.bridge, 'down');
    inNs(net.nsPath, 'ip', 'link', 'set', net.vxlan!.name, 'nomaster');
    expect(await dp.ensureNetwork(net)).toBe(false); // links fixed in place: the forwarding tables stay
    let vx = netLinks(net.nsPath).find((l) => l.ifname === net.vxlan!.name)!;
    expect(vx.master).toBe(net.bridge);
    expect(netLinks(net.nsPath).find((l) => l.ifname === net.bridge)!.flags).toContain('UP');

    const moved: NetworkSpec = { ...net, vxlan: { ...net.vxlan!, vni: 4344 } };
    expect(await dp.ensureNetwork(moved)).toBe(true); // a new VXLAN device: its tables are empty
    vx = netLinks(net.nsPath).find((l) => l.ifname === net.vxlan!.name)!;
    expect(vx.linkinfo?.info_data?.id).toBe(4344);
    expect(vx.master).toBe(net.bridge);
    expect(vx.flags).toContain('UP');
    expect(netLinks(net.nsPath).filter((l) => l.linkinfo?.info_kind === 'vxlan')).toHaveLength(1);
    // The new device starts with an empty FDB: the agent's next reconcile puts the peers back.
    expect(await dp.programPeers(moved, peers)).toEqual({ added: 3, removed: 0 });
    await dp.deleteNetwork(moved);
    expect(await dp.listNetworkIds()).toEqual([]);
  });
});

describe('figures', () => {
  it('measures endpoint and peer operations', async () => {
    const h = netns('fg');
    const runDir = tempRunDir();
    const dp = plane(runDir, h.path);
    const net = netSpec('figures-net', runDir, 1450, { vni: 4545, local: '192.0.2.1' });
    const ms = (t: bigint) => Number(process.hrtime.bigint() - t) / 1e6;
    let t = process.hrtime.bigint();
    await dp.ensureNetwork(net);
    const ensure = ms(t);
    t = process.hrtime.bigint();
    await dp.ensureNetwork(net);
    const ensureNoop = ms(t);
    const N = 50;
    const eps = Array.from({ length: N }, (_, i) => epSpec(`fig-${i}`, `02:42:0a:60:${(i >> 8).toString(16).padStart(2, '0')}:${(i & 255).toString(16).padStart(2, '0')}`, 1450));
    t = process.hrtime.bigint();
    for (const ep of eps) await dp.createEndpoint(net, ep);
    const create = ms(t) / N;
    const P = 500;
    const peers: PeerState = {
      endpoints: Array.from({ length: P }, (_, i) => ({ ip: `10.96.${i >> 8}.${i & 255}`, mac: `02:42:0a:5f:${(i >> 8).toString(16).padStart(2, '0')}:${(i & 255).toString(16).padStart(2, '0')}`, vtep: `198.51.100.${1 + (i % 50)}` })),
      floodVteps: Array.from({ length: 50 }, (_, i) => `198.51.100.${1 + i}`),
    };
    t = process.hrtime.bigint();
    expect(await dp.programPeers(net, peers)).toEqual({ added: 2 * P + 50, removed: 0 });
    const program = ms(t);
    t = process.hrtime.bigint();
    expect(await dp.programPeers(net, peers)).toEqual({ added: 0, removed: 0 });
    const programNoop = ms(t);
    t = process.hrtime.bigint();
    for (const ep of eps) await dp.deleteEndpoint(net, ep);
    const del = ms(t) / N;
    t = process.hrtime.bigint();
    await dp.deleteNetwork(net);
    const delNet = ms(t);
    console.log(`[figures] ensureNetwork (new, with vxlan) ${ensure.toFixed(1)} ms, again ${ensureNoop.toFixed(2)} ms; ` +
      `createEndpoint ${create.toFixed(2)} ms/op, deleteEndpoint ${del.toFixed(1)} ms/op (N=${N}); ` +
      `programPeers ${P} endpoints + 50 vteps ${program.toFixed(1)} ms, no-op ${programNoop.toFixed(1)} ms; deleteNetwork ${delNet.toFixed(1)} ms`);
  });
});

describe('withNetns and per-namespace sockets', () => {
  const self = () => fs.statSync('/proc/thread-self/ns/net').ino;

  it('runs fn inside the namespace and always comes back', () => {
    const h = netns('wn');
    const home = self();
    expect(withNetns(h.path, self)).toBe(fs.statSync(h.path).ino);
    expect(self()).toBe(home);
    expect(() => withNetns(h.path, () => { throw new Error('boom'); })).toThrow('boom');
    expect(self()).toBe(home);
    expect(() => withNetns(h.path, () => Promise.resolve(1))).toThrow(/synchronous/);
    expect(self()).toBe(home);
    expect(() => withNetns('/nonexistent/wdp-ns', () => 1)).toThrow(/\/nonexistent\/wdp-ns/);
    expect(self()).toBe(home);
  });

  it('gives a namespace re-created at the same path a new socket', async () => {
    const dir = path.join(tempRunDir(), 'netns');
    fs.mkdirSync(dir);
    const p = path.join(dir, 'wdp-pinned');
    expect(ensureNetns(p)).toBe(true);
    expect(ensureNetns(p)).toBe(false);
    const a = socketIn(p);
    expect(socketIn(p)).toBe(a);
    await a.createBridge('wdp-marker', 1500);
    removeNetns(p);
    removeNetns(p);
    expect(isPinnedNetns(p)).toBe(false);
    ensureNetns(p);
    const b = socketIn(p);
    expect(b).not.toBe(a);
    expect((await b.listLinks()).map((l) => l.name)).toEqual(['lo']);
    removeNetns(p);
  });
});

describe('netlink adapter', () => {
  /** A stand-in socket whose requests settle only when the test says so. */
  function fake(opts: { delayMs?: number; hang?: boolean }) {
    const state = { active: 0, maxActive: 0, dumpOverlap: false, dumping: false, opened: 0, sockets: [] as EventEmitter[] };
    const open = (): RtNetlinkSocket => {
      state.opened++;
      const ee = Object.assign(new EventEmitter(), { close() { /* nothing */ } });
      state.sockets.push(ee);
      const req = (dump: boolean) => {
        if (opts.hang) return new Promise(() => undefined);
        if (state.dumping || (dump && state.active > 0)) state.dumpOverlap = true;
        state.active++;
        if (dump) state.dumping = true;
        state.maxActive = Math.max(state.maxActive, state.active);
        return new Promise((r) => setTimeout(() => { state.active--; if (dump) state.dumping = false; r([]); }, opts.delayMs ?? 5));
      };
      return { socket: ee, getLink: () => req(false), getLinks: () => req(true) } as unknown as RtNetlinkSocket;
    };
    return { state, open };
  }

  it('parses the kernel errno out of the package message', () => {
    expect(errorCode(new Error('Request rejected: EEXIST'))).toBe('EEXIST');
    expect(errorCode(new Error('Timeout has been reached'))).toBe('ETIMEDOUT');
    expect(errorCode(new Error('other'))).toBeUndefined();
  });

  it('reports a real kernel error with its code and the link named', async () => {
    const r = new Rtnl({ label: 'the test process namespace', open: openRtnetlink });
    await expect(r.setLink(999999, 'wdp-nolink', { up: true })).rejects.toMatchObject({
      code: 'ENODEV', message: expect.stringContaining('wdp-nolink') });
    expect(await r.getLink('wdp-nolink')).toBeUndefined();
    expect((await r.getLink('lo'))?.index).toBe(1);
    r.close();
  });

  it('bounds requests in flight and gives a dump the socket to itself', async () => {
    const f = fake({ delayMs: 3 });
    const r = new Rtnl({ label: 'fake', open: f.open, maxInFlight: 4 });
    await Promise.all(Array.from({ length: 60 }, (_, i) => (i % 7 === 0 ? r.listLinks() : r.getLink(`x${i}`))));
    expect(f.state.maxActive).toBe(4);
    expect(f.state.dumpOverlap).toBe(false);
    expect(f.state.opened).toBe(1);
  });

  it('keeps nothing of a settled request (no growth with the number of requests)', async () => {
    const f = fake({ delayMs: 0 });
    const r = new Rtnl({ label: 'fake', open: f.open });
    for (let i = 0; i < 500; i++) await r.getLink(`x${i}`);
    const gen = (r as unknown as { gen: { fail: Set<unknown> } }).gen;
    expect(gen.fail.size).toBe(0);
    r.close();
  });

  it('times out, and the next request gets a new socket', async () => {
    const f = fake({ hang: true });
    const r = new Rtnl({ label: 'fake', open: f.open, timeoutMs: 100 });
    await expect(r.getLink('x')).rejects.toMatchObject({ code: 'ETIMEDOUT' });
    await expect(r.getLink('x')).rejects.toMatchObject({ code: 'ETIMEDOUT' });
    expect(f.state.opened).toBe(2);
  });

  it("settles requests in flight when the socket reports an error, then opens a new one", async () => {
    const f = fake({ hang: true });
    const r = new Rtnl({ label: 'fake', open: f.open, timeoutMs: 60_000 });
    const pending = r.getLink('x');
    await new Promise((res) => setImmediate(res));
    f.state.sockets[0].emit('error', new Error('uv_poll: EBADF'));
    await expect(pending).rejects.toMatchObject({ code: 'ESOCKET', message: expect.stringContaining('EBADF') });
    const real = new Rtnl({ label: 'real', open: () => { const s = openRtnetlink(); f.state.sockets.push(s.socket); return s; } });
    expect(await real.getLink('lo')).toBeDefined();
    f.state.sockets[1].emit('error', new Error('ENOBUFS'));
    expect(await real.getLink('lo')).toBeDefined();
    expect(f.state.sockets).toHaveLength(3);
    real.close();
  });
});
