// Every error weft can answer with, defined once, each with a stable code.
//
// Docker shows the message to the user as "<Interface.Method>: <message>", so
// each message names the offending value and says what to do about it. The
// code is for logs, metrics and tests; the HTTP status tells a bad request
// (the caller can fix it) from a failure on our side.

export class WeftError extends Error {
  readonly code: string;
  readonly statusCode: number;
  constructor(code: string, statusCode: number, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'WeftError';
    this.code = code;
    this.statusCode = statusCode;
  }
}

const bad = (code: string, message: string) => new WeftError(code, 400, message);
const conflict = (code: string, message: string) => new WeftError(code, 409, message);
const failed = (code: string, message: string, cause?: unknown) => new WeftError(code, 500, message, { cause });

export const errors = {
  badRequest: (method: string, detail: string) =>
    bad('WEFT_BAD_REQUEST', `malformed ${method} request: ${detail}`),
  bodyTooLarge: (limit: number) =>
    bad('WEFT_BODY_TOO_LARGE', `request body larger than ${limit} bytes`),
  unknownMethod: (path: string) =>
    new WeftError('WEFT_UNKNOWN_METHOD', 404, `weft does not implement ${path}`),

  // IPAM
  badSubnet: (value: string, why: string) =>
    bad('WEFT_BAD_SUBNET', `invalid subnet "${value}": ${why}`),
  badAddress: (value: string, family: 'IPv4' | 'IPv6' = 'IPv4') =>
    bad('WEFT_BAD_ADDRESS', `invalid ${family} address "${value}"`),
  ipv6NotEnabled: () =>
    bad('WEFT_IPV6_NOT_ENABLED', 'the endpoint got an IPv6 address on a network created without IPv6: recreate the network with --ipv6'),
  subnetOverlaps: (subnet: string, other: string, network: string) =>
    conflict('WEFT_SUBNET_OVERLAP',
      `subnet ${subnet} overlaps ${other}, which weft already uses for network ${network}: choose a --subnet that overlaps no existing weft network (see "docker network inspect ${network}")`),
  subnetInUse: (subnet: string, network: string) =>
    conflict('WEFT_SUBNET_IN_USE',
      `subnet ${subnet} is already used by weft network ${network}: use that network (--network ${network}) or choose another --subnet`),
  ipRangeMismatch: (subnet: string, wanted: string, existing: string) =>
    conflict('WEFT_IP_RANGE_MISMATCH',
      `subnet ${subnet} is already a weft pool with --ip-range ${existing}, not ${wanted}: choose another --subnet`),
  badIpRange: (range: string, subnet: string) =>
    bad('WEFT_BAD_IP_RANGE', `--ip-range ${range} is not inside --subnet ${subnet}`),
  defaultRangeExhausted: (range: string, size: number) =>
    conflict('WEFT_NO_FREE_SUBNET',
      `no free /${size} subnet left in weft's default range ${range}: pass --subnet, or remove unused weft networks, or widen ${range.includes(':') ? '--default-pool-v6' : '--default-pool'}`),
  unknownPool: (poolId: string) =>
    bad('WEFT_UNKNOWN_POOL', `unknown address pool "${poolId}": the network was probably removed; recreate it`),
  // `flag` is what the user types for an address of that family: --ip, or --ip6 for IPv6.
  addressOutside: (address: string, subnet: string, flag = '--ip') =>
    bad('WEFT_ADDRESS_OUTSIDE_SUBNET', `address ${address} is outside the network's subnet ${subnet}: pick an ${flag} inside ${subnet}`),
  addressReserved: (address: string, what: string, flag = '--ip') =>
    conflict('WEFT_ADDRESS_RESERVED', `address ${address} is the network's ${what} and cannot be given to a container: pick another ${flag}`),
  addressInUse: (address: string, subnet: string, holder: string, flag = '--ip') =>
    conflict('WEFT_ADDRESS_IN_USE',
      `address ${address} in ${subnet} is already in use (${holder}): pick another ${flag}, or leave ${flag} out to get a free address`),
  gatewayMismatch: (wanted: string, existing: string, subnet: string) =>
    conflict('WEFT_GATEWAY_MISMATCH',
      `subnet ${subnet} already has gateway ${existing} in weft; --gateway ${wanted} does not match: leave --gateway out or use ${existing}`),
  poolExhausted: (subnet: string, used: number) =>
    conflict('WEFT_POOL_EXHAUSTED',
      `no free address left in ${subnet} (${used} addresses in use): remove unused containers, or create a network with a larger --subnet or --ip-range`),

  // Networks and endpoints
  badOption: (name: string, value: unknown, expected: string) =>
    bad('WEFT_BAD_OPTION', `invalid option -o ${name}=${String(value)}: ${expected}`),
  unknownOption: (name: string, known: string[]) =>
    bad('WEFT_UNKNOWN_OPTION', `unknown option -o ${name}: weft understands ${known.join(', ')}`),
  foreignIpam: (managedName: string) =>
    bad('WEFT_FOREIGN_IPAM',
      `weft networks need weft's address management so that addresses are unique across hosts: add --ipam-driver ${managedName} to docker network create`),
  unknownNetwork: (networkId: string) =>
    bad('WEFT_UNKNOWN_NETWORK', `network ${networkId} is not known to weft on this host: remove it with "docker network rm" and create it again`),
  unknownClusterNetwork: (clusterId: string) =>
    bad('WEFT_UNKNOWN_CLUSTER_NETWORK', `cluster network ${clusterId} does not exist (it was removed): do not pass -o weft.network by hand`),
  unknownEndpoint: (endpointId: string) =>
    bad('WEFT_UNKNOWN_ENDPOINT', `endpoint ${endpointId} is not known to weft on this host`),
  networkBusy: (network: string, hosts: string[]) =>
    conflict('WEFT_NETWORK_BUSY',
      `network ${network} still has containers on ${hosts.join(', ')}: stop or disconnect them there first`),

  networkRemoving: (network: string) =>
    conflict('WEFT_NETWORK_REMOVING',
      `network ${network} is being removed (docker network rm ran on some host): create it again once it is gone, or use another network`),
  networkGone: (network: string) =>
    conflict('WEFT_NETWORK_GONE',
      `network ${network} no longer exists in the cluster (it was removed on another host): remove it here with "docker network rm" and create it again`),
  // [wireguard] encrypted networks
  routedEncrypted: () =>
    bad('WEFT_ROUTED_ENCRYPTED', 'a routed network carries traffic between hosts unencapsulated, so it cannot be encrypted: leave out -o mode=routed (an encrypted network uses VXLAN through WireGuard), or leave out -o encrypted (with weft serve --encryption all, every network is encrypted and none can be routed)'),
  routedNeedsCluster: () =>
    bad('WEFT_ROUTED_NEEDS_CLUSTER', 'routed networks span hosts: they need a cluster store (weft serve --store etcd://...) and an --advertise-addr; on one host use the default mode'),
  routedIPv6: () =>
    bad('WEFT_ROUTED_IPV6', 'routed networks carry IPv4 only (their routes between hosts are IPv4): leave out --ipv6 and --ipv4=false, or leave out -o mode=routed (a VXLAN network can be dual-stack)'),
  routedNeedsGateway: () =>
    bad('WEFT_ROUTED_NEEDS_GATEWAY', 'a routed network needs a gateway address (its hosts answer ARP for remote containers from it): leave --gateway to Docker or give one inside --subnet'),
  encryptionOff: () =>
    bad('WEFT_ENCRYPTION_OFF', 'encrypted networks are turned off on this host (weft serve --encryption off): create the network without -o encrypted, or restart weft with --encryption on-request'),
  encryptionRequired: () =>
    bad('WEFT_ENCRYPTION_REQUIRED', 'every network is encrypted on this host (weft serve --encryption all): leave out -o encrypted=false'),
  encryptionUnavailable: (what: string, why: string) =>
    new WeftError('WEFT_ENCRYPTION_UNAVAILABLE', 503,
      `${what}: WireGuard is not working on this host (${why}); nothing of an encrypted network leaves this host until it is. Check weft doctor on this host (wireguard check), install wireguard-go or use a kernel with WireGuard, then retry`),

  // Failures on our side
  store: (what: string, cause: unknown) =>
    failed('WEFT_STORE_UNAVAILABLE', `${what}: the store is unavailable (${cause instanceof Error ? cause.message : String(cause)}); check that etcd is reachable, then retry`, cause),
  kernel: (what: string, cause: unknown) =>
    failed('WEFT_KERNEL', `${what}: ${cause instanceof Error ? cause.message : String(cause)}`, cause),
  contention: (what: string) =>
    failed('WEFT_CONTENTION', `${what}: too many concurrent changes, gave up after several retries; retry the command`),
  internal: (cause: unknown) =>
    failed('WEFT_INTERNAL', `internal error: ${cause instanceof Error ? cause.message : String(cause)}; see weft's log`, cause),
};
