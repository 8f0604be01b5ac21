// EtcdStore: the Store over an etcd v3 cluster, through the etcd3 package.
//
// etcd3 on its own retries a dead cluster with a circuit breaker and no
// overall bound, which would hang Docker's plugin calls. Here every call is
// bounded by requestTimeoutMs: a per-attempt gRPC deadline, a retry policy
// that stops when the budget is spent, and a timer as the last word. What
// comes out is a StoreUnavailableError that names the endpoints.
//
// A call that times out or loses its connection may still have been applied
// by etcd (as with any networked store): a create-if-absent that reports
// failure after such a retry may have been ours. Callers that must know
// re-read the key and compare the value with what they wrote.
//
// Watches run on their own gRPC streams rather than etcd3's watch manager,
// to resume after a reconnection from the revision after the last event
// actually delivered (etcd3 resumes from the response header revision, which
// can skip events of a batched catch-up) and to see compaction explicitly.
import { readFile } from 'node:fs/promises';
import {
  Etcd3,
  EtcdAuthenticationFailedError,
  EtcdLeaseInvalidError,
  EtcdPermissionDeniedError,
  GRPCUnauthenticatedError,
  ICompare,
  IDuplexStream,
  IKeyValue,
  IOptions,
  IRequestOp,
  IWatchRequest,
  IWatchResponse,
  Lease as Etcd3Lease,
  isRecoverableError,
} from 'etcd3';
import { validateTxn } from './file-store/keyspace';
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

export interface EtcdTlsOptions {
  /** CA bundle (PEM file) that signed the etcd server certificates; system CAs when absent. */
  ca?: string;
  /** Client certificate (PEM file), for etcd's --client-cert-auth. */
  cert?: string;
  /** Client key (PEM file). */
  key?: string;
}

export interface EtcdAuthOptions {
  username: string;
  password: string;
}

export interface EtcdStoreOptions {
  /** `http://host:port` or `https://host:port` (a bare `host:port` is http, or https with tls). */
  endpoints: string[];
  tls?: EtcdTlsOptions;
  auth?: EtcdAuthOptions;
  /** Bound on every call, in ms. Default 5000. */
  requestTimeoutMs?: number;
  logger?: StoreLogger;
  /** Check at open that etcd answers (default true); false opens without a round trip. */
  verifyConnection?: boolean;
}

const DEFAULT_TIMEOUT_MS = 5_000;

type Policy = NonNullable<NonNullable<IOptions['faultHandling']>['global']>;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * A policy that runs the call once. etcd3's default host policy is a circuit
 * breaker that refuses every call for 5 s after 3 failures, which would
 * keep the store unusable for that long after etcd came back.
 */
function passThrough(): Policy {
  return {
    execute: async <T>(fn: (ctx: { signal: AbortSignal }) => PromiseLike<T> | T) => fn({ signal: new AbortController().signal }),
  } as unknown as Policy;
}

/**
 * Retries transient failures (each retry goes to the next endpoint) with a
 * short backoff until the time budget of the call is spent.
 */
function retryWithin(budgetMs: number, closed: () => boolean): Policy {
  return {
    execute: async <T>(fn: (ctx: { signal: AbortSignal; attempt: number }) => PromiseLike<T> | T) => {
      const start = Date.now();
      let delay = 25;
      for (let attempt = 0; ; attempt++) {
        try {
          return await fn({ signal: new AbortController().signal, attempt });
        } catch (e) {
          if (!(e instanceof Error) || !isRecoverableError(e) || closed() || Date.now() - start + delay >= budgetMs) throw e;
          await sleep(delay);
          delay = Math.min(delay * 2, 500);
        }
      }
    },
  } as unknown as Policy;
}

/** [key, range_end) covering every key that starts with prefix ("" = all keys). */
function prefixRange(prefix: string): { key: Buffer; range_end: Buffer } {
  const start = Buffer.from(prefix, 'utf8');
  const end = Buffer.from(start);
  for (let i = end.length - 1; i >= 0; i--) {
    if (end[i]! < 0xff) {
      end[i]!++;
      return { key: start, range_end: end.subarray(0, i + 1) };
    }
  }
  // No byte can be incremented: "\0" as range_end means "to the end".
  return { key: start.length > 0 ? start : Buffer.from([0]), range_end: Buffer.from([0]) };
}

