// The contract every Store implementation passes (FileStore, EtcdStore).
// Control-plane code is written against store.ts alone, so anything it may
// rely on is pinned down here, including what etcd refuses (duplicate keys in
// one transaction) so that code tested on the embedded store works on a
// cluster too.
//
// Keys live under a fresh prefix per test, so the suite also runs against a
// shared etcd. Waits are bounded and only ever wait *for* something; absence
// is checked behind a barrier (a later event that must come after it).
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Lease, Store, WatchEvent, Watcher } from '../../src/store/store';

export interface OpenedStore {
  store: Store;
  cleanup: () => Promise<void>;
}

/** Leases of both implementations can stop renewing (a dead process, simulated). */
interface StoppableLease extends Lease {
  stopKeepAlive?: () => void;
}

const WAIT_MS = 15_000;

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

async function waitUntil<T>(what: string, fn: () => Promise<T> | T, timeoutMs = WAIT_MS): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v as NonNullable<T>;
      last = v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (last: ${last instanceof Error ? last.message : JSON.stringify(last)})`);
    }
    await sleep(25);
  }
}

function withTimeout<T>(what: string, p: Promise<T>, timeoutMs = WAIT_MS): Promise<T> {
  let t: NodeJS.Timeout | undefined;
  const timer = new Promise<never>((_, rej) => {
    t = setTimeout(() => rej(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)), timeoutMs);
  });
  return Promise.race([p, timer]).finally(() => clearTimeout(t));
}

interface Collected {
  events: WatchEvent[];
  batches: number;
  resets: Error[];
  watcher: Watcher;
  /** Resolves once at least n events arrived. */
  waitCount(n: number): Promise<WatchEvent[]>;
}

async function collect(store: Store, prefix: string, fromRevision?: number): Promise<Collected> {
  const c: Omit<Collected, 'watcher'> & { watcher?: Watcher } = {
    events: [],
    batches: 0,
    resets: [],
    waitCount: (n) => waitUntil(`${n} watch events on ${prefix} (got ${c.events.length})`, () => (c.events.length >= n ? c.events : undefined)),
  };
  c.watcher = await store.watch(prefix, {
    ...(fromRevision !== undefined ? { fromRevision } : {}),
    onEvents: (evs) => {
      c.batches++;
      c.events.push(...evs);
    },
    onReset: (err) => c.resets.push(err),
  });
  return c as Collected;
}

const strip = (e: WatchEvent) => ({ type: e.type, key: e.key, value: e.value, revision: e.revision });

let counter = 0;
function uniquePrefix(): string {
  return `/contract/${process.pid}-${Date.now().toString(36)}-${(counter++).toString(36)}/`;
}

export function storeContract(name: string, open: () => Promise<OpenedStore>): void {
  describe(`Store contract: ${name}`, () => {
    let store: Store;
    let cleanup: (() => Promise<void>) | undefined;
    let P: string;
    const watchers: Watcher[] = [];

    beforeEach(async () => {
      const o = await open();
      store = o.store;
      cleanup = o.cleanup;
      P = uniquePrefix();
    });

    afterEach(async () => {
      for (const w of watchers.splice(0)) await w.close().catch(() => undefined);
      const c = cleanup;
      cleanup = undefined;
      await c?.();
    });

    async function watchAll(prefix: string, fromRevision?: number): Promise<Collected> {
      const c = await collect(store, prefix, fromRevision);
      watchers.push(c.watcher);
      return c;
    }

    it('has a description', () => {
      expect(typeof store.description).toBe('string');
      expect(store.description.length).toBeGreaterThan(0);
    });

    it('gets what was put, with create and mod revisions', async () => {
      expect(await store.get(P + 'k')).toBeUndefined();
      const r1 = await store.put(P + 'k', 'v1');
      expect(await store.get(P + 'k')).toMatchObject({ key: P + 'k', value: 'v1', createRevision: r1, modRevision: r1 });
      const r2 = await store.put(P + 'k', 'v2');
      expect(r2).toBeGreaterThan(r1);
      const kv = await store.get(P + 'k');
      expect(kv).toMatchObject({ value: 'v2', createRevision: r1, modRevision: r2 });
      expect(kv?.lease).toBeUndefined();
    });

    it('keeps values byte for byte (unicode, newlines, JSON, empty)', async () => {
      const values = ['', 'line1\nline2\r\n', '{"a":[1,2,{"b":"\\u0000"}]}', 'café ☕ 😀', ' '.repeat(3)];
      for (const [i, v] of values.entries()) await store.put(`${P}v${i}`, v);
      for (const [i, v] of values.entries()) expect((await store.get(`${P}v${i}`))?.value).toBe(v);
    });

    it('deletes, reports whether the key existed, and recreates with a new createRevision', async () => {
      const r1 = await store.put(P + 'k', 'v');
      expect(await store.delete(P + 'k')).toBe(true);
      expect(await store.get(P + 'k')).toBeUndefined();
      expect(await store.delete(P + 'k')).toBe(false);
      const r2 = await store.put(P + 'k', 'again');
      expect(r2).toBeGreaterThan(r1);
      expect(await store.get(P + 'k')).toMatchObject({ value: 'again', createRevision: r2, modRevision: r2 });
    });

    it('lists a prefix in key (byte) order and nothing from neighbouring prefixes', async () => {
      const inside = ['a/1', 'a/10', 'a/2', 'a/z', 'a/é', 'a/\uFFFD', 'a/😀', 'a/'];
      const outside = ['a', 'ab', 'a0', 'b/1', '_a/1'];
      for (const k of [...outside, ...inside].reverse()) await store.put(P + k, k);
      const r = await store.list(P + 'a/');
      // etcd orders by UTF-8 bytes: 😀 (F0..) after U+FFFD (EF..), although its UTF-16 form sorts before.
      expect(r.kvs.map((kv) => kv.key.slice(P.length))).toEqual(['a/', 'a/1', 'a/10', 'a/2', 'a/z', 'a/é', 'a/\uFFFD', 'a/😀']);
      expect(r.kvs.every((kv) => kv.value === kv.key.slice(P.length))).toBe(true);
      const last = await store.get(P + inside[0]!);
      expect(r.revision).toBeGreaterThanOrEqual(last!.modRevision);
      expect((await store.list(P + 'nothing/')).kvs).toEqual([]);
      const all = await store.list(P);
      expect(all.kvs).toHaveLength(inside.length + outside.length);
    });

    it('create-if-absent succeeds once and fails the second time', async () => {
      const k = P + 'once';
      const a = await store.txn([{ key: k, modRevision: 0 }], [{ type: 'put', key: k, value: 'first' }]);
      expect(a.succeeded).toBe(true);
      const b = await store.txn([{ key: k, modRevision: 0 }], [{ type: 'put', key: k, value: 'second' }]);
      expect(b.succeeded).toBe(false);
      expect(b.revision).toBe(a.revision);
      expect(await store.get(k)).toMatchObject({ value: 'first', modRevision: a.revision });
    });

    it('compare-and-swap fails with a stale modRevision and succeeds with the current one', async () => {
      const k = P + 'cas';
      const r1 = await store.put(k, '1');
      const r2 = await store.put(k, '2');
      const stale = await store.txn([{ key: k, modRevision: r1 }], [{ type: 'put', key: k, value: 'stale' }]);
      expect(stale.succeeded).toBe(false);
      expect((await store.get(k))?.value).toBe('2');
      const ok = await store.txn([{ key: k, modRevision: r2 }], [{ type: 'put', key: k, value: '3' }]);
      expect(ok.succeeded).toBe(true);
      expect(await store.get(k)).toMatchObject({ value: '3', modRevision: ok.revision });
      // a revision compare on an absent key fails; an absence compare on a present key fails
      expect((await store.txn([{ key: P + 'absent', modRevision: r1 }], [{ type: 'put', key: P + 'x', value: 'x' }])).succeeded).toBe(false);
      expect((await store.txn([{ key: k, modRevision: 0 }], [{ type: 'put', key: P + 'x', value: 'x' }])).succeeded).toBe(false);
      expect(await store.get(P + 'x')).toBeUndefined();
    });

    it('lets exactly one of 50 concurrent create-if-absent transactions win', async () => {
      const k = P + 'race';
      const results = await Promise.all(
        Array.from({ length: 50 }, (_, i) => store.txn([{ key: k, modRevision: 0 }], [{ type: 'put', key: k, value: `w${i}` }])),
      );
      const winners = results.map((r, i) => ({ r, i })).filter((x) => x.r.succeeded);
      expect(winners).toHaveLength(1);
      const w = winners[0]!;
      expect(await store.get(k)).toMatchObject({ value: `w${w.i}`, modRevision: w.r.revision });
    });

    it('loses no update under concurrent read-modify-write with CAS retries', async () => {
      const k = P + 'counter';
      await store.put(k, '0');
      const worker = async (): Promise<number> => {
        let attempts = 0;
        for (let done = 0; done < 5; ) {
          if (++attempts > 1000) throw new Error('CAS worker made no progress in 1000 attempts');
          const kv = (await store.get(k))!;
          const r = await store.txn([{ key: k, modRevision: kv.modRevision }], [{ type: 'put', key: k, value: String(Number(kv.value) + 1) }]);
          if (r.succeeded) done++;
        }
        return attempts;
      };
      await Promise.all(Array.from({ length: 10 }, worker));
      expect((await store.get(k))?.value).toBe('50');
    });

    it('applies multi-op transactions atomically, at one revision', async () => {
      await store.put(P + 'c', 'c');
      await store.put(P + 'd/1', 'd1');
      await store.put(P + 'd/2', 'd2');
      const guard = await store.put(P + 'guard', 'g');
      const ops = [
        { type: 'put' as const, key: P + 'a', value: 'A' },
        { type: 'put' as const, key: P + 'b', value: 'B' },
        { type: 'delete' as const, key: P + 'c' },
        { type: 'deletePrefix' as const, prefix: P + 'd/' },
      ];
      // a failing compare among holding ones: nothing happens
      const failed = await store.txn(
        [
          { key: P + 'guard', modRevision: guard },
          { key: P + 'a', modRevision: 1 },
        ],
        ops,
      );
      expect(failed.succeeded).toBe(false);
      expect((await store.list(P)).kvs.map((kv) => kv.key)).toEqual([P + 'c', P + 'd/1', P + 'd/2', P + 'guard']);

      const before = (await store.list(P)).revision;
      const ok = await store.txn([{ key: P + 'guard', modRevision: guard }, { key: P + 'a', modRevision: 0 }], ops);
      expect(ok.succeeded).toBe(true);
      expect(ok.revision).toBeGreaterThan(before);
      const after = await store.list(P);
      expect(after.kvs.map((kv) => [kv.key, kv.value, kv.modRevision])).toEqual([
        [P + 'a', 'A', ok.revision],
        [P + 'b', 'B', ok.revision],
        [P + 'guard', 'g', guard],
      ]);
    });

    it('applies a transaction with no compares and with no ops', async () => {
      const r = await store.txn([], [{ type: 'put', key: P + 'k', value: 'v' }]);
      expect(r.succeeded).toBe(true);
      expect((await store.get(P + 'k'))?.modRevision).toBe(r.revision);
      const empty = await store.txn([{ key: P + 'k', modRevision: r.revision }], []);
      expect(empty).toEqual({ succeeded: true, revision: r.revision });
    });

    it('refuses, as etcd does, a transaction that touches a key twice', async () => {
      const k = P + 'dup';
      await expect(
        store.txn([], [
          { type: 'put', key: k, value: '1' },
          { type: 'put', key: k, value: '2' },
        ]),
      ).rejects.toThrow();
      await expect(
        store.txn([], [
          { type: 'put', key: k, value: '1' },
          { type: 'delete', key: k },
        ]),
      ).rejects.toThrow();
      await expect(
        store.txn([], [
          { type: 'deletePrefix', prefix: P },
          { type: 'put', key: k, value: '1' },
        ]),
      ).rejects.toThrow();
      expect(await store.get(k)).toBeUndefined();
    });

    it('moves the revision forward on every change and never on a failed or empty change', async () => {
      const revs: number[] = [];
      for (let i = 0; i < 5; i++) revs.push(await store.put(P + 'r' + i, String(i)));
      for (let i = 1; i < revs.length; i++) expect(revs[i]!).toBeGreaterThan(revs[i - 1]!);
      const now = (await store.list(P)).revision;
      expect(now).toBeGreaterThanOrEqual(revs[4]!);
      const failed = await store.txn([{ key: P + 'r0', modRevision: 0 }], [{ type: 'put', key: P + 'z', value: 'z' }]);
      expect(failed.succeeded).toBe(false);
      expect(failed.revision).toBe(now);
      expect(await store.delete(P + 'never')).toBe(false);
      expect((await store.list(P)).revision).toBe(now);
      // other writers may share the store (etcd): compare our own keys' revisions
      const next = await store.put(P + 'r5', '5');
      expect(next).toBeGreaterThan(now);
      expect((await store.get(P + 'r0'))?.modRevision).toBe(revs[0]);
    });

    it('watches from a revision: past events, then future ones, in order', async () => {
      const r1 = await store.put(P + 'w/a', '1');
      const r2 = await store.put(P + 'w/b', '2');
      expect(await store.delete(P + 'w/a')).toBe(true);
      await store.put(P + 'other', 'not watched');
      const c = await watchAll(P + 'w/', r1);
      const r4 = await store.put(P + 'w/c', '3');
      const evs = await c.waitCount(4);
      expect(evs.map(strip)).toEqual([
        { type: 'put', key: P + 'w/a', value: '1', revision: r1 },
        { type: 'put', key: P + 'w/b', value: '2', revision: r2 },
        { type: 'delete', key: P + 'w/a', value: undefined, revision: r2 + 1 },
        { type: 'put', key: P + 'w/c', value: '3', revision: r4 },
      ]);
      expect(c.resets).toEqual([]);
    });

    it('watches from a later revision only', async () => {
      await store.put(P + 'w/a', '1');
      const r2 = await store.put(P + 'w/a', '2');
      const c = await watchAll(P + 'w/', r2);
      await store.put(P + 'w/a', '3');
      const evs = await c.waitCount(2);
      expect(evs.map((e) => e.value)).toEqual(['2', '3']);
    });

    it('watches without a revision: only changes after the watch started', async () => {
      await store.put(P + 'w/old', 'old');
      const c = await watchAll(P + 'w/');
      await store.put(P + 'w2/neighbour', 'n');
      const r = await store.put(P + 'w/new', 'new');
      const evs = await c.waitCount(1);
      expect(evs.map(strip)).toEqual([{ type: 'put', key: P + 'w/new', value: 'new', revision: r }]);
    });

    it('misses nothing between a list and a watch from its revision + 1', async () => {
      await store.put(P + 'l/1', '1');
      const listed = await store.list(P + 'l/');
      const r2 = await store.put(P + 'l/2', '2');
      const r3 = await store.put(P + 'l/1', '1b');
      const c = await watchAll(P + 'l/', listed.revision + 1);
      const evs = await c.waitCount(2);
      expect(evs.map((e) => [e.key, e.revision])).toEqual([
        [P + 'l/2', r2],
        [P + 'l/1', r3],
      ]);
    });

    it('sends one delete event per key for deletePrefix, at one revision, and spares neighbours', async () => {
      for (const k of ['d/1', 'd/2', 'd/3', 'd2/1', 'd']) await store.put(P + k, k);
      const c = await watchAll(P);
      const r = await store.txn([], [{ type: 'deletePrefix', prefix: P + 'd/' }]);
      expect(r.succeeded).toBe(true);
      const barrier = await store.put(P + 'barrier', 'b');
      const evs = await c.waitCount(4);
      expect(evs.map(strip)).toEqual([
        { type: 'delete', key: P + 'd/1', value: undefined, revision: r.revision },
        { type: 'delete', key: P + 'd/2', value: undefined, revision: r.revision },
        { type: 'delete', key: P + 'd/3', value: undefined, revision: r.revision },
        { type: 'put', key: P + 'barrier', value: 'b', revision: barrier },
      ]);
      expect((await store.list(P)).kvs.map((kv) => kv.key)).toEqual([P + 'barrier', P + 'd', P + 'd2/1']);
    });

    it('keeps a watch going when its callback throws', async () => {
      let calls = 0;
      const seen: string[] = [];
      const w = await store.watch(P, {
        onEvents: (evs) => {
          calls++;
          seen.push(...evs.map((e) => e.key));
          if (calls === 1) throw new Error('callback bug');
        },
      });
      watchers.push(w);
      await store.put(P + '1', '1');
      await waitUntil('first event', () => seen.length >= 1);
      await store.put(P + '2', '2');
      await waitUntil('second event after a throwing callback', () => seen.includes(P + '2'));
    });

    it('stops delivering after a watcher is closed', async () => {
      const closed = await watchAll(P);
      const open = await watchAll(P);
      await store.put(P + '1', '1');
      await closed.waitCount(1);
      await closed.watcher.close();
      await store.put(P + '2', '2');
      await open.waitCount(2);
      // the second put reached the open watcher, so it would have reached the closed one by now
      await store.put(P + '3', '3');
      await open.waitCount(3);
      expect(closed.events.map((e) => e.key)).toEqual([P + '1']);
    });

    it('deletes the keys of a revoked lease and refuses the lease afterwards', async () => {
      const lease = await store.grantLease(30);
      expect(typeof lease.id).toBe('string');
      expect(lease.ttlSeconds).toBe(30);
      await store.put(P + 'l/put', 'a', lease.id);
      const t = await store.txn([{ key: P + 'l/txn', modRevision: 0 }], [{ type: 'put', key: P + 'l/txn', value: 'b', lease: lease.id }]);
      expect(t.succeeded).toBe(true);
      await store.put(P + 'l/plain', 'c');
      expect((await store.get(P + 'l/put'))?.lease).toBe(lease.id);
      expect((await store.get(P + 'l/txn'))?.lease).toBe(lease.id);
      // overwriting without a lease detaches the key from it
      await store.put(P + 'l/detached', 'd', lease.id);
      await store.put(P + 'l/detached', 'd2');
      expect((await store.get(P + 'l/detached'))?.lease).toBeUndefined();

      const c = await watchAll(P + 'l/');
      let lost: Error | undefined;
      lease.onLost((e) => (lost = e));
      await lease.revoke();
      expect(await store.get(P + 'l/put')).toBeUndefined();
      expect(await store.get(P + 'l/txn')).toBeUndefined();
      expect((await store.list(P + 'l/')).kvs.map((kv) => kv.key)).toEqual([P + 'l/detached', P + 'l/plain']);
      const evs = await c.waitCount(2);
      expect(evs.map((e) => [e.type, e.key]).sort()).toEqual([
        ['delete', P + 'l/put'],
        ['delete', P + 'l/txn'],
      ]);
      await expect(store.put(P + 'l/late', 'x', lease.id)).rejects.toThrow();
      expect(await store.get(P + 'l/late')).toBeUndefined();
      await lease.revoke(); // twice is harmless
      expect(lost).toBeUndefined();
    });

    it('refuses a lease TTL that is not a whole number of seconds >= 1', async () => {
      await expect(store.grantLease(0)).rejects.toThrow();
      await expect(store.grantLease(1.5)).rejects.toThrow();
    });

    it('keeps a lease alive past its TTL while the store renews it', async () => {
      const lease = await store.grantLease(1);
      await store.put(P + 'alive', 'yes', lease.id);
      // etcd rounds TTLs up to at least 2 s: wait past two of those
      await sleep(4_500);
      expect((await store.get(P + 'alive'))?.lease).toBe(lease.id);
      await lease.revoke();
    });

    it('expires a lease that is not kept alive: its keys vanish and onLost fires', async () => {
      const lease = (await store.grantLease(1)) as StoppableLease;
      expect(typeof lease.stopKeepAlive).toBe('function');
      await store.put(P + 'exp/1', '1', lease.id);
      await store.put(P + 'keep', 'k');
      const lost = new Promise<Error>((resolve) => lease.onLost(resolve));
      lease.stopKeepAlive!();
      await waitUntil('the expired lease key to vanish', async () => (await store.get(P + 'exp/1')) === undefined, 30_000);
      const err = await withTimeout('onLost after expiry', lost, 30_000);
      expect(err).toBeInstanceOf(Error);
      expect((await store.get(P + 'keep'))?.value).toBe('k');
      // a late onLost registration still hears about it
      const late = await withTimeout('late onLost', new Promise<Error>((resolve) => lease.onLost(resolve)));
      expect(late).toBeInstanceOf(Error);
    });

    it('rejects calls after close, and close is idempotent', async () => {
      await store.put(P + 'k', 'v');
      const c = cleanup;
      cleanup = undefined;
      await store.close();
      await store.close();
      await expect(store.get(P + 'k')).rejects.toThrow();
      await expect(store.put(P + 'k', 'v2')).rejects.toThrow();
      await c?.();
    });
  });
}
