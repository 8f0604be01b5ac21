// [wireguard] What `weft serve` makes of the WireGuard settings: the manager
// (index.ts) when this host takes part in encrypted networks, and what the
// driver needs to know (EncryptedPath).
import type { Logger } from 'pino';
import { Config, isClusterStore } from '../config';
import type { EncryptedPath } from '../driver/driver';
import type { Store } from '../store/store';
import { VXLAN_OVERHEAD, WG_OVERHEAD_IPV4, WireGuard, WireGuardMode } from './index';

/**
 * The MTU of the WireGuard interface: an encrypted network's frames of
 * (--mtu - 60) bytes plus 50 of VXLAN. --mtu is the underlay MTU minus 50,
 * so WireGuard's own packets (+60 over an IPv4 underlay) fill the underlay.
 */
export function wireguardLinkMtu(cfg: Pick<Config, 'mtu'>): number {
  return cfg.mtu + VXLAN_OVERHEAD - WG_OVERHEAD_IPV4;
}

export function createWireGuard(cfg: Config, store: Store, logger: Logger): { wireguard?: WireGuard; encryption: EncryptedPath } {
  const mode = cfg.encryption as EncryptedPath['mode'];
  const encryption: EncryptedPath = { mode, mtuOverhead: WG_OVERHEAD_IPV4 };
  // One host (embedded store): nothing crosses hosts, there is nothing to encrypt.
  if (mode === 'off' || !isClusterStore(cfg.store) || !cfg.advertiseAddr) return { encryption };
  const wireguard = new WireGuard({
    mode: cfg.wireguard as WireGuardMode,
    ifname: cfg.wgInterface,
    listenPort: cfg.wgPort,
    subnet: cfg.wgSubnet,
    wireguardGo: cfg.wireguardGo,
    stateDir: cfg.stateDir,
    runDir: cfg.runDir,
    hostName: cfg.hostName,
    advertiseAddr: cfg.advertiseAddr,
    linkMtu: wireguardLinkMtu(cfg),
    store,
    logger,
  });
  encryption.wireguard = wireguard;
  return { wireguard, encryption };
}
