// The key space of the FileStore: how keys are ordered (as etcd orders them,
// so that a list returns the same order from either store), and the checks on
// what callers hand in: keys, transactions and lease TTLs.
import type { Compare, Op } from '../store';

/**
 * Orders keys as etcd does: by their UTF-8 bytes. JavaScript's `<` compares
 * UTF-16 code units, which disagrees with byte order only between surrogates
 * (U+D800-DFFF) and U+E000-FFFF; shifting those two ranges fixes it.
 */
export function compareKeys(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    let x = a.charCodeAt(i);
    let y = b.charCodeAt(i);
    if (x === y) continue;
    if (x >= 0xd800 && y >= 0xd800) {
      x = x >= 0xe000 ? x - 0x800 : x + 0x2000;
      y = y >= 0xe000 ? y - 0x800 : y + 0x2000;
    }
    return x - y;
  }
  return a.length - b.length;
}

/** Index of the first element of the sorted array that is >= key. */
export function lowerBound(sorted: string[], key: string): number {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (compareKeys(sorted[mid]!, key) < 0) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

// ---------------------------------------------------------------------------
// Validation shared by the txn paths (of both stores: EtcdStore uses validateTxn)

export function checkKey(key: unknown, what: string): asserts key is string {
  if (typeof key !== 'string' || key === '') throw new TypeError(`${what}: key must be a non-empty string, got ${JSON.stringify(key)}`);
}

/**
 * Rejects what etcd rejects, so that code tested against the embedded store
 * does not break on a cluster: a put may not share a key with another put or
 * with any delete of the same transaction ("duplicate key given in txn
 * request"). An empty deletePrefix would wipe the whole store, which is never
 * what a caller meant.
 */
export function validateTxn(compares: Compare[], ops: Op[]): void {
  if (!Array.isArray(compares) || !Array.isArray(ops)) throw new TypeError('txn: compares and ops must be arrays');
  for (const c of compares) {
    checkKey(c?.key, 'txn compare');
    if (!Number.isSafeInteger(c.modRevision) || c.modRevision < 0) {
      throw new TypeError(`txn compare on ${c.key}: modRevision must be 0 (absent) or a revision, got ${String(c.modRevision)}`);
    }
  }
  const puts = new Set<string>();
  const dels = new Set<string>();
  const prefixes: string[] = [];
  for (const op of ops) {
    switch (op?.type) {
      case 'put':
        checkKey(op.key, 'txn put');
        if (typeof op.value !== 'string') throw new TypeError(`txn put ${op.key}: value must be a string`);
        if (op.lease !== undefined && (typeof op.lease !== 'string' || op.lease === '')) {
          throw new TypeError(`txn put ${op.key}: lease must be a lease id string`);
        }
        if (puts.has(op.key)) throw new TypeError(`txn puts ${op.key} twice: etcd refuses duplicate keys in one transaction, merge the puts`);
        puts.add(op.key);
        break;
      case 'delete':
        checkKey(op.key, 'txn delete');
        dels.add(op.key);
        break;
      case 'deletePrefix':
        if (typeof op.prefix !== 'string' || op.prefix === '') {
          throw new TypeError('txn deletePrefix: prefix must be a non-empty string (an empty prefix would delete every key)');
        }
        prefixes.push(op.prefix);
        break;
      default:
        throw new TypeError(`txn: unknown op ${JSON.stringify(op)}`);
    }
  }
  for (const k of puts) {
    if (dels.has(k) || prefixes.some((p) => k.startsWith(p))) {
      throw new TypeError(`txn both puts and deletes ${k}: etcd refuses duplicate keys in one transaction, split it or drop the delete`);
    }
  }
}

export function checkTtl(ttlSeconds: unknown): asserts ttlSeconds is number {
  if (typeof ttlSeconds !== 'number' || !Number.isSafeInteger(ttlSeconds) || ttlSeconds < 1) {
    throw new TypeError(`grantLease: ttlSeconds must be a whole number of seconds >= 1, got ${String(ttlSeconds)}`);
  }
}
