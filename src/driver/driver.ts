// CNM semantics of weft's network driver: what CreateNetwork, CreateEndpoint,
// Join, Leave, DeleteEndpoint and DeleteNetwork mean, with rollback. The API
// layer (src/api) only translates wire types to these calls.
//
// Rules this module keeps:
//   - it never calls the Docker Engine API (that can deadlock dockerd at boot;
//     the agent does it, asynchronously);
//   - Delete*/Leave of unknown ids succeed (Docker re-sends them after restarts);
//   - a network's state lives in the store, so a restarted weft (CreateNetwork
//     is never replayed) still knows every network; kernel objects are
//     recreated lazily on first use and by the agent's reconcile.

import { Label, Options } from './labels';
import { endpointNames } from '../dataplane/names';
import { DataPlaneApi } from '../dataplane/types';
import { errors, WeftError } from '../errors';
import { canonicalIPv6, contains, isIPv4, isIPv6, parseSubnet, parseSubnet6 } from '../ipam/cidr';
import { ADDRESS_SPACE, Ipam } from '../ipam/ipam';
import { EndpointRecord, keys } from '../store/keys';
import { Store } from '../store/store';
import { faultPoint } from '../util/fault';
import { LocalNetworks, type LocalNetworksOptions } from '../cluster/local-networks';
import { MulticastRoutes } from './multicast';
import { isValidUnicastMac, macFromIp, macFromIPv6, normalizeMac, parseNetworkOptions } from './options';

/** The local networks' settings (cluster mode, VTEP, MTU, encryption...), and the name users type. */
export interface DriverOptions extends LocalNetworksOptions {
  /** What users type after -d / --ipam-driver, for error messages. */
  driverName: string;
}

/** [wireguard] Encrypted networks: what LocalNetworks needs of this host's WireGuard. */
export type { EncryptedPath } from '../cluster/local-networks';

/** Multicast: a container's first weft network carries it (Join returns it as a connected route). */
export const MULTICAST_ROUTE = '224.0.0.0/4';

export interface JoinResult {
  SrcName: string;
  /** Routes on the container's weft interface (connected: no next hop). */
  routes: string[];
}

export class Driver {
  /** This host's copies of cluster networks: the driver's state lives there. */
  readonly networks: LocalNetworks;
  /** Which endpoint's interface carries each sandbox's multicast route. */
  private readonly multicast: MulticastRoutes;
  private readonly joinedListeners: ((localId: string, endpointId: string) => void)[] = [];

  constructor(
    store: Store,
    ipam: Ipam,
    private readonly dataplane: DataPlaneApi,
    private readonly opts: DriverOptions,
    networks?: LocalNetworks,
  ) {
    this.networks = networks ?? new LocalNetworks(store, ipam, dataplane, opts);
    this.multicast = new MulticastRoutes(opts.runDir, opts.logger);
  }

  // ------------------------------------------------------------ networks

  async createNetwork(
    localId: string, options: Options | null | undefined,
    ipv4: { AddressSpace?: string; Pool: string; Gateway?: string }[] | null | undefined,
    ipv6: { AddressSpace?: string; Pool: string; Gateway?: string }[] | null | undefined,
  ): Promise<void> {
    const o = parseNetworkOptions(options);
    // Docker 28 sends no IPv4 pool for --ipv4=false (an IPv6-only network); older ones always send one.
    const v4 = o.ipv4 ? ipv4?.[0] : undefined;
    const v6 = ipv6?.[0];
    if (o.ipv4 && !v4) throw errors.badRequest('NetworkDriver.CreateNetwork', 'no IPv4 pool (IPv4Data is empty)');
    if (!o.ipv4 && !v6) throw errors.badRequest('NetworkDriver.CreateNetwork', 'an IPv6-only network (--ipv4=false) without an IPv6 pool: add --ipv6');
    if (v4) parseSubnet(v4.Pool);
    if (v6) parseSubnet6(v6.Pool);
    const ours = [v4, v6].every((p) => !p || p.AddressSpace === ADDRESS_SPACE);
    if (this.opts.cluster && !ours) throw errors.foreignIpam(this.opts.driverName);

    if (!o.clusterId) {
      const encrypted = this.networks.wantEncryption(o.encrypted); // [wireguard] refuse before anything is claimed
      if (o.mode === 'routed') {
        // [routed] Refused before anything is claimed. Routes carry IPv4 only.
        if (v6) throw errors.routedIPv6();
        if (encrypted) throw errors.routedEncrypted();
        if (!this.opts.cluster || !this.opts.advertiseAddr) throw errors.routedNeedsCluster();
        if (!v4?.Gateway) throw errors.routedNeedsGateway();
      }
    }
    await this.networks.create(localId, o, v4, ours, v6);
  }

  /** DeleteNetwork: Docker ignores its errors, so the cluster rules live in LocalNetworks.remove. */
  async deleteNetwork(localId: string): Promise<void> {
    await this.networks.remove(localId);
  }

  // ------------------------------------------------------------ endpoints

