// Where weft's namespace pins live. weft pins each network's namespace with a
// bind mount under <run-dir>/netns. A bind mount belongs to a mount
// namespace: when weft runs in a private one (`ip netns exec`, which unshares
// the mount namespace and makes / a slave; systemd units with PrivateMounts=,
// PrivateTmp=, ProtectSystem= and friends), the pins exist only there, and
// when weft exits the kernel destroys that namespace, drops the pins, frees
// the network namespaces and with them every container's weft interface.
// That is fine only if <run-dir> is shared back to another namespace, or if
// other processes keep weft's mount namespace alive.
//
// The check: weft is the only process in its mount namespace (no other
// process's /proc/<pid>/ns/mnt is the same; the host's namespace always has
// others, while `ip netns exec` and a systemd unit's private mounts give weft
// one of its own), and the mount that holds <run-dir> has no shared peer
// group (a "shared:N" tag in /proc/self/mountinfo; `ip netns exec` and
// systemd make / a slave, which does not propagate back).
import * as fs from 'fs';
import * as path from 'path';

export interface MountFacts {
  /** readlink /proc/self/ns/mnt */
  selfMnt?: string;
  /** How many other processes share that mount namespace. */
  others: number;
  /** /proc/self/mountinfo */
  mountinfo: string;
  /** weft's --run-dir, absolute */
  runDir: string;
}

interface MountLine { mountPoint: string; shared: boolean }

function unescape(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

function parseMountinfo(text: string): MountLine[] {
  const out: MountLine[] = [];
  for (const line of text.split('\n')) {
    const f = line.split(' ');
    if (f.length < 7) continue;
    const dash = f.indexOf('-', 6);
    const optional = f.slice(6, dash < 0 ? undefined : dash);
    out.push({ mountPoint: unescape(f[4]), shared: optional.some((o) => o.startsWith('shared:')) });
  }
  return out;
}

/** The mount that holds `dir` (the last one mounted on the longest matching mount point). */
function mountOf(lines: MountLine[], dir: string): MountLine | undefined {
  let best: MountLine | undefined;
  for (const m of lines) {
    const mp = m.mountPoint;
    const under = mp === '/' || dir === mp || dir.startsWith(mp.endsWith('/') ? mp : mp + '/');
    if (under && (!best || mp.length >= best.mountPoint.length)) best = m;
  }
  return best;
}

/** A warning to log at start when weft's pins would die with it; undefined when they will not. */
export function privateMountWarning(f: MountFacts): string | undefined {
  if (!f.selfMnt || f.others > 0) return undefined;
  const m = mountOf(parseMountinfo(f.mountinfo), f.runDir);
  if (!m || m.shared) return undefined;
  return `weft runs in a mount namespace of its own (${f.selfMnt}, no other process is in it), where ${f.runDir} ` +
    `(on the mount at ${m.mountPoint}) is not shared with the host. The network namespaces that weft pins under ${f.runDir}/netns ` +
    'exist only in that mount namespace: when this weft exits, the kernel deletes them, and every running container loses its weft interface. ' +
    'Run weft in the host\'s mount namespace: not under `ip netns exec` (to run it in a network namespace, use `nsenter --net=/run/netns/NAME`), ' +
    'and without PrivateMounts=, PrivateTmp=, ProtectSystem=, ProtectHome= or ReadOnlyPaths= in its systemd unit';
}

function readlink(p: string): string | undefined {
  try {
    return fs.readlinkSync(p);
  } catch {
    return undefined;
  }
}

/** privateMountWarning for this process. */
export function checkMountNamespace(runDir: string): string | undefined {
  let mountinfo = '';
  try {
    mountinfo = fs.readFileSync('/proc/self/mountinfo', 'utf8');
  } catch {
    return undefined;
  }
  let dir = path.resolve(runDir);
  try {
    dir = fs.realpathSync(dir);
  } catch {
    // not there yet: the path as given
  }
  const selfMnt = readlink('/proc/self/ns/mnt');
  let others = 0;
  try {
    for (const e of fs.readdirSync('/proc')) {
      if (!/^\d+$/.test(e) || Number(e) === process.pid) continue;
      // (a process gone meanwhile, or one whose namespace cannot be read, tells nothing)
      if (readlink(`/proc/${e}/ns/mnt`) === selfMnt) {
        others++;
        break;
      }
    }
  } catch {
    return undefined;
  }
  return privateMountWarning({ selfMnt, others, mountinfo, runDir: dir });
}
