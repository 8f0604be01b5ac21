// [wireguard] What `weft serve` makes of the WireGuard settings: the manager
// (index.ts) when this host takes part in encrypted networks, and what the
// driver needs to know (EncryptedPath).
import type { Logger } from 'pino';
import { Config, isClusterStore, vxlanOverhead } from '../config';
import { ipFamily } from '../util/ip';
import type { EncryptedPath } from '../driver/driver';
import type { Store } from '../store/store';
import { WG_OVERHEAD_IPV4, WG_OVERHEAD_IPV6, WireGuard, WireGuardMode } from './index';

/**
 * The MTU of the WireGuard interface. --mtu is the underlay MTU minus VXLAN's
 * overhead on the underlay (50 over IPv4, 70 over IPv6), so WireGuard's own
 * packets (+60 over IPv4, +80 over IPv6) fill the underlay when the interface
 * takes --mtu plus that overhead minus WireGuard's: --mtu - 10 either way. An
 * encrypted network's frames (VXLAN over the IPv4 tunnel: +50) are then
 * --mtu - 60 bytes, its default MTU.
 */
export function wireguardLinkMtu(cfg: Pick<Config, 'mtu'> & Partial<Pick<Config, 'advertiseAddr'>>): number {
  const wg = ipFamily(cfg.advertiseAddr ?? '') === 6 ? WG_OVERHEAD_IPV6 : WG_OVERHEAD_IPV4;
  return cfg.mtu + vxlanOverhead(cfg.advertiseAddr) - wg;
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
