// The store: the one interface through which weft keeps state, with two
// implementations that pass one contract suite (test/unit/store-contract.ts):
//   - FileStore (file-store.ts): embedded, one host, crash-safe on disk;
//   - EtcdStore (etcd-store.ts): a cluster, through the etcd3 package.
//
// The model is etcd's: a flat, ordered key space of strings, a global revision
// that every committed change increments, per-key create/mod revisions,
// transactions guarded by compares, prefix watches that resume from a
// revision, and leases whose expiry deletes the keys attached to them.
// Control-plane code (IPAM, driver, agent) depends only on this file.
import type { Logger } from 'pino';

export interface KeyValue {
  key: string;
  value: string;
  /** Revision of the change that created this key (since its last deletion). */
  createRevision: number;
  /** Revision of the last change to this key. */
  modRevision: number;
  /** Lease the key is attached to, if any. */
  lease?: LeaseId;
}

export type LeaseId = string;

/**
 * A guard of a transaction.
 * `modRevision: 0` means "the key does not exist" (create-if-absent);
 * any other number means "the key exists and was last changed at exactly that
 * revision" (compare-and-swap against a value read earlier).
 */
export interface Compare {
  key: string;
  modRevision: number;
}

export type Op =
  | { type: 'put'; key: string; value: string; lease?: LeaseId }
  | { type: 'delete'; key: string }
  | { type: 'deletePrefix'; prefix: string };

export interface TxnResult {
  /** True when every compare held and the ops were applied. */
  succeeded: boolean;
  /** Store revision after the transaction (unchanged when it failed). */
  revision: number;
}

export interface ListResult {
  kvs: KeyValue[];
  /** Store revision at which the list was read: watch from revision + 1 to miss nothing. */
  revision: number;
}

export interface WatchEvent {
  type: 'put' | 'delete';
  key: string;
  /** New value for puts; undefined for deletes. */
  value?: string;
  /** Revision of the change. */
  revision: number;
}

export interface Watcher {
  close(): Promise<void>;
}

export interface WatchOptions {
  /** Deliver every change with revision >= fromRevision (must not have been compacted away). */
  fromRevision?: number;
  /** Called for each batch of events, in revision order. Exceptions are logged, never thrown into the store. */
  onEvents: (events: WatchEvent[]) => void;
  /**
   * Called when the watch can no longer deliver a gap-free stream (for example
   * etcd compacted the revision it must resume from). The caller must re-list
   * and watch again. The watcher is closed when this is called.
   */
  onReset?: (err: Error) => void;
}

export interface Lease {
  id: LeaseId;
  ttlSeconds: number;
  /** Stop keeping the lease alive and revoke it: its keys are deleted. */
  revoke(): Promise<void>;
  /** Called when the lease is lost (expired while unreachable, or revoked elsewhere). Keys attached to it are gone. */
  onLost(cb: (err: Error) => void): void;
}

export interface Store {
  /** Human-readable kind, for logs and `weft status`: "file:/var/lib/weft/store.log", "etcd://..." */
  readonly description: string;
  get(key: string): Promise<KeyValue | undefined>;
  /** All keys starting with prefix, in key order. */
  list(prefix: string): Promise<ListResult>;
  /** Apply ops atomically if every compare holds. */
  txn(compares: Compare[], ops: Op[]): Promise<TxnResult>;
  /** Unconditional put; returns the new revision. */
  put(key: string, value: string, lease?: LeaseId): Promise<number>;
  /** Unconditional delete; returns whether the key existed. */
  delete(key: string): Promise<boolean>;
  /** Watch every key that starts with prefix. */
  watch(prefix: string, opts: WatchOptions): Promise<Watcher>;
  /** Grant a lease that the store keeps alive until revoke() or close(). */
  grantLease(ttlSeconds: number): Promise<Lease>;
  /** Release resources. Leases are not revoked (a crash and a close look alike to the cluster). */
  close(): Promise<void>;
}

/** Thrown when the store cannot be reached or answer within the configured time. Maps to a clear driver error. */
export class StoreUnavailableError extends Error {
  readonly code = 'WEFT_STORE_UNAVAILABLE';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'StoreUnavailableError';
  }
}

/** What either store logs through: a pino logger, or anything with these four methods. */
export type StoreLogger = Pick<Logger, 'debug' | 'info' | 'warn' | 'error'>;

const noop = (): void => undefined;
export const silentLogger = { debug: noop, info: noop, warn: noop, error: noop } as unknown as StoreLogger;
