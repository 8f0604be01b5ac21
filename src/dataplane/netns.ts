// Network namespaces. A netlink socket belongs for life to the namespace it
// was created in, so each namespace gets one socket, created with the main
// thread briefly switched into it (synchronously: no other JS can run while
// the thread is elsewhere) and cached here by path.
import * as fs from 'fs';
import * as path from 'path';
import { setns, createNetns, deleteNetns } from '../native';
import { Rtnl, openRtnetlink } from './netlink';

const SELF = '/proc/thread-self/ns/net';
const NSFS_MAGIC = 0x6e736673;

// Set if the thread could not be switched back: from then on every socket this
// process creates would land in the wrong namespace, so refuse to go on.
let stranded: Error | undefined;

/** Runs a synchronous fn with the calling thread in the namespace at nsPath, then switches back, whatever happens. */
export function withNetns<T>(nsPath: string, fn: () => T): T {
  if (stranded) throw stranded;
  const home = fs.openSync(SELF, 'r');
  let target: number | undefined;
  try {
    try {
      target = fs.openSync(nsPath, 'r');
    } catch (e) {
      throw new Error(`cannot open network namespace ${nsPath}: ${(e as Error).message}`, { cause: e });
    }
    try {
      setns(target);
    } catch (e) {
      throw new Error(`cannot enter network namespace ${nsPath}: ${(e as Error).message}`, { cause: e });
    }
    try {
      const r = fn();
      if (r !== null && typeof r === 'object' && typeof (r as { then?: unknown }).then === 'function') {
        // The thread would be back home long before the promise's work ran.
        throw new Error(`withNetns(${nsPath}): fn must be synchronous, it returned a promise`);
      }
      return r;
    } finally {
      try {
        setns(home);
      } catch (e) {
        stranded = new Error(`could not return the main thread to its network namespace after ${nsPath}: ${(e as Error).message}`);
        throw stranded;
      }
    }
  } finally {
    if (target !== undefined) fs.closeSync(target);
    fs.closeSync(home);
  }
}

/** True if path is a pinned network namespace (an nsfs bind mount), not a stale plain file. */
export function isPinnedNetns(nsPath: string): boolean {
  try {
    return fs.statfsSync(nsPath).type === NSFS_MAGIC;
  } catch {
    return false;
  }
}

/** Creates a namespace pinned at nsPath unless one is pinned there already; replaces a stale file. Returns true if created. */
export function ensureNetns(nsPath: string): boolean {
  if (isPinnedNetns(nsPath)) return false;
  forgetSocket(nsPath);
  // A plain file left behind (the mount went away, e.g. a reboot with a persistent runDir).
  deleteNetns(nsPath);
  try {
    createNetns(nsPath);
  } catch (e) {
    throw new Error(`cannot create network namespace at ${nsPath}: ${(e as Error).message}`, { cause: e });
  }
  return true;
}

/** Closes our socket in the namespace and unpins it. Idempotent. The kernel frees it once nothing else holds it. */
export function removeNetns(nsPath: string): void {
  forgetSocket(nsPath);
  try {
    deleteNetns(nsPath);
  } catch (e) {
    throw new Error(`cannot remove network namespace ${nsPath}: ${(e as Error).message}`, { cause: e });
  }
}

/** Writes /proc/sys/<key> as seen from the namespace at nsPath (net sysctls resolve against the opening thread). false if the key does not exist. */
export function setSysctlIn(nsPath: string, key: string, value: string): boolean {
  const file = path.join('/proc/sys', ...key.split('.'));
  return withNetns(nsPath, () => {
    try {
      // Written only when it differs: writing net.ipv6.conf.all.disable_ipv6 applies it to every
      // device again, which would take IPv6 (and its neighbours) off the VXLAN device.
      if (fs.readFileSync(file, 'utf8').trim() === value) return true;
      fs.writeFileSync(file, value);
      return true;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return false;
      throw new Error(`cannot set ${key}=${value} in network namespace ${nsPath}: ${(e as Error).message}`, { cause: e });
    }
  });
}

interface Cached { rtnl: Rtnl; ino?: number }
const sockets = new Map<string, Cached>();
const OWN = '';

/**
 * The rtnetlink socket in the namespace pinned at nsPath, or in this process's
 * own namespace when nsPath is undefined. A namespace re-created at the same
 * path (new inode) gets a new socket.
 */
export function socketIn(nsPath?: string): Rtnl {
  const key = nsPath ?? OWN;
  let ino: number | undefined;
  if (nsPath !== undefined) {
    try {
      ino = fs.statSync(nsPath).ino;
    } catch (e) {
      throw new Error(`network namespace ${nsPath} does not exist: ${(e as Error).message}`, { cause: e });
    }
  }
  const c = sockets.get(key);
  if (c && c.ino === ino) return c.rtnl;
  c?.rtnl.close();
  const rtnl = nsPath === undefined
    ? new Rtnl({ label: 'the process namespace', open: openRtnetlink })
    : new Rtnl({ label: `netns ${nsPath}`, open: () => withNetns(nsPath, openRtnetlink) });
  sockets.set(key, { rtnl, ...(ino !== undefined ? { ino } : {}) });
  return rtnl;
}

/** Closes and drops the cached socket for nsPath (undefined: the process namespace). */
export function forgetSocket(nsPath?: string): void {
  const key = nsPath ?? OWN;
  sockets.get(key)?.rtnl.close();
  sockets.delete(key);
}

/** Opens the namespace file for IFLA_NET_NS_FD, runs fn, closes it. undefined nsPath: this process's namespace. */
export async function withNsFd<T>(nsPath: string | undefined, fn: (fd: number) => Promise<T>): Promise<T> {
  const p = nsPath ?? SELF;
  let fd: number;
  try {
    fd = fs.openSync(p, 'r');
  } catch (e) {
    throw new Error(`cannot open network namespace ${p}: ${(e as Error).message}`, { cause: e });
  }
  try {
    return await fn(fd);
  } finally {
    fs.closeSync(fd);
  }
}
