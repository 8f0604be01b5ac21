// WireGuard keys of this host. The private key lives in one file, readable by
// root only, in the state directory: created before first use, reused across
// restarts, replaced by a rotation. It never leaves the host: the store holds
// the public key only, and nothing here logs, prints or serialises the
// private key (PrivateKey redacts itself in logs, JSON and util.inspect).
//
// Keys are Curve25519 (X25519), 32 bytes: base64 in files and the store (as
// wg(8) writes them), lowercase hex on the UAPI socket.
import { createPrivateKey, createPublicKey, randomBytes } from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import { inspect } from 'util';

export const KEY_LEN = 32;
// PKCS#8 wrapping of a raw X25519 private key (RFC 8410): what Node's crypto imports.
const PKCS8_X25519 = Buffer.from('302e020100300506032b656e04220420', 'hex');

/** A private key. Holds the bytes; shows "[private key]" wherever it is printed or serialised. */
export class PrivateKey {
  readonly #bytes: Buffer;
  constructor(bytes: Buffer) {
    if (bytes.length !== KEY_LEN) throw new Error(`a WireGuard private key has ${KEY_LEN} bytes, not ${bytes.length}`);
    this.#bytes = Buffer.from(bytes);
  }
  /** The raw bytes, for the device only (UAPI set, netlink). */
  reveal(): Buffer {
    return Buffer.from(this.#bytes);
  }
  /** The public key, base64. */
  publicKey(): string {
    return publicKeyOf(this.#bytes);
  }
  toJSON(): string {
    return '[private key]';
  }
  toString(): string {
    return '[private key]';
  }
  [inspect.custom](): string {
    return '[private key]';
  }
}

/** A fresh private key, clamped as wg(8) does (the curve operation clamps anyway; this keeps the file canonical). */
export function generatePrivateKey(): PrivateKey {
  const k = randomBytes(KEY_LEN);
  k[0] &= 248;
  k[31] = (k[31] & 127) | 64;
  return new PrivateKey(k);
}

/** The X25519 public key of a raw private key, base64 (what `wg pubkey` prints). */
export function publicKeyOf(priv: Buffer): string {
  const key = createPrivateKey({ key: Buffer.concat([PKCS8_X25519, priv]), format: 'der', type: 'pkcs8' });
  const jwk = createPublicKey(key).export({ format: 'jwk' }) as { x?: string };
  if (!jwk.x) throw new Error('cannot derive the WireGuard public key');
  return Buffer.from(jwk.x, 'base64url').toString('base64');
}

/** A base64 key of 32 bytes, or undefined if the text is not one. */
export function parseKey(b64: string): Buffer | undefined {
  if (typeof b64 !== 'string' || !/^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$/.test(b64)) return undefined;
  const b = Buffer.from(b64, 'base64');
  return b.length === KEY_LEN ? b : undefined;
}

export function isPublicKey(b64: unknown): b64 is string {
  return typeof b64 === 'string' && parseKey(b64) !== undefined;
}

export const keyToHex = (b64: string): string => {
  const b = parseKey(b64);
  if (!b) throw new Error(`not a WireGuard key: "${b64.slice(0, 8)}..."`);
  return b.toString('hex');
};

export const hexToKey = (hex: string): string => {
  if (!/^[0-9a-f]{64}$/i.test(hex)) throw new Error('not a 64-digit hex key');
  return Buffer.from(hex, 'hex').toString('base64');
};

/** Short form of a public key for logs and tables: the first 8 characters of its base64 (as wireguard-go logs peers). */
export const shortKey = (b64: string | undefined): string => (b64 ? `${b64.slice(0, 8)}...` : '-');

/**
 * The private key file `<dir>/private.key`: base64 and a newline (the format
 * of `wg genkey`), mode 0600 in a directory of mode 0700, owned by the user
 * weft runs as (root).
 */
export class KeyFile {
  readonly path: string;
  constructor(readonly dir: string) {
    this.path = path.join(dir, 'private.key');
  }

  /** Reads the key, or creates it (before any use) when there is none. Refuses a file that others can read. */
  loadOrCreate(): { key: PrivateKey; created: boolean } {
    fs.mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    fs.chmodSync(this.dir, 0o700);
    try {
      return { key: this.load(), created: false };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    }
    const key = generatePrivateKey();
    this.write(key, true);
    return { key, created: true };
  }

  load(): PrivateKey {
    const fd = fs.openSync(this.path, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
    try {
      const st = fs.fstatSync(fd);
      if (!st.isFile()) throw new Error(`${this.path} is not a regular file: move it away; weft creates a new key`);
      if ((st.mode & 0o077) !== 0) {
        throw new Error(`${this.path} has mode ${(st.mode & 0o777).toString(8)}: a WireGuard private key must be readable by root only. ` +
          `If nobody else read it, run chmod 600 ${this.path}; otherwise delete it (weft makes a new one) or rotate the key`);
      }
      const text = fs.readFileSync(fd, 'utf8').trim();
      const bytes = parseKey(text);
      if (!bytes) throw new Error(`${this.path} does not hold a WireGuard private key (base64 of 32 bytes): move it away; weft creates a new key`);
      return new PrivateKey(bytes);
    } finally {
      fs.closeSync(fd);
    }
  }

  /**
   * Writes a key atomically: a new file created 0600 (whatever the umask),
   * fsynced, renamed over the old one, and the directory fsynced. A crash
   * leaves either the old key or the new one, never a torn file.
   */
  write(key: PrivateKey, exclusive = false): void {
    fs.mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    const tmp = `${this.path}.${process.pid}.new`;
    try {
      fs.unlinkSync(tmp);
    } catch {
      // none left over
    }
    const fd = fs.openSync(tmp, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW, 0o600);
    try {
      fs.fchmodSync(fd, 0o600);
      fs.writeSync(fd, `${key.reveal().toString('base64')}\n`);
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    if (exclusive) {
      // First key: never replace one that appeared meanwhile (another weft on the same state dir).
      try {
        fs.linkSync(tmp, this.path);
      } finally {
        fs.unlinkSync(tmp);
      }
    } else {
      fs.renameSync(tmp, this.path);
    }
    const dfd = fs.openSync(this.dir, fs.constants.O_RDONLY);
    try {
      fs.fsyncSync(dfd);
    } finally {
      fs.closeSync(dfd);
    }
  }
}
