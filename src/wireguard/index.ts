// WireGuard between hosts, for encrypted networks. One WireGuard interface per
// host (--wg-interface, default wg-weft), living in a network namespace of its
// own, the "crypto namespace" pinned at <run-dir>/wireguard/netns:
//
//   host namespace                         crypto namespace
//   ---------------------------------      --------------------------------------
//   WireGuard's UDP socket (--wg-port)     wg-weft, tunnel address/--wg-subnet
//   on the underlay                  <==>  the UDP sockets of encrypted networks'
//                                          VXLAN devices (VTEP = tunnel address)
//
// The interface is made in the host namespace (by wireguard-go, or by weft for
// the kernel module) and moved into the crypto namespace: WireGuard keeps its
// UDP socket where the interface was born, so encrypted packets leave through
// the underlay, while the plain VXLAN packets exist only in the crypto
// namespace. That namespace has no other interface and no route but the
// tunnel subnet through wg-weft. So:
//   - nothing of an encrypted network can leave in clear: without wg-weft
//     (WireGuard not started, crashed, being replaced) its VXLAN packets have
//     no route at all and are dropped (fail closed, by construction);
//   - plain VXLAN sent from the underlay cannot reach an encrypted network:
//     its VXLAN socket is not in the host namespace; only what WireGuard
//     decrypted and authenticated (source = the peer's tunnel address, its
//     only allowed IP) arrives there.
//
// Each host makes its own key pair (keys.ts). The private key stays in
// <state-dir>/wireguard/private.key (0600); the host record in the store
// carries the public key, the endpoint and the tunnel address (HostWireGuard).
// Peers follow the host records (peers.ts): a host whose lease expires, or that
// `weft host rm` removes, leaves every peer list.
//
// The device is driven through one interface (model.ts), over the UAPI socket
// for wireguard-go (uapi.ts, tested) or generic netlink for the kernel module
// (kernel.ts, not testable on a kernel without WireGuard).
import * as fs from 'fs';
import * as path from 'path';
import type { Logger } from 'pino';
import { errorCode } from '../dataplane/netlink';
import { hostPort } from '../util/ip';
import { ensureNetns, isPinnedNetns, setSysctlIn, socketIn, withNsFd } from '../dataplane/netns';
import type { HostRecord, HostWireGuard } from '../store/keys';
import type { Store } from '../store/store';
import { KeyFile, PrivateKey, generatePrivateKey, shortKey } from './keys';
import { KernelDevice } from './kernel';
import { describeChange, isEmptyChange, WgChange, WgDevice, WgDeviceState } from './model';
import { desiredPeers, PeerPlan, planPeerChanges } from './peers';
import { claimTunnelAddress, parseTunnelSubnet, releaseOtherTunnels } from './tunnel';
import { UapiDevice, uapiSocketPath } from './uapi';
import { recordedPid, StartedProcess, startWireguardGo, uapiAnswers, wireguardGoVersion } from './userspace';

export type WireGuardMode = 'auto' | 'kernel' | 'userspace';

/** Bytes WireGuard adds to each packet over an IPv4 underlay: IPv4 20 + UDP 8 + WireGuard header 16 + tag 16. */
export const WG_OVERHEAD_IPV4 = 60;
/** The same over an IPv6 underlay (40-byte header), when --advertise-addr is IPv6. */
export const WG_OVERHEAD_IPV6 = 80;
export const VXLAN_OVERHEAD = 50;
/** Seconds between keepalives: keeps every tunnel's handshake fresh (status shows its age) and starts a new peer's handshake at once. */
export const KEEPALIVE = 25;
/** A session older than this (WireGuard's REJECT_AFTER_TIME) is dead: "up" means a handshake younger than it. */
export const SESSION_LIFETIME_MS = 180_000;

export interface WireGuardOptions {
  mode: WireGuardMode;
  ifname: string;
  listenPort: number;
  /** --wg-subnet, the tunnel addresses */
  subnet: string;
  /** the wireguard-go binary */
  wireguardGo: string;
  stateDir: string;
  runDir: string;
  hostName: string;
  advertiseAddr: string;
  /** MTU of the WireGuard interface: the overlay's packets plus VXLAN must fit */
  linkMtu: number;
  store: Store;
  logger: Logger;
  /** Seconds between health checks of the device (default 2). */
  checkIntervalSeconds?: number;
  /** Path of the namespace that plays the host (tests run several hosts in one process); default: this process's. */
  hostNetns?: string;
}

