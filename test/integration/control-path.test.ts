// The control path and multicast (issue 15), on two lab hosts with etcd:
//   - a container's name resolves on the other host by the time `docker run
//     -d` returns: the lookup made right after it returns succeeds, every time;
//   - multicast with no interface named: a container's first weft network
//     carries 224.0.0.0/4, so a group joined and sent to without choosing an
//     interface goes over weft, across hosts; a container on several weft
//     networks starts and connects as before (one multicast route).
// Runs in order; every sub-test builds on the state before it.
import { spawn, type ChildProcess } from 'child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startLabCluster, type LabCluster } from '../lab/cluster';
import { mcastToolOn } from '../lab/mcast';
import { BUSYBOX_IMAGE, DOCKER_CLI, waitFor, type LabHost, type WeftProcess } from '../lab/host';

const PREFIX = 'w15v-';
const DNS = '169.254.53.53';
const SUBNET = '10.115.0.0/24';
let lab: LabCluster | undefined;
let hosts: LabHost[] = [];
let wefts: WeftProcess[] = [];
const children: ChildProcess[] = [];

beforeAll(async () => {
  lab = await startLabCluster({
    prefix: PREFIX, hosts: 2, weft: { logLevel: 'debug' },
    weftArgs: (etcdUrl, address) => ['--store', etcdUrl, '--advertise-addr', address, '--lease-ttl', '3', '--reconcile-interval', '2', '--gc-grace', '5'],
  });
  ({ hosts, wefts } = lab);
  await hosts[0].dockerOk(['network', 'create', '-d', 'weft', '--ipam-driver', 'weft', '--subnet', SUBNET, 'app']);
  await waitFor(async () => (await hosts[1].docker(['network', 'inspect', 'app'])).code === 0, { timeoutMs: 15_000, what: 'network app on host 2' });
}, 300_000);

afterAll(async () => {
  for (const c of children) c.kill('SIGKILL');
  await lab?.destroy();
}, 180_000);

/** `docker exec -i NAME sh` kept open: each command runs at once, without the start-up of a new exec. */
function shellIn(h: LabHost, name: string): { run(cmd: string): Promise<string>; close(): void } {
  const c = spawn(DOCKER_CLI, ['exec', '-i', name, 'sh'], {
    env: { ...process.env, DOCKER_HOST: h.dockerHost, DOCKER_CONFIG: `${h.dir}/docker-config` }, stdio: ['pipe', 'pipe', 'pipe'],
  });
  children.push(c);
  let out = '';
  let waiter: (() => void) | undefined;
  c.stdout!.setEncoding('utf8').on('data', (d: string) => { out += d; waiter?.(); });
  c.stderr!.setEncoding('utf8').on('data', (d: string) => { out += d; waiter?.(); });
  let n = 0;
  return {
    async run(cmd: string): Promise<string> {
      const mark = `__done_${++n}__`;
      out = '';
      c.stdin!.write(`${cmd} 2>&1; echo ${mark}\n`);
      const deadline = Date.now() + 20_000;
      while (!out.includes(mark)) {
        if (Date.now() > deadline || c.exitCode !== null) throw new Error(`shell in ${name}: no answer to "${cmd}" (got: ${out.slice(-300)})`);
        await new Promise<void>((r) => { waiter = r; setTimeout(r, 100); });
      }
      return out.slice(0, out.indexOf(mark));
    },
    close: () => c.kill('SIGKILL'),
  };
}

const answers = (out: string, ip: string) => new RegExp(`Address(?: \\d+)?:\\s+${ip.replace(/\./g, '\\.')}(\\s|$)`, 'm').test(out);

describe('control path', () => {
  it('a container started on host 1 resolves on host 2 as soon as docker run -d returns, every time', async () => {
    const [h1, h2] = hosts;
    await h2.dockerOk(['run', '-d', '--name', 'asker', '--network', 'app', BUSYBOX_IMAGE, 'sleep', '600']);
    const sh = shellIn(h2, 'asker');
    try {
      // weft on host 2 knows the asker (its source address) once it resolves a name that exists
      await h1.dockerOk(['run', '-d', '--name', 'known', '--network', 'app', '--ip', '10.115.0.50', BUSYBOX_IMAGE, 'sleep', '600']);
      await waitFor(async () => answers(await sh.run(`nslookup known ${DNS}`), '10.115.0.50'), { timeoutMs: 20_000, what: 'host 2 resolves known' });
      const results: string[] = [];
      for (let i = 1; i <= 6; i++) {
        const ip = `10.115.0.${60 + i}`;
        await h1.dockerOk(['run', '-d', '--name', `fresh${i}`, '--network', 'app', '--ip', ip, BUSYBOX_IMAGE, 'sleep', '600']);
        const out = await sh.run(`nslookup fresh${i} ${DNS}`);
        results.push(answers(out, ip) ? 'resolved' : `not resolved: ${out.replace(/\s+/g, ' ').slice(0, 200)}`);
      }
      expect(results).toEqual(results.map(() => 'resolved'));
      const rm = await h1.docker(['rm', '-f', 'fresh1']);
      expect(rm.code).toBe(0);
      expect(answers(await sh.run(`nslookup fresh1 ${DNS}`), '10.115.0.61')).toBe(false);
    } finally {
      sh.close();
    }
  });

  it('a container whose start fails leaves no name behind', async () => {
    const [h1, h2] = hosts;
    // the network connect happens (and the early record is written), then the process cannot start
    const r = await h1.docker(['run', '-d', '--name', 'broken', '--network', 'app', '--ip', '10.115.0.80', BUSYBOX_IMAGE, '/no/such/binary']);
    expect(r.code).not.toBe(0);
    const sh = shellIn(h2, 'asker');
    try {
      await waitFor(async () => !answers(await sh.run(`nslookup broken ${DNS}`), '10.115.0.80'), { timeoutMs: 20_000, what: 'the name of the container that did not start gone' });
    } finally {
      sh.close();
    }
  });
});

