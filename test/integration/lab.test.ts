// The lab itself, without weft: hosts in namespaces with their own dockerd,
// an underlay between them, the busybox image, the plugin directory, and
// clean-up that leaves nothing behind.
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  LAB_ROOT,
  cleanupLabLeftovers,
  createUnderlay,
  ensureBusyboxImage,
  hostHttpGet,
  run,
  startHost,
  type LabHost,
  type Underlay,
} from '../lab/host';

const PREFIX = 'wlab-lab-';

function netnsExists(name: string): boolean {
  return fs.existsSync(`/run/netns/${name}`);
}

function procsMentioning(s: string): string[] {
  const out: string[] = [];
  for (const p of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(p) || Number(p) === process.pid) continue;
    try {
      const c = fs.readFileSync(`/proc/${p}/cmdline`, 'utf8').split('\0').join(' ');
      if (c.includes(s)) out.push(`${p}: ${c}`);
    } catch {
      /* gone */
    }
  }
  return out;
}

function cgroupExists(name: string): boolean {
  return fs.existsSync(`/sys/fs/cgroup/pids/weftlab/${name}`) || fs.existsSync(`/sys/fs/cgroup/weftlab/${name}`);
}

function expectGone(h: { name: string; dir: string }): void {
  expect(netnsExists(h.name), `netns ${h.name}`).toBe(false);
  expect(procsMentioning(h.dir + '/'), `processes of ${h.name}`).toEqual([]);
  expect(fs.existsSync(h.dir), `dir ${h.dir}`).toBe(false);
  expect(cgroupExists(h.name), `cgroup of ${h.name}`).toBe(false);
}

