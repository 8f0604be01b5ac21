// JSON schemas of the request bodies, checked by Fastify (ajv) before any
// handler runs. Unknown fields are allowed: newer Docker versions add some.
// Ids become store keys and interface names, so their alphabet is narrow:
// Docker's network and endpoint ids are 64 hex digits.

const id = { type: 'string', pattern: '^[0-9a-fA-F]{12,64}$' } as const;
const shortText = { type: 'string', maxLength: 256 } as const;
const options = { type: ['object', 'null'], maxProperties: 256 } as const;
const stringMap = {
  type: ['object', 'null'], maxProperties: 256, additionalProperties: { type: 'string', maxLength: 4096 },
} as const;

const ipamData = {
  type: 'object',
  required: ['Pool'],
  properties: {
    AddressSpace: shortText,
    Pool: shortText,
    Gateway: shortText,
    AuxAddresses: stringMap,
  },
} as const;

export const schemas = {
  CreateNetwork: {
    type: 'object',
    required: ['NetworkID'],
    properties: {
      NetworkID: id,
      Options: options,
      // Empty or absent only for an IPv6-only network (Docker 28, --ipv4=false), which the driver refuses by name.
      IPv4Data: { type: ['array', 'null'], maxItems: 16, items: ipamData },
      IPv6Data: { type: ['array', 'null'], maxItems: 16, items: ipamData },
    },
  },
  Network: {
    type: 'object',
    required: ['NetworkID'],
    properties: { NetworkID: id },
  },
  CreateEndpoint: {
    type: 'object',
    required: ['NetworkID', 'EndpointID'],
    properties: {
      NetworkID: id,
      EndpointID: id,
      Interface: {
        type: ['object', 'null'],
        properties: { Address: shortText, AddressIPv6: shortText, MacAddress: shortText },
      },
      Options: options,
    },
  },
  Endpoint: {
    type: 'object',
    required: ['NetworkID', 'EndpointID'],
    properties: { NetworkID: id, EndpointID: id },
  },
  Join: {
    type: 'object',
    required: ['NetworkID', 'EndpointID'],
    properties: { NetworkID: id, EndpointID: id, SandboxKey: { type: 'string', maxLength: 4096 }, Options: options },
  },
  RequestPool: {
    type: 'object',
    properties: {
      AddressSpace: shortText,
      Pool: shortText,
      SubPool: shortText,
      Options: stringMap,
      V6: { type: 'boolean' },
    },
  },
  ReleasePool: {
    type: 'object',
    required: ['PoolID'],
    properties: { PoolID: shortText },
  },
  RequestAddress: {
    type: 'object',
    required: ['PoolID'],
    properties: { PoolID: shortText, Address: shortText, Options: stringMap },
  },
  ReleaseAddress: {
    type: 'object',
    required: ['PoolID', 'Address'],
    properties: { PoolID: shortText, Address: shortText },
  },
} as const;
