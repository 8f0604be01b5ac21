// Lab hosts: a network namespace with its own Docker engine, plugged into an
// underlay. See /work/shared/docs/environment.md ("Several hosts on one
// machine") for why each step is there.
//
//   const ul = await createUnderlay('wlab-ul', '192.0.2.0/24');
//   const h1 = await startHost({ name: 'wlab-h1', underlay: ul });
//   await ensureBusyboxImage(h1);
//   const weft = await startWeft(h1);
//   await h1.dockerOk(['network', 'create', '-d', 'weft', '--ipam-driver', 'weft', 'app']);
//   ...
//   await h1.destroy(); await ul.destroy();
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { onEmergency } from './emergency';
import {
  LAB_CGROUP,
  cgroupMounts,
  hostDirOf,
  killAndWaitSync,
  pidsByCmdline,
  sweepHostSync,
} from './cleanup';
import {
  describeCommand,
  failure,
  killQuiet,
  processAlive,
  run,
  sleep,
  waitFor,
  type RunOptions,
  type RunResult,
} from './proc';
import type { Underlay } from './underlay';
import { labEngine, engineByName, type Engine, type EngineName } from './engine';

export { createUnderlay, type Underlay, type UnderlayPort, type AddHostOptions } from './underlay';
export { cleanupLabLeftovers, cleanupLabLeftoversSync, LAB_ROOT } from './cleanup';
export { startWeft, pluginCall, type WeftProcess, type StartWeftOptions, type PluginReply } from './weft';
export { ensureBusyboxImage, BUSYBOX_IMAGE } from './image';
export { run, runOk, waitFor, sleep, type RunResult, type RunOptions } from './proc';
export { labEngine, isEngine28, LAB_ENGINE_NAME, FORKY_ROOTFS, type Engine, type EngineName } from './engine';

/** The docker CLI that suits the lab's engine (Debian's 20.10 CLI, or forky's 28.5 one). */
export const DOCKER_CLI = labEngine().cli;

export interface StartHostOptions {
  /** network namespace name; must start with the caller's lab prefix, e.g. 'wlab-h1' */
  name: string;
  underlay?: Underlay;
  /** underlay address with prefix, e.g. 192.0.2.11/24; default: the underlay's next free one */
  address?: string;
  /** MTU of the underlay link; default the underlay's */
  mtu?: number;
  /** start a dockerd (default true); false = a bare namespace (e.g. for etcd) */
  dockerd?: boolean;
  /** merged over the lab's daemon.json (bip, default-address-pools, cgroup-parent) */
  daemonConfig?: Record<string, unknown>;
  /** extra dockerd arguments */
  dockerdArgs?: string[];
  /**
   * Make dockerd's exec-root (DIR/exec) a shared mount point inside the host's
   * private mount namespace, as systemd's shared /run makes /var/run/docker on
   * a real machine. A managed plugin's `rshared` bind of the exec-root then
   * propagates the plugin's mounts back to dockerd's namespace, where they
   * outlive the plugin (weft pins its network namespaces there). Default false.
   */
  sharedExecRoot?: boolean;
  /** bound for dockerd to answer `docker info`; default 60 s */
  startTimeoutMs?: number;
  /** Docker engine to run; default the lab's (WEFT_TEST_ENGINE, else 20.10) */
  engine?: EngineName;
}

export interface DockerOptions {
  /** default 60 s (Docker retries an absent plugin for ~15-30 s) */
  timeoutMs?: number;
  input?: string;
  env?: Record<string, string>;
}

