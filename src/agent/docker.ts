// A minimal Docker Engine API client (only what the agent needs), over the
// unix socket or TCP given by --docker-host. Only the agent uses it, and never
// from inside a driver call: dockerd calls the plugin while it holds its own
// locks, so a plugin that calls back can deadlock it (design.md).

import * as fs from 'fs';
import * as http from 'http';

export interface DockerNetwork {
  Id: string;
  Name: string;
  Driver: string;
  Options?: Record<string, string>;
  Labels?: Record<string, string> | null;
  Attachable?: boolean;
  Internal?: boolean;
  IPAM?: { Driver: string; Options?: Record<string, string> | null; Config?: { Subnet?: string; Gateway?: string; IPRange?: string }[] };
  /** Containers attached on this host, with their endpoint ids. */
  Containers?: Record<string, { Name?: string; EndpointID?: string; MacAddress?: string; IPv4Address?: string }>;
}

export interface DockerContainer {
  Id: string;
  /** With Docker's leading '/'. */
  Name: string;
  /** Status: created (also while its start is under way), running, exited...; Error: why its start failed. */
  State?: { Running?: boolean; Status?: string; Error?: string; ExitCode?: number };
  /** --sysctl values (net.ipv6.conf.all.disable_ipv6=1 turns the container's IPv6 off). */
  HostConfig?: { Sysctls?: Record<string, string> | null };
  NetworkSettings?: {
    Networks?: Record<string, { NetworkID?: string; EndpointID?: string; IPAddress?: string; GlobalIPv6Address?: string; Aliases?: string[] | null }>;
  };
}

/** One message of GET /events. */
export interface DockerEvent {
  Type?: string;
  Action?: string;
  Actor?: { ID?: string; Attributes?: Record<string, string> };
}

export interface EventStream {
  close(): void;
}

export class DockerError extends Error {
  constructor(message: string, readonly status: number) {
    super(message);
    this.name = 'DockerError';
  }
}

export class DockerClient {
  private readonly socketPath?: string;
  private readonly host?: string;
  private readonly port?: number;

  constructor(dockerHost: string, private readonly timeoutMs = 30_000) {
    if (dockerHost.startsWith('unix://')) this.socketPath = dockerHost.slice('unix://'.length);
    else if (dockerHost.startsWith('tcp://')) {
      const u = new URL(dockerHost.replace(/^tcp:/, 'http:'));
      this.host = u.hostname;
      this.port = Number(u.port || 2375);
    } else throw new Error(`unsupported --docker-host "${dockerHost}": use unix:///path or tcp://host:port`);
  }