function toKeyValue(kv: IKeyValue): KeyValue {
  const out: KeyValue = {
    key: kv.key.toString('utf8'),
    value: kv.value.toString('utf8'),
    createRevision: Number(kv.create_revision),
    modRevision: Number(kv.mod_revision),
  };
  if (kv.lease && kv.lease !== '0') out.lease = String(kv.lease);
  return out;
}

function checkTtl(ttlSeconds: unknown): asserts ttlSeconds is number {
  if (typeof ttlSeconds !== 'number' || !Number.isSafeInteger(ttlSeconds) || ttlSeconds < 1) {
    throw new TypeError(`grantLease: ttlSeconds must be a whole number of seconds >= 1, got ${String(ttlSeconds)}`);
  }
}

function checkKey(key: unknown, what: string): asserts key is string {
  if (typeof key !== 'string' || key === '') throw new TypeError(`${what}: key must be a non-empty string, got ${JSON.stringify(key)}`);
}

function errMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

async function readPem(file: string | undefined, what: string): Promise<Buffer | undefined> {
  if (file === undefined) return undefined;
  try {
    return await readFile(file);
  } catch (e) {
    throw new Error(`cannot read the etcd TLS ${what} file ${file}: ${errMessage(e)}; check the path and its permissions`, { cause: e });
  }
}

export class EtcdStore implements Store {
  readonly description: string;
  private closed = false;
  private readonly watchers = new Set<EtcdWatcher>();
  private readonly leases = new Set<EtcdLease>();

  private constructor(
    /** @internal */ readonly client: Etcd3,
    readonly endpoints: string[],
    /** @internal */ readonly timeoutMs: number,
    /** @internal */ readonly log: StoreLogger,
    private readonly auth: EtcdAuthOptions | undefined,
  ) {
    const secure = endpoints.some((e) => e.startsWith('https://'));
    this.description = `${secure ? 'etcds' : 'etcd'}://${endpoints.map((e) => e.replace(/^https?:\/\//, '')).join(',')}`;
  }

