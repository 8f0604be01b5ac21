// A rolling upgrade in progress: three hosts on one etcd, host 2 still runs
// weft as built from commit 0a36c98 (where issue 12 started), hosts 1 and 3
// run this build. The multi-host scenario must hold across versions:
// networks propagate both ways, containers ping across every pair, a host's
// death (an old one, then a new one) takes it out of every table, and the
// old weft finds nothing in the store that it cannot read.
//
// The old build: WEFT_OLD_WEFT_DIR (a checkout of 0a36c98 with `npm ci && npm
// run build` done), or else it is made in OLD_DIR from this repository's git
// history (git archive, npm ci, npm run build) and kept for the next run.
import { execFileSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startEtcd } from '../lab/etcd';
import { keepLogs } from '../lab/logs';
import {
  cleanupLabLeftovers, createUnderlay, ensureBusyboxImage, run, startHost, startWeft, waitFor,
  type LabHost, type Underlay, type WeftProcess,
} from '../lab/host';
import { REPO_ROOT } from '../lab/weft';

const PREFIX = 'w12u-';
const OLD_COMMIT = '0a36c98';
const OLD_DIR = process.env.WEFT_OLD_WEFT_DIR ?? `/tmp/weft-old-${OLD_COMMIT}`;
const OLD_CLI = path.join(OLD_DIR, 'dist', 'cli.js');
const OLD = 1; // index of the host that runs the old weft
let ul: Underlay;
let etcd: Awaited<ReturnType<typeof startEtcd>>;
const hosts: LabHost[] = [];
const wefts: WeftProcess[] = [];
let etcdUrl = '';

const ipOf = (h: LabHost) => h.underlay!.ports.get(h.name)!.address.split('/')[0];
/** Flags both versions know (the old one refuses --peer-timeout); the new ones add theirs. */
const commonArgs = (h: LabHost) => ['--store', etcdUrl, '--advertise-addr', ipOf(h), '--lease-ttl', '3', '--reconcile-interval', '2', '--gc-grace', '5'];
const weftOpts = (i: number) => (i === OLD
  ? { args: commonArgs(hosts[i]), cli: OLD_CLI }
  : { args: [...commonArgs(hosts[i]), '--peer-timeout', '3'] });

function buildOld(): void {
  if (fs.existsSync(OLD_CLI)) return;
  if (process.env.WEFT_OLD_WEFT_DIR) throw new Error(`WEFT_OLD_WEFT_DIR=${OLD_DIR} has no dist/cli.js: run npm ci && npm run build there`);
  fs.mkdirSync(OLD_DIR, { recursive: true });
  execFileSync('sh', ['-c', `git -C ${REPO_ROOT} archive ${OLD_COMMIT} | tar -x -C ${OLD_DIR}`], { stdio: 'inherit' });
  execFileSync('npm', ['ci'], { cwd: OLD_DIR, stdio: 'inherit', timeout: 900_000 });
  execFileSync('npm', ['run', 'build'], { cwd: OLD_DIR, stdio: 'inherit', timeout: 300_000 });
}

beforeAll(async () => {
  buildOld();
  await cleanupLabLeftovers(PREFIX);
  ul = await createUnderlay(`${PREFIX}ul`, '198.51.100.0/24');
  const etcdIp = ul.bridgeAddress.split('/')[0];
  etcd = await startEtcd({ name: 'w12u', netns: ul.name, clientHost: etcdIp });
  etcdUrl = `etcd://${etcdIp}:${new URL(etcd.endpoint).port}`;
  for (let i = 0; i < 3; i++) {
    const h = await startHost({ name: `${PREFIX}h${i + 1}`, underlay: ul });
    hosts.push(h);
    await ensureBusyboxImage(h);
    wefts.push(await startWeft(h, weftOpts(i)));
  }
}, 1_200_000);

