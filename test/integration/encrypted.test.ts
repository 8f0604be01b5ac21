// Encrypted networks (issue 13) end to end: lab hosts with their own dockerd
// and weft on etcd, real wireguard-go (this kernel has no WireGuard), an
// encrypted network next to a plain one. Two hosts first, then a third.
// Runs in order; every sub-test builds on the state before it.
import { spawn, type ChildProcess } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { StatusReport } from '../../src/ops/types';
import { killAndWaitSync, pidsInNetns } from '../lab/cleanup';
import { startEtcd } from '../lab/etcd';
import { keepLogs, LOG_KEEP_DIR } from '../lab/logs';
import {
  cleanupLabLeftovers, createUnderlay, ensureBusyboxImage, LAB_ROOT, run, runOk, startHost, startWeft, waitFor,
  type LabHost, type RunResult, type Underlay, type WeftProcess,
} from '../lab/host';
import { WEFT_CLI } from '../lab/weft';

const PREFIX = 'w13e-';
const DNS = '169.254.53.53';
const SEC = '10.61.0.0/24';
const PLAIN = '10.62.0.0/24';
const TUNNELS = '198.51.100.0/24';
const WG_PORT = 51820;
let ul: Underlay;
let etcd: Awaited<ReturnType<typeof startEtcd>>;
let etcdIp = '';
let etcdUrl = '';
const hosts: LabHost[] = [];
const wefts: WeftProcess[] = [];
/** Everything weft printed to operators in this test (checked for private keys at the end). */
const outputs: string[] = [];
/** Every private key any host had (before and after rotation). */
const privateKeys = new Set<string>();

const ipOf = (h: LabHost) => h.ip!;
const ifnameOf = (i: number) => `w13e${i + 1}`;
const keyFileOf = (i: number) => path.join(wefts[i].stateDir, 'wireguard', 'private.key');

function weftArgs(i: number, h: LabHost): string[] {
  return [
    '--store', etcdUrl, '--advertise-addr', ipOf(h), '--lease-ttl', '3', '--reconcile-interval', '2', '--gc-grace', '5',
    '--dns-forward', 'off', '--wg-interface', ifnameOf(i), '--wg-subnet', TUNNELS, '--wg-port', String(WG_PORT),
    '--metrics-addr', '127.0.0.1:9464',
  ];
}

function hostFlags(i: number): string[] {
  const h = hosts[i];
  const w = wefts[i];
  return [
    '--socket', w.socket, '--state-dir', w.stateDir, '--run-dir', w.runDir, '--host-name', h.name,
    '--docker-host', h.dockerHost, '--store', etcdUrl, '--advertise-addr', ipOf(h),
    '--wg-interface', ifnameOf(i), '--wg-subnet', TUNNELS, '--wg-port', String(WG_PORT),
  ];
}

async function weft(i: number, args: string[]): Promise<RunResult> {
  const r = await run('ip', ['netns', 'exec', hosts[i].name, process.execPath, WEFT_CLI, ...args, ...hostFlags(i)], { timeoutMs: 90_000 });
  outputs.push(r.stdout, r.stderr);
  fs.mkdirSync(LOG_KEEP_DIR, { recursive: true });
  fs.appendFileSync(path.join(LOG_KEEP_DIR, `${PREFIX}commands.txt`), `\n$ [${hosts[i].name}] weft ${args.join(' ')}\n(exit ${r.code})\n${r.stdout}${r.stderr}`);
  return r;
}

async function status(i: number): Promise<StatusReport> {
  const r = await weft(i, ['status', '--json']);
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout) as StatusReport;
}

async function addHost(i: number): Promise<void> {
  const h = await startHost({ name: `${PREFIX}h${i + 1}`, underlay: ul, daemonConfig: { dns: [DNS] } });
  hosts[i] = h;
  await ensureBusyboxImage(h);
  wefts[i] = await startWeft(h, { args: weftArgs(i, h) });
  await waitFor(async () => (await status(i)).wireguard?.ready || undefined, { timeoutMs: 30_000, what: `WireGuard on ${h.name}` });
  privateKeys.add(fs.readFileSync(keyFileOf(i), 'utf8').trim());
}

