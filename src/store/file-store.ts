// FileStore: the embedded store for a single host, with no etcd.
//
// State lives in memory (an ordered key map) and in an append-only log on
// disk, `<dir>/store.log`: one checksummed line per committed transaction
// (the format is in file-store/codec.ts), written and fdatasync'ed before the
// transaction resolves, so an acknowledged write survives a crash. At open the
// log is replayed; a torn or corrupt tail (a crash in the middle of an append)
// is cut away. A corrupt record *followed by valid ones* cannot come from a
// crash, so it is refused rather than silently dropping committed data.
//
// Compaction rewrites the log as a single snapshot record into a temp file,
// fsyncs it, renames it over the log and fsyncs the directory, so at every
// instant either the old or the new log is complete on disk.
//
// A lock (flock on store.lock, file-store/lock.ts) keeps two weft processes
// from opening the same store, in any PID namespace. Leases are in-process
// timers: a lease belongs to the process that granted it, so keys still
// attached to a lease when the store is opened belong to a process that died
// and are deleted at open.
//
// This file is the store itself: open and replay, transactions, compaction,
// and the bookkeeping of watches and leases. Key order and the checks on what
// callers pass are in file-store/keyspace.ts; the watcher and lease handles
// in file-store/watch.ts.
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import {
  Compare,
  KeyValue,
  Lease,
  LeaseId,
  ListResult,
  Op,
  silentLogger,
  Store,
  StoreLogger,
  StoreUnavailableError,
  TxnResult,
  WatchEvent,
  Watcher,
  WatchOptions,
} from './store';
import { checkKey, checkTtl, compareKeys, lowerBound, validateTxn } from './file-store/keyspace';
import { acquireLock, HeldLock, releaseLock, StoreLockedError } from './file-store/lock';
import { FileLease, FileWatcher, LeaseState } from './file-store/watch';
import { Change, decodeRecord, encodeRecord, FORMAT_VERSION, LogRecord, SnapKv } from './file-store/codec';

// What other modules import from here.
export { compareKeys, FileLease, silentLogger, StoreLockedError, validateTxn };
export type { StoreLogger };

const noop = (): void => undefined;

export interface FileStoreOptions {
  logger?: StoreLogger;
  /**
   * How many recent events are kept in memory so that a watch can resume from
   * an older revision. A watch from before the oldest kept event gets onReset.
   */
  watchHistory?: number;
  /**
   * The log is compacted once it is larger than both this many bytes and
   * four times the size of the last snapshot. Small values are for tests.
   */
  compactMinBytes?: number;
}

const LOG_FILE = 'store.log';
const DEFAULT_WATCH_HISTORY = 10_000;
const DEFAULT_COMPACT_MIN_BYTES = 4 * 1024 * 1024;
const COMPACT_RATIO = 4;

/** Thrown by FileStore.open when the log is damaged in a way a crash cannot explain. */
export class StoreCorruptError extends Error {
  readonly code = 'WEFT_STORE_CORRUPT';
  constructor(message: string) {
    super(message);
    this.name = 'StoreCorruptError';
  }
}

interface CommitResult {
  succeeded: boolean;
  revision: number;
  changed: number;
}

export class FileStore implements Store {
  readonly description: string;

  private readonly kvs = new Map<string, KeyValue>();
  private sorted: string[] = [];
  private rev = 0;

  private history: WatchEvent[] = [];
  /** Events at or below this revision may be missing from history. */
  private historyFloor = 0;
  private readonly watchers = new Set<FileWatcher>();

  private readonly leases = new Map<LeaseId, LeaseState>();

  private queue: Promise<unknown> = Promise.resolve();
  private fh: fsp.FileHandle | undefined;
  private logBytes = 0;
  private snapshotBytes = 0;
  private closed = false;
  /** Set when a write or fsync failed: the on-disk state is no longer known. */
  private failure: Error | undefined;

  private constructor(
    readonly dir: string,
    private readonly logPath: string,
    private readonly lock: HeldLock,
    private readonly log: StoreLogger,
    private readonly watchHistory: number,
    private readonly compactMinBytes: number,
  ) {
    this.description = `file:${logPath}`;
  }

