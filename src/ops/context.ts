// What every operator command starts from: the settings (the same as
// `weft serve`, so the same flags, environment and --config file work), the
// store, and the local weft's admin routes on the plugin socket.
import { Config, ConfigError, loadConfig, SETTINGS } from '../config';
import { openStore } from '../store';
import { ROOT } from '../store/keys';
import type { Store } from '../store/store';
import { CLUSTER_PATH } from './admin';
import type { RawKv } from './cluster';
import { describeSocketError, unixRequest } from './unix-http';

/** A failure an operator can act on: the message says what and what to do. */
export class OpsError extends Error {
  constructor(message: string, readonly exitCode = 1) {
    super(message);
    this.name = 'OpsError';
  }
}

export interface CommandSpec {
  /** e.g. "host rm": used in messages. */
  name: string;
  /** Boolean flags of this command (without --). */
  flags: string[];
  /** Names of the positional arguments, for messages; "[X]" is optional. */
  args: string[];
}

export interface ParsedArgs {
  cfg: Config;
  flags: Set<string>;
  positional: string[];
}

const VALUE_FLAGS = new Set(SETTINGS.map((s) => s.flag));

/** Splits the command's own flags and arguments from the settings flags, which loadConfig reads. */
export function parseArgs(argv: string[], spec: CommandSpec, env: NodeJS.ProcessEnv = process.env): ParsedArgs {
  const settings: string[] = [];
  const flags = new Set<string>();
  const positional: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '-y' && spec.flags.includes('yes')) { flags.add('yes'); continue; }
    if (a.startsWith('--')) {
      const name = a.slice(2).split('=')[0];
      if (spec.flags.includes(name) && !a.includes('=')) { flags.add(name); continue; }
      if (VALUE_FLAGS.has(name)) {
        settings.push(a);
        if (!a.includes('=')) {
          if (i + 1 >= argv.length) throw new ConfigError(`flag --${name} needs a value`);
          settings.push(argv[++i]);
        }
        continue;
      }
      const own = spec.flags.map((f) => `--${f}`).join(', ');
      throw new ConfigError(`unknown flag --${name} for weft ${spec.name}${own ? ` (its own flags: ${own}; plus the settings of weft --help)` : ' (see weft --help)'}`);
    }
    if (a.startsWith('-') && a !== '-') throw new ConfigError(`unknown flag ${a} for weft ${spec.name} (see weft --help)`);
    positional.push(a);
  }
  const required = spec.args.filter((x) => !x.startsWith('[')).length;
  if (positional.length < required || positional.length > spec.args.length) {
    throw new ConfigError(`usage: weft ${spec.name}${spec.args.map((x) => ` ${x}`).join('')}${spec.flags.map((f) => ` [--${f}]`).join('')} [settings flags]`);
  }
  const cfg = loadConfig(settings, env, { requireAdvertiseAddr: false });
  return { cfg, flags, positional };
}

export interface ClusterList {
  kvs: RawKv[];
  revision: number;
  /** Where it was read: the store itself, or the running weft (which holds the embedded store). */
  source: 'store' | 'plugin';
}

export class OpsContext {
  private opened?: Promise<Store>;

  constructor(readonly cfg: Config) {}

  /** The store, opened once. Throws an OpsError saying what to check when it cannot be opened. */
  store(): Promise<Store> {
    this.opened ??= openStore(this.cfg.store, {
      stateDir: this.cfg.stateDir,
      requestTimeoutMs: this.cfg.storeTimeout,
      ...(this.cfg.etcdCa || this.cfg.etcdCert
        ? { tls: { ca: this.cfg.etcdCa || undefined, cert: this.cfg.etcdCert || undefined, key: this.cfg.etcdKey || undefined } }
        : {}),
      ...(this.cfg.etcdUser ? { auth: { username: this.cfg.etcdUser, password: this.cfg.etcdPassword } } : {}),
      // Fail on the first request, bounded by --store-timeout, with the store's own message.
      verifyConnection: false,
    });
    return this.opened;
  }

  /** Every key under /weft/v1/, from the store, or from the running weft when it holds the embedded store locked. */
  async clusterList(): Promise<ClusterList> {
    let store: Store;
    try {
      store = await this.store();
    } catch (err) {
      if ((err as { code?: string }).code !== 'WEFT_STORE_LOCKED') throw storeError(this.cfg, err);
      this.opened = undefined;
      const dump = await this.adminGet<{ revision: number; kvs: RawKv[] }>(CLUSTER_PATH, 'read the embedded store that it holds');
      return { ...dump, source: 'plugin' };
    }
    try {
      const list = await store.list(ROOT);
      return { kvs: list.kvs.map((kv) => ({ key: kv.key, value: kv.value })), revision: list.revision, source: 'store' };
    } catch (err) {
      throw storeError(this.cfg, err);
    }
  }

  /** GET on the local weft's admin routes. `why` completes "weft serve must run on this host to ...". */
  async adminGet<T>(path: string, why: string, timeoutMs = Math.max(this.cfg.storeTimeout + 3000, 5000), method: 'GET' | 'POST' = 'GET'): Promise<T> {
    let r;
    try {
      r = await unixRequest(this.cfg.socket, method, path, timeoutMs);
    } catch (err) {
      throw new OpsError(`cannot reach the local weft: ${describeSocketError(this.cfg.socket, err)}. weft serve must run on this host to ${why}; start it, or pass the --socket it uses`);
    }
    if (r.status === 404) {
      throw new OpsError(`the weft serving ${this.cfg.socket} does not know ${path}: it is older than this command; restart it with this version`);
    }
    if (r.status !== 200) {
      let msg = r.text;
      try {
        msg = (JSON.parse(r.text) as { Err?: string }).Err ?? r.text;
      } catch {
        // not JSON
      }
      throw new OpsError(`the local weft answered ${r.status} to ${path}: ${msg}`);
    }
    return JSON.parse(r.text) as T;
  }

  async close(): Promise<void> {
    const s = await this.opened?.catch(() => undefined);
    await s?.close().catch(() => undefined);
  }
}

/** A store failure as an operator message. */
export function storeError(cfg: Config, err: unknown): OpsError {
  const msg = err instanceof Error ? err.message : String(err);
  if ((err as { code?: string }).code === 'WEFT_STORE_UNAVAILABLE' || /unavailable|no answer/i.test(msg)) {
    return new OpsError(`${msg}`);
  }
  return new OpsError(`cannot read the store ${cfg.store}: ${msg}. Check --store (the same value as weft serve on this host) and that this host can reach it`);
}