async function etcdctl(args: string[]): Promise<string> {
  const r = await run('ip', ['netns', 'exec', ul.name, 'etcdctl', `--endpoints=${etcd.endpoint}`, ...args], { env: { ETCDCTL_API: '3' } });
  if (r.code !== 0) throw new Error(`etcdctl ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

/** host name -> its published WireGuard public key, from the store */
async function storeKeys(): Promise<Map<string, string>> {
  const lines = (await etcdctl(['get', '--prefix', '/weft/v1/hosts/'])).split('\n');
  const out = new Map<string, string>();
  for (let i = 0; i + 1 < lines.length; i += 2) {
    const name = lines[i].split('/').pop()!;
    const rec = JSON.parse(lines[i + 1]) as { wg?: { publicKey: string } };
    if (rec.wg) out.set(name, rec.wg.publicKey);
  }
  return out;
}

/** `wg show IF dump` of host i: its own public key and its peers' keys. */
async function wgDump(i: number): Promise<{ publicKey: string; peers: string[] }> {
  const r = await runOk('wg', ['show', ifnameOf(i), 'dump']);
  const [iface, ...peers] = r.stdout.trim().split('\n').map((l) => l.split('\t'));
  return { publicKey: iface[1], peers: peers.map((p) => p[0]).sort() };
}

/** Store and devices agree: each live host's device holds its published key and exactly the other live hosts' keys. */
async function peersConsistent(live: number[]): Promise<string | undefined> {
  const published = await storeKeys();
  for (const i of live) {
    const name = hosts[i].name;
    if (!published.has(name)) return `${name} publishes no key`;
    const d = await wgDump(i);
    if (d.publicKey !== published.get(name)) return `${name}'s device has key ${d.publicKey}, the store ${published.get(name)}`;
    const want = live.filter((j) => j !== i).map((j) => published.get(hosts[j].name)!).sort();
    if (JSON.stringify(d.peers) !== JSON.stringify(want)) return `${name}'s peers ${d.peers.join(',')} instead of ${want.join(',')}`;
  }
  return undefined;
}

/** Waits until peersConsistent(live) holds; on time-out the error says what still differed. */
async function waitConsistent(live: number[], opts: { timeoutMs: number; what: string }): Promise<void> {
  await waitFor(async () => {
    const differs = await peersConsistent(live);
    if (differs) throw new Error(differs);
    return true;
  }, opts);
}

async function containerIp(i: number, name: string, network: string): Promise<string> {
  return (await hosts[i].dockerOk(['inspect', '-f', `{{(index .NetworkSettings.Networks "${network}").IPAddress}}`, name])).stdout.trim();
}
async function containerMac(i: number, name: string, network: string): Promise<string> {
  return (await hosts[i].dockerOk(['inspect', '-f', `{{(index .NetworkSettings.Networks "${network}").MacAddress}}`, name])).stdout.trim();
}
async function pidOf(i: number, name: string): Promise<number> {
  return Number((await hosts[i].dockerOk(['inspect', '-f', '{{.State.Pid}}', name])).stdout.trim());
}

/** node inside a container's network namespace (the busybox image has no UDP sender or hash tool). */
function nodeIn(pid: number, js: string): ChildProcess {
  return spawn('nsenter', [`--net=/proc/${pid}/ns/net`, process.execPath, '-e', js], { stdio: ['ignore', 'pipe', 'pipe'] });
}

function collect(c: ChildProcess): { out: () => string; exit: Promise<number> } {
  let out = '';
  c.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  c.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  return { out: () => out, exit: new Promise((r) => c.on('exit', (code) => r(code ?? -1))) };
}

/** A UDP and a TCP listener in a container that print what they receive. */
async function listen(pid: number, ip: string): Promise<{ out: () => string; stop: () => void }> {
  const c = nodeIn(pid, `
    const dgram = require('dgram'), net = require('net');
    dgram.createSocket('udp4').on('message', (m) => console.log('udp:' + m.toString())).bind(9999, '${ip}');
    net.createServer((s) => s.on('data', (d) => console.log('tcp:' + d.toString()))).listen(9998, '${ip}', () => console.log('ready'));
    setTimeout(() => process.exit(0), 120000);
  `);
  const r = collect(c);
  await waitFor(() => r.out().includes('ready'), { timeoutMs: 10_000, what: 'listener ready' });
  return { out: r.out, stop: () => c.kill('SIGKILL') };
}

async function sendMarker(pid: number, to: string, marker: string): Promise<void> {
  const c = nodeIn(pid, `
    const dgram = require('dgram'), net = require('net');
    const u = dgram.createSocket('udp4');
    let n = 0; const t = setInterval(() => { u.send('${marker}-udp', 9999, '${to}'); if (++n === 3) { clearInterval(t); u.close(); } }, 100);
    const s = net.connect(9998, '${to}', () => { s.end('${marker}-tcp'); });
    s.on('close', () => setTimeout(() => process.exit(0), 400));
    setTimeout(() => process.exit(1), 10000);
  `);
  const r = collect(c);
  expect(await r.exit, r.out()).toBe(0);
}

interface Capture { file: string; stop: () => Promise<void> }