  /** Opens (creating if needed) the store in `dir`, replaying `dir/store.log`. */
  static async open(dir: string, opts: FileStoreOptions = {}): Promise<FileStore> {
    const log = opts.logger ?? silentLogger;
    if (typeof dir !== 'string' || dir === '') throw new TypeError('FileStore.open: dir must be a directory path');
    const abs = path.resolve(dir);
    try {
      await fsp.mkdir(abs, { recursive: true, mode: 0o700 });
    } catch (e) {
      throw new Error(`cannot create the store directory ${abs}: ${(e as Error).message}`, { cause: e });
    }
    const real = await fsp.realpath(abs);
    const lock = acquireLock(real, log);
    const store = new FileStore(
      real,
      path.join(real, LOG_FILE),
      lock,
      log,
      Math.max(1, opts.watchHistory ?? DEFAULT_WATCH_HISTORY),
      Math.max(0, opts.compactMinBytes ?? DEFAULT_COMPACT_MIN_BYTES),
    );
    try {
      await store.load();
    } catch (e) {
      await store.fh?.close().catch(noop);
      releaseLock(lock);
      throw e;
    }
    return store;
  }

  // --- open and replay --------------------------------------------------------

  private async load(): Promise<void> {
    await fsp.rm(this.logPath + '.tmp', { force: true });
    let buf: Buffer;
    let existed = true;
    try {
      buf = await fsp.readFile(this.logPath);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') {
        throw new Error(`cannot read the store log ${this.logPath}: ${(e as Error).message}`, { cause: e });
      }
      buf = Buffer.alloc(0);
      existed = false;
    }

    let pos = 0;
    let records = 0;
    let badAt = -1;
    let why = '';
    while (pos < buf.length) {
      const nl = buf.indexOf(0x0a, pos);
      if (nl === -1) {
        badAt = pos;
        why = 'an incomplete last record';
        break;
      }
      const rec = decodeRecord(buf.subarray(pos, nl));
      const err = rec ? this.replay(rec, records) : 'a record with a bad checksum or shape';
      if (err) {
        badAt = pos;
        why = err;
        break;
      }
      records++;
      pos = nl + 1;
    }

    if (badAt >= 0) {
      // Only a tail with nothing valid after it can be the trace of a crash.
      let p = buf.indexOf(0x0a, badAt);
      while (p !== -1 && p + 1 < buf.length) {
        const nl = buf.indexOf(0x0a, p + 1);
        if (nl === -1) break;
        if (decodeRecord(buf.subarray(p + 1, nl))) {
          throw new StoreCorruptError(
            `the store log ${this.logPath} is corrupt at byte ${badAt} (${why}) and has valid records after it, ` +
              'which a crash cannot cause (disk or manual damage). weft will not guess: restore the file from a backup, ' +
              `or move it away to start with an empty store (the ${records} records before the damage are intact)`,
          );
        }
        p = nl;
      }
      this.log.warn(
        { log: this.logPath, keptRecords: records, droppedBytes: buf.length - badAt, reason: why },
        'store log ends with a torn or corrupt record (a crash during a write); truncating it',
      );
      const fh = await fsp.open(this.logPath, 'r+');
      try {
        await fh.truncate(badAt);
        await fh.sync();
      } finally {
        await fh.close();
      }
      buf = buf.subarray(0, badAt);
    }

    this.fh = await fsp.open(this.logPath, 'a', 0o600);
    if (!existed) await fsyncDir(this.dir);
    this.logBytes = buf.length;
    this.snapshotBytes = 0;

