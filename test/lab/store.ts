// Reads a running weft's embedded store without disturbing it: the store is
// locked by its owner, so the test opens a copy of its files.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { FileStore } from '../../src/store/file-store';
import type { KeyValue } from '../../src/store/store';

export async function readStoreCopy(stateDir: string, prefix = ''): Promise<KeyValue[]> {
  const copy = fs.mkdtempSync(path.join(os.tmpdir(), 'weft-store-copy-'));
  try {
    for (const f of fs.readdirSync(stateDir)) {
      if (!f.endsWith('.lock') && fs.statSync(path.join(stateDir, f)).isFile()) fs.copyFileSync(path.join(stateDir, f), path.join(copy, f));
    }
    const s = await FileStore.open(copy);
    try {
      return (await s.list(prefix)).kvs;
    } finally {
      await s.close();
    }
  } finally {
    fs.rmSync(copy, { recursive: true, force: true });
  }
}
