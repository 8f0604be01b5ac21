// Starts a real etcd for tests: on loopback with free ports, or inside a
// network namespace on an underlay address (multi-host labs). Every wait is
// bounded; stop() always ends the process, and a process-exit hook SIGKILLs
// any etcd a crashed test left behind.
//
// For a multi-member cluster give every member the same initialCluster and
// start them concurrently (Promise.all): a member reports ready only once a
// quorum is up.
import { ChildProcess, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as https from 'node:https';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';

export interface EtcdTlsFiles {
  /** Server certificate and key (PEM). The certificate must name clientHost. */
  certFile: string;
  keyFile: string;
  /** CA that signed client certificates; with clientCertAuth, clients must present one. */
  caFile?: string;
  clientCertAuth?: boolean;
  /** Client certificate and key used by the readiness probe when clientCertAuth is on. */
  probeCertFile?: string;
  probeKeyFile?: string;
}

export interface StartEtcdOptions {
  /** Member name (default "etcd-<random>"). */
  name?: string;
  /** Data directory; created if missing and never removed by stop(). Default: a temp dir that stop() removes. */
  dataDir?: string;
  /** Address etcd listens and advertises on (default 127.0.0.1). */
  clientHost?: string;
  /** Run inside `ip netns exec <netns>`. Readiness then comes from etcd's log (the address may be unreachable from here). */
  netns?: string;
  /** Default: a free port (a random one inside a netns). */
  clientPort?: number;
  peerPort?: number;
  tls?: EtcdTlsFiles;
  /** `name=http://host:peerPort,...` for a multi-member cluster (default: this member alone). */
  initialCluster?: string;
  initialClusterState?: 'new' | 'existing';
  initialClusterToken?: string;
  extraArgs?: string[];
  /** Also append etcd's output to this file. */
  logFile?: string;
  /** Bound on start-up, default 30 s. */
  startTimeoutMs?: number;
  /** etcd binary, default "etcd" from PATH. */
  binary?: string;
}

export interface EtcdHandle {
  /** http(s)://host:port */
  endpoint: string;
  /** http://host:peerPort, for initialCluster of other members. */
  peerUrl: string;
  name: string;
  dataDir: string;
  clientPort: number;
  peerPort: number;
  pid: number;
  /** SIGTERM (SIGKILL after 10 s); resolves once the process is gone. Idempotent. */
  stop(): Promise<void>;
  /** SIGSTOP: etcd stops answering but keeps its sockets open (a hung server). */
  pause(): void;
  /** SIGCONT */
  resume(): void;
  /** The last lines etcd wrote. */
  logs(): string;
  readonly exited: boolean;
}

const running = new Set<ChildProcess>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const c of running) {
      try {
        c.kill('SIGCONT');
        c.kill('SIGKILL');
      } catch {
        /* gone */
      }
    }
  });
}

async function freePort(host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, host, () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => (port ? resolve(port) : reject(new Error(`no free port on ${host}`))));
    });
  });
}

function urlHost(host: string): string {
  return host.includes(':') && !host.startsWith('[') ? `[${host}]` : host;
}

function probeHealth(endpoint: string, tls: EtcdTlsFiles | undefined): Promise<boolean> {
  return new Promise((resolve) => {
    const url = `${endpoint}/health`;
    const onRes = (res: http.IncomingMessage): void => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve(res.statusCode === 200 && /"health":\s*"true"/.test(body)));
    };
    const req = endpoint.startsWith('https:')
      ? https.get(
          url,
          {
            timeout: 2_000,
            ...(tls?.caFile ? { ca: fs.readFileSync(tls.caFile) } : {}),
            ...(tls?.probeCertFile ? { cert: fs.readFileSync(tls.probeCertFile) } : {}),
            ...(tls?.probeKeyFile ? { key: fs.readFileSync(tls.probeKeyFile) } : {}),
          },
          onRes,
        )
      : http.get(url, { timeout: 2_000 }, onRes);
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', () => resolve(false));
  });
}

class Tail {
  private lines: string[] = [];
  private partial = '';
  push(chunk: string): void {
    const parts = (this.partial + chunk).split('\n');
    this.partial = parts.pop() ?? '';
    for (const l of parts) {
      this.lines.push(l);
      if (this.lines.length > 300) this.lines.shift();
    }
  }
  text(n = 40): string {
    return [...this.lines, ...(this.partial ? [this.partial] : [])].slice(-n).join('\n');
  }
}

export async function startEtcd(opts: StartEtcdOptions = {}): Promise<EtcdHandle> {
  const autoPorts = opts.clientPort === undefined || opts.peerPort === undefined;
  let lastErr: unknown;
  // Auto-chosen ports can be taken between choosing and binding: try again.
  for (let attempt = 0; attempt < (autoPorts ? 3 : 1); attempt++) {
    try {
      return await startOnce(opts);
    } catch (e) {
      lastErr = e;
      if (!/address already in use/i.test(String((e as Error).message))) throw e;
    }
  }
  throw lastErr;
}

