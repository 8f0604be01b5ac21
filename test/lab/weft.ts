// Runs weft for a lab host: in the host's network namespace (nsenter --net,
// so weft stays in the root mount namespace and its namespace pins survive a
// weft restart), its socket in the directory that host's dockerd sees as
// /run/docker/plugins.
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import { createHash } from 'node:crypto';
import { recordedPid } from '../../src/wireguard/userspace';
import { LAB_ROOT } from './cleanup';
import { onEmergency } from './emergency';
import type { LabHost } from './host';
import { LineTail, killQuiet, sleep } from './proc';

export const REPO_ROOT = path.resolve(__dirname, '..', '..');
export const WEFT_CLI = path.join(REPO_ROOT, 'dist', 'cli.js');
/** The runtime flags weft ships with (package.json "start", config.json's entrypoint, the README's systemd unit; test/unit/runtime-flags.test.ts keeps them equal). */
export const WEFT_NODE_FLAGS = ['--max-semi-space-size=1', '--max-opt=1'];

export interface StartWeftOptions {
  /** extra arguments after the lab's own (e.g. ['--store', 'etcd://...', '--advertise-addr', ip]) */
  args?: string[];
  env?: Record<string, string>;
  /** bound for the socket to answer Plugin.Activate; default 20 s */
  readyTimeoutMs?: number;
  /** default 'debug' */
  logLevel?: string;
  /** weft's cli.js to run (default this repository's dist/cli.js): another build, e.g. an older version */
  cli?: string;
}

export interface PluginReply {
  status: number;
  text: string;
  /** parsed body, undefined when it is not JSON */
  json: unknown;
}

export interface WeftProcess {
  /** pid of the current weft process (changes on restart) */
  readonly pid: number;
  logFile: string;
  socket: string;
  stateDir: string;
  runDir: string;
  /** the full command line used to start it */
  argv: string[];
  running(): boolean;
  /** last lines of weft's output (JSON logs) */
  logTail(lines?: number): string;
  kill(signal?: NodeJS.Signals): void;
  /** resolves true once the process has exited (false at the bound) */
  waitExit(timeoutMs?: number): Promise<boolean>;
  /** SIGTERM, waits (bounded, default 10 s), then SIGKILL */
  stop(timeoutMs?: number): Promise<void>;
  /** starts it again (after stop or a crash) and waits until it serves */
  start(): Promise<void>;
  restart(): Promise<void>;
  /** a raw plugin API call over the socket, as Docker makes it (no Content-Type) */
  call(method: string, body?: unknown, timeoutMs?: number): Promise<PluginReply>;
}

/** A WireGuard interface name unique to this lab host (and to this LAB_ROOT, so that labs of others on the machine differ). */
export function labWgInterface(hostName: string): string {
  return `wg${createHash('sha256').update(`${LAB_ROOT}/${hostName}`).digest('hex').slice(0, 10)}`;
}

/**
 * weft leaves wireguard-go running when it stops (as it leaves kernel state);
 * the lab stops it with the host: SIGTERM (it removes its socket), SIGKILL if
 * it lingers, and the socket file goes in any case.
 */
export function stopWireguardGo(runDir: string, ifname: string): void {
  // only the process the pid file names if it still is that wireguard-go (pids get reused)
  const pid = recordedPid({ dir: path.join(runDir, 'wireguard'), ifname });
  if (pid) {
    killQuiet(pid, 'SIGTERM');
    const deadline = Date.now() + 2_000;
    for (let i = 0; i < 200 && Date.now() < deadline; i++) {
      try {
        process.kill(pid, 0);
      } catch {
        break;
      }
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 10);
    }
    killQuiet(pid, 'SIGKILL');
  }
  fs.rmSync(`/var/run/wireguard/${ifname}.sock`, { force: true });
}