/** tcpdump on every port of the underlay bridge (a capture on the bridge itself misses what it forwards); etcd's traffic left out. */
async function captureUnderlay(name: string): Promise<Capture> {
  const file = path.join(LAB_ROOT, `${PREFIX}${name}.pcap`);
  const c = spawn('ip', ['netns', 'exec', ul.name, 'tcpdump', '-i', 'any', '--immediate-mode', '-U', '-s', '0', '-w', file, 'not', 'host', etcdIp], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  c.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<void>((r) => c.on('exit', () => r()));
  await waitFor(() => err.includes('listening on'), { timeoutMs: 10_000, what: `tcpdump on the underlay (${err})` });
  return {
    file,
    stop: async () => {
      // what the kernel holds for tcpdump but it has not read yet is lost at SIGINT: let it catch up
      await new Promise((r) => setTimeout(r, 500));
      c.kill('SIGINT');
      await exited;
    },
  };
}

/** Packets between two hosts' underlay addresses, as tcpdump prints them. */
async function linesBetweenHosts(file: string): Promise<string[]> {
  const r = await runOk('tcpdump', ['-nn', '-r', file, 'ip']);
  const addrs = hosts.filter(Boolean).map(ipOf);
  return r.stdout.split('\n').filter((l) => {
    const m = /IP (\d+\.\d+\.\d+\.\d+)\.?\d* > (\d+\.\d+\.\d+\.\d+)/.exec(l);
    return m && addrs.includes(m[1]) && addrs.includes(m[2]);
  });
}

function killWireguardGo(i: number): void {
  const pidFile = path.join(wefts[i].runDir, 'wireguard', `${ifnameOf(i)}.pid`);
  try {
    process.kill(Number(fs.readFileSync(pidFile, 'utf8').trim()), 'SIGKILL');
  } catch {
    // not running
  }
}

beforeAll(async () => {
  await cleanupLabLeftovers(PREFIX);
  ul = await createUnderlay(`${PREFIX}ul`, '192.0.2.0/24');
  etcdIp = ul.bridgeAddress.split('/')[0];
  etcd = await startEtcd({ name: 'w13e', netns: ul.name, clientHost: etcdIp });
  etcdUrl = `etcd://${etcdIp}:${new URL(etcd.endpoint).port}`;
  await addHost(0);
  await addHost(1);
}, 300_000);

afterAll(async () => {
  keepLogs(hosts.filter(Boolean));
  for (const h of hosts.filter(Boolean)) await h.destroy().catch(() => undefined);
  await etcd?.stop().catch(() => undefined);
  await ul?.destroy().catch(() => undefined);
  for (let i = 0; i < 3; i++) fs.rmSync(`/var/run/wireguard/${ifnameOf(i)}.sock`, { force: true });
  fs.rmSync('/var/run/wireguard/w13erg.sock', { force: true });
  await cleanupLabLeftovers(PREFIX);
}, 180_000);

describe('encrypted networks', () => {
  it('each weft says which WireGuard it uses; the key file is 0600; the store holds public keys only', async () => {
    for (let i = 0; i < 2; i++) {
      expect(wefts[i].logTail(400)).toMatch(/WireGuard up: wireguard-go [^"]*\(userspace\)/);
      expect(fs.statSync(keyFileOf(i)).mode & 0o777).toBe(0o600);
      const s = await status(i);
      expect(s.wireguard?.kind).toBe('userspace');
      expect(s.wireguard?.keyFileMode).toBe('600');
    }
    expect([...(await storeKeys()).keys()].sort()).toEqual([hosts[0].name, hosts[1].name]);
    await waitConsistent([0, 1], { timeoutMs: 15_000, what: 'peers from the store' });
  });

  it('two hosts: an encrypted network (MTU 1390 by default) and a plain one; ping by IP and by name', async () => {
    await hosts[0].dockerOk(['network', 'create', '-d', 'weft', '--ipam-driver', 'weft', '--opt', 'encrypted', '--subnet', SEC, 'sec']);
    await hosts[0].dockerOk(['network', 'create', '-d', 'weft', '--ipam-driver', 'weft', '--subnet', PLAIN, 'plain']);
    await waitFor(async () => (await hosts[1].docker(['network', 'inspect', 'sec'])).code === 0 && (await hosts[1].docker(['network', 'inspect', 'plain'])).code === 0,
      { timeoutMs: 20_000, what: 'both networks on host 2' });
    const nets = JSON.parse((await weft(0, ['networks', '--json'])).stdout) as { name: string; mtu: number; options: Record<string, string> }[];
    expect(nets.find((n) => n.name === 'sec')?.mtu).toBe(1390);
    expect(nets.find((n) => n.name === 'plain')?.mtu).toBe(1450);
    for (let i = 0; i < 2; i++) {
      await hosts[i].dockerOk(['run', '-d', '--name', `s${i + 1}`, '--network', 'sec', 'busybox:local', 'sleep', '3600']);
      await hosts[i].dockerOk(['run', '-d', '--name', `p${i + 1}`, '--network', 'plain', 'busybox:local', 'sleep', '3600']);
    }
    const s2 = await containerIp(1, 's2', 'sec');
    for (const [i, c, target] of [[0, 's1', s2], [1, 's2', await containerIp(0, 's1', 'sec')]] as const) {
      const r = await hosts[i].docker(['exec', c, 'ping', '-c', '2', '-W', '3', target]);
      expect(r.code, r.stdout + r.stderr).toBe(0);
    }
    // full-size packets (1390 - 28 bytes of ICMP payload), not fragmented
    const big = await run('nsenter', [`--net=/proc/${await pidOf(0, 's1')}/ns/net`, 'ping', '-c', '1', '-W', '3', '-M', 'do', '-s', '1362', s2]);
    expect(big.code, big.stdout + big.stderr).toBe(0);
    const byName = await hosts[0].docker(['exec', 's1', 'ping', '-c', '1', '-W', '3', 's2']);
    expect(byName.code, byName.stdout + byName.stderr).toBe(0);
    expect(byName.stdout).toContain(s2);
  });

  it('a TCP stream of 100 MiB arrives intact across the encrypted network', { timeout: 180_000 }, async () => {
    const dst = await containerIp(1, 's2', 'sec');
    const rx = collect(nodeIn(await pidOf(1, 's2'), `
      const h = require('crypto').createHash('sha256'); let n = 0;
      require('net').createServer((c) => { c.on('data', (d) => { h.update(d); n += d.length; }); c.on('end', () => { console.log('got ' + n + ' ' + h.digest('hex')); process.exit(0); }); })
        .listen(7000, '${dst}', () => console.log('ready'));
      setTimeout(() => { console.log('timeout ' + n); process.exit(1); }, 150000);
    `));
    await waitFor(() => rx.out().includes('ready'), { timeoutMs: 10_000, what: 'receiver' });
    const tx = collect(nodeIn(await pidOf(0, 's1'), `
      const crypto = require('crypto'); const h = crypto.createHash('sha256'); const total = 100 * 1024 * 1024; let sent = 0;
      const c = require('net').connect(7000, '${dst}', () => {
        const pump = () => { while (sent < total) { const b = crypto.randomBytes(65536); h.update(b); sent += b.length; if (!c.write(b)) return c.once('drain', pump); } c.end(() => console.log('sent ' + sent + ' ' + h.digest('hex'))); };
        pump();
      });
      c.on('close', () => process.exit(0));
      setTimeout(() => process.exit(1), 150000);
    `));
    expect(await tx.exit, tx.out()).toBe(0);
    expect(await rx.exit, rx.out()).toBe(0);
    const sent = /sent (\d+) ([0-9a-f]{64})/.exec(tx.out());
    const got = /got (\d+) ([0-9a-f]{64})/.exec(rx.out());
    expect(sent?.[1]).toBe(String(100 * 1024 * 1024));
    expect(got?.[1]).toBe(sent?.[1]);
    expect(got?.[2]).toBe(sent?.[2]);
  });

  it('on the underlay: the marker shows for the plain network, never for the encrypted one, whose packets are all WireGuard', async () => {
    const marker = `W13MARK${Date.now().toString(36)}`;
    // plain network
    const p2 = await listen(await pidOf(1, 'p2'), await containerIp(1, 'p2', 'plain'));
    let cap = await captureUnderlay('plain');
    await sendMarker(await pidOf(0, 'p1'), await containerIp(1, 'p2', 'plain'), `${marker}P`);
    await waitFor(() => p2.out().includes(`${marker}P-tcp`) && p2.out().includes(`${marker}P-udp`), { timeoutMs: 10_000, what: 'the plain marker at p2' });
    await waitFor(() => fs.readFileSync(cap.file).includes(`${marker}P-tcp`), { timeoutMs: 10_000, what: 'the plain marker in the capture' }).catch(() => undefined);
    await cap.stop();
    p2.stop();
    expect(fs.readFileSync(cap.file).includes(`${marker}P-udp`)).toBe(true);
    expect(fs.readFileSync(cap.file).includes(`${marker}P-tcp`)).toBe(true);
    // encrypted network
    const s2 = await listen(await pidOf(1, 's2'), await containerIp(1, 's2', 'sec'));
    cap = await captureUnderlay('sec');
    await sendMarker(await pidOf(0, 's1'), await containerIp(1, 's2', 'sec'), `${marker}S`);
    await waitFor(() => s2.out().includes(`${marker}S-tcp`) && s2.out().includes(`${marker}S-udp`), { timeoutMs: 10_000, what: 'the encrypted marker at s2' });
    await cap.stop();
    s2.stop();
    const raw = fs.readFileSync(cap.file);
    expect(raw.includes(marker)).toBe(false);
    const lines = await linesBetweenHosts(cap.file);
    expect(lines.length).toBeGreaterThan(4);
    const notWg = lines.filter((l) => !new RegExp(`\\.${WG_PORT} > [\\d.]+\\.${WG_PORT}: `).test(l));
    expect(notWg, notWg.slice(0, 5).join('\n')).toEqual([]);
  });

  it('fail closed: while wireguard-go is killed and started again, nothing of the encrypted network crosses the underlay in clear', { timeout: 120_000 }, async () => {
    const marker = `W13GAP${Date.now().toString(36)}`;
    const s2Ip = await containerIp(1, 's2', 'sec');
    const s2 = await listen(await pidOf(1, 's2'), s2Ip);
    const cap = await captureUnderlay('gap');
    // s1 sends a numbered datagram every 20 ms the whole time
    const sender = nodeIn(await pidOf(0, 's1'), `
      const u = require('dgram').createSocket('udp4'); let n = 0;
      setInterval(() => u.send('${marker}-' + (n++), 9999, '${s2Ip}'), 20);
      setTimeout(() => process.exit(0), 60000);
    `);
    const tx = collect(sender);
    try {
      await waitFor(() => s2.out().includes(`${marker}-`), { timeoutMs: 10_000, what: 'the stream at s2' });
      const st = await status(1);
      const oldPid = st.wireguard!.pid!;
      process.kill(oldPid, 'SIGKILL');
      // weft on host 2 starts it again; the stream resumes
      await waitFor(async () => ((await status(1)).wireguard?.pid ?? oldPid) !== oldPid || undefined, { timeoutMs: 20_000, what: 'wireguard-go restarted on host 2' });
      const seenBefore = s2.out().length;
      await waitFor(() => s2.out().slice(seenBefore).includes(`${marker}-`), { timeoutMs: 20_000, what: 'the stream to resume at s2' });
    } finally {
      sender.kill('SIGKILL');
      await tx.exit;
      await cap.stop();
      s2.stop();
    }
    expect(fs.readFileSync(cap.file).includes(marker)).toBe(false);
    // WireGuard packets only; while host 2 had no WireGuard, its kernel answered host 1's with
    // "port unreachable" (an ICMP error quoting the head of an encrypted packet)
    const lines = await linesBetweenHosts(cap.file);
    const notWg = lines.filter((l) => !new RegExp(`\\.${WG_PORT} > [\\d.]+\\.${WG_PORT}: `).test(l) && !new RegExp(`ICMP [\\d.]+ udp port ${WG_PORT} unreachable`).test(l));
    expect(notWg, notWg.slice(0, 5).join('\n')).toEqual([]);
    expect(wefts[1].logTail(400)).toMatch(/wireguard-go exited: encrypted traffic stops \(fail closed\)/);
  });

  it('forged packets reach no container: a WireGuard with an unknown key, junk on the WireGuard port, plain VXLAN with the network\'s VNI', { timeout: 120_000 }, async () => {
    const s2Pid = await pidOf(1, 's2');
    const s2Ip = await containerIp(1, 's2', 'sec');
    const s2Mac = await containerMac(1, 's2', 'sec');
    const p2Ip = await containerIp(1, 'p2', 'plain');
    const p2Mac = await containerMac(1, 'p2', 'plain');
    const nets = JSON.parse((await weft(0, ['networks', '--json'])).stdout) as { name: string; vni: number }[];
    const vni = (n: string) => nets.find((x) => x.name === n)!.vni;
    const hostIp = ipOf(hosts[1]);
    // What arrives at s2 (its own packets left out).
    const sniff = spawn('nsenter', [`--net=/proc/${s2Pid}/ns/net`, 'tcpdump', '-i', 'eth0', '-nn', '-l', 'ip', 'and', 'not', 'src', 'host', s2Ip], { stdio: ['ignore', 'pipe', 'pipe'] });
    const seen = collect(sniff);
    await waitFor(() => seen.out().includes('listening on'), { timeoutMs: 10_000, what: 'tcpdump in s2' });
    const p2 = await listen(await pidOf(1, 'p2'), p2Ip);
    const s2 = await listen(s2Pid, s2Ip);
    // 1. a WireGuard peer with a key host 2 does not know, claiming host 1's tunnel address
    const rogue = `${PREFIX}rogue`;
    await runOk('ip', ['netns', 'add', rogue]);
    await runOk('ip', ['-n', rogue, 'link', 'set', 'lo', 'up']);
    await ul.addHost(rogue);
    const rogueKey = path.join(LAB_ROOT, `${PREFIX}rogue.key`);
    fs.writeFileSync(rogueKey, `${(await runOk('wg', ['genkey'])).stdout.trim()}\n`, { mode: 0o600 });
    const go = spawn('ip', ['netns', 'exec', rogue, 'wireguard-go', '-f', 'w13erg'], { stdio: 'ignore', env: { ...process.env, WG_PROCESS_FOREGROUND: '1' } });
    try {
      await waitFor(() => fs.existsSync('/var/run/wireguard/w13erg.sock'), { timeoutMs: 10_000, what: 'the rogue wireguard-go' });
      const st = await status(1);
      const h1tunnel = (await status(0)).wireguard!.tunnel!;
      await runOk('ip', ['netns', 'exec', rogue, 'wg', 'set', 'w13erg', 'private-key', rogueKey, 'peer', st.wireguard!.publicKey!,
        'endpoint', `${hostIp}:${WG_PORT}`, 'allowed-ips', TUNNELS, 'persistent-keepalive', '1']);
      await runOk('ip', ['-n', rogue, 'addr', 'add', `${h1tunnel}/24`, 'dev', 'w13erg']);
      await runOk('ip', ['-n', rogue, 'link', 'set', 'w13erg', 'up']);
      // VXLAN to host 2's tunnel address with the encrypted network's VNI, through the rogue tunnel
      const FRAME_JS = `
        const frameOf = (dstMac, dstIp, v, text) => {
          const ip4 = (s) => Buffer.from(s.split('.').map(Number));
          const mac = (s) => Buffer.from(s.split(':').map((h) => parseInt(h, 16)));
          const payload = Buffer.from(text);
          const udp = Buffer.alloc(8); udp.writeUInt16BE(40000, 0); udp.writeUInt16BE(9999, 2); udp.writeUInt16BE(8 + payload.length, 4);
          const ip = Buffer.alloc(20); ip[0] = 0x45; ip.writeUInt16BE(20 + 8 + payload.length, 2); ip[8] = 64; ip[9] = 17;
          ip4(dstIp.split('.').slice(0, 3).join('.') + '.250').copy(ip, 12); ip4(dstIp).copy(ip, 16);
          let sum = 0; for (let i = 0; i < 20; i += 2) sum += ip.readUInt16BE(i); while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16); ip.writeUInt16BE(~sum & 0xffff, 10);
          const eth = Buffer.concat([mac(dstMac), mac('02:00:00:00:13:13'), Buffer.from([8, 0])]);
          const vx = Buffer.alloc(8); vx[0] = 8; vx.writeUInt32BE(v * 256, 4);
          return Buffer.concat([vx, eth, ip, udp, payload]);
        };`;
      await runOk('ip', ['netns', 'exec', rogue, process.execPath, '-e', `${FRAME_JS}
        const frame = frameOf('${s2Mac}', '${s2Ip}', ${vni('sec')}, 'FORGED-WG');
        const s = require('dgram').createSocket('udp4'); let n = 0;
        const t = setInterval(() => { s.send(frame, 4789, '${st.wireguard!.tunnel}'); if (++n === 10) { clearInterval(t); s.close(); } }, 200);`], { timeoutMs: 20_000 });
      expect((await runOk('ip', ['netns', 'exec', rogue, 'wg', 'show', 'w13erg', 'latest-handshakes'])).stdout.trim().split(/\s+/)[1]).toBe('0');
      // 2. junk and a forged data packet (type 4, made-up receiver index) on the WireGuard port, from the underlay
      // 3. plain VXLAN, to the host's underlay address: for the encrypted network's VNI, and the plain network's (the control)
      await runOk('ip', ['netns', 'exec', ul.name, process.execPath, '-e', `${FRAME_JS}
        const secFrame = frameOf('${s2Mac}', '${s2Ip}', ${vni('sec')}, 'FORGED-VXLAN-SEC');
        const frame = frameOf('${p2Mac}', '${p2Ip}', ${vni('plain')}, 'FORGED-VXLAN-PLAIN');
        const s = require('dgram').createSocket('udp4');
        const data = Buffer.concat([Buffer.from([4, 0, 0, 0]), require('crypto').randomBytes(4), Buffer.alloc(8), require('crypto').randomBytes(64)]);
        const out = [[require('crypto').randomBytes(148), ${WG_PORT}], [data, ${WG_PORT}], [secFrame, 4789], [frame, 4789]];
        let i = 0; const t = setInterval(() => { for (const [b, p] of out) s.send(b, p, '${hostIp}'); if (++i === 5) { clearInterval(t); setTimeout(() => s.close(), 200); } }, 100);`], { timeoutMs: 20_000 });
      await waitFor(() => p2.out().includes('FORGED-VXLAN-PLAIN'), { timeoutMs: 10_000, what: 'the control: plain VXLAN does reach the plain network' });
    } finally {
      go.kill('SIGKILL');
      killAndWaitSync(pidsInNetns(rogue));
      await ul.removeHost(rogue);
      await run('ip', ['netns', 'del', rogue]);
      sniff.kill('SIGINT');
      await seen.exit;
      p2.stop();
      s2.stop();
    }
    expect(s2.out()).not.toContain('FORGED');
    const arrived = seen.out().split('\n').filter((l) => /^\d\d:\d\d/.test(l));
    expect(arrived, arrived.join('\n')).toEqual([]);
    // host 2 knows no peer it should not
    expect((await status(1)).wireguard!.peers.every((p) => p.expected)).toBe(true);
  });

  it('a third host joins: peers everywhere, ping in every direction, by name too', { timeout: 240_000 }, async () => {
    await addHost(2);
    await waitConsistent([0, 1, 2], { timeoutMs: 20_000, what: 'three hosts in every peer list' });
    await waitFor(async () => (await hosts[2].docker(['network', 'inspect', 'sec'])).code === 0, { timeoutMs: 20_000, what: 'sec on host 3' });
    await hosts[2].dockerOk(['run', '-d', '--name', 's3', '--network', 'sec', '--restart', 'always', 'busybox:local', 'sleep', '3600']);
    const ips = [await containerIp(0, 's1', 'sec'), await containerIp(1, 's2', 'sec'), await containerIp(2, 's3', 'sec')];
    for (let i = 0; i < 3; i++) {
      for (let j = 0; j < 3; j++) {
        if (i === j) continue;
        const r = await hosts[i].docker(['exec', `s${i + 1}`, 'ping', '-c', '1', '-W', '3', ips[j]]);
        expect(r.code, `s${i + 1} -> ${ips[j]}: ${r.stdout}${r.stderr}`).toBe(0);
      }
    }
    const r = await hosts[2].docker(['exec', 's3', 'ping', '-c', '1', '-W', '3', 's1']);
    expect(r.code, r.stdout + r.stderr).toBe(0);
  });

  it('weft status, hosts, doctor and the metrics show encryption per host: up, handshake age, bytes', { timeout: 120_000 }, async () => {
    const text = (await weft(0, ['status'])).stdout;
    expect(text).toMatch(/^wireguard  up: wireguard-go \S+ \(userspace\), pid \d+, interface w13e1 \(tunnel 198\.51\.100\.\d+, UDP 51820\), key \S+; 2 peers, 2 with a live session$/m);
    expect(text).toMatch(/^sec\s+\S+\s+\d+\s+10\.61\.0\.0\/24\s+\S+\s+1390\s+.*\s+yes$/m);
    for (const h of [hosts[1], hosts[2]]) expect(text).toMatch(new RegExp(`^${h.name}\\s+${ipOf(h)}:51820\\s+198\\.51\\.100\\.\\d+\\s+\\d+ s ago\\s+\\S+ \\S+\\s+\\S+ \\S+\\s+up$`, 'm'));
    const hostsText = (await weft(0, ['hosts'])).stdout;
    expect(hostsText.split('\n')[0]).toMatch(/ENCRYPTION\s+HANDSHAKE\s+RX\s+TX$/);
    expect(hostsText).toMatch(/^w13e-h1\s+up\s+.*\s+this host\s+-\s+-\s+-$/m);
    expect(hostsText).toMatch(/^w13e-h2\s+up\s+.*\s+up\s+\d+ s ago\s+[\d.]+ \S+\s+[\d.]+ \S+$/m);
    const doctor = await weft(0, ['doctor']);
    expect(doctor.stdout).toMatch(/^ok\s+wireguard\s+wireguard-go \S+ \(userspace\) \(pid \d+\): interface w13e1 up in /m);
    expect(doctor.stdout).toMatch(/^ok\s+wg key\s+\S+private\.key: mode 600, root only/m);
    expect(doctor.stdout).toMatch(/^ok\s+wg mtu\s+encrypted networks: default MTU 1390 \(--mtu 1450 minus 60 bytes of WireGuard over IPv4; 80 over IPv6\)/m);
    expect(doctor.stdout).toMatch(/^ok\s+wg peer\s+w13e-h2 \(192\.0\.2\.\d+:51820\): handshake \d+ s ago/m);
    expect(doctor.stdout).toMatch(/^ok\s+wg peer\s+w13e-h3 /m);
    expect(doctor.stdout).toMatch(/^ok\s+mtu\s+/m);
    const m = await hosts[0].exec(['curl', '-sS', '-m', '5', 'http://127.0.0.1:9464/metrics'], { timeoutMs: 10_000 });
    expect(m.stdout).toMatch(/^weft_wireguard_up 1$/m);
    expect(m.stdout).toMatch(/^weft_wireguard_info\{implementation="wireguard-go \S+ \(userspace\)",interface="w13e1"\} 1$/m);
    expect(m.stdout).toMatch(/^weft_wireguard_peer_up\{peer="w13e-h2"\} 1$/m);
    expect(m.stdout).toMatch(/^weft_wireguard_peer_handshake_age_seconds\{peer="w13e-h3"\} [\d.]+$/m);
    const tx = /^weft_wireguard_peer_bytes_total\{peer="w13e-h2",direction="tx"\} (\d+)$/m.exec(m.stdout);
    expect(Number(tx?.[1])).toBeGreaterThan(100 * 1024 * 1024);
  });

  it('weft killed and restarted: the encrypted network loses no packet (wireguard-go and its peers stay)', { timeout: 120_000 }, async () => {
    const s2 = await containerIp(1, 's2', 'sec');
    const wgPid = (await status(0)).wireguard!.pid;
    const ping = spawn('nsenter', [`--net=/proc/${await pidOf(0, 's1')}/ns/net`, 'ping', '-n', '-i', '0.1', '-c', '80', '-W', '1', s2], { stdio: ['ignore', 'pipe', 'pipe'] });
    const out = collect(ping);
    await waitFor(() => /icmp_seq=5 /.test(out.out()), { timeoutMs: 10_000, what: 'the ping to run' });
    wefts[0].kill('SIGKILL');
    await wefts[0].waitExit(10_000);
    await wefts[0].start();
    expect(await out.exit, out.out()).toBe(0);
    expect(out.out()).toMatch(/80 packets transmitted, 80 received, 0% packet loss/);
    const st = await status(0);
    expect(st.wireguard?.ready).toBe(true);
    expect(st.wireguard?.pid).toBe(wgPid);
    expect(await peersConsistent([0, 1, 2])).toBeUndefined();
  });

  it('a rotated key: no stale or missing key anywhere, traffic resumes', { timeout: 120_000 }, async () => {
    const before = (await storeKeys()).get(hosts[0].name);
    const r = await weft(0, ['host', 'rotate-key']);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(/rotated the WireGuard key of w13e-h1: public key \S+ \(was \S+\).*\n2 peers completed a handshake with the new key/);
    privateKeys.add(fs.readFileSync(keyFileOf(0), 'utf8').trim());
    expect(fs.statSync(keyFileOf(0)).mode & 0o777).toBe(0o600);
    const after = (await storeKeys()).get(hosts[0].name);
    expect(after).not.toBe(before);
    expect(await peersConsistent([0, 1, 2])).toBeUndefined();
    for (const i of [1, 2]) expect((await wgDump(i)).peers).not.toContain(before);
    const s3 = await containerIp(2, 's3', 'sec');
    await waitFor(async () => (await hosts[0].docker(['exec', 's1', 'ping', '-c', '1', '-W', '1', s3])).code === 0, { timeoutMs: 10_000, what: 'traffic after the rotation' });
  });

  it('a host killed (weft, wireguard-go, dockerd and containers) leaves every peer list; restarted, it is back with the same key', { timeout: 240_000 }, async () => {
    const key3 = (await storeKeys()).get(hosts[2].name)!;
    wefts[2].kill('SIGKILL');
    killWireguardGo(2);
    await hosts[2].powerOff();
    // Its key leaves each peer list once (after its lease and --peer-timeout: a host that only lost the
    // store keeps its tunnels) and stays out: never taken off at the lease's expiry and put back.
    const history: boolean[][] = []; // per look: does host 1's, host 2's device hold host 3's key
    const look = async () => {
      const has = await Promise.all([0, 1].map(async (i) => (await wgDump(i)).peers.includes(key3)));
      history.push(has);
      return has;
    };
    await waitFor(async () => (await look()).every((h) => !h) || undefined, { timeoutMs: 30_000, what: "host 3's key to leave every peer list (lease expiry and --peer-timeout)" });
    for (const t = Date.now(); Date.now() - t < 3_000;) await look();
    for (const i of [0, 1]) {
      const col = history.map((h) => h[i]);
      expect(col.slice(col.indexOf(false)).includes(true), `host ${i + 1}'s device, look by look: ${col.map((b) => (b ? 'in' : 'out')).join(' ')}`).toBe(false);
    }
    expect(await peersConsistent([0, 1])).toBeUndefined();
    await wefts[2].start();
    await hosts[2].startDockerd();
    await waitConsistent([0, 1, 2], { timeoutMs: 30_000, what: 'host 3 back in every peer list' });
    expect((await storeKeys()).get(hosts[2].name)).toBe(key3);
    const s3 = await waitFor(async () => {
      const x = await hosts[2].docker(['inspect', '-f', '{{.State.Running}} {{(index .NetworkSettings.Networks "sec").IPAddress}}', 's3']);
      const [running, ip] = x.stdout.trim().split(' ');
      return running === 'true' && ip ? ip : undefined;
    }, { timeoutMs: 60_000, what: 's3 restarted by its restart policy' });
    await waitFor(async () => (await hosts[0].docker(['exec', 's1', 'ping', '-c', '1', '-W', '1', s3])).code === 0, { timeoutMs: 20_000, what: 's1 to reach s3 again' });
  });

  it('weft host rm: the host leaves every peer list and its tunnel address is released', { timeout: 180_000 }, async () => {
    const key3 = (await storeKeys()).get(hosts[2].name)!;
    const tunnel3 = (await status(2)).wireguard!.tunnel!;
    await hosts[2].dockerOk(['rm', '-f', 's3']);
    wefts[2].kill('SIGKILL');
    killWireguardGo(2);
    await hosts[2].powerOff();
    await waitFor(async () => !(await etcdctl(['get', '--prefix', '--keys-only', '/weft/v1/hosts/'])).includes(hosts[2].name) || undefined, { timeoutMs: 20_000, what: 'lease expiry' });
    const r = await weft(0, ['host', 'rm', hosts[2].name, '--yes']);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(/released its WireGuard tunnel address/);
    expect(await etcdctl(['get', '--prefix', '--keys-only', '/weft/v1/tunnels/'])).not.toContain(tunnel3);
    await waitConsistent([0, 1], { timeoutMs: 10_000, what: "host 3's key to leave every peer list (it had no endpoint left: no --peer-timeout)" });
    for (const i of [0, 1]) expect((await wgDump(i)).peers).not.toContain(key3);
  });

  it('no private key in any log, store key or weft output', async () => {
    outputs.push((await weft(0, ['status'])).stdout, (await weft(0, ['hosts'])).stdout, (await weft(0, ['doctor', '--json'])).stdout);
    const texts: [string, string][] = [['weft output', outputs.join('\n')], ['store', await etcdctl(['get', '--prefix', '/'])]];
    for (let i = 0; i < hosts.length; i++) {
      texts.push([`weft log ${i + 1}`, fs.readFileSync(wefts[i].logFile, 'utf8')]);
      texts.push([`dockerd log ${i + 1}`, fs.readFileSync(hosts[i].dockerdLog, 'utf8')]);
      const wgLog = path.join(wefts[i].runDir, 'wireguard', 'wireguard-go.log');
      if (fs.existsSync(wgLog)) texts.push([`wireguard-go log ${i + 1}`, fs.readFileSync(wgLog, 'utf8')]);
    }
    expect(privateKeys.size).toBe(4);
    for (const k of privateKeys) {
      const hex = Buffer.from(k, 'base64').toString('hex');
      for (const [what, text] of texts) {
        expect(text.includes(k), `a private key in the ${what}`).toBe(false);
        expect(text.includes(hex), `a private key (hex) in the ${what}`).toBe(false);
      }
    }
  });
});
