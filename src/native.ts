// The native addon (native/netns.cc): the namespace syscalls that the `netlink`
// package cannot make. Loaded lazily so that code paths that never touch a
// namespace (the CLI's help, unit tests) work on a machine where it is not built.
import * as fs from 'fs';
import * as path from 'path';

export interface NativeAddon {
  /** setns(2) on the calling thread. Throws an Error with errno and syscall set. */
  setns(fd: number, nstype?: number): void;
  /** New network namespace pinned by a bind mount at path (the file must not exist yet). */
  createNetns(path: string): void;
  /** Lazy unmount and unlink of a pinned namespace; idempotent. */
  deleteNetns(path: string): void;
  /** An AF_PACKET socket in the calling thread's namespace (keep it: closing one costs an RCU grace period). */
  packetSocket(): number;
  /** Sends one raw Ethernet frame on link `ifindex` through a packet socket. */
  sendFrame(fd: number, ifindex: number, frame: Buffer): void;
  closeFd(fd: number): void;
  /** flock(2): true when taken (or released), false when LOCK_NB and another holder has it; throws otherwise. */
  flock(fd: number, operation: number): boolean;
  readonly LOCK_SH: number;
  readonly LOCK_EX: number;
  readonly LOCK_NB: number;
  readonly LOCK_UN: number;
  readonly CLONE_NEWNET: number;
  /** A critical memory-pressure notification to V8: full GC, and its pool of freed pages goes back to the system. */
  releaseMemory?(): void;
  /** The NODE_MODULE_VERSION of the headers the addon was built with (releaseMemory is V8 API, not N-API). */
  readonly NODE_MODULE_VERSION?: number;
}

const ADDON = path.join('native', 'build', 'Release', 'weft_native.node');
const NOT_BUILT = 'the native addon is not built: run npm ci (needs python3, make, g++)';

// dist/native.js and src/native.ts (under vitest) both sit one level below the
// package root, so the same relative path serves both.
const ADDON_PATH = path.resolve(__dirname, '..', ADDON);

/** From the kernel ABI (sched.h); checked against the addon's own value when it loads. */
export const CLONE_NEWNET = 0x40000000;

let loaded: NativeAddon | undefined;

export function native(): NativeAddon {
  if (loaded) return loaded;
  const found = ADDON_PATH;
  if (!fs.existsSync(found)) throw new Error(`${NOT_BUILT} (no ${found})`);
  let mod: unknown;
  try {
    // A plain require keeps the .node file out of any bundler and needs no types.
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    mod = require(found);
  } catch (e) {
    throw new Error(`${NOT_BUILT}: loading ${found} failed: ${(e as Error).message}`, { cause: e });
  }
  const m = mod as Partial<NativeAddon>;
  if (typeof m.setns !== 'function' || typeof m.createNetns !== 'function' ||
      typeof m.deleteNetns !== 'function' || m.CLONE_NEWNET !== CLONE_NEWNET) {
    throw new Error(`${NOT_BUILT}: ${found} does not export setns/createNetns/deleteNetns/CLONE_NEWNET (stale build?)`);
  }
  loaded = m as NativeAddon;
  return loaded;
}

export const setns = (fd: number, nstype: number = CLONE_NEWNET): void => native().setns(fd, nstype);
export const createNetns = (nsPath: string): void => native().createNetns(nsPath);
export const deleteNetns = (nsPath: string): void => native().deleteNetns(nsPath);