async function startOnce(opts: StartEtcdOptions): Promise<EtcdHandle> {
  installExitHook();
  const host = opts.clientHost ?? '127.0.0.1';
  const name = opts.name ?? `etcd-${Math.random().toString(36).slice(2, 8)}`;
  const randomPort = (): number => 20_000 + Math.floor(Math.random() * 12_000);
  const clientPort = opts.clientPort ?? (opts.netns ? randomPort() : await freePort(host));
  let peerPort = opts.peerPort ?? (opts.netns ? randomPort() : await freePort(host));
  if (peerPort === clientPort) peerPort = clientPort + 1;

  const ownDataDir = opts.dataDir === undefined;
  const dataDir = opts.dataDir ?? fs.mkdtempSync(path.join(os.tmpdir(), `weft-etcd-${name}-`));
  fs.mkdirSync(dataDir, { recursive: true, mode: 0o700 });

  const scheme = opts.tls ? 'https' : 'http';
  const endpoint = `${scheme}://${urlHost(host)}:${clientPort}`;
  const peerUrl = `http://${urlHost(host)}:${peerPort}`;
  const args = [
    '--name', name,
    '--data-dir', dataDir,
    '--listen-client-urls', endpoint,
    '--advertise-client-urls', endpoint,
    '--listen-peer-urls', peerUrl,
    '--initial-advertise-peer-urls', peerUrl,
    '--initial-cluster', opts.initialCluster ?? `${name}=${peerUrl}`,
    '--initial-cluster-state', opts.initialClusterState ?? 'new',
    '--initial-cluster-token', opts.initialClusterToken ?? `weft-test-${name}`,
    '--logger', 'zap',
    '--log-outputs', 'stderr',
  ];
  if (opts.tls) {
    args.push('--cert-file', opts.tls.certFile, '--key-file', opts.tls.keyFile);
    if (opts.tls.caFile) args.push('--trusted-ca-file', opts.tls.caFile);
    if (opts.tls.clientCertAuth) args.push('--client-cert-auth');
  }
  args.push(...(opts.extraArgs ?? []));

  const binary = opts.binary ?? 'etcd';
  const [cmd, argv] = opts.netns ? ['ip', ['netns', 'exec', opts.netns, binary, ...args]] : [binary, args];
  const child = spawn(cmd, argv, { stdio: ['ignore', 'pipe', 'pipe'] });
  running.add(child);
  const tail = new Tail();
  const logStream = opts.logFile ? fs.createWriteStream(opts.logFile, { flags: 'a' }) : undefined;
  let ready = false;
  let exited = false;
  let spawnError: Error | undefined;
  const exitPromise = new Promise<void>((resolve) => {
    child.on('exit', () => {
      exited = true;
      running.delete(child);
      resolve();
    });
  });
  child.on('error', (e) => {
    spawnError = e;
  });
  // etcd's wording differs between loggers and versions; a chunk may split a line.
  const readyLine = /ready to serve client requests|serving client traffic|serving (insecure )?client requests on/;
  let recent = '';
  const onData = (d: Buffer): void => {
    const s = d.toString('utf8');
    tail.push(s);
    logStream?.write(s);
    recent = (recent + s).slice(-4096);
    if (readyLine.test(recent)) ready = true;
  };
  child.stdout!.on('data', onData);
  child.stderr!.on('data', onData);

  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      if (!exited) {
        try {
          child.kill('SIGCONT');
          child.kill('SIGTERM');
        } catch {
          /* gone */
        }
        const killer = setTimeout(() => {
          try {
            child.kill('SIGKILL');
          } catch {
            /* gone */
          }
        }, 10_000);
        await exitPromise;
        clearTimeout(killer);
      }
      logStream?.end();
      if (ownDataDir) fs.rmSync(dataDir, { recursive: true, force: true });
    })();
    return stopping;
  };

  const deadline = Date.now() + (opts.startTimeoutMs ?? 30_000);
  try {
    for (;;) {
      if (spawnError) throw new Error(`cannot run ${cmd}: ${spawnError.message}`);
      if (exited) throw new Error(`etcd exited during start-up (code ${child.exitCode}, signal ${child.signalCode})`);
      // Inside a netns the address may be unreachable from here: trust the log.
      if (ready && (opts.netns || (await probeHealth(endpoint, opts.tls)))) break;
      if (Date.now() > deadline) throw new Error(`etcd did not become ready within ${opts.startTimeoutMs ?? 30_000} ms`);
      await new Promise((r) => setTimeout(r, 100));
    }
  } catch (e) {
    await stop();
    throw new Error(`${(e as Error).message}; ${describe(cmd, argv)}\n--- etcd output ---\n${tail.text()}`, { cause: e });
  }

  return {
    endpoint,
    peerUrl,
    name,
    dataDir,
    clientPort,
    peerPort,
    pid: child.pid!,
    stop,
    pause: () => {
      if (!exited) child.kill('SIGSTOP');
    },
    resume: () => {
      if (!exited) child.kill('SIGCONT');
    },
    logs: () => tail.text(200),
    get exited() {
      return exited;
    },
  };
}

function describe(cmd: string, args: readonly string[]): string {
  return [cmd, ...args].map((a) => (/^[\w@%+=:,./\[\]-]+$/.test(a) ? a : JSON.stringify(a))).join(' ');
}