export interface LabHost {
  name: string;
  /** the Docker engine this host runs, and the CLI that suits it */
  engine: Engine;
  /** /run/netns/NAME */
  netns: string;
  /** per-host directory, LAB_ROOT/NAME */
  dir: string;
  /** unix:///.../docker.sock */
  dockerHost: string;
  dockerSock: string;
  /** host path this dockerd sees as /run/docker/plugins (weft puts weft.sock there) */
  pluginDir: string;
  /** underlay address with prefix (192.0.2.11/24), if plugged into an underlay */
  address?: string;
  /** underlay address without prefix */
  ip?: string;
  /** interface name of the underlay link inside the namespace */
  underlayIf?: string;
  underlay?: Underlay;
  /** dockerd's log file */
  dockerdLog: string;
  /** lab index of this host: bip 172.30.<index>.1/24, pools in 172.31.<4*index>.0/22 */
  index: number;
  /** runs /usr/bin/docker against this host's engine; never throws on non-zero */
  docker(args: string[], opts?: DockerOptions): Promise<RunResult>;
  /** same, but throws (with the command and its stderr) on non-zero */
  dockerOk(args: string[], opts?: DockerOptions): Promise<RunResult>;
  /** runs a command inside the host's network namespace (`ip netns exec`); never throws on non-zero */
  exec(cmd: string[], opts?: RunOptions): Promise<RunResult>;
  /** same, but throws on non-zero */
  execOk(cmd: string[], opts?: RunOptions): Promise<RunResult>;
  dockerdPid(): number | undefined;
  dockerdRunning(): boolean;
  /** last lines of dockerd's log */
  dockerdLogTail(lines?: number): string;
  /** starts dockerd (no-op if running) and waits until it answers */
  startDockerd(): Promise<void>;
  /** SIGTERM, waits (bounded, default 30 s: containers get 10 s to stop), then SIGKILL */
  stopDockerd(timeoutMs?: number): Promise<void>;
  /** SIGKILL to dockerd only, like a crash (its containers and shims are left to destroy()) */
  killDockerd(): Promise<void>;
  restartDockerd(): Promise<void>;
  /**
   * A power loss: SIGKILL to dockerd, its containerd and shims and every
   * container, and the exec-root's runtime files gone as /var/run's are after
   * a reboot. Start again with startDockerd().
   */
  powerOff(): Promise<void>;
  /** registers a clean-up run by destroy() before dockerd is stopped (weft processes use it) */
  onDestroy(fn: () => Promise<void> | void): void;
  /** stops everything and removes the namespace and dir; safe to call twice and after a failed start */
  destroy(): Promise<void>;
}

const NAME_RE = /^[a-zA-Z][a-zA-Z0-9-]{1,30}$/;
const usedIndexes = new Set<number>();

function allocIndex(): number {
  for (let i = 1; i < 64; i++) {
    if (!usedIndexes.has(i)) {
      usedIndexes.add(i);
      return i;
    }
  }
  throw new Error('lab: more than 63 hosts at once');
}

/** Shell commands that re-mount the root namespace's cgroup hierarchies (ip netns exec hides them). */
function cgroupMountScript(): string {
  const lines: string[] = [];
  const mounts = cgroupMounts();
  const base = '/sys/fs/cgroup';
  const cgroupIsItsOwnMount = mounts.some((m) => m.mountPoint === base);
  if (!cgroupIsItsOwnMount) lines.push(`mount -t tmpfs -o rw,nosuid,nodev,noexec,mode=755 tmpfs ${base}`);
  for (const m of mounts) {
    if (m.mountPoint !== base && !m.mountPoint.startsWith(base + '/')) continue;
    const opts = [...new Set([...m.mountOpts.split(','), ...m.superOpts.split(',')])]
      .filter((o) => o && o !== 'relatime' && o !== 'ro')
      .join(',');
    lines.push(`mkdir -p ${m.mountPoint}`);
    lines.push(`mount -t ${m.fsType} -o ${opts} ${m.source === 'none' ? m.fsType : m.source} ${m.mountPoint}`);
  }
  return lines.join('\n');
}