    // Leases are per process: keys still attached to one belong to a weft that died.
    const orphans = [...this.kvs.values()].filter((kv) => kv.lease !== undefined).map((kv) => kv.key);
    if (orphans.length > 0) {
      const r = await this.commit([], orphans.map((key) => ({ type: 'delete' as const, key })));
      this.log.info({ keys: orphans.length, revision: r.revision }, 'deleted keys attached to leases of a previous process');
    }
    this.log.info({ log: this.logPath, revision: this.rev, keys: this.kvs.size }, 'file store opened');
  }

  /** Applies one replayed record; returns why it cannot be applied, if so. */
  private replay(rec: LogRecord, index: number): string | undefined {
    if (rec.t === 'snap') {
      if (index !== 0) return 'a snapshot record that is not the first record';
      if (rec.v !== FORMAT_VERSION) {
        throw new StoreCorruptError(
          `the store log ${this.logPath} has format version ${rec.v}, this weft reads version ${FORMAT_VERSION}: use a matching weft version`,
        );
      }
      for (const [key, value, createRevision, modRevision, lease] of rec.kvs) {
        this.kvs.set(key, { key, value, createRevision, modRevision, ...(lease !== undefined ? { lease } : {}) });
      }
      this.sorted = [...this.kvs.keys()].sort(compareKeys);
      this.rev = rec.rev;
      this.historyFloor = rec.rev;
      return undefined;
    }
    if (rec.rev !== this.rev + 1) return `a record for revision ${rec.rev} where ${this.rev + 1} was expected`;
    this.apply(rec.rev, rec.c);
    return undefined;
  }

  // --- reads ------------------------------------------------------------------

  async get(key: string): Promise<KeyValue | undefined> {
    this.checkUsable();
    checkKey(key, 'get');
    const kv = this.kvs.get(key);
    return kv ? { ...kv } : undefined;
  }

  async list(prefix: string): Promise<ListResult> {
    this.checkUsable();
    if (typeof prefix !== 'string') throw new TypeError('list: prefix must be a string');
    const kvs: KeyValue[] = [];
    for (let i = lowerBound(this.sorted, prefix); i < this.sorted.length; i++) {
      const key = this.sorted[i]!;
      if (!key.startsWith(prefix)) break;
      kvs.push({ ...this.kvs.get(key)! });
    }
    return { kvs, revision: this.rev };
  }

  // --- writes -----------------------------------------------------------------

  async txn(compares: Compare[], ops: Op[]): Promise<TxnResult> {
    validateTxn(compares, ops);
    const { succeeded, revision } = await this.commit(compares, ops);
    return { succeeded, revision };
  }

  async put(key: string, value: string, lease?: LeaseId): Promise<number> {
    const op: Op = lease === undefined ? { type: 'put', key, value } : { type: 'put', key, value, lease };
    validateTxn([], [op]);
    return (await this.commit([], [op])).revision;
  }

  async delete(key: string): Promise<boolean> {
    checkKey(key, 'delete');
    return (await this.commit([], [{ type: 'delete', key }])).changed > 0;
  }

  /** Runs fn after every earlier queued operation: transactions see each other whole. */
  private enqueue<T>(fn: () => Promise<T>): Promise<T> {
    const p = this.queue.then(fn);
    this.queue = p.catch(noop);
    return p;
  }

  private commit(compares: Compare[], ops: Op[]): Promise<CommitResult> {
    this.checkUsable();
    const run = async (): Promise<CommitResult> => {
      // Not checkUsable(): a close() waits for what was queued before it.
      if (this.failure) throw this.failure;
      for (const c of compares) {
        const kv = this.kvs.get(c.key);
        const holds = c.modRevision === 0 ? kv === undefined : kv !== undefined && kv.modRevision === c.modRevision;
        if (!holds) return { succeeded: false, revision: this.rev, changed: 0 };
      }
      const changes: Change[] = [];
      const deleted = new Set<string>();
      for (const op of ops) {
        if (op.type === 'put') {
          if (op.lease !== undefined && !this.leases.has(op.lease)) {
            throw new Error(
              `put ${op.key}: lease ${op.lease} not found (revoked, expired, or granted by another weft process): grant a new lease`,
            );
          }
          changes.push(op.lease !== undefined ? ['p', op.key, op.value, op.lease] : ['p', op.key, op.value]);
        } else {
          const keys = op.type === 'delete' ? (this.kvs.has(op.key) ? [op.key] : []) : this.keysWithPrefix(op.prefix);
          for (const k of keys) {
            if (!deleted.has(k)) {
              deleted.add(k);
              changes.push(['d', k]);
            }
          }
        }
      }
      if (changes.length === 0) return { succeeded: true, revision: this.rev, changed: 0 };
      const rev = this.rev + 1;
      await this.append(encodeRecord({ t: 'txn', rev, c: changes }));
      this.notify(this.apply(rev, changes));
      if (this.logBytes > Math.max(this.compactMinBytes, COMPACT_RATIO * this.snapshotBytes)) {
        await this.compact();
      }
      return { succeeded: true, revision: rev, changed: changes.length };
    };
    return this.enqueue(run);
  }

  private keysWithPrefix(prefix: string): string[] {
    const out: string[] = [];
    for (let i = lowerBound(this.sorted, prefix); i < this.sorted.length && this.sorted[i]!.startsWith(prefix); i++) {
      out.push(this.sorted[i]!);
    }
    return out;
  }

  /** Appends a record and makes it durable; on failure the store refuses further work. */
  private async append(buf: Buffer): Promise<void> {
    const fh = this.fh!;
    try {
      let off = 0;
      while (off < buf.length) {
        const { bytesWritten } = await fh.write(buf, off, buf.length - off);
        off += bytesWritten;
      }
      await fh.datasync();
      this.logBytes += buf.length;
    } catch (e) {
      // After a failed fsync the kernel may have dropped the dirty pages, so
      // a retry could "succeed" without the data: stop here instead.
      await fh.truncate(this.logBytes).catch(noop);
      this.failure = new StoreUnavailableError(
        `writing the store log ${this.logPath} failed (${(e as Error).message}): the store stopped accepting changes; ` +
          'free disk space or fix the disk, then restart weft (it replays the log and keeps every acknowledged change)',
        { cause: e },
      );
      this.log.error({ err: e, log: this.logPath }, 'store log write failed');
      throw this.failure;
    }
  }

  /** Applies changes to memory; returns the events they make. */
  private apply(rev: number, changes: Change[]): WatchEvent[] {
    const events: WatchEvent[] = [];
    for (const ch of changes) {
      const key = ch[1];
      const prev = this.kvs.get(key);
      if (prev?.lease !== undefined) this.leases.get(prev.lease)?.keys.delete(key);
      if (ch[0] === 'p') {
        const lease = ch[3];
        const kv: KeyValue = { key, value: ch[2], createRevision: prev ? prev.createRevision : rev, modRevision: rev };
        if (lease !== undefined) {
          kv.lease = lease;
          this.leases.get(lease)?.keys.add(key);
        }
        if (!prev) this.sorted.splice(lowerBound(this.sorted, key), 0, key);
        this.kvs.set(key, kv);
        events.push({ type: 'put', key, value: ch[2], revision: rev });
      } else if (prev) {
        this.kvs.delete(key);
        const i = lowerBound(this.sorted, key);
        if (this.sorted[i] === key) this.sorted.splice(i, 1);
        events.push({ type: 'delete', key, revision: rev });
      }
    }
    this.rev = rev;
    this.history.push(...events);
    if (this.history.length > 2 * this.watchHistory) {
      // Never keep half of a revision: a watch resumes at revision boundaries.
      const drop = this.history.length - this.watchHistory;
      this.historyFloor = this.history[drop - 1]!.revision;
      let i = drop;
      while (i < this.history.length && this.history[i]!.revision <= this.historyFloor) i++;
      this.history = this.history.slice(i);
    }
    return events;
  }

  private notify(events: WatchEvent[]): void {
    for (const w of this.watchers) w.push(events);
  }

  private async compact(): Promise<void> {
    const kvs: SnapKv[] = this.sorted.map((k) => {
      const kv = this.kvs.get(k)!;
      return kv.lease !== undefined
        ? [kv.key, kv.value, kv.createRevision, kv.modRevision, kv.lease]
        : [kv.key, kv.value, kv.createRevision, kv.modRevision];
    });
    const buf = encodeRecord({ t: 'snap', v: FORMAT_VERSION, rev: this.rev, kvs });
    const tmp = this.logPath + '.tmp';
    try {
      const out = await fsp.open(tmp, 'w', 0o600);
      try {
        let off = 0;
        while (off < buf.length) off += (await out.write(buf, off, buf.length - off)).bytesWritten;
        await out.sync();
      } finally {
        await out.close();
      }
      await fsp.rename(tmp, this.logPath);
    } catch (e) {
      // The old log is still whole: keep using it and try again later.
      await fsp.rm(tmp, { force: true }).catch(noop);
      this.snapshotBytes = this.logBytes;
      this.log.warn({ err: e, log: this.logPath }, 'store log compaction failed; continuing with the uncompacted log');
      return;
    }
    try {
      await fsyncDir(this.dir);
      const old = this.fh!;
      this.fh = await fsp.open(this.logPath, 'a', 0o600);
      await old.close().catch(noop);
    } catch (e) {
      this.failure = new StoreUnavailableError(
        `the store log ${this.logPath} was compacted but could not be reopened (${(e as Error).message}): restart weft`,
        { cause: e },
      );
      this.log.error({ err: e, log: this.logPath }, 'store log reopen after compaction failed');
      return;
    }
    this.log.debug({ log: this.logPath, before: this.logBytes, after: buf.length }, 'store log compacted');
    this.logBytes = buf.length;
    this.snapshotBytes = buf.length;
  }

  // --- watches ----------------------------------------------------------------

  async watch(prefix: string, opts: WatchOptions): Promise<Watcher> {
    this.checkUsable();
    if (typeof prefix !== 'string') throw new TypeError('watch: prefix must be a string');
    if (typeof opts?.onEvents !== 'function') throw new TypeError('watch: opts.onEvents must be a function');
    const from = opts.fromRevision;
    if (from !== undefined && (!Number.isSafeInteger(from) || from < 0)) {
      throw new TypeError(`watch: fromRevision must be a revision number, got ${String(from)}`);
    }
    const start = from !== undefined && from > 0 ? from : this.rev + 1;
    const w = new FileWatcher(prefix, start, opts, this.log, (x) => this.watchers.delete(x));
    if (from !== undefined && from > 0 && from <= this.historyFloor) {
      w.reset(
        new Error(
          `cannot watch ${prefix} from revision ${from}: the store keeps events only after revision ${this.historyFloor}; re-list and watch from the list revision + 1`,
        ),
      );
      return w;
    }
    // Registration and the history copy happen in one synchronous step, so no
    // commit can fall between them.
    this.watchers.add(w);
    if (start <= this.rev) w.push(this.history);
    return w;
  }

  // --- leases -----------------------------------------------------------------

  async grantLease(ttlSeconds: number): Promise<Lease> {
    this.checkUsable();
    checkTtl(ttlSeconds);
    const state: LeaseState = { id: randomBytes(8).toString('hex'), ttlSeconds, keys: new Set(), lostCallbacks: [] };
    this.leases.set(state.id, state);
    return new FileLease(this, state);
  }

  /** @internal used by FileLease */
  revokeLease(id: LeaseId): Promise<void> {
    this.checkUsable();
    return this.enqueue(async () => {
      const st = this.leases.get(id);
      if (!st) return;
      clearTimeout(st.expiryTimer);
      await this.dropLease(st);
    });
  }

  /** @internal used by FileLease */
  stopKeepAlive(id: LeaseId): void {
    const st = this.leases.get(id);
    if (!st || st.expiryTimer) return;
    st.expiryTimer = setTimeout(() => {
      if (this.closed || this.leases.get(id) !== st) return;
      this.enqueue(async () => {
        if (this.closed || this.leases.get(id) !== st) return;
        await this.dropLease(st);
        st.lostError = new Error(`lease ${id} expired: it was not renewed for ${st.ttlSeconds} s, and its keys were deleted`);
        for (const cb of st.lostCallbacks.splice(0)) {
          try {
            cb(st.lostError);
          } catch (e) {
            this.log.error({ err: e, lease: id }, 'lease onLost callback threw');
          }
        }
      }).catch((e: unknown) => this.log.error({ err: e, lease: id }, 'deleting the keys of an expired lease failed'));
    }, st.ttlSeconds * 1000);
    st.expiryTimer.unref();
  }

  /** Deletes the lease's keys in one committed change; must run inside the queue. */
  private async dropLease(st: LeaseState): Promise<void> {
    const keys = [...st.keys];
    if (keys.length > 0) {
      const rev = this.rev + 1;
      const changes: Change[] = keys.map((k) => ['d', k]);
      await this.append(encodeRecord({ t: 'txn', rev, c: changes }));
      this.notify(this.apply(rev, changes));
    }
    this.leases.delete(st.id);
  }

  // --- lifecycle --------------------------------------------------------------

  private checkUsable(): void {
    if (this.closed) throw new Error(`the store ${this.description} is closed`);
    if (this.failure) throw this.failure;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.queue.catch(noop);
    for (const w of [...this.watchers]) w.closeNow();
    for (const st of this.leases.values()) clearTimeout(st.expiryTimer);
    this.leases.clear();
    await this.fh?.close().catch(noop);
    this.fh = undefined;
    releaseLock(this.lock);
  }

  /** Current revision; for tests and `weft status`. */
  get revision(): number {
    return this.rev;
  }

  /** Size of the log on disk in bytes; for tests and `weft status`. */
  get logSize(): number {
    return this.logBytes;
  }
}

async function fsyncDir(dir: string): Promise<void> {
  const d = await fsp.open(dir, 'r');
  try {
    await d.sync();
  } finally {
    await d.close();
  }
}
