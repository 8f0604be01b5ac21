// A Store that times every request and counts failures, for the metrics and
// for /healthz ("the store answered recently"). It forwards everything else
// untouched: watches and leases keep their own connection to the store.
import { areaOf } from '../store/keys';
import type { Compare, KeyValue, Lease, ListResult, Op, Store, TxnResult, Watcher, WatchOptions } from '../store/store';

export interface StoreObserver {
  observeStore(op: string, ok: boolean, seconds: number): void;
  /** Bytes of keys and values an answer carried, by key area (areaOf, store/keys.ts). */
  observeStoreBytes?(op: string, area: string, bytes: number): void;
}

const kvBytes = (kv: KeyValue): number => Buffer.byteLength(kv.key) + Buffer.byteLength(kv.value);

export class InstrumentedStore implements Store {
  /** Date.now() of the last request that succeeded (0: none yet). */
  lastSuccess = 0;
  lastError: { at: number; message: string } | undefined;

  constructor(readonly inner: Store, private readonly observer?: StoreObserver) {}

  get description(): string {
    return this.inner.description;
  }

  private async timed<T>(op: string, fn: () => Promise<T>): Promise<T> {
    const t0 = process.hrtime.bigint();
    try {
      const r = await fn();
      this.lastSuccess = Date.now();
      this.observer?.observeStore(op, true, Number(process.hrtime.bigint() - t0) / 1e9);
      return r;
    } catch (err) {
      this.lastError = { at: Date.now(), message: err instanceof Error ? err.message : String(err) };
      this.observer?.observeStore(op, false, Number(process.hrtime.bigint() - t0) / 1e9);
      throw err;
    }
  }

  async get(key: string): Promise<KeyValue | undefined> {
    const kv = await this.timed('get', () => this.inner.get(key));
    this.observer?.observeStoreBytes?.('get', areaOf(key), kv ? kvBytes(kv) : 0);
    return kv;
  }
  async list(prefix: string): Promise<ListResult> {
    const r = await this.timed('list', () => this.inner.list(prefix));
    let bytes = 0;
    for (const kv of r.kvs) bytes += kvBytes(kv);
    this.observer?.observeStoreBytes?.('list', areaOf(prefix), bytes);
    return r;
  }
  txn(compares: Compare[], ops: Op[]): Promise<TxnResult> {
    return this.timed('txn', () => this.inner.txn(compares, ops));
  }
  put(key: string, value: string, lease?: string): Promise<number> {
    return this.timed('put', () => this.inner.put(key, value, lease));
  }
  delete(key: string): Promise<boolean> {
    return this.timed('delete', () => this.inner.delete(key));
  }
  watch(prefix: string, opts: WatchOptions): Promise<Watcher> {
    return this.timed('watch', () => this.inner.watch(prefix, opts));
  }
  grantLease(ttlSeconds: number): Promise<Lease> {
    return this.timed('lease', () => this.inner.grantLease(ttlSeconds));
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}
