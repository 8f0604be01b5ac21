// /metrics must not touch the kernel: a forwarding-table dump waits in the
// same per-network queue as Join (a scraper polling 20 times a second would
// hold every container start behind it), and at 10,000 endpoints each dump is
// 20,000 entries of garbage. Neither a scrape nor a timer of the metrics
// reads the tables: they report the agent's bookkeeping (what it programmed,
// what the reconcile's full compare repaired).
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import Fastify from 'fastify';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import type { Agent } from '../../src/agent/agent';
import { loadConfig } from '../../src/config';
import type { DataPlaneApi, PeerState } from '../../src/dataplane/types';
import type { LocalNetworks } from '../../src/cluster/local-networks';
import { createOps } from '../../src/ops/serve-hooks';
import { FileStore } from '../../src/store/file-store';
import { parsePromText, promSum } from './prom-text';

let dir = '';
afterEach(() => { if (dir) fs.rmSync(dir, { recursive: true, force: true }); });

describe('/metrics and the kernel', () => {
  it('20 scrapes read no forwarding table, and report what the agent programmed and repaired', async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'weft-scrape-'));
    const store = await FileStore.open(dir);
    const cfg = loadConfig(['--store', 'etcd://127.0.0.1:1', '--host-name', 'h1', '--advertise-addr', '127.0.0.1', '--reconcile-interval', '3600', '--probe-port', '0'], {});
    const ops = createOps(cfg, store);
    let reads = 0;
    const peers: PeerState = { endpoints: [{ ip: '10.40.0.2', mac: '02:42:0a:28:00:02', vtep: '192.0.2.2' }], floodVteps: ['192.0.2.2'] };
    const dataplane = { readPeers: async () => { reads++; return peers; } } as unknown as DataPlaneApi;
    const record = { name: 'app', vni: 5000, mtu: 1450, options: {}, internal: false, createdBy: 'h1', createdAt: '' };
    const networks = {
      list: () => [{ localId: 'l', clusterId: 'c'.repeat(64), record, since: 0 }],
      spec: () => ({ id: 'cccccccccc', nsPath: '/x', bridge: 'br', mtu: 1450 }),
    } as unknown as LocalNetworks;
    const agent = {
      stats: { corrections: 0, peersProgrammed: 0, storeErrors: 0, synced: true, invalidRecords: 0 },
      desiredPeers: () => peers, peerReport: () => [{ clusterId: 'c'.repeat(64), programmed: 2, expected: 3, drift: 1 }], invalid: { byKind: new Map([['endpoint', 2]]) }, liveness: { report: () => [] }, registered: () => true,
      view: {
        networks: new Map([['c'.repeat(64), record]]),
        endpoints: new Map([['c'.repeat(64), new Map([['e1', { ip: '10.40.0.2', ip6: 'fd00:40::2' }], ['e2', { ip: '10.40.0.3' }]])]]),
      },
    } as unknown as Agent;
    const app = Fastify();
    ops.register(app, { networks, dataplane });
    await ops.start(agent, pino({ level: 'silent' }));
    try {
      let text = '';
      for (let i = 0; i < 20; i++) text = await ops.metrics.registry.expose();
      // and no timer of the metrics reads them either
      await new Promise((r) => setTimeout(r, 50));
      expect(reads).toBe(0);
      const p = parsePromText(text);
      expect(promSum(p, 'weft_peer_entries', { network: 'app', state: 'programmed' })).toBe(2);
      expect(promSum(p, 'weft_peer_entries', { network: 'app', state: 'expected' })).toBe(3);
      expect(promSum(p, 'weft_peer_drift', { network: 'app' })).toBe(1);
      expect(promSum(p, 'process_resident_memory_bytes')).toBeGreaterThan(0);
      expect(promSum(p, 'weft_lease_alive')).toBe(1);
      expect(promSum(p, 'weft_store_invalid_records_total', { kind: 'endpoint' })).toBe(2);
      expect(promSum(p, 'weft_endpoint_addresses', { network: 'app', family: 'ipv4' })).toBe(2);
      expect(promSum(p, 'weft_endpoint_addresses', { network: 'app', family: 'ipv6' })).toBe(1);
    } finally {
      await ops.close();
      await app.close();
      await store.close();
    }
  });
});
