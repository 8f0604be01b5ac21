// Issue 12 on two real hosts over one etcd: a CreateNetwork killed right
// after its transaction leaves no VNI (nor network, nor pool) behind once the
// collector has run, and `docker network rm` on one host racing `docker run`
// on the other never leaves an endpoint without its network or the reverse.
import { spawn } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startEtcd } from '../lab/etcd';
import { keepLogs } from '../lab/logs';
import {
  cleanupLabLeftovers, createUnderlay, ensureBusyboxImage, run, startHost, startWeft, waitFor,
  type LabHost, type Underlay, type WeftProcess,
} from '../lab/host';
import { pluginCall, WEFT_CLI } from '../lab/weft';

const PREFIX = 'w12n-';
let ul: Underlay;
let etcd: Awaited<ReturnType<typeof startEtcd>>;
const hosts: LabHost[] = [];
const wefts: WeftProcess[] = [];
let etcdUrl = '';

const ipOf = (h: LabHost) => h.underlay!.ports.get(h.name)!.address.split('/')[0];
const weftArgs = (h: LabHost) => ['--store', etcdUrl, '--advertise-addr', ipOf(h), '--lease-ttl', '3', '--reconcile-interval', '1', '--gc-grace', '3'];

beforeAll(async () => {
  await cleanupLabLeftovers(PREFIX);
  ul = await createUnderlay(`${PREFIX}ul`, '203.0.113.0/24');
  const etcdIp = ul.bridgeAddress.split('/')[0];
  etcd = await startEtcd({ name: 'w12n', netns: ul.name, clientHost: etcdIp });
  etcdUrl = `etcd://${etcdIp}:${new URL(etcd.endpoint).port}`;
  for (let i = 1; i <= 2; i++) {
    const h = await startHost({ name: `${PREFIX}h${i}`, underlay: ul });
    hosts.push(h);
    await ensureBusyboxImage(h);
    wefts.push(await startWeft(h, { args: weftArgs(h), logLevel: 'info' }));
  }
}, 300_000);

afterAll(async () => {
  keepLogs(hosts);
  for (const h of hosts) await h.destroy().catch(() => undefined);
  await etcd?.stop().catch(() => undefined);
  await ul?.destroy().catch(() => undefined);
  await cleanupLabLeftovers(PREFIX);
}, 180_000);

/** Every key and value under /weft/v1/, read with etcdctl inside the underlay namespace. */
async function dump(): Promise<Map<string, string>> {
  const r = await run('ip', ['netns', 'exec', ul.name, 'etcdctl', `--endpoints=${etcd.endpoint}`, 'get', '--prefix', '/weft/v1/'], { env: { ETCDCTL_API: '3' } });
  if (r.code !== 0) throw new Error(`etcdctl: ${r.stderr}`);
  const lines = r.stdout.split('\n');
  const out = new Map<string, string>();
  for (let i = 0; i + 1 < lines.length; i += 2) if (lines[i]) out.set(lines[i], lines[i + 1]);
  return out;
}

/** What must always hold once the agents are done: every endpoint, binding and VNI claim belongs to a network record that exists. */
function orphans(kv: Map<string, string>): string[] {
  const nets = new Set([...kv.keys()].filter((k) => k.startsWith('/weft/v1/networks/')).map((k) => k.split('/')[4]));
  const out: string[] = [];
  for (const [k, v] of kv) {
    const p = k.split('/');
    if ((p[3] === 'endpoints' || p[3] === 'bindings') && !nets.has(p[4])) out.push(k);
    if (p[3] === 'vnis' && !nets.has((JSON.parse(v) as { network: string }).network)) out.push(k);
  }
  for (const n of nets) {
    const rec = JSON.parse(kv.get(`/weft/v1/networks/${n}`)!) as { vni: number };
    if (!kv.has(`/weft/v1/vnis/${rec.vni}`)) out.push(`network ${n} without its VNI claim`);
  }
  return out;
}

