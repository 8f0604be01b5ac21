// EtcdStore against a real etcd (Debian etcd-server 3.4): the shared
// contract, then what only a networked store has: an etcd that hangs, dies
// and comes back; compaction; a lease lost while etcd is away; TLS and auth.
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { Etcd3 } from 'etcd3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EtcdStore } from '../../src/store/etcd-store';
import { openStore } from '../../src/store/index';
import { StoreUnavailableError, type Store, type WatchEvent } from '../../src/store/store';
import { EtcdHandle, startEtcd } from '../lab/etcd';
import { storeContract } from '../unit/store-contract';

let etcd: EtcdHandle | undefined;
const cleanups: Array<() => Promise<void> | void> = [];
const tmpDirs: string[] = [];

function tmpDir(tag: string): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), `weft-etcdtest-${tag}-`));
  tmpDirs.push(d);
  return d;
}

beforeAll(async () => {
  etcd = await startEtcd({ name: 'contract' });
});

afterAll(async () => {
  for (const c of cleanups.splice(0).reverse()) {
    try {
      await c();
    } catch {
      /* keep cleaning */
    }
  }
  await etcd?.stop();
  for (const d of tmpDirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

function endpoint(): string {
  if (!etcd) throw new Error('etcd did not start (see beforeAll)');
  return etcd.endpoint;
}

storeContract('EtcdStore', async () => {
  const store = await EtcdStore.open({ endpoints: [endpoint()], requestTimeoutMs: 5_000 });
  return { store, cleanup: () => store.close() };
});

async function waitUntil<T>(what: string, fn: () => Promise<T> | T, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (last error: ${String(last)})`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      s.close(() => resolve(typeof a === 'object' && a ? a.port : 0));
    });
  });
}

async function opened(s: Store): Promise<Store> {
  cleanups.push(() => s.close());
  return s;
}

/** Every kind of call, each of which must fail with StoreUnavailableError. */
async function expectAllUnavailable(store: Store, where: string): Promise<void> {
  const results = await Promise.allSettled([
    store.get('/u/k'),
    store.list('/u/'),
    store.put('/u/k', 'v'),
    store.delete('/u/k'),
    store.txn([{ key: '/u/k', modRevision: 0 }], [{ type: 'put', key: '/u/k', value: 'v' }]),
    store.grantLease(5),
    store.watch('/u/', { onEvents: () => undefined }),
  ]);
  for (const r of results) {
    expect(r.status).toBe('rejected');
    const err = (r as PromiseRejectedResult).reason as Error;
    expect(err).toBeInstanceOf(StoreUnavailableError);
    expect(err.message).toContain(where);
    expect(err.message).toMatch(/check that etcd is running/i);
  }
}

describe('EtcdStore against a real etcd', () => {
  it('opens through openStore with an etcd:// URL', async () => {
    const host = endpoint().replace('http://', '');
    const s = await opened(await openStore(`etcd://${host}`, { stateDir: '/nonexistent', requestTimeoutMs: 3_000 }));
    expect(s).toBeInstanceOf(EtcdStore);
    expect(s.description).toBe(`etcd://${host}`);
    const r = await s.put('/open/k', 'v');
    expect((await s.get('/open/k'))?.modRevision).toBe(r);
  });

  it('fails with StoreUnavailableError, naming the endpoint, when nothing listens', async () => {
    const port = await freePort();
    const where = `127.0.0.1:${port}`;
    const err = await EtcdStore.open({ endpoints: [`http://${where}`], requestTimeoutMs: 1_000 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StoreUnavailableError);
    expect((err as Error).message).toContain(where);

    const lazy = await opened(await EtcdStore.open({ endpoints: [where], requestTimeoutMs: 1_000, verifyConnection: false }));
    await expectAllUnavailable(lazy, where);
  });

  it('works through the live endpoint when another one is dead', async () => {
    const dead = `127.0.0.1:${await freePort()}`;
    const live = endpoint().replace('http://', '');
    const s = await opened(await openStore(`etcd://${dead},${live}`, { stateDir: '/nonexistent', requestTimeoutMs: 5_000 }));
    const events: WatchEvent[] = [];
    await s.watch('/multi/', { onEvents: (e) => events.push(...e) });
    for (let i = 0; i < 10; i++) {
      const r = await s.put(`/multi/${i}`, String(i));
      expect((await s.get(`/multi/${i}`))?.modRevision).toBe(r);
    }
    const lease = await s.grantLease(5);
    await s.put('/multi/leased', 'l', lease.id);
    await lease.revoke();
    expect(await s.get('/multi/leased')).toBeUndefined();
    await waitUntil('all watch events', () => events.length >= 12);
    expect(events.slice(0, 10).map((e) => e.value)).toEqual(['0', '1', '2', '3', '4', '5', '6', '7', '8', '9']);
  });

  it('fails with StoreUnavailableError while etcd hangs, and works again once it is back', async () => {
    const store = await opened(await EtcdStore.open({ endpoints: [endpoint()], requestTimeoutMs: 1_000 }));
    const before = await store.put('/hang/k', 'before');
    const events: WatchEvent[] = [];
    await store.watch('/hang/', { fromRevision: before, onEvents: (e) => events.push(...e) });
    await waitUntil('the first watch event', () => events.length >= 1);
    etcd!.pause();
    try {
      await expectAllUnavailable(store, endpoint().replace('http://', ''));
    } finally {
      etcd!.resume();
    }
    // the same store, not reopened
    const after = await store.put('/hang/k', 'after');
    expect(await store.get('/hang/k')).toMatchObject({ value: 'after', modRevision: after });
    await waitUntil('the watch to go on after the hang', () => events.some((e) => e.value === 'after'));
    expect(events.map((e) => e.value)).toEqual(['before', 'after']);
  });

  it('survives etcd being killed and restarted: calls fail meanwhile, the watch resumes without gaps or repeats', async () => {
    const dataDir = tmpDir('restart');
    const first = await startEtcd({ name: 'restart', dataDir });
    let current: EtcdHandle = first;
    cleanups.push(() => current.stop());
    const store = await opened(await EtcdStore.open({ endpoints: [first.endpoint], requestTimeoutMs: 1_000 }));
    const events: WatchEvent[] = [];
    const resets: Error[] = [];
    const start = await store.put('/r/0', '0');
    await store.watch('/r/', { fromRevision: start, onEvents: (e) => events.push(...e), onReset: (e) => resets.push(e) });
    await store.put('/r/1', '1');
    await waitUntil('two events', () => events.length >= 2);

    await first.stop();
    await expectAllUnavailable(store, first.endpoint.replace('http://', ''));

    current = await startEtcd({ name: 'restart', dataDir, clientPort: first.clientPort, peerPort: first.peerPort });
    // writes made by another client while our watch reconnects must reach it too
    const other = new Etcd3({ hosts: current.endpoint });
    try {
      await other.put('/r/2').value('2');
    } finally {
      other.close();
    }
    await waitUntil('the store to answer again', async () => (await store.get('/r/1'))?.value === '1');
    await store.put('/r/3', '3');
    await waitUntil('four events', () => events.length >= 4);
    expect(events.map((e) => e.key)).toEqual(['/r/0', '/r/1', '/r/2', '/r/3']);
    const revs = events.map((e) => e.revision);
    expect([...revs].sort((a, b) => a - b)).toEqual(revs);
    expect(resets).toEqual([]);
  });

  it('calls onReset when the watch revision was compacted away', async () => {
    const store = await opened(await EtcdStore.open({ endpoints: [endpoint()], requestTimeoutMs: 5_000 }));
    const r1 = await store.put('/compact/a', '1');
    const r2 = await store.put('/compact/a', '2');
    const admin = new Etcd3({ hosts: endpoint() });
    try {
      await admin.kv.compact({ revision: r2, physical: true });
    } finally {
      admin.close();
    }
    const resets: Error[] = [];
    const events: WatchEvent[] = [];
    await store.watch('/compact/', { fromRevision: r1, onEvents: (e) => events.push(...e), onReset: (e) => resets.push(e) });
    await waitUntil('onReset', () => resets.length > 0);
    expect(resets[0]!.message).toMatch(/compacted.*re-list/);
    expect(events).toEqual([]);
    // from the compaction revision on, the history is still there
    const ok: WatchEvent[] = [];
    await store.watch('/compact/', { fromRevision: r2, onEvents: (e) => ok.push(...e), onReset: (e) => resets.push(e) });
    await waitUntil('events from the compaction revision', () => ok.length >= 1);
    expect(ok[0]).toMatchObject({ key: '/compact/a', value: '2', revision: r2 });
    expect(resets).toHaveLength(1);
  });

  it('reports a lease lost while etcd was away beyond its TTL, and its keys are gone after', async () => {
    const store = await opened(await EtcdStore.open({ endpoints: [endpoint()], requestTimeoutMs: 1_000 }));
    const lease = await store.grantLease(2);
    await store.put('/lost/k', 'v', lease.id);
    const lost = new Promise<Error>((resolve) => lease.onLost(resolve));
    etcd!.pause();
    let err: Error;
    try {
      err = await Promise.race([
        lost,
        new Promise<never>((_, rej) => setTimeout(() => rej(new Error('no onLost within 30 s')), 30_000)),
      ]);
    } finally {
      etcd!.resume();
    }
    expect(err).toBeInstanceOf(Error);
    await waitUntil('the key of the lost lease to be deleted by etcd', async () => (await store.get('/lost/k')) === undefined);
  });

  it('talks TLS with a client certificate through an etcds:// URL', async () => {
    const dir = tmpDir('tls');
    const f = (n: string) => path.join(dir, n);
    const ssl = (...args: string[]) => execFileSync('openssl', args, { stdio: 'pipe' });
    ssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=weft-test-ca', '-keyout', f('ca.key'), '-out', f('ca.crt'));
    for (const who of ['server', 'client']) {
      ssl('req', '-newkey', 'rsa:2048', '-nodes', '-subj', `/CN=weft-${who}`, '-keyout', f(`${who}.key`), '-out', f(`${who}.csr`));
      fs.writeFileSync(
        f(`${who}.ext`),
        who === 'server' ? 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' : 'extendedKeyUsage=clientAuth\n',
      );
      ssl('x509', '-req', '-in', f(`${who}.csr`), '-CA', f('ca.crt'), '-CAkey', f('ca.key'), '-CAcreateserial', '-days', '1', '-extfile', f(`${who}.ext`), '-out', f(`${who}.crt`));
    }
    const secure = await startEtcd({
      name: 'tls',
      tls: {
        certFile: f('server.crt'),
        keyFile: f('server.key'),
        caFile: f('ca.crt'),
        clientCertAuth: true,
        probeCertFile: f('client.crt'),
        probeKeyFile: f('client.key'),
      },
    });
    cleanups.push(() => secure.stop());
    expect(secure.endpoint).toMatch(/^https:/);
    const hostPort = secure.endpoint.replace('https://', '');

    const s = await opened(
      await openStore(`etcds://${hostPort}`, {
        stateDir: dir,
        requestTimeoutMs: 5_000,
        tls: { ca: f('ca.crt'), cert: f('client.crt'), key: f('client.key') },
      }),
    );
    expect(s.description).toBe(`etcds://${hostPort}`);
    const r = await s.put('/tls/k', 'secret');
    expect((await s.get('/tls/k'))?.modRevision).toBe(r);

    // without a client certificate the server refuses the connection
    const err = await openStore(`etcds://${hostPort}`, { stateDir: dir, requestTimeoutMs: 1_500, tls: { ca: f('ca.crt') } }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StoreUnavailableError);
    expect((err as Error).message).toMatch(/TLS/);
    // a missing file is named
    await expect(openStore(`etcds://${hostPort}`, { stateDir: dir, requestTimeoutMs: 1_000, tls: { ca: f('missing.crt') } })).rejects.toThrow(
      /missing\.crt/,
    );
  });

  it('authenticates with a username and password, and says so when they are wrong', async () => {
    const dataDir = tmpDir('auth');
    let authEtcd = await startEtcd({ name: 'auth', dataDir });
    cleanups.push(() => authEtcd.stop());
    const admin = new Etcd3({ hosts: authEtcd.endpoint });
    try {
      await admin.role('root').create();
      const root = await admin.user('root').create('rootpw');
      await root.addRole('root');
      await admin.auth.authEnable({});
    } finally {
      admin.close();
    }
    const s = await opened(
      await EtcdStore.open({ endpoints: [authEtcd.endpoint], requestTimeoutMs: 3_000, auth: { username: 'root', password: 'rootpw' } }),
    );
    await s.put('/auth/k', 'v');
    expect((await s.get('/auth/k'))?.value).toBe('v');

    // A restarted etcd forgets its auth tokens: streams must get a new one by themselves.
    const events: WatchEvent[] = [];
    const resets: Error[] = [];
    await s.watch('/auth/', { onEvents: (e) => events.push(...e), onReset: (e) => resets.push(e) });
    const lease = await s.grantLease(10);
    let lost: Error | undefined;
    lease.onLost((e) => (lost = e));
    await s.put('/auth/leased', 'l', lease.id);
    const { clientPort, peerPort } = authEtcd;
    await authEtcd.stop();
    authEtcd = await startEtcd({ name: 'auth', dataDir, clientPort, peerPort });
    const other = new Etcd3({ hosts: authEtcd.endpoint, auth: { username: 'root', password: 'rootpw' } });
    try {
      await other.put('/auth/after').value('restart');
      await waitUntil('the watch to resume after the restart', () => events.some((e) => e.key === '/auth/after'));
      // keepalives go on: the lease outlives several of its TTLs... checked through its key
      await new Promise((r) => setTimeout(r, 12_000));
      expect(await other.get('/auth/leased').string()).toBe('l');
    } finally {
      other.close();
    }
    expect(resets).toEqual([]);
    expect(lost).toBeUndefined();

    const wrong = await EtcdStore.open({ endpoints: [authEtcd.endpoint], requestTimeoutMs: 3_000, auth: { username: 'root', password: 'nope' } }).catch(
      (e: unknown) => e,
    );
    expect(wrong).toBeInstanceOf(Error);
    expect(wrong).not.toBeInstanceOf(StoreUnavailableError);
    expect((wrong as Error).message).toMatch(/rejected the user "root".*password/);
  });
});
