// The optional HTTP listener of --metrics-addr:
//   GET /metrics   Prometheus text
//   GET /healthz   200 when the plugin socket answers and the store answered
//                  recently; 503 with the reason otherwise (for supervisors)
import * as http from 'http';
import type { Logger } from 'pino';
import { keys } from '../store/keys';
import type { InstrumentedStore } from './instrumented-store';
import { CONTENT_TYPE, Registry } from './metrics';
import { unixRequest, describeSocketError } from './unix-http';

export interface HealthDeps {
  socket: string;
  store: InstrumentedStore;
  hostName: string;
  /** A store answer older than this counts as "not recently": the check then asks the store itself. */
  freshMs: number;
  /** Bound on the check's own store request and socket request. */
  probeTimeoutMs: number;
}

export interface Health {
  ok: boolean;
  socket: string;
  store: string;
  /** When unhealthy: what is wrong and what to do. */
  reason?: string;
  lastStoreAnswer?: string;
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let t: NodeJS.Timeout | undefined;
  return Promise.race([
    p.finally(() => clearTimeout(t)),
    new Promise<never>((_, reject) => { t = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms); }),
  ]);
}

export async function checkHealth(d: HealthDeps): Promise<Health> {
  const reasons: string[] = [];
  let socket = 'ok';
  try {
    const r = await unixRequest(d.socket, 'POST', '/Plugin.Activate', d.probeTimeoutMs, '');
    if (r.status !== 200) throw new Error(`Plugin.Activate answered ${r.status}`);
  } catch (err) {
    socket = 'failing';
    reasons.push(`the plugin socket does not answer (${describeSocketError(d.socket, err)}): Docker cannot use weft; restart weft serve`);
  }
  let store = 'ok';
  if (Date.now() - d.store.lastSuccess > d.freshMs) {
    try {
      await withTimeout(d.store.get(keys.host(d.hostName)), d.probeTimeoutMs, 'store');
    } catch (err) {
      store = 'failing';
      const since = d.store.lastSuccess ? `since ${new Date(d.store.lastSuccess).toISOString()}` : 'since weft started';
      reasons.push(`the store ${d.store.description} has not answered ${since} (${(err as Error).message}): check that etcd is running and reachable from this host`);
    }
  }
  return {
    ok: reasons.length === 0, socket, store,
    ...(reasons.length ? { reason: reasons.join('; ') } : {}),
    ...(d.store.lastSuccess ? { lastStoreAnswer: new Date(d.store.lastSuccess).toISOString() } : {}),
  };
}

/** HOST:PORT or [v6]:PORT. */
export function parseHostPort(addr: string): { host: string; port: number } {
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9.-]+)):(\d{1,5})$/.exec(addr);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port < 0 || port > 65535) throw new Error(`metrics-addr "${addr}" is not HOST:PORT (for example 127.0.0.1:9464)`);
  return { host: m[1] ?? m[2], port };
}

export async function startMetricsServer(addr: string, registry: Registry, health: () => Promise<Health>, log: Logger): Promise<http.Server> {
  const { host, port } = parseHostPort(addr);
  const server = http.createServer((req, res) => {
    const path = (req.url ?? '').split('?')[0];
    const send = (status: number, type: string, body: string) => {
      res.writeHead(status, { 'Content-Type': type, 'Content-Length': Buffer.byteLength(body), 'Cache-Control': 'no-store' });
      res.end(req.method === 'HEAD' ? undefined : body);
    };
    if (req.method !== 'GET' && req.method !== 'HEAD') return send(405, 'text/plain', 'only GET\n');
    if (path === '/metrics') {
      registry.expose().then((text) => send(200, CONTENT_TYPE, text), (err: Error) => send(500, 'text/plain', `${err.message}\n`));
    } else if (path === '/healthz') {
      health().then(
        (h) => send(h.ok ? 200 : 503, 'application/json', JSON.stringify(h) + '\n'),
        (err: Error) => send(503, 'application/json', JSON.stringify({ ok: false, reason: err.message }) + '\n'),
      );
    } else {
      send(404, 'text/plain', 'weft serves /metrics and /healthz here\n');
    }
  });
  server.keepAliveTimeout = 5_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => {
      reject(new Error(`cannot listen on --metrics-addr ${addr}: ${err.code === 'EADDRINUSE' ? 'the port is in use' : err.message}; pick another address or leave --metrics-addr empty`));
    });
    server.listen(port, host, () => resolve());
  });
  server.on('error', (err) => log.warn({ err: err.message }, 'metrics listener error'));
  log.info({ metricsAddr: addr }, 'serving /metrics and /healthz');
  return server;
}
