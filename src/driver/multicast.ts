// Which weft endpoint of a container carries its multicast route
// (224.0.0.0/4 on the weft interface, returned by Join): the first weft
// network a sandbox joins. Docker adds a Join's routes with NLM_F_EXCL, so
// returning the route for a second weft network of the same sandbox would fail
// that Join ("file exists"). Kept as one small file per sandbox under
// <run-dir>/multicast (tmpfs, like the sandboxes themselves), so a restarted
// weft still knows: a `docker network connect` after a restart must not
// return the route again. The holder's DeleteEndpoint (or Leave) frees it.
import * as fs from 'fs';
import * as path from 'path';
import type { Logger } from 'pino';

/** SandboxKey is .../netns/<sandbox id, 12 hex digits or more>. */
const SANDBOX_ID = /^[0-9a-f]{12,64}$/;

export class MulticastRoutes {
  private readonly dir: string;
  /** sandbox id -> endpoint id */
  private readonly holders = new Map<string, string>();

  constructor(runDir: string, private readonly logger: Logger) {
    this.dir = path.join(runDir, 'multicast');
    try {
      for (const f of fs.readdirSync(this.dir)) {
        if (!SANDBOX_ID.test(f)) continue;
        const ep = fs.readFileSync(path.join(this.dir, f), 'utf8').trim();
        if (ep) this.holders.set(f, ep);
      }
    } catch {
      // none yet
    }
  }

  /** Whether endpoint `endpointId`, joining the sandbox at `sandboxKey`, carries its multicast route (and now holds it). */
  claim(sandboxKey: string | undefined, endpointId: string): boolean {
    const id = sandboxKey ? path.basename(sandboxKey) : '';
    if (!SANDBOX_ID.test(id)) return false;
    const holder = this.holders.get(id);
    if (holder) return holder === endpointId; // a Join sent again: the same answer
    try {
      fs.mkdirSync(this.dir, { recursive: true });
      fs.writeFileSync(path.join(this.dir, id), endpointId);
    } catch (err) {
      // Unrecorded, a restart could return the route twice: leave multicast to the default route instead.
      this.logger.warn({ err: (err as Error).message, endpoint: endpointId.slice(0, 12) }, 'cannot record the multicast route; none on this network');
      return false;
    }
    this.holders.set(id, endpointId);
    return true;
  }

  /** The endpoint leaves its sandbox: the route goes with its interface, so another weft network may take it. */
  release(endpointId: string): void {
    for (const [id, ep] of this.holders) {
      if (ep !== endpointId) continue;
      this.holders.delete(id);
      try {
        fs.unlinkSync(path.join(this.dir, id));
      } catch {
        // gone already
      }
    }
  }
}
