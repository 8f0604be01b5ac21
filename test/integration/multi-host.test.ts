// Three hosts on one machine (network namespaces on an underlay bridge, each
// with its own dockerd and its own weft), one etcd: the multi-host overlay end
// to end. Runs in order; every sub-test builds on the state before it.
import { execFileSync, spawn } from 'child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startEtcd } from '../lab/etcd';
import { keepLogs } from '../lab/logs';
import {
  cleanupLabLeftovers, createUnderlay, ensureBusyboxImage, run, startHost, startWeft, waitFor,
  type LabHost, type Underlay, type WeftProcess,
} from '../lab/host';

const PREFIX = 'wmh-';
const SUBNET = '10.50.0.0/24';
let ul: Underlay;
let etcd: Awaited<ReturnType<typeof startEtcd>>;
const hosts: LabHost[] = [];
const wefts: WeftProcess[] = [];
let etcdUrl = '';

const ipOf = (h: LabHost) => h.underlay!.ports.get(h.name)!.address.split('/')[0];

function weftArgs(h: LabHost): string[] {
  return ['--store', etcdUrl, '--advertise-addr', ipOf(h), '--lease-ttl', '3', '--reconcile-interval', '2', '--peer-audit-interval', '2', '--gc-grace', '5'];
}

beforeAll(async () => {
  await cleanupLabLeftovers(PREFIX);
  ul = await createUnderlay(`${PREFIX}ul`, '192.0.2.0/24');
  const etcdIp = ul.bridgeAddress.split('/')[0];
  etcd = await startEtcd({ name: 'wmh', netns: ul.name, clientHost: etcdIp });
  etcdUrl = `etcd://${etcdIp}:${new URL(etcd.endpoint).port}`;
  for (let i = 1; i <= 3; i++) {
    const h = await startHost({ name: `${PREFIX}h${i}`, underlay: ul });
    hosts.push(h);
    await ensureBusyboxImage(h);
    wefts.push(await startWeft(h, { args: weftArgs(h) }));
  }
}, 300_000);

afterAll(async () => {
  keepLogs(hosts);
  for (const h of hosts) await h.destroy().catch(() => undefined);
  await etcd?.stop().catch(() => undefined);
  await ul?.destroy().catch(() => undefined);
  await cleanupLabLeftovers(PREFIX);
}, 180_000);

async function containerIp(h: LabHost, name: string, network = 'app'): Promise<string> {
  const r = await h.dockerOk(['inspect', '-f', `{{(index .NetworkSettings.Networks "${network}").IPAddress}}`, name]);
  return r.stdout.trim();
}

async function pid(h: LabHost, name: string): Promise<number> {
  return Number((await h.dockerOk(['inspect', '-f', '{{.State.Pid}}', name])).stdout.trim());
}

/** Keys under a prefix, read with etcdctl inside the underlay namespace (etcd's address is only reachable there). */
async function etcdKeys(prefix: string): Promise<string> {
  const r = await run('ip', ['netns', 'exec', ul.name, 'etcdctl', `--endpoints=${etcd.endpoint}`, 'get', '--prefix', '--keys-only', prefix], { env: { ETCDCTL_API: '3' } });
  if (r.code !== 0) throw new Error(`etcdctl: ${r.stderr}`);
  return r.stdout;
}

async function clusterId(): Promise<string> {
  return (await hosts[0].dockerOk(['network', 'inspect', '-f', '{{.Id}}', 'app'])).stdout.trim();
}

/** `bridge fdb` / `ip neigh` of the network's VXLAN device on a host, read inside weft's per-network namespace. */
async function vxlanState(h: LabHost, w: WeftProcess, cid: string): Promise<{ fdb: string; neigh: string }> {
  const id = cid.slice(0, 10);
  const ns = `${w.runDir}/netns/weft-${id}`;
  const fdb = await run('nsenter', [`--net=${ns}`, 'bridge', 'fdb', 'show', 'dev', `vx-${id}`]);
  const neigh = await run('nsenter', [`--net=${ns}`, 'ip', 'neigh', 'show', 'dev', `vx-${id}`]);
  return { fdb: fdb.stdout, neigh: neigh.stdout };
}