export interface WireGuardPeerStatus {
  host?: string;
  publicKey: string;
  endpoint?: string;
  tunnel?: string;
  /** ISO time of the last handshake */
  lastHandshake?: string;
  handshakeAgeSeconds?: number;
  /** a session exists (handshake younger than 180 s) */
  up: boolean;
  rxBytes: number;
  txBytes: number;
  /** false: on the device but no live host publishes that key (weft removes it at the next change) */
  expected: boolean;
}

export interface WireGuardStatus {
  ready: boolean;
  error?: string;
  kind?: 'kernel' | 'userspace';
  implementation?: string;
  pid?: number;
  interface: string;
  netns: string;
  listenPort: number;
  endpoint: string;
  tunnel?: string;
  subnet: string;
  linkMtu: number;
  publicKey?: string;
  keyFile: string;
  /** octal mode of the key file, "600" */
  keyFileMode?: string;
  peers: WireGuardPeerStatus[];
  /** Live hosts that should be peers but are not on the device. */
  missing: { host: string; publicKey: string }[];
  /** Hosts left out of the peers, and why. */
  skipped: { host: string; why: string }[];
}

export class WireGuard {
  readonly keyFile: KeyFile;
  /** The crypto namespace (see above). */
  readonly cryptoNetns: string;
  private readonly dir: string;
  private key?: PrivateKey;
  private tunnel?: string;
  private device?: WgDevice;
  private kind?: 'kernel' | 'userspace';
  private child?: StartedProcess;
  private version?: string;
  private lastError?: string;
  private ready = false;
  private published = '';
  private hosts = new Map<string, HostRecord>();
  /**
   * Set by the first setHosts: until the agent has read the store, the device
   * keeps the peers it has (a restarted weft, or one cut off from the store,
   * must not drop the running containers' tunnels).
   */
  private hostsKnown = false;
  private plan: PeerPlan = { peers: new Map(), skipped: [] };
  private readonly endpointsSet = new Map<string, string>();
  private chain: Promise<unknown> = Promise.resolve();
  private readonly listeners: (() => void)[] = [];
  private timer?: NodeJS.Timeout;
  private closed = false;
  private announced = false;
  /** Back-off between set-up attempts while WireGuard cannot come up (2 s doubling to 30 s); a crash of a working one is retried at once. */
  private failures = 0;
  private nextAttempt = 0;
  readonly stats = { peerChanges: 0, restarts: 0, corrections: 0 };

  constructor(private readonly o: WireGuardOptions) {
    parseTunnelSubnet(o.subnet);
    this.dir = path.join(o.runDir, 'wireguard');
    this.cryptoNetns = path.join(this.dir, 'netns');
    this.keyFile = new KeyFile(path.join(o.stateDir, 'wireguard'));
  }

  private get log(): Logger {
    return this.o.logger;
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.chain.then(fn, fn);
    this.chain = run.catch(() => undefined);
    return run;
  }

  /** Called whenever what this host publishes changes (ready for the first time, key rotated). */
  onChange(cb: () => void): void {
    this.listeners.push(cb);
  }

  /** First set-up, then a health check every few seconds (WireGuard restarted if it died). Never throws. */
  async start(): Promise<void> {
    await this.ensure().catch(() => undefined);
    const every = (this.o.checkIntervalSeconds ?? 2) * 1000;
    this.timer = setInterval(() => void this.check(), every);
    this.timer.unref();
  }

  isReady(): boolean {
    return this.ready;
  }

  /** Why encrypted traffic cannot flow on this host, for error messages. */
  notReadyReason(): string {
    return this.lastError ?? 'WireGuard is still being set up on this host';
  }

  /** This host's tunnel address (the VTEP of encrypted networks), once known. */
  tunnelAddress(): string | undefined {
    return this.tunnel;
  }

  /** What the host record publishes; undefined until WireGuard first came up. */
  hostInfo(): HostWireGuard | undefined {
    if (!this.key || !this.tunnel || !this.kind || !this.published) return undefined;
    return { publicKey: this.key.publicKey(), endpoint: hostPort(this.o.advertiseAddr, this.o.listenPort), tunnel: this.tunnel, implementation: this.kind };
  }

