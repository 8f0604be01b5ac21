// The same compose file on two hosts (issue 11): the network that weft makes
// on host 2 carries the labels compose put on host 1's, so `docker compose up`
// on host 2 joins that one network instead of refusing it; the stack's parts
// reach each other across the hosts by address and, where the name is unique
// in the cluster, by name. `docker compose down` on one host while the other
// still runs the stack behaves like `docker network rm` (README). Runs in
// order; each test builds on the state before it.
import * as fs from 'fs';
import * as path from 'path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startEtcd } from '../lab/etcd';
import { keepLogs } from '../lab/logs';
import {
  cleanupLabLeftovers, createUnderlay, ensureBusyboxImage, startHost, startWeft, waitFor,
  type LabHost, type Underlay, type WeftProcess,
} from '../lab/host';

const PREFIX = 'wco-';
const DNS = '169.254.53.53';
const SUBNET = '10.86.0.0/24';
let ul: Underlay;
let etcd: Awaited<ReturnType<typeof startEtcd>>;
const hosts: LabHost[] = [];
const wefts: WeftProcess[] = [];
let dir = '';

// One file for every host. `db` runs only where its profile is asked for, so
// its name is unique in the cluster and resolves from every host.
const COMPOSE = `name: shop
services:
  app:
    image: busybox:local
    command: ["sleep", "3600"]
    networks: [app]
  db:
    image: busybox:local
    command: ["sleep", "3600"]
    profiles: [db]
    networks: [app]
networks:
  app:
    driver: weft
    ipam:
      driver: weft
      config:
        - subnet: ${SUBNET}
`;

// Another project that uses the stack's network as an external one.
const EXTERNAL = `name: tools
services:
  probe:
    image: busybox:local
    command: ["sleep", "3600"]
    networks: [shop]
networks:
  shop:
    external: true
    name: shop_app
`;

const ipOf = (h: LabHost) => h.underlay!.ports.get(h.name)!.address.split('/')[0];

function compose(h: LabHost, file: string, args: string[]) {
  return h.dockerOk(['compose', '-f', path.join(dir, file), ...args], { timeoutMs: 120_000 });
}

async function containerIp(h: LabHost, name: string, network = 'shop_app'): Promise<string> {
  return (await h.dockerOk(['inspect', '-f', `{{(index .NetworkSettings.Networks "${network}").IPAddress}}`, name])).stdout.trim();
}

async function networkLabels(h: LabHost, name: string): Promise<Record<string, string>> {
  return JSON.parse((await h.dockerOk(['network', 'inspect', '-f', '{{json .Labels}}', name])).stdout) as Record<string, string>;
}

async function hasNetwork(h: LabHost, name: string): Promise<boolean> {
  const r = await h.docker(['network', 'ls', '--filter', `name=^${name}$`, '--format', '{{.Name}}']);
  return r.stdout.split('\n').includes(name);
}

async function ping(h: LabHost, container: string, target: string): Promise<void> {
  const r = await h.docker(['exec', container, 'ping', '-c', '1', '-W', '2', target], { timeoutMs: 20_000 });
  if (r.code !== 0) throw new Error(`ping ${target} from ${container} on ${h.name} failed: ${r.stdout}${r.stderr}`);
}

/** The address a name resolves to inside a container (Docker's embedded resolver, which forwards to weft). */
async function resolve(h: LabHost, container: string, name: string): Promise<string[]> {
  const r = await h.docker(['exec', container, 'nslookup', '-type=a', name], { timeoutMs: 30_000 });
  return [...(r.stdout + r.stderr).matchAll(/Name:\s*\S+\s*\nAddress(?: \d+)?:\s*([\d.]+)/g)].map((m) => m[1]).sort();
}

beforeAll(async () => {
  await cleanupLabLeftovers(PREFIX);
  dir = fs.mkdtempSync('/tmp/weft-compose-');
  fs.writeFileSync(path.join(dir, 'compose.yaml'), COMPOSE);
  fs.writeFileSync(path.join(dir, 'tools.yaml'), EXTERNAL);
  ul = await createUnderlay(`${PREFIX}ul`, '192.0.2.0/24');
  const etcdIp = ul.bridgeAddress.split('/')[0];
  etcd = await startEtcd({ name: 'wco', netns: ul.name, clientHost: etcdIp });
  const etcdUrl = `etcd://${etcdIp}:${new URL(etcd.endpoint).port}`;
  for (let i = 1; i <= 2; i++) {
    const h = await startHost({ name: `${PREFIX}h${i}`, underlay: ul, daemonConfig: { dns: [DNS] } });
    hosts.push(h);
    await ensureBusyboxImage(h);
    wefts.push(await startWeft(h, {
      args: ['--store', etcdUrl, '--advertise-addr', ipOf(h), '--lease-ttl', '3', '--reconcile-interval', '2', '--gc-grace', '5'],
    }));
  }
}, 300_000);

