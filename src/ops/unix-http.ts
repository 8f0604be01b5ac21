// HTTP over the plugin's unix socket: the operator commands read the running
// weft's admin routes through it, and /healthz checks that it answers.
import * as http from 'http';

export interface UnixReply {
  status: number;
  text: string;
}

export function unixRequest(socket: string, method: 'GET' | 'POST', path: string, timeoutMs: number, body?: string): Promise<UnixReply> {
  return new Promise((resolve, reject) => {
    const req = http.request({
      socketPath: socket, method, path, timeout: timeoutMs,
      headers: body !== undefined ? { 'Content-Length': Buffer.byteLength(body) } : {},
    }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => { text += d; });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end(body);
  });
}

/** Why the socket could not be reached, in words an operator can act on. */
export function describeSocketError(socket: string, err: unknown): string {
  const code = (err as NodeJS.ErrnoException)?.code;
  if (code === 'ENOENT') return `${socket} does not exist: weft serve is not running on this host (or runs with another --socket)`;
  if (code === 'ECONNREFUSED') return `nothing listens on ${socket}: weft serve is not running (the socket is left over from an earlier run)`;
  if (code === 'EACCES') return `permission denied on ${socket}: the socket is root-only, run this command as root`;
  return `${socket}: ${(err as Error)?.message ?? String(err)}`;
}
