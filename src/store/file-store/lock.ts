// The lock that keeps two weft processes from opening one FileStore.
//
// The lock is flock(2) on `<dir>/store.lock`, held for as long as the store is
// open. The kernel releases it when the holder's descriptor closes, so also
// when the holder dies, however it dies, and it applies to the file itself,
// whatever PID namespace the holders are in (a managed plugin is PID 1 in its
// own). A lock that merely names a PID cannot do that: a PID means nothing in
// another namespace. The file is never removed or renamed (compaction renames
// the log, so the log itself cannot carry the lock); what it contains (pid,
// PID namespace, host, start time) only serves to name the holder in the error.
//
// Wefts from before flock wrote the same file with only a PID in it and held
// no flock: such a lock is still honoured while that PID runs.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { native } from '../../native';
import type { StoreLogger } from '../store';

const LOCK_FILE = 'store.lock';

/** Thrown by FileStore.open when another live process holds the store. */
export class StoreLockedError extends Error {
  readonly code = 'WEFT_STORE_LOCKED';
  constructor(message: string) {
    super(message);
    this.name = 'StoreLockedError';
  }
}

/**
 * Stores open in this process, by real directory path. flock alone would also
 * refuse a second open from this process (each open(2) is a holder of its
 * own), but its message would name this very process as "another weft".
 */
const openInProcess = new Set<string>();

interface LockInfo {
  pid: number;
  /** Process start time (clock ticks since boot, /proc/<pid>/stat field 22): tells a reused pid apart. */
  start?: string;
  host?: string;
  /** The holder's PID namespace ("pid:[4026531836]"), so that its pid can be read right. */
  pidns?: string;
  /** Set by wefts that hold the lock with flock; a lock file without it was written by an older weft. */
  flock?: boolean;
  since?: string;
}

export interface HeldLock {
  fd: number;
  path: string;
  /** The store's directory (its real path). */
  dir: string;
}

function procStartTime(pid: number): string | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

function pidNamespace(): string | undefined {
  try {
    return fs.readlinkSync('/proc/self/ns/pid');
  } catch {
    return undefined;
  }
}

/** Liveness by pid: only for a lock file written by an older weft, which held no flock. */
function holderAlive(info: LockInfo): boolean {
  // Our own pid in a lock this process did not take is a previous
  // incarnation: in a plugin container weft is often pid 1 every time.
  if (info.pid === process.pid) return false;
  try {
    process.kill(info.pid, 0);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  const start = procStartTime(info.pid);
  if (info.start !== undefined && start !== undefined && start !== info.start) return false;
  return true;
}

function readLock(lockPath: string): LockInfo | undefined {
  try {
    const x = JSON.parse(fs.readFileSync(lockPath, 'utf8')) as Partial<LockInfo>;
    if (typeof x.pid === 'number' && Number.isSafeInteger(x.pid) && x.pid > 0) return x as LockInfo;
  } catch {
    /* missing, empty or garbled */
  }
  return undefined;
}

function describeHolder(info: LockInfo | undefined): string {
  if (!info) return 'a process that has not written its name yet';
  const mine = pidNamespace();
  const ns = info.pidns && mine && info.pidns !== mine ? ` in another PID namespace (${info.pidns})` : '';
  return `pid ${info.pid}${ns}${info.host ? ` on ${info.host}` : ''}${info.since ? `, since ${info.since}` : ''}`;
}

/** Takes the lock of the store in dir (a real path), or throws StoreLockedError naming the holder. */
export function acquireLock(dir: string, log: StoreLogger): HeldLock {
  if (openInProcess.has(dir)) {
    throw new StoreLockedError(`the store in ${dir} is already open in this process: close it first or share the open store`);
  }
  const lockPath = path.join(dir, LOCK_FILE);
  let fd: number;
  try {
    fd = fs.openSync(lockPath, fs.constants.O_RDWR | fs.constants.O_CREAT, 0o600);
  } catch (e) {
    throw new Error(`cannot open the store lock ${lockPath}: ${(e as Error).message}; check that ${dir} is writable`, { cause: e });
  }
  const n = native();
  let taken: boolean;
  try {
    taken = n.flock(fd, n.LOCK_EX | n.LOCK_NB);
  } catch (e) {
    fs.closeSync(fd);
    throw new Error(`cannot lock ${lockPath}: ${(e as Error).message}; keep --state-dir on a local file system that supports flock(2)`, { cause: e });
  }
  if (!taken) {
    fs.closeSync(fd);
    throw new StoreLockedError(
      `the store in ${dir} is in use by another weft process (${describeHolder(readLock(lockPath))}, which holds the lock on ${lockPath}): ` +
        'stop that process first, or give this one another state directory. Two wefts writing one store would corrupt it',
    );
  }
  // A lock file written by a weft from before flock names its holder only by pid.
  const prev = readLock(lockPath);
  if (prev && !prev.flock && holderAlive(prev)) {
    fs.closeSync(fd);
    throw new StoreLockedError(
      `the store in ${dir} is in use by an older weft process (${describeHolder(prev)}, lock ${lockPath}): stop it first, then start this one`,
    );
  }
  if (prev && !prev.flock) log.warn({ lock: lockPath, holder: prev }, 'taking over a store lock left by an older weft that is gone');
  const info: LockInfo = {
    pid: process.pid, start: procStartTime(process.pid), host: os.hostname(), pidns: pidNamespace(), flock: true, since: new Date().toISOString(),
  };
  try {
    fs.ftruncateSync(fd, 0);
    fs.writeSync(fd, JSON.stringify(info), 0);
    fs.fsyncSync(fd);
  } catch (e) {
    fs.closeSync(fd);
    throw new Error(`cannot write the store lock ${lockPath}: ${(e as Error).message}; check that ${dir} is writable and not full`, { cause: e });
  }
  openInProcess.add(dir);
  return { fd, path: lockPath, dir };
}

export function releaseLock(lock: HeldLock): void {
  openInProcess.delete(lock.dir);
  try {
    fs.ftruncateSync(lock.fd, 0);
  } catch {
    /* the content is informative only */
  }
  try {
    fs.closeSync(lock.fd); // releases the flock
  } catch {
    /* already closed */
  }
}