  static async open(opts: EtcdStoreOptions): Promise<EtcdStore> {
    if (!Array.isArray(opts?.endpoints) || opts.endpoints.length === 0) {
      throw new TypeError('EtcdStore.open: give at least one endpoint, e.g. http://127.0.0.1:2379');
    }
    const timeoutMs = opts.requestTimeoutMs ?? DEFAULT_TIMEOUT_MS;
    if (!Number.isFinite(timeoutMs) || timeoutMs <= 0) throw new TypeError(`EtcdStore.open: requestTimeoutMs must be > 0, got ${timeoutMs}`);
    const log = opts.logger ?? silentLogger;
    const endpoints = opts.endpoints.map((e) => {
      const s = e.trim();
      if (/^https?:\/\//.test(s)) return s.replace(/\/+$/, '');
      if (/^[a-z][a-z0-9+.-]*:\/\//i.test(s)) throw new TypeError(`EtcdStore.open: endpoint ${e} must be http://host:port or https://host:port`);
      return `${opts.tls ? 'https' : 'http'}://${s}`;
    });
    const secure = endpoints.filter((e) => e.startsWith('https://')).length;
    if (secure !== 0 && secure !== endpoints.length) {
      throw new TypeError(`EtcdStore.open: endpoints mix http and https (${endpoints.join(', ')}): use one scheme for the cluster`);
    }
    if (opts.tls && secure === 0) {
      throw new TypeError(`EtcdStore.open: TLS files given but the endpoints are http (${endpoints.join(', ')}): use https:// endpoints`);
    }
    if (opts.tls && (opts.tls.cert === undefined) !== (opts.tls.key === undefined)) {
      throw new TypeError('EtcdStore.open: a TLS client certificate needs its key, and a key its certificate: give both tls.cert and tls.key');
    }
    const [ca, cert, key] = await Promise.all([
      readPem(opts.tls?.ca, 'CA'),
      readPem(opts.tls?.cert, 'client certificate'),
      readPem(opts.tls?.key, 'client key'),
    ]);

    // With several endpoints a stalled one gets only part of the budget, so
    // that the retry can still reach another.
    const attemptMs = endpoints.length > 1 ? Math.max(200, Math.floor(timeoutMs / 2)) : timeoutMs;
    let store: EtcdStore | undefined;
    const options: IOptions = {
      hosts: endpoints,
      dialTimeout: timeoutMs,
      defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + attemptMs }),
      faultHandling: {
        host: () => passThrough(),
        global: retryWithin(timeoutMs, () => store?.closed ?? false),
      },
      grpcOptions: {
        // Catch-up watch batches and big lists must not hit the 4 MiB default.
        'grpc.max_receive_message_length': -1,
        // Notice a peer that vanished without a FIN (host down, partition) on open streams.
        'grpc.keepalive_time_ms': 15_000,
        'grpc.keepalive_timeout_ms': 5_000,
      },
    };
    if (secure) {
      // etcd3 takes TLS when credentials are given; without a CA file the
      // system roots are used (rootCertificate undefined).
      if (ca || cert) options.credentials = { rootCertificate: ca as Buffer, ...(key ? { privateKey: key } : {}), ...(cert ? { certChain: cert } : {}) };
    }
    if (opts.auth) options.auth = { username: opts.auth.username, password: opts.auth.password };

    const client = new Etcd3(options);
    store = new EtcdStore(client, endpoints, timeoutMs, log, opts.auth);
    if (opts.verifyConnection !== false) {
      try {
        await store.call('connect', () => client.maintenance.status());
      } catch (e) {
        store.closed = true;
        client.close();
        throw e;
      }
    }
    log.info({ store: store.description }, 'etcd store opened');
    return store;
  }

  // --- call plumbing ------------------------------------------------------------

  /** @internal */
  unavailable(what: string, cause: unknown): StoreUnavailableError {
    return new StoreUnavailableError(
      `etcd store unavailable: ${what} got no answer from ${this.endpoints.join(', ')} within ${this.timeoutMs} ms ` +
        `(${errMessage(cause)}). Check that etcd is running and reachable from this host at those addresses ` +
        '(address, port, firewall), and that the TLS settings (etcds:// and the CA/cert/key files) match the cluster',
      { cause },
    );
  }

  /** Turns what etcd3 throws into errors that say what to do. */
  private mapError(what: string, e: unknown): Error {
    if (e instanceof StoreUnavailableError) return e;
    if (e instanceof EtcdAuthenticationFailedError) {
      return new Error(`etcd at ${this.endpoints.join(', ')} rejected the user ${JSON.stringify(this.auth?.username ?? '')}: check the etcd username and password`, { cause: e });
    }
    if (e instanceof EtcdPermissionDeniedError || e instanceof GRPCUnauthenticatedError) {
      return new Error(
        `etcd refused ${what}: ${e.message}. ${this.auth ? `Grant the etcd user ${JSON.stringify(this.auth.username)} read-write access to weft's keys` : 'etcd has authentication enabled: configure an etcd username and password'}`,
        { cause: e },
      );
    }
    if (e instanceof EtcdLeaseInvalidError) {
      return new Error(`${what}: the lease is not known to etcd (revoked, expired or never granted): grant a new lease`, { cause: e });
    }
    if (e instanceof Error && /duplicate key given in txn request/.test(e.message)) {
      return new TypeError(`${what}: etcd refuses a transaction that touches a key twice: split it or drop the duplicate op`, { cause: e });
    }
    if (e instanceof Error && isRecoverableError(e)) return this.unavailable(what, e);
    if (e instanceof Error) return e;
    return new Error(`${what}: ${String(e)}`);
  }