  /** The cluster's hosts changed (agent mirror): program the peers. */
  setHosts(hosts: Map<string, HostRecord>): Promise<number> {
    this.hosts = new Map(hosts);
    this.hostsKnown = true;
    return this.serial(async () => {
      this.replan();
      if (!this.ready || !this.device) return 0;
      try {
        return await this.programPeers(await this.device.get());
      } catch (err) {
        this.fail(err, 'programming WireGuard peers failed; retrying');
        return 0;
      }
    });
  }

  private replan(): void {
    const before = new Set(this.plan.skipped.map((s) => `${s.host}: ${s.why}`));
    this.plan = desiredPeers(this.hosts, this.o.hostName, KEEPALIVE, this.key?.publicKey());
    for (const s of this.plan.skipped) {
      // Hosts without WireGuard are normal (older weft, --encryption off); anything else is worth a warning, once.
      if (s.why !== 'publishes no WireGuard' && !before.has(`${s.host}: ${s.why}`)) this.log.warn({ host: s.host }, `WireGuard: host ${s.host} ${s.why}; it is left out of the peers`);
    }
  }

  /**
   * Sets up whatever is missing (key, tunnel address, namespace, interface,
   * configuration, peers). Returns corrections. While WireGuard cannot come
   * up, attempts back off (2 s doubling to 30 s) and calls in between return 0.
   */
  ensure(): Promise<number> {
    return this.serial(() => this.attempt());
  }

  private async attempt(): Promise<number> {
    if (!this.ready && Date.now() < this.nextAttempt) return 0;
    try {
      const n = await this.ensureLocked();
      this.stats.corrections += n;
      this.failures = 0;
      this.nextAttempt = 0;
      return n;
    } catch (err) {
      this.failures++;
      this.nextAttempt = Date.now() + Math.min(30_000, 2_000 * 2 ** (this.failures - 1));
      this.fail(err, 'WireGuard is not available on this host; encrypted networks cannot reach other hosts until it is (weft retries)');
      throw err;
    }
  }

  private fail(err: unknown, what: string): void {
    const msg = (err as Error)?.message ?? String(err);
    this.ready = false;
    // an error once it has worked (a crash); a warning while it never came up (not installed, say)
    if (msg !== this.lastError) this.log[this.announced ? 'error' : 'warn']({ err: msg }, what);
    this.lastError = msg;
  }

  private async check(): Promise<void> {
    if (this.closed) return;
    await this.serial(async () => {
      if (this.ready && this.device && await this.healthy()) return;
      if (this.ready) {
        this.log.warn({ err: this.lastError }, 'WireGuard stopped working: setting it up again');
        this.failures = 0;
        this.nextAttempt = 0;
      }
      this.ready = false;
      await this.attempt().catch(() => undefined);
    });
  }

  private async healthy(): Promise<boolean> {
    try {
      const link = await socketIn(this.cryptoNetns).getLink(this.o.ifname);
      if (!link || !link.up) throw new Error(`interface ${this.o.ifname} is ${link ? 'down' : 'gone'} in ${this.cryptoNetns}`);
      await this.device!.get();
      return true;
    } catch (err) {
      this.lastError = (err as Error).message;
      return false;
    }
  }

