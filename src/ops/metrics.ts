// Metrics in the Prometheus text exposition format (version 0.0.4), written by
// hand: counters, gauges and histograms with labels is all weft needs, and a
// dependency would be larger than this file.
//
// Values that other parts already keep (the agent's stats, the peers in the
// kernel) are not duplicated here: collectors registered with onCollect()
// copy them into gauges or counters just before each exposition.

type LabelValues = Record<string, string>;

function escapeLabel(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');
}

function escapeHelp(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
}

export function formatValue(n: number): string {
  if (Number.isNaN(n)) return 'NaN';
  if (n === Infinity) return '+Inf';
  if (n === -Infinity) return '-Inf';
  return String(n);
}

function labelText(names: readonly string[], values: LabelValues, extra?: [string, string]): string {
  const parts = names.map((n) => `${n}="${escapeLabel(values[n] ?? '')}"`);
  if (extra) parts.push(`${extra[0]}="${escapeLabel(extra[1])}"`);
  return parts.length ? `{${parts.join(',')}}` : '';
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

abstract class Metric {
  constructor(readonly name: string, readonly help: string, readonly labelNames: readonly string[]) {
    if (!NAME.test(name)) throw new Error(`invalid metric name ${name}`);
    for (const l of labelNames) if (!LABEL.test(l) || l.startsWith('__') || l === 'le') throw new Error(`invalid label name ${l} on ${name}`);
  }
  abstract readonly type: 'counter' | 'gauge' | 'histogram';
  protected key(labels: LabelValues): string {
    for (const k of Object.keys(labels)) if (!this.labelNames.includes(k)) throw new Error(`metric ${this.name} has no label ${k}`);
    return JSON.stringify(this.labelNames.map((n) => labels[n] ?? ''));
  }
  header(): string {
    return `# HELP ${this.name} ${escapeHelp(this.help)}\n# TYPE ${this.name} ${this.type}\n`;
  }
  abstract samples(): string;
}

export class Counter extends Metric {
  readonly type = 'counter' as const;
  private readonly values = new Map<string, { labels: LabelValues; value: number }>();
  inc(labels: LabelValues = {}, by = 1): void {
    if (by < 0) throw new Error(`counter ${this.name} cannot decrease`);
    const k = this.key(labels);
    const v = this.values.get(k);
    if (v) v.value += by;
    else this.values.set(k, { labels: { ...labels }, value: by });
  }
  /** For counters kept elsewhere (the agent's stats): set the running total. */
  setTotal(labels: LabelValues, total: number): void {
    this.values.set(this.key(labels), { labels: { ...labels }, value: total });
  }
  get(labels: LabelValues = {}): number {
    return this.values.get(this.key(labels))?.value ?? 0;
  }
  samples(): string {
    let out = '';
    for (const { labels, value } of this.values.values()) out += `${this.name}${labelText(this.labelNames, labels)} ${formatValue(value)}\n`;
    return out;
  }
}

export class Gauge extends Metric {
  readonly type = 'gauge' as const;
  private values = new Map<string, { labels: LabelValues; value: number }>();
  set(labels: LabelValues, value: number): void {
    this.values.set(this.key(labels), { labels: { ...labels }, value });
  }
  /** Forget every labelled value (before a collector sets the current ones). */
  reset(): void {
    this.values = new Map();
  }
  get(labels: LabelValues = {}): number | undefined {
    return this.values.get(this.key(labels))?.value;
  }
  samples(): string {
    let out = '';
    for (const { labels, value } of this.values.values()) out += `${this.name}${labelText(this.labelNames, labels)} ${formatValue(value)}\n`;
    return out;
  }
}

export class Histogram extends Metric {
  readonly type = 'histogram' as const;
  private readonly values = new Map<string, { labels: LabelValues; counts: number[]; sum: number; count: number }>();
  constructor(name: string, help: string, labelNames: readonly string[], readonly buckets: readonly number[]) {
    super(name, help, labelNames);
    for (let i = 1; i < buckets.length; i++) if (!(buckets[i] > buckets[i - 1])) throw new Error(`buckets of ${name} must increase`);
  }
  observe(labels: LabelValues, value: number): void {
    const k = this.key(labels);
    let v = this.values.get(k);
    if (!v) {
      v = { labels: { ...labels }, counts: this.buckets.map(() => 0), sum: 0, count: 0 };
      this.values.set(k, v);
    }
    for (let i = 0; i < this.buckets.length; i++) if (value <= this.buckets[i]) v.counts[i]++;
    v.sum += value;
    v.count++;
  }
  count(labels: LabelValues = {}): number {
    return this.values.get(this.key(labels))?.count ?? 0;
  }
  samples(): string {
    let out = '';
    for (const { labels, counts, sum, count } of this.values.values()) {
      // counts[i] is already cumulative: an observation is added to every bucket it fits.
      this.buckets.forEach((b, i) => {
        out += `${this.name}_bucket${labelText(this.labelNames, labels, ['le', formatValue(b)])} ${counts[i]}\n`;
      });
      out += `${this.name}_bucket${labelText(this.labelNames, labels, ['le', '+Inf'])} ${count}\n`;
      out += `${this.name}_sum${labelText(this.labelNames, labels)} ${formatValue(sum)}\n`;
      out += `${this.name}_count${labelText(this.labelNames, labels)} ${count}\n`;
    }
    return out;
  }
}

export class Registry {
  private readonly metrics = new Map<string, Metric>();
  private readonly collectors: (() => Promise<void> | void)[] = [];

  private add<M extends Metric>(m: M): M {
    if (this.metrics.has(m.name)) throw new Error(`metric ${m.name} registered twice`);
    this.metrics.set(m.name, m);
    return m;
  }
  counter(name: string, help: string, labelNames: readonly string[] = []): Counter {
    return this.add(new Counter(name, help, labelNames));
  }
  gauge(name: string, help: string, labelNames: readonly string[] = []): Gauge {
    return this.add(new Gauge(name, help, labelNames));
  }
  histogram(name: string, help: string, labelNames: readonly string[], buckets: readonly number[]): Histogram {
    return this.add(new Histogram(name, help, labelNames, buckets));
  }
  /** Runs before each exposition; a collector that fails leaves its metrics as they were. */
  onCollect(fn: () => Promise<void> | void): void {
    this.collectors.push(fn);
  }
  async expose(): Promise<string> {
    await Promise.all(this.collectors.map(async (c) => {
      try {
        await c();
      } catch {
        // keep the last values
      }
    }));
    let out = '';
    for (const m of this.metrics.values()) out += m.header() + m.samples();
    return out;
  }
}

export const CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

const LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/** weft's own metrics: every name in one place, so the README's list cannot drift far from it. */
export class WeftMetrics {
  readonly registry = new Registry();
  readonly info = this.registry.gauge('weft_build_info', 'Always 1; the labels say which weft runs here.', ['version', 'host']);
  readonly calls = this.registry.counter('weft_plugin_calls_total', 'Plugin API calls answered, by method and outcome (ok or error).', ['method', 'outcome']);
  readonly callSeconds = this.registry.histogram('weft_plugin_call_duration_seconds', 'Time to answer a plugin API call, by method and outcome.', ['method', 'outcome'], LATENCY_BUCKETS);
  readonly allocations = this.registry.counter('weft_address_allocations_total', 'Addresses handed out by RequestAddress (gateways included: every host asks for its network\'s gateway).');
  readonly releases = this.registry.counter('weft_address_releases_total', 'ReleaseAddress calls answered successfully.');
  readonly peersProgrammed = this.registry.counter('weft_peer_entries_programmed_total', 'FDB and neighbour entries the agent added to VXLAN devices since weft started.');
  readonly peers = this.registry.gauge('weft_peer_entries', 'Remote endpoints and flood entries of each local network: state="programmed" (in the kernel) or "expected" (from the store).', ['network', 'state']);
  readonly drift = this.registry.gauge('weft_peer_drift', 'Entries missing from or extra in the kernel, per local network; the reconcile repairs them.', ['network']);
  readonly peerOps = this.registry.counter('weft_peer_operations_total', 'Kernel operations on the forwarding tables of VXLAN devices and routed links since weft started, by table ("fdb", "neighbour" or "route"): what changes cost, counted.', ['table']);
  readonly corrections = this.registry.counter('weft_reconcile_corrections_total', 'Corrections made by the reconcile: missing kernel objects recreated, drifted entries fixed, leftovers removed.');
  readonly lastReconcile = this.registry.gauge('weft_reconcile_last_timestamp_seconds', 'Unix time when the last reconcile finished.');
  readonly reconcileSeconds = this.registry.gauge('weft_reconcile_duration_seconds', 'How long the last reconcile took.');
  readonly storeRequests = this.registry.counter('weft_store_requests_total', 'Store requests, by operation and outcome (ok or error).', ['op', 'outcome']);
  readonly storeSeconds = this.registry.histogram('weft_store_request_duration_seconds', 'Store request latency, by operation.', ['op'], LATENCY_BUCKETS);
  readonly storeErrors = this.registry.counter('weft_store_errors_total', 'Store requests that failed, by operation (etcd unreachable, timeouts).', ['op']);
  readonly agentStoreErrors = this.registry.counter('weft_agent_retries_total', 'Agent operations (registration, watch, reconcile) that failed and were retried.');
  readonly storeResponseBytes = this.registry.counter('weft_store_response_bytes_total', 'Bytes of keys and values in store answers (get and list), by operation and key area (the first part of the key after /weft/v1/: endpoints, addrs, ...; "all" for the whole tree).', ['op', 'area']);
  readonly netlinkRequests = this.registry.counter('weft_netlink_requests_total', 'FDB, neighbour and (routed networks) route requests sent to the kernel, by table (fdb, neigh, route) and kind (add, del, dump).', ['table', 'op']);
  readonly netlinkDumpEntries = this.registry.counter('weft_netlink_dump_entries_total', 'Entries read back by FDB, neighbour and route dumps, by table.', ['table']);
  readonly storeLastSuccess = this.registry.gauge('weft_store_last_success_timestamp_seconds', 'Unix time of the last store request that succeeded.');
  readonly dns = this.registry.counter('weft_dns_events_total', 'DNS server events: queries, answered, nxdomain, forwarded, refused, servfail, malformed, truncated, dropped, parked (held while weft learns the asker), tcpConnections.', ['event']);
  readonly invalidRecords = this.registry.counter('weft_store_invalid_records_total', 'Records in the store that weft skipped because they are not valid, by kind (endpoint, host, network, binding); each value counted once.', ['kind']);
  readonly suspects = this.registry.gauge('weft_hosts_unregistered_kept', 'Hosts whose lease expired that are kept in the forwarding tables while they answer probes over the underlay.');
  readonly endpointAddresses = this.registry.gauge('weft_endpoint_addresses', 'Addresses of endpoints in the cluster (every host), by network and family ("ipv4" or "ipv6"), from the agent\'s mirror of the store.', ['network', 'family']);
  readonly residentMemory = this.registry.gauge('process_resident_memory_bytes', 'Resident memory of the weft process (VmRSS: its private memory plus the pages of the node binary it touched, which other node processes share).');
  readonly heapUsed = this.registry.gauge('nodejs_heap_size_used_bytes', 'JavaScript heap in use (V8), after the last garbage collection as far as it ran.');
  readonly heapTotal = this.registry.gauge('nodejs_heap_size_total_bytes', 'JavaScript heap reserved by V8.');
  readonly externalMemory = this.registry.gauge('nodejs_external_memory_bytes', 'Memory outside the JavaScript heap held by JavaScript objects (buffers).');
  readonly memoryReleases = this.registry.counter('weft_memory_releases_total', 'Times weft gave freed memory back to the system (V8\'s pool of freed heap pages, malloc\'s free pages): once after start-up, after the resident size grew by 16 MiB (a large list or fill), or after a smaller burst settled.');
  readonly memoryReleased = this.registry.counter('weft_memory_released_bytes_total', 'Resident memory those releases gave back.');
  readonly leaseAlive = this.registry.gauge('weft_lease_alive', '1 when this host\'s registration (under its lease) is in the store, 0 when not; absent with the embedded store.');

  /** For the API server's onCall hook. Admin routes (GET /weft/...) are not plugin calls. */
  readonly onCall = (method: string, outcome: string, ms: number): void => {
    if (method.startsWith('weft/')) return;
    const m = /^[A-Za-z]+\.[A-Za-z]+$/.test(method) ? method : 'unknown';
    this.calls.inc({ method: m, outcome });
    this.callSeconds.observe({ method: m, outcome }, ms / 1000);
    if (outcome === 'ok' && m === 'IpamDriver.RequestAddress') this.allocations.inc();
    if (outcome === 'ok' && m === 'IpamDriver.ReleaseAddress') this.releases.inc();
  };

  /** For the instrumented store: what an answer carried. */
  observeStoreBytes(op: string, area: string, bytes: number): void {
    this.storeResponseBytes.inc({ op, area }, bytes);
  }

  /** For the instrumented store. */
  observeStore(op: string, ok: boolean, seconds: number): void {
    this.storeRequests.inc({ op, outcome: ok ? 'ok' : 'error' });
    this.storeSeconds.observe({ op }, seconds);
    if (ok) this.storeLastSuccess.set({}, Date.now() / 1000);
    else this.storeErrors.inc({ op });
  }
}
