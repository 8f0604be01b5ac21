// The native addon (native/netns.cc), built by `npm ci` with node-gyp: each
// function against the real kernel, in namespaces this test pins and removes.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { execFileSync } from 'child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { native } from '../../src/native';
import { withNetns } from '../../src/dataplane/netns';

let dir: string;

beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'wnt-'));
});

afterAll(() => {
  for (const f of fs.existsSync(dir) ? fs.readdirSync(dir) : []) native().deleteNetns(path.join(dir, f));
  fs.rmSync(dir, { recursive: true, force: true });
});

const selfNs = () => fs.readlinkSync('/proc/thread-self/ns/net');
const isMount = (p: string) => fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n').some((l) => l.split(' ')[4] === p);

describe('native addon', () => {
  it('creates a pinned namespace, distinct from ours, and removes it idempotently', () => {
    const p = path.join(dir, 'a');
    const before = selfNs();
    native().createNetns(p);
    expect(selfNs()).toBe(before); // the main thread never moved
    expect(isMount(p)).toBe(true);
    const inside = withNetns(p, () => selfNs());
    expect(inside).not.toBe(before);
    // a real, empty network namespace: only lo, down
    expect(execFileSync('nsenter', [`--net=${p}`, 'ip', '-o', 'link'], { encoding: 'utf8' })).toMatch(/^1: lo: <LOOPBACK> /);
    native().deleteNetns(p);
    expect(fs.existsSync(p)).toBe(false);
    expect(() => native().deleteNetns(p)).not.toThrow();
  });

  it('refuses to pin over an existing file, with errno and path', () => {
    const p = path.join(dir, 'b');
    fs.writeFileSync(p, '');
    expect(() => native().createNetns(p)).toThrow(expect.objectContaining({ syscall: 'open', errno: 17, path: p }));
    fs.rmSync(p);
  });

  it('setns reports a bad descriptor as an Error with errno', () => {
    expect(() => native().setns(-1)).toThrow(expect.objectContaining({ syscall: 'setns', errno: 9 }));
    expect(() => (native().setns as unknown as (x: string) => void)('x')).toThrow(TypeError);
  });

  it('sends a raw frame through a packet socket made inside a namespace', () => {
    const p = path.join(dir, 'c');
    native().createNetns(p);
    execFileSync('nsenter', [`--net=${p}`, 'ip', 'link', 'set', 'lo', 'up']);
    const fd = withNetns(p, () => native().packetSocket());
    const frame = Buffer.concat([Buffer.alloc(6, 0xff), Buffer.from([2, 0, 0, 0, 0, 1]), Buffer.from([0x88, 0xb5]), Buffer.alloc(46)]);
    // netlink, not /sys: nsenter --net leaves the mount namespace's /sys (the host's) in place
    const stat = () => (JSON.parse(execFileSync('nsenter', [`--net=${p}`, 'ip', '-s', '-j', 'link', 'show', 'lo'], { encoding: 'utf8' })) as { stats64: { tx: { packets: number } } }[])[0].stats64.tx.packets;
    const tx = stat();
    native().sendFrame(fd, 1, frame);
    expect(stat()).toBe(tx + 1);
    expect(() => native().sendFrame(fd, 1, Buffer.alloc(4))).toThrow(RangeError);
    native().closeFd(fd);
    native().deleteNetns(p);
  });
});