describe('issue 12: VNI collection, network rm racing docker run', () => {
  it('a CreateNetwork killed right after its transaction leaves no VNI, network or pool once the collector has run', { timeout: 180_000 }, async () => {
    await wefts[0].stop();
    wefts[0] = await startWeft(hosts[0], { args: weftArgs(hosts[0]), logLevel: 'info', env: { WEFT_FAULT_POINT: 'createNetwork:after-record' } });
    const creating = hosts[0].docker(['network', 'create', '-d', 'weft', '--ipam-driver', 'weft', '--subnet', '10.74.0.0/24', 'late'], { timeoutMs: 90_000 });
    expect(await wefts[0].waitExit(30_000)).toBe(true);
    // the record and its VNI are in the store, no host has the network
    const atCrash = await dump();
    expect([...atCrash.keys()].some((k) => k.startsWith('/weft/v1/vnis/'))).toBe(true);
    await wefts[0].stop();
    wefts[0] = await startWeft(hosts[0], { args: weftArgs(hosts[0]), logLevel: 'info' });
    const created = await creating;
    if (created.code === 0) await hosts[0].dockerOk(['network', 'rm', 'late']);
    await waitFor(async () => {
      const kv = await dump();
      const left = [...kv.keys()].filter((k) => /\/(vnis|networks|pools)\//.test(k) || k.includes('10.74.0.0_24'));
      if (left.length) throw new Error(`left: ${left.join(', ')}`);
      return true;
    }, { timeoutMs: 30_000, what: 'the collector to remove what the killed CreateNetwork left' });
    expect((await hosts[0].docker(['network', 'inspect', 'late'])).code).not.toBe(0);
    // and the subnet can be used again
    await hosts[0].dockerOk(['network', 'create', '-d', 'weft', '--ipam-driver', 'weft', '--subnet', '10.74.0.0/24', 'late']);
    await hosts[0].dockerOk(['network', 'rm', 'late']);
  });

  it('docker network rm on host 1 racing docker run on host 2, 8 times: never an endpoint without its network, nor the reverse', { timeout: 600_000 }, async () => {
    const outcomes: string[] = [];
    for (let i = 0; i < 8; i++) {
      const net = `race${i}`;
      await hosts[0].dockerOk(['network', 'create', '-d', 'weft', '--ipam-driver', 'weft', '--subnet', `10.75.${i}.0/24`, net]);
      await waitFor(async () => (await hosts[1].docker(['network', 'inspect', net])).code === 0, { timeoutMs: 20_000, what: `${net} on host 2` });
      const cid = (await hosts[0].dockerOk(['network', 'inspect', '-f', '{{.Id}}', net])).stdout.trim();
      // one after the other by a varying few milliseconds, in both orders
      const delay = (ms: number) => new Promise((r) => setTimeout(r, ms));
      const [rm, runc] = await Promise.all([
        (async () => { await delay(i % 2 ? 0 : 5 * i); return hosts[0].docker(['network', 'rm', net], { timeoutMs: 60_000 }); })(),
        (async () => { await delay(i % 2 ? 5 * i : 0); return hosts[1].docker(['run', '-d', '--name', `x${i}`, '--network', net, 'busybox:local', 'sleep', '3600'], { timeoutMs: 90_000 }); })(),
      ]);
      const running = (await hosts[1].docker(['inspect', '-f', '{{.State.Running}}', `x${i}`])).stdout.trim() === 'true';
      outcomes.push(`${net}: rm ${rm.code === 0 ? 'ok' : 'failed'}, run ${runc.code === 0 ? 'ok' : `failed (${runc.stderr.trim().split('\n').pop()})`}`);
      // once the agents are done: consistent store, and Docker agrees with it
      await waitFor(async () => {
        const kv = await dump();
        const bad = orphans(kv);
        if (bad.length) throw new Error(`orphans: ${bad.join(', ')}`);
        if (running) {
          // the container is up: its network exists in the cluster and on both hosts, with its endpoint
          const copies = await Promise.all(hosts.map(async (h) => (await h.docker(['network', 'inspect', net])).code === 0));
          if (copies.includes(false)) throw new Error(`${net} missing on a host while x${i} runs`);
          if (!kv.has(`/weft/v1/networks/${cid}`)) throw new Error(`no network record for ${net} while x${i} runs`);
          if (![...kv.keys()].some((k) => k.startsWith(`/weft/v1/endpoints/${cid}/`))) throw new Error(`no endpoint record for x${i}`);
        } else {
          // no container: the network is gone everywhere
          const copies = await Promise.all(hosts.map(async (h) => (await h.docker(['network', 'inspect', net])).code === 0));
          if (copies.includes(true)) throw new Error(`${net} still on a host`);
          if (kv.has(`/weft/v1/networks/${cid}`)) throw new Error(`${net} still in the cluster`);
          if ([...kv.keys()].some((k) => k.includes(`10.75.${i}.0_24`))) throw new Error(`pool of ${net} still there`);
        }
        return true;
      }, { timeoutMs: 60_000, intervalMs: 500, what: `the cluster to settle after round ${i}` });
      await hosts[1].docker(['rm', '-f', `x${i}`]);
      for (const h of hosts) await h.docker(['network', 'rm', net]);
      await waitFor(async () => orphans(await dump()).length === 0 && !(await dump()).has(`/weft/v1/pools/10.75.${i}.0_24`),
        { timeoutMs: 60_000, what: `round ${i} cleaned up` });
    }
    process.stdout.write(`[w12n] ${outcomes.join('; ')}\n`);
  });
});

describe('issue 12: two wefts on one embedded store', () => {
  it('the second, in another PID namespace than the first, is refused with a clear error; the store stays intact', { timeout: 120_000 }, async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'w12n-store-'));
    const serveArgs = (name: string) => [WEFT_CLI, 'serve', '--state-dir', path.join(dir, 'state'), '--run-dir', path.join(dir, 'run'),
      '--socket', path.join(dir, `${name}.sock`), '--docker-host', 'unix:///nonexistent/docker.sock', '--dns-addr', 'off', '--host-name', 'w12n-solo'];
    // the first weft is PID 1 of a PID namespace of its own, as the managed plugin is
    const first = spawn('unshare', ['--pid', '--fork', '--kill-child', '--mount-proc', process.execPath, ...serveArgs('first')], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    first.stdout.on('data', (d) => (out += d));
    first.stderr.on('data', (d) => (out += d));
    try {
      await waitFor(() => out.includes('serving the plugin API'), { timeoutMs: 20_000, what: `the first weft to serve: ${out}` });
      // it writes a network's worth of state through its plugin API
      const pool = await pluginCall(path.join(dir, 'first.sock'), 'IpamDriver.RequestPool', { AddressSpace: 'weft', Pool: '10.76.0.0/24', SubPool: '', Options: {}, V6: false });
      expect(pool.status).toBe(200);
      const second = await run(process.execPath, serveArgs('second'), { timeoutMs: 30_000 });
      expect(second.code, second.stdout + second.stderr).toBe(1);
      expect(second.stderr).toMatch(/the store in \S+ is in use by another weft process \(pid 1 in another PID namespace \(pid:\[\d+\]\)/);
      expect(second.stderr).toContain('stop that process first, or give this one another state directory');
      expect(fs.existsSync(path.join(dir, 'second.sock'))).toBe(false);
    } finally {
      first.kill('SIGKILL');
      await new Promise((r) => first.on('close', r));
    }
    // the first is gone (killed, no clean-up): a weft opens the store at once, and finds the pool
    const third = spawn(process.execPath, serveArgs('third'), { stdio: ['ignore', 'pipe', 'pipe'] });
    let out3 = '';
    third.stdout.on('data', (d) => (out3 += d));
    third.stderr.on('data', (d) => (out3 += d));
    try {
      await waitFor(() => out3.includes('serving the plugin API'), { timeoutMs: 20_000, what: `a weft to open the store after the holder died: ${out3}` });
      // the pool the first weft made is there: an overlapping one is refused, naming it
      const overlap = await pluginCall(path.join(dir, 'third.sock'), 'IpamDriver.RequestPool', { AddressSpace: 'weft', Pool: '10.76.0.0/25', SubPool: '', Options: {}, V6: false });
      expect(overlap.status).not.toBe(200);
      expect(overlap.text).toContain('overlaps 10.76.0.0/24');
    } finally {
      third.kill('SIGTERM');
      await new Promise((r) => third.on('close', r));
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