  request<T>(method: string, path: string, body?: unknown): Promise<T> {
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    return new Promise<T>((resolve, reject) => {
      const req = http.request({
        socketPath: this.socketPath, host: this.host, port: this.port, method, path: `/v1.41${path}`,
        headers: { 'Content-Type': 'application/json', ...(payload ? { 'Content-Length': payload.length } : {}) },
        timeout: this.timeoutMs,
      }, (res) => {
        const chunks: Buffer[] = [];
        // dockerd dying mid-answer ends the response without 'end': settle anyway.
        res.on('aborted', () => reject(new Error(`${method} ${path}: the Docker engine closed the connection mid-answer`)));
        res.on('error', reject);
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          const status = res.statusCode ?? 0;
          if (status >= 200 && status < 300) {
            try {
              resolve((text ? JSON.parse(text) : undefined) as T);
            } catch {
              resolve(undefined as T);
            }
            return;
          }
          let msg = text;
          try {
            msg = (JSON.parse(text) as { message?: string }).message ?? text;
          } catch {
            // not JSON
          }
          reject(new DockerError(`${method} ${path}: ${status} ${msg.trim()}`, status));
        });
      });
      req.on('timeout', () => req.destroy(new Error(`${method} ${path}: no answer from the Docker engine within ${this.timeoutMs} ms`)));
      req.on('error', reject);
      // The socket timeout covers idle sockets only; this bounds the whole exchange.
      const overall = setTimeout(() => req.destroy(new Error(`${method} ${path}: the Docker engine did not finish answering within ${this.timeoutMs} ms`)), this.timeoutMs);
      overall.unref();
      req.on('close', () => clearTimeout(overall));
      if (payload) req.write(payload);
      req.end();
    });
  }

  inspectNetwork(id: string): Promise<DockerNetwork> {
    return this.request<DockerNetwork>('GET', `/networks/${encodeURIComponent(id)}`);
  }

  listNetworks(): Promise<DockerNetwork[]> {
    return this.request<DockerNetwork[]>('GET', '/networks');
  }

  createNetwork(spec: {
    Name: string; Driver: string; Options: Record<string, string>; Internal?: boolean;
    Attachable?: boolean; EnableIPv6?: boolean; Labels?: Record<string, string>;
    IPAM: { Driver: string; Options?: Record<string, string>; Config: { Subnet: string; Gateway?: string; IPRange?: string }[] };
  }): Promise<{ Id: string }> {
    return this.request<{ Id: string }>('POST', '/networks/create', { ...spec, CheckDuplicate: true });
  }

  removeNetwork(id: string): Promise<void> {
    return this.request<void>('DELETE', `/networks/${encodeURIComponent(id)}`);
  }

  listContainers(): Promise<{ Id: string; Names?: string[]; State?: string }[]> {
    return this.request('GET', '/containers/json');
  }

  inspectContainer(id: string): Promise<DockerContainer> {
    return this.request<DockerContainer>('GET', `/containers/${encodeURIComponent(id)}/json`);
  }

  /**
   * Follows GET /events (filters as Docker takes them, e.g. {type: ['container']}).
   * onEvent gets each event; onEnd is called once, when the stream ends or
   * fails for any reason (the caller reconnects, and resyncs: events in
   * between are lost). A line longer than 1 MiB ends the stream.
   */
  streamEvents(filters: Record<string, string[]>, onEvent: (ev: DockerEvent) => void, onEnd: (err: Error) => void): EventStream {
    let ended = false;
    const end = (err: Error) => {
      if (ended) return;
      ended = true;
      onEnd(err);
    };
    const req = http.request({
      socketPath: this.socketPath, host: this.host, port: this.port, method: 'GET',
      path: `/v1.41/events?filters=${encodeURIComponent(JSON.stringify(filters))}`,
    }, (res) => {
      if ((res.statusCode ?? 0) !== 200) {
        res.resume();
        end(new DockerError(`GET /events: ${res.statusCode}`, res.statusCode ?? 0));
        return;
      }
      let buf = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        buf += chunk;
        let nl: number;
        while ((nl = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, nl).trim();
          buf = buf.slice(nl + 1);
          if (!line) continue;
          try {
            onEvent(JSON.parse(line) as DockerEvent);
          } catch {
            // not JSON: skip the line
          }
        }
        if (buf.length > 1 << 20) req.destroy(new Error('GET /events: a line longer than 1 MiB'));
      });
      res.on('end', () => end(new Error('GET /events: the Docker engine closed the stream')));
      res.on('error', (e) => end(e));
    });
    req.on('error', (e) => end(e));
    req.end();
    return { close: () => { ended = true; req.destroy(); } };
  }
}

/**
 * True when the Engine's unix socket path is a bind mount of a socket file
 * that dockerd has since removed: a managed plugin's `docker-sock` mount
 * after dockerd restarted with live-restore (the plugin kept running, the new
 * dockerd made a new socket file). Nothing reaches dockerd through it again;
 * only a restart of the plugin, which mounts the new file, does.
 */
export function engineSocketStale(dockerHost: string): boolean {
  if (!dockerHost.startsWith('unix://')) return false;
  try {
    return fs.statSync(dockerHost.slice('unix://'.length)).nlink === 0;
  } catch {
    return false; // absent (dockerd restarting) is not stale: it comes back at the same path
  }
}