describe('lab', () => {
  let ul: Underlay | undefined;
  let h1: LabHost | undefined;
  let h2: LabHost | undefined;
  const timings: Record<string, number> = {};

  beforeAll(async () => {
    await cleanupLabLeftovers(PREFIX);
    ul = await createUnderlay(`${PREFIX}ul`, '192.0.2.0/24');
    let t = Date.now();
    h1 = await startHost({ name: `${PREFIX}h1`, underlay: ul, address: '192.0.2.11/24' });
    timings.startHost1 = Date.now() - t;
    t = Date.now();
    h2 = await startHost({ name: `${PREFIX}h2`, underlay: ul });
    timings.startHost2 = Date.now() - t;
  });

  afterAll(async () => {
    await h1?.destroy();
    await h2?.destroy();
    await ul?.destroy();
    await cleanupLabLeftovers(PREFIX);
    console.log('lab timings (ms):', JSON.stringify(timings));
  });

  it('gives each host its own engine, hostname and addresses', async () => {
    expect(h1!.address).toBe('192.0.2.11/24');
    expect(h2!.address).toBe('192.0.2.12/24');
    const info1 = await h1!.dockerOk(['info', '--format', '{{.Name}} {{.DockerRootDir}}']);
    expect(info1.stdout.trim()).toBe(`${h1!.name} ${h1!.dir}/data`);
    const info2 = await h2!.dockerOk(['info', '--format', '{{.Name}}']);
    expect(info2.stdout.trim()).toBe(h2!.name);
    // no default route: nothing leaves the lab
    const routes = await h1!.execOk(['ip', '-4', 'route', 'show', 'default']);
    expect(routes.stdout.trim()).toBe('');
    const docker0 = await h1!.execOk(['ip', '-4', '-o', 'addr', 'show', 'docker0']);
    expect(docker0.stdout).toContain(`172.30.${h1!.index}.1/24`);
  });

  it('connects hosts over the underlay', async () => {
    const r = await h1!.exec(['ping', '-c', '1', '-W', '2', h2!.ip!]);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    const u = await ul!.exec(['ping', '-c', '1', '-W', '2', h1!.ip!]);
    expect(u.code, u.stdout + u.stderr).toBe(0);
    // a bare host (no dockerd), as for etcd
    const bare = await startHost({ name: `${PREFIX}bare`, underlay: ul, dockerd: false });
    try {
      expect(bare.dockerdRunning()).toBe(false);
      const b = await bare.exec(['ping', '-c', '1', '-W', '2', h1!.ip!]);
      expect(b.code, b.stdout + b.stderr).toBe(0);
    } finally {
      await bare.destroy();
    }
    expectGone(bare);
    expect(ul!.ports.has(bare.name)).toBe(false);
  });

  it('keeps every host\'s path to the bridge address (etcd\'s) when another host plugs in', async () => {
    const target = ul!.bridgeAddress.split('/')[0];
    // Both hosts reach the bridge address first, so each caches its MAC.
    for (const h of [h1!, h2!]) {
      const r = await h.exec(['ping', '-c', '1', '-W', '2', target]);
      expect(r.code, `${h.name}: ${r.stdout}${r.stderr}`).toBe(0);
    }
    const ns = `${PREFIX}lowmac`;
    const add = await run('ip', ['netns', 'add', ns]);
    expect(add.code, add.stderr).toBe(0);
    try {
      // A port with a MAC lower than any random one: a bridge with no MAC of
      // its own would take it, and the hosts' cached MAC would go dead.
      await ul!.addHost(ns, { portMac: '02:00:00:00:00:01' });
      for (const h of [h1!, h2!]) {
        const r = await h.exec(['ping', '-c', '2', '-W', '2', target]);
        expect(r.code, `${h.name}: ${r.stdout}${r.stderr}`).toBe(0);
      }
    } finally {
      await ul!.removeHost(ns);
      await run('ip', ['netns', 'del', ns]);
    }
  });

  it('runs busybox:local containers on the default bridge', async () => {
    let t = Date.now();
    await ensureBusyboxImage(h1!);
    timings.importImage = Date.now() - t;
    await ensureBusyboxImage(h1!); // idempotent
    t = Date.now();
    const r = await h1!.dockerOk(['run', '--rm', 'busybox:local', 'echo', 'ok']);
    timings.dockerRunRm = Date.now() - t;
    expect(r.stdout.trim()).toBe('ok');
    const applets = await h1!.dockerOk([
      'run', '--rm', 'busybox:local', 'sh', '-c',
      'for a in sh ip ping ifconfig sleep cat nc wget hostname nslookup httpd route arp udhcpc echo ls; do command -v $a >/dev/null || echo missing $a; done; ping -c1 -W2 172.30.' +
        h1!.index + '.1 >/dev/null && echo pinged',
    ]);
    expect(applets.stdout.trim()).toBe('pinged');
  });

  it('publishes ports to the host namespace', async () => {
    await h1!.dockerOk([
      'run', '-d', '--name', 'web', '-p', '18081:8080', 'busybox:local',
      'sh', '-c', 'mkdir /www && echo hello-lab > /www/index.html && exec httpd -f -p 8080 -h /www',
    ]);
    let body = '';
    for (let i = 0; i < 50 && body.trim() !== 'hello-lab'; i++) {
      const r = await hostHttpGet(h1!, 'http://127.0.0.1:18081/', 2);
      body = r.stdout;
      if (body.trim() !== 'hello-lab') await new Promise((res) => setTimeout(res, 100));
    }
    expect(body.trim()).toBe('hello-lab');
    await h1!.dockerOk(['rm', '-f', 'web']);
  });

  it('lets a plugin in pluginDir serve this host only', async () => {
    // A minimal IPAM plugin, enough for `docker network create --ipam-driver wlabfake`.
    const calls: string[] = [];
    const sock = path.join(h1!.pluginDir, 'wlabfake.sock');
    const replies: Record<string, unknown> = {
      '/Plugin.Activate': { Implements: ['IpamDriver'] },
      '/IpamDriver.GetCapabilities': { RequiresMACAddress: false },
      '/IpamDriver.GetDefaultAddressSpaces': { LocalDefaultAddressSpace: 'l', GlobalDefaultAddressSpace: 'g' },
      '/IpamDriver.RequestPool': { PoolID: 'p1', Pool: '10.40.9.0/24', Data: {} },
      '/IpamDriver.RequestAddress': { Address: '10.40.9.1/24', Data: {} },
      '/IpamDriver.ReleaseAddress': {},
      '/IpamDriver.ReleasePool': {},
    };
    const server = http.createServer((req, res) => {
      req.resume();
      req.on('end', () => {
        calls.push(req.url ?? '');
        res.end(JSON.stringify(replies[req.url ?? ''] ?? { Err: `unexpected ${req.url}` }));
      });
    });
    await new Promise<void>((res) => server.listen(sock, res));
    try {
      await h1!.dockerOk(['network', 'create', '--ipam-driver', 'wlabfake', '--subnet', '10.40.9.0/24', 'fakenet']);
      expect(calls).toContain('/Plugin.Activate');
      expect(calls).toContain('/IpamDriver.RequestPool');
      await h1!.dockerOk(['network', 'rm', 'fakenet']);
      expect(calls).toContain('/IpamDriver.ReleasePool');
      // h2 does not see h1's plugins
      const other = await h2!.docker(['network', 'create', '--ipam-driver', 'wlabfake', 'fakenet'], { timeoutMs: 60_000 });
      expect(other.code).not.toBe(0);
    } finally {
      await new Promise<void>((res) => server.close(() => res()));
    }
  });

  it('restarts dockerd', async () => {
    const before = h2!.dockerdPid();
    const t = Date.now();
    await h2!.restartDockerd();
    timings.restartDockerd = Date.now() - t;
    expect(h2!.dockerdPid()).not.toBe(before);
    const info = await h2!.dockerOk(['info', '--format', '{{.Name}}']);
    expect(info.stdout.trim()).toBe(h2!.name);
  });

  it('destroys a host with a running container and leaves nothing behind', async () => {
    await h1!.dockerOk(['run', '-d', '--name', 'sleeper', 'busybox:local', 'sleep', '3600']);
    const port = ul!.ports.get(h1!.name)!.port;
    const t = Date.now();
    await h1!.destroy();
    timings.destroyHostWithContainer = Date.now() - t;
    await h1!.destroy(); // twice is fine
    expectGone(h1!);
    const link = await ul!.exec(['ip', 'link', 'show', port]);
    expect(link.code, `underlay port ${port} of the destroyed host`).not.toBe(0);
    // the other host is untouched
    expect((await h2!.dockerOk(['info', '--format', '{{.Name}}'])).stdout.trim()).toBe(h2!.name);
  });

  it('removes everything when start-up fails', async () => {
    const name = `${PREFIX}bad`;
    await expect(startHost({ name, underlay: ul, dockerdArgs: ['--no-such-flag'], startTimeoutMs: 20_000 })).rejects.toThrow(
      /no-such-flag/,
    );
    expectGone({ name, dir: path.join(LAB_ROOT, name) });
    expect(ul!.ports.has(name)).toBe(false);
  });

  it('sweeps the leftovers of a crashed run', async () => {
    const name = `${PREFIX}crash`;
    const h = await startHost({ name, underlay: ul });
    await ensureBusyboxImage(h);
    await h.dockerOk(['run', '-d', 'busybox:local', 'sleep', '3600']);
    // a crash: dockerd dies, containers and shims live on
    await h.killDockerd();
    expect(procsMentioning(h.dir + '/').length).toBeGreaterThan(0);
    const t = Date.now();
    const report = await cleanupLabLeftovers(`${PREFIX}cr`);
    timings.sweepCrashedHost = Date.now() - t;
    expect(report.netns).toEqual([name]);
    expectGone(h);
    await h.destroy(); // still safe afterwards
    const list = await run('ip', ['netns', 'list']);
    expect(list.stdout).not.toContain(name);
  });
});