  /** Runs one etcd call, bounded by the request timeout. */
  /** @internal */
  async call<T>(what: string, fn: () => Promise<T>): Promise<T> {
    if (this.closed) throw new Error(`the store ${this.description} is closed (${what})`);
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(this.unavailable(what, new Error('timed out'))), this.timeoutMs);
    });
    try {
      return await Promise.race([fn(), timeout]);
    } catch (e) {
      throw this.mapError(what, e);
    } finally {
      clearTimeout(timer);
    }
  }

  // --- KV ---------------------------------------------------------------------

  async get(key: string): Promise<KeyValue | undefined> {
    checkKey(key, 'get');
    const res = await this.call(`get ${key}`, () => this.client.kv.range({ key: Buffer.from(key, 'utf8') }));
    const kv = res.kvs[0];
    return kv ? toKeyValue(kv) : undefined;
  }

  async list(prefix: string): Promise<ListResult> {
    if (typeof prefix !== 'string') throw new TypeError('list: prefix must be a string');
    const res = await this.call(`list ${prefix}`, () => this.client.kv.range(prefixRange(prefix)));
    return { kvs: res.kvs.map(toKeyValue), revision: Number(res.header.revision) };
  }

  async txn(compares: Compare[], ops: Op[]): Promise<TxnResult> {
    validateTxn(compares, ops);
    const compare: ICompare[] = compares.map((c) =>
      c.modRevision === 0
        ? { key: Buffer.from(c.key, 'utf8'), target: 'Version', result: 'Equal', version: 0 }
        : { key: Buffer.from(c.key, 'utf8'), target: 'Mod', result: 'Equal', mod_revision: c.modRevision },
    );
    const success: IRequestOp[] = ops.map((op) => {
      switch (op.type) {
        case 'put':
          return {
            request_put: {
              key: Buffer.from(op.key, 'utf8'),
              value: Buffer.from(op.value, 'utf8'),
              ...(op.lease !== undefined ? { lease: op.lease } : {}),
            },
          };
        case 'delete':
          return { request_delete_range: { key: Buffer.from(op.key, 'utf8') } };
        case 'deletePrefix':
          return { request_delete_range: prefixRange(op.prefix) };
      }
    });
    const res = await this.call(`txn on ${describeOps(compares, ops)}`, () => this.client.kv.txn({ compare, success, failure: [] }));
    return { succeeded: res.succeeded, revision: Number(res.header.revision) };
  }

  async put(key: string, value: string, lease?: LeaseId): Promise<number> {
    validateTxn([], [lease === undefined ? { type: 'put', key, value } : { type: 'put', key, value, lease }]);
    const res = await this.call(`put ${key}`, () =>
      this.client.kv.put({ key: Buffer.from(key, 'utf8'), value: Buffer.from(value, 'utf8'), ...(lease !== undefined ? { lease } : {}) }),
    );
    return Number(res.header.revision);
  }

  async delete(key: string): Promise<boolean> {
    checkKey(key, 'delete');
    const res = await this.call(`delete ${key}`, () => this.client.kv.deleteRange({ key: Buffer.from(key, 'utf8') }));
    return Number(res.deleted) > 0;
  }

  // --- watches ------------------------------------------------------------------

  async watch(prefix: string, opts: WatchOptions): Promise<Watcher> {
    if (typeof prefix !== 'string') throw new TypeError('watch: prefix must be a string');
    if (typeof opts?.onEvents !== 'function') throw new TypeError('watch: opts.onEvents must be a function');
    const from = opts.fromRevision;
    if (from !== undefined && (!Number.isSafeInteger(from) || from < 0)) {
      throw new TypeError(`watch: fromRevision must be a revision number, got ${String(from)}`);
    }
    if (this.closed) throw new Error(`the store ${this.description} is closed (watch ${prefix})`);
    const w = new EtcdWatcher(this, prefix, opts);
    this.watchers.add(w);
    try {
      await this.call(`watch ${prefix}`, () => w.start());
    } catch (e) {
      await w.close();
      throw e;
    }
    return w;
  }

  /**
   * etcd3 renews an expired auth token only on unary calls, while watch and
   * keepalive streams reuse the cached one: after an etcd restart (which
   * forgets simple tokens) they would fail forever. A unary call renews it.
   * @internal
   */
  renewAuthAfter(err: unknown): Promise<void> {
    if (!this.auth || this.closed || !/invalid auth token|auth token is invalid|Unauthenticated/i.test(errMessage(err))) return Promise.resolve();
    // etcd3 1.1.2 keeps the token in pool.authenticator; dropping it makes
    // the next call or stream log in again. Status needs no token, so it
    // cannot be used to renew one.
    const authenticator = (this.client as unknown as { pool?: { authenticator?: { invalidateMetadata?: () => void } } }).pool?.authenticator;
    if (typeof authenticator?.invalidateMetadata === 'function') {
      authenticator.invalidateMetadata();
      return Promise.resolve();
    }
    // Otherwise a unary call that checks the token renews it (even if the range itself is refused).
    return this.client.kv.range({ key: Buffer.from([0]), limit: 1, count_only: true }).then(
      () => undefined,
      () => undefined,
    );
  }

  /** @internal */
  forgetWatcher(w: EtcdWatcher): void {
    this.watchers.delete(w);
  }

  /** @internal */
  get isClosed(): boolean {
    return this.closed;
  }

  // --- leases -------------------------------------------------------------------

  async grantLease(ttlSeconds: number): Promise<Lease> {
    checkTtl(ttlSeconds);
    if (this.closed) throw new Error(`the store ${this.description} is closed (grantLease)`);
    const inner = this.client.lease(ttlSeconds);
    // etcd3 emits 'lost' for a failed grant too; grant() below reports it.
    const early = (): void => undefined;
    inner.on('lost', early);
    let id: string;
    try {
      id = await this.call('grant lease', () => inner.grant());
    } catch (e) {
      // If the grant lands after we gave up, no keepalive must follow: the lease then expires on its own.
      inner.release();
      throw e;
    } finally {
      inner.removeListener('lost', early);
    }
    const lease = new EtcdLease(this, inner, String(id), ttlSeconds);
    this.leases.add(lease);
    return lease;
  }

  /** @internal */
  forgetLease(l: EtcdLease): void {
    this.leases.delete(l);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.all([...this.watchers].map((w) => w.close().catch(() => undefined)));
    // Not revoked: to the cluster, a closed weft and a crashed one look alike.
    for (const l of [...this.leases]) l.release();
    this.client.close();
  }
}