  private async ensureLocked(): Promise<number> {
    if (this.closed) throw new Error('WireGuard is shut down');
    let corrections = 0;
    const log = this.log;
    // 1. The key pair: made before first use, then reused.
    if (!this.key) {
      const { key, created } = this.keyFile.loadOrCreate();
      this.key = key;
      if (created) log.info({ keyFile: this.keyFile.path, publicKey: key.publicKey() }, 'WireGuard key pair created (the private key stays in this file, mode 0600)');
    }
    // 2. The tunnel address.
    if (!this.tunnel) {
      fs.mkdirSync(this.keyFile.dir, { recursive: true, mode: 0o700 });
      const r = await claimTunnelAddress(this.o.store, this.o.hostName, this.o.subnet, path.join(this.keyFile.dir, 'tunnel.json'));
      this.tunnel = r.address;
      if (r.claimed) log.info({ tunnel: r.address, subnet: this.o.subnet }, 'WireGuard tunnel address claimed');
      if (r.fromCache) log.warn({ tunnel: r.address }, 'store unreachable: using the tunnel address this host had before');
      else await releaseOtherTunnels(this.o.store, this.o.hostName, r.address).catch(() => 0);
    }
    // 3. The crypto namespace.
    fs.mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    if (ensureNetns(this.cryptoNetns)) {
      corrections++;
      log.info({ netns: this.cryptoNetns }, 'WireGuard namespace created');
    }
    for (const [k, v] of [['net.ipv6.conf.all.disable_ipv6', '1'], ['net.ipv6.conf.default.disable_ipv6', '1']]) {
      try {
        setSysctlIn(this.cryptoNetns, k, v);
      } catch {
        // read-only /proc/sys (managed plugin): the interface then has an IPv6 link-local address, which WireGuard never routes
      }
    }
    const c = socketIn(this.cryptoNetns);
    const lo = await c.getLink('lo');
    if (lo && !lo.up) await c.setLink(lo.index, 'lo', { up: true });
    // 4. The interface, moved into the crypto namespace.
    corrections += await this.ensureDevice();
    // 5. Its address, MTU and state.
    const link = await c.getLink(this.o.ifname);
    if (!link) throw new Error(`interface ${this.o.ifname} vanished from ${this.cryptoNetns} while it was being set up`);
    const prefix = parseTunnelSubnet(this.o.subnet).prefixLen;
    for (const a of await c.listAddresses(link.index)) {
      if (a.ip !== this.tunnel || a.prefixLen !== prefix) {
        await c.delAddress(link.index, a.ip, a.prefixLen);
        corrections++;
      }
    }
    if (await c.addAddress(link.index, this.tunnel, prefix)) corrections++;
    const fix: { mtu?: number; up?: boolean } = {};
    if (link.mtu !== this.o.linkMtu) fix.mtu = this.o.linkMtu;
    if (!link.up) fix.up = true;
    if (Object.keys(fix).length) await c.setLink(link.index, this.o.ifname, fix);
    // 6. Key, port and peers.
    const dev = this.device!;
    const st = await dev.get();
    const change: WgChange = { peers: [] };
    if (st.publicKey !== this.key.publicKey()) change.privateKey = this.key;
    if (st.listenPort !== this.o.listenPort) change.listenPort = this.o.listenPort;
    if (!isEmptyChange(change)) {
      await dev.set(change);
      corrections++;
      log.info(describeChange(change), 'WireGuard device configured');
    }
    this.replan();
    if (this.hostsKnown) corrections += await this.programPeers(change.privateKey ? await dev.get() : st);
    this.ready = true;
    this.lastError = undefined;
    if (!this.announced) {
      this.announced = true;
      log.info({
        implementation: dev.implementation, interface: this.o.ifname, netns: this.cryptoNetns, tunnel: this.tunnel,
        listenPort: this.o.listenPort, publicKey: this.key.publicKey(), peers: this.plan.peers.size,
      }, `WireGuard up: ${dev.implementation}`);
    }
    this.publish();
    return corrections;
  }

  private publish(): void {
    const info = JSON.stringify({ k: this.key?.publicKey(), t: this.tunnel, i: this.kind });
    if (info === this.published) return;
    this.published = info;
    for (const cb of this.listeners) cb();
  }