afterAll(async () => {
  keepLogs(hosts);
  for (const h of hosts) await h.destroy().catch(() => undefined);
  await etcd?.stop().catch(() => undefined);
  await ul?.destroy().catch(() => undefined);
  await cleanupLabLeftovers(PREFIX);
}, 180_000);

async function etcdKeys(prefix: string): Promise<string[]> {
  const r = await run('ip', ['netns', 'exec', ul.name, 'etcdctl', `--endpoints=${etcd.endpoint}`, 'get', '--prefix', '--keys-only', prefix], { env: { ETCDCTL_API: '3' } });
  if (r.code !== 0) throw new Error(`etcdctl: ${r.stderr}`);
  return r.stdout.split('\n').filter(Boolean);
}

async function ipIn(h: LabHost, c: string, net: string): Promise<string> {
  return (await h.dockerOk(['inspect', '-f', `{{(index .NetworkSettings.Networks "${net}").IPAddress}}`, c])).stdout.trim();
}

/** The VXLAN forwarding entries of every weft network on host i. */
async function fdb(i: number): Promise<string> {
  const names = (await run('ls', [`${wefts[i].runDir}/netns`])).stdout.split('\n').filter(Boolean);
  const out: string[] = [];
  for (const n of names) out.push((await run('nsenter', [`--net=${wefts[i].runDir}/netns/${n}`, 'bridge', 'fdb', 'show', 'dev', `vx-${n.slice(5)}`])).stdout);
  return out.join('\n');
}

