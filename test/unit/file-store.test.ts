// FileStore: the contract, plus what only an on-disk store has to get right:
// reopening, torn and corrupt logs, compaction, the lock, and a writer that is
// SIGKILLed in the middle of its writes.
import { spawn, ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import ts from 'typescript';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { FileLease, FileStore, StoreCorruptError, StoreLockedError } from '../../src/store/file-store';
import { openStore, parseStoreUrl } from '../../src/store/index';
import type { WatchEvent } from '../../src/store/store';
import { storeContract } from './store-contract';

const tmpDirs: string[] = [];
function tmpDir(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'weft-filestore-'));
  tmpDirs.push(d);
  return d;
}

afterAll(() => {
  for (const d of tmpDirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

storeContract('FileStore', async () => {
  const dir = tmpDir();
  const store = await FileStore.open(dir);
  return {
    store,
    cleanup: async () => {
      await store.close();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
});

function logOf(dir: string): string {
  return path.join(dir, 'store.log');
}

async function waitUntil<T>(what: string, fn: () => T | Promise<T>, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('FileStore on disk', () => {
  const open: FileStore[] = [];
  async function openAt(dir: string, opts?: Parameters<typeof FileStore.open>[1]): Promise<FileStore> {
    const s = await FileStore.open(dir, opts);
    open.push(s);
    return s;
  }
  afterEach(async () => {
    for (const s of open.splice(0)) await s.close();
  });

  it('keeps data and revisions across a reopen', async () => {
    const dir = tmpDir();
    const a = await openAt(dir);
    expect(a.description).toBe(`file:${fs.realpathSync(dir)}/store.log`);
    const r1 = await a.put('/k/1', 'one');
    const r2 = await a.put('/k/2', 'two');
    const r3 = await a.put('/k/1', 'uno');
    await a.txn([], [{ type: 'put', key: '/k/3', value: 'three' }, { type: 'delete', key: '/k/2' }]);
    await a.close();

    const b = await openAt(dir);
    expect(b.revision).toBe(r3 + 1);
    expect(await b.get('/k/1')).toMatchObject({ value: 'uno', createRevision: r1, modRevision: r3 });
    expect(await b.get('/k/2')).toBeUndefined();
    expect((await b.list('/k/')).kvs.map((kv) => kv.key)).toEqual(['/k/1', '/k/3']);
    expect(await b.put('/k/4', 'four')).toBe(r3 + 2);
    expect(r2).toBe(r1 + 1);
  });

  it('lets a watch resume after a reopen from revisions still in the log', async () => {
    const dir = tmpDir();
    const a = await openAt(dir);
    const r1 = await a.put('/w/a', '1');
    await a.put('/w/b', '2');
    await a.close();
    const b = await openAt(dir);
    const got: WatchEvent[] = [];
    const w = await b.watch('/w/', { fromRevision: r1, onEvents: (e) => got.push(...e) });
    await waitUntil('replayed events', () => got.length >= 2);
    expect(got.map((e) => [e.key, e.value, e.revision])).toEqual([
      ['/w/a', '1', r1],
      ['/w/b', '2', r1 + 1],
    ]);
    await w.close();
  });

  it('deletes at open the keys of leases held by a previous process', async () => {
    const dir = tmpDir();
    const a = await openAt(dir);
    const lease = await a.grantLease(60);
    await a.put('/l/leased', 'x', lease.id);
    await a.put('/l/plain', 'y');
    const rev = a.revision;
    await a.close(); // leases are not revoked on close: a crash looks the same

    const b = await openAt(dir);
    expect(await b.get('/l/leased')).toBeUndefined();
    expect((await b.get('/l/plain'))?.value).toBe('y');
    expect(b.revision).toBe(rev + 1);
    await expect(b.put('/l/again', 'z', lease.id)).rejects.toThrow(/lease .* not found/);
  });

  async function storeWithRecords(n: number): Promise<{ dir: string; sizes: number[] }> {
    const dir = tmpDir();
    const s = await FileStore.open(dir);
    const sizes: number[] = [];
    for (let i = 1; i <= n; i++) {
      await s.put(`/r/${i}`, `value-${i}`);
      sizes.push(fs.statSync(logOf(dir)).size);
    }
    await s.close();
    return { dir, sizes };
  }

  it('drops a torn last record and keeps the ones before it', async () => {
    const { dir, sizes } = await storeWithRecords(5);
    // cut the last record in its middle, as a crash during the write would
    fs.truncateSync(logOf(dir), sizes[3]! + Math.floor((sizes[4]! - sizes[3]!) / 2));
    const s = await openAt(dir);
    expect(s.revision).toBe(4);
    expect((await s.list('/r/')).kvs.map((kv) => kv.value)).toEqual(['value-1', 'value-2', 'value-3', 'value-4']);
    expect(fs.statSync(logOf(dir)).size).toBe(sizes[3]);
    // the store goes on from there, and a further reopen sees it all
    expect(await s.put('/r/5', 'again')).toBe(5);
    await s.close();
    open.pop();
    const again = await openAt(dir);
    expect((await again.get('/r/5'))?.value).toBe('again');
    expect(again.revision).toBe(5);
  });

  it('drops a garbled last record (bad checksum) and garbage after the last record', async () => {
    const { dir, sizes } = await storeWithRecords(4);
    const buf = fs.readFileSync(logOf(dir));
    buf[sizes[2]! + 15] ^= 0x01; // a bit flip inside the 4th record, its newline intact
    fs.writeFileSync(logOf(dir), Buffer.concat([buf, Buffer.from('\x00\x00\x00garbage\nmore garbage')]));
    const s = await openAt(dir);
    expect(s.revision).toBe(3);
    expect(await s.get('/r/4')).toBeUndefined();
    expect((await s.get('/r/3'))?.value).toBe('value-3');
    expect(fs.statSync(logOf(dir)).size).toBe(sizes[2]);
  });

  it('refuses a log damaged in the middle, leaving it untouched', async () => {
    const { dir, sizes } = await storeWithRecords(4);
    const buf = fs.readFileSync(logOf(dir));
    buf[sizes[0]! + 15] ^= 0x01; // damage the 2nd record; the 3rd and 4th are valid
    fs.writeFileSync(logOf(dir), buf);
    await expect(FileStore.open(dir)).rejects.toThrow(StoreCorruptError);
    await expect(FileStore.open(dir)).rejects.toThrow(/corrupt at byte \d+.*valid records after it/);
    expect(fs.readFileSync(logOf(dir)).equals(buf)).toBe(true);
  });

  it('compacts the log into a snapshot and reopens from it', async () => {
    const dir = tmpDir();
    const s = await openAt(dir, { compactMinBytes: 2048 });
    let written = 0;
    const lease = await s.grantLease(60);
    await s.put('/c/leased', 'l', lease.id);
    const first = await s.put('/c/a', '0');
    for (let i = 1; i <= 500; i++) {
      await s.put(`/c/${'abc'[i % 3]}`, String(i));
      written += 40;
    }
    const rev = s.revision;
    const size = fs.statSync(logOf(dir)).size;
    expect(size).toBe(s.logSize);
    expect(size).toBeLessThan(written / 4); // 500 records would take far more without compaction
    expect(fs.existsSync(logOf(dir) + '.tmp')).toBe(false);
    // the leased key survives compactions while its lease lives
    expect((await s.get('/c/leased'))?.lease).toBe(lease.id);
    const before = (await s.list('/c/')).kvs;
    await s.close();
    open.pop();

    const b = await openAt(dir, { compactMinBytes: 2048 });
    expect(b.revision).toBe(rev + 1); // + the deletion of the dead lease's key
    expect((await b.list('/c/')).kvs).toEqual(before.filter((kv) => kv.key !== '/c/leased'));
    expect((await b.get('/c/a'))?.createRevision).toBe(first);
  });

  it('resets a watch that starts before the kept history', async () => {
    const dir = tmpDir();
    const s = await openAt(dir, { watchHistory: 5 });
    for (let i = 1; i <= 30; i++) await s.put(`/h/${i}`, String(i));
    const resets: Error[] = [];
    const events: WatchEvent[] = [];
    await s.watch('/h/', { fromRevision: 1, onEvents: (e) => events.push(...e), onReset: (e) => resets.push(e) });
    await waitUntil('onReset', () => resets.length > 0);
    expect(resets[0]!.message).toMatch(/re-list/);
    expect(events).toEqual([]);
    // a recent revision is still served
    const recent: WatchEvent[] = [];
    const w = await s.watch('/h/', { fromRevision: 29, onEvents: (e) => recent.push(...e), onReset: (e) => resets.push(e) });
    await waitUntil('recent events', () => recent.length >= 2);
    expect(recent.map((e) => e.revision)).toEqual([29, 30]);
    expect(resets).toHaveLength(1);
    await w.close();
  });

  it('expires a lease that is not kept alive and tells its holder', async () => {
    const dir = tmpDir();
    const s = await openAt(dir);
    const lease = (await s.grantLease(1)) as FileLease;
    await s.put('/e/k', 'v', lease.id);
    const lost = new Promise<Error>((r) => lease.onLost(r));
    lease.stopKeepAlive();
    expect((await lost).message).toMatch(/expired/);
    expect(await s.get('/e/k')).toBeUndefined();
  });

  it('refuses a second open of the same store in this process', async () => {
    const dir = tmpDir();
    const a = await openAt(dir);
    await expect(FileStore.open(dir)).rejects.toThrow(StoreLockedError);
    await expect(FileStore.open(dir)).rejects.toThrow(/already open in this process/);
    await a.close();
    open.pop();
    const b = await openAt(dir);
    expect(b.revision).toBe(0);
  });

  it('takes over a lock file left by an older weft that is gone, and refuses one whose writer still runs', async () => {
    const dir = tmpDir();
    const lock = path.join(dir, 'store.lock');
    // an older weft (lock by pid only) that has exited: its pid is free (or reused, with another start time)
    const dead = spawn(process.execPath, ['-e', '0']);
    await new Promise((r) => dead.on('exit', r));
    fs.writeFileSync(lock, JSON.stringify({ pid: dead.pid }));
    const s = await openAt(dir);
    const held = JSON.parse(fs.readFileSync(lock, 'utf8'));
    expect(held).toMatchObject({ pid: process.pid, flock: true });
    await s.close();
    open.pop();
    // the file stays (never unlinked: a flock is on the inode), emptied
    expect(fs.readFileSync(lock, 'utf8')).toBe('');

    // an older weft that still runs (it holds no flock): refused
    const live = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60000)'], { stdio: 'ignore' });
    try {
      await waitUntil('child to start', () => live.pid !== undefined);
      fs.writeFileSync(lock, JSON.stringify({ pid: live.pid }));
      const err = await FileStore.open(dir).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(StoreLockedError);
      expect((err as Error).message).toContain(`pid ${live.pid}`);
      expect((err as Error).message).toMatch(/older weft/);
    } finally {
      live.kill('SIGKILL');
      fs.rmSync(lock, { force: true });
    }
  });

  it('a lock file naming a live process is not a lock: only the flock counts', async () => {
    const dir = tmpDir();
    // what the old pid check got wrong across PID namespaces: content naming pid 1 (alive: init) with flock set
    fs.writeFileSync(path.join(dir, 'store.lock'), JSON.stringify({ pid: 1, flock: true }));
    const s = await openAt(dir);
    await s.put('/x', 'y');
  });

  it('takes over a garbled lock file (a crash between creating and writing it)', async () => {
    const dir = tmpDir();
    fs.writeFileSync(path.join(dir, 'store.lock'), '');
    const s = await openAt(dir);
    await s.put('/x', 'y');
  });
});

// --- a writer SIGKILLed mid-write ---------------------------------------------------

/**
 * The child runs the store compiled from source with TypeScript's transpiler
 * (no dependence on `npm run build` or on other modules compiling). Each
 * step i is one transaction: counter := i, put k/i, and on even steps delete
 * k/(i-3); it prints "ack i" once the transaction resolved.
 */
const CHILD = `
const { FileStore } = require(process.argv[2]);
const dir = process.argv[3];
const pad = (i) => String(i).padStart(8, '0');
(async () => {
  const s = await FileStore.open(dir, { compactMinBytes: 4096 });
  const lease = await s.grantLease(60);
  await s.put('leased', 'from pid ' + process.pid, lease.id);
  const c = await s.get('counter');
  let i = c ? Number(c.value) + 1 : 0;
  process.stdout.write('open ' + i + '\\n');
  for (const end = i + 100000; i < end; i++) {
    const cur = await s.get('counter');
    const ops = [
      { type: 'put', key: 'counter', value: String(i) },
      { type: 'put', key: 'k/' + pad(i), value: 'x'.repeat(i % 300) },
    ];
    if (i % 2 === 0 && i >= 3) ops.push({ type: 'delete', key: 'k/' + pad(i - 3) });
    const r = await s.txn([{ key: 'counter', modRevision: cur ? cur.modRevision : 0 }], ops);
    if (!r.succeeded) { process.stderr.write('unexpected CAS failure at ' + i + '\\n'); process.exit(3); }
    process.stdout.write('ack ' + i + '\\n');
  }
})().catch((e) => { process.stderr.write(String(e && e.stack || e) + '\\n'); process.exit(2); });
`;

function expectedKeys(n: number): string[] {
  const keys = new Set<string>();
  const pad = (i: number) => String(i).padStart(8, '0');
  for (let i = 0; i < n; i++) {
    keys.add('k/' + pad(i));
    if (i % 2 === 0 && i >= 3) keys.delete('k/' + pad(i - 3));
  }
  return [...keys].sort();
}

/**
 * Compiles the store from source with TypeScript's transpiler into dir, in the
 * package's layout (src/store, src/store/file-store/*, src/native.js, native/
 * linked to the built addon), with no dependence on `npm run build`; returns
 * file-store.js.
 */
function transpileFileStore(dir: string): string {
  const root = path.join(__dirname, '../..');
  const parts = fs
    .readdirSync(path.join(root, 'src/store/file-store'))
    .filter((f) => f.endsWith('.ts'))
    .map((f) => `store/file-store/${f.slice(0, -3)}`);
  for (const rel of ['store/store', 'store/file-store', ...parts, 'native']) {
    const src = fs.readFileSync(path.join(root, 'src', `${rel}.ts`), 'utf8');
    const js = ts.transpileModule(src, {
      compilerOptions: { module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2022, esModuleInterop: true },
      fileName: `${rel}.ts`,
    }).outputText;
    fs.mkdirSync(path.join(dir, 'src', path.dirname(rel)), { recursive: true });
    fs.writeFileSync(path.join(dir, 'src', `${rel}.js`), js);
  }
  if (!fs.existsSync(path.join(dir, 'native'))) fs.symlinkSync(path.join(root, 'native'), path.join(dir, 'native'));
  return path.join(dir, 'src', 'store', 'file-store.js');
}

describe('FileStore under SIGKILL', () => {
  let work: string;
  let modulePath: string;
  const children: ChildProcess[] = [];

  beforeAll(() => {
    work = tmpDir();
    modulePath = transpileFileStore(work);
    fs.writeFileSync(path.join(work, 'child.js'), CHILD);
  });

  afterAll(() => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  });

  /** Runs the child until it acknowledged `acks` more steps (or, if it starts mid-write, we kill during compaction too). */
  async function runAndKill(dir: string, acks: number): Promise<{ lastAck: number; lockError: unknown }> {
    const child = spawn(process.execPath, [path.join(work, 'child.js'), modulePath, dir], { stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(child);
    let out = '';
    let err = '';
    let lastAck = -1;
    let seen = 0;
    let opened = false;
    let lockError: unknown;
    const exited = new Promise<void>((r) => child.on('exit', () => r()));
    child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`child made ${seen} acks in 60 s; stderr: ${err}`)), 60_000);
      child.stdout!.on('data', (d: Buffer) => {
        out += d.toString();
        const lines = out.split('\n');
        out = lines.pop()!;
        for (const l of lines) {
          if (l.startsWith('open')) opened = true;
          const m = /^ack (\d+)$/.exec(l);
          if (m) {
            lastAck = Number(m[1]);
            seen++;
          }
        }
        if (opened && lockError === undefined) {
          lockError = null;
          // while the child holds the store, we may not open it
          FileStore.open(dir).then(
            async (s) => {
              lockError = new Error('opened a store held by a live process');
              await s.close();
            },
            (e: unknown) => (lockError = e),
          );
        }
        if (seen >= acks) {
          clearTimeout(timer);
          child.kill('SIGKILL');
          resolve();
        }
      });
      child.on('exit', (code, sig) => {
        if (sig !== 'SIGKILL') {
          clearTimeout(timer);
          reject(new Error(`child exited early (code ${code}, signal ${sig}); stderr: ${err}`));
        }
      });
    });
    await exited;
    await waitUntil('the lock probe to finish', () => lockError !== null && lockError !== undefined);
    return { lastAck, lockError };
  }

  it('reopens with every acknowledged write, a consistent prefix, and no corruption', async () => {
    const dir = tmpDir();
    let lastAck = -1;
    for (const acks of [37, 211, 423]) {
      const r = await runAndKill(dir, acks);
      expect(r.lockError).toBeInstanceOf(StoreLockedError);
      expect(r.lastAck).toBeGreaterThan(lastAck);
      lastAck = r.lastAck;

      const s = await FileStore.open(dir);
      try {
        const counter = Number((await s.get('counter'))!.value);
        // every acknowledged step is there; at most the one in flight beyond it
        expect(counter).toBeGreaterThanOrEqual(lastAck);
        expect(counter).toBeLessThanOrEqual(lastAck + 1);
        // the keys are exactly those of steps 0..counter: no step half applied
        const keys = (await s.list('k/')).kvs;
        expect(keys.map((kv) => kv.key)).toEqual(expectedKeys(counter + 1));
        for (const kv of keys) expect(kv.value).toBe('x'.repeat(Number(kv.key.slice(2)) % 300));
        // the dead child's lease died with it
        expect(await s.get('leased')).toBeUndefined();
        lastAck = counter;
      } finally {
        await s.close();
      }
    }
  });
});

// --- openStore ----------------------------------------------------------------------

describe('openStore URLs', () => {
  it('parses file and etcd URLs', () => {
    expect(parseStoreUrl('', '/var/lib/weft')).toEqual({ kind: 'file', dir: '/var/lib/weft' });
    expect(parseStoreUrl('file:', '/var/lib/weft')).toEqual({ kind: 'file', dir: '/var/lib/weft' });
    expect(parseStoreUrl('file:/data/weft/', '/x')).toEqual({ kind: 'file', dir: '/data/weft' });
    expect(parseStoreUrl('file:///data/weft', '/x')).toEqual({ kind: 'file', dir: '/data/weft' });
    expect(parseStoreUrl('etcd://10.0.0.1:2379,etcd-2:2380,[fd00::1]:2379', '/x')).toEqual({
      kind: 'etcd',
      secure: false,
      endpoints: ['http://10.0.0.1:2379', 'http://etcd-2:2380', 'http://[fd00::1]:2379'],
    });
    expect(parseStoreUrl('etcds://e1', '/x')).toEqual({ kind: 'etcd', secure: true, endpoints: ['https://e1:2379'] });
  });

  it('explains what a bad URL should look like', () => {
    expect(() => parseStoreUrl('redis://h:6379', '/x')).toThrow(/unknown store URL "redis:\/\/h:6379": use file:\/path or etcd:\/\/host:2379/);
    expect(() => parseStoreUrl('file:relative/dir', '/x')).toThrow(/absolute/);
    expect(() => parseStoreUrl('file://otherhost/dir', '/x')).toThrow(/local absolute path/);
    expect(() => parseStoreUrl('etcd://', '/x')).toThrow(/no etcd endpoint/);
    expect(() => parseStoreUrl('etcd://h:99999', '/x')).toThrow(/not host:port/);
    expect(() => parseStoreUrl('etcd://h:2379/path', '/x')).toThrow(/not host:port/);
  });

  it('opens the embedded store in the state dir', async () => {
    const dir = tmpDir();
    const s = await openStore('file:', { stateDir: dir, requestTimeoutMs: 1000 });
    try {
      expect(s).toBeInstanceOf(FileStore);
      expect(s.description).toContain(fs.realpathSync(dir));
      await s.put('/a', 'b');
    } finally {
      await s.close();
    }
    await expect(openStore('etcd://127.0.0.1:2379', { stateDir: dir, requestTimeoutMs: 1000, tls: { ca: '/nope' } })).rejects.toThrow(/etcds:\/\//);
  });
});

// --- two processes, one in another PID namespace ---------------------------------

const LOCKER = `
const { FileStore } = require(process.argv[2]);
const [mode, dir] = process.argv.slice(3);
(async () => {
  try {
    const s = await FileStore.open(dir);
    await s.put('/by/' + mode, 'pid ' + process.pid);
    process.stdout.write('open ' + process.pid + '\\n');
    if (mode === 'probe') { await s.close(); return; }
    setInterval(() => {}, 60000);
  } catch (e) {
    process.stdout.write('refused ' + (e.code || '') + ' ' + e.message + '\\n');
  }
})();
`;

describe('FileStore lock across PID namespaces', () => {
  const asRoot = process.getuid?.() === 0;
  let work: string;
  let modulePath: string;
  const children: ChildProcess[] = [];

  beforeAll(() => {
    work = tmpDir();
    modulePath = transpileFileStore(work);
    fs.writeFileSync(path.join(work, 'locker.js'), LOCKER);
  });
  afterAll(() => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  });

  /** Runs the locker in a new PID namespace (where it is pid 1, as a managed plugin is) with its own /proc. */
  function inNewPidNs(mode: 'hold' | 'probe', dir: string): { child: ChildProcess; line: Promise<string> } {
    const child = spawn('unshare', ['--pid', '--fork', '--kill-child', '--mount-proc', process.execPath, path.join(work, 'locker.js'), modulePath, mode, dir],
      { stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(child);
    let out = '';
    let err = '';
    child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    const line = new Promise<string>((resolve, reject) => {
      child.stdout!.on('data', (d: Buffer) => {
        out += d.toString();
        if (out.includes('\n')) resolve(out.split('\n')[0]);
      });
      child.on('exit', (code) => reject(new Error(`locker exited (code ${code}) without a word; stderr: ${err}`)));
    });
    return { child, line };
  }

  it.skipIf(!asRoot)('refuses the second of two wefts on one store directory, whichever PID namespace each is in; the store stays intact', async () => {
    const dir = tmpDir();
    // this process holds it; a weft in another PID namespace is refused
    const mine = await FileStore.open(dir);
    await mine.put('/by/parent', 'first');
    const probe = inNewPidNs('probe', dir);
    const said = await probe.line;
    expect(said).toMatch(/^refused WEFT_STORE_LOCKED /);
    expect(said).toContain(`pid ${process.pid} in another PID namespace`);
    await mine.close();

    // a weft that is pid 1 in its own PID namespace holds it; this process is refused
    const holder = inNewPidNs('hold', dir);
    expect(await holder.line).toBe('open 1');
    const err = await FileStore.open(dir).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StoreLockedError);
    expect((err as Error).message).toContain('pid 1 in another PID namespace');
    expect((err as Error).message).toMatch(/stop that process first/);

    // the holder dies: the kernel drops its lock, with nothing to clean up
    holder.child.kill('SIGKILL');
    const reopened = await waitUntil('the lock of the dead holder to be released', async () =>
      FileStore.open(dir).catch((e: unknown) => { if (e instanceof StoreLockedError) return undefined; throw e; }));
    try {
      expect((await reopened.get('/by/parent'))?.value).toBe('first');
      expect((await reopened.get('/by/hold'))?.value).toBe('pid 1');
      expect(await reopened.get('/by/probe')).toBeUndefined();
    } finally {
      await reopened.close();
    }
  });
});

