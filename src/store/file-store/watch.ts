// The FileStore's watches and leases, as handed to callers.
//
// A FileWatcher keeps the store's events that match its prefix and start
// revision, and delivers them in batches on a later turn of the event loop
// (setImmediate), not inside the commit that made them; a callback that
// throws is logged and the watch goes on. A FileLease is a handle on lease
// state that the store keeps: leases are in-process timers, and the store
// deletes an expired lease's keys in one committed change.
import type { Lease, LeaseId, StoreLogger, WatchEvent, Watcher, WatchOptions } from '../store';

export class FileWatcher implements Watcher {
  closed = false;
  private pending: WatchEvent[] = [];
  private scheduled = false;

  constructor(
    readonly prefix: string,
    /** Events below this revision are not for this watcher. */
    private readonly minRevision: number,
    private readonly opts: WatchOptions,
    private readonly log: StoreLogger,
    private readonly onClose: (w: FileWatcher) => void,
  ) {}

  push(events: WatchEvent[]): void {
    if (this.closed) return;
    for (const e of events) if (e.revision >= this.minRevision && e.key.startsWith(this.prefix)) this.pending.push({ ...e });
    if (this.pending.length === 0) return;
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(() => this.flush());
    }
  }

  private flush(): void {
    this.scheduled = false;
    if (this.closed) return;
    const batch = this.pending;
    this.pending = [];
    if (batch.length === 0) return;
    try {
      this.opts.onEvents(batch);
    } catch (e) {
      this.log.error({ err: e, prefix: this.prefix }, 'store watch callback threw; the watch goes on');
    }
  }

  reset(err: Error): void {
    if (this.closed) return;
    this.closeNow();
    setImmediate(() => {
      try {
        this.opts.onReset?.(err);
      } catch (e) {
        this.log.error({ err: e, prefix: this.prefix }, 'store watch onReset callback threw');
      }
    });
  }

  closeNow(): void {
    if (this.closed) return;
    this.closed = true;
    this.pending = [];
    this.onClose(this);
  }

  async close(): Promise<void> {
    this.closeNow();
  }
}

/** A lease as the store keeps it; FileLease is the caller's handle on it. */
export interface LeaseState {
  id: LeaseId;
  ttlSeconds: number;
  keys: Set<string>;
  lostCallbacks: Array<(err: Error) => void>;
  lostError?: Error;
  expiryTimer?: NodeJS.Timeout;
}

/** What a FileLease asks of the store that granted it (FileStore). */
export interface LeaseKeeper {
  revokeLease(id: LeaseId): Promise<void>;
  stopKeepAlive(id: LeaseId): void;
}

/** A FileStore lease. `stopKeepAlive()` is for tests and for simulating a dead process. */
export class FileLease implements Lease {
  constructor(
    private readonly store: LeaseKeeper,
    private readonly state: LeaseState,
  ) {}

  get id(): LeaseId {
    return this.state.id;
  }

  get ttlSeconds(): number {
    return this.state.ttlSeconds;
  }

  revoke(): Promise<void> {
    return this.store.revokeLease(this.state.id);
  }

  onLost(cb: (err: Error) => void): void {
    if (this.state.lostError) {
      const err = this.state.lostError;
      setImmediate(() => cb(err));
    } else {
      this.state.lostCallbacks.push(cb);
    }
  }

  /** Stop renewing: the lease expires after its TTL, its keys are deleted and onLost fires. */
  stopKeepAlive(): void {
    this.store.stopKeepAlive(this.state.id);
  }
}