describe('rolling upgrade: one host on the old weft (0a36c98), two on this one', () => {
  it('the hosts run the versions meant', async () => {
    expect(fs.readFileSync(wefts[OLD].logFile, 'utf8')).toContain(OLD_CLI);
    for (const i of [0, 2]) expect(fs.readFileSync(wefts[i].logFile, 'utf8')).toContain('--peer-timeout');
  });

  it('a network created on the old host appears on the new ones, and one created on a new host appears on the old one', async () => {
    await hosts[OLD].dockerOk(['network', 'create', '-d', 'weft', '--ipam-driver', 'weft', '--subnet', '10.80.0.0/24', 'fromold']);
    await hosts[0].dockerOk(['network', 'create', '-d', 'weft', '--ipam-driver', 'weft', '--subnet', '10.81.0.0/24', 'fromnew']);
    for (const [net, i] of [['fromold', 0], ['fromold', 2], ['fromnew', 1], ['fromnew', 2]] as const) {
      await waitFor(async () => (await hosts[i].docker(['network', 'inspect', net])).code === 0, { timeoutMs: 20_000, what: `${net} on ${hosts[i].name}` });
    }
  });

  it('containers on every host reach each other on both networks, every pair', { timeout: 180_000 }, async () => {
    for (let i = 0; i < 3; i++) {
      for (const net of ['fromold', 'fromnew']) {
        await hosts[i].dockerOk(['run', '-d', '--name', `${net}${i + 1}`, '--network', net, 'busybox:local', 'sleep', '3600']);
      }
    }
    for (const net of ['fromold', 'fromnew']) {
      const ips = await Promise.all(hosts.map((h, i) => ipIn(h, `${net}${i + 1}`, net)));
      expect(new Set(ips).size).toBe(3);
      for (let i = 0; i < 3; i++) {
        for (let j = 0; j < 3; j++) {
          if (i === j) continue;
          await waitFor(async () => (await hosts[i].docker(['exec', `${net}${i + 1}`, 'ping', '-c', '1', '-W', '2', ips[j]])).code === 0,
            { timeoutMs: 20_000, what: `${net}${i + 1} on ${hosts[i].name} -> ${ips[j]} on ${hosts[j].name}` });
        }
      }
    }
  });

  it('the old weft reads every record the new ones wrote', () => {
    const log = fs.readFileSync(wefts[OLD].logFile, 'utf8');
    expect(log).not.toMatch(/unreadable store record|Unexpected token|is not valid JSON/);
    expect(log).not.toMatch(/"level":50/); // no error lines
  });

  it('the old host dies: it leaves the new hosts\' tables; then a new host dies: it leaves the old host\'s tables too', { timeout: 180_000 }, async () => {
    const oldVtep = ipOf(hosts[OLD]);
    wefts[OLD].kill('SIGKILL');
    await hosts[OLD].killDockerd();
    for (const i of [0, 2]) {
      await waitFor(async () => !(await fdb(i)).includes(`dst ${oldVtep} `), { timeoutMs: 30_000, what: `the old host's entries to leave ${hosts[i].name}` });
    }
    // the two new hosts still reach each other
    const ip3 = await ipIn(hosts[2], 'fromnew3', 'fromnew');
    expect((await hosts[0].docker(['exec', 'fromnew1', 'ping', '-c', '1', '-W', '2', ip3])).code).toBe(0);
    // the old host comes back (weft before dockerd) and rejoins
    await wefts[OLD].start();
    await hosts[OLD].startDockerd();
    await waitFor(async () => (await etcdKeys('/weft/v1/hosts/')).includes(`/weft/v1/hosts/${hosts[OLD].name}`), { timeoutMs: 30_000, what: 'the old host to register again' });
    await hosts[OLD].docker(['rm', '-f', 'fromnew2']);
    await hosts[OLD].dockerOk(['run', '-d', '--name', 'back2', '--network', 'fromnew', 'busybox:local', 'sleep', '3600']);
    const back = await ipIn(hosts[OLD], 'back2', 'fromnew');
    await waitFor(async () => (await hosts[0].docker(['exec', 'fromnew1', 'ping', '-c', '1', '-W', '2', back])).code === 0, { timeoutMs: 30_000, what: 'host 1 to reach the old host again' });
    // now a new host dies: the old host drops it too (on lease expiry, as it always did)
    const newVtep = ipOf(hosts[2]);
    wefts[2].kill('SIGKILL');
    await hosts[2].killDockerd();
    for (const i of [0, OLD]) {
      await waitFor(async () => !(await fdb(i)).includes(`dst ${newVtep} `), { timeoutMs: 30_000, what: `host 3's entries to leave ${hosts[i].name}` });
    }
    const ip1 = await ipIn(hosts[0], 'fromnew1', 'fromnew');
    await waitFor(async () => (await hosts[OLD].docker(['exec', 'back2', 'ping', '-c', '1', '-W', '2', ip1])).code === 0, { timeoutMs: 20_000, what: 'the old host to reach host 1' });
  });
  it('host 2 is upgraded in place, as the README says: its containers keep their traffic, and it registers again as the new version', { timeout: 180_000 }, async () => {
    const back = await ipIn(hosts[OLD], 'back2', 'fromnew');
    const pid1 = Number((await hosts[0].dockerOk(['inspect', '-f', '{{.State.Pid}}', 'fromnew1'])).stdout.trim());
    const pinger = run('nsenter', [`--net=/proc/${pid1}/ns/net`, 'ping', '-n', '-c', '100', '-i', '0.2', '-W', '2', back], { timeoutMs: 60_000 });
    await new Promise((r) => setTimeout(r, 2000));
    await wefts[OLD].stop();
    wefts[OLD] = await startWeft(hosts[OLD], { args: [...commonArgs(hosts[OLD]), '--peer-timeout', '3'] });
    await waitFor(async () => {
      const r = await run('ip', ['netns', 'exec', ul.name, 'etcdctl', `--endpoints=${etcd.endpoint}`, 'get', '--print-value-only', `/weft/v1/hosts/${hosts[OLD].name}`], { env: { ETCDCTL_API: '3' } });
      return r.stdout.includes('"instance"');
    }, { timeoutMs: 30_000, what: 'host 2 to register as the new version' });
    const p = await pinger;
    const m = /(\d+) packets transmitted, (\d+) received/.exec(p.stdout);
    expect(m, p.stdout + p.stderr).not.toBeNull();
    expect(Number(m![2]), p.stdout).toBe(Number(m![1]));
  });
});