function dockerdScript(name: string, dir: string, engine: Engine, sharedExecRoot = false): string {
  const shared = sharedExecRoot
    ? `# the exec-root as its own shared mount, like /var/run/docker under systemd's shared /run
mount --rbind ${dir}/exec ${dir}/exec
mount --make-rshared ${dir}/exec
`
    : '';
  const head = `#!/bin/sh
# Written by test/lab/host.ts: runs inside 'ip netns exec ${name} unshare -m -u --propagation private'.
# Engine: Docker ${engine.name}${engine.rootfs ? ` from ${engine.rootfs}` : ''}.
set -e
# ip netns exec mounted a fresh /sys, which hides the cgroup hierarchies runc needs
${cgroupMountScript()}
# drop the copies of namespace pins (/run/netns/*, weft's): this mount namespace
# must not keep other hosts' namespaces alive (unlinking a pin detaches its
# copies too; this also covers a pin that is unmounted but not unlinked)
for m in $(awk '{for(i=7;i<=NF;i++) if($i=="-"){ if($(i+1)=="nsfs") print $5; break }}' /proc/self/mountinfo | sort -r); do
  umount -l "$m" 2>/dev/null || true
done
`;
  const dockerd = `hostname ${name}
exec dockerd --data-root ${dir}/data --exec-root ${dir}/exec --pidfile ${dir}/docker.pid -H unix://${dir}/docker.sock "$@"
`;
  if (!engine.rootfs) {
    return `${head}mkdir -p /run/docker /run/containerd /etc/docker
mount --bind ${dir}/run-docker /run/docker
mount --bind ${dir}/etc-docker /etc/docker
# dockerd starts its own containerd when /run/containerd/containerd.sock is absent;
# the shims' sockets (/run/containerd/s) outlive dockerd as on a real host, so
# that a dockerd with live-restore finds its containers again
mount --bind ${dir}/run-containerd /run/containerd
${shared}${dockerd}`;
  }
  // A newer engine from its own root filesystem: bind it onto itself (pivot_root
  // needs a mount point), give it this host's /proc, /sys (with the cgroups
  // above), /dev, a private /run and /tmp, the per-host directories, then
  // pivot_root into it. A chroot is not enough (dockerd's remount of / fails,
  // and runc mounts resolv.conf in the wrong place).
  const r = engine.rootfs;
  return `${head}R=${r}
mount --bind "$R" "$R"
mount --rbind /proc "$R/proc"
mount --rbind /sys "$R/sys"
mount --rbind /dev "$R/dev"
mount -t tmpfs -o mode=755 tmpfs "$R/run"
mount -t tmpfs -o mode=1777 tmpfs "$R/tmp"
mkdir -p "$R/run/docker" "$R/run/containerd" "$R/run/netns" "$R${dir}" "$R/.oldroot"
mount --bind ${dir}/run-docker "$R/run/docker"
mount --bind ${dir}/etc-docker "$R/etc/docker"
# dockerd starts its own containerd when /run/containerd/containerd.sock is absent;
# the shims' sockets (/run/containerd/s) outlive dockerd as on a real host
mount --bind ${dir}/run-containerd "$R/run/containerd"
mount --bind ${dir} "$R${dir}"
cd "$R"
pivot_root . .oldroot
cd /
umount -l /.oldroot
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
${shared}${dockerd}`;
}

function waitChildExit(child: ChildProcess, timeoutMs: number): Promise<boolean> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(true);
  return new Promise((resolve) => {
    const t = setTimeout(() => {
      child.removeListener('exit', onExit);
      resolve(false);
    }, timeoutMs);
    const onExit = (): void => {
      clearTimeout(t);
      resolve(true);
    };
    child.once('exit', onExit);
  });
}