  async createEndpoint(localId: string, endpointId: string, iface: { Address?: string; AddressIPv6?: string; MacAddress?: string } | null | undefined, options: Options | null | undefined): Promise<{ MacAddress?: string } | null> {
    const local = await this.networks.lookupNetwork(localId);
    if (!local) throw errors.unknownNetwork(localId);
    const address = iface?.Address ?? '';
    const address6 = iface?.AddressIPv6 ?? '';
    const v6only = local.record.ipv4 === false;
    if (!address && !v6only) throw errors.badRequest('CreateEndpoint', 'Interface.Address is empty: the network needs an IPv4 subnet');
    if (address6 && !local.record.subnet6) throw errors.ipv6NotEnabled();
    if (!address6 && v6only) throw errors.badRequest('CreateEndpoint', 'Interface.AddressIPv6 is empty on an IPv6-only network');
    const ip = address ? address.split('/')[0] : '';
    // Checked here, at the edge: the record goes to every host, which programs it.
    if (address && !isIPv4(ip)) throw errors.badAddress(address.slice(0, 64));
    if (ip && local.record.subnet && !contains(parseSubnet(local.record.subnet), ip)) throw errors.addressOutside(ip, local.record.subnet);
    let ip6: string | undefined;
    if (address6) {
      const raw = address6.split('/')[0];
      if (!isIPv6(raw)) throw errors.badAddress(address6.slice(0, 64), 'IPv6');
      ip6 = canonicalIPv6(raw);
      if (!contains(parseSubnet6(local.record.subnet6!), ip6)) throw errors.addressOutside(ip6, local.record.subnet6!, '--ip6');
    }
    const given = normalizeMac(iface?.MacAddress) ?? normalizeMac(options?.[Label.endpointMac]);
    if (iface?.MacAddress && !given) throw errors.badRequest('CreateEndpoint', `Interface.MacAddress "${String(iface.MacAddress).slice(0, 40)}" is not a MAC address`);
    if (given && !isValidUnicastMac(given)) throw errors.badRequest('CreateEndpoint', `MAC address ${given} is not a unicast address`);
    const mac = given ?? (ip ? macFromIp(ip) : macFromIPv6(ip6!));
    const record: EndpointRecord = {
      host: this.opts.host, vtep: this.opts.advertiseAddr ?? '', ip, ...(ip6 ? { ip6 } : {}), mac, localNetwork: localId, createdAt: new Date().toISOString(),
    };
    await this.networks.putUnderNetwork(local.clusterId, keys.endpoint(local.clusterId, endpointId), JSON.stringify(record), `creating endpoint ${endpointId.slice(0, 12)}`);
    faultPoint('createEndpoint:after-store');
    this.networks.rememberEndpoint(endpointId, { clusterId: local.clusterId, record });
    this.opts.logger.debug({ network: localId, endpoint: endpointId, ip, ip6, mac }, 'endpoint created');
    // Return only what Docker did not fill in: re-setting a filled field fails the call.
    return iface?.MacAddress ? null : { MacAddress: mac };
  }

  /** `cb` learns of each Join answered (after the answer; it must not throw). DNS writes the container's name from there. */
  onJoined(cb: (localId: string, endpointId: string) => void): void {
    this.joinedListeners.push(cb);
  }

  async join(localId: string, endpointId: string, sandboxKey?: string): Promise<JoinResult> {
    const local = await this.networks.lookupNetwork(localId);
    if (!local) throw errors.unknownNetwork(localId);
    const ep = await this.networks.lookupEndpoint(local, endpointId);
    if (!ep) throw errors.unknownEndpoint(endpointId);
    await this.networks.ensureKernel(local);
    const net = this.networks.spec(local.clusterId, local.record);
    const spec = this.networks.endpointSpec(local, endpointId, ep.record.mac, ep.record.ip);
    faultPoint('join:before-veth');
    try {
      await this.dataplane.createEndpoint(net, spec);
    } catch (err) {
      throw err instanceof WeftError ? err : errors.kernel(`creating the interface of endpoint ${endpointId.slice(0, 12)}`, err);
    }
    faultPoint('join:after-veth');
    // Best effort: a lost announcement only delays peers that cached an old MAC.
    // IPv4: gratuitous ARP; IPv6: unsolicited neighbour advertisement.
    // [routed] createEndpoint announced it on the underlay segment, from the container's own interface.
    for (const ip of net.routed ? [] : [ep.record.ip, ep.record.ip6]) {
      if (!ip) continue;
      await this.dataplane.announce(net, ip, ep.record.mac).catch((err: Error) =>
        this.opts.logger.warn({ endpoint: endpointId.slice(0, 12), err: err.message }, 'gratuitous ARP / unsolicited NA failed'));
    }
    // Multicast: an application that sends to or joins a group without naming
    // an interface then uses the weft network, not the default route (docker_gwbridge).
    const routes = this.multicast.claim(sandboxKey, endpointId) ? [MULTICAST_ROUTE] : [];
    if (this.joinedListeners.length) setImmediate(() => { for (const cb of this.joinedListeners) cb(localId, endpointId); });
    return { SrcName: spec.hostIf, routes };
  }

  async leave(localId: string, endpointId: string): Promise<void> {
    // Docker moves the interface back to the host namespace after Leave and
    // calls DeleteEndpoint, where it is removed. Nothing to undo here.
    faultPoint('leave');
    this.multicast.release(endpointId);
    this.opts.logger.debug({ network: localId, endpoint: endpointId }, 'leave');
  }

  async deleteEndpoint(localId: string, endpointId: string): Promise<void> {
    this.multicast.release(endpointId);
    await this.networks.removeEndpoint(localId, endpointId);
  }

  async endpointInfo(localId: string, endpointId: string): Promise<Record<string, unknown>> {
    const local = await this.networks.lookupNetwork(localId);
    if (!local) return {};
    const ep = await this.networks.lookupEndpoint(local, endpointId);
    if (!ep) return {};
    const n = endpointNames(endpointId);
    return { ip: ep.record.ip, ...(ep.record.ip6 ? { ip6: ep.record.ip6 } : {}), mac: ep.record.mac, host: ep.record.host, hostInterface: n.hostIf, vni: local.record.vni };
  }
}

