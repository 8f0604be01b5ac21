// The names DNS answers from: a view of the agent's mirror of the store (one
// list + watch for the whole agent; no store round trip per query), and the
// rule deciding what a given asker may see.
//
// A name record counts only while the endpoint it names exists
// (endpoints/<cid>/<id>): DeleteEndpoint removes that key before `docker rm`
// returns, so a removed container stops resolving at once on every host, even
// before its own host's agent has deleted the name record. A host whose lease
// expires takes its name and asker records with it.

import { AskerRecord, EndpointRecord, NameRecord, NetworkRecord, parseKey } from '../store/keys';
import { canonicalIPv6, isIPv4, isIPv6, toNumber } from '../ipam/cidr';
import type { WatchEvent } from '../store/store';

/** Something that keeps its own view of the agent's mirror: told of every record, and of every re-list. */
import type { MirrorListener } from '../cluster/view';
export type { MirrorListener };

export type Lookup =
  /** A weft name the asker may see: its addresses (one per container holding the name), IPv4 (A) and IPv6 (AAAA). */
  | { kind: 'found'; ips: string[]; ips6: string[] }
  /** A weft name the asker may not see, or a single-label or NETWORK-suffixed name nobody holds. */
  | { kind: 'nxdomain' }
  /** Not weft's: forward it or refuse it. */
  | { kind: 'other' };

/** What PTR queries get: the names of a weft container's address, and the network that decides who may see them. */
export type ReverseLookup =
  | { kind: 'found'; names: string[] }
  | { kind: 'nxdomain' }
  | { kind: 'other' };

interface Indexed {
  /** Per cluster network: lower-cased name -> addresses. Keys: NAME, ALIAS, NAME.NETWORK, ALIAS.NETWORK. */
  byNetwork: Map<string, Map<string, { v4: string[]; v6: string[] }>>;
  /** Address (IPv4 or canonical IPv6) -> the cluster network and the container's NAME.NETWORK. */
  byAddress: Map<string, { cid: string; name: string }>;
  /** Every key of every network: names weft knows, whoever may see them. */
  all: Set<string>;
  /** Cluster id -> lower-cased Docker network name. */
  netName: Map<string, string>;
}

export class NameTable implements MirrorListener {
  private readonly names = new Map<string, NameRecord>();
  private readonly endpoints = new Map<string, { ip: string; ip6?: string }>();
  private readonly networkNames = new Map<string, string>();
  /** Askers of this host, from the store. */
  private readonly storedAskers = new Map<string, AskerRecord>();
  /** Askers of this host as the local learner knows them right now (ahead of the store). */
  private localAskers = new Map<string, AskerRecord>();
  private index?: Indexed;
  private readonly listeners = new Set<() => void>();

  constructor(private readonly me: string) {}

  reset(): void {
    this.names.clear();
    this.endpoints.clear();
    this.networkNames.clear();
    this.storedAskers.clear();
    this.changed();
  }

  apply(ev: WatchEvent): void {
    const k = parseKey(ev.key);
    if (!k) return;
    const put = ev.type === 'put' && ev.value !== undefined;
    let hit = true;
    try {
      switch (k.kind) {
        case 'name':
          if (put) this.names.set(`${k.network}/${k.endpoint}`, parseName(ev.value!));
          else this.names.delete(`${k.network}/${k.endpoint}`);
          break;
        case 'endpoint':
          if (put) {
            const ep = JSON.parse(ev.value!) as EndpointRecord;
            this.endpoints.set(`${k.network}/${k.endpoint}`, { ip: ep.ip ?? '', ...(typeof ep.ip6 === 'string' ? { ip6: ep.ip6 } : {}) });
          }
          else this.endpoints.delete(`${k.network}/${k.endpoint}`);
          break;
        case 'network': {
          const name = put ? (JSON.parse(ev.value!) as NetworkRecord).name : undefined;
          if (name) this.networkNames.set(k.network, name);
          else this.networkNames.delete(k.network);
          break;
        }
        case 'asker':
          if (k.host !== this.me) return;
          if (put) this.storedAskers.set(k.ip, parseAsker(ev.value!));
          else this.storedAskers.delete(k.ip);
          break;
        default:
          hit = false;
      }
    } catch {
      // An unreadable record: the agent logs it; DNS just leaves it out.
      if (put) {
        if (k.kind === 'name') this.names.delete(`${k.network}/${k.endpoint}`);
        if (k.kind === 'asker') this.storedAskers.delete(k.ip);
      }
    }
    if (hit) this.changed();
  }

