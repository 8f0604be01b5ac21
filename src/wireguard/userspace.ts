// The userspace WireGuard, wireguard-go: weft starts it when the kernel has no
// WireGuard module. It creates the TUN-backed interface itself and serves the
// UAPI socket /var/run/wireguard/<interface>.sock, through which weft
// configures it (uapi.ts).
//
// It runs detached (its own session) so that, like the kernel's state, it
// outlives a weft restart: running containers keep their encrypted path while
// weft is down, and a restarted weft finds it by its socket. It gets a minimal
// environment (no WEFT_* settings, no etcd password) and logs errors only, to
// <run-dir>/wireguard/wireguard-go.log; it never logs keys.
import { execFile, spawn, type ChildProcess } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { withNetns } from '../dataplane/netns';
import { uapiExchange, uapiSocketPath } from './uapi';

export interface WireguardGoOptions {
  /** The binary: a name looked up in PATH, or a path. */
  binary: string;
  ifname: string;
  /** Directory for its log and pid files. */
  dir: string;
  /** Network namespace to start it in (tests run several hosts in one process); default: this process's. */
  netns?: string;
}

/** "wireguard-go v0.0.20220316", or an Error saying what to install. */
export function wireguardGoVersion(binary: string, timeoutMs = 5_000): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(binary, ['--version'], { timeout: timeoutMs, env: minimalEnv() }, (err, stdout) => {
      if (err) {
        const code = (err as NodeJS.ErrnoException).code;
        reject(new Error(code === 'ENOENT'
          ? `${binary} is not installed: install it (Debian: apt-get install wireguard-go), or pass --wireguard-go with its path, or use a kernel with the WireGuard module`
          : `${binary} --version failed: ${err.message}`));
        return;
      }
      const first = String(stdout).split('\n')[0].trim();
      resolve(first || 'wireguard-go');
    });
  });
}

function minimalEnv(): NodeJS.ProcessEnv {
  return {
    PATH: process.env.PATH ?? '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
    // stay in the foreground (weft supervises it), log errors only
    WG_PROCESS_FOREGROUND: '1',
    LOG_LEVEL: 'error',
    // asked for explicitly (--wireguard userspace) on a kernel that has the module
    WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD: '1',
  };
}

/** True when something answers get=1 on the interface's UAPI socket. */
export async function uapiAnswers(ifname: string, timeoutMs = 2_000): Promise<boolean> {
  if (!fs.existsSync(uapiSocketPath(ifname))) return false;
  try {
    await uapiExchange(uapiSocketPath(ifname), 'get=1\n\n', timeoutMs);
    return true;
  } catch {
    return false;
  }
}

export const pidFileOf = (o: Pick<WireguardGoOptions, 'dir' | 'ifname'>): string => path.join(o.dir, `${o.ifname}.pid`);

/** The pid weft recorded when it started wireguard-go, if that process still runs it. */
export function recordedPid(o: Pick<WireguardGoOptions, 'dir' | 'ifname'>): number | undefined {
  try {
    const pid = Number(fs.readFileSync(pidFileOf(o), 'utf8').trim());
    if (!Number.isInteger(pid) || pid <= 1) return undefined;
    const cmd = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    return cmd.some((a) => a.endsWith('wireguard-go')) && cmd.includes(o.ifname) ? pid : undefined;
  } catch {
    return undefined;
  }
}

export interface StartedProcess {
  pid: number;
  child: ChildProcess;
  /** Resolves with a description when it exits. */
  exited: Promise<string>;
}

/**
 * Starts wireguard-go for the interface and waits (bounded) until its UAPI
 * socket answers. The caller keeps `child` to learn when it dies.
 */
export async function startWireguardGo(o: WireguardGoOptions, readyTimeoutMs = 10_000): Promise<StartedProcess> {
  fs.mkdirSync(o.dir, { recursive: true, mode: 0o700 });
  const logFile = path.join(o.dir, 'wireguard-go.log');
  const log = fs.openSync(logFile, 'a', 0o600);
  let child: ChildProcess;
  try {
    fs.writeSync(log, `==== weft: starting ${o.binary} -f ${o.ifname} at ${new Date().toISOString()} ====\n`);
    // spawn forks from the calling thread, so the child starts in the thread's namespace.
    const go = () => spawn(o.binary, ['-f', o.ifname], { detached: true, stdio: ['ignore', log, log], env: minimalEnv() });
    child = o.netns ? withNetns(o.netns, go) : go();
  } finally {
    fs.closeSync(log);
  }
  const exited = new Promise<string>((resolve) => {
    child.once('error', (e: NodeJS.ErrnoException) => resolve(e.code === 'ENOENT'
      ? `${o.binary} is not installed (apt-get install wireguard-go, or --wireguard-go PATH)`
      : `cannot start ${o.binary}: ${e.message}`));
    child.once('exit', (code, signal) => resolve(`${o.binary} exited (${signal ? `signal ${signal}` : `code ${code}`}); its log: ${logFile}`));
  });
  child.unref();
  let gone: string | undefined;
  void exited.then((why) => { gone = why; });
  const deadline = Date.now() + readyTimeoutMs;
  for (let i = 0; i < 1000 && Date.now() < deadline; i++) {
    if (gone) break;
    if (await uapiAnswers(o.ifname, 1_000)) {
      if (child.pid) fs.writeFileSync(pidFileOf(o), `${child.pid}\n`, { mode: 0o600 });
      return { pid: child.pid ?? -1, child, exited };
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  if (!gone && child.pid) {
    try {
      process.kill(child.pid, 'SIGKILL');
    } catch {
      // gone meanwhile
    }
  }
  let tail = '';
  try {
    tail = fs.readFileSync(logFile, 'utf8').split('\n').slice(-6).join(' | ').trim();
  } catch {
    // no log
  }
  throw new Error(`${gone ?? `${o.binary} did not open ${uapiSocketPath(o.ifname)} within ${readyTimeoutMs} ms`}${tail ? ` (last lines of its log: ${tail})` : ''}`);
}
