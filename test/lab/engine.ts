// The Docker engines the lab can run on a host: Debian 12's docker.io (20.10)
// from the machine itself, and Debian forky's docker.io (28.5) from a root
// filesystem that test/prereqs.sh builds with debootstrap (see
// /work/shared/docs/environment.md, "Today's Docker Engine").
//
// WEFT_TEST_ENGINE picks the engine of every host a test starts (default
// 20.10); npm test runs the suite once per engine (test/run-suites.sh).
import * as fs from 'node:fs';
import * as path from 'node:path';

export type EngineName = '20.10' | '28.5';

export interface Engine {
  name: EngineName;
  /** root filesystem dockerd runs from (pivot_root); undefined = the machine's own */
  rootfs?: string;
  /** docker CLI on this machine that suits the engine */
  cli: string;
  /** the docker-compose CLI plugin (standalone binary), if this machine has one */
  compose?: string;
}

/** Where test/prereqs.sh leaves the forky root filesystem (docker.io 28.5, containerd 2.1, compose 2.40). */
export const FORKY_ROOTFS = process.env.WEFT_FORKY_ROOTFS ?? '/var/tmp/weft-forky';

const COMPOSE_IN_ROOTFS = 'usr/libexec/docker/cli-plugins/docker-compose';

export function engineByName(name: string): Engine {
  if (name === '20.10') {
    // Debian's 20.10 CLI (the one first in PATH may be a newer one); compose from the forky rootfs
    // when it is there (a static-enough Go binary that runs on this libc).
    const compose = path.join(FORKY_ROOTFS, COMPOSE_IN_ROOTFS);
    return { name, cli: '/usr/bin/docker', compose: fs.existsSync(compose) ? compose : undefined };
  }
  if (name === '28.5') {
    const dockerd = path.join(FORKY_ROOTFS, 'usr/sbin/dockerd');
    if (!fs.existsSync(dockerd)) {
      throw new Error(`lab: engine 28.5 needs the forky root filesystem at ${FORKY_ROOTFS} (no ${dockerd}): run 'bash test/prereqs.sh' (or set WEFT_FORKY_ROOTFS)`);
    }
    return { name, rootfs: FORKY_ROOTFS, cli: path.join(FORKY_ROOTFS, 'usr/bin/docker'), compose: path.join(FORKY_ROOTFS, COMPOSE_IN_ROOTFS) };
  }
  throw new Error(`lab: unknown engine ${JSON.stringify(name)}: use 20.10 or 28.5`);
}

/** The engine named by WEFT_TEST_ENGINE (default 20.10). */
export const LAB_ENGINE_NAME: EngineName = (process.env.WEFT_TEST_ENGINE ?? '20.10') as EngineName;

export function labEngine(): Engine {
  return engineByName(LAB_ENGINE_NAME);
}

/** True when the lab runs Docker 28.5 (the engine of today's platform). */
export function isEngine28(): boolean {
  return LAB_ENGINE_NAME === '28.5';
}