  /** The learner's current view of this host's askers (replaces the previous one). */
  setLocalAskers(askers: Map<string, AskerRecord>): void {
    this.localAskers = askers;
    this.changed();
  }

  /** Called (synchronously) after every change; returns a function that unsubscribes. */
  onChange(cb: () => void): () => void {
    this.listeners.add(cb);
    return () => this.listeners.delete(cb);
  }

  /** The networks a source address may see names on, or undefined when weft does not know that asker. */
  asker(ip: string): AskerRecord | undefined {
    return this.localAskers.get(ip) ?? this.storedAskers.get(ip);
  }

  /**
   * What the asker at `askerIp` gets for `qname` (lower-cased, no trailing dot):
   * - found: qname is NAME, ALIAS, NAME.NETWORK or ALIAS.NETWORK of a live
   *   container on a network the asker is attached to;
   * - nxdomain: otherwise, when qname is a single label, ends in .NETWORK of
   *   one of the asker's networks, or is a name weft holds on any network
   *   (so that an unknown asker, or one on other networks, learns nothing);
   * - other: a name weft has nothing to say about.
   */
  lookup(askerIp: string, qname: string): Lookup {
    const ix = this.indexed();
    const networks = this.asker(askerIp)?.networks ?? [];
    const ips = new Set<string>();
    const ips6 = new Set<string>();
    let held = false;
    for (const cid of networks) {
      const hit = ix.byNetwork.get(cid)?.get(qname);
      if (!hit) continue;
      held = true;
      for (const ip of hit.v4) ips.add(ip);
      for (const ip of hit.v6) ips6.add(ip);
    }
    if (held) return { kind: 'found', ips: [...ips].sort(compareIp), ips6: [...ips6].sort(compareIp6) };
    if (qname !== '' && !qname.includes('.')) return { kind: 'nxdomain' };
    if (ix.all.has(qname)) return { kind: 'nxdomain' };
    for (const cid of networks) {
      const n = ix.netName.get(cid);
      if (n && qname.endsWith('.' + n)) return { kind: 'nxdomain' };
    }
    return { kind: 'other' };
  }

  /**
   * PTR: `qname` (lower-cased, no trailing dot) under in-addr.arpa or
   * ip6.arpa. The same isolation as lookup: a weft container's address
   * resolves to its NAME.NETWORK only for an asker on that network;
   * nxdomain for other askers; other for addresses that are not weft's.
   */
  reverse(askerIp: string, qname: string): ReverseLookup {
    const ip = addressOfReverseName(qname);
    if (!ip) return { kind: 'other' };
    const hit = this.indexed().byAddress.get(ip);
    if (!hit) return { kind: 'other' };
    const networks = this.asker(askerIp)?.networks ?? [];
    return networks.includes(hit.cid) ? { kind: 'found', names: [hit.name] } : { kind: 'nxdomain' };
  }

  /** Counts, for `weft status`-style reporting and tests. */
  sizes(): { names: number; endpoints: number; askers: number } {
    return { names: this.names.size, endpoints: this.endpoints.size, askers: new Set([...this.storedAskers.keys(), ...this.localAskers.keys()]).size };
  }

  private changed(): void {
    this.index = undefined;
    for (const cb of [...this.listeners]) {
      try {
        cb();
      } catch {
        // a listener's bug must not break the mirror
      }
    }
  }