describe('multicast without configuration', () => {
  it('a container sends to and joins a group without naming an interface, across hosts', async () => {
    const [h1, h2] = hosts;
    const mount = async (h: LabHost) => ['-v', `${await mcastToolOn(h)}:/mcast:ro`];
    await h1.dockerOk(['run', '-d', '--name', 'msend', '--network', 'app', ...(await mount(h1)), BUSYBOX_IMAGE, 'sleep', '600']);
    await h2.dockerOk(['run', '-d', '--name', 'mrecv', '--network', 'app', ...(await mount(h2)), BUSYBOX_IMAGE, 'sleep', '600']);
    const senderIp = (await h1.dockerOk(['inspect', '-f', '{{(index .NetworkSettings.Networks "app").IPAddress}}', 'msend'])).stdout.trim();
    const receiverIp = (await h2.dockerOk(['inspect', '-f', '{{(index .NetworkSettings.Networks "app").IPAddress}}', 'mrecv'])).stdout.trim();
    // the route is on the weft interface (the one with the weft address), not on docker_gwbridge's
    for (const [h, name, ip] of [[h1, 'msend', senderIp], [h2, 'mrecv', receiverIp]] as const) {
      const route = (await h.dockerOk(['exec', name, 'ip', '-4', 'route', 'show', '224.0.0.0/4'])).stdout;
      const dev = /dev (\S+)/.exec(route)?.[1];
      expect(dev, `${name}: ${route}`).toBeTruthy();
      expect((await h.dockerOk(['exec', name, 'ip', '-4', 'addr', 'show', 'dev', dev!])).stdout).toContain(`${ip}/24`);
    }
    const recv = spawn(DOCKER_CLI, ['exec', 'mrecv', '/mcast', 'recv', '239.15.0.1', '5015', '20'], {
      env: { ...process.env, DOCKER_HOST: h2.dockerHost, DOCKER_CONFIG: `${h2.dir}/docker-config` }, stdio: ['ignore', 'pipe', 'pipe'],
    });
    children.push(recv);
    let out = '';
    recv.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d));
    recv.stderr!.setEncoding('utf8').on('data', (d: string) => (out += d));
    const exited = new Promise<number | null>((r) => recv.on('close', r));
    await waitFor(async () => out.includes('joined'), { timeoutMs: 15_000, intervalMs: 50, what: 'the receiver joined the group' });
    // 30 datagrams 100 ms apart; the receiver reports the first
    await h1.dockerOk(['exec', 'msend', '/mcast', 'send', '239.15.0.1', '5015', 'hello-w15v', '30'], { timeoutMs: 30_000 });
    expect(await exited).toBe(0);
    expect(out).toContain(`from ${senderIp}: hello-w15v`);
  });

  it('a container on several weft networks starts and connects as before, with one multicast route', async () => {
    const [h1] = hosts;
    for (const [n, s] of [['app2', '10.115.2.0/24'], ['app3', '10.115.3.0/24']]) {
      await h1.dockerOk(['network', 'create', '-d', 'weft', '--ipam-driver', 'weft', '--subnet', s, n]);
    }
    // two weft networks joined at start (Docker 20.10: before the container's namespace exists)
    await h1.dockerOk(['create', '--name', 'dual', '--network', 'app', BUSYBOX_IMAGE, 'sleep', '600']);
    await h1.dockerOk(['network', 'connect', 'app2', 'dual']);
    await h1.dockerOk(['start', 'dual']);
    const routes = async () => (await h1.dockerOk(['exec', 'dual', 'ip', '-4', 'route', 'show', '224.0.0.0/4'])).stdout.trim().split('\n').filter(Boolean);
    expect(await routes()).toHaveLength(1);
    // a third, to the running container, after weft restarted (it no longer remembers which Join carried the route)
    await wefts[0].restart();
    await h1.dockerOk(['network', 'connect', 'app3', 'dual']);
    expect(await routes()).toHaveLength(1);
    const ifs = (await h1.dockerOk(['exec', 'dual', 'ip', '-4', '-o', 'addr'])).stdout;
    for (const p of ['10.115.0.', '10.115.2.', '10.115.3.']) expect(ifs).toContain(p);
  });
});