function describeOps(compares: Compare[], ops: Op[]): string {
  const keys = [...compares.map((c) => c.key), ...ops.map((o) => (o.type === 'deletePrefix' ? o.prefix + '*' : o.key))];
  const uniq = [...new Set(keys)];
  return uniq.length <= 3 ? uniq.join(', ') : `${uniq.slice(0, 3).join(', ')} and ${uniq.length - 3} more`;
}

// -----------------------------------------------------------------------------

/** An etcd lease kept alive by etcd3. `stopKeepAlive()` is for tests and for simulating a dead process. */
export class EtcdLease implements Lease {
  private lostErr: Error | undefined;
  private readonly lostCallbacks: Array<(err: Error) => void> = [];
  private revoked = false;
  private expiryPoll: NodeJS.Timeout | undefined;

  constructor(
    private readonly store: EtcdStore,
    private readonly inner: Etcd3Lease,
    readonly id: LeaseId,
    readonly ttlSeconds: number,
  ) {
    inner.on('keepaliveFailed', (err) => void store.renewAuthAfter(err));
    inner.on('lost', (err) => {
      if (this.revoked) return;
      this.lost(new Error(`etcd lease ${id} was lost (${err.message}): its keys are gone; weft re-registers them under a new lease`, { cause: err }));
    });
  }