afterAll(async () => {
  keepLogs(hosts);
  for (const h of hosts) await h.destroy().catch(() => undefined);
  await etcd?.stop().catch(() => undefined);
  await ul?.destroy().catch(() => undefined);
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
  await cleanupLabLeftovers(PREFIX);
}, 180_000);

describe(`docker compose on two hosts (engine ${process.env.WEFT_TEST_ENGINE ?? '20.10'})`, () => {
  it('the same compose file starts on host 1, then on host 2, and both join one network', async () => {
    const [h1, h2] = hosts;
    await compose(h1, 'compose.yaml', ['--profile', 'db', 'up', '-d']);
    // the copy on host 2 carries the labels compose looks for
    await waitFor(() => hasNetwork(h2, 'shop_app'), { timeoutMs: 20_000, what: 'shop_app on host 2' });
    const want = await networkLabels(h1, 'shop_app');
    expect(want['com.docker.compose.network']).toBe('app');
    expect(want['com.docker.compose.project']).toBe('shop');
    await waitFor(async () => JSON.stringify(await networkLabels(h2, 'shop_app')) === JSON.stringify(want), {
      timeoutMs: 10_000, what: 'the labels of host 1 on host 2',
    });
    await compose(h2, 'compose.yaml', ['up', '-d']);
    // one network in the cluster: host 2 did not make a second one
    const driver = (await h2.dockerOk(['network', 'inspect', '-f', '{{.Driver}} {{range .IPAM.Config}}{{.Subnet}}{{end}}', 'shop_app'])).stdout.trim();
    expect(driver).toBe(`weft ${SUBNET}`);
    const ip1 = await containerIp(h1, 'shop-app-1');
    const ip2 = await containerIp(h2, 'shop-app-1');
    expect(ip1).not.toBe('');
    expect(ip2).not.toBe('');
    expect(ip1).not.toBe(ip2);
    await ping(h1, 'shop-app-1', ip2);
    await ping(h2, 'shop-app-1', ip1);
  });

  it('a name unique in the cluster resolves on every host; a name on both hosts resolves to the local container', async () => {
    const [h1, h2] = hosts;
    const db = await containerIp(h1, 'shop-db-1');
    // db runs on host 1 only: host 2 finds it through weft's DNS, by service and container name
    await waitFor(async () => (await resolve(h2, 'shop-app-1', 'db')).join() === db, { timeoutMs: 20_000, what: 'db from host 2' });
    expect(await resolve(h2, 'shop-app-1', 'shop-db-1')).toEqual([db]);
    await ping(h2, 'shop-app-1', 'db');
    // app runs on both: Docker's own resolver answers with the container of the asking host
    expect(await resolve(h1, 'shop-app-1', 'app')).toEqual([await containerIp(h1, 'shop-app-1')]);
    expect(await resolve(h2, 'shop-app-1', 'app')).toEqual([await containerIp(h2, 'shop-app-1')]);
    expect(await resolve(h2, 'shop-app-1', 'shop-app-1')).toEqual([await containerIp(h2, 'shop-app-1')]);
  });

  it('external: true joins the stack network from another project', async () => {
    const [h1, h2] = hosts;
    await compose(h2, 'tools.yaml', ['up', '-d']);
    await ping(h2, 'tools-probe-1', await containerIp(h1, 'shop-app-1'));
    await compose(h2, 'tools.yaml', ['down', '-t', '0']);
  });

  it('compose down on host 1 while host 2 runs the stack keeps the network; down on both removes it everywhere', async () => {
    const [h1, h2] = hosts;
    await compose(h1, 'compose.yaml', ['--profile', 'db', 'down', '-t', '0']);
    // host 2 still has a container on it: weft keeps the network and recreates host 1's copy
    await waitFor(() => hasNetwork(h1, 'shop_app'), { timeoutMs: 20_000, what: 'shop_app back on host 1' });
    expect(await networkLabels(h1, 'shop_app')).toMatchObject({ 'com.docker.compose.network': 'app' });
    // and the stack comes back up on host 1 onto that network
    await compose(h1, 'compose.yaml', ['up', '-d']);
    await ping(h1, 'shop-app-1', await containerIp(h2, 'shop-app-1'));
    await compose(h1, 'compose.yaml', ['down', '-t', '0']);
    await compose(h2, 'compose.yaml', ['down', '-t', '0']);
    for (const h of hosts) await waitFor(async () => !(await hasNetwork(h, 'shop_app')), { timeoutMs: 20_000, what: `shop_app gone from ${h.name}` });
  });
});