  /** Rebuilt lazily after a change: queries between changes cost a few map lookups. */
  private indexed(): Indexed {
    if (this.index) return this.index;
    const ix: Indexed = { byNetwork: new Map(), byAddress: new Map(), all: new Set(), netName: new Map() };
    for (const [key, rec] of this.names) {
      const ep = this.endpoints.get(key);
      if (ep === undefined) continue; // endpoint deleted: the container left the network
      // The endpoint record is the truth; the name record (from Docker) fills in for an older weft's endpoint.
      const ip = ep.ip || rec.ip;
      const raw6 = rec.ipv6Off ? undefined : ep.ip6 ?? rec.ip6;
      const ip6 = raw6 && isIPv6(raw6) ? canonicalIPv6(raw6) : undefined;
      const v4 = ip && isIPv4(ip) ? [ip] : [];
      const v6 = ip6 ? [ip6] : [];
      if (!v4.length && !v6.length) continue;
      const cid = key.slice(0, key.indexOf('/'));
      const netName = (rec.network || this.networkNames.get(cid) || '').toLowerCase();
      if (netName) ix.netName.set(cid, netName);
      let m = ix.byNetwork.get(cid);
      if (!m) ix.byNetwork.set(cid, (m = new Map()));
      for (const base of new Set([rec.name, ...rec.aliases].map((s) => s.toLowerCase()).filter(Boolean))) {
        for (const k of netName ? [base, `${base}.${netName}`] : [base]) {
          let entry = m.get(k);
          if (!entry) m.set(k, (entry = { v4: [], v6: [] }));
          for (const a of v4) if (!entry.v4.includes(a)) entry.v4.push(a);
          for (const a of v6) if (!entry.v6.includes(a)) entry.v6.push(a);
          ix.all.add(k);
        }
      }
      const ptr = rec.name.toLowerCase() + (netName ? `.${netName}` : '');
      if (rec.name) for (const a of [...v4, ...v6]) ix.byAddress.set(a, { cid, name: ptr });
    }
    for (const [cid, n] of this.networkNames) if (!ix.netName.has(cid)) ix.netName.set(cid, n.toLowerCase());
    this.index = ix;
    return ix;
  }
}

function parseName(value: string): NameRecord {
  const r = JSON.parse(value) as Partial<NameRecord>;
  if (typeof r.name !== 'string' || typeof r.ip !== 'string') throw new Error('name record without name or ip');
  return {
    name: r.name, ip: r.ip, ...(typeof r.ip6 === 'string' ? { ip6: r.ip6 } : {}), ...(r.ipv6Off === true ? { ipv6Off: true } : {}), host: String(r.host ?? ''), network: String(r.network ?? ''), container: String(r.container ?? ''),
    aliases: Array.isArray(r.aliases) ? r.aliases.filter((a): a is string => typeof a === 'string') : [],
  };
}

function parseAsker(value: string): AskerRecord {
  const r = JSON.parse(value) as Partial<AskerRecord>;
  if (!Array.isArray(r.networks)) throw new Error('asker record without networks');
  return { networks: r.networks.filter((n): n is string => typeof n === 'string'), container: String(r.container ?? ''), name: String(r.name ?? '') };
}

function compareIp(a: string, b: string): number {
  const pa = a.split('.').map(Number);
  const pb = b.split('.').map(Number);
  for (let i = 0; i < 4; i++) if (pa[i] !== pb[i]) return pa[i] - pb[i];
  return 0;
}

function compareIp6(a: string, b: string): number {
  const d = toNumber(a) - toNumber(b);
  return d < 0n ? -1 : d > 0n ? 1 : 0;
}

/**
 * The address a reverse name stands for: "4.0.61.10.in-addr.arpa" is
 * 10.61.0.4; 32 nibbles under ip6.arpa an IPv6 address (canonical).
 * Undefined for anything else (a partial name, a classless delegation).
 */
export function addressOfReverseName(qname: string): string | undefined {
  if (qname.endsWith('.in-addr.arpa')) {
    const p = qname.slice(0, -'.in-addr.arpa'.length).split('.');
    if (p.length !== 4 || !p.every((x) => /^(0|[1-9]\d{0,2})$/.test(x) && Number(x) <= 255)) return undefined;
    return p.reverse().join('.');
  }
  if (qname.endsWith('.ip6.arpa')) {
    const p = qname.slice(0, -'.ip6.arpa'.length).split('.');
    if (p.length !== 32 || !p.every((x) => /^[0-9a-f]$/.test(x))) return undefined;
    const hex = p.reverse().join('');
    return canonicalIPv6(hex.match(/.{4}/g)!.join(':'));
  }
  return undefined;
}