/** Starts a lab host. On failure everything made so far is removed and the error says why. */
export async function startHost(opts: StartHostOptions): Promise<LabHost> {
  const name = opts.name;
  if (!NAME_RE.test(name)) throw new Error(`lab: bad host name ${JSON.stringify(name)} (letters, digits, '-', 2-31 chars)`);
  if (opts.address && !opts.underlay) throw new Error(`lab: host ${name}: an address needs an underlay`);
  const dir = hostDirOf(name);
  const wantDockerd = opts.dockerd ?? true;
  const engine = opts.engine ? engineByName(opts.engine) : labEngine();

  // leftovers of a crashed run with this very name
  sweepHostSync(name);

  const index = allocIndex();
  const dockerSock = path.join(dir, 'docker.sock');
  const dockerHost = `unix://${dockerSock}`;
  const pluginDir = path.join(dir, 'run-docker', 'plugins');
  const dockerdLog = path.join(dir, 'dockerd.log');
  const dockerConfig = path.join(dir, 'docker-config');
  const script = path.join(dir, 'start-dockerd.sh');
  const cliEnv = { DOCKER_HOST: dockerHost, DOCKER_CONFIG: dockerConfig, DOCKER_CLI_HINTS: 'false' };

  let child: ChildProcess | undefined;
  let logStart = 0;
  const logTail = (n: number): string => readTail(dockerdLog, logStart, n);
  // Newer dockerds print their usage after a bad flag: keep the first lines (the error) and the last.
  const startupReport = (): string => {
    const all = readTail(dockerdLog, logStart, 400).split('\n');
    return all.length <= 40 ? all.join('\n') : [...all.slice(0, 5), '[...]', ...all.slice(-30)].join('\n');
  };
  const destroyHooks: Array<() => Promise<void> | void> = [];
  let destroying: Promise<void> | undefined;
  const unregisterEmergency = onEmergency(() => {
    sweepHostSync(name);
  });

  const dockerdRunning = (): boolean => child !== undefined && child.exitCode === null && child.signalCode === null;

  const docker = (args: string[], o: DockerOptions = {}): Promise<RunResult> =>
    run(engine.cli, args, { timeoutMs: o.timeoutMs ?? 60_000, input: o.input, env: { ...cliEnv, ...(o.env ?? {}) } });

  const startDockerd = async (): Promise<void> => {
    if (dockerdRunning()) return;
    // a previous dockerd's containerd must be gone before a new one uses the same
    // exec-root; its shims stay (they hold the containers that live-restore keeps,
    // and a dockerd without live-restore stops those containers itself at start)
    killAndWaitSync(pidsByCmdline([`${dir}/exec/containerd/containerd.toml`]), 5_000);
    // never a system containerd's socket here: dockerd would use it instead of starting its own
    fs.rmSync(path.join(dir, 'run-containerd', 'containerd.sock'), { force: true });
    fs.rmSync(dockerSock, { force: true });
    fs.rmSync(path.join(dir, 'docker.pid'), { force: true });
    // dockerd writes straight to its log file (not a pipe): it must outlive a test process that dies
    const fd = fs.openSync(dockerdLog, 'a');
    fs.writeSync(fd, `\n==== lab: starting dockerd ${new Date().toISOString()} ====\n`);
    logStart = fs.fstatSync(fd).size;
    let spawnError = '';
    const c = spawn(
      'ip',
      ['netns', 'exec', name, 'unshare', '-m', '-u', '--propagation', 'private', script, ...(opts.dockerdArgs ?? [])],
      { stdio: ['ignore', fd, fd], detached: true },
    );
    fs.closeSync(fd);
    c.unref(); // a debugging script may exit and leave the host running (WEFT_LAB_KEEP=1)
    child = c;
    c.on('error', (e) => {
      spawnError = `[lab] spawn failed: ${e.message}`;
    });
    const timeoutMs = opts.startTimeoutMs ?? 60_000;
    const deadline = Date.now() + timeoutMs;
    let last: RunResult | undefined;
    for (let i = 0; i < 10_000; i++) {
      if (!dockerdRunning()) {
        throw new Error(
          `lab: dockerd of ${name} exited during start-up (code ${c.exitCode}, signal ${c.signalCode}); log ${dockerdLog}:\n${startupReport()}${spawnError}`,
        );
      }
      if (fs.existsSync(dockerSock)) {
        last = await docker(['info', '--format', '{{.ID}}'], { timeoutMs: 10_000 });
        if (last.code === 0) return;
      }
      if (Date.now() > deadline) break;
      await sleep(100);
    }
    throw new Error(
      `lab: dockerd of ${name} did not answer 'docker info' within ${timeoutMs} ms (last: ${last?.stderr.trim() ?? 'no socket'}); log ${dockerdLog}:\n${logTail(30)}`,
    );
  };

  const stopDockerd = async (timeoutMs = 30_000): Promise<void> => {
    const c = child;
    if (c && dockerdRunning() && c.pid) {
      killQuiet(c.pid, 'SIGTERM');
      if (!(await waitChildExit(c, timeoutMs))) {
        killQuiet(c.pid, 'SIGKILL');
        await waitChildExit(c, 5_000);
      }
    }
    // its containerd exits with it; do not let a stray one linger on the exec-root
    await waitFor(() => pidsByCmdline([`${dir}/exec/containerd/containerd.toml`]).length === 0, {
      timeoutMs: 5_000,
      what: `containerd of ${name} to exit`,
    }).catch(() => killAndWaitSync(pidsByCmdline([`${dir}/exec/containerd/containerd.toml`]), 5_000));
  };

  const killDockerd = async (): Promise<void> => {
    const c = child;
    if (c && dockerdRunning() && c.pid) {
      killQuiet(c.pid, 'SIGKILL');
      await waitChildExit(c, 5_000);
    }
  };

  const exec = (cmd: string[], o?: RunOptions): Promise<RunResult> => run('ip', ['netns', 'exec', name, ...cmd], o);

  const host: LabHost = {
    name,
    engine,
    netns: `/run/netns/${name}`,
    dir,
    dockerHost,
    dockerSock,
    pluginDir,
    underlay: opts.underlay,
    dockerdLog,
    index,
    docker,
    async dockerOk(args: string[], o?: DockerOptions): Promise<RunResult> {
      const r = await docker(args, o);
      if (r.code !== 0) throw failure(`[${name}] ${describeCommand('docker', args)}`, r);
      return r;
    },
    exec,
    async execOk(cmd: string[], o?: RunOptions): Promise<RunResult> {
      const r = await exec(cmd, o);
      if (r.code !== 0) throw failure(`[${name}] ${describeCommand(cmd[0] ?? '', cmd.slice(1))}`, r);
      return r;
    },
    dockerdPid: () => (dockerdRunning() ? child?.pid : undefined),
    dockerdRunning,
    dockerdLogTail: (n = 40) => logTail(n),
    startDockerd,
    stopDockerd,
    killDockerd,
    async powerOff(): Promise<void> {
      await killDockerd();
      killAndWaitSync([...containerPids(name), ...pidsByCmdline([`${dir}/exec/`])], 5_000);
      // /var/run is a tmpfs: nothing of the exec-root survives a reboot but
      // the directory (the lab keeps netns files' mount points out of it)
      const runtime = [...fs.readdirSync(path.join(dir, 'exec')).map((f) => path.join(dir, 'exec', f)),
        ...fs.readdirSync(path.join(dir, 'run-containerd')).map((f) => path.join(dir, 'run-containerd', f))];
      for (const p of runtime) {
        try {
          fs.rmSync(p, { recursive: true, force: true });
        } catch {
          /* a busy mount point (a pinned namespace): left for destroy() */
        }
      }
    },
    async restartDockerd(): Promise<void> {
      await stopDockerd();
      await startDockerd();
    },
    onDestroy(fn): void {
      destroyHooks.push(fn);
    },
    destroy(): Promise<void> {
      destroying ??= (async () => {
        try {
          // containers first (SIGKILL through their cgroups): dockerd then has nothing to wait for
          killAndWaitSync(containerPids(name), 5_000);
          if (dockerdRunning()) await stopDockerd(15_000);
          for (const h of destroyHooks.splice(0).reverse()) {
            try {
              await h();
            } catch {
              /* keep cleaning */
            }
          }
          if (opts.underlay) await opts.underlay.removeHost(name);
        } finally {
          sweepHostSync(name);
          usedIndexes.delete(index);
          unregisterEmergency();
        }
      })();
      return destroying;
    },
  };

  try {
    for (const d of ['run-docker/plugins', 'run-containerd', 'etc-docker', 'data', 'exec', 'docker-config']) {
      fs.mkdirSync(path.join(dir, d), { recursive: true });
    }
    // `docker compose` for either CLI: the compose CLI plugin from the forky rootfs
    if (engine.compose) {
      fs.mkdirSync(path.join(dockerConfig, 'cli-plugins'), { recursive: true });
      fs.symlinkSync(engine.compose, path.join(dockerConfig, 'cli-plugins', 'docker-compose'));
    }
    const daemonJson = {
      bip: `172.30.${index}.1/24`,
      'default-address-pools': [{ base: `172.31.${index * 4}.0/22`, size: 26 }],
      'cgroup-parent': `/${LAB_CGROUP}/${name}`,
      ...(opts.daemonConfig ?? {}),
    };
    fs.writeFileSync(path.join(dir, 'etc-docker', 'daemon.json'), JSON.stringify(daemonJson, null, 2) + '\n');
    fs.writeFileSync(script, dockerdScript(name, dir, engine, opts.sharedExecRoot), { mode: 0o755 });

    const add = await run('ip', ['netns', 'add', name]);
    if (add.code !== 0) throw failure(`ip netns add ${name}`, add);
    const lo = await run('ip', ['-n', name, 'link', 'set', 'lo', 'up']);
    if (lo.code !== 0) throw failure(`ip -n ${name} link set lo up`, lo);
    if (opts.underlay) {
      const port = await opts.underlay.addHost(name, { address: opts.address, mtu: opts.mtu });
      host.address = port.address;
      host.ip = port.address.split('/')[0];
      host.underlayIf = port.ifname;
    }
    if (wantDockerd) await startDockerd();
  } catch (e) {
    await host.destroy();
    throw e;
  }
  return host;
}

