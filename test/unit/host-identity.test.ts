// Start-up checks of `weft serve`: a host name held by a live host is
// refused; a weft that runs in a private mount namespace warns that its
// namespace pins die with it.
import { spawn } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import ts from 'typescript';
import { afterAll, describe, expect, it } from 'vitest';
import { checkHostName, DuplicateHostError } from '../../src/agent/identity';
import { INSTANCE } from '../../src/instance';
import { privateMountWarning } from '../../src/mountns';
import { FileStore } from '../../src/store/file-store';
import { keys } from '../../src/store/keys';

const dirs: string[] = [];
const tmp = () => { const d = fs.mkdtempSync(path.join(os.tmpdir(), 'weft-ident-')); dirs.push(d); return d; };
afterAll(() => { for (const d of dirs) fs.rmSync(d, { recursive: true, force: true }); });

describe('host name check', () => {
  it('free, mine, held by a silent weft, refused when a live weft answers under the name', async () => {
    const store = await FileStore.open(tmp());
    try {
      const silent = async () => undefined;
      expect(await checkHostName(store, 'h1', silent)).toEqual({ state: 'free' });
      await store.put(keys.host('h1'), JSON.stringify({ address: '192.0.2.11', version: '0.1.0', startedAt: '2026-01-01T00:00:00Z', instance: INSTANCE }));
      expect((await checkHostName(store, 'h1', silent)).state).toBe('mine');

      await store.put(keys.host('h1'), JSON.stringify({ address: '192.0.2.11', version: '0.1.0', startedAt: '2026-01-01T00:00:00Z', instance: 'other' }));
      // nobody answers at its address: an earlier run of this host, whose lease will expire
      const held = await checkHostName(store, 'h1', silent);
      expect(held.state).toBe('held');
      // this process answers there (a restart on the same address): not a second host
      expect((await checkHostName(store, 'h1', async () => ({ host: 'h1', instance: INSTANCE }))).state).toBe('held');
      // ... and when that address is this host's own, only this process answers there: its previous run, taken over at once
      expect((await checkHostName(store, 'h1', async () => ({ host: 'h1', instance: INSTANCE }), '192.0.2.11')).state).toBe('mine');
      expect((await checkHostName(store, 'h1', silent, '192.0.2.11')).state).toBe('held');
      // another host's weft answers at that address: the name is free to be waited for, not taken
      expect((await checkHostName(store, 'h1', async () => ({ host: 'h9', instance: 'x' }))).state).toBe('held');
      // a live weft answers as h1: refused, naming it
      const err = await checkHostName(store, 'h1', async () => ({ host: 'h1', instance: 'other', startedAt: '2026-01-01T00:00:01Z' })).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(DuplicateHostError);
      expect((err as Error).message).toContain('host name h1 is already in use by a live host: a weft at 192.0.2.11');
      expect((err as Error).message).toMatch(/its own --host-name/);
      // an older weft (no instance in its reply) that answers as h1 is live too
      await expect(checkHostName(store, 'h1', async () => ({ host: 'h1' }))).rejects.toBeInstanceOf(DuplicateHostError);
    } finally {
      await store.close();
    }
  });
});

const MOUNTINFO_HOST = [
  '22 1 259:1 / / rw,relatime shared:1 - ext4 /dev/root rw',
  '25 22 0:23 / /run rw,nosuid,nodev shared:5 - tmpfs tmpfs rw',
].join('\n');
// what `ip netns exec` leaves: / and /run are slaves of the host's mounts
const MOUNTINFO_NETNS_EXEC = [
  '300 299 259:1 / / rw,relatime master:1 - ext4 /dev/root rw',
  '301 300 0:23 / /run rw,nosuid,nodev master:5 - tmpfs tmpfs rw',
  '302 300 0:50 / /sys rw,relatime - sysfs ns1 rw',
].join('\n');

describe('private mount namespace', () => {
  it('warns only when weft is alone in its mount namespace and the run dir is not shared out of it', () => {
    const base = { selfMnt: 'mnt:[4026531841]', others: 0, runDir: '/run/weft' };
    // the host's namespace: other processes share it
    expect(privateMountWarning({ ...base, others: 120, mountinfo: MOUNTINFO_NETNS_EXEC })).toBeUndefined();
    const w = privateMountWarning({ ...base, mountinfo: MOUNTINFO_NETNS_EXEC });
    expect(w).toContain('/run/weft (on the mount at /run) is not shared with the host');
    expect(w).toContain('when this weft exits, the kernel deletes them');
    expect(w).toContain('nsenter --net=');
    expect(w).toContain('PrivateMounts=');
    // a namespace of its own whose run dir is still shared back (a peer group): fine
    expect(privateMountWarning({ ...base, mountinfo: MOUNTINFO_HOST })).toBeUndefined();
  });

  const asRoot = process.getuid?.() === 0;
  it.skipIf(!asRoot)('sees it for real: under unshare -m with slave propagation (what ip netns exec does), not in the host namespace', async () => {
    const work = tmp();
    const src = fs.readFileSync(path.join(__dirname, '../../src/mountns.ts'), 'utf8');
    fs.writeFileSync(path.join(work, 'mountns.js'), ts.transpileModule(src, { compilerOptions: { module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2022 } }).outputText);
    const script = `process.stdout.write(String(require(${JSON.stringify(path.join(work, 'mountns.js'))}).checkMountNamespace(${JSON.stringify(path.join(work, 'run'))})))`;
    const runIt = (cmd: string, args: string[]) => new Promise<string>((resolve, reject) => {
      const c = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      let err = '';
      c.stdout.on('data', (d) => (out += d));
      c.stderr.on('data', (d) => (err += d));
      c.on('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`${cmd} exited ${code}: ${err}`))));
    });
    expect(await runIt(process.execPath, ['-e', script])).toBe('undefined');
    const inPrivate = await runIt('unshare', ['--mount', '--propagation', 'slave', process.execPath, '-e', script]);
    expect(inPrivate).toContain('weft runs in a mount namespace of its own');
  });
});