  /** Finds or makes the WireGuard interface and moves it into the crypto namespace. */
  private async ensureDevice(): Promise<number> {
    const c = socketIn(this.cryptoNetns);
    const h = socketIn(this.o.hostNetns);
    const name = this.o.ifname;
    let corrections = 0;
    let inC = await c.getLink(name);
    let inH = inC ? undefined : await h.getLink(name);
    const kindOf = (k?: string) => (k === 'wireguard' ? 'kernel' : k === 'tun' ? 'userspace' : undefined);
    for (const [l, where] of [[inC, this.cryptoNetns], [inH, 'the host namespace']] as const) {
      if (l && !kindOf(l.kind)) {
        throw new Error(`a link named ${name} that is not WireGuard (${l.kind ?? 'unknown kind'}) exists in ${where}: remove it or give weft another --wg-interface`);
      }
    }
    const found = kindOf((inC ?? inH)?.kind);
    if (found && this.o.mode !== 'auto' && found !== this.o.mode) {
      this.log.warn({ interface: name, found, wanted: this.o.mode }, `replacing the ${found} WireGuard interface: --wireguard says ${this.o.mode}`);
      if (inC) await c.delLink(inC.index);
      if (inH) await h.delLink(inH.index);
      inC = inH = undefined;
    }
    let kind = this.kind ?? (inC || inH ? kindOf((inC ?? inH)!.kind) : undefined);
    if (!kind) {
      if (this.o.mode === 'userspace') kind = 'userspace';
      else {
        // The kernel's WireGuard when it has one.
        try {
          await h.createPlainLink(name, 'wireguard', this.o.linkMtu);
          kind = 'kernel';
          corrections++;
          inH = await h.getLink(name);
        } catch (err) {
          const code = errorCode(err);
          if (this.o.mode === 'kernel') throw new Error(`--wireguard kernel: this kernel cannot make a WireGuard interface (${code ?? (err as Error).message}): load the module (modprobe wireguard) or use --wireguard auto`);
          if (code !== 'EOPNOTSUPP' && code !== 'ENOTSUP' && code !== 'EINVAL' && code !== 'ENODEV' && code !== 'ENOENT') throw err;
          kind = 'userspace';
          this.log.info({ reason: code }, 'this kernel has no WireGuard: using the userspace wireguard-go');
        }
      }
    }
    this.kind = kind;
    if (kind === 'userspace') {
      this.version ??= await wireguardGoVersion(this.o.wireguardGo);
      if (!(await uapiAnswers(name))) {
        // Not running (first start, or it died: its interface went with it).
        if (inC) await c.delLink(inC.index).catch(() => false);
        if (this.child) this.log.warn({}, 'wireguard-go is not answering: starting it again');
        this.child = await startWireguardGo({ binary: this.o.wireguardGo, ifname: name, dir: this.dir, ...(this.o.hostNetns ? { netns: this.o.hostNetns } : {}) });
        this.stats.restarts++;
        corrections++;
        const child = this.child;
        void child.exited.then((why) => {
          if (this.closed || this.child !== child) return;
          this.log.error({ err: why }, 'wireguard-go exited: encrypted traffic stops (fail closed) until weft has started it again');
          this.ready = false;
          this.lastError = why;
          void this.check();
        });
        inC = undefined;
        inH = await h.getLink(name);
        if (!inH) throw new Error(`wireguard-go started but interface ${name} is not in the host namespace`);
      }
      this.device = new UapiDevice(uapiSocketPath(name), `wireguard-go ${this.version.replace(/^wireguard-go\s*/, '')} (userspace)`);
    } else {
      if (!inC && !inH) {
        await h.createPlainLink(name, 'wireguard', this.o.linkMtu);
        corrections++;
        inH = await h.getLink(name);
      }
      if (!(this.device instanceof KernelDevice)) this.device = new KernelDevice(name, this.cryptoNetns);
    }
    if (!inC) {
      if (!inH) {
        throw new Error(`WireGuard interface ${name} is in neither ${this.cryptoNetns} nor the host namespace: ` +
          'if several wefts run on this machine (one per network namespace), give each its own --wg-interface (the UAPI socket /var/run/wireguard/<name>.sock is machine-wide)');
      }
      // MTU first, while wireguard-go still sees the link (it watches its own namespace only).
      if (inH.mtu !== this.o.linkMtu) await h.setLink(inH.index, name, { mtu: this.o.linkMtu });
      if (!isPinnedNetns(this.cryptoNetns)) throw new Error(`${this.cryptoNetns} is not a network namespace`);
      await withNsFd(this.cryptoNetns, (nsFd) => h.setLink(inH!.index, name, { nsFd }));
      corrections++;
      this.log.info({ interface: name, netns: this.cryptoNetns }, 'WireGuard interface moved into its namespace');
    }
    return corrections;
  }

  private async programPeers(st: WgDeviceState): Promise<number> {
    const peers = planPeerChanges(st, this.plan.peers, this.endpointsSet);
    if (peers.length === 0 || !this.device) return 0;
    await this.device.set({ peers });
    for (const p of peers) {
      if (p.remove) this.endpointsSet.delete(p.publicKey);
      else if (p.endpoint) this.endpointsSet.set(p.publicKey, p.endpoint);
    }
    this.stats.peerChanges += peers.length;
    const hostOf = (pk: string) => this.plan.peers.get(pk)?.host ?? shortKey(pk);
    this.log.info({
      added: peers.filter((p) => !p.remove && !p.updateOnly).map((p) => hostOf(p.publicKey)),
      updated: peers.filter((p) => !p.remove && p.updateOnly).map((p) => hostOf(p.publicKey)),
      removed: peers.filter((p) => p.remove).map((p) => shortKey(p.publicKey)),
    }, 'WireGuard peers programmed');
    return peers.length;
  }

