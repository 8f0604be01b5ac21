// The lab's multicast tool (test/lab/mcast.c), built static once per source
// version into the lab cache and copied into a host's directory (the only
// host path a 28.5 dockerd sees), for bind-mounting into busybox containers:
//   docker run -v "$(await mcastToolOn(h))":/mcast:ro ...
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { LabHost } from './host';
import { runOk } from './proc';

const SOURCE = path.join(__dirname, 'mcast.c');

let built: Promise<string> | undefined;

/** Path of the static binary (builds it with the C compiler the native addon needs too). */
export function mcastTool(): Promise<string> {
  built ??= (async () => {
    const src = fs.readFileSync(SOURCE);
    const hash = crypto.createHash('sha256').update(src).digest('hex').slice(0, 12);
    const dir = path.join(os.tmpdir(), 'weft-lab-cache');
    const out = path.join(dir, `mcast-${hash}`);
    if (fs.existsSync(out)) return out;
    fs.mkdirSync(dir, { recursive: true });
    const tmp = `${out}.${process.pid}.tmp`;
    await runOk('cc', ['-static', '-O2', '-o', tmp, SOURCE], { timeoutMs: 60_000 });
    fs.renameSync(tmp, out);
    return out;
  })();
  built.catch(() => { built = undefined; });
  return built;
}

/** The tool in host `h`'s directory, where its dockerd can bind-mount it from. */
export async function mcastToolOn(h: LabHost): Promise<string> {
  const dest = path.join(h.dir, 'mcast');
  fs.copyFileSync(await mcastTool(), dest);
  fs.chmodSync(dest, 0o755);
  return dest;
}
