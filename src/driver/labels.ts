// Docker's option keys that reach the driver (CreateNetwork, CreateEndpoint,
// RequestAddress options), and the options map they come in. The API's wire
// types (src/api/wire.ts) re-export them; the driver owns their meaning.

export type Options = Record<string, unknown>;

/** Option keys Docker uses on the wire. */
export const Label = {
  generic: 'com.docker.network.generic',
  enableIPv6: 'com.docker.network.enable_ipv6',
  /** Docker 28 and later: false for an IPv6-only network (`--ipv4=false`). */
  enableIPv4: 'com.docker.network.enable_ipv4',
  internal: 'com.docker.network.internal',
  driverMtu: 'com.docker.network.driver.mtu',
  requestAddressType: 'RequestAddressType',
  gatewayType: 'com.docker.network.gateway',
  endpointMac: 'com.docker.network.endpoint.macaddress',
} as const;