  /**
   * Replaces this host's key pair. The new private key is written (atomically,
   * 0600) and given to the device before the public key is published: peers
   * then replace the old key with the new one and, through the keepalive,
   * start a handshake at once. Traffic to other hosts stops from the moment
   * the device has the new key until each peer has read it from the store and
   * completed that handshake (see the README for the bound).
   */
  rotateKey(): Promise<{ publicKey: string; previous: string; at: string }> {
    return this.serial(async () => {
      if (!this.ready || !this.device || !this.key) throw new Error(`WireGuard is not running on this host: ${this.notReadyReason()}`);
      const previous = this.key.publicKey();
      const next = generatePrivateKey();
      const at = new Date().toISOString();
      this.keyFile.write(next);
      this.key = next;
      await this.device.set({ privateKey: next, peers: [] });
      this.log.info({ publicKey: next.publicKey(), previous }, 'WireGuard key rotated; publishing the new public key');
      this.replan();
      this.publish();
      return { publicKey: next.publicKey(), previous, at };
    });
  }

  async status(): Promise<WireGuardStatus> {
    let mode: string | undefined;
    try {
      mode = (fs.statSync(this.keyFile.path).mode & 0o777).toString(8);
    } catch {
      mode = undefined;
    }
    const base: WireGuardStatus = {
      ready: this.ready,
      ...(this.lastError ? { error: this.lastError } : {}),
      ...(this.kind ? { kind: this.kind } : {}),
      ...(this.device ? { implementation: this.device.implementation } : {}),
      interface: this.o.ifname,
      netns: this.cryptoNetns,
      listenPort: this.o.listenPort,
      endpoint: hostPort(this.o.advertiseAddr, this.o.listenPort),
      ...(this.tunnel ? { tunnel: this.tunnel } : {}),
      subnet: this.o.subnet,
      linkMtu: this.o.linkMtu,
      ...(this.key ? { publicKey: this.key.publicKey() } : {}),
      keyFile: this.keyFile.path,
      ...(mode ? { keyFileMode: mode } : {}),
      peers: [],
      missing: [],
      skipped: this.plan.skipped,
    };
    if (this.kind === 'userspace') {
      const pid = this.child?.pid && this.child.child.exitCode === null ? this.child.pid : recordedPid({ dir: this.dir, ifname: this.o.ifname });
      if (pid) base.pid = pid;
    }
    if (!this.device) {
      base.missing = [...this.plan.peers.values()].map((p) => ({ host: p.host, publicKey: p.publicKey }));
      return base;
    }
    let st: WgDeviceState;
    try {
      st = await this.device.get();
    } catch (err) {
      base.ready = false;
      base.error = (err as Error).message;
      base.missing = [...this.plan.peers.values()].map((p) => ({ host: p.host, publicKey: p.publicKey }));
      return base;
    }
    const now = Date.now();
    base.peers = st.peers.map((p) => {
      const want = this.plan.peers.get(p.publicKey);
      const age = p.lastHandshakeMs ? Math.max(0, now - p.lastHandshakeMs) : undefined;
      return {
        ...(want ? { host: want.host, tunnel: want.tunnel } : {}),
        publicKey: p.publicKey,
        ...(p.endpoint ? { endpoint: p.endpoint } : {}),
        ...(p.lastHandshakeMs ? { lastHandshake: new Date(p.lastHandshakeMs).toISOString(), handshakeAgeSeconds: Math.round((age ?? 0) / 100) / 10 } : {}),
        up: age !== undefined && age < SESSION_LIFETIME_MS,
        rxBytes: p.rxBytes,
        txBytes: p.txBytes,
        expected: want !== undefined,
      };
    }).sort((a, b) => (a.host ?? '~').localeCompare(b.host ?? '~'));
    const onDevice = new Set(st.peers.map((p) => p.publicKey));
    base.missing = [...this.plan.peers.values()].filter((p) => !onDevice.has(p.publicKey)).map((p) => ({ host: p.host, publicKey: p.publicKey }));
    return base;
  }

  close(): void {
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    if (this.device instanceof KernelDevice) this.device.close();
    // wireguard-go and the interface stay, like the rest of the kernel state:
    // running containers keep their encrypted path while weft is down.
  }
}
