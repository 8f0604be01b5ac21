// Keeps each host's weft and dockerd logs of the last run under
// /tmp/weft-test-logs/<host>/ for diagnosis: the host dirs go with destroy().
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { LabHost } from './host';

export const LOG_KEEP_DIR = '/tmp/weft-test-logs';

export function keepLogs(hosts: LabHost[]): void {
  for (const h of hosts) {
    const dest = path.join(LOG_KEEP_DIR, h.name);
    fs.mkdirSync(dest, { recursive: true });
    for (const f of ['weft.log', 'dockerd.log']) {
      try {
        fs.copyFileSync(path.join(h.dir, f), path.join(dest, f));
      } catch {
        // that process never started
      }
    }
  }
}