  async revoke(): Promise<void> {
    if (this.revoked) return;
    this.revoked = true;
    clearTimeout(this.expiryPoll);
    this.store.forgetLease(this);
    if (this.store.isClosed) throw new Error(`the store ${this.store.description} is closed (revoke lease ${this.id})`);
    await this.store.call(`revoke lease ${this.id}`, () => this.inner.revoke());
  }

  onLost(cb: (err: Error) => void): void {
    if (this.lostErr) {
      const err = this.lostErr;
      setImmediate(() => cb(err));
    } else {
      this.lostCallbacks.push(cb);
    }
  }

  /** Stop renewing: etcd expires the lease after its TTL, deleting its keys, and onLost fires. */
  stopKeepAlive(): void {
    if (this.revoked || this.lostErr) return;
    this.inner.release();
    const poll = (delayMs: number): void => {
      this.expiryPoll = setTimeout(() => {
        if (this.revoked || this.lostErr || this.store.isClosed) return;
        this.store.client.leaseClient
          .leaseTimeToLive({ ID: this.id })
          .then((res) => {
            const ttl = Number(res.TTL);
            if (ttl <= 0) this.lost(new Error(`etcd lease ${this.id} expired: it was not renewed for ${this.ttlSeconds} s, and its keys were deleted`));
            else poll(Math.max(200, ttl * 1000));
          })
          .catch(() => poll(500));
      }, delayMs);
      this.expiryPoll.unref();
    };
    poll(this.ttlSeconds * 1000);
  }

  /** @internal stop keepalives on close without revoking */
  release(): void {
    clearTimeout(this.expiryPoll);
    this.revoked = true;
    this.inner.release();
  }

  private lost(err: Error): void {
    if (this.lostErr) return;
    this.lostErr = err;
    this.store.forgetLease(this);
    this.store.log.warn({ lease: this.id, err }, 'etcd lease lost');
    for (const cb of this.lostCallbacks.splice(0)) {
      try {
        cb(err);
      } catch (e) {
        this.store.log.error({ err: e, lease: this.id }, 'lease onLost callback threw');
      }
    }
  }
}

// -----------------------------------------------------------------------------

type WatchStream = IDuplexStream<IWatchRequest, IWatchResponse> & { writable?: boolean };

class EtcdWatcher implements Watcher {
  private closed = false;
  /** Revision to resume from: one past the last event delivered. */
  private next: number | undefined;
  private stream: WatchStream | undefined;
  private backoffMs = 100;
  /** Failed reconnections since the stream last worked. */
  private failures = 0;
  private authRetries = 0;
  private reconnectTimer: NodeJS.Timeout | undefined;
  private created: { resolve: () => void; reject: (e: Error) => void } | undefined;
  private readonly range: { key: Buffer; range_end: Buffer };

  constructor(
    private readonly store: EtcdStore,
    private readonly prefix: string,
    private readonly opts: WatchOptions,
  ) {
    this.range = prefixRange(prefix);
    if (opts.fromRevision !== undefined && opts.fromRevision > 0) this.next = opts.fromRevision;
  }