/** POST /<method> on a plugin unix socket, with no Content-Type header (like Docker). */
export function pluginCall(socket: string, method: string, body?: unknown, timeoutMs = 5_000): Promise<PluginReply> {
  const payload = body === undefined ? '' : JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        socketPath: socket,
        path: `/${method}`,
        method: 'POST',
        headers: { Accept: 'application/vnd.docker.plugins.v1.2+json', 'Content-Length': Buffer.byteLength(payload) },
        timeout: timeoutMs,
      },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => {
          text += d;
        });
        res.on('end', () => {
          let json: unknown;
          try {
            json = JSON.parse(text);
          } catch {
            json = undefined;
          }
          resolve({ status: res.statusCode ?? 0, text, json });
        });
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error(`${method}: no answer within ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end(payload);
  });
}

function exited(c: ChildProcess): boolean {
  return c.exitCode !== null || c.signalCode !== null;
}

function waitChildExit(c: ChildProcess, timeoutMs: number): Promise<boolean> {
  if (exited(c)) return Promise.resolve(true);
  return new Promise((resolve) => {
    const t = setTimeout(() => {
      c.removeListener('exit', onExit);
      resolve(false);
    }, timeoutMs);
    const onExit = (): void => {
      clearTimeout(t);
      resolve(true);
    };
    c.once('exit', onExit);
  });
}

/**
 * Starts weft for `host` and waits until its socket answers Plugin.Activate.
 * The process is stopped by host.destroy() too.
 */
export async function startWeft(host: LabHost, opts: StartWeftOptions = {}): Promise<WeftProcess> {
  const cli = opts.cli ?? WEFT_CLI;
  if (!fs.existsSync(cli)) throw new Error(`lab: ${cli} does not exist: run 'npm run build' first`);
  const socket = path.join(host.pluginDir, 'weft.sock');
  const stateDir = path.join(host.dir, 'weft-state');
  const runDir = path.join(host.dir, 'weft-run');
  const logFile = path.join(host.dir, 'weft.log');
  fs.mkdirSync(stateDir, { recursive: true });
  fs.mkdirSync(runDir, { recursive: true });
  const argv = [
    `--net=${host.netns}`,
    process.execPath,
    // as weft is shipped (npm start, the managed plugin): a small young generation (README, "Memory")
    ...WEFT_NODE_FLAGS,
    cli,
    'serve',
    '--socket', socket,
    '--state-dir', stateDir,
    '--run-dir', runDir,
    '--host-name', host.name,
    '--docker-host', host.dockerHost,
    '--log-level', opts.logLevel ?? 'debug',
    // Encrypted networks: every lab host's WireGuard socket (/var/run/wireguard/<interface>.sock) is
    // machine-wide, so each gets an interface name of its own; tunnel addresses from a test range.
    // (not for another build: a weft older than encrypted networks refuses these flags)
    ...(opts.cli ? [] : ['--wg-interface', labWgInterface(host.name), '--wg-subnet', '198.51.100.0/24']),
    ...(opts.args ?? []),
  ];
  const readyTimeoutMs = opts.readyTimeoutMs ?? 20_000;
  let child: ChildProcess | undefined;
  let tail = new LineTail(300);

  const running = (): boolean => child !== undefined && !exited(child);

  const failMsg = (what: string): string =>
    `lab: weft of ${host.name} ${what}; log ${logFile}, last lines:\n${tail.tail(40) || '(no output)'}`;

  const start = async (): Promise<void> => {
    if (running()) return;
    const fd = fs.openSync(logFile, 'a');
    fs.writeSync(fd, `\n==== lab: starting weft ${new Date().toISOString()}: nsenter ${argv.join(' ')} ====\n`);
    tail = new LineTail(300);
    const c = spawn('nsenter', argv, {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, ...(opts.env ?? {}) },
      cwd: REPO_ROOT,
    });
    child = c;
    const onData = (d: Buffer): void => {
      tail.push(d.toString('utf8'));
      try {
        fs.writeSync(fd, d);
      } catch {
        /* closed */
      }
    };
    c.stdout?.on('data', onData);
    c.stderr?.on('data', onData);
    c.on('error', (e) => tail.push(`[lab] cannot spawn nsenter: ${e.message}\n`));
    c.on('close', (code, signal) => {
      try {
        fs.writeSync(fd, `==== lab: weft exited (code ${code}, signal ${signal}) ====\n`);
        fs.closeSync(fd);
      } catch {
        /* closed */
      }
    });

    const deadline = Date.now() + readyTimeoutMs;
    let last = 'socket not there yet';
    for (let i = 0; i < 100_000; i++) {
      if (exited(c)) throw new Error(failMsg(`exited during start-up (code ${c.exitCode}, signal ${c.signalCode})`));
      if (fs.existsSync(socket)) {
        try {
          const r = await pluginCall(socket, 'Plugin.Activate', undefined, 2_000);
          if (r.status === 200 && /Implements/i.test(r.text)) return;
          last = `Plugin.Activate answered ${r.status} ${r.text.slice(0, 200)}`;
        } catch (e) {
          last = `Plugin.Activate: ${(e as Error).message}`;
        }
      }
      if (Date.now() > deadline) break;
      await sleep(100);
    }
    const pid = c.pid;
    if (pid) killQuiet(pid, 'SIGKILL');
    throw new Error(failMsg(`did not answer Plugin.Activate on ${socket} within ${readyTimeoutMs} ms (${last})`));
  };

  const stop = async (timeoutMs = 10_000): Promise<void> => {
    const c = child;
    if (!c || exited(c) || !c.pid) return;
    killQuiet(c.pid, 'SIGTERM');
    if (!(await waitChildExit(c, timeoutMs))) {
      killQuiet(c.pid, 'SIGKILL');
      await waitChildExit(c, 5_000);
    }
  };

  const unregister = onEmergency(() => {
    if (child?.pid && !exited(child)) killQuiet(child.pid, 'SIGKILL');
  });

  const w: WeftProcess = {
    get pid(): number {
      return child?.pid ?? -1;
    },
    logFile,
    socket,
    stateDir,
    runDir,
    argv: ['nsenter', ...argv],
    running,
    logTail: (n = 40) => tail.tail(n),
    kill(signal: NodeJS.Signals = 'SIGTERM'): void {
      if (child?.pid && !exited(child)) killQuiet(child.pid, signal);
    },
    waitExit: (timeoutMs = 10_000) => (child ? waitChildExit(child, timeoutMs) : Promise.resolve(true)),
    stop,
    start,
    async restart(): Promise<void> {
      await stop();
      await start();
    },
    call: (method, body, timeoutMs) => pluginCall(socket, method, body, timeoutMs),
  };
  host.onDestroy(async () => {
    await stop(5_000);
    const i = argv.lastIndexOf('--wg-interface'); // the test's own, or the lab's
    stopWireguardGo(runDir, argv[i + 1] ?? labWgInterface(host.name));
    unregister();
  });
  try {
    await start();
  } catch (e) {
    await stop(2_000);
    throw e;
  }
  return w;
}