describe('multi-host overlay', () => {
  it('a network created on host 1 appears on hosts 2 and 3', async () => {
    await hosts[0].dockerOk(['network', 'create', '-d', 'weft', '--ipam-driver', 'weft', '--subnet', SUBNET, 'app']);
    for (const h of hosts.slice(1)) {
      await waitFor(async () => (await h.docker(['network', 'ls', '--format', '{{.Name}} {{.Driver}}'])).stdout.includes('app weft'),
        { timeoutMs: 15_000, what: `network app on ${h.name}` });
      const subnet = (await h.dockerOk(['network', 'inspect', '-f', '{{(index .IPAM.Config 0).Subnet}}', 'app'])).stdout.trim();
      expect(subnet).toBe(SUBNET);
    }
  });

  it('containers on three hosts ping each other in every direction, 1400-byte DF included', async () => {
    for (let i = 0; i < 3; i++) {
      await hosts[i].dockerOk(['run', '-d', '--name', `c${i + 1}`, '--network', 'app', ...(i === 2 ? ['--restart', 'always'] : []), 'busybox:local', 'sleep', '3600']);
    }
    const ips = await Promise.all(hosts.map((h, i) => containerIp(h, `c${i + 1}`)));
    expect(new Set(ips).size).toBe(3);
    for (let i = 0; i < 3; i++) {
      for (let j = 0; j < 3; j++) {
        if (i === j) continue;
        const r = await hosts[i].docker(['exec', `c${i + 1}`, 'ping', '-c', '1', '-W', '3', ips[j]]);
        expect(r.code, `c${i + 1} on ${hosts[i].name} -> ${ips[j]}: ${r.stdout}${r.stderr}`).toBe(0);
      }
    }
    // 1372 bytes of payload + 8 ICMP + 20 IP = a 1400-byte packet, not fragmented
    // (busybox's ping cannot set DF: run iputils' ping inside c1's namespace)
    const big = await run('nsenter', [`--net=/proc/${await pid(hosts[0], 'c1')}/ns/net`, 'ping', '-c', '1', '-W', '3', '-M', 'do', '-s', '1372', ips[1]]);
    expect(big.code, big.stdout + big.stderr).toBe(0);
  });

  it('UDP broadcast and multicast from host 1 reach a container on host 2', async () => {
    const [ip1, ip2] = [await containerIp(hosts[0], 'c1'), await containerIp(hosts[1], 'c2')];
    const [p1, p2] = [await pid(hosts[0], 'c1'), await pid(hosts[1], 'c2')];
    // Node runs inside each container's network namespace (the busybox image has no UDP tools that broadcast).
    const receiver = spawn('nsenter', [`--net=/proc/${p2}/ns/net`, process.execPath, '-e', `
      const s = require('dgram').createSocket({ type: 'udp4', reuseAddr: true });
      const got = new Set();
      s.on('message', (m) => { got.add(m.toString()); if (got.size === 2) { console.log([...got].sort().join(',')); process.exit(0); } });
      s.bind(5000, () => { s.addMembership('239.1.2.3', '${ip2}'); console.log('ready'); });
      setTimeout(() => { console.log('timeout:' + [...got].join(',')); process.exit(1); }, 20000);
    `], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    receiver.stdout.on('data', (d) => (out += d.toString()));
    const exited = new Promise<number>((r) => receiver.on('exit', (c) => r(c ?? -1)));
    await waitFor(() => out.includes('ready'), { timeoutMs: 10_000, what: 'receiver ready' });
    execFileSync('nsenter', [`--net=/proc/${p1}/ns/net`, process.execPath, '-e', `
      const s = require('dgram').createSocket('udp4');
      s.bind(0, '${ip1}', () => {
        s.setBroadcast(true); s.setMulticastInterface('${ip1}'); s.setMulticastTTL(2);
        let n = 0; const t = setInterval(() => {
          s.send('broadcast', 5000, '10.50.0.255'); s.send('multicast', 5000, '239.1.2.3');
          if (++n === 10) { clearInterval(t); s.close(); }
        }, 200);
      });
    `], { timeout: 15_000 });
    const code = await exited;
    expect(out.trim().split('\n').pop(), out).toBe('broadcast,multicast');
    expect(code).toBe(0);
  });

  it('containers on different weft networks cannot reach each other, even on shared hosts', async () => {
    await hosts[0].dockerOk(['network', 'create', '-d', 'weft', '--ipam-driver', 'weft', '--subnet', '10.51.0.0/24', 'other']);
    await waitFor(async () => (await hosts[1].docker(['network', 'inspect', 'other'])).code === 0, { timeoutMs: 15_000, what: 'network other on host 2' });
    await hosts[1].dockerOk(['run', '-d', '--name', 'o2', '--network', 'other', 'busybox:local', 'sleep', '3600']);
    const ip1 = await containerIp(hosts[0], 'c1');
    const r = await hosts[1].docker(['exec', 'o2', 'ping', '-c', '2', '-W', '1', ip1]);
    expect(r.code).not.toBe(0);
    // while the same host's container on app does reach it
    expect((await hosts[1].docker(['exec', 'c2', 'ping', '-c', '1', '-W', '3', ip1])).code).toBe(0);
  });

  it('-p publishes a container on host 2 to the underlay; host 3 reaches it there and over the overlay', async () => {
    const [h1, h2, h3] = hosts;
    await h2.dockerOk(['run', '-d', '--name', 'web', '--network', 'app', '-p', '18080:8080', 'busybox:local',
      'sh', '-c', 'mkdir -p /www && echo weft-web > /www/index.html && httpd -f -p 8080 -h /www']);
    const webIp = await containerIp(h2, 'web');
    // from another host's namespace, to host 2's underlay address: Docker's DNAT through docker_gwbridge
    const url = `http://${ipOf(h2)}:18080/`;
    let body = '';
    await waitFor(async () => {
      const r = await h1.exec(['curl', '-sS', '-m', '3', url], { timeoutMs: 10_000 });
      body = r.stdout.trim();
      return body === 'weft-web';
    }, { timeoutMs: 20_000, what: `${url} from ${h1.name} (last: ${body})` });
    // and from a container on host 3 over the overlay (busybox nc: the static busybox's wget crashes resolving)
    const r = await h3.docker(['exec', 'c3', 'sh', '-c', `printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 ${webIp} 8080`], { timeoutMs: 20_000 });
    await h2.dockerOk(['rm', '-f', 'web']);
    expect(r.stdout, r.stderr).toMatch(/^HTTP\/1\.[01] 200[\s\S]*weft-web/);
  });

  it('network connect and disconnect of a container on host 3 toward host 1', async () => {
    const [h1, , h3] = hosts;
    const ip1 = await containerIp(h1, 'c1');
    await h3.dockerOk(['run', '-d', '--name', 'late', 'busybox:local', 'sleep', '3600']);
    expect((await h3.docker(['exec', 'late', 'ping', '-c', '1', '-W', '1', ip1])).code).not.toBe(0);
    await h3.dockerOk(['network', 'connect', 'app', 'late']);
    const lateIp = await containerIp(h3, 'late');
    expect(lateIp).toMatch(/^10\.50\.0\./);
    await waitFor(async () => (await h3.docker(['exec', 'late', 'ping', '-c', '1', '-W', '2', ip1])).code === 0,
      { timeoutMs: 15_000, what: 'late to reach c1 after connect' });
    expect((await h1.docker(['exec', 'c1', 'ping', '-c', '1', '-W', '2', lateIp])).code).toBe(0);
    await h3.dockerOk(['network', 'disconnect', 'app', 'late']);
    expect((await h3.docker(['exec', 'late', 'ping', '-c', '1', '-W', '1', ip1])).code).not.toBe(0);
    // its endpoint left host 1's tables
    const cid = await clusterId();
    await waitFor(async () => !(await vxlanState(h1, wefts[0], cid)).neigh.includes(`${lateIp} `),
      { timeoutMs: 15_000, what: `${lateIp} to leave host 1's neighbour table` });
    await h3.dockerOk(['rm', '-f', 'late']);
  });

  it('600 concurrent address requests over three hosts give 600 distinct addresses', async () => {
    const pool = await wefts[0].call('IpamDriver.RequestPool', { AddressSpace: 'weft', Pool: '10.52.0.0/22', SubPool: '', Options: {}, V6: false });
    expect(pool.status).toBe(200);
    const poolId = (pool.json as { PoolID: string }).PoolID;
    const replies = await Promise.all(Array.from({ length: 600 }, (_, i) => wefts[i % 3].call('IpamDriver.RequestAddress', {
      PoolID: poolId, Address: '', Options: { 'com.docker.network.endpoint.macaddress': `02:00:00:00:${((i >> 8) & 255).toString(16).padStart(2, '0')}:${(i & 255).toString(16).padStart(2, '0')}` },
    }, 30_000)));
    const addrs = replies.map((r) => (r.json as { Address?: string }).Address);
    expect(replies.filter((r) => r.status !== 200).map((r) => r.text).slice(0, 3)).toEqual([]);
    expect(new Set(addrs).size).toBe(600);
    for (const [i, a] of addrs.entries()) await wefts[i % 3].call('IpamDriver.ReleaseAddress', { PoolID: poolId, Address: a!.split('/')[0] });
    await wefts[0].call('IpamDriver.ReleasePool', { PoolID: poolId });
  });

  it('an FDB or neighbour entry deleted by hand is restored by the reconcile', async () => {
    const cid = await clusterId();
    const id = cid.slice(0, 10);
    const ns = `${wefts[0].runDir}/netns/weft-${id}`;
    const mac2 = (await hosts[1].dockerOk(['inspect', '-f', '{{(index .NetworkSettings.Networks "app").MacAddress}}', 'c2'])).stdout.trim();
    const ip2 = await containerIp(hosts[1], 'c2');
    const before = await vxlanState(hosts[0], wefts[0], cid);
    expect(before.fdb).toContain(`${mac2} dst ${ipOf(hosts[1])}`);
    expect(before.neigh).toContain(`${ip2} lladdr ${mac2}`);
    await run('nsenter', [`--net=${ns}`, 'bridge', 'fdb', 'del', mac2, 'dev', `vx-${id}`, 'dst', ipOf(hosts[1]), 'self']);
    await run('nsenter', [`--net=${ns}`, 'ip', 'neigh', 'del', ip2, 'dev', `vx-${id}`]);
    expect((await vxlanState(hosts[0], wefts[0], cid)).fdb).not.toContain(`${mac2} dst`);
    await waitFor(async () => {
      const s = await vxlanState(hosts[0], wefts[0], cid);
      return s.fdb.includes(`${mac2} dst ${ipOf(hosts[1])}`) && s.neigh.includes(`${ip2} lladdr ${mac2}`);
    }, { timeoutMs: 15_000, what: 'the reconcile to restore the entries' });
  });

  it('a killed host drops out of the others\' tables; restarted, it is reachable again', { timeout: 180_000 }, async () => {
    const cid = await clusterId();
    const vtep3 = ipOf(hosts[2]);
    const oldIp3 = await containerIp(hosts[2], 'c3');
    for (const i of [0, 1]) expect((await vxlanState(hosts[i], wefts[i], cid)).fdb).toContain(`dst ${vtep3}`);
    wefts[2].kill('SIGKILL');
    await hosts[2].killDockerd();
    // lease TTL (3 s) plus a reconcile period (2 s), with slack
    for (const i of [0, 1]) {
      await waitFor(async () => !(await vxlanState(hosts[i], wefts[i], cid)).fdb.includes(`dst ${vtep3}`),
        { timeoutMs: 20_000, what: `host 3's entries to leave ${hosts[i].name}` });
      expect((await vxlanState(hosts[i], wefts[i], cid)).neigh).not.toContain(`${oldIp3} lladdr`);
    }
    // weft first: a dockerd that starts before its v1 plugin waits ~15 s per lookup
    await wefts[2].start();
    await hosts[2].startDockerd();
    const ip3 = await waitFor(async () => {
      const r = await hosts[2].docker(['inspect', '-f', '{{.State.Running}} {{(index .NetworkSettings.Networks "app").IPAddress}}', 'c3']);
      const [running, ip] = r.stdout.trim().split(' ');
      return running === 'true' && ip ? ip : undefined;
    }, { timeoutMs: 60_000, what: 'c3 to be restarted by its restart policy' });
    await waitFor(async () => (await hosts[0].docker(['exec', 'c1', 'ping', '-c', '1', '-W', '1', ip3])).code === 0,
      { timeoutMs: 20_000, what: 'c1 to reach the restarted c3' });
  });

  it('network rm while containers run elsewhere keeps the network; once they are gone it leaves every host', { timeout: 120_000 }, async () => {
    const cid = await clusterId();
    await hosts[0].dockerOk(['rm', '-f', 'c1']);
    await hosts[1].dockerOk(['rm', '-f', 'c2']);
    // Docker ignores a driver's DeleteNetwork error, so the rm itself succeeds
    // on host 2; weft keeps the network (c3 still uses it) and brings host 2's copy back.
    await hosts[1].docker(['network', 'rm', 'app']);
    await waitFor(async () => (await hosts[1].docker(['network', 'inspect', 'app'])).code === 0,
      { timeoutMs: 20_000, what: 'weft to recreate app on host 2' });
    expect(await waitFor(async () => /still has containers on wmh-h3/.test(wefts[1].logTail(200)) || undefined,
      { timeoutMs: 5_000, what: 'a log line naming host 3' })).toBe(true);
    await hosts[2].dockerOk(['rm', '-f', 'c3']);
    await hosts[1].dockerOk(['network', 'rm', 'app']);
    for (const h of hosts) {
      await waitFor(async () => (await h.docker(['network', 'inspect', 'app'])).code !== 0,
        { timeoutMs: 20_000, what: `app to disappear from ${h.name}` });
    }
    for (const w of wefts) {
      await waitFor(async () => !(await run('ls', [`${w.runDir}/netns`])).stdout.includes(`weft-${cid.slice(0, 10)}`),
        { timeoutMs: 10_000, what: 'the network namespace of app to be removed' });
    }
  });

  it('a host that is down does not keep a removed network; when it returns it drops its copy', { timeout: 180_000 }, async () => {
    const briefId = (await hosts[0].dockerOk(['network', 'create', '-d', 'weft', '--ipam-driver', 'weft', '--subnet', '10.53.0.0/24', 'brief'])).stdout.trim();
    for (const h of hosts.slice(1)) {
      await waitFor(async () => (await h.docker(['network', 'inspect', 'brief'])).code === 0, { timeoutMs: 15_000, what: `brief on ${h.name}` });
    }
    wefts[2].kill('SIGKILL');
    await hosts[2].killDockerd();
    // wait until host 3's lease has expired (TTL 3 s): it leaves the hosts list
    await waitFor(async () => !(await etcdKeys('/weft/v1/hosts/')).includes('wmh-h3'), { timeoutMs: 20_000, what: "host 3's lease to expire" });
    await hosts[0].dockerOk(['network', 'rm', 'brief']);
    await waitFor(async () => (await hosts[1].docker(['network', 'inspect', 'brief'])).code !== 0, { timeoutMs: 20_000, what: 'brief to leave host 2' });
    await waitFor(async () => !(await etcdKeys('/weft/v1/pools/')).includes('10.53.0.0_24'),
      { timeoutMs: 20_000, what: 'the pool of brief to be released although host 3 still has a copy' });
    await wefts[2].start();
    await hosts[2].startDockerd();
    await waitFor(async () => (await hosts[2].docker(['network', 'inspect', 'brief'])).code !== 0, { timeoutMs: 30_000, what: 'host 3 to drop its copy of brief' });
    await waitFor(async () => !(await run('ls', [`${wefts[2].runDir}/netns`])).stdout.includes(`weft-${briefId.slice(0, 10)}`),
      { timeoutMs: 10_000, what: "brief's namespace to leave host 3" });
  });

  it('a host that is down but had containers keeps the network and their addresses', { timeout: 180_000 }, async () => {
    await hosts[0].dockerOk(['network', 'create', '-d', 'weft', '--ipam-driver', 'weft', '--subnet', '10.54.0.0/24', 'kept']);
    await waitFor(async () => (await hosts[2].docker(['network', 'inspect', 'kept'])).code === 0, { timeoutMs: 15_000, what: 'kept on host 3' });
    await hosts[2].dockerOk(['run', '-d', '--name', 'k3', '--network', 'kept', 'busybox:local', 'sleep', '3600']);
    wefts[2].kill('SIGKILL');
    await hosts[2].killDockerd();
    await waitFor(async () => !(await etcdKeys('/weft/v1/hosts/')).includes('wmh-h3'), { timeoutMs: 20_000, what: "host 3's lease to expire" });
    await hosts[0].docker(['network', 'rm', 'kept']);
    await hosts[1].docker(['network', 'rm', 'kept']);
    // k3's address stays reserved and the network stays in the cluster (weft brings the copies back)
    await waitFor(async () => (await hosts[0].docker(['network', 'inspect', 'kept'])).code === 0, { timeoutMs: 20_000, what: 'kept to come back on host 1' });
    expect(await etcdKeys('/weft/v1/addrs/10.54.0.0_24/')).toMatch(/10\.54\.0\.\d+/);
    expect(wefts[0].logTail(300)).toMatch(/still has containers on wmh-h3/);
    await wefts[2].start();
    await hosts[2].startDockerd();
  });
});