  /** Opens the stream; resolves once etcd confirmed the watch. */
  start(): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.created = { resolve, reject };
      this.connect().catch((e: unknown) => {
        this.created = undefined;
        reject(e instanceof Error ? e : new Error(String(e)));
      });
    });
  }

  private async connect(): Promise<void> {
    const stream = (await this.store.client.watchClient.watch()) as WatchStream;
    if (this.closed) {
      endStream(stream);
      return;
    }
    this.stream = stream;
    stream.on('data', (res) => {
      if (this.stream === stream) this.onResponse(res);
    });
    stream.on('error', (err) => {
      if (this.stream === stream) this.onBroken(err);
    });
    stream.on('end', () => {
      if (this.stream === stream) this.onBroken(new Error('etcd ended the watch stream'));
    });
    stream.write({
      create_request: {
        ...this.range,
        progress_notify: true,
        ...(this.next !== undefined ? { start_revision: this.next } : {}),
      },
    });
  }

  private onResponse(res: IWatchResponse): void {
    if (this.closed) return;
    if (res.created) {
      if (this.next === undefined) this.next = Number(res.header.revision) + 1;
      this.backoffMs = 100;
      this.failures = 0;
      if (!res.canceled) this.authRetries = 0;
      const c = this.created;
      this.created = undefined;
      c?.resolve();
      if (!res.canceled) return;
    }
    const compacted = Number(res.compact_revision ?? 0);
    if (compacted > 0) {
      this.reset(
        new Error(
          `etcd compacted its history up to revision ${compacted}, so the watch on ${this.prefix} cannot resume from ${this.next}: re-list and watch again`,
        ),
      );
      return;
    }
    if (res.canceled) {
      const reason = res.cancel_reason || 'no reason given';
      // A restarted etcd has forgotten our token: renew it and resume, a few times at most.
      if (/auth token/i.test(reason) && this.authRetries < 3) {
        this.authRetries++;
        this.onBroken(new Error(reason));
        return;
      }
      this.reset(new Error(`etcd cancelled the watch on ${this.prefix}: ${reason}`));
      return;
    }
    if (res.events.length === 0) {
      // A progress notification: etcd sends these only to watchers that are
      // caught up, so nothing up to the header revision is pending.
      const rev = Number(res.header.revision);
      if (this.next === undefined || rev + 1 > this.next) this.next = rev + 1;
      return;
    }
    const events: WatchEvent[] = res.events.map((ev) => {
      const revision = Number(ev.kv.mod_revision);
      const key = ev.kv.key.toString('utf8');
      return ev.type === 'Put'
        ? { type: 'put', key, value: ev.kv.value.toString('utf8'), revision }
        : { type: 'delete', key, revision };
    });
    // etcd never splits one revision across responses (without fragment), so resuming after the last is exact.
    this.next = events[events.length - 1]!.revision + 1;
    try {
      this.opts.onEvents(events);
    } catch (e) {
      this.store.log.error({ err: e, prefix: this.prefix }, 'store watch callback threw; the watch goes on');
    }
  }

  private onBroken(err: Error): void {
    if (this.closed) return;
    const old = this.stream;
    this.stream = undefined;
    if (old) endStream(old);
    this.store.log.warn({ prefix: this.prefix, err: err.message, resumeFrom: this.next }, 'etcd watch stream broke; reconnecting');
    // Each attempt goes to a random endpoint: try quickly a couple of times
    // per endpoint before backing off, so one dead member costs little.
    let delay = 50;
    if (++this.failures > 2 * this.store.endpoints.length) {
      delay = this.backoffMs;
      this.backoffMs = Math.min(this.backoffMs * 2, 5_000);
    }
    this.reconnectTimer = setTimeout(() => {
      if (this.closed || this.store.isClosed) return;
      this.store
        .renewAuthAfter(err)
        .then(() => {
          if (this.closed || this.store.isClosed) return;
          return this.connect();
        })
        .catch((e: unknown) => this.onBroken(e instanceof Error ? e : new Error(String(e))));
    }, delay);
  }

  private reset(err: Error): void {
    this.store.log.warn({ prefix: this.prefix, err: err.message }, 'etcd watch cannot go on; the caller must re-list');
    void this.close();
    try {
      this.opts.onReset?.(err);
    } catch (e) {
      this.store.log.error({ err: e, prefix: this.prefix }, 'store watch onReset callback threw');
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.reconnectTimer);
    const s = this.stream;
    this.stream = undefined;
    if (s) endStream(s);
    const c = this.created;
    this.created = undefined;
    c?.reject(new Error(`watch on ${this.prefix} closed before etcd confirmed it`));
    this.store.forgetWatcher(this);
  }
}

/**
 * Ends a watch stream without etcd3 noticing a failure: etcd3 treats an
 * error on a still-writable stream as a host failure and closes every
 * client of that host, including other watches and lease keepalives.
 */
function endStream(s: WatchStream): void {
  s.on('error', () => undefined);
  try {
    s.end();
  } catch {
    /* already ended */
  }
  try {
    s.cancel();
  } catch {
    /* already cancelled */
  }
}
