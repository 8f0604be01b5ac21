// Opens the store named by a URL:
//   file:/path   (or file:///path)  the embedded FileStore in that directory
//   file:  or ""                     the embedded FileStore in the state dir
//   etcd://host:port[,host:port]     etcd over plain HTTP/2
//   etcds://host:port[,host:port]    etcd over TLS
//
// The etcd client (etcd3, gRPC, protobuf: about 8 MiB of a weft's memory) is
// loaded only when the URL names etcd: a weft on the embedded store never
// holds it.
import * as path from 'node:path';
import type { EtcdAuthOptions, EtcdTlsOptions } from './etcd-store';
import { FileStore, StoreLogger } from './file-store';
import type { Store } from './store';

export { FileStore };
export type { EtcdAuthOptions, EtcdTlsOptions, StoreLogger };

export type StoreLocation = { kind: 'file'; dir: string } | { kind: 'etcd'; endpoints: string[]; secure: boolean };

export interface OpenStoreOptions {
  /** Directory for the embedded store when the URL is `file:` or empty. */
  stateDir: string;
  /** Bound on every etcd call (ignored by the embedded store). */
  requestTimeoutMs: number;
  tls?: EtcdTlsOptions;
  auth?: EtcdAuthOptions;
  logger?: StoreLogger;
  /** etcd only: check at open that etcd answers (default true). False opens at once; calls fail until it does. */
  verifyConnection?: boolean;
}

const USAGE = 'use file:/path or etcd://host:2379[,host:2379] (etcds:// for TLS)';

function bad(url: string, why: string): Error {
  return new Error(`store URL ${JSON.stringify(url)}: ${why}; ${USAGE}`);
}

const HOST_PORT = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)(?::(\d{1,5}))?$/;

/** Parses a store URL without opening anything. */
export function parseStoreUrl(url: string, stateDir: string): StoreLocation {
  const u = (url ?? '').trim();
  if (u === '' || u === 'file:') {
    if (!stateDir) throw bad(url, 'no path and no state directory');
    return { kind: 'file', dir: path.resolve(stateDir) };
  }
  if (u.startsWith('file:')) {
    let p = u.slice('file:'.length);
    if (p.startsWith('//')) {
      p = p.slice(2);
      // file://host/path names another machine: only the local one is possible
      if (!p.startsWith('/')) throw bad(url, 'a file: URL must name a local absolute path (file:/path or file:///path)');
    }
    if (!p.startsWith('/')) throw bad(url, 'the path of a file: URL must be absolute');
    return { kind: 'file', dir: path.resolve(decodeURIComponent(p)) };
  }
  const m = /^(etcds?):\/\/(.*)$/.exec(u);
  if (!m) throw new Error(`unknown store URL ${JSON.stringify(url)}: ${USAGE}`);
  const secure = m[1] === 'etcds';
  const rest = m[2]!.replace(/\/+$/, '');
  if (rest === '') throw bad(url, 'no etcd endpoint given');
  const endpoints = rest.split(',').map((hp) => {
    const h = hp.trim();
    const mm = HOST_PORT.exec(h);
    const port = mm?.[2] !== undefined ? Number(mm[2]) : 2379;
    if (!mm || port < 1 || port > 65535) throw bad(url, `"${h}" is not host:port`);
    return `${secure ? 'https' : 'http'}://${mm[1]}:${port}`;
  });
  return { kind: 'etcd', endpoints, secure };
}

/** Opens the store named by `url` (see the top of this file). */
export async function openStore(url: string, opts: OpenStoreOptions): Promise<Store> {
  const loc = parseStoreUrl(url, opts.stateDir);
  if (loc.kind === 'file') {
    return FileStore.open(loc.dir, opts.logger ? { logger: opts.logger } : {});
  }
  if (opts.tls && !loc.secure) {
    throw bad(url, 'TLS files are configured but the URL is etcd:// (plain); use etcds:// to talk TLS');
  }
  const { EtcdStore } = await import('./etcd-store');
  return EtcdStore.open({
    endpoints: loc.endpoints,
    requestTimeoutMs: opts.requestTimeoutMs,
    ...(opts.tls ? { tls: opts.tls } : {}),
    ...(opts.auth ? { auth: opts.auth } : {}),
    ...(opts.logger ? { logger: opts.logger } : {}),
    ...(opts.verifyConnection !== undefined ? { verifyConnection: opts.verifyConnection } : {}),
  });
}
