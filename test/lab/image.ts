// busybox:local, made from Debian's static busybox (no registry is reachable).
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { LabHost } from './host';
import { runOk } from './proc';

export const BUSYBOX_IMAGE = 'busybox:local';
const BUSYBOX = '/bin/busybox';
/** applets the tests rely on; every other applet of the binary is linked too */
const REQUIRED_APPLETS = [
  'sh', 'ip', 'ping', 'ifconfig', 'sleep', 'cat', 'nc', 'wget', 'hostname', 'nslookup', 'httpd', 'route', 'arp',
  'udhcpc', 'echo', 'ls', 'mkdir',
];

let tarballPromise: Promise<string> | undefined;

async function buildTarball(): Promise<string> {
  const st = fs.statSync(BUSYBOX);
  const cacheDir = path.join(os.tmpdir(), 'weft-lab-cache');
  const tarball = path.join(cacheDir, `busybox-${st.size}-${Math.floor(st.mtimeMs)}.tar`);
  if (fs.existsSync(tarball)) return tarball;
  fs.mkdirSync(cacheDir, { recursive: true });
  const rootfs = fs.mkdtempSync(path.join(cacheDir, 'rootfs-'));
  try {
    for (const d of ['bin', 'etc', 'proc', 'sys', 'dev', 'tmp', 'root', 'var/run']) fs.mkdirSync(path.join(rootfs, d), { recursive: true });
    fs.chmodSync(path.join(rootfs, 'tmp'), 0o1777);
    fs.copyFileSync(BUSYBOX, path.join(rootfs, 'bin', 'busybox'));
    fs.chmodSync(path.join(rootfs, 'bin', 'busybox'), 0o755);
    const list = (await runOk(BUSYBOX, ['--list'])).stdout.split('\n').filter((a) => /^[\w.[\]-]+$/.test(a));
    const missing = REQUIRED_APPLETS.filter((a) => !list.includes(a));
    if (missing.length) throw new Error(`lab: ${BUSYBOX} lacks applets: ${missing.join(' ')}`);
    for (const a of list) {
      if (a === 'busybox') continue;
      fs.symlinkSync('busybox', path.join(rootfs, 'bin', a));
    }
    fs.writeFileSync(path.join(rootfs, 'etc', 'passwd'), 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n');
    fs.writeFileSync(path.join(rootfs, 'etc', 'group'), 'root:x:0:\nnogroup:x:65534:\n');
    const tmp = `${tarball}.${process.pid}.tmp`;
    await runOk('tar', ['-C', rootfs, '--numeric-owner', '--owner=0', '--group=0', '-cf', tmp, '.']);
    fs.renameSync(tmp, tarball);
    return tarball;
  } finally {
    fs.rmSync(rootfs, { recursive: true, force: true });
  }
}

/** Imports busybox:local into the host's engine unless it is there already. */
export async function ensureBusyboxImage(host: LabHost): Promise<void> {
  const have = await host.docker(['image', 'inspect', '--format', '{{.Id}}', BUSYBOX_IMAGE], { timeoutMs: 15_000 });
  if (have.code === 0) return;
  tarballPromise ??= buildTarball();
  let tarball: string;
  try {
    tarball = await tarballPromise;
  } catch (e) {
    tarballPromise = undefined;
    throw e;
  }
  await host.dockerOk(['import', '--change', 'CMD ["sh"]', tarball, BUSYBOX_IMAGE], { timeoutMs: 60_000 });
}