/**
 * GET `url` from inside the host's network namespace with curl (or GNU wget).
 * Not busybox wget: the static Debian busybox segfaults resolving on the host.
 */
export async function hostHttpGet(host: LabHost, url: string, timeoutSec = 3): Promise<RunResult> {
  if (fs.existsSync('/usr/bin/curl')) return host.exec(['curl', '-sS', '-m', String(timeoutSec), url], { timeoutMs: (timeoutSec + 5) * 1000 });
  return host.exec(['wget', '-qO-', '-T', String(timeoutSec), '-t', '1', url], { timeoutMs: (timeoutSec + 5) * 1000 });
}

/** The last `lines` lines of a file from byte `from` on (at most the last 64 KiB). */
function readTail(file: string, from: number, lines: number): string {
  try {
    const fd = fs.openSync(file, 'r');
    try {
      const size = fs.fstatSync(fd).size;
      const start = Math.max(from, size - 65536);
      const buf = Buffer.alloc(Math.max(0, size - start));
      fs.readSync(fd, buf, 0, buf.length, start);
      return buf.toString('utf8').split('\n').slice(-lines - 1).join('\n');
    } finally {
      fs.closeSync(fd);
    }
  } catch {
    return '(no log)';
  }
}

/** Pids of the containers of a lab host (found through their cgroups). */
function containerPids(name: string): number[] {
  const pids = new Set<number>();
  for (const m of cgroupMounts()) {
    const base = path.join(m.mountPoint, LAB_CGROUP, name);
    let subs: string[] = [];
    try {
      subs = fs.readdirSync(base);
    } catch {
      continue;
    }
    for (const s of subs) {
      try {
        for (const l of fs.readFileSync(path.join(base, s, 'cgroup.procs'), 'utf8').split('\n')) if (l) pids.add(Number(l));
      } catch {
        /* not a cgroup dir or gone */
      }
    }
  }
  return [...pids].filter(processAlive);
}

